//! # edge-runtime
//!
//! Loads **signed** model bundles, verifies them against a fleet trust root, and runs them with
//! the bundle's own pre- and post-processing. The pipeline is a chain of types:
//!
//! | stage | function | output |
//! |---|---|---|
//! | bytes → checked bundle | [`bundle::verify`] | [`bundle::VerifiedBundle`] |
//! | checked bundle → served model | [`Model::from_verified`] (engine prepare + self-test) | [`Model`] |
//! | input → answer | [`Model::predict`] | [`edge_protocol::PredictResponse`] |
//!
//! [`Model::load`] does the first two at once. An unverified bundle cannot reach an engine: no
//! engine function takes one.
//!
//! ```no_run
//! use edge_runtime::{Model, LoadOptions, Tensor, trust::{TrustRoot, RootAnchor}};
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let root = edge_runtime::keys::read_public_key("root.pub".as_ref())?;
//! let trust = TrustRoot::from_bytes(&std::fs::read("trust.cbor")?, RootAnchor::Pinned(root))?;
//! let model = Model::load(&std::fs::read("digits.efb")?, &trust, &LoadOptions::default())?;
//! let answer = model.predict(vec![Tensor::f32(vec![1, 1, 8, 8], vec![0.0; 64])])?;
//! println!("{} from {} {}", serde_json::to_string(&answer.results)?, answer.model.model, answer.model.version);
//! # Ok(()) }
//! ```
//!
//! The whole operator-to-device path as one runnable example (keys, trust root, pack, load,
//! predict) is in the `edge-pack` crate's documentation: packing is an operator tool and is not
//! part of this crate.
//!
//! The C ABI over this crate (`libedgefleet.so`/`.a`, `runtime/include/edge_runtime.h`) is in
//! `runtime/capi`. Not yet here (see the issues): the gpu/cuda engines, integer kernels.

#![deny(missing_docs)]

/// The bundle format, verification and storage (`edge-bundle`, re-exported: one facade for the
/// C ABI and apps).
pub use edge_bundle as bundle;
pub use edge_bundle::{keys, npy, tensor, trust};

pub mod engine;
pub mod error;
pub mod feedback;
pub mod input_buffer;
pub mod json_input;
mod model;
pub mod postprocess;
pub mod preprocess;
pub mod stats;

pub use ed25519_dalek::{SigningKey, VerifyingKey};
pub use error::{BundleError, InputError, ModelError, TrustError};
pub use input_buffer::InputBuffer;
pub use model::{LoadOptions, Model, PredictOptions, MAX_FEATURE_SAMPLES};
pub use preprocess::InputLimits;
pub use tensor::{DType, Tensor, TensorData};
