//! Fixtures shared by the server's tests: the digits sample model packed and signed with a
//! given key.
#![allow(dead_code)]

use std::path::PathBuf;

use edge_bundle::SigningKey;
use edge_pack::pack::{pack, Calibration, PackSpec};

pub fn models() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../models")
}

/// The digits model at `version`, signed by `signer`.
pub fn digits(signer: &SigningKey, version: &str) -> Vec<u8> {
    let onnx = std::fs::read(models().join("digits/model.onnx")).unwrap();
    let text = std::fs::read_to_string(models().join("digits/spec.toml")).unwrap();
    let mut spec: PackSpec = toml::from_str(&text).unwrap();
    spec.version = version.into();
    let file = std::fs::File::open(models().join("digits/calib_x.npy")).unwrap();
    let x = edge_bundle::npy::read(file, 1 << 30).unwrap();
    let calibration = Calibration {
        inputs: x,
        targets: None,
    };
    pack(
        &onnx,
        spec,
        Some(&calibration),
        std::slice::from_ref(signer),
        0,
    )
    .unwrap()
    .0
}

/// An enrolled device record with these tags and nothing reported yet.
pub fn device_record(id: &str, tags: &[(&str, &str)]) -> ota_server::devices::DeviceRecord {
    ota_server::devices::DeviceRecord {
        id: id.into(),
        public_key: String::new(),
        tags: tags
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        agent_version: "t".into(),
        enrolled_at: 0,
        last_seen: 0,
        online: true,
        token_hash: String::new(),
        last_seq: 0,
        reported: None,
        messages: 0,
        duplicates: 0,
        requests: 0,
        recent: vec![],
    }
}
