#!/usr/bin/env bash
# MobileNetV2 fp32 and int8 at each x86 instruction-set level one machine can imitate (issue 24,
# part 3): the same release edgectl, its kernels capped by EDGE_ISA, and `tract` =
# EDGE_CPU_OWN_KERNELS=0 (no kernels of ours). ROUNDS rounds, every configuration once a round
# (same-minute A/B); prints p50 in ms per round.
#
#   bench/isa-levels.sh [ROUNDS] [ITERATIONS]      # default 3 rounds of 40 inferences, 1 thread
#
# The int8 model is `edgectl quantize`'s (made here if missing, as bench/alternate.sh does).
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-3}
iterations=${2:-40}
cargo build --release -p edgectl >&2
bin=target/release/edgectl
work=$HOME/.cache/edgefleet/bench/work
int8=$work/mnv2.int8.onnx
mkdir -p "$work"
[ -f "$int8" ] || "$bin" quantize models/mobilenetv2/model.onnx --out "$int8" \
  --calibration models/mobilenetv2/calib_x.npy --spec models/mobilenetv2/spec.toml >&2
levels="tract avx2 avx-vnni avx512-vnni"
declare -A results
for r in $(seq "$rounds"); do
  for level in $levels; do
    for model in models/mobilenetv2/model.onnx "$int8"; do
      if [ "$level" = tract ]; then env=(EDGE_CPU_OWN_KERNELS=0); else env=(EDGE_ISA="$level"); fi
      p50=$(env "${env[@]}" "$bin" bench "$model" --threads 1 --iterations "$iterations" --json |
        python3 -c 'import json,sys; print("%.1f" % json.load(sys.stdin)["p50_ms"])')
      key="$level|$(basename "$model")"
      results[$key]="${results[$key]:+${results[$key]} / }$p50"
    done
  done
done
echo "| level | fp32 | int8 |"
echo "|---|---|---|"
for level in $levels; do
  echo "| \`$level\` | ${results[$level|model.onnx]} | ${results[$level|$(basename "$int8")]} |"
done
