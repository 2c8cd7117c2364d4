#!/usr/bin/env bash
# Same-minute A/B for the int8 MobileNetV2 target of issue 8: our runtime on `edgectl quantize`'s
# model against ONNX Runtime on its own `quantize_static` QDQ model, alternating, N rounds, one
# thread, 150 iterations each; prints each round's medians and the median ratio. The models are
# the ones bench/run.sh writes into ~/.cache/edgefleet/bench/work (run it once first).
#   bench/alternate.sh [ROUNDS]
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${1:-5}
WORK="$HOME/.cache/edgefleet/bench/work"
for m in "$WORK/mnv2.int8.onnx" "$WORK/ort/qdq.onnx"; do
  [ -f "$m" ] || { echo "missing $m: run bench/run.sh first" >&2; exit 1; }
done
if ! python3 -c "import onnxruntime, numpy" 2>/dev/null; then
  export PYTHONPATH="$HOME/.cache/edgefleet/bench/py${PYTHONPATH:+:$PYTHONPATH}"
fi
cargo build --release -q -p edgectl
EDGECTL=target/release/edgectl
field() { python3 -c "import json,sys; print(json.load(sys.stdin)['$1'])"; }
ours=() theirs=()
for i in $(seq "$ROUNDS"); do
  a=$($EDGECTL bench "$WORK/mnv2.int8.onnx" --threads 1 --iterations 150 --json | field p50_ms)
  b=$($EDGECTL bench "$WORK/ort/qdq.onnx" --threads 1 --iterations 150 --compare-ort --json |
    field ort_p50_ms)
  ours+=("$a") theirs+=("$b")
  printf 'round %d: ours (edgectl quantize) %.3f ms, ONNX Runtime (its QDQ) %.3f ms\n' "$i" "$a" "$b"
done
python3 - "${ours[*]}" "${theirs[*]}" <<'PY'
import statistics, sys
ours = [float(v) for v in sys.argv[1].split()]
theirs = [float(v) for v in sys.argv[2].split()]
a, b = statistics.median(ours), statistics.median(theirs)
print(f"medians: ours {a:.3f} ms, ONNX Runtime {b:.3f} ms, ratio {a / b:.2f}x")
PY
