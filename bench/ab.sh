#!/usr/bin/env bash
# Same-minute A/B of two edgectl builds (or two settings of one) on the same models: the two
# alternate, ROUNDS rounds of `edgectl bench MODEL --threads 1 --iterations ITER`, each round
# A then B; prints each round's p50s and, per model, the medians and the ratio B / A.
#   bench/ab.sh A_EDGECTL B_EDGECTL MODEL...      (.onnx or .efb)
#   ROUNDS=7 ITER=100 THREADS=1 A_ENV="EDGE_ISA=avx2" B_ENV="" bench/ab.sh e e m.onnx
# A_ENV / B_ENV: environment for each side (e.g. EDGE_ISA=avx2, EDGE_CPU_OWN_KERNELS=0).
set -euo pipefail
[ $# -ge 3 ] || { sed -n 2,7p "$0" >&2; exit 2; }
A=$1 B=$2; shift 2
ROUNDS=${ROUNDS:-7} ITER=${ITER:-100} THREADS=${THREADS:-1}
p50() { # env-string edgectl model
  env $1 "$2" bench "$3" --threads "$THREADS" --iterations "$ITER" --json |
    python3 -c "import json,sys; print(json.load(sys.stdin)['p50_ms'])"
}
for model in "$@"; do
  as=() bs=()
  for i in $(seq "$ROUNDS"); do
    a=$(p50 "${A_ENV:-}" "$A" "$model"); b=$(p50 "${B_ENV:-}" "$B" "$model")
    as+=("$a") bs+=("$b")
    printf '%s round %d: A %.3f ms, B %.3f ms\n' "$(basename "$model")" "$i" "$a" "$b"
  done
  python3 - "$model" "${as[*]}" "${bs[*]}" <<'PY'
import statistics, sys, os
model, a, b = sys.argv[1], [float(v) for v in sys.argv[2].split()], [float(v) for v in sys.argv[3].split()]
ma, mb = statistics.median(a), statistics.median(b)
print(f"{os.path.basename(model)}: median A {ma:.3f} ms, B {mb:.3f} ms, B/A {mb / ma:.3f}")
PY
done
