#!/usr/bin/env bash
# edgectl bench --compare-ort on the sample bundles at 1 and 2 threads: same machine, same input
# (the bundle's first self-test vector, normalized for ONNX Runtime as the runtime does), one run.
# Prints one line per (model, threads) with both medians and the ratio (ours / ORT).
#   bench/compare.sh [ITERATIONS]        (default 200)
set -euo pipefail
cd "$(dirname "$0")/.."
ITER=${1:-200}
cargo build --release -q -p edgectl
E=target/release/edgectl
W=$(mktemp -d)
trap 'rm -rf "$W"' EXIT
$E keygen --out "$W" --name root >/dev/null
$E keygen --out "$W" --name signer >/dev/null
$E trust init --root-key "$W/root.key" --signer "$W/signer.pub" --out "$W/trust.cbor" >/dev/null

printf "%-12s %7s %12s %12s %7s %11s %11s %10s %10s %10s\n" model threads ours_p50_ms ort_p50_ms ratio ours_load ort_load ours_rss ort_rss max_diff
for model in digits mobilenetv2; do
  $E pack models/$model/model.onnx --spec models/$model/spec.toml --key "$W/signer.key" \
     --calibration models/$model/calib_x.npy --out "$W/$model.efb" >/dev/null
  for threads in 1 2; do
    r=$($E bench "$W/$model.efb" --trust "$W/trust.cbor" --threads $threads --iterations "$ITER" --compare-ort --json)
    python3 - "$model" "$threads" "$r" <<'PY'
import json, sys
model, threads, r = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
print(f"{model:<12} {threads:>7} {r['p50_ms']:>12.3f} {r['ort_p50_ms']:>12.3f} {r['ratio']:>6.2f}x "
      f"{r['load_ms']:>9.1f}ms {r['ort_load_ms']:>9.1f}ms {r['peak_rss_mib']:>8.1f}M {r['ort_peak_rss_mib']:>8.1f}M {r['max_abs_diff']:>10.2e}")
PY
  done
done
