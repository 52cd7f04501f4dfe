"""A real OAuth flow through the tunnel, end to end on loopback, with software we did not write.

    MCP host (the Python `mcp` SDK's OAuthClientProvider) ──► `mcp-tunnel relay --public-url`
      │                                        (passthrough tunnel) ──► `mcp-tunnel run`
      │                                             ──► FastMCP, OAuth-protected (oauth_mcp_server.py)
      └──────────────► authorization server (npm oidc-provider, oauth_server.mjs), reached directly

The host calls the tunnel's public URL with no token; the MCP server's 401 comes back through the
tunnel with its `resource_metadata` pointed at the relay's protected-resource metadata route; the
host's GET there becomes an `oauth_discovery` command that the tunnel client answers from the MCP
server's own metadata, `resource` rewritten to the public URL. The host then reads the
authorization server's metadata, registers itself (dynamic registration, a public client),
completes authorization code + PKCE with an automated login and consent, and calls tools with a
JWT whose audience is the public URL, which is what the MCP server demands. Afterwards no access
token, authorization code or client secret may appear in the relay's or the client's debug log.
"""

from __future__ import annotations

import base64
import json
import re
import socket
import sys
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qs, urljoin, urlparse

import anyio
import httpx2
import mcp_types as types
import pytest
from conftest import (
    _ACTIVE_STACKS,
    COMMAND_TIMEOUT,
    CONNECT_TIMEOUT,
    E2E_DIR,
    LOOPBACK,
    PROBE_TIMEOUT,
    START_TIMEOUT,
    Proc,
    Stack,
    Tunnel,
    _binary,
    _clean_env,
    free_port,
    wait_until,
)
from mcp.client.auth import OAuthClientProvider, TokenStorage
from mcp.client.session import ClientSession
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.auth import AuthorizationCodeResult, OAuthClientInformationFull, OAuthClientMetadata, OAuthToken

AS_SCRIPT = E2E_DIR / "oauth_server.mjs"
MCP_SERVER_SCRIPT = E2E_DIR / "oauth_mcp_server.py"
OIDC_PROVIDER = E2E_DIR / "node_modules" / "oidc-provider" / "package.json"
# Where the authorization server sends the browser back; never served: the redirect handler
# stops at it and hands its query to the callback handler.
REDIRECT_URI = "http://127.0.0.1:9/oauth/callback"
ACCOUNT = "e2e-user"  # oauth_server.mjs's fixed test account
MAX_AUTHORIZATION_HOPS = 20
FLOW_TIMEOUT = 30.0


@dataclass
class OAuthStack(Stack):
    """A passthrough tunnel behind `relay --public-url`, an OAuth-protected MCP server behind the
    client, and the authorization server; `secrets` collects what must not reach any log."""

    issuer: str = ""
    secrets: dict[str, str] = field(default_factory=dict)

    @property
    def public_url(self) -> str:
        return f"http://{self.relay_addr}/v1/mcp/{self.tunnel.id}"

    @property
    def prmd_url(self) -> str:
        return f"http://{self.relay_addr}/.well-known/oauth-protected-resource/v1/mcp/{self.tunnel.id}"


def _add_passthrough_tunnel(binary: Path, tunnels_file: Path) -> Tunnel:
    argv = [str(binary), "relay", "tunnel", "add", "--name", "e2e-oauth", "--connector-auth", "passthrough"]
    done = subprocess.run(
        [*argv, "--tunnels-file", str(tunnels_file)],
        capture_output=True,
        text=True,
        timeout=COMMAND_TIMEOUT,
        env=_clean_env(),
        stdin=subprocess.DEVNULL,
    )
    assert done.returncode == 0, f"tunnel add failed ({done.returncode}): {done.stderr}"
    patterns = {"id": r"tunnel_[0-9a-f]+", "runtime key": r"mcpt_rt_[0-9a-f]+", "connector key": r"mcpt_cn_[0-9a-f]+"}
    found = {
        label: re.search(rf"^\s*{label}:\s+({pattern})\s*$", done.stdout, re.MULTILINE)
        for label, pattern in patterns.items()
    }
    missing = [label for label, match in found.items() if match is None]
    assert not missing, f"tunnel add printed no {missing} line: {done.stdout}"
    return Tunnel(*(match.group(1) for match in found.values()))  # type: ignore[union-attr]


def _port_open(proc: Proc, port: int) -> bool:
    proc.ensure_running()
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.5)
        return s.connect_ex((LOOPBACK, port)) == 0


@pytest.fixture(scope="module")
def oauth_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OAuthStack]:
    if not OIDC_PROVIDER.is_file():
        pytest.fail("oidc-provider is not installed: run tests/e2e/run.sh (npm ci)", pytrace=False)
    workdir = tmp_path_factory.mktemp("oauth")
    binary = _binary()
    tunnels_file = workdir / "tunnels.toml"
    tunnel = _add_passthrough_tunnel(binary, tunnels_file)
    # The relay's address is chosen up front: --public-url names it.
    relay_port = free_port()
    stack = OAuthStack(name="oauth", tunnel=tunnel, relay_addr=f"{LOOPBACK}:{relay_port}", workdir=workdir)
    _ACTIVE_STACKS.append(stack)
    env = {**_clean_env(), "LOG_LEVEL": "debug"}
    try:
        auth_server = Proc("oauth/as", ["node", str(AS_SCRIPT)], workdir / "as.log", _clean_env(), E2E_DIR)
        stack.procs["as"] = auth_server
        stack.issuer = auth_server.wait_for_log(
            r"oauth server listening on (http://127\.0\.0\.1:\d+)\s", START_TIMEOUT
        ).group(1)

        argv = [str(binary), "relay", "--listen", stack.relay_addr, "--tunnels-file", str(tunnels_file)]
        argv += ["--public-url", f"http://{stack.relay_addr}"]
        stack.procs["relay"] = Proc("oauth/relay", argv, workdir / "relay.log", env, workdir)
        stack.procs["relay"].wait_for_log(r"relay listening on http://127\.0\.0\.1:\d+\s", START_TIMEOUT)

        stack.server_port = free_port()
        argv = [sys.executable, str(MCP_SERVER_SCRIPT), "--port", str(stack.server_port)]
        argv += ["--issuer", stack.issuer, "--audience", stack.public_url]
        server = Proc("oauth/server", argv, workdir / "server.log", _clean_env(), E2E_DIR)
        stack.procs["server"] = server
        wait_until("the MCP server to listen", lambda: _port_open(server, stack.server_port), START_TIMEOUT)

        client_env = {
            **env,
            "CONTROL_PLANE_BASE_URL": f"http://{stack.relay_addr}",
            "CONTROL_PLANE_TUNNEL_ID": tunnel.id,
            "CONTROL_PLANE_API_KEY": tunnel.runtime_key,
            "CONTROL_PLANE_POLL_TIMEOUT": "5s",
            "HEALTH_LISTEN_ADDR": "off",
            "SHUTDOWN_DRAIN_TIMEOUT": "3s",
            "MCP_SERVER_URL": f"http://{LOOPBACK}:{stack.server_port}/mcp",
        }
        stack.procs["client"] = Proc("oauth/client", [str(binary), "run"], workdir / "client.log", client_env, workdir)

        # Ready when a tokenless POST gets the MCP server's own 401 through the tunnel (503 until
        # the client polls).
        last: list[str] = []

        def answered_by_server() -> bool:
            stack.procs["client"].ensure_running()
            stack.procs["relay"].ensure_running()
            try:
                response = httpx2.post(
                    stack.public_url, json=PING, headers=MCP_ACCEPT, timeout=PROBE_TIMEOUT, trust_env=False
                )
            except httpx2.TransportError as e:
                last[:] = [repr(e)]
                return False
            last[:] = [f"{response.status_code} {response.text[:200]}"]
            return response.status_code == 401

        deadline = time.monotonic() + CONNECT_TIMEOUT
        while not answered_by_server():
            if time.monotonic() >= deadline:
                pytest.fail(f"no 401 from the MCP server through the tunnel; last: {last}", pytrace=False)
            time.sleep(0.1)
        yield stack
    finally:
        problems = []
        for name in ("client", "relay", "server", "as"):
            proc = stack.procs.get(name)
            if proc is None:
                continue
            code = proc.stop()
            if name in ("client", "relay") and code != 0:
                problems.append(f"{proc.name} exited with {code} after SIGTERM (expected 0)")
        secrets = {**stack.secrets, "runtime key": tunnel.runtime_key, "connector key": tunnel.connector_key}
        for name in ("client", "relay"):
            if name not in stack.procs:
                continue
            text = stack.procs[name].log()
            problems += [f"the {label} appears in the {name} log" for label, s in secrets.items() if s and s in text]
        _ACTIVE_STACKS.remove(stack)
    if problems:
        pytest.fail("; ".join(problems), pytrace=False)


PING = {"jsonrpc": "2.0", "id": "e2e-oauth", "method": "ping"}
MCP_ACCEPT = {"Accept": "application/json, text/event-stream"}


def test_tokenless_call_is_challenged_with_the_relays_metadata_url(oauth_stack: OAuthStack) -> None:
    with httpx2.Client(trust_env=False, timeout=PROBE_TIMEOUT) as http:
        response = http.post(oauth_stack.public_url, json=PING, headers=MCP_ACCEPT)
        assert response.status_code == 401, response.text
        challenge = response.headers.get("www-authenticate", "")
        assert challenge.lower().startswith("bearer"), challenge
        match = re.search(r'resource_metadata="([^"]*)"', challenge)
        assert match, f"no resource_metadata in {challenge!r}"
        assert match.group(1) == oauth_stack.prmd_url

        prmd = http.get(match.group(1))
        assert prmd.status_code == 200, prmd.text
        metadata = prmd.json()
        assert metadata["resource"] == oauth_stack.public_url
        assert metadata["authorization_servers"] == [oauth_stack.issuer]
        assert metadata.get("scopes_supported") == ["mcp:tools"]

        # A made-up token is refused by the MCP server itself (the relay checks nothing).
        forged = http.post(oauth_stack.public_url, json=PING, headers={**MCP_ACCEPT, "Authorization": "Bearer nope"})
        assert forged.status_code == 401, forged.text


class MemoryStorage(TokenStorage):
    def __init__(self) -> None:
        self.tokens: OAuthToken | None = None
        self.client_info: OAuthClientInformationFull | None = None

    async def get_tokens(self) -> OAuthToken | None:
        return self.tokens

    async def set_tokens(self, tokens: OAuthToken) -> None:
        self.tokens = tokens

    async def get_client_info(self) -> OAuthClientInformationFull | None:
        return self.client_info

    async def set_client_info(self, client_info: OAuthClientInformationFull) -> None:
        self.client_info = client_info


class AutomatedBrowser:
    """The redirect and callback handlers: follows the authorization URL through the authorization
    server's automated login and consent (cookies kept) until it redirects to REDIRECT_URI."""

    def __init__(self) -> None:
        self.callback: dict[str, str] | None = None
        self.hops: list[str] = []

    async def redirect_handler(self, authorization_url: str) -> None:
        url = authorization_url
        async with httpx2.AsyncClient(trust_env=False, timeout=PROBE_TIMEOUT, follow_redirects=False) as http:
            for _ in range(MAX_AUTHORIZATION_HOPS):
                response = await http.get(url)
                self.hops.append(f"{response.status_code} {urlparse(url).path}")
                location = response.headers.get("location")
                assert response.is_redirect and location, f"stuck at {url}: {response.status_code} {response.text[:300]}"
                url = urljoin(url, location)
                if url.startswith(REDIRECT_URI):
                    query = parse_qs(urlparse(url).query)
                    assert "error" not in query, f"authorization failed: {query}"
                    self.callback = {k: v[0] for k, v in query.items()}
                    return
        pytest.fail(f"no redirect to {REDIRECT_URI} after {MAX_AUTHORIZATION_HOPS} hops: {self.hops}")

    async def callback_handler(self) -> AuthorizationCodeResult:
        assert self.callback is not None, "the callback came before the redirect"
        return AuthorizationCodeResult(
            code=self.callback["code"], state=self.callback.get("state"), iss=self.callback.get("iss")
        )


def _jwt_claims(token: str) -> dict[str, object]:
    payload = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))


@pytest.mark.anyio
async def test_oauth_flow_through_the_tunnel(oauth_stack: OAuthStack) -> None:
    storage = MemoryStorage()
    browser = AutomatedBrowser()
    provider = OAuthClientProvider(
        server_url=oauth_stack.public_url,
        client_metadata=OAuthClientMetadata(
            client_name="mcp-tunnel e2e host",
            redirect_uris=[REDIRECT_URI],
            grant_types=["authorization_code"],
            response_types=["code"],
            token_endpoint_auth_method="none",
        ),
        storage=storage,
        redirect_handler=browser.redirect_handler,
        callback_handler=browser.callback_handler,
    )
    with anyio.fail_after(FLOW_TIMEOUT):
        async with httpx2.AsyncClient(auth=provider, trust_env=False, timeout=PROBE_TIMEOUT) as http:
            async with streamable_http_client(oauth_stack.public_url, http_client=http) as (read, write):
                async with ClientSession(read, write) as session:
                    await session.initialize()
                    tools = await session.list_tools()
                    assert {"whoami", "add"} <= {tool.name for tool in tools.tools}
                    whoami = await session.call_tool("whoami", {})
                    added = await session.call_tool("add", {"a": 20, "b": 22})

    # What the host went through, all of it real: registration, code, token.
    assert storage.client_info is not None and storage.tokens is not None
    assert browser.callback is not None
    client_id = storage.client_info.client_id
    oauth_stack.secrets.update(
        {
            "access token": storage.tokens.access_token,
            "refresh token": storage.tokens.refresh_token or "",
            "authorization code": browser.callback["code"],
            "client secret": storage.client_info.client_secret or "",
        }
    )
    assert storage.client_info.client_secret is None, "registered as a public client"
    claims = _jwt_claims(storage.tokens.access_token)
    assert claims["aud"] == oauth_stack.public_url
    assert claims["iss"] == oauth_stack.issuer
    assert "mcp:tools" in str(claims["scope"]).split()

    assert not whoami.is_error, whoami
    texts = [c.text for c in whoami.content if isinstance(c, types.TextContent)]
    assert texts == [f"subject={ACCOUNT} client={client_id}"]
    assert not added.is_error and added.structured_content == {"result": 42}, added

    # Discovery went through the relay (the SDK validated `resource` against the URL it calls);
    # the authorization server was reached directly.
    assert provider.context.protected_resource_metadata is not None
    assert str(provider.context.protected_resource_metadata.resource) == oauth_stack.public_url
    assert provider.context.auth_server_url == oauth_stack.issuer
    assert "(oauth_discovery)" in oauth_stack.procs["relay"].log()
    # The secrets are checked against the logs at teardown, which are at debug level.
    for name in ("relay", "client"):
        assert re.search(r" DEBUG mcp_tunnel::", oauth_stack.procs[name].log()), f"the {name} logs no debug lines"
