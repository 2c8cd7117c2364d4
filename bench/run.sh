#!/usr/bin/env bash
# The issue-8 harness (bench/harness.py): edgectl bench --compare-ort over models/, int8 variants
# and real models from PyPI wheels; rewrites the harness section of docs/benchmarks.md.
#   bench/run.sh [--threads N] [--iterations K] [--no-docs]
#   bench/run.sh --engine gpu [--iterations K]   # the same models on the gpu engine vs the CPU engine
# When Python lacks onnxruntime, onnx, numpy or the tabular exporters (scikit-learn, skl2onnx,
# LightGBM, XGBoost, onnxmltools), pip installs them into ~/.cache/edgefleet/bench/py (no root, no
# system site); wheels and extracted models are cached in ~/.cache/edgefleet/bench.
set -euo pipefail
cd "$(dirname "$0")/.."
NEEDS="import onnxruntime, onnx, numpy, sklearn, skl2onnx, onnxmltools, lightgbm, xgboost"
if ! python3 -c "$NEEDS" 2>/dev/null; then
  PY="$HOME/.cache/edgefleet/bench/py"
  export PYTHONPATH="$PY${PYTHONPATH:+:$PYTHONPATH}"
  python3 -c "$NEEDS" 2>/dev/null ||
    python3 -m pip install --quiet --disable-pip-version-check --target "$PY" onnxruntime==1.32.0 onnx numpy \
      scikit-learn==1.9.1 skl2onnx==1.20.0 onnxmltools==1.16.0 lightgbm==4.7.0 xgboost==3.2.0
fi
cargo build --release -q -p edgectl
exec python3 bench/harness.py "$@"
