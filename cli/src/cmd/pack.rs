//! `edgectl pack`: ONNX + spec + calibration data → signed bundle.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;
use edge_pack::pack::{pack, Calibration, PackSpec, PayloadChoice};
use edge_runtime::keys;

/// Arguments of `edgectl pack`.
#[derive(Args)]
pub struct PackArgs {
    /// The ONNX model.
    model: PathBuf,
    /// The bundle spec (TOML): name, version, input and output specs.
    #[arg(long)]
    spec: PathBuf,
    /// A model-signing secret key (repeat to reach a threshold).
    #[arg(long = "key", required = true)]
    keys: Vec<PathBuf>,
    /// Output bundle.
    #[arg(long)]
    out: PathBuf,
    /// Representative raw inputs (.npy, batch first): self-test vectors and reference statistics
    /// come from them.
    #[arg(long)]
    calibration: Option<PathBuf>,
    /// True targets for the calibration inputs (.npy), for a regression model's interval.
    #[arg(long)]
    calibration_targets: Option<PathBuf>,
    /// Override the spec's version.
    #[arg(long)]
    version: Option<String>,
    /// The payload: `auto` (default: the optimized NNEF payload devices load without the ONNX
    /// front end, else the ONNX file with a note why), `nnef` (or fail), `onnx` (the file as
    /// given; devices need the agent's `onnx` feature). Overrides the spec's `payload`.
    #[arg(long, value_parser = |s: &str| s.parse::<PayloadChoice>())]
    payload: Option<PayloadChoice>,
}

/// Runs `edgectl pack`.
pub fn run(args: PackArgs) -> Result<()> {
    let onnx = std::fs::read(&args.model)
        .with_context(|| format!("cannot read model {}", args.model.display()))?;
    let spec_text = std::fs::read_to_string(&args.spec)
        .with_context(|| format!("cannot read spec {}", args.spec.display()))?;
    let mut spec: PackSpec = toml::from_str(&spec_text)
        .with_context(|| format!("spec {} is invalid", args.spec.display()))?;
    if let Some(v) = args.version {
        spec.version = v;
    }
    if let Some(p) = args.payload {
        spec.payload = p;
    }
    let keys = args
        .keys
        .iter()
        .map(|p| keys::read_secret_key(p))
        .collect::<Result<Vec<_>, _>>()?;
    let calibration = match &args.calibration {
        Some(p) => Some(Calibration {
            inputs: crate::input::load_npy(p)?,
            targets: args
                .calibration_targets
                .as_deref()
                .map(crate::input::load_npy)
                .transpose()?,
        }),
        None => None,
    };
    let spinner = indicatif::ProgressBar::new_spinner()
        .with_message(format!("packing {} {}", spec.name, spec.version));
    spinner.enable_steady_tick(std::time::Duration::from_millis(120));
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs();
    let (name, version) = (spec.name.clone(), spec.version.clone());
    let result = pack(&onnx, spec, calibration.as_ref(), &keys, now);
    spinner.finish_and_clear();
    let (bytes, report) = result.context("packing failed")?;
    std::fs::write(&args.out, &bytes)
        .with_context(|| format!("cannot write {}", args.out.display()))?;
    println!(
        "{}: {name} {version}, {} bytes ({} payload), {} signature(s), {} self-test vector(s), {} calibration row(s), {} feature histogram(s){}",
        args.out.display(),
        bytes.len(),
        report.payload_format,
        keys.len(),
        report.self_test_vectors,
        report.calibration_rows,
        report.feature_histograms,
        match (report.interval_half_width, report.calibration_coverage) {
            (Some(h), Some(c)) => format!(", interval ±{h:.4} (calibration coverage {c:.3})"),
            _ => String::new(),
        }
    );
    for note in [&report.payload_note, &report.tolerance_note]
        .into_iter()
        .flatten()
    {
        eprintln!("note: {note}");
    }
    if calibration.is_none() {
        eprintln!("note: no --calibration given: self-test vectors use synthetic inputs and the bundle has no reference statistics (no drift detection on devices)");
    }
    Ok(())
}
