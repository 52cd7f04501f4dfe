"""Fixtures for the end-to-end suite: real processes on loopback, one stack per layout.

A stack is:  MCP host (the test, official Python SDK) → `mcp-tunnel relay` → `mcp-tunnel run`
→ third-party MCP servers, one per channel of the tunnel (see `LAYOUTS`): a Streamable HTTP
server (`MCP_SERVER_URL`, started here) and/or stdio servers (`MCP_COMMAND`, started by the
tunnel client itself). Every piece is a separate process:

1. `mcp-tunnel relay tunnel add` creates a tunnel in a fresh tunnels file (its id and both keys
   are read from stdout);
2. `mcp-tunnel relay --listen 127.0.0.1:0` starts; its address is read from its log;
3. `mcp-tunnel run` starts with the runtime key, pointed at a loopback port chosen for the HTTP
   server and/or given the stdio servers' command lines (one `channel=NAME,command=LINE` entry a
   line for a named channel);
4. a probe POST through the relay's connector URL repeats until it is not answered 503
   `tunnel_client_not_connected` — the client is polling. An HTTP server is not started yet, so
   the probe reaches no MCP server (the client answers it with a `connect` tunnel failure) and
   leaves no trace in the server's own record;
5. every stdio channel is probed with a `ping` until its server answers it;
6. the HTTP server starts on its port; the stack is ready when the port accepts connections.

Nothing is built here: the binary is `$MCP_TUNNEL_BIN` (default `target/debug/mcp-tunnel` in the
repository). Every wait has a deadline and every address is 127.0.0.1. At teardown every process
gets SIGTERM (the process alone: the client must stop its stdio servers itself), then SIGKILL for
its whole process group; the relay and the client must exit 0 on SIGTERM, the client must leave no
stdio server running (nor have restarted one: each ran for the whole session), and their logs must
not contain either key. When a test fails, the tail of every process log of the stacks in use is
attached to its report (a stdio server's stderr is in the client's log).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx2
import pytest

E2E_DIR = Path(__file__).resolve().parent
REPO_ROOT = E2E_DIR.parents[1]
LOOPBACK = "127.0.0.1"

# Deadlines (seconds).
START_TIMEOUT = 30.0  # a process shows it is up (relay address line, server port open)
CONNECT_TIMEOUT = 20.0  # the tunnel client's first poll reaches the relay
STOP_TIMEOUT = 10.0  # a process exits after SIGTERM, before SIGKILL
COMMAND_TIMEOUT = 30.0  # a one-shot command (tunnel add)
PROBE_TIMEOUT = 5.0  # one probe request
STDIO_READY_TIMEOUT = 30.0  # a stdio server answers its first ping through the tunnel
LEFTOVER_TIMEOUT = 2.0  # processes left in a stopped process's group are gone

SERVER_EVERYTHING_ENTRY = (
    E2E_DIR / "node_modules" / "@modelcontextprotocol" / "server-everything" / "dist" / "index.js"
)

# server-everything's streamable HTTP transport calls `app.listen(PORT)` with no host, i.e. on every
# interface. This preload makes a listen without a host bind loopback only.
NODE_LOOPBACK_PRELOAD = """\
'use strict';
const net = require('node:net');
const listen = net.Server.prototype.listen;
net.Server.prototype.listen = function (...args) {
  const port = args[0];
  const isPort = typeof port === 'number' || (typeof port === 'string' && /^[0-9]+$/.test(port));
  if (isPort && typeof args[1] !== 'string') {
    args.splice(1, 0, '127.0.0.1');
  }
  return listen.apply(this, args);
};
"""

# Variables that would change where our processes connect or which key they use.
_PROXY_VARS = {"http_proxy", "https_proxy", "all_proxy", "no_proxy"}
_CLIENT_VARS_PREFIXES = ("CONTROL_PLANE_", "MCP_", "RELAY_", "SHUTDOWN_", "HEALTH_", "LOG_")


def _clean_env() -> dict[str, str]:
    """The environment for child processes: no proxies, no inherited tunnel settings or keys."""
    env = {}
    for name, value in os.environ.items():
        if name.lower() in _PROXY_VARS or name.startswith(_CLIENT_VARS_PREFIXES):
            continue
        if name in ("OPENAI_API_KEY", "PID_FILE", "PORT"):
            continue
        env[name] = value
    return env


# The SDK's HTTP client honours proxy variables too; none may divert loopback traffic.
for _name in list(os.environ):
    if _name.lower() in _PROXY_VARS:
        del os.environ[_name]


def _binary() -> Path:
    configured = Path(os.environ.get("MCP_TUNNEL_BIN", "target/debug/mcp-tunnel"))
    return configured if configured.is_absolute() else REPO_ROOT / configured


def free_port() -> int:
    """A port that was free on 127.0.0.1 a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((LOOPBACK, 0))
        return s.getsockname()[1]


def wait_until(what: str, check: Callable[[], Any], timeout: float, interval: float = 0.05) -> Any:
    """Calls `check` until it returns something truthy; fails the test after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() >= deadline:
            pytest.fail(f"timed out after {timeout:.0f}s waiting for {what}", pytrace=False)
        time.sleep(interval)


class Proc:
    """A child process in its own process group, with stdout and stderr in one log file."""

    def __init__(self, name: str, argv: list[str], log_path: Path, env: dict[str, str], cwd: Path) -> None:
        self.name = name
        self.argv = argv
        self.log_path = log_path
        self._log = open(log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.popen = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=cwd,
            start_new_session=True,
        )
        self.exit_code: int | None = None
        self.leftovers: list[str] = []

    def log(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def running(self) -> bool:
        return self.popen.poll() is None

    def ensure_running(self) -> None:
        if not self.running():
            pytest.fail(
                f"{self.name} exited early with code {self.popen.returncode}; its log:\n{self.log()}",
                pytrace=False,
            )

    def wait_for_log(self, pattern: str, timeout: float) -> re.Match[str]:
        regex = re.compile(pattern)

        def found() -> re.Match[str] | None:
            match = regex.search(self.log())
            if match is None:
                self.ensure_running()
            return match

        return wait_until(f"{self.name} to log /{pattern}/", found, timeout)

    def stop(self) -> int:
        """SIGTERM to the process, then SIGKILL to its group after STOP_TIMEOUT; returns the exit
        code (negative: signal). What the process left running in its group (after it exited on
        its own) is in `leftovers`, and killed."""
        if self.running():
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.popen.pid, signal.SIGTERM)
            try:
                self.popen.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.popen.pid, signal.SIGKILL)
                self.popen.wait(timeout=STOP_TIMEOUT)
        deadline = time.monotonic() + LEFTOVER_TIMEOUT
        while (leftovers := _group_members(self.popen.pid)) and time.monotonic() < deadline:
            time.sleep(0.05)
        self.leftovers = leftovers
        # Anything the process left behind in its group goes too.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.popen.pid, signal.SIGKILL)
        self._log.close()
        self.exit_code = self.popen.returncode
        return self.exit_code


def _group_members(pgid: int) -> list[str]:
    """Live (not zombie) processes of process group `pgid`, as "pid (command)"; from /proc."""
    members = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue  # gone meanwhile
        # "pid (comm) state ppid pgrp ..."; comm may contain spaces and parentheses.
        head, _, tail = text.rpartition(")")
        pid, _, comm = head.partition(" (")
        fields = tail.split()
        if len(fields) >= 3 and fields[0] != "Z" and int(fields[2]) == pgid:
            members.append(f"{pid} ({comm})")
    return members


@dataclass
class Tunnel:
    id: str
    runtime_key: str
    connector_key: str


@dataclass(frozen=True)
class Layout:
    """What a tunnel client serves: `http`, the MCP server behind channel `main` over Streamable
    HTTP (started by the fixture), and `stdio`, channel name → MCP server run over stdio by the
    client (`MCP_COMMAND`). A server is "fastmcp" or "everything"."""

    http: str | None = None
    stdio: dict[str, str] = field(default_factory=dict)
    # Extra `key=value` options of a stdio channel's entry (e.g. sessions=per-session).
    stdio_options: dict[str, str] = field(default_factory=dict)
    # Whether teardown checks that each stdio channel's child started exactly once (off for
    # stacks whose tests kill children or start one per session or era).
    one_child_per_channel: bool = True


LAYOUTS = {
    "fastmcp": Layout(http="fastmcp"),
    "everything": Layout(http="everything"),
    "fastmcp-stdio": Layout(stdio={"main": "fastmcp"}),
    "everything-stdio": Layout(stdio={"main": "everything"}),
    # One tunnel, two channels: FastMCP over HTTP on main, server-everything over stdio.
    "multi": Layout(http="fastmcp", stdio={"everything": "everything"}),
    # For test_eras_and_hosts.py: FastMCP over stdio used by hosts of both eras (one child per
    # era), and once per connector session; mcp-server-time (strict about initialize), whose
    # child a test kills.
    "fastmcp-eras": Layout(stdio={"main": "fastmcp"}),
    "fastmcp-per-session": Layout(
        stdio={"main": "fastmcp"}, stdio_options={"main": "sessions=per-session"}, one_child_per_channel=False
    ),
    "time-stdio": Layout(stdio={"main": "time"}, one_child_per_channel=False),
}


@dataclass
class Stack:
    """One running relay + tunnel client + MCP server(s). `channel` picks which of the tunnel's
    channels `mcp_url` reaches (None: main); `on_channel` gives a view of the same stack on another
    one."""

    name: str
    tunnel: Tunnel
    relay_addr: str
    workdir: Path
    server_port: int = 0
    procs: dict[str, Proc] = field(default_factory=dict)
    events_file: Path | None = None
    channel: str | None = None

    @property
    def mcp_url(self) -> str:
        """The relay's connector URL: what an MCP host is configured with."""
        base = f"http://{self.relay_addr}/v1/mcp/{self.tunnel.id}"
        return base if self.channel is None else f"{base}/{self.channel}"

    def on_channel(self, channel: str | None) -> Stack:
        return dataclasses.replace(self, channel=channel)

    def server_log(self) -> str:
        return self.procs["server"].log()

    def server_events(self) -> list[dict[str, Any]]:
        """The FastMCP server's own record (see fastmcp_server.py): the HTTP requests it answered,
        the tool calls it saw cancelled."""
        assert self.events_file is not None, f"{self.name} keeps no event record"
        if not self.events_file.exists():
            return []
        lines = self.events_file.read_text(encoding="utf-8").splitlines()
        return [json.loads(line) for line in lines if line.strip()]


_ACTIVE_STACKS: list[Stack] = []


def _add_tunnel(binary: Path, tunnels_file: Path) -> Tunnel:
    done = subprocess.run(
        [str(binary), "relay", "tunnel", "add", "--name", "e2e", "--tunnels-file", str(tunnels_file)],
        capture_output=True,
        text=True,
        timeout=COMMAND_TIMEOUT,
        env=_clean_env(),
        stdin=subprocess.DEVNULL,
    )
    assert done.returncode == 0, f"tunnel add failed ({done.returncode}): {done.stderr}"

    def field_(label: str, pattern: str) -> str:
        match = re.search(rf"^\s*{label}:\s+({pattern})\s*$", done.stdout, re.MULTILINE)
        assert match, f"tunnel add printed no {label!r} line"
        return match.group(1)

    return Tunnel(
        id=field_("id", r"tunnel_[0-9a-f]+"),
        runtime_key=field_("runtime key", r"mcpt_rt_[0-9a-f]+"),
        connector_key=field_("connector key", r"mcpt_cn_[0-9a-f]+"),
    )


def _probe_until(stack: Stack, what: str, timeout: float, done: Callable[[httpx2.Response], bool]) -> None:
    """Repeats a `ping` through the relay's connector URL until `done(response)`."""
    body = {"jsonrpc": "2.0", "id": "e2e-probe", "method": "ping"}
    headers = {
        "Authorization": f"Bearer {stack.tunnel.connector_key}",
        "Accept": "application/json, text/event-stream",
    }
    last: list[str] = []

    def accepted() -> bool:
        stack.procs["client"].ensure_running()
        stack.procs["relay"].ensure_running()
        try:
            with httpx2.Client(trust_env=False, timeout=PROBE_TIMEOUT) as http:
                response = http.post(stack.mcp_url, json=body, headers=headers)
        except httpx2.TransportError as e:
            last[:] = [f"transport error {e!r}"]
            return False
        last[:] = [f"{response.status_code} {response.text[:300]}"]
        if response.status_code in (401, 403, 404):
            pytest.fail(f"the relay refused the probe: {last[0]}", pytrace=False)
        return done(response)

    deadline = time.monotonic() + timeout
    while not accepted():
        if time.monotonic() >= deadline:
            pytest.fail(f"{what} within {timeout:.0f}s; last probe: {last}", pytrace=False)
        time.sleep(0.1)


def _probe_until_connected(stack: Stack) -> None:
    """Until the relay stops answering 503 (no client connected)."""
    _probe_until(stack, "the tunnel client did not connect", CONNECT_TIMEOUT, lambda r: r.status_code != 503)


def _probe_until_stdio_ready(stack: Stack) -> None:
    """Until the stdio server on `stack.channel` answers the ping itself (not a tunnel failure)."""

    def answered(response: httpx2.Response) -> bool:
        try:
            return response.status_code == 200 and "result" in response.json()
        except ValueError:
            return False

    what = f"the stdio server of channel {stack.channel or 'main'} did not answer"
    _probe_until(stack, what, STDIO_READY_TIMEOUT, answered)


def _wait_for_port(proc: Proc, port: int) -> None:
    def open_() -> bool:
        proc.ensure_running()
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.settimeout(1.0)
            return s.connect_ex((LOOPBACK, port)) == 0

    wait_until(f"{proc.name} to listen on {LOOPBACK}:{port}", open_, START_TIMEOUT)


def _require_server_everything() -> None:
    if not SERVER_EVERYTHING_ENTRY.exists():
        pytest.fail(
            f"{SERVER_EVERYTHING_ENTRY} is missing: run `npm ci` in tests/e2e (tests/e2e/run.sh does)",
            pytrace=False,
        )


def _server_argv(kind: str, port: int, workdir: Path) -> tuple[list[str], dict[str, str], Path | None]:
    """An HTTP MCP server: its argv, environment and event record."""
    env = _clean_env()
    if kind == "fastmcp":
        events = workdir / "server-events.jsonl"
        argv = [sys.executable, str(E2E_DIR / "fastmcp_server.py"), "--port", str(port), "--events-file", str(events)]
        return argv, env, events
    if kind == "everything":
        _require_server_everything()
        preload = workdir / "loopback-only.cjs"
        preload.write_text(NODE_LOOPBACK_PRELOAD, encoding="utf-8")
        env["PORT"] = str(port)
        argv = ["node", "--require", str(preload), str(SERVER_EVERYTHING_ENTRY), "streamableHttp"]
        return argv, env, None
    raise ValueError(kind)


def _stdio_command(kind: str, workdir: Path) -> tuple[str, Path | None]:
    """A stdio MCP server: its command line (each word quoted for the client's tokenizer, which
    takes POSIX shell quoting without running a shell) and its event record."""
    if kind == "fastmcp":
        events = workdir / "server-events.jsonl"
        argv = [sys.executable, str(E2E_DIR / "fastmcp_server.py"), "--stdio", "--events-file", str(events)]
        return shlex.join(argv), events
    if kind == "everything":
        _require_server_everything()
        return shlex.join(["node", str(SERVER_EVERYTHING_ENTRY), "stdio"]), None
    if kind == "time":
        # mcp-server-time (tests/e2e/requirements.txt), UTC so its answers do not depend on the host.
        return shlex.join([sys.executable, "-m", "mcp_server_time", "--local-timezone", "UTC"]), None
    raise ValueError(kind)


def _stop_stack(stack: Stack) -> list[str]:
    """Stops every process (client first, server last); returns what went wrong."""
    problems = []
    for name in ("client", "relay", "server"):
        proc = stack.procs.get(name)
        if proc is None:
            continue
        code = proc.stop()
        if name in ("client", "relay") and code != 0:
            problems.append(f"{proc.name} exited with {code} after SIGTERM (expected 0)")
        if proc.leftovers:
            problems.append(f"{proc.name} left processes running after it exited: {', '.join(proc.leftovers)}")
    client = stack.procs.get("client")
    if client is not None:
        # Each stdio child started once for the whole session: none crashed and was restarted.
        # A child is named by its log label: the channel (its probed child) or, for a
        # modern-capable server that also met legacy hosts, `<channel>/legacy`.
        labels = re.findall(r"\[([^\]]+)\] stdio server started \(pid \d+\)", client.log())
        layout = LAYOUTS[stack.name]
        if layout.one_child_per_channel:
            restarted = sorted({label for label in labels if labels.count(label) > 1})
            unstarted = sorted(set(layout.stdio) - set(labels))
            if restarted or unstarted:
                problems.append(
                    f"{client.name} restarted stdio servers {restarted} / never started {unstarted}"
                )
    for name in ("client", "relay"):
        proc = stack.procs.get(name)
        if proc is None:
            continue
        text = proc.log()
        for label, key in (("runtime", stack.tunnel.runtime_key), ("connector", stack.tunnel.connector_key)):
            if key in text:
                problems.append(f"the {label} key appears in the {proc.name} log")
    return problems


@contextlib.contextmanager
def run_stack(
    kind: str,
    workdir: Path,
    client_settings: dict[str, str] | None = None,
    relay_settings: dict[str, str] | None = None,
    control_plane: Callable[[str], str] | None = None,
) -> Iterator[Stack]:
    """Starts the stack of layout `kind`; `client_settings` adds to the client's environment,
    `relay_settings` to the relay's; `control_plane` maps the relay's address to the base URL
    the client polls (default: the relay itself), e.g. a proxy in front of it."""
    layout = LAYOUTS[kind]
    binary = _binary()
    if not (binary.is_file() and os.access(binary, os.X_OK)):
        pytest.fail(
            f"no mcp-tunnel binary at {binary}: run `cargo build` or set MCP_TUNNEL_BIN", pytrace=False
        )
    tunnels_file = workdir / "tunnels.toml"
    tunnel = _add_tunnel(binary, tunnels_file)
    stack = Stack(name=kind, tunnel=tunnel, relay_addr="", workdir=workdir)
    _ACTIVE_STACKS.append(stack)
    try:
        env = _clean_env()
        env["LOG_LEVEL"] = "debug"
        relay = Proc(
            f"{kind}/relay",
            [str(binary), "relay", "--listen", f"{LOOPBACK}:0", "--tunnels-file", str(tunnels_file)],
            workdir / "relay.log",
            {**env, **(relay_settings or {})},
            workdir,
        )
        stack.procs["relay"] = relay
        match = relay.wait_for_log(r"relay listening on http://(127\.0\.0\.1:\d+)\s", START_TIMEOUT)
        stack.relay_addr = match.group(1)

        client_env = {
            **env,
            "CONTROL_PLANE_BASE_URL": control_plane(stack.relay_addr) if control_plane else f"http://{stack.relay_addr}",
            "CONTROL_PLANE_TUNNEL_ID": tunnel.id,
            "CONTROL_PLANE_API_KEY": tunnel.runtime_key,
            "CONTROL_PLANE_POLL_TIMEOUT": "5s",
            "HEALTH_LISTEN_ADDR": "off",
            "SHUTDOWN_DRAIN_TIMEOUT": "3s",
            **(client_settings or {}),
        }
        if layout.http is not None:
            # Chosen as late as possible: the port stays unused until the server binds it.
            stack.server_port = free_port()
            client_env["MCP_SERVER_URL"] = f"http://{LOOPBACK}:{stack.server_port}/mcp"
        commands = []
        for channel, server_kind in layout.stdio.items():
            line, events = _stdio_command(server_kind, workdir)
            stack.events_file = stack.events_file or events
            options = layout.stdio_options.get(channel)
            if options is not None:
                commands.append(f"channel={channel},{options},command={line}")
            else:
                commands.append(line if channel == "main" else f"channel={channel},command={line}")
        if commands:
            client_env["MCP_COMMAND"] = "\n".join(commands)
        stack.procs["client"] = Proc(
            f"{kind}/client", [str(binary), "run"], workdir / "client.log", client_env, workdir
        )
        _probe_until_connected(stack)
        for channel in layout.stdio:
            if "sessions=per-session" in layout.stdio_options.get(channel, ""):
                continue  # a child starts with a session's initialize; a ping starts none
            _probe_until_stdio_ready(stack.on_channel(None if channel == "main" else channel))

        if layout.http is not None:
            argv, server_env, stack.events_file = _server_argv(layout.http, stack.server_port, workdir)
            server = Proc(f"{kind}/server", argv, workdir / "server.log", server_env, E2E_DIR)
            stack.procs["server"] = server
            _wait_for_port(server, stack.server_port)
        yield stack
    finally:
        problems = _stop_stack(stack)
        _ACTIVE_STACKS.remove(stack)
    # Reached only when the stack's users raised nothing: their failure is the one to report.
    if problems:
        pytest.fail("; ".join(problems), pytrace=False)


@pytest.fixture(scope="session")
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="session")
def fastmcp_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with run_stack("fastmcp", tmp_path_factory.mktemp("fastmcp")) as stack:
        yield stack


@pytest.fixture(scope="session")
def everything_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with run_stack("everything", tmp_path_factory.mktemp("everything")) as stack:
        yield stack


@pytest.fixture(scope="session")
def fastmcp_stdio_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with run_stack("fastmcp-stdio", tmp_path_factory.mktemp("fastmcp-stdio")) as stack:
        yield stack


@pytest.fixture(scope="session")
def everything_stdio_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with run_stack("everything-stdio", tmp_path_factory.mktemp("everything-stdio")) as stack:
        yield stack


@pytest.fixture(scope="session")
def multi_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with run_stack("multi", tmp_path_factory.mktemp("multi")) as stack:
        yield stack


def _tail(text: str, lines: int = 60) -> str:
    return "\n".join(text.splitlines()[-lines:])


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()
    if report.failed:
        for stack in _ACTIVE_STACKS:
            for proc in stack.procs.values():
                report.sections.append((f"{proc.name} log (tail)", _tail(proc.log())))
