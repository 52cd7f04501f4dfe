"""Streams both ways through relay → `mcp-tunnel run` → real MCP servers (issue 14, item 4).

- Long-lived streams, both eras at once, each held `E2E_STREAM_HOLD_S` seconds (default 180):
  server-everything (2025 protocol, Streamable HTTP) with a resource subscription — the Python
  SDK as host gets `notifications/resources/updated` on its standalone GET stream, and a raw host
  reading the bytes of its own session's GET stream sees them and the relay's `: keep-alive`
  heartbeats too; and FastMCP (2026-07-28) `subscriptions/listen` read raw: the acknowledgement,
  updates the test publishes through the tunnel, heartbeats, and the completion result when the
  server closes its listen streams gracefully. The relay's heartbeat is shortened to
  `HEARTBEAT_S` (`--stream.heartbeat`, an ordinary option) so heartbeats show between updates.
- Cancellation: a host closes its response stream mid-call (2025 and 2026-07-28); FastMCP's tool
  sees the cancellation within 1 s, and the client's only worker is free again (its /metrics say
  no command in flight, and the next call is answered at once).
- Server→client requests: server-everything's sampling, elicitation and roots tools completed by
  an SDK host that answers them, through our relay and client; and through a control plane that
  does not speak our extension (a proxy in front of the relay that drops the extension header
  both ways, so the client and relay each see the official contract) refused within 2 s.
- A host that does not read a noisy listen stream: the relay ends the stream once its bounded
  buffer is full, and its resident memory stays bounded.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import anyio
import httpx2
import mcp_types as types
import pytest
from conftest import LOOPBACK, Stack, free_port, run_stack
from mcp.client.session import ClientSession
from mcp.client.streamable_http import streamable_http_client
from mcp_types.version import LATEST_MODERN_VERSION

HOLD_S = float(os.environ.get("E2E_STREAM_HOLD_S", "180"))
HEARTBEAT_S = 2
# server-everything's simulated updates come every 5 s; the test publishes FastMCP's as often.
UPDATE_EVERY_S = 5.0
LEGACY_VERSION = "2025-06-18"
CLIENT_INFO = types.Implementation(name="mcp-tunnel-e2e-streams", version="1.0.0")
EXTENSIONS_HEADER = "x-mcp-tunnel-extensions"
SUBSCRIPTION_ID = "io.modelcontextprotocol/subscriptionId"
EVERYTHING_URI = "demo://resource/dynamic/text/1"


def _stream_relay() -> dict[str, str]:
    return {"RELAY_STREAM_HEARTBEAT": f"{HEARTBEAT_S}s"}


@pytest.fixture(scope="module")
def everything_streams(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with run_stack("everything", tmp_path_factory.mktemp("everything-streams"), relay_settings=_stream_relay()) as s:
        yield s


@dataclass
class Health:
    port: int

    def inflight(self) -> int:
        text = httpx2.get(f"http://{LOOPBACK}:{self.port}/metrics", timeout=5, trust_env=False).text
        for line in text.splitlines():
            if line.startswith("mcp_tunnel_inflight_commands "):
                return int(float(line.split()[1]))
        raise AssertionError(f"no mcp_tunnel_inflight_commands in /metrics:\n{text[:2000]}")


@pytest.fixture(scope="module")
def fastmcp_streams(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Stack, Health]]:
    """FastMCP over HTTP; the client runs one MCP call at a time and serves /metrics."""
    health = Health(free_port())
    settings = {"MCP_MAX_CONCURRENT_REQUESTS": "1", "HEALTH_LISTEN_ADDR": f"{LOOPBACK}:{health.port}"}
    workdir = tmp_path_factory.mktemp("fastmcp-streams")
    with run_stack("fastmcp", workdir, client_settings=settings, relay_settings=_stream_relay()) as s:
        yield s, health


# ---------------------------------------------------------------------------------------------
# Raw hosts


def _headers(stack: Stack, **more: str) -> dict[str, str]:
    return {
        "Authorization": f"Bearer {stack.tunnel.connector_key}",
        "Accept": "application/json, text/event-stream",
        **more,
    }


MODERN_META = {
    "io.modelcontextprotocol/protocolVersion": LATEST_MODERN_VERSION,
    "io.modelcontextprotocol/clientCapabilities": {},
    "io.modelcontextprotocol/clientInfo": {"name": "mcp-tunnel-e2e-streams", "version": "1.0.0"},
}


def modern_post(
    stack: Stack, method: str, params: dict[str, Any], rid: Any, name: str | None = None, **meta: Any
) -> httpx2.Request:
    """A 2026-07-28 request (stateless: `_meta`, `Mcp-Method`/`Mcp-Name` headers); `meta` adds
    to its `_meta`."""
    headers = _headers(stack, **{"MCP-Protocol-Version": LATEST_MODERN_VERSION, "Mcp-Method": method})
    if name is not None:
        headers["Mcp-Name"] = name
    body = {"jsonrpc": "2.0", "id": rid, "method": method, "params": {**params, "_meta": {**MODERN_META, **meta}}}
    return httpx2.Request("POST", stack.mcp_url, json=body, headers=headers)


def modern_call(stack: Stack, tool: str, arguments: dict[str, Any], rid: Any, timeout: float = 30.0) -> dict[str, Any]:
    request = modern_post(stack, "tools/call", {"name": tool, "arguments": arguments}, rid, name=tool)
    with httpx2.Client(trust_env=False, timeout=timeout) as http:
        response = http.send(request)
    assert response.status_code == 200, (response.status_code, response.text[:500])
    return _final(response, rid)


def _final(response: httpx2.Response, rid: Any) -> dict[str, Any]:
    """The answer to `rid` in a JSON or event-stream response."""
    if response.headers.get("content-type", "").startswith("text/event-stream"):
        for line in response.text.splitlines():
            if line.startswith("data:"):
                message = json.loads(line[5:])
                if message.get("id") == rid:
                    return message
        raise AssertionError(f"no answer to {rid!r} in {response.text[:1000]}")
    return response.json()


@dataclass
class LegacySession:
    """A 2025 session opened with raw POSTs."""

    stack: Stack
    session_id: str
    next_id: int = 100

    @classmethod
    def open(cls, stack: Stack, capabilities: dict[str, Any] | None = None) -> LegacySession:
        init = {
            "jsonrpc": "2.0",
            "id": 1,
            "method": "initialize",
            "params": {
                "protocolVersion": LEGACY_VERSION,
                "capabilities": capabilities or {},
                "clientInfo": {"name": "mcp-tunnel-e2e-streams-raw", "version": "1.0.0"},
            },
        }
        with httpx2.Client(trust_env=False, timeout=30) as http:
            response = http.post(stack.mcp_url, json=init, headers=_headers(stack))
            assert response.status_code == 200, (response.status_code, response.text[:500])
            session_id = response.headers["mcp-session-id"]
            done = http.post(
                stack.mcp_url,
                json={"jsonrpc": "2.0", "method": "notifications/initialized"},
                headers=_headers(stack, **{"Mcp-Session-Id": session_id, "MCP-Protocol-Version": LEGACY_VERSION}),
            )
            assert done.status_code == 202, (done.status_code, done.text[:500])
        return cls(stack, session_id)

    def headers(self) -> dict[str, str]:
        return _headers(self.stack, **{"Mcp-Session-Id": self.session_id, "MCP-Protocol-Version": LEGACY_VERSION})

    def request(self, method: str, params: dict[str, Any]) -> httpx2.Request:
        self.next_id += 1
        body = {"jsonrpc": "2.0", "id": self.next_id, "method": method, "params": params}
        return httpx2.Request("POST", self.stack.mcp_url, json=body, headers=self.headers())

    def call(self, method: str, params: dict[str, Any], timeout: float = 30.0) -> dict[str, Any]:
        request = self.request(method, params)
        with httpx2.Client(trust_env=False, timeout=timeout) as http:
            response = http.send(request)
        assert response.status_code == 200, (response.status_code, response.text[:500])
        return _final(response, self.next_id)

    def close(self) -> None:
        with httpx2.Client(trust_env=False, timeout=10) as http:
            http.delete(self.stack.mcp_url, headers=self.headers())


@dataclass
class RawStream:
    """What a raw host read of one event stream: each message with its arrival time, and the
    times of the SSE comments (`: keep-alive`) between them."""

    messages: list[tuple[float, dict[str, Any]]] = field(default_factory=list)
    comments: list[tuple[float, str]] = field(default_factory=list)
    status: int | None = None
    ended: str = ""
    _lines: Iterator[str] | None = None

    def read(self, response: httpx2.Response, until: float, stop_when: Any = None) -> None:
        """Reads `response` line by line until `until` (monotonic; checked as lines come), its
        end, or `stop_when(message)`; a later call reads on where this one stopped."""
        self.status = response.status_code
        if self._lines is None:
            self._lines = response.iter_lines()
        data: list[str] = []
        for line in self._lines:
            now = time.monotonic()
            if line.startswith(":"):
                self.comments.append((now, line))
            elif line.startswith("data:"):
                data.append(line[5:].strip())
            elif line == "" and data:
                message = json.loads("\n".join(data))
                data = []
                self.messages.append((now, message))
                if stop_when is not None and stop_when(message):
                    self.ended = "stopped"
                    return
            if now >= until:
                self.ended = "held"
                return
        self.ended = "eof"

    def of(self, method: str) -> list[tuple[float, dict[str, Any]]]:
        return [(t, m) for t, m in self.messages if m.get("method") == method]


def assert_throughout(what: str, times: list[float], start: float, end: float, gap: float) -> None:
    """`times` cover [start, end] with no hole longer than `gap` seconds."""
    assert times, f"no {what} at all"
    points = [start, *sorted(times), end]
    holes = [b - a for a, b in zip(points, points[1:], strict=False)]
    assert max(holes) <= gap, f"{what}: a {max(holes):.1f}s gap (at most {gap}s), {len(times)} in {end - start:.0f}s"


# ---------------------------------------------------------------------------------------------
# Long-lived streams, both eras at once


def _hold_everything_sdk(stack: Stack, result: dict[str, Any]) -> None:
    """The SDK host: subscribe, switch server-everything's updates on, hold its GET stream."""

    async def run() -> None:
        updates: list[float] = []

        async def on_message(message: Any) -> None:
            message = getattr(message, "root", message)
            if isinstance(message, types.ResourceUpdatedNotification) and message.params.uri == EVERYTHING_URI:
                updates.append(time.monotonic())

        headers = {"Authorization": f"Bearer {stack.tunnel.connector_key}"}
        timeout = httpx2.Timeout(30.0, read=300.0)
        async with httpx2.AsyncClient(headers=headers, timeout=timeout, trust_env=False) as http:
            async with streamable_http_client(stack.mcp_url, http_client=http) as (read, write):
                async with ClientSession(read, write, client_info=CLIENT_INFO, message_handler=on_message) as session:
                    await session.initialize()
                    await session.subscribe_resource(EVERYTHING_URI)  # type: ignore[deprecated]
                    toggled = await session.call_tool("toggle-subscriber-updates", {})
                    assert "Started" in toggled.content[0].text, toggled  # type: ignore[union-attr]
                    start = time.monotonic()
                    await anyio.sleep(HOLD_S)
                    result["sdk"] = (start, time.monotonic(), list(updates))
                    await session.call_tool("toggle-subscriber-updates", {})

    anyio.run(run)


def _hold_everything_raw(stack: Stack, result: dict[str, Any]) -> None:
    """The raw host: its own session, the same subscription, its GET stream read byte by byte."""
    session = LegacySession.open(stack)
    stream = RawStream()
    with httpx2.Client(trust_env=False, timeout=httpx2.Timeout(30.0, read=60.0)) as http:
        get = httpx2.Request("GET", stack.mcp_url, headers={**session.headers(), "Accept": "text/event-stream"})
        response = http.send(get, stream=True)
        try:
            session.call("resources/subscribe", {"uri": EVERYTHING_URI})
            session.call("tools/call", {"name": "toggle-subscriber-updates", "arguments": {}})
            start = time.monotonic()
            stream.read(response, start + HOLD_S)
            result["raw"] = (start, time.monotonic(), stream)
        finally:
            response.close()
    session.call("tools/call", {"name": "toggle-subscriber-updates", "arguments": {}})
    session.close()


def _hold_listen(stack: Stack, result: dict[str, Any]) -> None:
    """A 2026-07-28 host listens; the test publishes an update every few seconds through the
    tunnel, then has the server close its listen streams gracefully."""
    uri = "e2e://streams/held"
    listen = modern_post(stack, "subscriptions/listen", {"notifications": {"resourceSubscriptions": [uri]}}, "held-1")
    stream = RawStream()
    published: list[float] = []
    stop = threading.Event()

    def publish() -> None:
        n = 0
        while not stop.wait(UPDATE_EVERY_S):
            n += 1
            answer = modern_call(stack, "publish_updated", {"uri": uri}, f"pub-{n}")
            assert answer["result"]["isError"] is False, answer
            published.append(time.monotonic())
        answer = modern_call(stack, "close_listens", {}, "close-1")
        assert answer["result"]["isError"] is False, answer

    publisher = threading.Thread(target=publish, daemon=True)
    with httpx2.Client(trust_env=False, timeout=httpx2.Timeout(30.0, read=60.0)) as http:
        response = http.send(listen, stream=True)
        try:
            assert response.status_code == 200, (response.status_code, response.read()[:500])
            start = time.monotonic()
            publisher.start()
            stream.read(response, start + HOLD_S)
            held_until = time.monotonic()
            stop.set()
            # Then the graceful close: the rest, up to the completion result.
            stream.read(response, time.monotonic() + 30, stop_when=lambda m: m.get("id") == "held-1")
            result["listen"] = (start, held_until, stream, published)
        finally:
            stop.set()
            response.close()
            publisher.join(timeout=60)


def test_streams_held_in_both_eras(everything_streams: Stack, fastmcp_streams: tuple[Stack, Health]) -> None:
    fastmcp, _ = fastmcp_streams
    result: dict[str, Any] = {}
    errors: list[BaseException] = []

    def guarded(target: Any, stack: Stack) -> threading.Thread:
        def run() -> None:
            try:
                target(stack, result)
            except BaseException as e:  # reported below
                errors.append(e)

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        return thread

    threads = [
        guarded(_hold_everything_sdk, everything_streams),
        guarded(_hold_everything_raw, everything_streams),
        guarded(_hold_listen, fastmcp),
    ]
    for thread in threads:
        thread.join(timeout=HOLD_S + 120)
    assert not any(t.is_alive() for t in threads), "a host did not finish"
    if errors:
        raise errors[0]
    gap = UPDATE_EVERY_S * 2 + 2

    # 2025, the SDK host: updates on its GET stream all along.
    start, end, updates = result["sdk"]
    assert_throughout("SDK host updates (2025)", updates, start, end, gap)

    # 2025, the raw host: the same, and heartbeats between them.
    start, end, stream = result["raw"]
    assert stream.status == 200 and stream.ended == "held", (stream.status, stream.ended)
    updated = [t for t, m in stream.of("notifications/resources/updated") if m["params"]["uri"] == EVERYTHING_URI]
    assert_throughout("raw host updates (2025)", updated, start, end, gap)
    beats = [t for t, c in stream.comments if c.startswith(": keep-alive")]
    assert_throughout("heartbeats (2025)", beats, start, end, UPDATE_EVERY_S + HEARTBEAT_S)

    # 2026-07-28: acknowledged first, every published update, heartbeats, completion at the end.
    start, end, stream, published = result["listen"]
    assert stream.status == 200
    first = stream.messages[0][1]
    assert first["method"] == "notifications/subscriptions/acknowledged", first
    assert first["params"]["_meta"][SUBSCRIPTION_ID] == "held-1", first
    updated = [(t, m) for t, m in stream.of("notifications/resources/updated")]
    assert all(m["params"]["_meta"][SUBSCRIPTION_ID] == "held-1" for _, m in updated), updated
    assert len(updated) == len(published) >= int(HOLD_S / UPDATE_EVERY_S) - 2, (len(updated), len(published))
    assert_throughout("listen updates (2026)", [t for t, _ in updated if t <= end], start, end, gap)
    beats = [t for t, c in stream.comments if c.startswith(": keep-alive")]
    assert_throughout("heartbeats (2026)", beats, start, end, UPDATE_EVERY_S + HEARTBEAT_S)
    assert stream.ended == "stopped", stream.ended
    last = stream.messages[-1][1]
    assert last["id"] == "held-1" and last["result"]["_meta"][SUBSCRIPTION_ID] == "held-1", last


# ---------------------------------------------------------------------------------------------
# Cancellation: the host closes its stream mid-call


def _cancelled_events(stack: Stack) -> list[dict[str, Any]]:
    return [e for e in stack.server_events() if e["kind"] == "cancelled"]


@pytest.mark.parametrize("era", ["2025", "2026"])
def test_host_closing_its_stream_cancels_the_call(fastmcp_streams: tuple[Stack, Health], era: str) -> None:
    stack, health = fastmcp_streams
    before = len(_cancelled_events(stack))
    arguments = {"steps": 200, "delay_ms": 100}
    if era == "2025":
        session = LegacySession.open(stack)
        request = session.request("tools/call", {"name": "progress", "arguments": arguments, "_meta": {"progressToken": "c1"}})
    else:
        params = {"name": "progress", "arguments": arguments}
        request = modern_post(stack, "tools/call", params, "cancel-1", name="progress", progressToken="c1")
    with httpx2.Client(trust_env=False, timeout=30) as http:
        response = http.send(request, stream=True)
        assert response.status_code == 200, response.status_code
        stream = RawStream()
        stream.read(response, time.monotonic() + 20, stop_when=lambda m: m.get("method") == "notifications/progress")
        assert stream.ended == "stopped", stream.messages
        response.close()
        closed_at = time.time()
    deadline = time.monotonic() + 5
    while len(_cancelled_events(stack)) == before and time.monotonic() < deadline:
        time.sleep(0.02)
    events = _cancelled_events(stack)[before:]
    assert events, "the server never saw the call cancelled"
    [cancelled] = events
    assert cancelled["tool"] == "progress" and cancelled["step"] < 50, cancelled
    assert cancelled["at"] - closed_at < 1.0, f"cancelled {cancelled['at'] - closed_at:.2f}s after the host left"
    # The client's only worker is free again: nothing in flight, and the next call answered at once.
    deadline = time.monotonic() + 2
    while health.inflight() != 0:
        assert time.monotonic() < deadline, "the cancelled call still holds the client's worker"
        time.sleep(0.05)
    started = time.monotonic()
    answer = modern_call(stack, "add", {"a": 20, "b": 22}, "after-cancel", timeout=5)
    assert answer["result"]["structuredContent"] == {"result": 42}, answer
    assert time.monotonic() - started < 2.0
    if era == "2025":
        session.close()


# ---------------------------------------------------------------------------------------------
# Server→client requests


@dataclass
class AnsweringHost:
    """What the SDK host's handlers were asked."""

    asked: list[str] = field(default_factory=list)

    async def sampling(self, context: Any, params: types.CreateMessageRequestParams) -> types.CreateMessageResult:
        self.asked.append("sampling")
        return types.CreateMessageResult(
            role="assistant", model="e2e-model", content=types.TextContent(type="text", text="sampled through the tunnel")
        )

    async def elicitation(self, context: Any, params: types.ElicitRequestParams) -> types.ElicitResult:
        self.asked.append("elicitation")
        return types.ElicitResult(action="accept", content={"name": "Tunnel Tester", "check": True})

    async def roots(self, context: Any) -> types.ListRootsResult:
        self.asked.append("roots")
        return types.ListRootsResult(roots=[types.Root(uri="file:///e2e/tunnel-root", name="tunnel-root")])


async def _ask_everything(stack: Stack, host: AnsweringHost) -> dict[str, tuple[float, str]]:
    """Calls server-everything's three asking tools; each one's duration and text."""
    headers = {"Authorization": f"Bearer {stack.tunnel.connector_key}"}
    out: dict[str, tuple[float, str]] = {}
    async with httpx2.AsyncClient(headers=headers, timeout=httpx2.Timeout(30.0, read=60.0), trust_env=False) as http:
        async with streamable_http_client(stack.mcp_url, http_client=http) as (read, write):
            async with ClientSession(
                read,
                write,
                client_info=CLIENT_INFO,
                read_timeout_seconds=30,
                sampling_callback=host.sampling,
                elicitation_callback=host.elicitation,
                list_roots_callback=host.roots,
            ) as session:
                await session.initialize()
                tools = {t.name for t in (await session.list_tools()).tools}
                wanted = {"trigger-sampling-request", "trigger-elicitation-request", "get-roots-list"}
                assert wanted <= tools, tools
                for tool, arguments in (
                    ("trigger-sampling-request", {"prompt": "hello"}),
                    ("trigger-elicitation-request", {}),
                    ("get-roots-list", {}),
                ):
                    started = time.monotonic()
                    with anyio.fail_after(30):
                        result = await session.call_tool(tool, arguments)
                    text = "\n".join(c.text for c in result.content if isinstance(c, types.TextContent))
                    out[tool] = (time.monotonic() - started, text)
    return out


@pytest.mark.anyio
async def test_server_requests_answered_through_our_relay_and_client(everything_streams: Stack) -> None:
    host = AnsweringHost()
    out = await _ask_everything(everything_streams, host)
    assert "sampled through the tunnel" in out["trigger-sampling-request"][1], out
    assert "Tunnel Tester" in out["trigger-elicitation-request"][1], out
    assert "file:///e2e/tunnel-root" in out["get-roots-list"][1], out
    assert {"sampling", "elicitation", "roots"} <= set(host.asked), host.asked


class _OfficialContractProxy(BaseHTTPRequestHandler):
    """Forwards control-plane requests to the relay with our extension header removed both ways:
    the client meets a control plane that is not ours, the relay a client that is not ours."""

    upstream = ""
    protocol_version = "HTTP/1.1"

    def _forward(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        skip = {EXTENSIONS_HEADER, "host", "content-length", "connection", "transfer-encoding"}
        headers = {k: v for k, v in self.headers.items() if k.lower() not in skip}
        with httpx2.Client(trust_env=False, timeout=120) as http:
            response = http.request(self.command, self.upstream + self.path, content=body, headers=headers)
        self.send_response(response.status_code)
        for name, value in response.headers.items():
            if name.lower() not in skip | {"content-encoding"}:
                self.send_header(name, value)
        self.send_header("Content-Length", str(len(response.content)))
        self.end_headers()
        self.wfile.write(response.content)

    do_GET = do_POST = do_PUT = do_DELETE = _forward

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        pass


@contextmanager
def official_contract_proxy() -> Iterator[Callable[[str], str]]:
    """A proxy in front of the relay; yields what maps the relay's address (known once the relay
    runs) to the proxy's base URL, for `run_stack(control_plane=...)`."""
    server = ThreadingHTTPServer((LOOPBACK, 0), _OfficialContractProxy)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()

    def control_plane(relay_addr: str) -> str:
        _OfficialContractProxy.upstream = f"http://{relay_addr}"
        return f"http://{LOOPBACK}:{server.server_address[1]}"

    try:
        yield control_plane
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.anyio
async def test_server_requests_refused_promptly_without_the_extension(tmp_path: Path) -> None:
    with official_contract_proxy() as control_plane, run_stack("everything", tmp_path, control_plane=control_plane) as stack:
        host = AnsweringHost()
        out = await _ask_everything(stack, host)
        assert host.asked == [], f"the host was asked {host.asked} through a control plane without the extension"
        for tool, (took, text) in out.items():
            assert took < 2.0, f"{tool} took {took:.1f}s: {text}"
        assert "tunnel-root" not in out["get-roots-list"][1], out
        assert "sampled through the tunnel" not in out["trigger-sampling-request"][1], out
        client_log = stack.procs["client"].log()
        assert "not supported through tunnel" in client_log, client_log[-3000:]
        assert "forwarded to the host" not in client_log


# ---------------------------------------------------------------------------------------------
# A host that does not read


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


# Each update carries a URI this long; FLOOD_COUNT of them are far more than the relay may hold.
FLOOD_URI_BYTES = 32 * 1024
FLOOD_COUNT = 1500  # ~48 MiB of events
RSS_GROWTH_LIMIT_KIB = 32 * 1024


def test_slow_reader_leaves_relay_memory_bounded(fastmcp_streams: tuple[Stack, Health]) -> None:
    stack, _ = fastmcp_streams
    relay = stack.procs["relay"]
    uri = "e2e://streams/flood/" + "x" * FLOOD_URI_BYTES
    request = modern_post(stack, "subscriptions/listen", {"notifications": {"resourceSubscriptions": [uri]}}, "slow-1")
    body = request.content
    host, port = stack.relay_addr.split(":")
    head = "".join(f"{k}: {v}\r\n" for k, v in request.headers.items() if k.lower() not in ("host", "content-length"))
    # A host that reads the answer's head and then nothing: a small receive buffer, no reads.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.settimeout(30)
    sock.connect((host, int(port)))
    try:
        sock.sendall(
            f"POST {request.url.raw_path.decode()} HTTP/1.1\r\nHost: {stack.relay_addr}\r\n{head}"
            f"Content-Length: {len(body)}\r\n\r\n".encode()
            + body
        )
        first = sock.recv(2048)
        assert first.startswith(b"HTTP/1.1 200"), first[:300]
        baseline = _rss_kib(relay.popen.pid)
        peak = baseline
        cut_line = "the MCP host is not reading it"
        flood = threading.Thread(
            target=lambda: modern_call(stack, "publish_updated", {"uri": uri, "count": FLOOD_COUNT, "delay_ms": 2}, "flood", timeout=120),
            daemon=True,
        )
        flood.start()
        deadline = time.monotonic() + 90
        while cut_line not in relay.log():
            assert time.monotonic() < deadline, "the relay never ended the unread stream"
            peak = max(peak, _rss_kib(relay.popen.pid))
            time.sleep(0.05)
        peak = max(peak, _rss_kib(relay.popen.pid))
        flood.join(timeout=120)
        assert peak - baseline < RSS_GROWTH_LIMIT_KIB, f"relay RSS grew {(peak - baseline) // 1024} MiB"
        # The stream ended: reading on, the host reaches the connection's end.
        ended = time.monotonic() + 30
        while sock.recv(1 << 20):
            assert time.monotonic() < ended, "the unread stream was not ended"
    finally:
        sock.close()
    # The tunnel goes on serving.
    answer = modern_call(stack, "add", {"a": 1, "b": 2}, "after-flood", timeout=10)
    assert answer["result"]["structuredContent"] == {"result": 3}, answer
