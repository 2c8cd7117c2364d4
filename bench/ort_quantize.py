"""ONNX Runtime's own int8 quantizations of a float model, the baselines issue 8 compares against:

    python3 bench/ort_quantize.py MODEL.onnx CALIB.npy OUTDIR [--scale S --mean a,b,c --std a,b,c] [--rows N]

writes OUTDIR/qdq.onnx (quantize_static, QDQ format), OUTDIR/qop.onnx (quantize_static,
QOperator format: QLinearConv, QLinearAdd, QLinearGlobalAveragePool, QGemm, ...) and
OUTDIR/dynamic.onnx (quantize_dynamic: ConvInteger/MatMulInteger). Calibration rows are
normalized like the bundle's spec says, so ORT calibrates on what the graph actually sees.
Needs: onnxruntime, onnx, numpy (bench/run.sh installs them).
"""
import argparse
import os

import numpy as np
import onnx
from onnxruntime.quantization import (CalibrationDataReader, QuantFormat, QuantType,
                                      quantize_dynamic, quantize_static)
from onnxruntime.quantization.shape_inference import quant_pre_process


class Reader(CalibrationDataReader):
    def __init__(self, name, rows):
        self.it = iter([{name: r[None]} for r in rows])

    def get_next(self):
        return next(self.it, None)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("calib")
    ap.add_argument("out")
    ap.add_argument("--scale", type=float, default=1.0)
    ap.add_argument("--mean", default="")
    ap.add_argument("--std", default="")
    ap.add_argument("--rows", type=int, default=32)
    a = ap.parse_args()
    os.makedirs(a.out, exist_ok=True)
    x = np.load(a.calib)[: a.rows].astype(np.float32) * np.float32(a.scale)
    shape = [1, -1] + [1] * (x.ndim - 2)
    if a.mean:
        x = x - np.array([float(v) for v in a.mean.split(",")], dtype=np.float32).reshape(shape)
    if a.std:
        x = x / np.array([float(v) for v in a.std.split(",")], dtype=np.float32).reshape(shape)
    pre = os.path.join(a.out, "pre.onnx")
    quant_pre_process(a.model, pre, skip_symbolic_shape=True)
    name = onnx.load(pre).graph.input[0].name
    for fmt, file in [(QuantFormat.QDQ, "qdq.onnx"), (QuantFormat.QOperator, "qop.onnx")]:
        quantize_static(pre, os.path.join(a.out, file), Reader(name, x), quant_format=fmt,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        per_channel=True)
    quantize_dynamic(pre, os.path.join(a.out, "dynamic.onnx"), weight_type=QuantType.QUInt8)
    os.remove(pre)


if __name__ == "__main__":
    main()
