#!/usr/bin/env bash
# The README's first command: keys → trust root → pack + sign the digits model → verify → eval → run.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -p edgectl
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
