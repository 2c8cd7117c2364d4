#!/usr/bin/env bash
# edgectl bench vs ONNX Runtime on the sample models, same machine, same threads, same input.
# Prints one line per (model, threads) with both medians and the ratio (ours / ORT).
#   bench/compare.sh [ITERATIONS]        (default 200)
set -euo pipefail
cd "$(dirname "$0")/.."
ITER=${1:-200}
python3 -c "import onnxruntime, numpy" 2>/dev/null || pip install --quiet onnxruntime numpy
cargo build --release -q -p edgectl
E=target/release/edgectl
W=$(mktemp -d)
trap 'rm -rf "$W"' EXIT
$E keygen --out "$W" --name root >/dev/null
$E keygen --out "$W" --name signer >/dev/null
$E trust init --root-key "$W/root.key" --signer "$W/signer.pub" --out "$W/trust.cbor" >/dev/null

# model | ort normalization flags
declare -A NORM=(
  [digits]="--scale 0.0625"
  [mobilenetv2]="--scale 0.00392156862745098 --mean 0.485,0.456,0.406 --std 0.229,0.224,0.225"
)
printf "%-12s %7s %12s %12s %7s %11s %11s %10s %10s\n" model threads ours_p50_ms ort_p50_ms ratio ours_load ort_load ours_rss ort_rss
for model in digits mobilenetv2; do
  $E pack models/$model/model.onnx --spec models/$model/spec.toml --key "$W/signer.key" \
     --calibration models/$model/calib_x.npy --out "$W/$model.efb" >/dev/null
  for threads in 1 2; do
    ours=$($E bench "$W/$model.efb" --trust "$W/trust.cbor" --threads $threads --iterations "$ITER" --json)
    # shellcheck disable=SC2086
    ort=$(python3 bench/ort_baseline.py models/$model/model.onnx --input models/$model/calib_x.npy \
          --rows 1 ${NORM[$model]} --threads $threads --iterations "$ITER")
    python3 - "$model" "$threads" "$ours" "$ort" <<'PY'
import json, sys
model, threads, ours, ort = sys.argv[1], sys.argv[2], json.loads(sys.argv[3]), json.loads(sys.argv[4])
print(f"{model:<12} {threads:>7} {ours['p50_ms']:>12.3f} {ort['p50_ms']:>12.3f} {ours['p50_ms']/ort['p50_ms']:>6.2f}x "
      f"{ours['load_ms']:>9.1f}ms {ort['load_ms']:>9.1f}ms {ours['peak_rss_mib']:>8.1f}M {ort['peak_rss_mib']:>8.1f}M")
PY
  done
done
