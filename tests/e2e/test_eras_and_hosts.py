"""Both MCP eras and real MCP hosts through relay → `mcp-tunnel run` → real MCP servers.

The 2026-07-28 protocol (stateless: `server/discover`, `_meta`, `Mcp-Method`/`Mcp-Name` headers, no
session) beside the 2025 session protocol (`initialize`, `Mcp-Session-Id`), over Streamable HTTP and
over stdio, with the Python SDK forced to each era; the stdio faults real servers exposed (a child
restart, several sessions on one strict child, both eras on one dual-era child, per-session
children); the relay's own errors as a host shows them; a tunnel added to a running relay; and hosts
other than the Python SDK: the TypeScript SDK client, the MCP Inspector CLI and mcp-remote.

Servers: FastMCP (tests/e2e/fastmcp_server.py, both eras, records the `Mcp-*` headers it receives
over HTTP), mcp-server-time (a stdio server built on the Python SDK that refuses requests before
`initialize`), server-everything (2025-11-25 only).
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest
from conftest import (
    COMMAND_TIMEOUT,
    E2E_DIR,
    LOOPBACK,
    Proc,
    Stack,
    _add_tunnel,
    _binary,
    _clean_env,
    run_stack,
    wait_until,
)
from mcp import Client
from mcp.client.session import ClientSession
from mcp.client.stdio import StdioServerParameters, stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError
from mcp_types.version import HANDSHAKE_PROTOCOL_VERSIONS, LATEST_MODERN_VERSION
from test_sdk_through_tunnel import (
    CLIENT_INFO,
    REQUEST_TIMEOUT,
    TEST_TIMEOUT,
    Recorder,
    connector_http_client,
    sdk_session,
    text_of,
)

pytestmark = pytest.mark.anyio

NODE_BIN = E2E_DIR / "node_modules" / ".bin"
# What a host runs to reach the tunnel through the TypeScript SDK (see ts_sdk_client.mjs).
TS_CLIENT = E2E_DIR / "ts_sdk_client.mjs"


@pytest.fixture(scope="module")
def eras_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with run_stack("fastmcp-eras", tmp_path_factory.mktemp("fastmcp-eras")) as stack:
        yield stack


@pytest.fixture(scope="module")
def time_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with run_stack("time-stdio", tmp_path_factory.mktemp("time-stdio")) as stack:
        yield stack


@pytest.fixture(scope="module")
def per_session_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with run_stack("fastmcp-per-session", tmp_path_factory.mktemp("fastmcp-per-session")) as stack:
        yield stack


async def call_in_era(stack: Stack, mode: str, tool: str, arguments: dict[str, Any]) -> tuple[str, str, Recorder]:
    """One host of `mode` ("legacy" or the modern version): connect, list tools, call `tool`.
    Returns the negotiated version, the tool's text and the HTTP record."""
    recorder = Recorder()
    with anyio.fail_after(TEST_TIMEOUT):
        async with connector_http_client(stack, recorder) as http:
            transport = streamable_http_client(stack.mcp_url, http_client=http)
            async with Client(
                transport, mode=mode, client_info=CLIENT_INFO, read_timeout_seconds=REQUEST_TIMEOUT
            ) as client:
                listed = await client.list_tools()
                assert tool in {t.name for t in listed.tools}
                result = await client.call_tool(tool, arguments)
                assert not result.is_error, result
                return client.protocol_version, text_of(result), recorder


def posts(recorder: Recorder, rpc_method: str) -> list[Any]:
    return recorder.posts_of(rpc_method)


# ---------------------------------------------------------------------------------------------
# Both eras


async def test_modern_round_trip_carries_the_mcp_headers_to_the_server(fastmcp_stack: Stack) -> None:
    """The SDK's default client probes `server/discover` and goes stateless; its `tools/call`
    reaches FastMCP with `Mcp-Method`, `Mcp-Name` and `MCP-Protocol-Version` as the host sent them."""
    before = len(fastmcp_stack.server_events())
    version, text, recorder = await call_in_era(fastmcp_stack, "auto", "echo", {"text": "modern"})
    assert version == LATEST_MODERN_VERSION
    assert text == "echo: modern"
    assert posts(recorder, "server/discover") and not posts(recorder, "initialize"), recorder.exchanges
    seen = [e for e in fastmcp_stack.server_events()[before:] if e["kind"] == "http" and e["method"] == "POST"]
    calls = [e for e in seen if e.get("mcp_method") == "tools/call"]
    assert calls, seen
    assert calls[-1]["mcp_name"] == "echo" and calls[-1]["protocol"] == LATEST_MODERN_VERSION, calls
    assert calls[-1]["session"] is None, calls
    assert any(e.get("mcp_method") == "server/discover" for e in seen), seen


@pytest.mark.parametrize(
    "mode", ["legacy", LATEST_MODERN_VERSION]
)
@pytest.mark.parametrize("stack_name", ["fastmcp_stack", "eras_stack"])
async def test_each_era_over_http_and_stdio(mode: str, stack_name: str, request: pytest.FixtureRequest) -> None:
    """The Python SDK forced to each era, against FastMCP over HTTP and over stdio."""
    stack: Stack = request.getfixturevalue(stack_name)
    version, text, recorder = await call_in_era(stack, mode, "add", {"a": 2, "b": 40})
    assert text == "42"
    if mode == "legacy":
        assert version in HANDSHAKE_PROTOCOL_VERSIONS
        assert posts(recorder, "initialize"), recorder.exchanges
    else:
        assert version == mode
        assert not posts(recorder, "initialize"), recorder.exchanges


async def test_modern_and_legacy_hosts_alternate_on_one_dual_era_stdio_channel(eras_stack: Stack) -> None:
    """A dual-era server over stdio commits to one era per process; the client gives each era its
    own child, so hosts of both eras, taking turns, are all served."""
    for round_ in range(3):
        for mode in ("legacy", LATEST_MODERN_VERSION):
            _, text, _ = await call_in_era(eras_stack, mode, "echo", {"text": f"{mode} {round_}"})
            assert text == f"echo: {mode} {round_}"


# ---------------------------------------------------------------------------------------------
# Legacy sessions on stdio


async def time_now(session: ClientSession) -> str:
    result = await session.call_tool("get_current_time", {"timezone": "UTC"})
    assert not result.is_error, result
    return text_of(result)


async def test_two_legacy_sessions_on_one_strict_stdio_child(time_stack: Stack) -> None:
    """mcp-server-time refuses requests before `initialize`: two sessions that each initialize
    share its one child, and both work, in turns and interleaved."""
    with anyio.fail_after(TEST_TIMEOUT):
        async with sdk_session(time_stack, Recorder()) as first, sdk_session(time_stack, Recorder()) as second:
            for session in (first, second, first, second):
                assert "UTC" in await time_now(session)


def stdio_children(client: Proc, marker: str) -> list[int]:
    """Pids of the client's child processes whose command line contains `marker`."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == client.popen.pid and marker in cmdline:
            found.append(int(entry.name))
    return found


def legacy_session_child(client: Proc) -> int:
    """The pid of the child serving legacy sessions, from the client's log: `[main/legacy]` when
    the probe found a modern-capable server (mcp-server-time answers `server/discover`), else the
    channel's one child `[main]`."""
    started = dict(re.findall(r"\[(main(?:/legacy)?)\] stdio server started \(pid (\d+)\)", client.log()))
    return int(started.get("main/legacy") or started["main"])


async def test_stdio_child_killed_mid_session_and_the_session_goes_on(time_stack: Stack) -> None:
    """The child is killed between two calls of one session: the client restarts it and replays
    the session's handshake, so the same session's next call succeeds."""
    client = time_stack.procs["client"]
    with anyio.fail_after(TEST_TIMEOUT):
        async with sdk_session(time_stack, Recorder()) as session:
            assert "UTC" in await time_now(session)
            pid = legacy_session_child(client)
            assert pid in stdio_children(client, "mcp_server_time"), pid
            os.kill(pid, signal.SIGKILL)
            # Wait for the client to restart *that* child: the channel runs another one for
            # modern traffic beside it, so "some other child exists" is true at once.
            wait_until("the legacy child restarted", lambda: legacy_session_child(client) != pid, 15)
            assert legacy_session_child(client) in stdio_children(client, "mcp_server_time")
            assert "UTC" in await time_now(session)


async def test_per_session_children_keep_their_own_state(per_session_stack: Stack) -> None:
    """With `sessions=per-session`, each connector session gets its own child: what one session
    stores, the other does not see; ending a session stops its child. The channel's probed child
    (for sessionless, modern traffic) runs beside them all along."""
    client = per_session_stack.procs["client"]

    def children() -> int:
        return len(stdio_children(client, "fastmcp_server.py"))

    probed = wait_until("the probed child", children, 10)
    with anyio.fail_after(TEST_TIMEOUT):
        async with sdk_session(per_session_stack, Recorder()) as first:
            await first.call_tool("remember", {"value": "first"})
            async with sdk_session(per_session_stack, Recorder()) as second:
                assert text_of(await second.call_tool("recall", {})) in ("", "[]")
                await second.call_tool("remember", {"value": "second"})
                assert children() == probed + 2
            assert text_of(await first.call_tool("recall", {})) == "first"
            wait_until("the ended session's child to stop", lambda: children() == probed + 1, 15)
    wait_until("both sessions' children to stop", lambda: children() == probed, 15)


# ---------------------------------------------------------------------------------------------
# The relay's errors, as a host shows them


async def test_relay_errors_reach_the_host_with_their_message(fastmcp_stack: Stack, tmp_path: Path) -> None:
    """Every relay-made error on the MCP endpoint is a JSON-RPC error: the SDK raises it with the
    relay's message, which says what to do."""
    # A wrong connector key.
    with anyio.fail_after(TEST_TIMEOUT):
        async with connector_http_client(fastmcp_stack, Recorder(), key="mcpt_cn_" + "0" * 64) as http:
            async with streamable_http_client(fastmcp_stack.mcp_url, http_client=http) as (read, write):
                async with ClientSession(read, write, read_timeout_seconds=REQUEST_TIMEOUT) as session:
                    with pytest.raises(MCPError) as wrong_key:
                        await session.initialize()
    assert "key" in str(wrong_key.value).lower(), wrong_key.value

    # A body over the relay's limit (default 4 MiB).
    with anyio.fail_after(TEST_TIMEOUT):
        async with sdk_session(fastmcp_stack, Recorder()) as session:
            with pytest.raises(MCPError) as too_large:
                await session.call_tool("echo", {"text": "x" * (5 * 1024 * 1024)})
    assert "large" in str(too_large.value).lower(), too_large.value

    # A tunnel whose client is not running.
    tunnels_file = fastmcp_stack.workdir / "tunnels.toml"
    idle = _add_tunnel(_binary(), tunnels_file)
    url = f"http://{fastmcp_stack.relay_addr}/v1/mcp/{idle.id}"
    with anyio.fail_after(TEST_TIMEOUT):
        async with httpx2.AsyncClient(
            headers={"Authorization": f"Bearer {idle.connector_key}"}, trust_env=False, timeout=10
        ) as http:
            async with streamable_http_client(url, http_client=http) as (read, write):
                async with ClientSession(read, write, read_timeout_seconds=REQUEST_TIMEOUT) as session:
                    with pytest.raises(MCPError) as not_connected:
                        await session.initialize()
    assert "mcp-tunnel run" in str(not_connected.value), not_connected.value


def test_tunnel_added_to_a_running_relay_serves_its_first_call_within_5s(fastmcp_stack: Stack, tmp_path: Path) -> None:
    """A tunnel added to the relay's file, with its client started at once, answers within 5 s."""
    tunnel = _add_tunnel(_binary(), fastmcp_stack.workdir / "tunnels.toml")
    started = time.monotonic()
    env = {
        **_clean_env(),
        "CONTROL_PLANE_BASE_URL": f"http://{fastmcp_stack.relay_addr}",
        "CONTROL_PLANE_TUNNEL_ID": tunnel.id,
        "CONTROL_PLANE_API_KEY": tunnel.runtime_key,
        "HEALTH_LISTEN_ADDR": "off",
        "MCP_SERVER_URL": f"http://{LOOPBACK}:{fastmcp_stack.server_port}/mcp",
    }
    client = Proc("late/client", [str(_binary()), "run"], tmp_path / "client.log", env, tmp_path)
    meta = {
        "io.modelcontextprotocol/protocolVersion": LATEST_MODERN_VERSION,
        "io.modelcontextprotocol/clientCapabilities": {},
    }
    body = {"jsonrpc": "2.0", "id": "late", "method": "server/discover", "params": {"_meta": meta}}
    headers = {
        "Authorization": f"Bearer {tunnel.connector_key}",
        "Accept": "application/json, text/event-stream",
        "Mcp-Method": "server/discover",
        "MCP-Protocol-Version": LATEST_MODERN_VERSION,
    }

    def answered() -> bool:
        client.ensure_running()
        try:
            with httpx2.Client(trust_env=False, timeout=5) as http:
                response = http.post(f"http://{fastmcp_stack.relay_addr}/v1/mcp/{tunnel.id}", json=body, headers=headers)
        except httpx2.TransportError:
            return False
        return response.status_code == 200

    try:
        wait_until("the new tunnel to serve a call", answered, 5.0, interval=0.1)
        assert time.monotonic() - started < 5.0
    finally:
        assert client.stop() == 0


# ---------------------------------------------------------------------------------------------
# Other hosts


def run_node_host(argv: list[str], tmp_path: Path, env: dict[str, str] | None = None) -> str:
    done = subprocess.run(
        argv,
        capture_output=True,
        text=True,
        timeout=COMMAND_TIMEOUT * 2,
        env={**_clean_env(), "HOME": str(tmp_path), **(env or {})},
        cwd=E2E_DIR,
        stdin=subprocess.DEVNULL,
    )
    assert done.returncode == 0, f"{argv[0]} exited {done.returncode}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done.stdout


@pytest.mark.parametrize("stack_name", ["fastmcp_stack", "everything_stdio_stack"])
def test_typescript_sdk_client(stack_name: str, request: pytest.FixtureRequest, tmp_path: Path) -> None:
    """The TypeScript SDK's client (Streamable HTTP) lists tools and calls `echo`."""
    stack: Stack = request.getfixturevalue(stack_name)
    out = run_node_host(["node", str(TS_CLIENT), stack.mcp_url], tmp_path, {"MCP_KEY": stack.tunnel.connector_key})
    report = json.loads(out.strip().splitlines()[-1])
    assert "echo" in report["tools"], report
    assert "tunnel-ts" in report["echo"], report


def test_inspector_cli(everything_stack: Stack, tmp_path: Path) -> None:
    """The MCP Inspector's CLI lists the tools of server-everything through the tunnel (it needs
    `--transport http`: the connector URL does not end in /mcp)."""
    out = run_node_host(
        [
            str(NODE_BIN / "mcp-inspector"),
            "--cli",
            everything_stack.mcp_url,
            "--transport",
            "http",
            "--header",
            f"Authorization: Bearer {everything_stack.tunnel.connector_key}",
            "--method",
            "tools/list",
        ],
        tmp_path,
    )
    names = {tool["name"] for tool in json.loads(out)["tools"]}
    assert "echo" in names, names


async def test_mcp_remote_bridges_stdio_to_the_tunnel(fastmcp_stack: Stack, tmp_path: Path) -> None:
    """mcp-remote, the stdio↔HTTP bridge desktop hosts use, run as a stdio server by the Python SDK."""
    params = StdioServerParameters(
        command=str(NODE_BIN / "mcp-remote"),
        args=[fastmcp_stack.mcp_url, "--header", f"Authorization:Bearer {fastmcp_stack.tunnel.connector_key}",
              "--transport", "http-only"],
        env={"HOME": str(tmp_path), "MCP_REMOTE_CONFIG_DIR": str(tmp_path / "mcp-auth")},
        cwd=str(tmp_path),
    )
    errlog = open(tmp_path / "mcp-remote.log", "w")  # noqa: SIM115 - closed below
    try:
        with anyio.fail_after(TEST_TIMEOUT):
            async with stdio_client(params, errlog=errlog) as (read, write):
                async with ClientSession(read, write, read_timeout_seconds=REQUEST_TIMEOUT) as session:
                    await session.initialize()
                    result = await session.call_tool("echo", {"text": "bridged"})
                    assert text_of(result) == "echo: bridged"
    finally:
        errlog.close()
