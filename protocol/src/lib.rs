//! edgefleet wire contract: every type that crosses a process boundary as JSON or CBOR.
//!
//! - [`prediction`]: the answer to a predict call (what `edgectl run` prints and what the device
//!   agent's local API returns), JSON.
//! - [`envelope`]: the signed CBOR envelope of every MQTT payload, with replay protection
//!   (DESIGN decision 2).
//! - [`messages`]: desired state, hello, events, telemetry windows (decisions 1 and 8).
//! - [`topics`]: MQTT topic names and device-id rules.
//! - [`histogram`]: the histogram shared by bundle reference statistics and telemetry.
//!
//! - [`rest`]: every request and response body of the server's `/v1` API and the agent's local
//!   predict API (feature `openapi`: their OpenAPI schemas, utoipa).
//! - [`selector`]: cohort selectors over device tags (the syntax of a rollout's `selector`).
//!
//! Nothing here depends on the runtime: the runtime depends on it.

#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod cohort;
pub mod enroll;
pub mod envelope;
pub mod histogram;
pub mod messages;
pub mod prediction;
pub mod rest;
pub mod selector;
pub mod topics;

pub use envelope::{open, seal, EnvelopeError, Header, Kind, ReplayGuard};
pub use histogram::Histogram;
pub use messages::*;
pub use prediction::{
    ClassProbability, Interval, ModelRef, PredictResponse, Prediction, RawOutput,
};

/// Version of the wire contract; bumped on any incompatible change to a type in this crate.
pub const PROTOCOL_VERSION: u32 = 1;
