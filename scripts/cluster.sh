#!/usr/bin/env bash
# A PostgreSQL for replicated ota-servers on loopback, for local use and tests.
#
#   scripts/cluster.sh up       # install PostgreSQL if missing, init and start it; prints the URL
#   scripts/cluster.sh url      # the URL to pass as `ota-server serve --store URL`
#   scripts/cluster.sh restart  # stop and start again (tests: the database goes away and back)
#   scripts/cluster.sh down     # stop it (the data stays in $EDGEFLEET_CLUSTER_DIR/pg)
#   scripts/cluster.sh destroy  # stop it and delete the data
#
# Environment: EDGEFLEET_CLUSTER_DIR (default /tmp/edgefleet-cluster), EDGEFLEET_PG_PORT
# (default 15432: below the ephemeral port range, so load tests cannot collide with it).
# PostgreSQL refuses to run as root: as root the server runs as the `postgres` user the
# package creates.
set -euo pipefail

dir=${EDGEFLEET_CLUSTER_DIR:-/tmp/edgefleet-cluster}
port=${EDGEFLEET_PG_PORT:-15432}
pgdata=$dir/pg
url="postgres://edgefleet@127.0.0.1:$port/edgefleet"

find_bin() {
    local b
    for b in /usr/lib/postgresql/*/bin; do
        [ -x "$b/pg_ctl" ] && { echo "$b"; return 0; }
    done
    command -v pg_ctl >/dev/null && { dirname "$(command -v pg_ctl)"; return 0; }
    return 1
}

install_pg() {
    if ! bin=$(find_bin); then
        echo "cluster.sh: installing PostgreSQL (apt-get)" >&2
        if [ "$(id -u)" = 0 ]; then sudo=""; else sudo="sudo"; fi
        $sudo apt-get update -qq
        DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq postgresql >/dev/null
        bin=$(find_bin) || { echo "cluster.sh: pg_ctl not found after install" >&2; exit 1; }
    fi
}

as_pg() {
    if [ "$(id -u)" = 0 ]; then
        runuser -u postgres -- "$@"
    else
        "$@"
    fi
}

pg_start() {
    install_pg
    mkdir -p "$dir"
    if [ ! -f "$pgdata/PG_VERSION" ]; then
        mkdir -p "$pgdata"
        [ "$(id -u)" = 0 ] && chown postgres "$pgdata" && chmod 700 "$pgdata"
        as_pg "$bin/initdb" -D "$pgdata" -U edgefleet --auth=trust -E UTF8 --locale=C.UTF-8 >/dev/null
        cat >>"$pgdata/postgresql.conf" <<EOF
listen_addresses = '127.0.0.1'
port = $port
unix_socket_directories = '$pgdata'
max_connections = 200
shared_buffers = 256MB
fsync = on
synchronous_commit = on
EOF
    fi
    if ! as_pg "$bin/pg_ctl" -D "$pgdata" status >/dev/null 2>&1; then
        as_pg "$bin/pg_ctl" -D "$pgdata" -l "$pgdata/server.log" -w -t 60 start >/dev/null
    fi
    if ! as_pg "$bin/psql" -h 127.0.0.1 -p "$port" -U edgefleet -d postgres -tAc \
        "SELECT 1 FROM pg_database WHERE datname = 'edgefleet'" | grep -q 1; then
        as_pg "$bin/createdb" -h 127.0.0.1 -p "$port" -U edgefleet edgefleet
    fi
}

pg_stop() {
    if bin=$(find_bin) && [ -f "$pgdata/PG_VERSION" ]; then
        as_pg "$bin/pg_ctl" -D "$pgdata" -m fast -w stop >/dev/null 2>&1 || true
    fi
}

case "${1:-}" in
up)
    pg_start
    echo "$url"
    ;;
url) echo "$url" ;;
restart)
    pg_stop
    pg_start
    echo "$url"
    ;;
down) pg_stop ;;
destroy)
    pg_stop
    rm -rf "$pgdata"
    ;;
*)
    sed -n '2,14p' "$0" >&2
    exit 2
    ;;
esac
