//! Enrollment over HTTP (JSON): a device introduces itself to the OTA server once, with a token
//! from the operator, its public key and its tags. From then on the server verifies the device's
//! signed MQTT messages with that key.
//!
//! `POST /v1/devices/enroll` with [`EnrollRequest`] → `200` with [`EnrollResponse`]. A device
//! that re-enrolls with the same key is answered the same way (idempotent); the same id with
//! another key is refused (`409`).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Path of the enrollment endpoint, relative to the server URL.
pub const ENROLL_PATH: &str = "/v1/devices/enroll";

/// Path prefix of artifacts by sha256 (hex): `GET {url}/v1/artifacts/{sha256}`, Range supported.
pub const ARTIFACTS_PATH: &str = "/v1/artifacts";

/// Device → server.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
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
}

/// Server → device.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnrollResponse {
    /// The id the server registered.
    pub device_id: String,
    /// MQTT username to connect with, if the broker authenticates.
    #[serde(default)]
    pub mqtt_username: Option<String>,
    /// MQTT password, if the broker authenticates.
    #[serde(default)]
    pub mqtt_password: Option<String>,
}
