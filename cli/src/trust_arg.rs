//! Loading the trust root and a bundle as a `Model` from command-line arguments.

use std::path::Path;

use anyhow::{Context, Result};
use edge_runtime::bundle::{Expiry, VerifyPolicy};
use edge_runtime::engine::EngineOptions;
use edge_runtime::trust::{RootAnchor, TrustRoot};
use edge_runtime::{LoadOptions, Model};

use crate::TrustArgs;

/// Reads and verifies the trust root named by the arguments.
pub fn load_trust(args: &TrustArgs) -> Result<TrustRoot> {
    let bytes = std::fs::read(&args.trust)
        .with_context(|| format!("cannot read trust root {}", args.trust.display()))?;
    let anchor = match &args.root {
        Some(p) => RootAnchor::Pinned(edge_runtime::keys::read_public_key(p)?),
        None => RootAnchor::SelfSigned,
    };
    TrustRoot::from_bytes(&bytes, anchor)
        .with_context(|| format!("trust root {} rejected", args.trust.display()))
}

/// The verification policy the arguments ask for.
pub fn policy(args: &TrustArgs) -> VerifyPolicy {
    VerifyPolicy {
        expiry: if args.ignore_expiry {
            Expiry::Ignore
        } else {
            Expiry::Enforce
        },
        ..Default::default()
    }
}

/// Verifies and loads a bundle on the engine `engine` asks for (and says on stderr when the
/// engine that runs it is not the CPU, or differs from the one asked for).
pub fn load_model(bundle: &Path, args: &TrustArgs, engine: EngineOptions) -> Result<Model> {
    let trust = load_trust(args)?;
    let bytes = std::fs::read(bundle)
        .with_context(|| format!("cannot read bundle {}", bundle.display()))?;
    let options = LoadOptions {
        verify: policy(args),
        engine,
        ..Default::default()
    };
    let model = Model::load(&bytes, &trust, &options)
        .with_context(|| format!("cannot load {}", bundle.display()))?;
    let choice = model.engine_choice();
    if choice.is_notable() {
        eprintln!("engine: {}", choice.summary());
    }
    Ok(model)
}
