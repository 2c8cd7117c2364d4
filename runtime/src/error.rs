//! Every error the runtime returns, as typed enums: each says what was wrong and what to do.
//! Bundle, key and trust errors are `edge-bundle`'s, re-exported here.

use thiserror::Error;

pub use edge_bundle::error::{BundleError, KeyError, Section, TrustError};

/// Why an input was refused by `predict`.
#[derive(Debug, Error, PartialEq)]
pub enum InputError {
    /// Wrong number of input tensors.
    #[error("model takes {expected} input tensor(s), got {got}")]
    WrongInputCount {
        /// Expected.
        expected: usize,
        /// Got.
        got: usize,
    },
    /// Wrong element type.
    #[error("input '{name}' must be {expected}, got {got}")]
    WrongDtype {
        /// Input name.
        name: String,
        /// Expected dtype.
        expected: String,
        /// Given dtype.
        got: String,
    },
    /// Wrong rank or dimension.
    #[error("input '{name}' must have shape {expected}, got {got:?}")]
    WrongShape {
        /// Input name.
        name: String,
        /// Expected shape, e.g. `[N, 1, 8, 8]`.
        expected: String,
        /// Given shape.
        got: Vec<usize>,
    },
    /// Data length does not match the shape.
    #[error("input '{name}' has {got} elements but its shape {shape:?} needs {expected}")]
    ElementCount {
        /// Input name.
        name: String,
        /// Shape.
        shape: Vec<usize>,
        /// Expected count.
        expected: usize,
        /// Actual count.
        got: usize,
    },
    /// No elements.
    #[error("input '{name}' is empty")]
    Empty {
        /// Input name.
        name: String,
    },
    /// Batch over the model's limit.
    #[error("input '{name}' has batch {got}, over the model's max_batch {max}")]
    BatchTooLarge {
        /// Input name.
        name: String,
        /// Batch given.
        got: usize,
        /// Limit.
        max: usize,
    },
    /// Over the byte limit.
    #[error("input '{name}' is {bytes} bytes, over the limit of {limit}")]
    TooLarge {
        /// Input name.
        name: String,
        /// Size.
        bytes: usize,
        /// Limit.
        limit: usize,
    },
    /// NaN or infinity where the spec forbids it.
    #[error("input '{name}' holds a non-finite value ({value}) at flat index {index}; this model's nan_policy is 'reject'")]
    NonFinite {
        /// Input name.
        name: String,
        /// Flat index.
        index: usize,
        /// The value as text.
        value: String,
    },
    /// An input buffer used the wrong way (element type, length, another buffer's model).
    #[error("input buffer: {reason}")]
    Buffer {
        /// What was wrong.
        reason: String,
    },
}

/// Loading or running a model.
#[derive(Debug, Error)]
pub enum ModelError {
    /// Bundle verification failed.
    #[error(transparent)]
    Bundle(#[from] BundleError),
    /// The manifest's specs are inconsistent.
    #[error("bundle spec is invalid: {0}")]
    Spec(String),
    /// This build of the runtime cannot read the bundle's payload format (an ONNX payload on a
    /// device build without the `onnx` feature).
    #[error("this runtime cannot read the bundle's '{format}' payload: {hint}")]
    UnsupportedPayload {
        /// The payload format the manifest names.
        format: crate::bundle::PayloadFormat,
        /// What to do about it.
        hint: String,
    },
    /// The engine could not load or optimize the graph.
    #[error("engine '{engine}' cannot load the model: {reason}")]
    EngineLoad {
        /// Engine name.
        engine: &'static str,
        /// Reason.
        reason: String,
    },
    /// The engine failed while running.
    #[error("engine '{engine}' failed while running the model: {reason}")]
    EngineRun {
        /// Engine name.
        engine: &'static str,
        /// Reason.
        reason: String,
    },
    /// A self-test vector gave a different answer.
    #[error("self-test vector {index} failed: output '{output}' element {element} is {got}, expected {expected} (tolerance {tolerance}); the model does not behave on this device as it did when packed")]
    SelfTest {
        /// Vector index.
        index: usize,
        /// Output name.
        output: String,
        /// Flat element index.
        element: usize,
        /// Value got.
        got: f64,
        /// Value expected.
        expected: f64,
        /// Tolerance.
        tolerance: f64,
    },
    /// Bad input.
    #[error(transparent)]
    Input(#[from] InputError),
    /// Model output not what the output spec says.
    #[error("model output does not fit its spec: {0}")]
    Output(String),
}
