//! Fixtures shared by the server's tests: the digits sample model (the fleet kit's) packed and
//! signed with a given key; a device record.
#![allow(dead_code)]

use edge_bundle::SigningKey;
use edge_fleet_kit::fixtures::Digits;

/// The digits model at `version`, signed by `signer`.
pub fn digits(signer: &SigningKey, version: &str) -> Vec<u8> {
    Digits::new().version(version).pack(signer).unwrap()
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
