//! Fixtures shared by the agent's tests, on the fleet kit (`edge-fleet-kit`): a fresh trust root
//! with one signing key (no key is committed), and digits bundles packed from the sample model
//! with spec changes.
#![allow(dead_code)]

pub mod fleet;

use std::path::PathBuf;

use edge_fleet_kit::fixtures::Digits;
use edge_pack::pack::PackSpec;
use edge_runtime::trust::{self, RootAnchor, TrustRoot, TrustSpec};
use edge_runtime::{npy, LoadOptions, Model, SigningKey, Tensor};

pub fn models() -> PathBuf {
    edge_fleet_kit::binaries::workspace().join("models")
}

pub fn read_npy(rel: &str) -> Tensor {
    npy::read(std::fs::File::open(models().join(rel)).unwrap(), 1 << 30).unwrap()
}

/// The digits sample model packed with its calibration data and signed by `signer`, after
/// `edit` changed its spec.
pub fn pack_digits(signer: &SigningKey, edit: impl FnOnce(&mut PackSpec)) -> Vec<u8> {
    Digits::new().edit(edit).pack(signer).unwrap()
}

/// A trust root and the key it trusts.
pub struct Signing {
    pub trust: TrustRoot,
    signer: SigningKey,
}

impl Signing {
    pub fn new() -> Signing {
        let root = edge_runtime::keys::generate().unwrap();
        let signer = edge_runtime::keys::generate().unwrap();
        let spec = TrustSpec::ephemeral(&signer.verifying_key());
        let doc = trust::create(&spec, &root, None).unwrap();
        let trust = TrustRoot::from_bytes(&doc, RootAnchor::Pinned(root.verifying_key())).unwrap();
        Signing { trust, signer }
    }

    /// The digits model packed with its calibration data, after `edit` changed its spec.
    pub fn digits(&self, edit: impl FnOnce(&mut PackSpec)) -> Vec<u8> {
        pack_digits(&self.signer, edit)
    }

    /// Verifies, loads and self-tests a bundle.
    pub fn load(&self, bytes: &[u8]) -> Model {
        Model::load(bytes, &self.trust, &LoadOptions::default()).unwrap()
    }
}
