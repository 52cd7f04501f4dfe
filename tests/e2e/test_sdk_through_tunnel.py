"""The official Python MCP SDK as the MCP host, through relay → `mcp-tunnel run` → real MCP servers.

Each test opens its own MCP session with the SDK's Streamable HTTP client
(`mcp.client.streamable_http.streamable_http_client` and `ClientSession`, mcp 2.x names) at the
relay's connector URL, authenticated with the tunnel's connector key on the `httpx2.AsyncClient`
handed to the SDK, as its documentation says to configure headers. Leaving the client's context
ends the session: the SDK sends the session's DELETE. Every HTTP exchange the SDK makes is recorded
by an httpx2 response hook, so the tests check statuses, session headers and the DELETE without
reaching into the SDK's internals.

Targets (see conftest.py for how each stack is started):
- `fastmcp`: tests/e2e/fastmcp_server.py, the SDK's own FastMCP server (named `MCPServer` in
  mcp 2), which also records every HTTP request it answers;
- `everything`: `@modelcontextprotocol/server-everything` (the reference server, built on the
  TypeScript SDK) in streamable HTTP mode.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import anyio
import httpx2
import mcp_types as types
import pytest
from conftest import Stack
from mcp import Client
from mcp.client.session import ClientSession
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError
from mcp_types.version import HANDSHAKE_PROTOCOL_VERSIONS, LATEST_MODERN_VERSION

pytestmark = pytest.mark.anyio

# Upper bound for one test's MCP traffic, and for one request.
TEST_TIMEOUT = 60.0
REQUEST_TIMEOUT = 30.0

CLIENT_INFO = types.Implementation(name="mcp-tunnel-e2e", version="1.0.0")

# Statuses the SDK may see from the relay in a healthy session, per HTTP method. GET is 405: the
# relay offers no standalone server stream, and says so as the Streamable HTTP transport allows.
ALLOWED_STATUS = {"POST": {200, 202}, "GET": {405}, "DELETE": {200, 204}}


@dataclass
class Exchange:
    method: str
    status: int
    content_type: str
    session_sent: str | None
    session_returned: str | None
    request_body: bytes

    def rpc_method(self) -> str | None:
        if self.method != "POST" or not self.request_body:
            return None
        return json.loads(self.request_body).get("method")


@dataclass
class Recorder:
    """Every HTTP exchange of one SDK client, in order."""

    exchanges: list[Exchange] = field(default_factory=list)

    async def on_response(self, response: httpx2.Response) -> None:
        request = response.request
        self.exchanges.append(
            Exchange(
                method=request.method,
                status=response.status_code,
                content_type=response.headers.get("content-type", ""),
                session_sent=request.headers.get("mcp-session-id"),
                session_returned=response.headers.get("mcp-session-id"),
                request_body=request.content if request.method == "POST" else b"",
            )
        )

    def posts_of(self, rpc_method: str) -> list[Exchange]:
        return [ex for ex in self.exchanges if ex.rpc_method() == rpc_method]

    def session_id(self) -> str:
        """The session id the MCP server assigned in its answer to `initialize`."""
        [init] = self.posts_of("initialize")
        assert init.status == 200, init
        assert init.session_returned, "the initialize answer carried no Mcp-Session-Id header"
        return init.session_returned

    def deletes(self) -> list[Exchange]:
        return [ex for ex in self.exchanges if ex.method == "DELETE"]

    def assert_clean(self, *, except_rpc: str | None = None) -> None:
        """Every exchange got a status its method expects (but those of `except_rpc` POSTs)."""
        for ex in self.exchanges:
            if except_rpc is None or ex.rpc_method() != except_rpc:
                assert ex.status in ALLOWED_STATUS[ex.method], f"unexpected answer: {ex}"


def connector_http_client(stack: Stack, recorder: Recorder, *, key: str | None = None) -> httpx2.AsyncClient:
    """The HTTP client an MCP host hands the SDK: the connector key, the SDK's default timeouts
    (30 s, 300 s to read a stream), and no proxy from the environment."""
    return httpx2.AsyncClient(
        headers={"Authorization": f"Bearer {key or stack.tunnel.connector_key}"},
        timeout=httpx2.Timeout(30.0, read=300.0),
        event_hooks={"response": [recorder.on_response]},
        trust_env=False,
    )


@asynccontextmanager
async def sdk_session(stack: Stack, recorder: Recorder) -> AsyncIterator[ClientSession]:
    """An initialized SDK session through the tunnel; leaving it ends the session (DELETE)."""
    async with connector_http_client(stack, recorder) as http:
        async with streamable_http_client(stack.mcp_url, http_client=http) as (read, write):
            async with ClientSession(
                read, write, client_info=CLIENT_INFO, read_timeout_seconds=REQUEST_TIMEOUT
            ) as session:
                result = await session.initialize()
                assert result.protocol_version in HANDSHAKE_PROTOCOL_VERSIONS
                yield session


async def eventually(what: str, check: Callable[[], Any], timeout: float = 10.0) -> Any:
    """Awaits until `check()` returns something truthy; fails after `timeout` seconds."""
    with anyio.move_on_after(timeout):
        while not (result := check()):
            await anyio.sleep(0.05)
        return result
    pytest.fail(f"timed out after {timeout:.0f}s waiting for {what}")


def text_of(result: types.CallToolResult) -> str:
    texts = [c.text for c in result.content if isinstance(c, types.TextContent)]
    assert texts, f"no text content in {result}"
    return "\n".join(texts)


async def raw_post(stack: Stack, session_id: str, message: dict[str, Any]) -> httpx2.Response:
    """One POST through the relay outside any SDK session (for checks after a session ended)."""
    headers = {
        "Authorization": f"Bearer {stack.tunnel.connector_key}",
        "Accept": "application/json, text/event-stream",
        "Mcp-Session-Id": session_id,
        "MCP-Protocol-Version": HANDSHAKE_PROTOCOL_VERSIONS[-1],
    }
    async with httpx2.AsyncClient(trust_env=False, timeout=REQUEST_TIMEOUT) as http:
        return await http.post(stack.mcp_url, json=message, headers=headers)


@dataclass(frozen=True)
class Target:
    """What one MCP server offers, for the tests both servers run."""

    fixture: str
    server_name: str
    tools: frozenset[str]
    plain_call: tuple[str, dict[str, Any], str]  # tool, arguments, expected text
    progress_call: tuple[str, dict[str, Any], int]  # tool, arguments, progress notifications
    echo_argument: str  # the argument of the server's `echo` tool


TARGETS = {
    "fastmcp": Target(
        fixture="fastmcp_stack",
        server_name="mcp-tunnel-e2e-fastmcp",
        tools=frozenset({"add", "echo", "progress", "fail", "fail_rpc"}),
        plain_call=("add", {"a": 2, "b": 40}, "42"),
        progress_call=("progress", {"steps": 3, "delay_ms": 100}, 3),
        echo_argument="text",
    ),
    "everything": Target(
        fixture="everything_stack",
        server_name="mcp-servers/everything",
        tools=frozenset({"echo", "get-sum", "trigger-long-running-operation"}),
        plain_call=("get-sum", {"a": 2, "b": 40}, "The sum of 2 and 40 is 42."),
        progress_call=("trigger-long-running-operation", {"duration": 1, "steps": 3}, 3),
        echo_argument="message",
    ),
}


@pytest.fixture(params=sorted(TARGETS))
def target(request: pytest.FixtureRequest) -> tuple[Target, Stack]:
    spec = TARGETS[request.param]
    return spec, request.getfixturevalue(spec.fixture)


# ---------------------------------------------------------------------------------------------
# Both servers


async def test_initialize_and_list_tools(target: tuple[Target, Stack]) -> None:
    spec, stack = target
    recorder = Recorder()
    with anyio.fail_after(TEST_TIMEOUT):
        async with connector_http_client(stack, recorder) as http:
            async with streamable_http_client(stack.mcp_url, http_client=http) as (read, write):
                async with ClientSession(
                    read, write, client_info=CLIENT_INFO, read_timeout_seconds=REQUEST_TIMEOUT
                ) as session:
                    init = await session.initialize()
                    listed = await session.list_tools()
    assert init.server_info.name == spec.server_name
    assert init.protocol_version in HANDSHAKE_PROTOCOL_VERSIONS
    assert init.capabilities.tools is not None
    names = {tool.name for tool in listed.tools}
    assert spec.tools <= names, f"missing tools: {sorted(spec.tools - names)}"
    for tool in listed.tools:
        assert tool.input_schema.get("type") == "object", tool
    # Every later POST of the session carried the session id the server assigned.
    session_id = recorder.session_id()
    later = [ex for ex in recorder.exchanges if ex.method == "POST"][1:]
    assert later and all(ex.session_sent == session_id for ex in later), recorder.exchanges
    assert recorder.posts_of("notifications/initialized")[0].status == 202
    recorder.assert_clean()


async def test_tool_call(target: tuple[Target, Stack]) -> None:
    spec, stack = target
    tool, arguments, expected = spec.plain_call
    # Text that must cross the tunnel intact: non-ASCII, quotes, escapes, newlines.
    text = 'héllo "wörld" ✓ 🚇\nline two\ttab \\ backslash </script>'
    recorder = Recorder()
    with anyio.fail_after(TEST_TIMEOUT):
        async with sdk_session(stack, recorder) as session:
            result = await session.call_tool(tool, arguments)
            echoed = await session.call_tool("echo", {spec.echo_argument: text})
    assert not result.is_error, result
    assert text_of(result) == expected
    assert not echoed.is_error, echoed
    assert text_of(echoed).endswith(text)
    recorder.assert_clean()


async def test_progress_notifications(target: tuple[Target, Stack]) -> None:
    spec, stack = target
    tool, arguments, steps = spec.progress_call
    progress: list[tuple[float, float | None]] = []

    async def on_progress(value: float, total: float | None, message: str | None) -> None:
        progress.append((value, total))

    recorder = Recorder()
    with anyio.fail_after(TEST_TIMEOUT):
        async with sdk_session(stack, recorder) as session:
            result = await session.call_tool(tool, arguments, progress_callback=on_progress)
            # Notifications come before the result, so the callback has run by now.
            assert len(progress) >= 1, "the progress callback never fired"
    assert not result.is_error, result
    assert progress == [(float(i), float(steps)) for i in range(1, steps + 1)]
    [call] = recorder.posts_of("tools/call")
    assert call.status == 200 and call.content_type.startswith("text/event-stream"), call
    recorder.assert_clean()


async def test_concurrent_calls_keep_their_progress(target: tuple[Target, Stack]) -> None:
    """Several calls in flight in one session: each answer and each progress notification reaches
    the request it belongs to."""
    spec, stack = target
    tool, arguments, steps = spec.progress_call
    calls = 3
    progress: dict[int, list[float]] = {i: [] for i in range(calls)}
    results: dict[int, types.CallToolResult] = {}
    recorder = Recorder()

    with anyio.fail_after(TEST_TIMEOUT):
        async with sdk_session(stack, recorder) as session:

            async def call(i: int) -> None:
                async def on_progress(value: float, total: float | None, message: str | None) -> None:
                    progress[i].append(value)

                results[i] = await session.call_tool(tool, arguments, progress_callback=on_progress)

            async with anyio.create_task_group() as tg:
                for i in range(calls):
                    tg.start_soon(call, i)
    expected = [float(s) for s in range(1, steps + 1)]
    assert all(progress[i] == expected for i in range(calls)), progress
    assert len(results) == calls and not any(r.is_error for r in results.values()), results
    assert len(recorder.posts_of("tools/call")) == calls
    recorder.assert_clean()


async def test_large_payload(target: tuple[Target, Stack]) -> None:
    """A 200 KiB argument and its echo cross the tunnel intact. (FastMCP sends the text twice, as
    content and as structured content, in one SSE event, and the SDK reads events up to 1 MiB.)"""
    spec, stack = target
    text = "".join(chr(0x20 + (i * 7919) % 0x5E) for i in range(200 * 1024)) + "é✓"
    recorder = Recorder()
    with anyio.fail_after(TEST_TIMEOUT):
        async with sdk_session(stack, recorder) as session:
            echoed = await session.call_tool("echo", {spec.echo_argument: text})
    assert not echoed.is_error
    assert text_of(echoed).endswith(text)
    recorder.assert_clean()


async def test_session_end_sends_delete(target: tuple[Target, Stack]) -> None:
    spec, stack = target
    recorder = Recorder()
    with anyio.fail_after(TEST_TIMEOUT):
        async with sdk_session(stack, recorder) as session:
            await session.list_tools()
    session_id = recorder.session_id()
    deletes = recorder.deletes()
    assert len(deletes) == 1, recorder.exchanges
    assert deletes[0].session_sent == session_id
    assert deletes[0].status in (200, 204), deletes[0]
    recorder.assert_clean()


async def test_default_client(target: tuple[Target, Stack]) -> None:
    """`mcp.Client` as an application uses it. Its default mode first probes `server/discover`: a
    2026 server (FastMCP) answers, and the stateless per-request protocol follows (no initialize,
    no session); an older one (server-everything) refuses, and the client falls back to the
    initialize handshake and a session, ended by DELETE."""
    spec, stack = target
    tool, arguments, steps = spec.progress_call
    recorder = Recorder()
    progress: list[float] = []

    async def on_progress(value: float, total: float | None, message: str | None) -> None:
        progress.append(value)

    with anyio.fail_after(TEST_TIMEOUT):
        async with connector_http_client(stack, recorder) as http:
            transport = streamable_http_client(stack.mcp_url, http_client=http)
            async with Client(transport, client_info=CLIENT_INFO, read_timeout_seconds=REQUEST_TIMEOUT) as client:
                version = client.protocol_version
                server_info = client.server_info
                listed = await client.list_tools()
                result = await client.call_tool(tool, arguments, progress_callback=on_progress)
    assert server_info is not None and server_info.name == spec.server_name
    assert spec.tools <= {t.name for t in listed.tools}
    assert not result.is_error, result
    assert progress == [float(i) for i in range(1, steps + 1)]
    assert recorder.posts_of("server/discover"), recorder.exchanges
    if spec.fixture == "fastmcp_stack":
        assert version == LATEST_MODERN_VERSION
        assert not recorder.posts_of("initialize") and not recorder.deletes(), recorder.exchanges
    else:
        assert version in HANDSHAKE_PROTOCOL_VERSIONS
        session_id = recorder.session_id()
        [delete] = recorder.deletes()
        assert delete.session_sent == session_id and delete.status == 200, delete
    # The discover probe is refused by a server that does not know it.
    recorder.assert_clean(except_rpc="server/discover")


# ---------------------------------------------------------------------------------------------
# FastMCP only: tool errors, cancellation, the connector key, what the server saw of the end


async def test_fastmcp_tool_errors(fastmcp_stack: Stack) -> None:
    recorder = Recorder()
    with anyio.fail_after(TEST_TIMEOUT):
        async with sdk_session(fastmcp_stack, recorder) as session:
            failed = await session.call_tool("fail", {"reason": "through the tunnel"})
            with pytest.raises(MCPError) as raised:
                await session.call_tool("fail_rpc", {"reason": "rpc"})
            # The session is still usable after both failures.
            ok = await session.call_tool("add", {"a": 1, "b": 1})
    # A tool that raises: an isError result.
    assert failed.is_error
    assert "deliberate failure: through the tunnel" in text_of(failed)
    # A JSON-RPC error from the server reaches the SDK as it was sent.
    assert raised.value.code == -32042
    assert raised.value.message == "deliberate JSON-RPC error: rpc"
    assert raised.value.data == {"reason": "rpc"}
    assert text_of(ok) == "2"
    recorder.assert_clean()


async def test_fastmcp_cancelled_call(fastmcp_stack: Stack) -> None:
    """The SDK abandons a call after its first progress: it posts notifications/cancelled in the
    session, the server stops the tool, and the session goes on."""
    recorder = Recorder()
    first_progress = anyio.Event()

    async def on_progress(value: float, total: float | None, message: str | None) -> None:
        first_progress.set()

    with anyio.fail_after(TEST_TIMEOUT):
        async with sdk_session(fastmcp_stack, recorder) as session:
            async with anyio.create_task_group() as tg:

                async def long_call() -> None:
                    await session.call_tool(
                        "progress", {"steps": 100, "delay_ms": 200}, progress_callback=on_progress
                    )
                    pytest.fail("the 20 s call was not cancelled")

                tg.start_soon(long_call)
                await first_progress.wait()
                tg.cancel_scope.cancel()
            ok = await session.call_tool("add", {"a": 20, "b": 22})
    assert text_of(ok) == "42"
    [cancel] = recorder.posts_of("notifications/cancelled")
    assert cancel.status == 202, cancel
    recorder.assert_clean()


async def test_fastmcp_wrong_connector_key(fastmcp_stack: Stack) -> None:
    """Without the connector key the SDK's initialize fails and nothing reaches the server."""
    before = len(fastmcp_stack.server_events())
    for key in ("mcpt_cn_" + "0" * 64, fastmcp_stack.tunnel.runtime_key):
        recorder = Recorder()
        with anyio.fail_after(TEST_TIMEOUT):
            async with connector_http_client(fastmcp_stack, recorder, key=key) as http:
                async with streamable_http_client(fastmcp_stack.mcp_url, http_client=http) as (read, write):
                    async with ClientSession(
                        read, write, client_info=CLIENT_INFO, read_timeout_seconds=REQUEST_TIMEOUT
                    ) as session:
                        with pytest.raises(MCPError):
                            await session.initialize()
        assert [ex.status for ex in recorder.exchanges] == [401], recorder.exchanges
    assert len(fastmcp_stack.server_events()) == before


async def test_fastmcp_server_sees_session_end(fastmcp_stack: Stack) -> None:
    recorder = Recorder()
    with anyio.fail_after(TEST_TIMEOUT):
        async with sdk_session(fastmcp_stack, recorder) as session:
            await session.call_tool("echo", {"text": "before the end"})
        session_id = recorder.session_id()
        [delete] = recorder.deletes()
        assert delete.status == 200, delete

        # The server answered the DELETE of this session itself, and its transport ended it.
        def server_deletes() -> list[dict[str, Any]]:
            events = fastmcp_stack.server_events()
            return [e for e in events if e["method"] == "DELETE" and e["session"] == session_id]

        [seen] = await eventually("the server to record the DELETE", server_deletes)
        assert seen["status"] == 200, seen
        await eventually(
            "the server to log the session's termination",
            lambda: f"Terminating session: {session_id}" in fastmcp_stack.server_log(),
        )

        # And forgot the session: a request in it now gets the server's 404, through the tunnel.
        response = await raw_post(fastmcp_stack, session_id, {"jsonrpc": "2.0", "id": 99, "method": "tools/list"})
        assert response.status_code == 404, (response.status_code, response.text)
        assert "error" in response.json(), response.text
        events = fastmcp_stack.server_events()
        assert any(
            e["method"] == "POST" and e["session"] == session_id and e["status"] == 404 for e in events
        ), "the 404 did not come from the MCP server"
    recorder.assert_clean()


# ---------------------------------------------------------------------------------------------
# server-everything only: what it saw of the session end


async def test_everything_server_sees_session_end(everything_stack: Stack) -> None:
    recorder = Recorder()
    with anyio.fail_after(TEST_TIMEOUT):
        async with sdk_session(everything_stack, recorder) as session:
            await session.call_tool("echo", {"message": "before the end"})
        session_id = recorder.session_id()
        [delete] = recorder.deletes()
        assert delete.status == 200, delete

        await eventually(
            "server-everything to log the session's termination",
            lambda: f"Received session termination request for session {session_id}"
            in everything_stack.server_log(),
        )
        # It forgot the session: server-everything answers an unknown session with 400. Its body
        # has no "id", so it is no JSON-RPC message and does not cross the tunnel: the client
        # reports the upstream status as a `target_http` tunnel failure instead.
        response = await raw_post(
            everything_stack, session_id, {"jsonrpc": "2.0", "id": 99, "method": "tools/list"}
        )
        assert response.status_code == 400, (response.status_code, response.text)
        error = response.json()["error"]
        assert error["code"] == -32603, error
        failure = error["data"]["tunnel_failure"]
        assert failure["source"] == "target_http" and failure["upstream_status"] == 400, failure
    recorder.assert_clean()
