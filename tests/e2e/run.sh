#!/usr/bin/env bash
# End-to-end suite: the official Python MCP SDK as the MCP host (forced to each MCP era), through
# `mcp-tunnel relay` and `mcp-tunnel run`, against a FastMCP server and
# @modelcontextprotocol/server-everything, each over Streamable HTTP and over stdio (run by the
# client), both on two channels of one tunnel, and mcp-server-time over stdio; other hosts too:
# the TypeScript SDK client, the MCP Inspector CLI and mcp-remote (test_eras_and_hosts.py); and a
# real OAuth flow (test_oauth.py): the SDK's OAuth client through a passthrough tunnel to an
# OAuth-protected FastMCP server, with npm oidc-provider as the authorization server.
#
# Idempotent set-up, then the run. From any directory; needs python3 (>= 3.10, with venv), node
# and npm, cargo. On Debian, a missing venv module is installed with apt-get (as root).
#   - Python venv at target/e2e/venv, from tests/e2e/requirements.txt (reinstalled when it changes)
#   - node_modules in tests/e2e, from package-lock.json with `npm ci` (again when the lock changes):
#     server-everything, the TypeScript SDK, the Inspector, mcp-remote, oidc-provider
#   - the debug binary (`cargo build`), used by the tests as $MCP_TUNNEL_BIN
# Extra arguments go to pytest (e.g. `tests/e2e/run.sh -k fastmcp -x`).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
E2E="$ROOT/tests/e2e"
VENV="$ROOT/target/e2e/venv"
cd "$ROOT"

say() { printf '== e2e: %s\n' "$*"; }
die() { printf 'e2e: %s\n' "$*" >&2; exit 1; }
sha() { cat "$@" | sha256sum | cut -d" " -f1; }

for tool in python3 node npm cargo; do
  command -v "$tool" >/dev/null || die "$tool is required but not on PATH"
done
python3 -c 'import sys; sys.exit(sys.version_info < (3, 10))' ||
  die "python3 >= 3.10 is required (found $(python3 --version 2>&1))"

# --- Python: a venv with the pinned SDK and pytest -------------------------------------------
venv_works() { [ -x "$VENV/bin/python" ] && "$VENV/bin/python" -c 'import sys' 2>/dev/null; }

make_venv() {
  rm -rf "$VENV"
  mkdir -p "$(dirname "$VENV")"
  python3 -m venv "$VENV"
}

if ! venv_works; then
  say "creating the Python venv at ${VENV#"$ROOT"/}"
  if ! make_venv 2>/dev/null; then
    # Debian's system python ships venv/ensurepip separately.
    if command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
      py="$(python3 -c 'import sys; print(f"python{sys.version_info[0]}.{sys.version_info[1]}")')"
      say "installing Debian's venv module ($py-venv)"
      export DEBIAN_FRONTEND=noninteractive
      apt-get update -qq
      apt-get install -y -qq --no-install-recommends python3-venv "$py-venv" ||
        apt-get install -y -qq --no-install-recommends python3-venv
      make_venv
    else
      die "python3 -m venv failed; install your distribution's venv package (Debian: python3-venv)"
    fi
  fi
fi

PY_STAMP="$VENV/.e2e-requirements.sha256"
py_want="$(sha "$E2E/requirements.txt")"
if [ "$(cat "$PY_STAMP" 2>/dev/null)" != "$py_want" ]; then
  say "installing tests/e2e/requirements.txt into the venv"
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -r "$E2E/requirements.txt"
  echo "$py_want" >"$PY_STAMP"
fi

# --- Node: server-everything, oidc-provider and the other hosts at the locked versions ----------
NODE_STAMP="$E2E/node_modules/.e2e-lock.sha256"
node_want="$(sha "$E2E/package.json" "$E2E/package-lock.json")"
if [ "$(cat "$NODE_STAMP" 2>/dev/null)" != "$node_want" ] ||
  [ ! -f "$E2E/node_modules/@modelcontextprotocol/server-everything/dist/index.js" ] ||
  [ ! -f "$E2E/node_modules/oidc-provider/package.json" ]; then
  say "installing tests/e2e/package-lock.json (npm ci)"
  (cd "$E2E" && npm ci --no-audit --no-fund --loglevel=error)
  echo "$node_want" >"$NODE_STAMP"
fi

# --- The binary under test -------------------------------------------------------------------
say "cargo build"
cargo build --quiet
export MCP_TUNNEL_BIN="${MCP_TUNNEL_BIN:-$ROOT/target/debug/mcp-tunnel}"

# --- Run --------------------------------------------------------------------------------------
say "pytest tests/e2e (python $("$VENV/bin/python" -c 'import importlib.metadata as m; print("mcp", m.version("mcp"))'), server-everything $(node -p 'require("./tests/e2e/node_modules/@modelcontextprotocol/server-everything/package.json").version'), oidc-provider $(node -p 'require("./tests/e2e/node_modules/oidc-provider/package.json").version'))"
# No .pytest_cache nor __pycache__ in the work tree.
export PYTHONDONTWRITEBYTECODE=1
# -r fExX: the summary names failures, errors, and expected failures (known src/ bugs) with their
# reasons, and unexpected passes.
exec "$VENV/bin/python" -m pytest tests/e2e -q -r fExX -p no:cacheprovider "$@"
