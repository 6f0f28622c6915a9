#!/usr/bin/env bash
# Prints the path of a headless Chromium for the console's browser test,
# installing Debian's `chromium` package when it is missing (as root), and
# the test's driver (playwright-core, at its locked version) under
# tests/console. Fails naming what to install when it cannot.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v chromium >/dev/null; then
    if command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
        echo "chromium.sh: installing Debian's chromium package" >&2
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >&2 \
            || { apt-get update -q >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >&2; }
    else
        echo "chromium.sh: no chromium; install Debian's 'chromium' package (apt-get install chromium)" >&2
        exit 1
    fi
fi

# As for the jco harness (scripts/test.sh says why `npm install`, not `npm ci`).
(
    cd tests/console
    npm install --no-audit --no-fund --loglevel=error >&2
    npm ls --depth=0 >/dev/null
    git checkout --quiet -- package-lock.json 2>/dev/null || true
)
command -v chromium
