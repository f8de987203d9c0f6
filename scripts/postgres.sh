#!/usr/bin/env bash
# A throwaway PostgreSQL 15 (Debian's packages) for the state store's tests.
#
#   scripts/postgres.sh install          install postgresql-15 with apt-get if initdb is missing
#   scripts/postgres.sh start [DIR]      initdb into DIR (once), start on a free port (the same one
#                                        on a restart), print the URL: postgresql://postgres@127.0.0.1:PORT/postgres
#   scripts/postgres.sh stop [DIR] [--keep]
#                                        stop it; DIR is removed unless --keep (then start reuses it)
#
# DIR defaults to /tmp/trio-mcp-postgres. PostgreSQL refuses to run as root: as root, initdb and
# pg_ctl run as the postgres user (runuser), and DIR is handed to it. Local connections are
# trusted (no password): for tests only.
set -euo pipefail

PG_VERSION=15
BIN="/usr/lib/postgresql/$PG_VERSION/bin"

as_owner() {
    if [ "$(id -u)" -eq 0 ]; then
        runuser -u postgres -- "$@"
    else
        "$@"
    fi
}

install() {
    if [ -x "$BIN/initdb" ]; then
        return
    fi
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "postgresql-$PG_VERSION" >/dev/null
    # The package starts a cluster of its own on port 5432; the tests do not use it.
    if command -v pg_ctlcluster >/dev/null; then
        pg_ctlcluster "$PG_VERSION" main stop 2>/dev/null || true
    fi
}

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

start() {
    local dir="${1:-/tmp/trio-mcp-postgres}"
    if [ ! -x "$BIN/initdb" ]; then
        echo "postgres.sh: $BIN/initdb not found (run: scripts/postgres.sh install)" >&2
        exit 2
    fi
    mkdir -p "$dir"
    if [ "$(id -u)" -eq 0 ]; then
        chown postgres: "$dir"
    fi
    chmod 700 "$dir"
    if [ ! -f "$dir/data/PG_VERSION" ]; then
        as_owner "$BIN/initdb" -D "$dir/data" -U postgres -A trust --no-sync -E UTF8 >"$dir/initdb.log" 2>&1 || {
            cat "$dir/initdb.log" >&2
            exit 1
        }
    fi
    local port
    if [ -f "$dir/port" ]; then
        port="$(cat "$dir/port")"
    else
        port="$(free_port)"
        echo "$port" | as_owner tee "$dir/port" >/dev/null
    fi
    as_owner "$BIN/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 30 \
        -o "-p $port -c listen_addresses=127.0.0.1 -c unix_socket_directories=$dir -c fsync=off" \
        start >/dev/null || {
        cat "$dir/server.log" >&2
        exit 1
    }
    echo "postgresql://postgres@127.0.0.1:$port/postgres"
}

stop() {
    local dir="/tmp/trio-mcp-postgres" keep=""
    for arg in "$@"; do
        case "$arg" in
        --keep) keep=1 ;;
        *) dir="$arg" ;;
        esac
    done
    if [ -f "$dir/data/postmaster.pid" ]; then
        as_owner "$BIN/pg_ctl" -D "$dir/data" -m fast -w -t 30 stop >/dev/null
    fi
    if [ -z "$keep" ]; then
        rm -rf "$dir"
    fi
}

case "${1:-}" in
install) install ;;
start) start "${@:2}" ;;
stop) stop "${@:2}" ;;
*)
    echo "usage: $0 install | start [DIR] | stop [DIR] [--keep]" >&2
    exit 2
    ;;
esac
