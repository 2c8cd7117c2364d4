//! edgefleet wire contract: every type that crosses a process boundary as JSON or CBOR.
//!
//! This crate starts with the prediction answer (what `edgectl run` prints and what the device
//! agent's local API will return). MQTT topics, desired-state documents and REST types join it as
//! the agent and the server arrive. Nothing here depends on the runtime: the runtime depends on it.

#![deny(missing_docs)]

pub mod prediction;

pub use prediction::{
    ClassProbability, Interval, ModelRef, PredictResponse, Prediction, RawOutput,
};

/// Version of the wire contract; bumped on any incompatible change to a type in this crate.
pub const PROTOCOL_VERSION: u32 = 1;
