//! `edgectl verify` (exit status = validity) and `edgectl inspect` (show the manifest).

use std::path::Path;
use std::process;

use anyhow::{Context, Result};
use edge_runtime::bundle::{self, inspect as inspect_bundle, Limits, Task};
use edge_runtime::engine::{EngineKind, EngineOptions};
use edge_runtime::keys::KeyId;
use edge_runtime::{LoadOptions, Model};

use crate::trust_arg::{load_trust, policy};
use crate::TrustArgs;

/// Verifies; prints `valid: …` and returns, or prints `invalid: <reason>` and exits 1. With an
/// engine, then loads the model on it (self-test included) and prints `engine: <choice>`.
pub fn verify(path: &Path, args: &TrustArgs, engine: Option<EngineKind>) -> Result<()> {
    let trust = load_trust(args)?;
    let file =
        std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    match bundle::verify(std::io::BufReader::new(file), &trust, &policy(args)) {
        Ok(b) => {
            let m = b.manifest();
            let signers: Vec<String> = b.signers().iter().map(KeyId::to_string).collect();
            println!(
                "valid: {} {} {} signed by {}",
                m.name,
                m.version,
                b.digest_text(),
                signers.join(", ")
            );
            if let Some(kind) = engine {
                let options = LoadOptions {
                    verify: policy(args),
                    engine: EngineOptions {
                        kind: Some(kind),
                        threads: None,
                    },
                    ..Default::default()
                };
                let model = Model::from_verified(b, &options)
                    .with_context(|| format!("loading on engine {kind}"))?;
                println!("engine: {}", model.engine_choice().summary());
            }
            Ok(())
        }
        Err(e) => {
            println!("invalid: {e}");
            process::exit(1);
        }
    }
}

/// Prints the manifest, marked unverified.
pub fn inspect(path: &Path, json: bool) -> Result<()> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let i = inspect_bundle(&bytes, &Limits::default())?;
    let m = &i.manifest;
    if json {
        let value = serde_json::json!({
            "verified": false,
            "bundle": format!("sha256:{}", hex::encode(i.digest)),
            "signers": i.signers.iter().map(|k| k.to_string()).collect::<Vec<_>>(),
            "manifest": m,
        });
        println!("{}", serde_json::to_string_pretty(&value)?);
        return Ok(());
    }
    println!("(unverified: run `edgectl verify` to check signatures)");
    println!("bundle       sha256:{}", hex::encode(i.digest));
    println!("model        {} {}", m.name, m.version);
    println!("description  {}", m.description);
    println!("created      {} (unix)", m.created);
    if let Some(e) = m.expires {
        println!("expires      {e} (unix)");
    }
    if let Some(f) = &m.min_version {
        println!("floor        {f}");
    }
    println!(
        "payload      {} {} bytes sha256:{}",
        m.payload.format,
        m.payload.size,
        hex::encode(&m.payload.sha256[..])
    );
    if let Some(source) = &m.payload.source_sha256 {
        println!(
            "source       onnx sha256:{} (optimized at pack time)",
            hex::encode(&source[..])
        );
    }
    println!(
        "signers      {}",
        i.signers
            .iter()
            .map(|k| k.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!(
        "engine       {} threads {}",
        m.engine.engine.as_deref().unwrap_or("auto"),
        m.engine
            .threads
            .map(|t| t.to_string())
            .unwrap_or("default".into())
    );
    for input in &m.inputs {
        println!(
            "input        {} {} {} {:?} nan={:?} normalize={:?}",
            input.name,
            input.dtype,
            input.shape_text(),
            input.layout,
            input.nan_policy,
            input.normalize
        );
    }
    match &m.output.task {
        Task::Classification {
            labels,
            softmax,
            top_k,
        } => {
            println!(
                "output       {} classification, {} labels, softmax={softmax}, top_k={top_k}",
                m.output.name,
                labels.len()
            )
        }
        Task::Regression {
            coverage,
            half_width,
            ..
        } => println!(
            "output       {} regression, interval coverage {coverage:?} half-width {half_width:?}",
            m.output.name
        ),
        Task::Raw => println!("output       {} raw", m.output.name),
    }
    println!(
        "self-test    {} vector(s), tolerance {}",
        m.self_test.vectors.len(),
        m.self_test.tolerance
    );
    println!(
        "reference    {} row(s), {} feature histogram(s)",
        m.reference.rows,
        m.reference.features.len()
    );
    if let Some(q) = &m.quantization {
        println!("quantization {q}");
    }
    Ok(())
}
