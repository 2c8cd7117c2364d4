//! `edgectl run`: one input file through a verified bundle, the answer as JSON.

use std::path::PathBuf;

use anyhow::{bail, Result};
use clap::Args;
use edge_runtime::PredictOptions;

use crate::trust_arg::load_model;
use crate::TrustArgs;

/// Arguments of `edgectl run`.
#[derive(Args)]
pub struct RunArgs {
    /// The bundle.
    bundle: PathBuf,
    #[command(flatten)]
    trust: TrustArgs,
    /// Input file: .npy, .json (nested array, or {"input": …}), .png/.jpg.
    #[arg(long)]
    input: PathBuf,
    /// Labels per classification answer.
    #[arg(long)]
    top_k: Option<usize>,
    /// Also print the raw output tensors.
    #[arg(long)]
    raw: bool,
    /// Intra-op threads.
    #[arg(long)]
    threads: Option<usize>,
    /// Engine: auto, cpu, gpu or cuda (default: the bundle's hint, else cpu).
    #[arg(long)]
    engine: Option<edge_runtime::engine::EngineKind>,
}

/// Runs `edgectl run`.
pub fn run(args: RunArgs) -> Result<()> {
    let model = load_model(
        &args.bundle,
        &args.trust,
        edge_runtime::engine::EngineOptions {
            threads: args.threads,
            kind: args.engine,
        },
    )?;
    if model.manifest().inputs.len() != 1 {
        bail!(
            "`edgectl run` feeds one input file; this model has {} inputs",
            model.manifest().inputs.len()
        );
    }
    let input = crate::input::load(&args.input, &model.manifest().inputs[0])?;
    let response = model.predict_with(
        vec![input],
        &PredictOptions {
            top_k: args.top_k,
            raw: args.raw,
        },
    )?;
    println!("{}", serde_json::to_string_pretty(&response)?);
    Ok(())
}
