//! # edge-bundle
//!
//! Signed model bundles (`.efb`): the format, signing, verification and storage, the fleet trust
//! root, keys, the tensor types a manifest speaks in, and the reference statistics (histograms,
//! PSI) that drift is measured against. No inference engine: the OTA server, the CLI and the
//! runtime all depend on this crate, and only the runtime links tract.
//!
//! The types are the pipeline: bytes go through [`verify`] and come out as a [`VerifiedBundle`];
//! only a `VerifiedBundle` can reach an engine (no engine function takes anything else).
//! Verification follows DESIGN decision 4 step by step (see [`verify`]): sizes against
//! [`Limits`], signatures over the domain-separated manifest against the trust root's threshold,
//! then the payload streamed through sha256 — no ONNX byte is parsed before all of that passes.

#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod container;
pub mod error;
pub mod keys;
mod manifest;
pub mod npy;
mod sign;
pub mod stats;
mod store;
pub mod tensor;
pub mod trust;
mod verify;

pub use ed25519_dalek::{SigningKey, VerifyingKey};
pub use error::{BundleError, KeyError, TrustError};
pub use tensor::{DType, Tensor, TensorData};

pub use container::{offsets, SectionOffsets, SignatureRecord, FORMAT_VERSION, MAGIC};
pub use manifest::*;
pub use sign::{build, MANIFEST_DOMAIN};
pub use store::write_durably;
pub use trust::Expiry;
pub use verify::{inspect, verify, verify_bytes, Inspection, VerifiedBundle, VerifyPolicy};

/// Size limits enforced while reading a bundle, before anything is allocated for a section.
///
/// They stop a malicious or broken file from making the device allocate or hash without end
/// ("endless data"). Defaults:
/// - `max_manifest_bytes`: 32 MiB (self-test vectors of an image model are a few MiB)
/// - `max_signatures`: 16
/// - `max_payload_bytes`: 512 MiB
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Largest manifest accepted, in bytes.
    pub max_manifest_bytes: u64,
    /// Most signature records accepted.
    pub max_signatures: u64,
    /// Largest payload accepted, in bytes.
    pub max_payload_bytes: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_manifest_bytes: 32 * 1024 * 1024, // 32 MiB
            max_signatures: 16,
            max_payload_bytes: 512 * 1024 * 1024, // 512 MiB
        }
    }
}
