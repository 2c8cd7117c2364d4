//! Fixtures for the C ABI tests: a fresh root key, trust root and signed digits bundle per test
//! (no private key is committed), written to a temporary directory as the files a device has.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use edge_fleet_kit::fixtures::Digits;
use edge_runtime::trust::{self, TrustSpec};
use edge_runtime::{npy, SigningKey, Tensor};

pub fn models() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../models")
}

pub fn read_npy(rel: &str) -> Tensor {
    npy::read(std::fs::File::open(models().join(rel)).unwrap(), 1 << 30).unwrap()
}

/// The files a device holds: `digits.efb`, `trust.cbor`, `root.pub`.
pub struct Fleet {
    pub dir: tempfile::TempDir,
    pub bundle: Vec<u8>,
    pub trust: Vec<u8>,
    pub root_pub: String,
    pub other_root_pub: String,
}

impl Fleet {
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

pub fn digits_fleet() -> Fleet {
    let root = edge_runtime::keys::generate().unwrap();
    let signer = edge_runtime::keys::generate().unwrap();
    let spec = TrustSpec {
        version: 1,
        created: 0,
        expires: u64::MAX / 2,
        signers: vec![("release".into(), signer.verifying_key())],
        threshold: 1,
        director: None,
    };
    let trust = trust::create(&spec, &root, None).unwrap();
    let bundle = pack_digits(&signer);
    let root_pub = edge_runtime::keys::public_key_text(&root.verifying_key());
    let other = edge_runtime::keys::generate().unwrap();
    let other_root_pub = edge_runtime::keys::public_key_text(&other.verifying_key());
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, bytes: &[u8]| std::fs::write(dir.path().join(name), bytes).unwrap();
    write("digits.efb", &bundle);
    write("trust.cbor", &trust);
    write("root.pub", root_pub.as_bytes());
    write("other-root.pub", other_root_pub.as_bytes());
    Fleet {
        dir,
        bundle,
        trust,
        root_pub,
        other_root_pub,
    }
}

fn pack_digits(signer: &SigningKey) -> Vec<u8> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    Digits::new().created(now).pack(signer).unwrap()
}

/// Row `i` of the digits test split as a 1x1x8x8 tensor.
pub fn digit(i: usize) -> Tensor {
    read_npy("digits/test_x.npy").rows(i, i + 1)
}

pub fn write_npy(path: &Path, t: &Tensor) {
    std::fs::write(path, npy::write(t)).unwrap();
}
