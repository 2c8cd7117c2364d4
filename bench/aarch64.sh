#!/usr/bin/env bash
# aarch64 instruction counts (issue 24): our cross-built `edgectl bench --markers` against ONNX
# Runtime's aarch64 wheel on the same models and emulated CPUs (`-cpu neoverse-n1`: dotprod, Pi 5
# and Jetson Orin; `cortex-a72`: plain NEON, Pi 4; `max,sve=off,sme=off`: i8mm), counted by
# ../shared/armlab under qemu-aarch64; writes the table into docs/benchmarks.md between the
# `aarch64` markers. Instruction counts, not time: see ../shared/armlab/README.md.
#
#   bench/aarch64.sh                                  # every model, every -cpu (~15 min warm)
#   bench/aarch64.sh --models mnv2,mnv2-int8 --cpus neoverse-n1 --no-write
#
# Installs what it needs: armlab (its setup.sh, as root: qemu-user, a Debian arm64 rootfs with
# the onnxruntime wheel), the cross toolchain (cross/deps.sh), the Python packages of the x86
# harness (quantizers, model fetching) in ~/.cache/edgefleet/bench/py. ONNX Runtime's counts are
# cached in ~/.cache/edgefleet/bench/aarch64/ort-counts.json (keyed by model digest and -cpu).
set -euo pipefail
cd "$(dirname "$0")/.."
ARMLAB=${ARMLAB:-$(cd .. && pwd)/shared/armlab}
[ -x "$ARMLAB/count-bin.sh" ] || { echo "bench/aarch64.sh: no armlab at $ARMLAB (set ARMLAB)" >&2; exit 2; }
bash "$ARMLAB/setup.sh" >&2
# the harness's Python packages (as bench/run.sh installs them)
NEEDS="import onnxruntime, onnx, numpy, sklearn, skl2onnx, onnxmltools, lightgbm, xgboost"
PY="$HOME/.cache/edgefleet/bench/py"
export PYTHONPATH="$PY${PYTHONPATH:+:$PYTHONPATH}"
python3 -c "$NEEDS" 2>/dev/null ||
  python3 -m pip install --quiet --disable-pip-version-check --target "$PY" onnxruntime==1.32.0 onnx numpy \
    scikit-learn==1.9.1 skl2onnx==1.20.0 onnxmltools==1.16.0 lightgbm==4.7.0 xgboost==3.2.0
cargo build --release -p edgectl >&2
bash cross/deps.sh
source cross/env.sh aarch64-unknown-linux-gnu
cargo zigbuild --release --target "$ZIG_TARGET" -p edgectl >&2
exec python3 bench/aarch64.py --armlab "$ARMLAB" \
  --edgectl-aarch64 "target/$TARGET/release/edgectl" --edgectl target/release/edgectl "$@"
