//! `edgectl trust init|show`: make the fleet trust root, and print one.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::Subcommand;
use edge_runtime::keys::{self, KeyId};
use edge_runtime::trust::{self, RootAnchor, TrustRoot, TrustSpec, VerifyingKey};

/// `edgectl trust …`
#[derive(Subcommand)]
pub enum TrustCommand {
    /// Create and sign a trust root document.
    Init {
        /// The root secret key (keep it offline).
        #[arg(long)]
        root_key: PathBuf,
        /// A model-signing public key (repeat for several).
        #[arg(long = "signer", required = true)]
        signers: Vec<PathBuf>,
        /// Signatures a bundle needs, from distinct signing keys.
        #[arg(long, default_value_t = 1)]
        threshold: u8,
        /// The director public key (signs desired states).
        #[arg(long)]
        director: Option<PathBuf>,
        /// Days until the document expires.
        #[arg(long, default_value_t = 365)]
        expires_days: u64,
        /// Document version (raise it to rotate keys).
        #[arg(long, default_value_t = 1)]
        version: u32,
        /// When rotating to a new root key: the current root secret key, which must sign too.
        #[arg(long)]
        previous_root_key: Option<PathBuf>,
        /// Output file.
        #[arg(long)]
        out: PathBuf,
    },
    /// Print a trust root document.
    Show {
        /// The document.
        trust: PathBuf,
    },
}

fn named(path: &Path) -> Result<(String, VerifyingKey)> {
    let name = path
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or("key")
        .to_string();
    Ok((name, keys::read_public_key(path)?))
}

/// Runs a trust subcommand.
pub fn run(command: TrustCommand) -> Result<()> {
    match command {
        TrustCommand::Init {
            root_key,
            signers,
            threshold,
            director,
            expires_days,
            version,
            previous_root_key,
            out,
        } => {
            let root = keys::read_secret_key(&root_key)?;
            let previous = previous_root_key
                .as_deref()
                .map(keys::read_secret_key)
                .transpose()?;
            if expires_days == 0 {
                bail!("--expires-days must be at least 1");
            }
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)?
                .as_secs();
            let spec = TrustSpec {
                version,
                created: now,
                expires: now + expires_days * 86_400,
                signers: signers.iter().map(|p| named(p)).collect::<Result<_>>()?,
                threshold,
                director: director.as_deref().map(named).transpose()?,
            };
            let doc = trust::create(&spec, &root, previous.as_ref())?;
            std::fs::write(&out, &doc)
                .with_context(|| format!("cannot write {}", out.display()))?;
            println!(
                "{}: version {version}, {} signing key(s), threshold {threshold}, root {}, expires in {expires_days} days",
                out.display(),
                spec.signers.len(),
                KeyId::of(&root.verifying_key())
            );
            Ok(())
        }
        TrustCommand::Show { trust } => {
            let bytes = std::fs::read(&trust)
                .with_context(|| format!("cannot read {}", trust.display()))?;
            let t = TrustRoot::from_bytes(&bytes, RootAnchor::SelfSigned)?;
            let b = t.body();
            println!(
                "version   {}\nroot      {}\nexpires   {} (unix)\nthreshold {}",
                b.version,
                KeyId::of(t.root()),
                b.expires,
                b.threshold
            );
            for (id, name, _) in t.signers() {
                println!("signer    {id} {name}");
            }
            if let Some(d) = t.director() {
                println!("director  {}", KeyId::of(d));
            }
            Ok(())
        }
    }
}
