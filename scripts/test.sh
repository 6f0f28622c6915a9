#!/usr/bin/env bash
# The README's second command: every test. Unit tests of the component's
# logic run natively; integration tests build the real component and load it
# through the runner.
set -euo pipefail
cd "$(dirname "$0")/.."

rustup target add wasm32-wasip2 >/dev/null 2>&1 || rustup target add wasm32-wasip2
# The integration tests build the component themselves (tests/src/lib.rs),
# into target/test-plugin, so they never run a stale one.
cargo test --workspace --locked
