#!/usr/bin/env bash
# A throwaway PostgreSQL for the tests: `scripts/postgres.sh start` prints
# the URL of a fresh server under target/postgres (initdb + pg_ctl from the
# machine's own server binaries, on 127.0.0.1 and a free port; as the
# `postgres` user when run as root, since initdb refuses root);
# `scripts/postgres.sh stop` stops it and removes its folder. Where the
# binaries are missing it installs Debian's `postgresql` package when it can,
# otherwise it fails naming what to install.
set -euo pipefail
cd "$(dirname "$0")/.."
dir="$PWD/target/postgres"

find_bin() {
    command -v "$1" 2>/dev/null && return
    ls /usr/lib/postgresql/*/bin/"$1" 2>/dev/null | sort -V | tail -1
}

ensure_binaries() {
    if [ -n "$(find_bin initdb)" ] && [ -n "$(find_bin pg_ctl)" ]; then
        return
    fi
    if command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
        echo "postgres.sh: installing Debian's postgresql package" >&2
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q postgresql >&2 \
            || { apt-get update -q >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q postgresql >&2; }
    fi
    if [ -z "$(find_bin initdb)" ] || [ -z "$(find_bin pg_ctl)" ]; then
        echo "postgres.sh: the PostgreSQL tests need PostgreSQL's server binaries (initdb, pg_ctl);" \
             "install Debian's 'postgresql' package (apt-get install postgresql)" >&2
        exit 1
    fi
}

# Runs a server command as a user initdb accepts.
as_server_user() {
    if [ "$(id -u)" = 0 ]; then
        id postgres >/dev/null 2>&1 || useradd --system --no-create-home postgres
        runuser -u postgres -- "$@"
    else
        "$@"
    fi
}

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

case "${1:-}" in
start)
    ensure_binaries
    initdb=$(find_bin initdb)
    pg_ctl=$(find_bin pg_ctl)
    "$0" stop >/dev/null 2>&1 || true
    mkdir -p "$dir"
    chmod 0777 "$dir"
    data="$dir/data"
    # Under root the server runs as `postgres`, which may not reach a
    # checkout under a private home: then the data lives in a private
    # temporary folder, named in target/postgres/datadir for `stop`.
    if ! as_server_user test -w "$dir"; then
        data=$(mktemp -d /tmp/crmsync-postgres.XXXXXX)/data
        chmod 0777 "$(dirname "$data")"
        [ "$(id -u)" = 0 ] && chown postgres "$(dirname "$data")"
    fi
    echo "$data" >"$dir/datadir"
    as_server_user "$initdb" -D "$data" -A trust -U postgres --no-sync >"$dir/initdb.log" 2>&1 \
        || { cat "$dir/initdb.log" >&2; exit 1; }
    port=$(free_port)
    # fsync off: a throwaway server that never has to survive a power cut.
    as_server_user "$pg_ctl" -D "$data" -l "$data/log" -w -o \
        "-p $port -k $data -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=300" \
        start >"$dir/pg_ctl.log" 2>&1 || { cat "$dir/pg_ctl.log" "$data/log" >&2; exit 1; }
    echo "postgresql://postgres@127.0.0.1:$port/postgres" | tee "$dir/url"
    ;;
stop)
    data=$(cat "$dir/datadir" 2>/dev/null || echo "$dir/data")
    if [ -d "$data" ]; then
        as_server_user "$(find_bin pg_ctl)" -D "$data" -m immediate stop >/dev/null 2>&1 || true
        case "$data" in /tmp/crmsync-postgres.*) rm -rf "$(dirname "$data")" ;; esac
    fi
    rm -rf "$dir"
    ;;
*)
    echo "usage: scripts/postgres.sh start|stop" >&2
    exit 2
    ;;
esac
