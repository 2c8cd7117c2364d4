//! Devices: enrollment and the registry. A device enrolls with an enrollment token (created by
//! an admin) or with a public key an admin pre-authorized, and always with a proof that it holds
//! the key (`edge_protocol::enroll::proof_message` signed by it). It receives a device token
//! (stored hashed) that authenticates it on MQTT and for artifact downloads. Re-enrolling with
//! the same key rotates the token; the same id with another key is refused.

use std::collections::BTreeMap;

use edge_bundle::VerifyingKey;
use edge_protocol::enroll::{proof_message, EnrollRequest, EnrollResponse};
use edge_protocol::topics::validate_device_id;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

pub use edge_protocol::rest::{DeviceMinute, Reported, ReportedModel};

use crate::store::{put, Records, Store, StoreError, Table, Write};

/// A registered device.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DeviceRecord {
    /// Id.
    pub id: String,
    /// ed25519 public key, hex.
    pub public_key: String,
    /// Tags.
    pub tags: BTreeMap<String, String>,
    /// Agent version at enrollment or last hello.
    pub agent_version: String,
    /// Enrollment time, unix seconds.
    pub enrolled_at: u64,
    /// Last message, unix seconds (0: never).
    pub last_seen: u64,
    /// Connected now (hello / MQTT will).
    pub online: bool,
    /// sha256 of the device token, hex.
    pub token_hash: String,
    /// Highest message sequence number accepted from it (replay guard).
    pub last_seq: u64,
    /// What it last said it runs (from its hello).
    #[serde(default)]
    pub reported: Option<Reported>,
    /// Signed messages accepted from it, ever. With nothing lost and nothing counted twice this
    /// equals `last_seq` (the agent numbers its messages 1, 2, 3, ... without gaps).
    #[serde(default)]
    pub messages: u64,
    /// Redeliveries refused by the replay guard (at-least-once duplicates), ever.
    #[serde(default)]
    pub duplicates: u64,
    /// Predictions counted in the telemetry windows accepted from it, ever.
    #[serde(default)]
    pub requests: u64,
    /// Its own telemetry per minute, the last [`RECENT_MINUTES`] minutes it reported (the
    /// dashboard's device charts; the fleet series are per version and rollout phase).
    #[serde(default)]
    pub recent: Vec<DeviceMinute>,
}

/// Minutes of per-device telemetry kept in its record.
pub const RECENT_MINUTES: usize = 30;

impl DeviceRecord {
    /// Adds a telemetry window received at `now` to the device's recent minutes.
    pub fn note_window(&mut self, now: u64, w: &edge_protocol::TelemetryWindow) {
        let t = now - now % 60;
        let p99 = w.latency_ms.quantile(0.99);
        let confidence = w.confidence.as_ref().and_then(|h| h.mean_within(0.0, 1.0));
        let i = match self
            .recent
            .iter()
            .position(|m| m.t == t && m.model == w.model && m.version == w.version)
        {
            Some(i) => i,
            None => {
                self.recent.push(DeviceMinute {
                    t,
                    model: w.model.clone(),
                    version: w.version.clone(),
                    ..DeviceMinute::default()
                });
                self.recent.len() - 1
            }
        };
        let m = &mut self.recent[i];
        let before = m.requests;
        m.requests = m.requests.saturating_add(w.requests);
        m.errors = m.errors.saturating_add(w.errors);
        m.p99_ms = match (m.p99_ms, p99) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        };
        m.mean_confidence = match (m.mean_confidence, confidence) {
            (Some(a), Some(b)) if m.requests > 0 => {
                Some((a * before as f64 + b * w.requests as f64) / m.requests as f64)
            }
            (a, b) => a.or(b),
        };
        // keep the newest minutes only
        let cutoff = t.saturating_sub(60 * (RECENT_MINUTES as u64 - 1));
        self.recent.retain(|m| m.t >= cutoff);
    }
}

/// Store key prefixes in the enrollment table.
const ENROLL_TOKEN: &str = "token/";
const PREAUTHORIZED: &str = "key/";
const DEVICE_TOKEN: &str = "device-token/";

/// An enrollment token's record.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnrollmentToken {
    /// For humans.
    pub name: String,
    /// Enrollments left (`None`: unlimited).
    pub uses_left: Option<u64>,
    /// Tags every device enrolled with it gets (the device's own tags win on conflict).
    pub tags: BTreeMap<String, String>,
}

/// Why an enrollment was refused.
#[derive(Debug, thiserror::Error)]
pub enum EnrollError {
    /// Bad request fields.
    #[error("{0}")]
    Invalid(String),
    /// Not authorized (unknown or spent token, key not pre-authorized, bad proof).
    #[error("{0}")]
    Forbidden(String),
    /// The id is taken by another key.
    #[error("device '{0}' is enrolled with another key")]
    Conflict(String),
    /// Store.
    #[error(transparent)]
    Store(#[from] StoreError),
}

fn hash(s: &str) -> String {
    hex::encode(Sha256::digest(s.as_bytes()))
}

fn random_token(prefix: &str) -> Result<String, StoreError> {
    let mut b = [0u8; 32];
    getrandom::fill(&mut b).map_err(|e| StoreError::Backend(format!("no randomness: {e}")))?;
    Ok(format!("{prefix}{}", hex::encode(b)))
}

/// Creates an enrollment token; returns the secret (shown once).
pub fn create_enrollment_token<S: Store + ?Sized>(
    records: &Records<S>,
    name: &str,
    uses: Option<u64>,
    tags: BTreeMap<String, String>,
) -> Result<String, StoreError> {
    let token = random_token("efe_")?;
    records.put(
        Table::Enrollment,
        &format!("{ENROLL_TOKEN}{}", hash(&token)),
        &EnrollmentToken {
            name: name.to_string(),
            uses_left: uses,
            tags,
        },
    )?;
    Ok(token)
}

/// Pre-authorizes a device key (hex): such a device enrolls without a token.
pub fn preauthorize<S: Store + ?Sized>(
    records: &Records<S>,
    public_key_hex: &str,
) -> Result<(), StoreError> {
    records.put(
        Table::Enrollment,
        &format!("{PREAUTHORIZED}{}", public_key_hex.to_ascii_lowercase()),
        &true,
    )
}

/// Enrolls a device (or re-enrolls it with the same key); returns the answer with a fresh
/// device token.
pub fn enroll<S: Store + ?Sized>(
    records: &Records<S>,
    r: &EnrollRequest,
    now: u64,
) -> Result<EnrollResponse, EnrollError> {
    validate_device_id(&r.device_id).map_err(|e| EnrollError::Invalid(e.to_string()))?;
    let key_bytes: [u8; 32] = hex::decode(&r.public_key)
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| EnrollError::Invalid("public_key must be 64 hex characters".into()))?;
    let key = VerifyingKey::from_bytes(&key_bytes)
        .map_err(|_| EnrollError::Invalid("public_key is not an ed25519 key".into()))?;
    let proof: [u8; 64] = hex::decode(&r.proof)
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| EnrollError::Invalid("proof must be 128 hex characters".into()))?;
    key.verify_strict(
        &proof_message(&r.device_id, &key_bytes, &r.token),
        &ed25519_dalek::Signature::from_bytes(&proof),
    )
    .map_err(|_| EnrollError::Forbidden("proof does not verify with public_key".into()))?;
    if r.tags.len() > 64 || r.tags.iter().any(|(k, v)| k.len() > 63 || v.len() > 63) {
        return Err(EnrollError::Invalid(
            "at most 64 tags, keys and values up to 63 characters".into(),
        ));
    }

    let existing: Option<DeviceRecord> = records.get(Table::Devices, &r.device_id)?;
    if let Some(d) = &existing {
        if d.public_key != r.public_key.to_ascii_lowercase() {
            return Err(EnrollError::Conflict(r.device_id.clone()));
        }
    }
    let pre_key = format!("{PREAUTHORIZED}{}", r.public_key.to_ascii_lowercase());
    let token_key = format!("{ENROLL_TOKEN}{}", hash(&r.token));
    let mut writes = Vec::new();
    // enrolling again (a retry whose answer was lost, a device that lost its token) keeps the
    // tags it was given: a token's tags are not repeated in the request, and a device whose
    // tags vanished would drop out of every cohort
    let mut tags: BTreeMap<String, String> = existing
        .as_ref()
        .map(|d| d.tags.clone())
        .unwrap_or_default();
    let preauthorized = records.store().get(Table::Enrollment, &pre_key)?.is_some();
    if existing.is_none() && !preauthorized {
        let Some(mut t) = records.get::<EnrollmentToken>(Table::Enrollment, &token_key)? else {
            return Err(EnrollError::Forbidden(
                "unknown enrollment token, and the key is not pre-authorized".into(),
            ));
        };
        match t.uses_left {
            Some(0) => {
                return Err(EnrollError::Forbidden(format!(
                    "enrollment token '{}' is used up",
                    t.name
                )))
            }
            Some(n) => t.uses_left = Some(n - 1),
            None => {}
        }
        tags = t.tags.clone();
        writes.push(put(Table::Enrollment, &token_key, &t));
    }
    tags.extend(r.tags.clone());
    let device_token = random_token("efd_")?;
    let record = DeviceRecord {
        id: r.device_id.clone(),
        public_key: r.public_key.to_ascii_lowercase(),
        tags,
        agent_version: r.agent_version.clone(),
        enrolled_at: existing.as_ref().map_or(now, |d| d.enrolled_at),
        last_seen: now,
        online: existing.as_ref().is_some_and(|d| d.online),
        token_hash: hash(&device_token),
        last_seq: existing.as_ref().map_or(0, |d| d.last_seq),
        reported: existing.as_ref().and_then(|d| d.reported.clone()),
        messages: existing.as_ref().map_or(0, |d| d.messages),
        duplicates: existing.as_ref().map_or(0, |d| d.duplicates),
        requests: existing.as_ref().map_or(0, |d| d.requests),
        recent: existing
            .as_ref()
            .map_or_else(Vec::new, |d| d.recent.clone()),
    };
    if let Some(d) = &existing {
        writes.push(crate::store::Write::Delete(
            Table::Enrollment,
            format!("{DEVICE_TOKEN}{}", d.token_hash),
        ));
    }
    writes.push(put(
        Table::Enrollment,
        &format!("{DEVICE_TOKEN}{}", record.token_hash),
        &record.id,
    ));
    writes.push(put(Table::Devices, &r.device_id, &record));
    writes.push(journal(&record));
    records.store().write(writes)?;
    Ok(EnrollResponse {
        device_id: r.device_id.clone(),
        device_token: Some(device_token),
    })
}

/// The device a presented device token belongs to.
pub fn device_by_token<S: Store + ?Sized>(
    records: &Records<S>,
    token: &str,
) -> Result<Option<DeviceRecord>, StoreError> {
    if !token.starts_with("efd_") {
        return Ok(None);
    }
    let Some(id) =
        records.get::<String>(Table::Enrollment, &format!("{DEVICE_TOKEN}{}", hash(token)))?
    else {
        return Ok(None);
    };
    authenticate_device(records, &id, token)
}

/// The device a device token belongs to, if `device_id` holds it.
pub fn authenticate_device<S: Store + ?Sized>(
    records: &Records<S>,
    device_id: &str,
    token: &str,
) -> Result<Option<DeviceRecord>, StoreError> {
    let d: Option<DeviceRecord> = records.get(Table::Devices, device_id)?;
    Ok(d.filter(|d| d.token_hash == hash(token)))
}

/// The enrollment journal's prefix: `device/<id>/<token hash>`, one key per enrollment.
pub const JOURNAL: &str = "device/";

/// The journal write that goes with storing `record` (an enrollment): the engine reads it to
/// place the device without listing the fleet.
pub fn journal(record: &DeviceRecord) -> Write {
    // the key is the entry; the value is JSON null (every store record is JSON)
    crate::store::put(
        Table::Changes,
        &format!("{JOURNAL}{}/{}", record.id, record.token_hash),
        &(),
    )
}

/// The device id of a journal key.
pub fn journal_device(key: &str) -> Option<&str> {
    key.strip_prefix(JOURNAL)?
        .rsplit_once('/')
        .map(|(id, _)| id)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::RedbStore;
    use ed25519_dalek::Signer;
    use std::sync::Arc;

    fn request(key: &ed25519_dalek::SigningKey, id: &str, token: &str) -> EnrollRequest {
        let public = key.verifying_key().to_bytes();
        EnrollRequest {
            device_id: id.into(),
            public_key: hex::encode(public),
            token: token.into(),
            tags: [("hw".to_string(), "x86".to_string())].into(),
            agent_version: "0.1.0".into(),
            proof: hex::encode(key.sign(&proof_message(id, &public, token)).to_bytes()),
        }
    }

    #[test]
    fn enrollment_needs_a_token_or_a_preauthorized_key_and_a_proof() {
        let dir = tempfile::tempdir().unwrap();
        let records = Records::new(Arc::new(
            RedbStore::open(&dir.path().join("s.redb")).unwrap(),
        ));
        let token = create_enrollment_token(
            &records,
            "line-3",
            Some(1),
            [("site".to_string(), "berlin".to_string())].into(),
        )
        .unwrap();
        let k1 = edge_bundle::keys::generate().unwrap();
        let k2 = edge_bundle::keys::generate().unwrap();

        let e = enroll(&records, &request(&k1, "dev-1", "wrong"), 1).unwrap_err();
        assert!(matches!(e, EnrollError::Forbidden(_)), "{e}");
        let answer = enroll(&records, &request(&k1, "dev-1", &token), 1).unwrap();
        let secret = answer.device_token.unwrap();
        let d = authenticate_device(&records, "dev-1", &secret)
            .unwrap()
            .unwrap();
        assert_eq!(d.tags.get("site").map(String::as_str), Some("berlin"));
        assert_eq!(d.tags.get("hw").map(String::as_str), Some("x86"));
        assert!(authenticate_device(&records, "dev-2", &secret)
            .unwrap()
            .is_none());

        // the token had one use
        let e = enroll(&records, &request(&k2, "dev-2", &token), 2).unwrap_err();
        assert!(e.to_string().contains("used up"), "{e}");
        // re-enrolling with the same key rotates the device token and keeps the token's tags
        let again = enroll(&records, &request(&k1, "dev-1", "whatever"), 3).unwrap();
        let d: DeviceRecord = records.get(Table::Devices, "dev-1").unwrap().unwrap();
        assert_eq!(d.tags.get("site").map(String::as_str), Some("berlin"));
        assert!(authenticate_device(&records, "dev-1", &secret)
            .unwrap()
            .is_none());
        assert!(
            authenticate_device(&records, "dev-1", &again.device_token.unwrap())
                .unwrap()
                .is_some()
        );
        // another key for a taken id
        preauthorize(&records, &hex::encode(k2.verifying_key().to_bytes())).unwrap();
        assert!(matches!(
            enroll(&records, &request(&k2, "dev-1", ""), 4),
            Err(EnrollError::Conflict(_))
        ));
        // a pre-authorized key needs no token
        enroll(&records, &request(&k2, "dev-2", ""), 4).unwrap();
        // a proof by another key, a bad id, a bad key
        let mut forged = request(&k1, "dev-3", &token);
        forged.public_key = hex::encode(k2.verifying_key().to_bytes());
        assert!(enroll(&records, &forged, 5)
            .unwrap_err()
            .to_string()
            .contains("proof"));
        assert!(matches!(
            enroll(&records, &request(&k1, "../etc", &token), 5),
            Err(EnrollError::Invalid(_))
        ));
        let mut short = request(&k1, "dev-4", &token);
        short.public_key = "abcd".into();
        assert!(enroll(&records, &short, 5)
            .unwrap_err()
            .to_string()
            .contains("64 hex"));
    }
}
