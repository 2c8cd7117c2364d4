//! # edge-pack
//!
//! The operator's side of the pipeline, never linked into a device build (`edge-agent`,
//! `libedgefleet`): [`pack`] turns an ONNX graph, a spec and calibration data into a signed
//! bundle (running the model once through the device's own verify-and-load path to record
//! self-test vectors and reference statistics), [`quantize`] rewrites a float graph into int8
//! QDQ, and [`onnx_graph`] reads a graph's interface and builds small test graphs.
//!
//! The whole path in one runnable example: make a fleet root and a signing key, sign a trust root,
//! pack the sample digits model into a bundle, then load it on the "device" and predict. On a
//! device only the last three steps happen; the keys stay with the operator.
//!
//! ```
//! use edge_pack::pack::{pack, Calibration, PackSpec};
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

#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod onnx_graph;
pub mod pack;
pub mod quantize;
