# mcp-tunnel: developer and packaging entry points. Every target works on a fresh Debian machine
# once `.ci/run`'s install step (or `make setup`) has run.

CARGO ?= cargo
MUSL_TARGET := x86_64-unknown-linux-musl
STATIC_BIN := target/$(MUSL_TARGET)/release/mcp-tunnel

.PHONY: all build demo test test-deps e2e lint fmt static setup clean

all: build

## build: debug build of the binary
build:
	$(CARGO) build

## demo: the README's main job: relay, client and stub MCP server on loopback, one real MCP
## session through the tunnel, then serving until Ctrl-C
demo:
	$(CARGO) run --quiet -- demo

## test: unit and loopback integration tests, then the end-to-end suite (the README's test command)
test: test-deps
	$(CARGO) test --all-targets
	$(MAKE) e2e

## test-deps: tools the integration tests use (tinyproxy), installed on Debian when missing
test-deps:
	bash tests/setup-deps.sh

## e2e: the official Python MCP SDK through relay and client to FastMCP and server-everything
e2e:
	bash tests/e2e/run.sh

## lint: formatting and clippy, warnings are errors
lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --all-targets -- -D warnings

fmt:
	$(CARGO) fmt --all

## static: fully static x86_64 musl release binary
static:
	$(CARGO) build --release --locked --target $(MUSL_TARGET)
	@file $(STATIC_BIN)
	@ls -l $(STATIC_BIN)

## setup: install the build prerequisites on Debian (musl-tools, file, the musl Rust target)
setup:
	@if ! command -v musl-gcc >/dev/null || ! command -v file >/dev/null; then \
		apt-get update -qq && apt-get install -y -qq --no-install-recommends musl-tools file; \
	fi
	rustup target add $(MUSL_TARGET)
	rustup component add clippy rustfmt

clean:
	$(CARGO) clean
