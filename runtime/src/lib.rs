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
//! The whole path in one runnable example: make a fleet root and a signing key, sign a trust root,
//! pack the sample digits model into a bundle, then load it on the "device" and predict. On a
//! device only the last three steps happen; the keys stay with the operator.
//!
//! ```
//! use edge_runtime::pack::{pack, Calibration, PackSpec};
//! use edge_runtime::trust::{self, RootAnchor, TrustRoot, TrustSpec};
//! use edge_runtime::{keys, npy, LoadOptions, Model, PredictOptions, Tensor};
//! use edge_protocol::Prediction;
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // operator side
//! let (root, signer) = (keys::generate()?, keys::generate()?);
//! let trust_doc = trust::create(&TrustSpec::ephemeral(&signer.verifying_key()), &root, None)?;
//! let spec: PackSpec = toml::from_str(&std::fs::read_to_string("../models/digits/spec.toml")?)?;
//! let calibration = Calibration {
//!     inputs: npy::read(std::fs::File::open("../models/digits/calib_x.npy")?, 1 << 24)?,
//!     targets: None,
//! };
//! let onnx = std::fs::read("../models/digits/model.onnx")?;
//! let (bundle, _report) = pack(&onnx, spec, Some(&calibration), &[signer], 0)?;
//!
//! // device side: the root public key is provisioned, the rest arrives over the air
//! let trust = TrustRoot::from_bytes(&trust_doc, RootAnchor::Pinned(root.verifying_key()))?;
//! let model = Model::load(&bundle, &trust, &LoadOptions::default())?;
//! let digits = npy::read(std::fs::File::open("../models/digits/test_x.npy")?, 1 << 24)?;
//! let answer = model.predict_with(
//!     vec![digits.rows(0, 2)],
//!     &PredictOptions { top_k: Some(1), raw: false },
//! )?;
//! assert_eq!(answer.results.len(), 2); // one answer per row
//! let Prediction::Classification { label, probability, .. } = &answer.results[0] else {
//!     unreachable!("digits is a classifier")
//! };
//! println!("row 0 is a {label} (p = {probability:.3})");
//! assert_eq!(model.stats().rows, 2); // counted for the device's telemetry
//!
//! // a wrong input is a typed error, not a panic
//! let wrong = Tensor::f32(vec![1, 3], vec![0.0; 3]);
//! assert!(matches!(model.predict(vec![wrong]), Err(edge_runtime::ModelError::Input(_))));
//! # Ok(()) }
//! ```
//!
//! The C ABI over this crate (`libedgefleet.so`/`.a`, `runtime/include/edge_runtime.h`) is in
//! `runtime/capi`. Not yet here (see the issues): the gpu/cuda engines, integer kernels.

#![deny(missing_docs)]

pub mod bundle;
pub mod engine;
pub mod error;
pub mod input_buffer;
pub mod json_input;
pub mod keys;
mod model;
pub mod npy;
pub mod onnx_graph;
pub mod pack;
pub mod postprocess;
pub mod preprocess;
pub mod quantize;
pub mod stats;
pub mod tensor;
pub mod trust;

pub use ed25519_dalek::{SigningKey, VerifyingKey};
pub use error::{BundleError, InputError, ModelError, TrustError};
pub use input_buffer::InputBuffer;
pub use model::{LoadOptions, Model, PredictOptions, MAX_FEATURE_SAMPLES};
pub use preprocess::InputLimits;
pub use tensor::{DType, Tensor, TensorData};
