#!/usr/bin/env bash
# The README's second command: every test. Unit tests of the component's
# logic run natively; integration tests build the real component and load it
# through the runner (wasmtime), then a jco harness runs it under Node.
set -euo pipefail
cd "$(dirname "$0")/.."

rustup target add wasm32-wasip2 >/dev/null 2>&1 || rustup target add wasm32-wasip2
# The integration tests build the component themselves (tests/src/lib.rs),
# into target/test-plugin, so they never run a stale one.
cargo test --workspace --locked

# The same component in a second host: jco under Node, against the same
# expectations (fixtures/expectations/) as the wasmtime tests above, which
# built target/test-plugin/wasm32-wasip2/release/crmsync_plugin.wasm.
cd tests/jco
npm ci --no-audit --no-fund --loglevel=error
npm test
