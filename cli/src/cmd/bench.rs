//! `edgectl bench`: load time (verify + optimize + self-test), first inference, latency
//! percentiles over many runs, throughput and peak RSS — the numbers users compare runtimes by.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Result};
use clap::Args;
use edge_runtime::Tensor;

use crate::trust_arg::load_model;
use crate::TrustArgs;

/// Arguments of `edgectl bench`.
#[derive(Args)]
pub struct BenchArgs {
    /// The bundle.
    bundle: PathBuf,
    #[command(flatten)]
    trust: TrustArgs,
    /// Intra-op threads.
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Timed runs (after the first).
    #[arg(long, default_value_t = 100)]
    iterations: usize,
    /// Input file (default: the bundle's first self-test input).
    #[arg(long)]
    input: Option<PathBuf>,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

/// Peak resident set size of this process in KiB (Linux), if known.
pub fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

fn percentile(sorted: &[f64], q: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * q).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// Runs `edgectl bench`.
pub fn run(args: BenchArgs) -> Result<()> {
    if args.iterations == 0 {
        bail!("--iterations must be at least 1");
    }
    let t0 = Instant::now();
    let model = load_model(&args.bundle, &args.trust, Some(args.threads))?;
    let load_ms = t0.elapsed().as_secs_f64() * 1e3;
    let input: Tensor = match &args.input {
        Some(p) => crate::input::load(p, &model.manifest().inputs[0])?,
        None => match model
            .manifest()
            .self_test
            .vectors
            .first()
            .and_then(|v| v.inputs.first())
            .and_then(|t| t.to_tensor())
        {
            Some(t) => t,
            None => bail!("the bundle has no self-test input to bench with; pass --input"),
        },
    };
    let t1 = Instant::now();
    model.run(vec![input.clone()])?;
    let first_ms = t1.elapsed().as_secs_f64() * 1e3;
    let bar = indicatif::ProgressBar::new(args.iterations as u64);
    let mut lat = Vec::with_capacity(args.iterations);
    let total = Instant::now();
    for _ in 0..args.iterations {
        let t = Instant::now();
        model.predict(vec![input.clone()])?;
        lat.push(t.elapsed().as_secs_f64() * 1e3);
        bar.inc(1);
    }
    let total_s = total.elapsed().as_secs_f64();
    bar.finish_and_clear();
    lat.sort_by(f64::total_cmp);
    let batch = input.shape.first().copied().unwrap_or(1);
    let report = serde_json::json!({
        "model": model.model_ref().model,
        "version": model.model_ref().version,
        "engine": model.engine_name(),
        "threads": args.threads,
        "batch": batch,
        "iterations": args.iterations,
        "load_ms": load_ms,
        "first_inference_ms": first_ms,
        "p50_ms": percentile(&lat, 0.5),
        "p90_ms": percentile(&lat, 0.9),
        "p99_ms": percentile(&lat, 0.99),
        "throughput_per_s": (args.iterations * batch) as f64 / total_s,
        "peak_rss_mib": peak_rss_kib().map(|k| k as f64 / 1024.0),
    });
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        for (k, v) in report.as_object().into_iter().flatten() {
            println!("{k:<20} {v}");
        }
    }
    Ok(())
}
