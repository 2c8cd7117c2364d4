//! A fleet's keys made fresh (no private key is ever committed): the root that signs the trust
//! document, the key that signs bundles, the director that signs desired states, and the files
//! a server and its agents read.

use std::path::{Path, PathBuf};

use anyhow::Result;
use edge_runtime::trust::{self, TrustSpec};
use edge_runtime::{SigningKey, VerifyingKey};

/// Fresh keys and their files in a directory.
pub struct FleetKeys {
    /// The root key's public half (agents pin it).
    pub root: VerifyingKey,
    /// The model-signing key the trust document lists.
    pub signer: SigningKey,
    /// The director key (desired states).
    pub director: SigningKey,
    /// `trust.cbor`: the trust document.
    pub trust: PathBuf,
    /// `root.pub`.
    pub root_pub: PathBuf,
    /// `director.key` (for `ota-server init`).
    pub director_key: PathBuf,
}

impl FleetKeys {
    /// New keys; their files written in `dir`.
    pub fn create(dir: &Path) -> Result<FleetKeys> {
        let root = edge_runtime::keys::generate()?;
        let signer = edge_runtime::keys::generate()?;
        let director = edge_runtime::keys::generate()?;
        let mut spec = TrustSpec::ephemeral(&signer.verifying_key());
        spec.director = Some(("director".into(), director.verifying_key()));
        std::fs::create_dir_all(dir)?;
        let trust = dir.join("trust.cbor");
        std::fs::write(&trust, trust::create(&spec, &root, None)?)?;
        let root_pub = dir.join("root.pub");
        std::fs::write(
            &root_pub,
            edge_runtime::keys::public_key_text(&root.verifying_key()),
        )?;
        let director_key = dir.join("director.key");
        std::fs::write(
            &director_key,
            edge_runtime::keys::secret_key_text(&director),
        )?;
        Ok(FleetKeys {
            root: root.verifying_key(),
            signer,
            director,
            trust,
            root_pub,
            director_key,
        })
    }
}
