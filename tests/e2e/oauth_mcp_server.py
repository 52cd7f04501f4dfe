#!/usr/bin/env python3
"""An OAuth-protected FastMCP server (the Python `mcp` SDK's `MCPServer`) for mcp-tunnel's e2e test
of a real OAuth flow through the tunnel (test_oauth.py), over Streamable HTTP on 127.0.0.1.

It is a resource server only (RFC 9728 protected-resource metadata plus bearer checks, the SDK's
`AuthSettings` with a `TokenVerifier`); tokens come from oauth_server.mjs, which the MCP host
reaches directly. Behind a tunnel the host calls, and asks tokens for, the tunnel's public URL
(`--audience`, e.g. `http://relay/v1/mcp/<id>`), so that is the audience the verifier demands.
The server's own protected-resource metadata stays at its local URL (`resource` = the local MCP
URL, served at `/.well-known/oauth-protected-resource/mcp`, where the tunnel client looks for it):
the relay rewrites `resource` to the public URL for the host.

The verifier checks the JWT access token's signature against the authorization server's JWKS
(PyJWT, already a dependency of the SDK), its issuer, expiry and audience, and the `mcp:tools`
scope (the SDK's RequireAuthMiddleware). Tokens it refused are counted in the log by reason,
never printed.

Tools: whoami() (the token's subject and client id), add(a, b).

Usage: oauth_mcp_server.py --port PORT --issuer URL --audience URL
"""

from __future__ import annotations

import argparse
import logging
import sys

import jwt
import uvicorn
from mcp.server.auth.middleware.auth_context import get_access_token
from mcp.server.auth.provider import AccessToken
from mcp.server.auth.settings import AuthSettings
from mcp.server.mcpserver import MCPServer

HOST = "127.0.0.1"
SCOPE = "mcp:tools"

log = logging.getLogger("oauth-mcp-server")


class JwtVerifier:
    """A TokenVerifier: an RFC 9068 JWT signed by the issuer's JWKS, for `audience` only."""

    def __init__(self, issuer: str, audience: str) -> None:
        self.issuer = issuer
        self.audience = audience
        self.jwks = jwt.PyJWKClient(f"{issuer}/jwks", cache_keys=True, timeout=5)

    async def verify_token(self, token: str) -> AccessToken | None:
        try:
            key = self.jwks.get_signing_key_from_jwt(token)
            claims = jwt.decode(
                token,
                key.key,
                algorithms=["RS256"],
                audience=self.audience,
                issuer=self.issuer,
                options={"require": ["exp", "iss", "aud", "client_id"]},
            )
        except jwt.PyJWTError as e:
            log.warning("refused a bearer token: %s", type(e).__name__)
            return None
        return AccessToken(
            token=token,
            client_id=claims["client_id"],
            scopes=str(claims.get("scope", "")).split(),
            expires_at=claims["exp"],
            resource=self.audience,
            subject=claims.get("sub"),
            claims={"iss": claims["iss"]},
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--issuer", required=True, help="the authorization server's issuer URL")
    parser.add_argument("--audience", required=True, help="the URL hosts call: the tunnel's public URL")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO)

    local_url = f"http://{HOST}:{args.port}/mcp"
    server = MCPServer(
        "mcp-tunnel-e2e-oauth",
        version="1.0.0",
        log_level="INFO",
        token_verifier=JwtVerifier(args.issuer, args.audience),
        auth=AuthSettings(
            issuer_url=args.issuer,
            resource_server_url=local_url,
            required_scopes=[SCOPE],
            # The verifier checks the audience (the public URL), not resource_server_url.
            validate_token_resource=False,
        ),
    )

    @server.tool()
    def whoami() -> str:
        """The caller's subject and client id, from its access token."""
        token = get_access_token()
        assert token is not None
        return f"subject={token.subject} client={token.client_id}"

    @server.tool()
    def add(a: int, b: int) -> int:
        """Add two integers."""
        return a + b

    app = server.streamable_http_app(host=HOST)
    uvicorn.Server(uvicorn.Config(app, host=HOST, port=args.port, log_level="info")).run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
