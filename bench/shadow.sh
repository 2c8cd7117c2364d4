#!/usr/bin/env bash
# Shadow overhead (issue 27): answered-request latency with a shadow running beside the model vs
# without (alternating blocks in the same run), and the shadow worker's CPU against its budget.
# Three runs per configuration; prints each run's JSON and the medians.
#
#   bench/shadow.sh            # digits and mobilenetv2, budgets 0.5 and 0.25 cores
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -q -p device-agent --example shadow_overhead
bin=target/release/examples/shadow_overhead
out=$(mktemp)
# MODEL REQUESTS_PER_BLOCK BLOCKS BUDGET_CORES GAP_MS (0: a closed loop; else a pause after each
# answer, as a camera's frame gap)
for config in "digits 20000 10 0.5 0" "mobilenetv2 200 10 0.5 0" "mobilenetv2 200 10 0.25 0" \
              "digits 1000 10 0.5 2" "mobilenetv2 100 10 0.5 10"; do
  for run in 1 2 3; do
    # shellcheck disable=SC2086
    $bin $config | tee -a "$out"
  done
done
python3 - "$out" <<'PY'
import json, statistics, sys
runs = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
groups = {}
for r in runs:
    groups.setdefault((r["model"], r["shadow"]["budget_cores"], r["gap_ms"]), []).append(r)
print("model        budget gap ms  p50 off→on (ms)        p99 off→on (ms)        shadow cores (allowed)  mirrored/skipped")
for (model, budget, gap), rs in groups.items():
    med = lambda f: statistics.median(f(r) for r in rs)
    print(f"{model:<12} {budget:<6} {gap:<6} "
          f"{med(lambda r: r['answered_p50_ms']['shadow_off']):.4f}→{med(lambda r: r['answered_p50_ms']['shadow_on']):.4f} "
          f"×{med(lambda r: r['answered_p50_ms']['ratio']):.3f}   "
          f"{med(lambda r: r['answered_p99_ms']['shadow_off']):.4f}→{med(lambda r: r['answered_p99_ms']['shadow_on']):.4f} "
          f"×{med(lambda r: r['answered_p99_ms']['ratio']):.3f}   "
          f"{med(lambda r: r['shadow']['cpu_cores_used']):.3f} ({med(lambda r: r['shadow']['allowed_cores']):.3f})   "
          f"{med(lambda r: r['shadow']['mirrored']):.0f}/{med(lambda r: r['shadow']['skipped']):.0f}")
PY
rm -f "$out"
