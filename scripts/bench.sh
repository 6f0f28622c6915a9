#!/usr/bin/env bash
# crmsync's benchmark suite: release builds, HubSpot's Python client in a
# virtualenv (the baseline), then every figure against its target.
# Extra arguments go to the bench binary (e.g. --only e2e --sizes 100000).
set -euo pipefail
cd "$(dirname "$0")/.."
rustup target add wasm32-wasip2 >/dev/null 2>&1 || true
cargo build --locked --release -p crmsync-host -p crmsync-bench
venv=target/bench-venv
if ! "$venv/bin/python" -c 'import hubspot' 2>/dev/null; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet 'hubspot-api-client==12.0.0'
fi
# The PostgreSQL figures run against a throwaway server, stopped on exit.
postgres_url=$(bash scripts/postgres.sh start)
trap "bash '$PWD/scripts/postgres.sh' stop" EXIT
target/release/crmsync-bench --python "$venv/bin/python" --postgres-url "$postgres_url" "$@"
