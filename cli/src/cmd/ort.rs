//! ONNX Runtime as a baseline, in the same `edgectl` run: finds a Python with `onnxruntime` and
//! `numpy` (or installs them with pip into `~/.cache/edgefleet/ort-python`), runs the embedded
//! `bench/ort_runner.py` on the payload and the same (normalized) inputs, and reads back its
//! timings and outputs.

use std::path::PathBuf;
use std::process::Command;

use anyhow::{bail, Context, Result};
use edge_runtime::Tensor;

/// The runner script, embedded so `edgectl` works outside the source tree.
const RUNNER: &str = include_str!("../../../bench/ort_runner.py");
/// The ONNX Runtime the harness installs when Python lacks one (`EDGE_ORT_VERSION` overrides).
const ORT_VERSION: &str = "1.32.0";

/// What ONNX Runtime measured and produced.
#[derive(Debug)]
pub struct OrtResult {
    /// e.g. `onnxruntime 1.32.0`.
    pub runtime: String,
    /// Session creation.
    pub load_ms: f64,
    /// Median latency.
    pub p50_ms: f64,
    /// 90th percentile latency.
    pub p90_ms: f64,
    /// Peak RSS of the Python process (interpreter and numpy included).
    pub peak_rss_mib: f64,
    /// Graph output names.
    pub output_names: Vec<String>,
    /// Outputs of the warm-up run.
    pub outputs: Vec<Tensor>,
}

fn cache_dir() -> PathBuf {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(std::env::temp_dir);
    base.join("edgefleet").join("ort-python")
}

fn python() -> String {
    std::env::var("EDGE_PYTHON").unwrap_or_else(|_| "python3".into())
}

fn importable(pythonpath: Option<&PathBuf>) -> bool {
    let mut cmd = Command::new(python());
    cmd.args(["-c", "import onnxruntime, numpy"]);
    if let Some(p) = pythonpath {
        cmd.env("PYTHONPATH", p);
    }
    cmd.output().map(|o| o.status.success()).unwrap_or(false)
}

/// The `PYTHONPATH` to run the runner with (`None`: the interpreter's own packages).
fn ensure_onnxruntime() -> Result<Option<PathBuf>> {
    if importable(None) {
        return Ok(None);
    }
    let dir = cache_dir();
    if importable(Some(&dir)) {
        return Ok(Some(dir));
    }
    let version = std::env::var("EDGE_ORT_VERSION").unwrap_or_else(|_| ORT_VERSION.into());
    eprintln!(
        "installing onnxruntime {version} and numpy into {} (once)",
        dir.display()
    );
    let status = Command::new(python())
        .args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "--target",
        ])
        .arg(&dir)
        .arg(format!("onnxruntime=={version}"))
        .arg("numpy")
        .status()
        .with_context(|| format!("cannot run {} -m pip", python()))?;
    if !status.success() || !importable(Some(&dir)) {
        bail!(
            "could not install onnxruntime with pip into {}; install it yourself \
             (pip install onnxruntime numpy) or set EDGE_PYTHON",
            dir.display()
        );
    }
    Ok(Some(dir))
}

/// Runs ONNX Runtime on `onnx` with `inputs` (already normalized, named in graph order).
pub fn run(
    onnx: &[u8],
    names: &[&str],
    inputs: &[Tensor],
    threads: usize,
    iterations: usize,
) -> Result<OrtResult> {
    let pythonpath = ensure_onnxruntime()?;
    let work = tempfile::tempdir()?;
    let script = work.path().join("ort_runner.py");
    std::fs::write(&script, RUNNER)?;
    let model = work.path().join("model.onnx");
    std::fs::write(&model, onnx)?;
    let outs = work.path().join("out");
    std::fs::create_dir(&outs)?;
    let mut cmd = Command::new(python());
    cmd.arg(&script).arg(&model);
    for (ix, (name, t)) in names.iter().zip(inputs).enumerate() {
        let path = work.path().join(format!("in{ix}.npy"));
        std::fs::write(&path, edge_runtime::npy::write(t))?;
        cmd.arg("--feed").arg(format!("{name}={}", path.display()));
    }
    cmd.args(["--threads", &threads.to_string()])
        .args(["--iterations", &iterations.to_string()])
        .arg("--save-outputs")
        .arg(&outs);
    if let Some(p) = &pythonpath {
        cmd.env("PYTHONPATH", p);
    }
    let out = cmd.output().context("cannot run the ONNX Runtime helper")?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        let last = err
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("");
        bail!("ONNX Runtime failed on this model: {last}");
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    let v: serde_json::Value = stdout
        .lines()
        .rev()
        .find_map(|l| serde_json::from_str(l).ok())
        .context("the ONNX Runtime helper printed no JSON")?;
    let f = |k: &str| {
        v[k].as_f64()
            .with_context(|| format!("helper JSON lacks {k}"))
    };
    let output_names: Vec<String> = v["outputs"]
        .as_array()
        .context("helper JSON lacks outputs")?
        .iter()
        .filter_map(|n| n.as_str().map(String::from))
        .collect();
    let outputs = (0..output_names.len())
        .map(|i| {
            let p = outs.join(format!("{i}.npy"));
            let file = std::fs::File::open(&p).with_context(|| format!("{}", p.display()))?;
            edge_runtime::npy::read(std::io::BufReader::new(file), 1 << 32)
                .map_err(|e| anyhow::anyhow!("ONNX Runtime output {i}: {e}"))
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(OrtResult {
        runtime: v["runtime"].as_str().unwrap_or("onnxruntime").to_string(),
        load_ms: f("load_ms")?,
        p50_ms: f("p50_ms")?,
        p90_ms: f("p90_ms")?,
        peak_rss_mib: f("peak_rss_mib")?,
        output_names,
        outputs,
    })
}

/// Largest |ours − ORT| over every output both produce (matched by name, else by position);
/// shapes must agree. NaN in either makes the answer NaN (reported, not hidden).
pub fn max_abs_diff(
    our_names: &[String],
    ours: &[Tensor],
    ort_names: &[String],
    theirs: &[Tensor],
) -> Result<f64> {
    let mut worst = 0f64;
    for (ix, (name, a)) in our_names.iter().zip(ours).enumerate() {
        let b = match ort_names.iter().position(|n| n == name) {
            Some(j) => &theirs[j],
            None => theirs
                .get(ix)
                .with_context(|| format!("ONNX Runtime has no output '{name}'"))?,
        };
        let (sa, sb) = (&a.shape, &b.shape);
        if sa.iter().product::<usize>() != sb.iter().product::<usize>() {
            bail!("output '{name}': shape {sa:?} here, {sb:?} in ONNX Runtime");
        }
        for (x, y) in a.to_f64_vec().into_iter().zip(b.to_f64_vec()) {
            let d = (x - y).abs();
            if d.is_nan() {
                if x.is_nan() != y.is_nan() {
                    return Ok(f64::NAN);
                }
            } else if d > worst {
                worst = d;
            }
        }
    }
    Ok(worst)
}
