#!/usr/bin/env bash
# Installs what the Rust integration tests need beyond Rust, on Debian, when missing:
#   tinyproxy - a real CONNECT proxy for the proxy tests (tests/net.rs)
#   promtool (Debian's prometheus) - checks the /metrics exposition (tests/ops.rs)
#   redis-server - the relay's shared store (tests/relay_redis.rs); the tests start their own
#   chromium - a real headless browser for the relay's status page (tests/relay_status.rs)
# Without root or apt-get it only says what is missing; those tests then print "skipped".
set -euo pipefail

missing=()
command -v tinyproxy >/dev/null || missing+=(tinyproxy)
command -v promtool >/dev/null || missing+=(prometheus)
command -v redis-server >/dev/null || missing+=(redis-server)
command -v chromium >/dev/null || missing+=(chromium)
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
  echo "setup-deps: not installed: ${missing[*]} (needs root and apt-get); those tests will be skipped" >&2
  exit 0
fi

echo "== setup-deps: installing ${missing[*]}"
# The packages would start a system-wide proxy (and Redis) on every interface; the tests start their own on
# loopback. policy-rc.d (the standard Debian hook) keeps the service from starting.
guard=""
if [ ! -e /usr/sbin/policy-rc.d ]; then
  printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
  chmod +x /usr/sbin/policy-rc.d
  guard=/usr/sbin/policy-rc.d
fi
trap '[ -n "$guard" ] && rm -f "$guard"' EXIT
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}"
