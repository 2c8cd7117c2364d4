#!/usr/bin/env bash
# Same-minute A/B of MobileNetV2 against ONNX Runtime, alternating, N rounds, 150 iterations each,
# at THREADS threads (ours: `threads` of the engine; ONNX Runtime: intra_op_num_threads):
#   int8: our runtime on `edgectl quantize`'s model vs ONNX Runtime on its own `quantize_static`
#         QDQ model (the issue-8 target);
#   fp32: both on models/mobilenetv2/model.onnx.
# Prints each round's medians and the median ratios. The int8 models are the ones bench/run.sh
# writes into ~/.cache/edgefleet/bench/work (run it once first).
#   bench/alternate.sh [ROUNDS] [THREADS]
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${1:-5}
THREADS=${2:-1}
WORK="$HOME/.cache/edgefleet/bench/work"
FP32=models/mobilenetv2/model.onnx
for m in "$WORK/mnv2.int8.onnx" "$WORK/ort/qdq.onnx"; do
  [ -f "$m" ] || { echo "missing $m: run bench/run.sh first" >&2; exit 1; }
done
if ! python3 -c "import onnxruntime, numpy" 2>/dev/null; then
  export PYTHONPATH="$HOME/.cache/edgefleet/bench/py${PYTHONPATH:+:$PYTHONPATH}"
fi
cargo build --release -q -p edgectl
EDGECTL=target/release/edgectl
field() { python3 -c "import json,sys; print(json.load(sys.stdin)['$1'])"; }
bench() { $EDGECTL bench "$1" --threads "$THREADS" --iterations 150 "${@:3}" --json | field "$2"; }
ours=() theirs=() ours32=() theirs32=()
for i in $(seq "$ROUNDS"); do
  a=$(bench "$WORK/mnv2.int8.onnx" p50_ms)
  b=$(bench "$WORK/ort/qdq.onnx" ort_p50_ms --compare-ort)
  c=$(bench "$FP32" p50_ms)
  d=$(bench "$FP32" ort_p50_ms --compare-ort)
  ours+=("$a") theirs+=("$b") ours32+=("$c") theirs32+=("$d")
  printf 'round %d, %d thread(s): int8 ours %.3f ms, ONNX Runtime (its QDQ) %.3f ms; fp32 ours %.3f ms, ONNX Runtime %.3f ms\n' \
    "$i" "$THREADS" "$a" "$b" "$c" "$d"
done
python3 - "${ours[*]}" "${theirs[*]}" "${ours32[*]}" "${theirs32[*]}" <<'PY'
import statistics, sys
for name, ours, theirs in (("int8", sys.argv[1], sys.argv[2]), ("fp32", sys.argv[3], sys.argv[4])):
    a = statistics.median(float(v) for v in ours.split())
    b = statistics.median(float(v) for v in theirs.split())
    print(f"{name} medians: ours {a:.3f} ms, ONNX Runtime {b:.3f} ms, ratio {a / b:.2f}x")
PY
