#!/usr/bin/env bash
# Replicated ota-servers on loopback, for local use and tests: a PostgreSQL and N replicas on it.
#
#   scripts/cluster.sh up [N]   # PostgreSQL (installed if missing) and N replicas (default 3):
#                               # fleet keys, `ota-server init` once, each replica its own copy
#                               # of the data directory, one shared artifacts directory; prints
#                               # the replicas' URLs, the admin token and the fleet CA
#   scripts/cluster.sh pg       # PostgreSQL alone; prints its URL (what the tests use)
#   scripts/cluster.sh url      # the URL to pass as `ota-server serve --store URL`
#   scripts/cluster.sh restart  # PostgreSQL stopped and started again (it goes away and back)
#   scripts/cluster.sh down     # replicas stopped, PostgreSQL stopped (data kept)
#   scripts/cluster.sh destroy  # down, and every file deleted
#
# Environment: EDGEFLEET_CLUSTER_DIR (default /tmp/edgefleet-cluster), EDGEFLEET_PG_PORT
# (default 15432: below the ephemeral port range, so load tests cannot collide with it); the
# replicas serve HTTPS on 18080+i and MQTT over TLS on 18880+i. PostgreSQL refuses to run as
# root: as root it runs as the `postgres` user the package creates.
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

replicas_up() {
    local n=$1 root
    root=$(cd "$(dirname "$0")/.." && pwd)
    cargo build --release -q --manifest-path "$root/Cargo.toml" -p ota-server -p edgectl
    local S=$root/target/release/ota-server E=$root/target/release/edgectl
    local keys=$dir/keys seed=$dir/seed
    if [ ! -f "$keys/trust.cbor" ]; then
        mkdir -p "$keys"
        for k in root signer director; do "$E" keygen --out "$keys" --name $k >/dev/null; done
        "$E" trust init --root-key "$keys/root.key" --signer "$keys/signer.pub" \
            --director "$keys/director.pub" --out "$keys/trust.cbor" >/dev/null
    fi
    if [ ! -f "$seed/director.key" ]; then
        "$S" init --data "$seed" --store "$url" --trust "$keys/trust.cbor" \
            --director-key "$keys/director.key" --root "$keys/root.pub" >"$dir/init.log" 2>&1 \
            || { cat "$dir/init.log" >&2; exit 1; }
    fi
    mkdir -p "$dir/artifacts"
    for i in $(seq 0 $((n - 1))); do
        local data=$dir/replica-$i
        [ -d "$data" ] || cp -r "$seed" "$data"
        if [ -f "$data/pid" ] && kill -0 "$(cat "$data/pid")" 2>/dev/null; then continue; fi
        "$S" serve --data "$data" --store "$url" --artifacts "$dir/artifacts" \
            --replica-id "replica-$i" --http "127.0.0.1:$((18080 + i))" \
            --mqtt "127.0.0.1:$((18880 + i))" >"$data/server.log" 2>&1 &
        echo $! >"$data/pid"
    done
    for i in $(seq 0 $((n - 1))); do
        local ok=""
        for _ in $(seq 1 100); do
            if curl -sf --cacert "$seed/tls/ca.pem" "https://127.0.0.1:$((18080 + i))/healthz" \
                | grep -q '"broker_connected":true'; then ok=1; break; fi
            sleep 0.2
        done
        [ -n "$ok" ] || { echo "cluster.sh: replica-$i did not come up; see $dir/replica-$i/server.log" >&2; exit 1; }
        echo "replica-$i  https://127.0.0.1:$((18080 + i))  mqtts://127.0.0.1:$((18880 + i))"
    done
    echo "admin token: $(cat "$seed/admin.token")"
    echo "fleet CA:    $seed/tls/ca.pem"
    echo "store:       $url"
}

replicas_down() {
    local p
    for p in "$dir"/replica-*/pid; do
        [ -f "$p" ] || continue
        kill "$(cat "$p")" 2>/dev/null || true
        rm -f "$p"
    done
}

pg_stop() {
    if bin=$(find_bin) && [ -f "$pgdata/PG_VERSION" ]; then
        as_pg "$bin/pg_ctl" -D "$pgdata" -m fast -w stop >/dev/null 2>&1 || true
    fi
}

case "${1:-}" in
pg)
    pg_start
    echo "$url"
    ;;
up)
    pg_start
    replicas_up "${2:-3}"
    ;;
url) echo "$url" ;;
restart)
    pg_stop
    pg_start
    echo "$url"
    ;;
down)
    replicas_down
    pg_stop
    ;;
destroy)
    replicas_down
    pg_stop
    rm -rf "$pgdata" "$dir"/replica-* "$dir/seed" "$dir/keys" "$dir/artifacts"
    ;;
*)
    sed -n '2,19p' "$0" >&2
    exit 2
    ;;
esac
