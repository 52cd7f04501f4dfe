"""The official Python MCP SDK as the MCP host, through relay → `mcp-tunnel run` → real MCP servers.

Each test opens its own MCP session with the SDK's Streamable HTTP client
(`mcp.client.streamable_http.streamable_http_client` and `ClientSession`, mcp 2.x names) at the
relay's connector URL, authenticated with the tunnel's connector key on the `httpx2.AsyncClient`
handed to the SDK, as its documentation says to configure headers. Leaving the client's context
ends the session: the SDK sends the session's DELETE. Every HTTP exchange the SDK makes is recorded
by an httpx2 response hook, so the tests check statuses, session headers and the DELETE without
reaching into the SDK's internals.

Servers:
- FastMCP: tests/e2e/fastmcp_server.py, the SDK's own FastMCP server (named `MCPServer` in
  mcp 2), which also records every HTTP request it answers and every call it saw cancelled;
- server-everything: `@modelcontextprotocol/server-everything` (the reference server, built on
  the TypeScript SDK).

Targets, each a server as a connector reaches it (see `TARGETS`, and conftest.py for how each stack
is started): both servers over Streamable HTTP (`fastmcp`, `everything`); both over stdio, run by
the tunnel client (`fastmcp-stdio`, `everything-stdio`): one child serves every session, the relay
mints the session id, and the client answers the session's DELETE 405; and one tunnel with two
channels (`multi-main`: FastMCP over HTTP on `/v1/mcp/{tunnel}`, `multi-everything`:
server-everything over stdio on `/v1/mcp/{tunnel}/everything`).

A test that fails because of a known bug in src/ says so with `known_src_issue` (a strict xfail
naming the bug): the summary lists it, and it turns into a failure once the bug is fixed.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import httpx2
import mcp_types as types
import pytest
from conftest import Stack, run_stack
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

# Statuses the SDK may see from the relay in a healthy session, per HTTP method. GET is 200: our
# relay and client hold the session's standalone server stream (the `streams` extension); 405
# only when no client instance speaks it. (DELETE on a stdio channel is 405: see
# `Target.delete_statuses`.)
ALLOWED_STATUS = {"POST": {200, 202}, "GET": {200, 405}, "DELETE": {200, 204}}

# The session id the relay mints for a stdio channel, whose server issues none.
MINTED_SESSION_PREFIX = "mcpt-"
SDK_TRANSPORT_LOGGER = "mcp.client.streamable_http"


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

    def rpc_id(self) -> Any:
        return json.loads(self.request_body).get("id") if self.request_body else None


@dataclass
class Recorder:
    """Every HTTP exchange of one SDK client, in order. `delete_statuses`: what the session's
    DELETE may be answered (see `Target.delete_statuses`)."""

    exchanges: list[Exchange] = field(default_factory=list)
    delete_statuses: frozenset[int] = frozenset(ALLOWED_STATUS["DELETE"])

    @classmethod
    def of(cls, target: Target) -> Recorder:
        return cls(delete_statuses=target.delete_statuses)

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
        allowed = {**ALLOWED_STATUS, "DELETE": self.delete_statuses}
        for ex in self.exchanges:
            if except_rpc is None or ex.rpc_method() != except_rpc:
                assert ex.status in allowed[ex.method], f"unexpected answer: {ex}"


def connector_http_client(
    stack: Stack, recorder: Recorder, *, key: str | None = None, timeout: float = 30.0, read: float = 300.0
) -> httpx2.AsyncClient:
    """The HTTP client an MCP host hands the SDK: the connector key, the SDK's default timeouts
    (30 s, 300 s to read a stream), and no proxy from the environment."""
    return httpx2.AsyncClient(
        headers={"Authorization": f"Bearer {key or stack.tunnel.connector_key}"},
        timeout=httpx2.Timeout(timeout, read=read),
        event_hooks={"response": [recorder.on_response]},
        trust_env=False,
    )


@asynccontextmanager
async def sdk_session(
    stack: Stack, recorder: Recorder, *, timeout: float | None = None
) -> AsyncIterator[ClientSession]:
    """An initialized SDK session through the tunnel; leaving it ends the session (DELETE).
    `timeout`: every HTTP timeout of the session (default: the SDK's)."""
    timeouts = {} if timeout is None else {"timeout": timeout, "read": timeout}
    async with connector_http_client(stack, recorder, **timeouts) as http:
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
class Server:
    """What one MCP server offers, for the tests every target runs."""

    name: str
    tools: frozenset[str]
    plain_call: tuple[str, dict[str, Any], str]  # tool, arguments, expected text
    progress_tool: str  # reports progress once per step
    progress_args: Callable[[int], dict[str, Any]]  # steps → its arguments
    progress_text: Callable[[int], str]  # steps → the text of its result
    echo_argument: str  # the argument of the server's `echo` tool
    # Answers `server/discover` over Streamable HTTP, so that `mcp.Client` goes stateless.
    discoverable: bool

    def progress_call(self, steps: int = 3) -> tuple[str, dict[str, Any], int]:
        """Tool, arguments, progress notifications."""
        return self.progress_tool, self.progress_args(steps), steps


FASTMCP = Server(
    name="mcp-tunnel-e2e-fastmcp",
    tools=frozenset({"add", "echo", "progress", "fail", "fail_rpc"}),
    plain_call=("add", {"a": 2, "b": 40}, "42"),
    progress_tool="progress",
    progress_args=lambda steps: {"steps": steps, "delay_ms": 150},
    progress_text=lambda steps: f"done after {steps} steps",
    echo_argument="text",
    discoverable=True,
)
EVERYTHING = Server(
    name="mcp-servers/everything",
    tools=frozenset({"echo", "get-sum", "trigger-long-running-operation"}),
    plain_call=("get-sum", {"a": 2, "b": 40}, "The sum of 2 and 40 is 42."),
    progress_tool="trigger-long-running-operation",
    progress_args=lambda steps: {"duration": 1, "steps": steps},
    progress_text=lambda steps: f"Long running operation completed. Duration: 1 seconds, Steps: {steps}.",
    echo_argument="message",
    discoverable=False,
)


@dataclass(frozen=True)
class Target:
    """One MCP server as a connector reaches it: the stack serving it (a layout of conftest's
    `LAYOUTS`, started once per run by the fixture of the same name), the tunnel channel, and
    whether the tunnel client runs it over stdio."""

    server: Server
    stack: str
    channel: str | None = None
    stdio: bool = False

    @property
    def fixture(self) -> str:
        return self.stack.replace("-", "_") + "_stack"

    @property
    def delete_statuses(self) -> frozenset[int]:
        """A stdio server has no session to end over its transport: the client answers the
        DELETE 405, which the Streamable HTTP transport allows ("the server does not allow
        clients to terminate sessions")."""
        return frozenset({405}) if self.stdio else frozenset(ALLOWED_STATUS["DELETE"])

    @property
    def stateless_default_client(self) -> bool:
        """`mcp.Client` goes stateless: FastMCP answers `server/discover` over HTTP, and over
        stdio the tunnel client's era probe gives modern requests the child that answered it."""
        return self.server.discoverable


TARGETS = {
    "fastmcp": Target(FASTMCP, "fastmcp"),
    "everything": Target(EVERYTHING, "everything"),
    "fastmcp-stdio": Target(FASTMCP, "fastmcp-stdio", stdio=True),
    "everything-stdio": Target(EVERYTHING, "everything-stdio", stdio=True),
    "multi-main": Target(FASTMCP, "multi"),
    "multi-everything": Target(EVERYTHING, "multi", channel="everything", stdio=True),
}
FASTMCP_TARGETS = ["fastmcp", "fastmcp-stdio"]


def known_src_issue(request: pytest.FixtureRequest, reason: str) -> None:
    """Marks the running test as failing because of a known bug in src/ (strict: once the bug is
    fixed the test passes, pytest reports XPASS as a failure, and this call must go)."""
    request.applymarker(pytest.mark.xfail(strict=True, reason=f"src bug: {reason}"))


def _target(request: pytest.FixtureRequest) -> tuple[Target, Stack]:
    spec = TARGETS[request.param]
    stack: Stack = request.getfixturevalue(spec.fixture)
    return spec, stack.on_channel(spec.channel)


@pytest.fixture(params=sorted(TARGETS))
def target(request: pytest.FixtureRequest) -> tuple[Target, Stack]:
    """Every target; the stack reaches the target's channel."""
    return _target(request)


@pytest.fixture(params=FASTMCP_TARGETS)
def fastmcp_target(request: pytest.FixtureRequest) -> tuple[Target, Stack]:
    """FastMCP over HTTP and over stdio."""
    return _target(request)


# ---------------------------------------------------------------------------------------------
# Every target


async def test_initialize_and_list_tools(target: tuple[Target, Stack]) -> None:
    spec, stack = target
    recorder = Recorder.of(spec)
    with anyio.fail_after(TEST_TIMEOUT):
        async with connector_http_client(stack, recorder) as http:
            async with streamable_http_client(stack.mcp_url, http_client=http) as (read, write):
                async with ClientSession(
                    read, write, client_info=CLIENT_INFO, read_timeout_seconds=REQUEST_TIMEOUT
                ) as session:
                    init = await session.initialize()
                    listed = await session.list_tools()
    assert init.server_info.name == spec.server.name
    assert init.protocol_version in HANDSHAKE_PROTOCOL_VERSIONS
    assert init.capabilities.tools is not None
    names = {tool.name for tool in listed.tools}
    assert spec.server.tools <= names, f"missing tools: {sorted(spec.server.tools - names)}"
    for tool in listed.tools:
        assert tool.input_schema.get("type") == "object", tool
    # Every later POST of the session carried the session id of the initialize answer: the
    # server's own over HTTP, one the relay minted for a stdio server (which issues none).
    session_id = recorder.session_id()
    assert session_id.startswith(MINTED_SESSION_PREFIX) == spec.stdio, session_id
    later = [ex for ex in recorder.exchanges if ex.method == "POST"][1:]
    assert later and all(ex.session_sent == session_id for ex in later), recorder.exchanges
    assert recorder.posts_of("notifications/initialized")[0].status == 202
    recorder.assert_clean()


async def test_tool_call(target: tuple[Target, Stack]) -> None:
    spec, stack = target
    tool, arguments, expected = spec.server.plain_call
    # Text that must cross the tunnel intact: non-ASCII, quotes, escapes, newlines.
    text = 'héllo "wörld" ✓ 🚇\nline two\ttab \\ backslash </script>'
    recorder = Recorder.of(spec)
    with anyio.fail_after(TEST_TIMEOUT):
        async with sdk_session(stack, recorder) as session:
            result = await session.call_tool(tool, arguments)
            echoed = await session.call_tool("echo", {spec.server.echo_argument: text})
    assert not result.is_error, result
    assert text_of(result) == expected
    assert not echoed.is_error, echoed
    assert text_of(echoed).endswith(text)
    recorder.assert_clean()


async def test_progress_notifications(target: tuple[Target, Stack]) -> None:
    spec, stack = target
    tool, arguments, steps = spec.server.progress_call()
    progress: list[tuple[float, float | None]] = []

    async def on_progress(value: float, total: float | None, message: str | None) -> None:
        progress.append((value, total))

    recorder = Recorder.of(spec)
    with anyio.fail_after(TEST_TIMEOUT):
        async with sdk_session(stack, recorder) as session:
            result = await session.call_tool(tool, arguments, progress_callback=on_progress)
            # Notifications come before the result, so the callback has run by now.
            assert len(progress) >= 1, "the progress callback never fired"
    assert not result.is_error, result
    assert text_of(result) == spec.server.progress_text(steps)
    assert progress == [(float(i), float(steps)) for i in range(1, steps + 1)]
    [call] = recorder.posts_of("tools/call")
    assert call.status == 200 and call.content_type.startswith("text/event-stream"), call
    recorder.assert_clean()


async def test_concurrent_calls_keep_their_progress(target: tuple[Target, Stack]) -> None:
    """Several calls in flight in one session: each answer and each progress notification reaches
    the request it belongs to."""
    spec, stack = target
    calls = 3
    progress: dict[int, list[float]] = {i: [] for i in range(calls)}
    results: dict[int, types.CallToolResult] = {}
    recorder = Recorder.of(spec)

    with anyio.fail_after(TEST_TIMEOUT):
        async with sdk_session(stack, recorder) as session:

            async def call(i: int) -> None:
                async def on_progress(value: float, total: float | None, message: str | None) -> None:
                    progress[i].append(value)

                # A different number of steps per call: each result says whose it is.
                tool, arguments, _ = spec.server.progress_call(2 + i)
                results[i] = await session.call_tool(tool, arguments, progress_callback=on_progress)

            async with anyio.create_task_group() as tg:
                for i in range(calls):
                    tg.start_soon(call, i)
    assert progress == {i: [float(s) for s in range(1, 2 + i + 1)] for i in range(calls)}, progress
    assert {i: text_of(r) for i, r in results.items()} == {
        i: spec.server.progress_text(2 + i) for i in range(calls)
    }, results
    assert len(recorder.posts_of("tools/call")) == calls
    recorder.assert_clean()


async def test_two_sessions_at_once(target: tuple[Target, Stack]) -> None:
    """Two SDK sessions, each with its own HTTP client, call tools at the same time. Their JSON-RPC
    ids and progress tokens collide (each SDK session counts from 0), and on a stdio channel one
    child serves both: each session still gets its own answers and progress, and only its own."""
    spec, stack = target
    steps = {"a": 3, "b": 4}
    recorders = {name: Recorder.of(spec) for name in steps}
    progress: dict[str, list[tuple[float, float | None]]] = {name: [] for name in steps}
    results: dict[str, tuple[types.CallToolResult, types.CallToolResult]] = {}
    timeline: list[tuple[str, str]] = []  # (session, "progress" | "result"), as they arrive
    both_ready = anyio.Event()
    ready: set[str] = set()

    async def run(name: str) -> None:
        async def on_progress(value: float, total: float | None, message: str | None) -> None:
            progress[name].append((value, total))
            timeline.append((name, "progress"))

        async with sdk_session(stack, recorders[name]) as session:
            ready.add(name)
            if ready == set(steps):
                both_ready.set()
            await both_ready.wait()
            tool, arguments, _ = spec.server.progress_call(steps[name])
            slow = await session.call_tool(tool, arguments, progress_callback=on_progress)
            timeline.append((name, "result"))
            plain_tool, plain_arguments, _ = spec.server.plain_call
            plain = await session.call_tool(plain_tool, {**plain_arguments, "b": steps[name]})
            results[name] = (slow, plain)

    with anyio.fail_after(TEST_TIMEOUT):
        async with anyio.create_task_group() as tg:
            for name in steps:
                tg.start_soon(run, name)

    # The ids collided: both sessions sent the same ids for their calls.
    ids = {name: [ex.rpc_id() for ex in r.posts_of("tools/call")] for name, r in recorders.items()}
    assert ids["a"] == ids["b"] and len(ids["a"]) == 2, ids
    # The two slow calls overlapped: each reported progress before either finished.
    first_result = timeline.index(next(ev for ev in timeline if ev[1] == "result"))
    assert {name for name, kind in timeline[:first_result] if kind == "progress"} == set(steps), timeline
    for name, n in steps.items():
        slow, plain = results[name]
        assert text_of(slow) == spec.server.progress_text(n), (name, slow)
        assert progress[name] == [(float(i), float(n)) for i in range(1, n + 1)], (name, progress)
        assert not plain.is_error and str(2 + n) in text_of(plain), (name, plain)
    # Two sessions, not one.
    assert recorders["a"].session_id() != recorders["b"].session_id()
    for recorder in recorders.values():
        recorder.assert_clean()


async def test_large_payload(target: tuple[Target, Stack]) -> None:
    """A 200 KiB argument and its echo cross the tunnel intact. (FastMCP sends the text twice, as
    content and as structured content, in one SSE event, and the SDK reads events up to 1 MiB.)"""
    spec, stack = target
    text = "".join(chr(0x20 + (i * 7919) % 0x5E) for i in range(200 * 1024)) + "é✓"
    recorder = Recorder.of(spec)
    with anyio.fail_after(TEST_TIMEOUT):
        async with sdk_session(stack, recorder) as session:
            echoed = await session.call_tool("echo", {spec.server.echo_argument: text})
    assert not echoed.is_error
    assert text_of(echoed).endswith(text)
    recorder.assert_clean()


async def test_session_end_sends_delete(target: tuple[Target, Stack], caplog: pytest.LogCaptureFixture) -> None:
    """Leaving the SDK's context sends the session's DELETE. Over HTTP the server ends the
    session (200); on a stdio channel the client answers 405, which the SDK takes as "the server
    does not allow session termination": it closes the session without raising or warning, and
    the channel keeps serving."""
    spec, stack = target
    caplog.set_level(logging.DEBUG, logger=SDK_TRANSPORT_LOGGER)
    recorder = Recorder.of(spec)
    with anyio.fail_after(TEST_TIMEOUT):
        async with sdk_session(stack, recorder) as session:
            await session.list_tools()
    session_id = recorder.session_id()
    deletes = recorder.deletes()
    assert len(deletes) == 1, recorder.exchanges
    assert deletes[0].session_sent == session_id
    assert deletes[0].status in spec.delete_statuses, deletes[0]
    sdk_log = [r for r in caplog.records if r.name == SDK_TRANSPORT_LOGGER]
    assert not [r for r in sdk_log if r.levelno >= logging.WARNING], [r.getMessage() for r in sdk_log]
    if spec.stdio:
        assert any("does not allow session termination" in r.getMessage() for r in sdk_log)
        # The channel keeps serving: a new session works.
        after = Recorder.of(spec)
        with anyio.fail_after(TEST_TIMEOUT):
            async with sdk_session(stack, after) as session:
                listed = await session.list_tools()
        assert spec.server.tools <= {t.name for t in listed.tools}
        assert after.session_id() != session_id
        after.assert_clean()
    recorder.assert_clean()


async def test_default_client(target: tuple[Target, Stack]) -> None:
    """`mcp.Client` as an application uses it. Its default mode first probes `server/discover`: a
    2026 server (FastMCP, over HTTP and over stdio) answers, and the stateless per-request protocol
    follows (no initialize, no session); one that refuses it (server-everything) makes the client
    fall back to the initialize handshake and a session, ended by DELETE."""
    spec, stack = target
    tool, arguments, steps = spec.server.progress_call()
    recorder = Recorder.of(spec)
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
    assert server_info is not None and server_info.name == spec.server.name
    assert spec.server.tools <= {t.name for t in listed.tools}
    assert not result.is_error, result
    assert progress == [float(i) for i in range(1, steps + 1)]
    assert recorder.posts_of("server/discover"), recorder.exchanges
    if spec.stateless_default_client:
        assert version == LATEST_MODERN_VERSION
        assert not recorder.posts_of("initialize") and not recorder.deletes(), recorder.exchanges
    else:
        assert version in HANDSHAKE_PROTOCOL_VERSIONS
        session_id = recorder.session_id()
        [delete] = recorder.deletes()
        assert delete.session_sent == session_id and delete.status in spec.delete_statuses, delete
    # The discover probe is refused by a server that does not know it.
    recorder.assert_clean(except_rpc="server/discover")


# ---------------------------------------------------------------------------------------------
# One tunnel, two channels


async def test_multi_channel(multi_stack: Stack) -> None:
    """One SDK host talks to both channels of one tunnel at the same time: FastMCP over HTTP on
    `/v1/mcp/{tunnel}`, server-everything over stdio on `/v1/mcp/{tunnel}/everything`. Each
    channel answers as its own server, the sessions stay apart, and a channel the client does not
    serve is refused."""
    channels = {"main": TARGETS["multi-main"], "everything": TARGETS["multi-everything"]}
    recorders = {name: Recorder.of(spec) for name, spec in channels.items()}
    seen: dict[str, tuple[str, set[str], str, list[float]]] = {}

    async def use(name: str) -> None:
        spec = channels[name]
        progress: list[float] = []

        async def on_progress(value: float, total: float | None, message: str | None) -> None:
            progress.append(value)

        stack = multi_stack.on_channel(spec.channel)
        async with sdk_session(stack, recorders[name]) as session:
            listed = await session.list_tools()
            tool, arguments, _ = spec.server.progress_call()
            result = await session.call_tool(tool, arguments, progress_callback=on_progress)
            seen[name] = (session.server_info.name, {t.name for t in listed.tools}, text_of(result), progress)

    with anyio.fail_after(TEST_TIMEOUT):
        async with anyio.create_task_group() as tg:
            for name in channels:
                tg.start_soon(use, name)

    for name, spec in channels.items():
        server_name, tools, text, progress = seen[name]
        assert server_name == spec.server.name, (name, server_name)
        assert spec.server.tools <= tools, (name, tools)
        assert text == spec.server.progress_text(3), (name, text)
        assert progress == [1.0, 2.0, 3.0], (name, progress)
        recorders[name].assert_clean()
    main_session = recorders["main"].session_id()
    channel_session = recorders["everything"].session_id()
    assert not main_session.startswith(MINTED_SESSION_PREFIX)
    assert channel_session.startswith(MINTED_SESSION_PREFIX)
    assert [d.status for d in recorders["main"].deletes()] == [200]
    assert [d.status for d in recorders["everything"].deletes()] == [405]
    # The HTTP server on main saw its own session only, never the stdio channel's.
    sessions = {e.get("session") for e in multi_stack.server_events() if e["kind"] == "http"}
    assert main_session in sessions and channel_session not in sessions, sessions

    # A channel the client does not serve: the client answers 400 "unsupported channel", which
    # the SDK raises from initialize.
    recorder = Recorder()
    with anyio.fail_after(TEST_TIMEOUT):
        async with connector_http_client(multi_stack, recorder) as http:
            url = multi_stack.on_channel("nope").mcp_url
            async with streamable_http_client(url, http_client=http) as (read, write):
                async with ClientSession(
                    read, write, client_info=CLIENT_INFO, read_timeout_seconds=REQUEST_TIMEOUT
                ) as session:
                    with pytest.raises(MCPError) as raised:
                        await session.initialize()
    assert "unsupported channel" in raised.value.message, raised.value
    assert [ex.status for ex in recorder.exchanges] == [400], recorder.exchanges


# ---------------------------------------------------------------------------------------------
# stdio: what the child is given


@pytest.mark.parametrize("name", ["everything-stdio", "multi-everything"])
async def test_stdio_server_environment_has_no_key(name: str, request: pytest.FixtureRequest) -> None:
    """server-everything's `get-env` tool returns its whole environment to any connector. The
    stdio server runs with the tunnel client's environment: it must not hold the runtime key
    (with it, a connector could poll the tunnel itself and take other callers' requests)."""
    spec = TARGETS[name]
    stack: Stack = request.getfixturevalue(spec.fixture).on_channel(spec.channel)
    recorder = Recorder.of(spec)
    with anyio.fail_after(TEST_TIMEOUT):
        async with sdk_session(stack, recorder) as session:
            result = await session.call_tool("get-env", {})
    env = json.loads(text_of(result))
    leaked = sorted(k for k, v in env.items() if stack.tunnel.runtime_key in v)
    assert not leaked, f"the runtime key is in the stdio server's environment as {leaked}"
    recorder.assert_clean()


# ---------------------------------------------------------------------------------------------
# FastMCP only: tool errors, cancellation (over HTTP and stdio), the connector key, what the
# server saw of the end


async def abandon_long_call(session: ClientSession) -> None:
    """Starts a 20 s `progress` call and abandons it at its first progress, as an application
    cancels a task: the SDK then posts notifications/cancelled for the call."""
    first_progress = anyio.Event()

    async def on_progress(value: float, total: float | None, message: str | None) -> None:
        first_progress.set()

    async def long_call() -> None:
        await session.call_tool("progress", {"steps": 100, "delay_ms": 200}, progress_callback=on_progress)
        pytest.fail("the 20 s call was not cancelled")

    async with anyio.create_task_group() as tg:
        tg.start_soon(long_call)
        with anyio.fail_after(10.0):
            await first_progress.wait()
        tg.cancel_scope.cancel()


async def test_fastmcp_tool_errors(fastmcp_target: tuple[Target, Stack]) -> None:
    spec, stack = fastmcp_target
    recorder = Recorder.of(spec)
    with anyio.fail_after(TEST_TIMEOUT):
        async with sdk_session(stack, recorder) as session:
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


async def test_fastmcp_cancelled_call(fastmcp_target: tuple[Target, Stack]) -> None:
    """The SDK abandons a call after its first progress: it posts notifications/cancelled in the
    session, the server stops the tool, and the session goes on."""
    spec, stack = fastmcp_target
    recorder = Recorder.of(spec)
    cancelled_before = [e for e in stack.server_events() if e["kind"] == "cancelled"]
    with anyio.fail_after(TEST_TIMEOUT):
        async with sdk_session(stack, recorder) as session:
            await abandon_long_call(session)
            ok = await session.call_tool("add", {"a": 20, "b": 22})
            # The server stopped the tool well before its 20 s were up.
            cancelled = await eventually(
                "the server to record the tool's cancellation",
                lambda: [e for e in stack.server_events() if e["kind"] == "cancelled"][len(cancelled_before) :],
                timeout=5.0,
            )
    assert text_of(ok) == "42"
    assert [e["tool"] for e in cancelled] == ["progress"] and cancelled[0]["step"] < 50, cancelled
    [cancel] = recorder.posts_of("notifications/cancelled")
    assert cancel.status == 202, cancel
    recorder.assert_clean()


TWO_WORKERS = 2


@pytest.fixture
def two_worker_stack(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Target, Stack]]:
    """A stack of its own for one test, whose client runs only two MCP calls at once."""
    spec = TARGETS[request.param]
    settings = {"MCP_MAX_CONCURRENT_REQUESTS": str(TWO_WORKERS)}
    with run_stack(spec.stack, tmp_path, client_settings=settings) as stack:
        yield spec, stack.on_channel(spec.channel)


@pytest.mark.parametrize("two_worker_stack", FASTMCP_TARGETS, indirect=True)
async def test_fastmcp_cancelled_calls_free_the_client(
    two_worker_stack: tuple[Target, Stack], request: pytest.FixtureRequest
) -> None:
    """A server sends no answer for a call it was told to cancel (as the MCP specification asks).
    The client must not wait for one: after as many cancelled calls as it runs at once, the next
    call is still answered at once."""
    spec, stack = two_worker_stack
    recorder = Recorder.of(spec)
    with anyio.fail_after(TEST_TIMEOUT):
        # Short HTTP timeouts: when the client is stuck, the SDK's cancel and DELETE give up soon.
        async with sdk_session(stack, recorder, timeout=5.0) as session:
            for _ in range(TWO_WORKERS):
                await abandon_long_call(session)
            with anyio.move_on_after(5.0) as waited:
                ok = await session.call_tool("add", {"a": 20, "b": 22})
            assert not waited.cancelled_caught, f"no answer within 5 s after {TWO_WORKERS} cancelled calls"
            cancelled = await eventually(
                f"the server to record {TWO_WORKERS} cancellations",
                lambda: len([e for e in stack.server_events() if e["kind"] == "cancelled"]) == TWO_WORKERS,
            )
    assert cancelled and text_of(ok) == "42"
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
            return [e for e in events if e["kind"] == "http" and e["method"] == "DELETE" and e["session"] == session_id]

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
            e["kind"] == "http" and e["method"] == "POST" and e["session"] == session_id and e["status"] == 404
            for e in events
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
