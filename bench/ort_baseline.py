"""ONNX Runtime baseline for `edgectl bench`: the same model, input, thread count and iteration
count, timed the same way (load, first inference, p50/p90/p99, throughput, peak RSS).

    python3 bench/ort_baseline.py models/digits/model.onnx --input models/digits/calib_x.npy \
        --rows 1 --scale 0.0625 --threads 1 --iterations 200

--scale/--mean/--std apply the bundle's normalization first, so both runtimes compute the same
graph on the same numbers (edgectl's timing also includes its validation and pre/post-processing).
Needs: pip install onnxruntime numpy   (bench/compare.sh installs them).
"""
import argparse
import json
import resource
import time

import numpy as np
import onnxruntime as ort


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("--input", required=True, help=".npy of raw inputs (batch first)")
    ap.add_argument("--rows", type=int, default=1, help="rows per inference")
    ap.add_argument("--scale", type=float, default=1.0)
    ap.add_argument("--mean", type=str, default="")
    ap.add_argument("--std", type=str, default="")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--iterations", type=int, default=100)
    a = ap.parse_args()

    x = np.load(a.input)[: a.rows].astype(np.float32) * np.float32(a.scale)
    shape = [1, -1] + [1] * (x.ndim - 2)
    if a.mean:
        x = x - np.array([float(v) for v in a.mean.split(",")], dtype=np.float32).reshape(shape)
    if a.std:
        x = x / np.array([float(v) for v in a.std.split(",")], dtype=np.float32).reshape(shape)

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = a.threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    t0 = time.perf_counter()
    sess = ort.InferenceSession(a.model, opts, providers=["CPUExecutionProvider"])
    load_ms = (time.perf_counter() - t0) * 1e3
    feed = {sess.get_inputs()[0].name: x}
    t1 = time.perf_counter()
    sess.run(None, feed)
    first_ms = (time.perf_counter() - t1) * 1e3
    lat = []
    t2 = time.perf_counter()
    for _ in range(a.iterations):
        t = time.perf_counter()
        sess.run(None, feed)
        lat.append((time.perf_counter() - t) * 1e3)
    total = time.perf_counter() - t2
    lat.sort()
    pick = lambda q: lat[min(len(lat) - 1, round((len(lat) - 1) * q))]  # noqa: E731
    print(json.dumps({
        "runtime": f"onnxruntime {ort.__version__}",
        "threads": a.threads,
        "load_ms": load_ms,
        "first_inference_ms": first_ms,
        "p50_ms": pick(0.5),
        "p90_ms": pick(0.9),
        "p99_ms": pick(0.99),
        "throughput_per_s": a.iterations * a.rows / total,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }))


if __name__ == "__main__":
    main()
