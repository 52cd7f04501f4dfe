#!/usr/bin/env python3
"""A small FastMCP Streamable HTTP server for mcp-tunnel's end-to-end tests.

In mcp 2.x the SDK's FastMCP is called `MCPServer` (`mcp.server.mcpserver`); this is the same
high-level server, serving the SDK's own Streamable HTTP transport (stateful sessions, answers as
event streams) with uvicorn on a loopback port.

Tools:
  add(a, b)               plain tool
  echo(text)              plain tool
  progress(steps, delay_ms)
                          reports progress with ctx.report_progress after every step
  fail(reason)            raises a ToolError: the SDK answers with an isError tool result
  fail_rpc(reason)        raises an MCPError: the SDK answers with a JSON-RPC error

Server-side record: every HTTP request the server answers is appended to --events-file as one JSON
line {"method", "path", "session", "status"} when its response starts, so the tests can
check what reached the server (e.g. the session's DELETE and its status) without reading logs.

Usage: fastmcp_server.py --port PORT --events-file PATH   (listens on 127.0.0.1 only)
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
from typing import Any

import anyio
import uvicorn
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.shared.exceptions import MCPError

HOST = "127.0.0.1"
SERVER_NAME = "mcp-tunnel-e2e-fastmcp"
SERVER_VERSION = "1.0.0"
# An application-defined JSON-RPC error code (the -32000..-32099 server range).
FAIL_RPC_CODE = -32042

server = MCPServer(SERVER_NAME, version=SERVER_VERSION, log_level="INFO")


@server.tool()
def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


@server.tool()
def echo(text: str) -> str:
    """Echo the text back."""
    return f"echo: {text}"


@server.tool()
async def progress(ctx: Context, steps: int = 3, delay_ms: int = 50) -> str:
    """Work in `steps` steps, reporting progress after each."""
    for step in range(1, steps + 1):
        await anyio.sleep(delay_ms / 1000)
        await ctx.report_progress(step, steps, f"step {step} of {steps}")
    return f"done after {steps} steps"


@server.tool()
def fail(reason: str = "requested") -> str:
    """Always fails with a tool error."""
    raise ToolError(f"deliberate failure: {reason}")


@server.tool()
def fail_rpc(reason: str = "requested") -> str:
    """Always fails with a JSON-RPC error."""
    raise MCPError(FAIL_RPC_CODE, f"deliberate JSON-RPC error: {reason}", {"reason": reason})


class RequestRecorder:
    """ASGI middleware: one JSON line per HTTP request, written when its response starts."""

    def __init__(self, app: Any, path: str) -> None:
        self.app = app
        self.path = path
        self.lock = threading.Lock()

    def record(self, event: dict[str, Any]) -> None:
        with self.lock, open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(event) + "\n")

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        event: dict[str, Any] = {
            "method": scope["method"],
            "path": scope["path"],
            "session": headers.get("mcp-session-id"),
        }

        async def recording_send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                self.record({**event, "status": message["status"]})
            await send(message)

        await self.app(scope, receive, recording_send)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--events-file", required=True)
    args = parser.parse_args()

    app = RequestRecorder(server.streamable_http_app(host=HOST), args.events_file)
    config = uvicorn.Config(app, host=HOST, port=args.port, log_level="info")
    uvicorn.Server(config).run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
