//! `edgectl eval`: accuracy (overall and per class) of a classification bundle on labelled data;
//! MAE, RMSE and interval coverage for a regression bundle.

use std::path::PathBuf;

use anyhow::{bail, Result};
use clap::Args;
use edge_protocol::Prediction;

use crate::trust_arg::load_model;
use crate::TrustArgs;

/// Arguments of `edgectl eval`.
#[derive(Args)]
pub struct EvalArgs {
    /// The bundle.
    bundle: PathBuf,
    #[command(flatten)]
    trust: TrustArgs,
    /// Inputs (.npy, batch first).
    #[arg(long)]
    inputs: PathBuf,
    /// Labels (class indices) or regression targets (.npy).
    #[arg(long)]
    labels: PathBuf,
    /// Print JSON.
    #[arg(long)]
    json: bool,
    /// Intra-op threads.
    #[arg(long)]
    threads: Option<usize>,
    /// Engine: auto, cpu, gpu or cuda (default: the bundle's hint, else cpu).
    #[arg(long)]
    engine: Option<edge_runtime::engine::EngineKind>,
}

/// Runs `edgectl eval`.
pub fn run(args: EvalArgs) -> Result<()> {
    let model = load_model(
        &args.bundle,
        &args.trust,
        edge_runtime::engine::EngineOptions {
            threads: args.threads,
            kind: args.engine,
        },
    )?;
    let x = crate::input::load_npy(&args.inputs)?;
    let y = crate::input::load_npy(&args.labels)?.to_f64_vec();
    let rows = x.shape.first().copied().unwrap_or(0);
    if rows != y.len() {
        bail!(
            "{} has {rows} rows but {} has {} labels",
            args.inputs.display(),
            args.labels.display(),
            y.len()
        );
    }
    let spec = &model.manifest().inputs[0];
    let step = spec.max_batch().max(1);
    let bar = indicatif::ProgressBar::new(rows as u64);
    let mut predictions = Vec::with_capacity(rows);
    let mut start = 0;
    while start < rows {
        let end = (start + step).min(rows);
        predictions.extend(model.predict(vec![x.rows(start, end)])?.results);
        bar.set_position(end as u64);
        start = end;
    }
    bar.finish_and_clear();
    let report = match predictions.first() {
        Some(Prediction::Classification { .. }) => {
            classification(&predictions, &y, model.manifest())
        }
        Some(Prediction::Regression { .. }) => regression(&predictions, &y),
        _ => bail!("eval needs a classification or regression model"),
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        for (k, v) in report.as_object().into_iter().flatten() {
            println!("{k:<18} {v}");
        }
    }
    Ok(())
}

fn classification(
    predictions: &[Prediction],
    y: &[f64],
    manifest: &edge_runtime::bundle::Manifest,
) -> serde_json::Value {
    let labels = match &manifest.output.task {
        edge_runtime::bundle::Task::Classification { labels, .. } => labels.clone(),
        _ => Vec::new(),
    };
    let classes = labels
        .len()
        .max(y.iter().map(|&v| v as usize + 1).max().unwrap_or(0));
    let (mut correct, mut per_total, mut per_correct) =
        (0usize, vec![0usize; classes], vec![0usize; classes]);
    for (p, &truth) in predictions.iter().zip(y) {
        if let Prediction::Classification { class_index, .. } = p {
            let t = truth as usize;
            per_total[t] += 1;
            if *class_index == t {
                correct += 1;
                per_correct[t] += 1;
            }
        }
    }
    let per_class: serde_json::Map<String, serde_json::Value> = (0..classes)
        .filter(|&c| per_total[c] > 0)
        .map(|c| {
            let name = labels.get(c).cloned().unwrap_or_else(|| c.to_string());
            (
                name,
                serde_json::json!(
                    (per_correct[c] as f64 / per_total[c] as f64 * 1e4).round() / 1e4
                ),
            )
        })
        .collect();
    serde_json::json!({
        "rows": y.len(),
        "accuracy": correct as f64 / y.len().max(1) as f64,
        "per_class_accuracy": per_class,
    })
}

fn regression(predictions: &[Prediction], y: &[f64]) -> serde_json::Value {
    let (mut abs, mut sq, mut inside, mut with_interval, mut coverage) =
        (0.0, 0.0, 0usize, 0usize, None);
    for (p, &truth) in predictions.iter().zip(y) {
        if let Prediction::Regression { value, interval } = p {
            abs += (value - truth).abs();
            sq += (value - truth).powi(2);
            if let Some(i) = interval {
                with_interval += 1;
                coverage = Some(i.coverage);
                if i.lower <= truth && truth <= i.upper {
                    inside += 1;
                }
            }
        }
    }
    let n = y.len().max(1) as f64;
    serde_json::json!({
        "rows": y.len(),
        "mae": abs / n,
        "rmse": (sq / n).sqrt(),
        "stated_coverage": coverage,
        "empirical_coverage": (with_interval > 0).then(|| inside as f64 / with_interval as f64),
    })
}
