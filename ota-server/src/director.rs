//! The director: signs each device's desired state with the director key the trust root names
//! (DESIGN decision 2), as a `Desired` envelope from sender `director`. Its sequence number
//! is a store counter, so it only grows, across restarts too: an agent refuses a desired state
//! whose sequence number is not newer than the last one it accepted.

use edge_bundle::SigningKey;
use edge_protocol::{seal, DesiredModel, DesiredShadow, DesiredState, Header, Kind};
use minicbor::bytes::ByteArray;

use crate::desired::Target;
use crate::engine::DesiredRecord;
use crate::store::{Records, Store, StoreError};

/// The envelope sender name of the director.
pub const SENDER: &str = "director";

/// The protocol form of a stored desired state.
pub fn desired_state(device: &str, record: &DesiredRecord) -> DesiredState {
    DesiredState {
        device_id: device.to_string(),
        generation: record.generation,
        models: record.models.iter().map(desired_model).collect(),
        shadows: record
            .shadows
            .iter()
            .map(|s| DesiredShadow {
                model: desired_model(&s.target),
                sample_ppm: s.sample_ppm,
                cpu_millicores: s.cpu_millicores,
            })
            .collect(),
    }
}

fn desired_model(t: &Target) -> DesiredModel {
    let mut sha = [0u8; 32];
    // stored targets come from verified bundle records: always 64 hex digits
    if let Ok(bytes) = hex::decode(&t.sha256) {
        if bytes.len() == 32 {
            sha.copy_from_slice(&bytes);
        }
    }
    DesiredModel {
        name: t.name.clone(),
        version: t.version.clone(),
        bundle_sha256: ByteArray::from(sha),
        size: t.size,
    }
}

/// Signs many desired states with consecutive sequence numbers reserved in one store commit
/// (an engine step over a large fleet would otherwise commit once per device).
pub fn sign_all<S: Store + ?Sized>(
    records: &Records<S>,
    key: &SigningKey,
    desired: &[(String, DesiredRecord)],
    now: u64,
) -> Result<Vec<Vec<u8>>, StoreError> {
    if desired.is_empty() {
        return Ok(Vec::new());
    }
    let last = records
        .store()
        .reserve("director-seq", desired.len() as u64)?;
    let first = last + 1 - desired.len() as u64;
    Ok(desired
        .iter()
        .zip(first..)
        .map(|((device, record), seq)| {
            let header = Header {
                sender: SENDER.to_string(),
                seq,
                sent_at: now,
                kind: Kind::Desired,
            };
            seal(key, header, &desired_state(device, record))
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::RedbStore;
    use edge_protocol::envelope::open;
    use std::sync::Arc;

    #[test]
    fn a_block_of_signatures_takes_consecutive_sequence_numbers_across_restarts() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("s.redb");
        let key = SigningKey::from_bytes(&[9; 32]);
        let record = DesiredRecord {
            generation: 4,
            models: vec![],
            shadows: vec![],
        };
        let batch: Vec<(String, DesiredRecord)> = (0..3)
            .map(|i| (format!("dev-{i}"), record.clone()))
            .collect();
        let seqs = |records: &Records<RedbStore>, batch: &[(String, DesiredRecord)]| {
            sign_all(records, &key, batch, 0)
                .unwrap()
                .iter()
                .zip(batch)
                .map(|(bytes, (device, _))| {
                    let (h, doc): (_, DesiredState) = open(bytes, Kind::Desired, |s| {
                        (s == SENDER).then_some(key.verifying_key())
                    })
                    .unwrap();
                    assert_eq!((&doc.device_id, doc.generation), (device, 4));
                    h.seq
                })
                .collect::<Vec<_>>()
        };
        let records = Records::new(Arc::new(RedbStore::open(&db).unwrap()));
        assert_eq!(seqs(&records, &batch), vec![1, 2, 3]);
        drop(records);
        let records = Records::new(Arc::new(RedbStore::open(&db).unwrap()));
        assert_eq!(seqs(&records, &batch[..1]), vec![4]);
        assert!(sign_all(&records, &key, &[], 0).unwrap().is_empty());
    }
}
