#!/usr/bin/env bash
# The README's first command: keys → trust root → pack + sign the digits model → verify → eval → run.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -p edgectl -p device-agent
E=target/release/edgectl
W=$(mktemp -d)
trap 'rm -rf "$W"' EXIT
$E keygen --out "$W" --name root
$E keygen --out "$W" --name signer
$E trust init --root-key "$W/root.key" --signer "$W/signer.pub" --out "$W/trust.cbor"
$E pack models/digits/model.onnx --spec models/digits/spec.toml --key "$W/signer.key" \
    --calibration models/digits/calib_x.npy --out "$W/digits.efb"
$E verify "$W/digits.efb" --trust "$W/trust.cbor" --root "$W/root.pub"
$E eval "$W/digits.efb" --trust "$W/trust.cbor" --root "$W/root.pub" \
    --inputs models/digits/test_x.npy --labels models/digits/test_y.npy
cat > "$W/one.json" <<'JSON'
[[[[0,0,5,13,9,1,0,0],[0,0,13,15,10,15,5,0],[0,3,15,2,0,11,8,0],[0,4,12,0,0,8,8,0],
   [0,5,8,0,0,9,8,0],[0,4,11,0,1,12,7,0],[0,2,14,5,10,12,0,0],[0,0,6,13,10,0,0,0]]]]
JSON
echo "== one digit (a zero from scikit-learn's data set):"
$E run "$W/digits.efb" --trust "$W/trust.cbor" --root "$W/root.pub" --input "$W/one.json"

echo "== edge-agent: the bundle sideloaded, no server, one prediction over the local API"
mkdir -p "$W/image-bundles"
cp "$W/digits.efb" "$W/image-bundles/"
PORT=${EDGE_AGENT_PORT:-18470}
cat > "$W/agent.toml" <<TOML
device_id = "dev-quickstart"
state_dir = "$W/state"
trust_root = "$W/trust.cbor"
root_key = "$W/root.pub"
[api]
listen = "127.0.0.1:$PORT"
[sideload]
dir = "$W/image-bundles"
TOML
target/release/edge-agent run --config "$W/agent.toml" 2> "$W/agent.log" &
AGENT=$!
trap 'kill $AGENT 2>/dev/null; rm -rf "$W"' EXIT
for _ in $(seq 100); do
    curl -sf "http://127.0.0.1:$PORT/healthz" > /dev/null && break
    sleep 0.1
done
curl -sf "http://127.0.0.1:$PORT/v1/models/digits/predict" -H 'content-type: application/json' \
    -d "{\"input\": $(cat "$W/one.json")}"
echo
target/release/edge-agent status --config "$W/agent.toml"
