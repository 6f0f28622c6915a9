#!/usr/bin/env bash
# The README's second command: every test. Unit tests of the component's
# logic run natively; the store's contract runs on SQLite and on a
# throwaway PostgreSQL; integration tests build the real component and load it
# through the runner (wasmtime), then a jco harness runs it under Node.
set -euo pipefail
cd "$(dirname "$0")/.."

rustup target add wasm32-wasip2 >/dev/null 2>&1 || rustup target add wasm32-wasip2

# The PostgreSQL store's tests run against a throwaway server started here
# from the machine's own binaries (installed when missing) and stopped on
# exit, pass or fail; they are never skipped.
CRMSYNC_TEST_POSTGRES_URL=$(bash scripts/postgres.sh start)
export CRMSYNC_TEST_POSTGRES_URL
trap "bash '$PWD/scripts/postgres.sh' stop" EXIT
# The console's browser test drives Debian's headless Chromium (installed
# when missing) with playwright-core; like PostgreSQL's, it is never skipped.
CRMSYNC_TEST_CHROMIUM=$(bash scripts/chromium.sh)
export CRMSYNC_TEST_CHROMIUM
# The integration tests build the component themselves (tests/src/lib.rs),
# into target/test-plugin, so they never run a stale one.
cargo test --workspace --locked

# The same component in a second host: jco under Node, against the same
# expectations (fixtures/expectations/) as the wasmtime tests above, which
# built target/test-plugin/wasm32-wasip2/component/crmsync_plugin.wasm.
# `npm install` (not `npm ci`): npm versions disagree on which other
# platforms' optional native bindings a lockfile lists (npm/cli#4828), and
# `npm ci` refuses a lockfile another npm wrote as out of sync. With a
# lockfile present `npm install` installs the locked versions; whether it
# rewrites the platform entries depends on the npm at hand, so the check is
# that the packages package.json pins are the ones installed.
cd tests/jco
npm install --no-audit --no-fund --loglevel=error
npm ls --depth=0 >/dev/null
git checkout --quiet -- package-lock.json
npm test
