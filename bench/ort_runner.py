"""ONNX Runtime side of `edgectl bench --compare-ort` (edgectl embeds this file and runs it).

    python3 ort_runner.py MODEL.onnx --feed NAME=X.npy [--feed ...] --threads N \
        --iterations K --save-outputs DIR

Loads MODEL with the CPU execution provider (sequential, `intra_op_num_threads` = N), runs the
given inputs once to warm up and K timed times, saves the outputs of the warm-up run as
DIR/0.npy, DIR/1.npy, ... (graph output order) and prints one JSON object: runtime, load_ms,
first_inference_ms, p50_ms, p90_ms, p99_ms, peak_rss_mib, outputs (names).
"""
import argparse
import json
import os
import resource
import time

import numpy as np
import onnxruntime as ort


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("--feed", action="append", default=[], help="NAME=PATH.npy")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--iterations", type=int, default=100)
    ap.add_argument("--save-outputs", default="")
    a = ap.parse_args()

    feed = {}
    for f in a.feed:
        name, path = f.split("=", 1)
        feed[name] = np.load(path)

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = a.threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    t0 = time.perf_counter()
    sess = ort.InferenceSession(a.model, opts, providers=["CPUExecutionProvider"])
    load_ms = (time.perf_counter() - t0) * 1e3
    t1 = time.perf_counter()
    outs = sess.run(None, feed)
    first_ms = (time.perf_counter() - t1) * 1e3
    if a.save_outputs:
        for i, o in enumerate(outs):
            np.save(os.path.join(a.save_outputs, f"{i}.npy"), np.ascontiguousarray(o))
    lat = []
    for _ in range(a.iterations):
        t = time.perf_counter()
        sess.run(None, feed)
        lat.append((time.perf_counter() - t) * 1e3)
    lat.sort()
    pick = lambda q: lat[min(len(lat) - 1, round((len(lat) - 1) * q))]  # noqa: E731
    print(json.dumps({
        "runtime": f"onnxruntime {ort.__version__}",
        "load_ms": load_ms,
        "first_inference_ms": first_ms,
        "p50_ms": pick(0.5),
        "p90_ms": pick(0.9),
        "p99_ms": pick(0.99),
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0,
        "outputs": [o.name for o in sess.get_outputs()],
    }))


if __name__ == "__main__":
    main()
