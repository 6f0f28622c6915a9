#!/usr/bin/env bash
# The README's first command: build the runner (with its component), then sync
# the bundled HubSpot cassette into a fresh SQLite store, twice (the second
# pass shows that an unchanged source changes nothing), and show the result.
set -euo pipefail
cd "$(dirname "$0")/.."

rustup target add wasm32-wasip2 >/dev/null 2>&1 || rustup target add wasm32-wasip2
# The runner's build builds the component (release, wasm32-wasip2) and embeds
# it (host/runtime/build.rs). The debug build shares its artefacts with the
# test command (a release build of wasmtime adds minutes).
cargo build --quiet -p crmsync-host

crmsync=target/debug/crmsync
config=examples/demo.toml
rm -rf target/demo

echo "== first pass: replaying fixtures/hubspot/contacts.json into target/demo/demo.sqlite"
"$crmsync" sync --config "$config" --replay fixtures/hubspot/contacts.json
echo
echo "== second pass over the same data"
"$crmsync" sync --config "$config" --replay fixtures/hubspot/contacts.json
echo
echo "== destination contacts"
"$crmsync" contacts --config "$config"
echo
echo "== errors of the last run"
"$crmsync" errors --config "$config"
echo
echo "== companies, then the contacts of the synced companies: replaying fixtures/hubspot/companies.json"
"$crmsync" sync --config examples/companies.toml --replay fixtures/hubspot/companies.json
echo
echo "== destination accounts"
"$crmsync" accounts --config examples/companies.toml
echo
echo "== their contacts, each linked to its company's account"
"$crmsync" contacts --config examples/companies.toml
echo
echo "== two-way HubSpot <-> Salesforce, first run: replaying fixtures/two-way/hubspot-salesforce.json"
"$crmsync" sync --config examples/two-way.toml --replay fixtures/two-way/hubspot-salesforce.json
echo
echo "== the pairs it linked, and the values both sides now agree on"
"$crmsync" links --config examples/two-way.toml
echo
echo "== what it could not sync"
"$crmsync" errors --config examples/two-way.toml
