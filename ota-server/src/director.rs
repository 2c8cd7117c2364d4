//! The director: signs each device's desired state with the director key the trust root names
//! (DESIGN decision 2), as a `Desired` envelope from sender `director`. Its sequence number
//! is a store counter, so it only grows, across restarts too: an agent refuses a desired state
//! whose sequence number is not newer than the last one it accepted.

use edge_protocol::{seal, DesiredModel, DesiredState, Header, Kind};
use edge_runtime::SigningKey;
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

/// Signs `device`'s desired state at `now` with the next director sequence number.
pub fn sign<S: Store + ?Sized>(
    records: &Records<S>,
    key: &SigningKey,
    device: &str,
    record: &DesiredRecord,
    now: u64,
) -> Result<Vec<u8>, StoreError> {
    let seq = records.store().increment("director-seq")?;
    let header = Header {
        sender: SENDER.to_string(),
        seq,
        sent_at: now,
        kind: Kind::Desired,
    };
    Ok(seal(key, header, &desired_state(device, record)))
}
