#!/usr/bin/env bash
# What `make fuzz` and `make fuzz-smoke` need beyond the product's stable toolchain: a nightly
# toolchain (libFuzzer's sanitizer flags are nightly-only; the product itself stays on stable)
# and cargo-fuzz. Installs only what is missing, so a second run costs nothing.
set -euo pipefail

if ! rustup run nightly rustc --version >/dev/null 2>&1; then
  echo "fuzz setup: installing the nightly toolchain (minimal profile)"
  rustup toolchain install nightly --profile minimal
fi

if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "fuzz setup: installing cargo-fuzz (about a minute to build)"
  cargo install cargo-fuzz --locked
fi

echo "fuzz setup: $(rustup run nightly rustc --version), $(cargo fuzz --version)"
