//! Enrollment over HTTP (JSON): a device introduces itself to the OTA server once, with a token
//! from the operator, its public key and its tags. From then on the server verifies the device's
//! signed MQTT messages with that key.
//!
//! `POST /v1/devices/enroll` with [`EnrollRequest`] → `200` with [`EnrollResponse`]. The request
//! carries a proof of possession: the device key's signature over [`proof_message`], so nobody
//! can enroll (or re-enroll) a device whose key they do not hold. A device that re-enrolls with
//! the same key gets a fresh device token; the same id with another key is refused (`409`).
//!
//! The device token is the device's credential: the MQTT password (username = device id) and
//! the `Authorization: Bearer` credential for artifact downloads.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Path of the enrollment endpoint, relative to the server URL.
pub const ENROLL_PATH: &str = "/v1/devices/enroll";

/// Path prefix of artifacts by sha256 (hex): `GET {url}/v1/artifacts/{sha256}`, Range supported.
pub const ARTIFACTS_PATH: &str = "/v1/artifacts";

/// Device → server.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct EnrollRequest {
    /// Device id (see [`crate::topics::validate_device_id`]).
    pub device_id: String,
    /// ed25519 public key, hex (64 chars).
    pub public_key: String,
    /// The operator's enrollment token.
    pub token: String,
    /// Tags for cohort selection.
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    /// `edge-agent` version.
    pub agent_version: String,
    /// ed25519 signature (hex) by the device key over [`proof_message`].
    pub proof: String,
}

/// Domain-separation prefix of the enrollment proof.
pub const ENROLL_DOMAIN: &[u8] = b"edgefleet enroll v1\0";

/// The bytes the device key signs to enroll: the domain, then the device id, the public key and
/// the token, each length-prefixed (u32 LE).
pub fn proof_message(device_id: &str, public_key: &[u8; 32], token: &str) -> Vec<u8> {
    let mut m = ENROLL_DOMAIN.to_vec();
    for part in [
        device_id.as_bytes(),
        public_key.as_slice(),
        token.as_bytes(),
    ] {
        m.extend_from_slice(&(part.len() as u32).to_le_bytes());
        m.extend_from_slice(part);
    }
    m
}

/// Server → device.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct EnrollResponse {
    /// The id the server registered.
    pub device_id: String,
    /// The device's credential (MQTT password with the device id as username; bearer token for
    /// artifacts), if the server issues one.
    #[serde(default)]
    pub device_token: Option<String>,
}
