#!/usr/bin/env bash
# edge-agent footprint: stripped binary size, idle RSS with the digits model loaded
# (sideloaded, no server), and idle CPU over a window (default 60 s), read from /proc. The agent
# is built with the `device` profile (what cross/build.sh ships; EDGE_AGENT_PROFILE=release for
# the host's profile); edgectl packs the bundle (the optimized payload, which is all the agent's
# default build reads).
#
#     bench/agent_footprint.sh [SECONDS]
set -euo pipefail
cd "$(dirname "$0")/.."
SECS=${1:-60}
PROFILE=${EDGE_AGENT_PROFILE:-device}
cargo build --release -p edgectl >&2
# the agent in a cargo run of its own: with edgectl in the same run it would carry edgectl's
# features (the ONNX front end). FOOTPRINT_AGENT_BIN=PATH measures an agent built elsewhere (not
# an EDGE_AGENT_* name: the agent reads those as configuration).
if [ -z "${FOOTPRINT_AGENT_BIN:-}" ]; then
  cargo build --profile "$PROFILE" -p device-agent --bin edge-agent >&2
fi
AGENT_BIN=${FOOTPRINT_AGENT_BIN:-target/$PROFILE/edge-agent}
E=target/release/edgectl
W=$(mktemp -d)
trap 'kill $AGENT 2>/dev/null || true; rm -rf "$W"' EXIT
AGENT=
$E keygen --out "$W" --name root >/dev/null
$E keygen --out "$W" --name signer >/dev/null
$E trust init --root-key "$W/root.key" --signer "$W/signer.pub" --out "$W/trust.cbor" >/dev/null
mkdir -p "$W/bundles"
$E pack models/digits/model.onnx --spec models/digits/spec.toml --key "$W/signer.key" \
    --calibration models/digits/calib_x.npy --out "$W/bundles/digits.efb" >/dev/null
cp "$AGENT_BIN" "$W/edge-agent.stripped"
strip "$W/edge-agent.stripped"
PORT=${EDGE_AGENT_PORT:-18471}
cat > "$W/agent.toml" <<TOML
device_id = "dev-bench"
state_dir = "$W/state"
trust_root = "$W/trust.cbor"
root_key = "$W/root.pub"
[api]
listen = "127.0.0.1:$PORT"
[sideload]
dir = "$W/bundles"
TOML
env -u EDGE_AGENT_PROFILE -u EDGE_AGENT_PORT "$AGENT_BIN" run --config "$W/agent.toml" 2> "$W/agent.log" &
AGENT=$!
for _ in $(seq 200); do
    curl -sf "http://127.0.0.1:$PORT/healthz" >/dev/null && break
    sleep 0.05
done
curl -sf "http://127.0.0.1:$PORT/v1/models/digits/predict" -H 'content-type: application/json' \
    -d '{"input": [[[[0,0,5,13,9,1,0,0],[0,0,13,15,10,15,5,0],[0,3,15,2,0,11,8,0],[0,4,12,0,0,8,8,0],[0,5,8,0,0,9,8,0],[0,4,11,0,1,12,7,0],[0,2,14,5,10,12,0,0],[0,0,6,13,10,0,0,0]]]]}' >/dev/null
sleep 2
ticks() { awk '{print $14 + $15}' "/proc/$AGENT/stat"; }
HZ=$(getconf CLK_TCK)
T0=$(ticks); S0=$(date +%s.%N)
sleep "$SECS"
[ -n "${FOOTPRINT_SMAPS:-}" ] && cp "/proc/$AGENT/smaps" "$FOOTPRINT_SMAPS"
T1=$(ticks); S1=$(date +%s.%N)
RSS_KB=$(awk '/^VmRSS/ {print $2}' "/proc/$AGENT/status")
HWM_KB=$(awk '/^VmHWM/ {print $2}' "/proc/$AGENT/status")
# where the resident memory is: the binary's and libraries' pages, the heap and stacks, threads
ANON_KB=$(awk '/^RssAnon/ {print $2}' "/proc/$AGENT/status")
FILE_KB=$(awk '/^RssFile/ {print $2}' "/proc/$AGENT/status")
THREADS=$(awk '/^Threads/ {print $2}' "/proc/$AGENT/status")
python3 - "$T0" "$T1" "$S0" "$S1" "$HZ" "$RSS_KB" "$HWM_KB" "$(stat -c %s "$W/edge-agent.stripped")" \
    "$ANON_KB" "$FILE_KB" "$THREADS" <<'PY'
import json, sys
t0, t1, s0, s1, hz, rss, hwm, size, anon, file, threads = sys.argv[1:]
cpu_s = (int(t1) - int(t0)) / int(hz)
wall = float(s1) - float(s0)
print(json.dumps({
    "binary_stripped_bytes": int(size),
    "idle_rss_kib": int(rss),
    "peak_rss_kib": int(hwm),
    "rss_anon_kib": int(anon),
    "rss_file_kib": int(file),
    "threads": int(threads),
    "idle_window_s": round(wall, 1),
    "idle_cpu_s": cpu_s,
    "idle_cpu_percent": round(100 * cpu_s / wall, 3),
}))
PY
