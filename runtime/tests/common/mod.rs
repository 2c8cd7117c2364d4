//! Shared test fixtures: keys, trust roots and bundles made fresh for each test (no private key is
//! committed), and paths to the sample models.
#![allow(dead_code)]

use std::path::PathBuf;

use edge_pack::pack::{pack, Calibration, PackSpec};
use edge_runtime::bundle::{self, Limits, Manifest};
use edge_runtime::engine::{EngineKind, EngineOptions};
use edge_runtime::trust::{self, RootAnchor, TrustRoot, TrustSpec};
use edge_runtime::{npy, LoadOptions, Model, SigningKey, Tensor};

pub fn models() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../models")
}

pub fn read_npy(rel: &str) -> Tensor {
    npy::read(std::fs::File::open(models().join(rel)).unwrap(), 1 << 30).unwrap()
}

pub fn key() -> SigningKey {
    edge_runtime::keys::generate().unwrap()
}

/// A trust root over `signers` with `threshold`, expiring at `expires`.
pub fn trust_with(
    root: &SigningKey,
    signers: &[&SigningKey],
    threshold: u8,
    expires: u64,
) -> (Vec<u8>, TrustRoot) {
    let spec = TrustSpec {
        version: 1,
        created: 0,
        expires,
        signers: signers
            .iter()
            .enumerate()
            .map(|(i, k)| (format!("s{i}"), k.verifying_key()))
            .collect(),
        threshold,
        director: None,
    };
    let doc = trust::create(&spec, root, None).unwrap();
    let t = TrustRoot::from_bytes(&doc, RootAnchor::Pinned(root.verifying_key())).unwrap();
    (doc, t)
}

pub fn spec(model: &str) -> PackSpec {
    toml::from_str(&std::fs::read_to_string(models().join(model).join("spec.toml")).unwrap())
        .unwrap()
}

pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Packs a sample model with its calibration data.
pub fn pack_model(model: &str, keys: &[SigningKey]) -> Vec<u8> {
    let onnx = std::fs::read(models().join(model).join("model.onnx")).unwrap();
    let inputs = read_npy(&format!("{model}/calib_x.npy"));
    let targets = models()
        .join(model)
        .join("calib_y.npy")
        .exists()
        .then(|| read_npy(&format!("{model}/calib_y.npy")));
    let calibration = Calibration { inputs, targets };
    pack(&onnx, spec(model), Some(&calibration), keys, now())
        .unwrap()
        .0
}

/// A sample model packed, signed by a fresh key and loaded on `kind`.
pub fn load_on(model: &str, kind: EngineKind) -> Model {
    let signer = key();
    let (_, trust) = trust_with(&key(), &[&signer], 1, u64::MAX);
    let bytes = pack_model(model, std::slice::from_ref(&signer));
    let options = LoadOptions {
        engine: EngineOptions {
            kind: Some(kind),
            threads: None,
        },
        ..Default::default()
    };
    Model::load(&bytes, &trust, &options).unwrap()
}

/// The manifest and payload of a bundle (for re-signing altered copies).
pub fn parts(bundle_bytes: &[u8]) -> (Manifest, Vec<u8>) {
    let i = bundle::inspect(bundle_bytes, &Limits::default()).unwrap();
    let payload = bundle_bytes[bundle_bytes.len() - i.payload_len as usize..].to_vec();
    (i.manifest, payload)
}
