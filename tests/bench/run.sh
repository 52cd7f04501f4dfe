#!/usr/bin/env bash
# `make bench`: mcp-tunnel against direct access, rathole and bore, on loopback (issue 8).
#
# Builds the static musl binary (`make static`, the one measured) and the glibc release build
# (measured beside it for comparison), installs rathole and bore-cli from crates.io into target/bench/tools
# (skipped when the pinned version is already there) and wrk from Debian when missing, then runs
# tests/bench/bench.py (every server on 127.0.0.1 only) and tests/bench/report.py, which rewrite
# tests/bench/RESULTS.md and tests/bench/latency.svg. Then tests/bench/store.py measures the
# relay's store (memory, Redis, three relays on one Redis; redis-server from Debian) and replaces
# its own section of RESULTS.md. Exits non-zero if any request failed.
#
# Knobs (environment; defaults are what RESULTS.md was made with):
#   BENCH_DURATION=10 BENCH_WARMUP=2 BENCH_ROUNDS=2   seconds per cell, warm-up, rounds
#   BENCH_IDLE_SECONDS=55 BENCH_POLLERS=10000 BENCH_SCALE_SECONDS=30
#   BENCH_OUT_DIR=tests/bench                         where RESULTS.md and latency.svg go
#   BENCH_ONLY=store      only the store part (its section of RESULTS.md; the rest stays)
#   BENCH_STORE=0         skip the store part
#   BENCH_GLIBC=0         measure the static musl binary only (no glibc comparison pair)
#   BENCH_STORE_DURATION=10 BENCH_STORE_WARMUP=2      seconds per store cell, warm-up
set -euo pipefail

cd "$(dirname "$0")/../.."
CARGO=${CARGO:-cargo}
RATHOLE_VERSION=0.5.0
BORE_VERSION=0.6.0
TOOLS=target/bench/tools
OUT_DIR=${BENCH_OUT_DIR:-tests/bench}
RESULTS_JSON=target/bench/results.json
started=$(date +%s)

say() { printf '[bench %s] %s\n' "$(date +%H:%M:%S)" "$*"; }

for tool in python3 setpriv; do
	command -v "$tool" >/dev/null || { echo "bench: $tool is required" >&2; exit 2; }
done

# The binary measured is the static musl one `make static` builds and the packages ship
# (path mcp-tunnel); the glibc release build is measured beside it for comparison (path
# mcp-tunnel-glibc). BENCH_GLIBC=0 leaves the glibc pair out.
STATIC_BIN=target/x86_64-unknown-linux-musl/release/mcp-tunnel
GLIBC_BIN=target/release/mcp-tunnel
say "building the static musl binary (make static)"
${MAKE:-make} --no-print-directory static CARGO="$CARGO" >/dev/null
if [ "${BENCH_GLIBC:-1}" != 0 ]; then
	say "building the glibc release binary (for comparison)"
	$CARGO build --release --locked
fi

# store.py: the store part, after the main one (or alone with BENCH_ONLY=store).
store_part() {
	[ "${BENCH_STORE:-1}" = 0 ] && return 0
	if ! command -v redis-server >/dev/null || ! command -v redis-cli >/dev/null; then
		if [ "$(id -u)" -ne 0 ]; then
			echo "bench: redis-server is missing; install it (apt-get install redis-server)" >&2
			return 2
		fi
		say "installing redis-server (Debian)"
		apt-get update -qq
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends redis-server >/dev/null
	fi
	say "running the store benchmark (about 2 minutes)"
	python3 tests/bench/store.py --bin "$STATIC_BIN" --results target/bench/store.json \
		--markdown "$OUT_DIR/RESULTS.md" --duration "${BENCH_STORE_DURATION:-10}" \
		--warmup "${BENCH_STORE_WARMUP:-2}"
}
if [ "${BENCH_ONLY:-}" = store ]; then
	command -v wrk >/dev/null || { echo "bench: wrk is missing (apt-get install wrk)" >&2; exit 2; }
	store_part
	exit $?
fi

# installed CRATE VERSION: the pinned version is already in target/bench/tools.
installed() {
	$CARGO install --list --root "$TOOLS" 2>/dev/null | grep -q "^$1 v$2:"
}
if ! installed bore-cli "$BORE_VERSION"; then
	say "installing bore-cli $BORE_VERSION"
	$CARGO install --quiet --locked --root "$TOOLS" bore-cli --version "$BORE_VERSION"
fi
if ! installed rathole "$RATHOLE_VERSION"; then
	# Not --locked: rathole 0.5.0's lock file pins `time` 0.3.29, which does not compile with
	# Rust 1.80 or later. Only the plain-TCP transport is built (no TLS, noise or websocket).
	say "installing rathole $RATHOLE_VERSION"
	$CARGO install --quiet --root "$TOOLS" rathole --version "$RATHOLE_VERSION" \
		--no-default-features --features server,client
fi
if ! command -v wrk >/dev/null; then
	if [ "$(id -u)" -ne 0 ]; then
		echo "bench: wrk is missing; install it (apt-get install wrk) or run as root" >&2
		exit 2
	fi
	say "installing wrk (Debian)"
	apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends wrk >/dev/null
fi

args=(--bin "$STATIC_BIN" --tools "$TOOLS" --results "$RESULTS_JSON"
	--duration "${BENCH_DURATION:-10}" --warmup "${BENCH_WARMUP:-2}" --rounds "${BENCH_ROUNDS:-2}"
	--idle-seconds "${BENCH_IDLE_SECONDS:-55}" --pollers "${BENCH_POLLERS:-10000}"
	--scale-seconds "${BENCH_SCALE_SECONDS:-30}")
if [ "${BENCH_GLIBC:-1}" != 0 ]; then args+=(--glibc-bin "$GLIBC_BIN"); fi

# The driver kills everything it started when it ends (and its children die with it through
# PR_SET_PDEATHSIG); this trap makes sure the driver itself ends with us.
bench_pid=
work=$(mktemp -d "${TMPDIR:-/tmp}/mcp-tunnel-bench.XXXXXX")
stop_driver() {
	if [ -n "$bench_pid" ] && kill -0 "$bench_pid" 2>/dev/null; then
		kill -TERM "$bench_pid" 2>/dev/null || true
		for _ in $(seq 100); do kill -0 "$bench_pid" 2>/dev/null || break; sleep 0.1; done
		kill -KILL "$bench_pid" 2>/dev/null || true
	fi
	rm -rf "$work"
}
trap stop_driver EXIT
trap 'exit 130' INT TERM

rm -f "$RESULTS_JSON"
say "running the benchmark (about 8 minutes; 7 with BENCH_GLIBC=0)"
python3 tests/bench/bench.py "${args[@]}" --workdir "$work" &
bench_pid=$!
rc=0
wait "$bench_pid" || rc=$?
bench_pid=

if [ ! -s "$RESULTS_JSON" ]; then
	echo "bench: the run did not complete; RESULTS.md left as it was" >&2
	exit 1
fi
python3 tests/bench/report.py "$RESULTS_JSON" --out-dir "$OUT_DIR" \
	--total-seconds "$(( $(date +%s) - started ))"
store_part || rc=1
say "done in $(( $(date +%s) - started )) s"
exit "$rc"
