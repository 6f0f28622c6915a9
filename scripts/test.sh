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
# `npm install` (not `npm ci`) because npm 11 leaves other platforms'
# optional native bindings out of the lockfile it writes, and `npm ci` then
# refuses the lockfile as out of sync (npm/cli#4828). With a lockfile present,
# `npm install` installs exactly the locked versions and leaves it unchanged.
cd tests/jco
npm install --no-audit --no-fund --loglevel=error
git diff --exit-code -- package-lock.json
npm test
