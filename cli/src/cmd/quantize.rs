//! `edgectl quantize`: post-training int8 quantization of an ONNX model (runtime `quantize`),
//! with the size before/after and, given `--eval`, the accuracy (or top-1 agreement) before/after
//! measured through the runtime itself.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::Args;
use edge_pack::pack::PackSpec;
use edge_pack::quantize::{quantize, QuantizeOptions, RangeMethod};
use edge_pack::{onnx_graph, pack};
use edge_runtime::bundle::InputSpec;
use edge_runtime::{LoadOptions, Model, Tensor, TensorData};

/// Arguments of `edgectl quantize`.
#[derive(Args)]
pub struct QuantizeArgs {
    /// The float ONNX model.
    model: PathBuf,
    /// Output ONNX model.
    #[arg(long)]
    out: PathBuf,
    /// Calibration inputs (.npy, batch first) for the activation ranges.
    #[arg(long)]
    calibration: Option<PathBuf>,
    /// The bundle spec whose input normalization applies to --calibration and --eval rows (they
    /// are raw inputs then, as `edgectl pack` takes them); without it rows go in as they are.
    #[arg(long)]
    spec: Option<PathBuf>,
    /// Calibration rows used (the first N).
    #[arg(long, default_value_t = 64)]
    rows: usize,
    /// Quantize weights only (int8 storage, float compute; no calibration needed).
    #[arg(long)]
    weights_only: bool,
    /// Activation range: `minmax`, or a percentile such as `99.99`.
    #[arg(long, default_value = "minmax")]
    range: String,
    /// Evaluation inputs (.npy) [and integer labels (.npy)]: accuracy before/after, or the top-1
    /// agreement of the two models without labels.
    #[arg(long, num_args = 1..=2, value_names = ["X", "Y"])]
    eval: Vec<PathBuf>,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

fn input_spec(args: &QuantizeArgs) -> Result<Option<InputSpec>> {
    let Some(p) = &args.spec else { return Ok(None) };
    let text =
        std::fs::read_to_string(p).with_context(|| format!("cannot read spec {}", p.display()))?;
    let spec: PackSpec =
        toml::from_str(&text).with_context(|| format!("spec {} is invalid", p.display()))?;
    Ok(spec.input.or_else(|| spec.inputs.first().cloned()))
}

/// The rows of an .npy as single-row f32 tensors, normalized by `spec`.
fn rows(path: &std::path::Path, limit: usize, spec: Option<&InputSpec>) -> Result<Vec<Tensor>> {
    let all = crate::input::load_npy(path)?;
    let n = *all.shape.first().context("the .npy has no batch axis")?;
    let mut out = Vec::with_capacity(n.min(limit));
    for r in 0..n.min(limit) {
        let row = all.rows(r, r + 1);
        let values: Vec<f32> = row.to_f64_vec().into_iter().map(|v| v as f32).collect();
        let mut t = Tensor {
            shape: row.shape.clone(),
            data: TensorData::F32(values),
        };
        if let Some(s) = spec {
            edge_runtime::preprocess::normalize(s, &mut t);
        }
        out.push(t);
    }
    Ok(out)
}

/// A model (float or quantized) through the runtime, with its first input shaped like a row.
fn load(onnx: &[u8], row_shape: &[usize]) -> Result<Model> {
    let itf = onnx_graph::interface(onnx).map_err(anyhow::Error::msg)?;
    let name = itf.inputs.first().context("no graph input")?.name.clone();
    let shape = vec![(name, row_shape.iter().map(|d| *d as u64).collect())];
    let (bundle, trust) =
        pack::throwaway_bundle_for_onnx(onnx, "eval", &shape, 0, pack::PayloadChoice::Auto)?;
    Ok(Model::load(&bundle, &trust, &LoadOptions::default())?)
}

fn argmax(t: &Tensor) -> usize {
    t.to_f64_vec()
        .iter()
        .enumerate()
        .max_by(|a, b| a.1.total_cmp(b.1))
        .map(|(i, _)| i)
        .unwrap_or(0)
}

fn evaluate(
    args: &QuantizeArgs,
    spec: Option<&InputSpec>,
    float: &[u8],
    int8: &[u8],
) -> Result<serde_json::Value> {
    let x = rows(&args.eval[0], usize::MAX, spec)?;
    let first = x.first().context("no evaluation rows")?;
    let (a, b) = (load(float, &first.shape)?, load(int8, &first.shape)?);
    let labels: Option<Vec<i64>> = match args.eval.get(1) {
        Some(p) => Some(
            crate::input::load_npy(p)?
                .to_f64_vec()
                .into_iter()
                .map(|v| v as i64)
                .collect(),
        ),
        None => None,
    };
    if let Some(l) = &labels {
        if l.len() != x.len() {
            bail!("{} labels for {} evaluation rows", l.len(), x.len());
        }
    }
    let (mut agree, mut right_a, mut right_b, mut max_diff) = (0usize, 0usize, 0usize, 0f64);
    // signal and error energy of the first output: SQNR in dB, the usual quantization metric
    let (mut signal, mut noise) = (0f64, 0f64);
    for (i, row) in x.iter().enumerate() {
        let ya = &a.run(vec![row.clone()])?[0];
        let yb = &b.run(vec![row.clone()])?[0];
        let (pa, pb) = (argmax(ya), argmax(yb));
        agree += (pa == pb) as usize;
        if let Some(l) = &labels {
            right_a += (pa as i64 == l[i]) as usize;
            right_b += (pb as i64 == l[i]) as usize;
        }
        for (u, v) in ya.to_f64_vec().iter().zip(yb.to_f64_vec()) {
            max_diff = max_diff.max((u - v).abs());
            signal += u * u;
            noise += (u - v) * (u - v);
        }
    }
    let n = x.len() as f64;
    let mut v = serde_json::json!({
        "rows": x.len(),
        "top1_agreement": agree as f64 / n,
        "max_abs_diff": max_diff,
        "sqnr_db": if noise > 0.0 { 10.0 * (signal / noise).log10() } else { f64::INFINITY },
    });
    if labels.is_some() {
        v["accuracy_float"] = (right_a as f64 / n).into();
        v["accuracy_int8"] = (right_b as f64 / n).into();
    }
    Ok(v)
}

/// Runs `edgectl quantize`.
pub fn run(args: QuantizeArgs) -> Result<()> {
    let onnx = std::fs::read(&args.model)
        .with_context(|| format!("cannot read model {}", args.model.display()))?;
    let range = match args.range.as_str() {
        "minmax" => RangeMethod::MinMax,
        p => match p.parse::<f64>() {
            Ok(v) if v > 50.0 && v <= 100.0 => RangeMethod::Percentile(v),
            _ => bail!("--range is `minmax` or a percentile in (50, 100], not '{p}'"),
        },
    };
    let spec = input_spec(&args)?;
    let calibration = match (&args.calibration, args.weights_only) {
        (Some(p), _) => rows(p, args.rows.max(1), spec.as_ref())?
            .into_iter()
            .map(|t| vec![t])
            .collect(),
        (None, true) => Vec::new(),
        (None, false) => bail!("give --calibration X.npy, or --weights-only"),
    };
    let options = QuantizeOptions {
        weights_only: args.weights_only,
        range,
    };
    let (bytes, report) = quantize(&onnx, &calibration, &options)
        .map_err(|e| anyhow::anyhow!("cannot quantize {}: {e}", args.model.display()))?;
    let dir = match args.out.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => std::path::Path::new("."),
    };
    let file = args
        .out
        .file_name()
        .and_then(|f| f.to_str())
        .context("--out needs a file name")?;
    edge_runtime::bundle::write_durably(dir, file, &bytes)
        .with_context(|| format!("cannot write {}", args.out.display()))?;
    let mut out = serde_json::to_value(&report)?;
    out["out"] = args.out.display().to_string().into();
    if !args.eval.is_empty() {
        out["eval"] = evaluate(&args, spec.as_ref(), &onnx, &bytes)?;
    }
    if args.json {
        println!("{}", serde_json::to_string(&out)?);
    } else {
        println!(
            "{}: {} weight tensors int8{}, {} activations quantized; {:.2} MB -> {:.2} MB",
            args.out.display(),
            report.weights_quantized,
            if report.per_channel {
                " per channel"
            } else {
                " per tensor"
            },
            report.activations_quantized,
            report.bytes_before as f64 / 1e6,
            report.bytes_after as f64 / 1e6
        );
        for s in &report.skipped {
            println!("  left in float: {s}");
        }
        if let Some(e) = out.get("eval") {
            println!("  eval: {e}");
        }
    }
    Ok(())
}
