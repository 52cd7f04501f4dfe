#!/usr/bin/env python3
"""A small FastMCP server for mcp-tunnel's end-to-end tests, over Streamable HTTP or stdio.

In mcp 2.x the SDK's FastMCP is called `MCPServer` (`mcp.server.mcpserver`); this is the same
high-level server, serving either the SDK's own Streamable HTTP transport (stateful sessions,
answers as event streams) with uvicorn on a loopback port, or — with `--stdio` — the SDK's stdio
transport (newline-delimited JSON-RPC on stdin/stdout), as `mcp-tunnel run` starts it for
`MCP_COMMAND`.

Tools:
  add(a, b)               plain tool
  echo(text)              plain tool
  progress(steps, delay_ms)
                          reports progress with ctx.report_progress after every step
  fail(reason)            raises a ToolError: the SDK answers with an isError tool result
  fail_rpc(reason)        raises an MCPError: the SDK answers with a JSON-RPC error
  remember(value)         keeps `value` in this process (for per-session isolation tests)
  recall()                the value this process keeps ("" when none)
  publish_updated(uri, count, delay_ms)
                          publishes `count` resource-updated events for `uri` to the
                          `subscriptions/listen` streams (2026-07-28), `delay_ms` apart
  close_listens()         ends every open listen stream gracefully (each sends its completion
                          result), as a server shutting down does

Server-side record, appended to --events-file one JSON line per event, so the tests can check what
reached the server without reading logs:
  {"kind": "http", "method", "path", "session", "status", "mcp_method", "mcp_name",
   "protocol"}            every HTTP request the server answers, when its response starts (HTTP
                          only; e.g. the session's DELETE and its status), with the Mcp-Method,
                          Mcp-Name and MCP-Protocol-Version headers it carried
  {"kind": "cancelled", "tool": "progress", "step"}
                          the progress tool was cancelled (notifications/cancelled, or its
                          response stream closed) after `step` steps
Every event also has "at", the server's wall-clock time (time.time()) when it was recorded.

Usage: fastmcp_server.py --port PORT --events-file PATH   (listens on 127.0.0.1 only)
       fastmcp_server.py --stdio [--events-file PATH]
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
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

_events_path: str | None = None
_events_lock = threading.Lock()


def record(event: dict[str, Any]) -> None:
    """Appends one event to --events-file (when given)."""
    if _events_path is None:
        return
    with _events_lock, open(_events_path, "a", encoding="utf-8") as f:
        f.write(json.dumps({**event, "at": time.time()}) + "\n")


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
    done = 0
    try:
        for step in range(1, steps + 1):
            await anyio.sleep(delay_ms / 1000)
            await ctx.report_progress(step, steps, f"step {step} of {steps}")
            done = step
    except anyio.get_cancelled_exc_class():
        record({"kind": "cancelled", "tool": "progress", "step": done})
        raise
    return f"done after {steps} steps"


@server.tool()
def fail(reason: str = "requested") -> str:
    """Always fails with a tool error."""
    raise ToolError(f"deliberate failure: {reason}")


@server.tool()
def fail_rpc(reason: str = "requested") -> str:
    """Always fails with a JSON-RPC error."""
    raise MCPError(FAIL_RPC_CODE, f"deliberate JSON-RPC error: {reason}", {"reason": reason})


_remembered = ""


@server.tool()
def remember(value: str) -> str:
    """Keep `value` in this server process."""
    global _remembered
    _remembered = value
    return value


@server.tool()
def recall() -> str:
    """The value this server process keeps."""
    return _remembered


@server.tool()
async def publish_updated(ctx: Context, uri: str, count: int = 1, delay_ms: int = 0) -> int:
    """Publish `count` resource-updated events for `uri` to the listen streams."""
    for n in range(count):
        if n and delay_ms:
            await anyio.sleep(delay_ms / 1000)
        await ctx.notify_resource_updated(uri)
    return count


@server.tool()
def close_listens() -> str:
    """End every open subscriptions/listen stream gracefully."""
    # MCPServer registers its ListenHandler on the low-level server; its close() is the SDK's
    # graceful closure (each stream sends its SubscriptionsListenResult last).
    entry = server._lowlevel_server._request_handlers["subscriptions/listen"]  # noqa: SLF001
    entry.handler.close()
    return "closed"


class RequestRecorder:
    """ASGI middleware: one event per HTTP request, recorded when its response starts."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        event: dict[str, Any] = {
            "kind": "http",
            "method": scope["method"],
            "path": scope["path"],
            "session": headers.get("mcp-session-id"),
            "mcp_method": headers.get("mcp-method"),
            "mcp_name": headers.get("mcp-name"),
            "protocol": headers.get("mcp-protocol-version"),
        }

        async def recording_send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                record({**event, "status": message["status"]})
            await send(message)

        await self.app(scope, receive, recording_send)


def main() -> int:
    global _events_path
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--port", type=int, help="serve Streamable HTTP on 127.0.0.1:PORT")
    mode.add_argument("--stdio", action="store_true", help="serve stdio (stdout carries JSON-RPC only)")
    parser.add_argument("--events-file")
    args = parser.parse_args()
    _events_path = args.events_file

    if args.stdio:
        # The SDK logs to stderr; stdout is the protocol's.
        server.run("stdio")
        return 0
    if _events_path is None:
        parser.error("--events-file is required with --port")
    app = RequestRecorder(server.streamable_http_app(host=HOST))
    config = uvicorn.Config(app, host=HOST, port=args.port, log_level="info")
    uvicorn.Server(config).run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
