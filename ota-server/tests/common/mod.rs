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

/// The store the server's tests run on: redb at `path` by default; with
/// `EDGEFLEET_TEST_POSTGRES` set to a PostgreSQL URL (`.ci/run` sets it after
/// `scripts/cluster.sh pg`), a schema of that database named after `path`, so every test gets
/// its own records and opening the same path again opens the same ones (the same suite, both
/// stores).
pub fn open_store(path: &std::path::Path) -> std::sync::Arc<dyn ota_server::store::Store> {
    use std::hash::{Hash, Hasher};
    match std::env::var("EDGEFLEET_TEST_POSTGRES") {
        Ok(url) if !url.is_empty() => {
            let mut h = std::collections::hash_map::DefaultHasher::new();
            path.hash(&mut h);
            let schema = format!("test_{:016x}", h.finish());
            std::sync::Arc::new(ota_server::store::PgStore::connect(&url, &schema).unwrap())
        }
        _ => std::sync::Arc::new(ota_server::store::RedbStore::open(path).unwrap()),
    }
}

/// A second handle on the records [`open_store`] opened at `path`, as another server replica
/// has: on PostgreSQL its own connections to the same schema; redb allows one process per
/// file, so there it is the same store shared by two threads.
pub fn open_replica(
    path: &std::path::Path,
    first: &std::sync::Arc<dyn ota_server::store::Store>,
) -> std::sync::Arc<dyn ota_server::store::Store> {
    match std::env::var("EDGEFLEET_TEST_POSTGRES") {
        Ok(url) if !url.is_empty() => open_store(path),
        _ => first.clone(),
    }
}
