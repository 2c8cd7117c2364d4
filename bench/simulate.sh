#!/usr/bin/env bash
# `edgectl simulate` at the sizes docs/benchmarks.md reports: 1,000, 6,500 and 10,000 devices on
# the server's own MQTT endpoint (the TLS gate; one descriptor a device: 19,744 fit under this
# machine's 20,000), and 10,000 through a local Mosquitto (with the README's ACL file), at 10-s and 2-s telemetry
# windows. Reports land in target/simulate/*.json. Needs mosquitto (.ci/deps) for the last two.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -q -p edgectl -p ota-server
out=target/simulate
mkdir -p "$out"
sim() { local name=$1; shift; echo "== $name: $*"; target/release/edgectl simulate --json "$@" >"$out/$name.json" 2>"$out/$name.log" || echo "   (failed: see $out/$name.log)"; }

if [ "${SKIP_EMBEDDED:-}" != 1 ]; then
    sim embedded-1k --devices 1000
    sim embedded-6500 --devices 6500 --timeout 300
    sim embedded-10k --devices 10000 --timeout 150
fi

mq=$(mktemp -d)
chmod 755 "$mq" # mosquitto drops to its own user before reading the ACL file
port=18831
cat >"$mq/acl" <<ACL
user ota-server
topic readwrite edgefleet/v1/devices/#

pattern write edgefleet/v1/devices/%u/up
pattern write edgefleet/v1/devices/%u/status
pattern read edgefleet/v1/devices/%u/desired
ACL
chmod 644 "$mq/acl"
printf 'listener %s 127.0.0.1\nallow_anonymous true\nacl_file %s/acl\npersistence false\nmax_connections -1\n' "$port" "$mq" >"$mq/mosquitto.conf"
MOSQUITTO=${MOSQUITTO:-$(command -v mosquitto || echo /usr/sbin/mosquitto)}
"$MOSQUITTO" -c "$mq/mosquitto.conf" >"$out/mosquitto.log" 2>&1 &
mq_pid=$!
trap 'kill $mq_pid 2>/dev/null || true' EXIT
sleep 1
export OTA_SERVER_BROKER_USERNAME=ota-server OTA_SERVER_BROKER_PASSWORD=-
sim mosquitto-10k --devices 10000 --broker "mqtt://127.0.0.1:$port" --timeout 400
sim mosquitto-10k-w2 --devices 10000 --broker "mqtt://127.0.0.1:$port" --window-seconds 2 --connect-rate 500 --timeout 400
echo "reports in $out"
