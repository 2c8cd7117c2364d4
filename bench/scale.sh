#!/usr/bin/env bash
# Replicated servers under load (issue 26): `bench/scale.sh [N]` starts a local PostgreSQL
# (scripts/cluster.sh, installed if missing), runs `edgectl simulate --devices N` against
# ceil(N / 15000) `ota-server` replicas on it (a replica holds a descriptor per connected device,
# and one process may hold 20,000), and prints the simulator's JSON report last:
# devices, connected, per-phase desired-state push latency (p50/p99), telemetry ingested per
# second, server RSS per device and CPU, all replicas together. Reports also land in
# target/scale/N.json. SCALE_REPLICAS=K overrides the replica count. A run that times out
# (SCALE_TIMEOUT=S, default 900) prints what it reached and the error instead, and fails.
#
# One simulator process holds one socket per device (20,000 descriptors at most here), so the
# devices run in ceil(N / 12,000) simulator worker processes (`simulate --workers`);
# SCALE_WORKERS=K overrides. SCALE_WINDOW=S sets the devices' telemetry window (default 10 s;
# the 100,000-device run uses 30: at 10 s that fleet sends 10,000 messages a second);
# SCALE_CONNECT_RATE=R new device connections a second (default 250).
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-10000}
workers=${SCALE_WORKERS:-$(( (n + 11999) / 12000 ))}
replicas=${SCALE_REPLICAS:-$(( (n + 14999) / 15000 ))}
cargo build --release -q -p edgectl -p ota-server
url=$(scripts/cluster.sh pg)
out=target/scale
mkdir -p "$out"
echo "== $n devices over $replicas replicas on $url, $workers simulator processes" >&2
status=0
target/release/edgectl simulate --json --devices "$n" --replicas "$replicas" --store "$url" \
    --workers "$workers" --window-seconds "${SCALE_WINDOW:-10}" \
    --connect-rate "${SCALE_CONNECT_RATE:-250}" \
    --timeout "${SCALE_TIMEOUT:-900}" >"$out/$n.json" 2>"$out/$n.log" || status=$?
cat "$out/$n.json"
exit "$status"
