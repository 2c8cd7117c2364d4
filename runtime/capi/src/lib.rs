//! # edgefleet C ABI (`libedgefleet.so`, `libedgefleet.a`, `edge_runtime.h`)
//!
//! The embedding API of [`edge_runtime`] for programs that are not written in Rust. It owns the
//! boundary: raw pointers in, status codes out, and nothing else. Every entry point
//!
//! - checks its pointers (NULL where a value is required → [`EdgeStatus::EdgeErrArgument`]),
//! - catches panics (→ [`EdgeStatus::EdgeErrPanic`]; a panic never unwinds into C),
//! - on failure leaves a message for [`edge_last_error`] (per thread, like `errno`).
//!
//! Objects (`EdgeModel`, `EdgeAnswer`, strings) are created by the library and freed by the
//! matching `*_free` function. An `EdgeModel` may be used by several threads at once.
//!
//! The life of a model from C:
//!
//! ```c
//! EdgeModel *model = NULL;
//! if (edge_model_load_files("digits.efb", "trust.cbor", "root.pub", &model) != EDGE_OK) {
//!     fprintf(stderr, "load: %s\n", edge_last_error());
//!     return 1;
//! }
//! float pixels[64] = {0};
//! size_t shape[4] = {1, 1, 8, 8};
//! EdgeTensorView input = {EDGE_DTYPE_F32, pixels, shape, 4};
//! EdgeAnswer *answer = NULL;
//! if (edge_predict(model, &input, 1, &answer) == EDGE_OK) {
//!     printf("%s\n", edge_answer_json(answer));
//!     edge_answer_free(answer);
//! }
//! edge_model_free(model);
//! ```
//!
//! Copies: the input is copied once, from the caller's buffer into the runtime's own tensor, which
//! the bundle's normalization then rewrites in place and tract takes over without another copy.
//! The caller's buffer is never written and may be reused as soon as `edge_predict` returns.

#![deny(missing_docs)]

use std::cell::RefCell;
use std::ffi::{c_char, c_void, CStr, CString};
use std::panic::{catch_unwind, AssertUnwindSafe};

use edge_protocol::PredictResponse;
use edge_runtime::error::{BundleError, KeyError, ModelError};
use edge_runtime::feedback::{FeedbackLimits, FeedbackLog, Truth};
use edge_runtime::trust::{RootAnchor, TrustRoot};
use edge_runtime::{DType, InputBuffer, LoadOptions, Model, PredictOptions, Tensor, TensorData};

/// Outcome of a call. On anything but `EDGE_OK`, [`edge_last_error`] says what went wrong.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EdgeStatus {
    /// Success.
    EdgeOk = 0,
    /// A required pointer was NULL, a string was not UTF-8, a dtype or shape was invalid.
    EdgeErrArgument = 1,
    /// A file could not be read.
    EdgeErrIo = 2,
    /// The root public key is malformed.
    EdgeErrKey = 3,
    /// The trust root does not verify (wrong root key, expired, malformed).
    EdgeErrTrust = 4,
    /// The bundle does not verify (bad signature, tampered payload, too old, malformed).
    EdgeErrBundle = 5,
    /// The bundle verified but its model cannot be served (spec mismatch, self-test failed).
    EdgeErrModel = 6,
    /// The input does not fit the model (count, dtype, shape, NaN, size limits).
    EdgeErrInput = 7,
    /// The inference engine failed to load or run the graph.
    EdgeErrEngine = 8,
    /// A bug inside the library (a Rust panic, caught at the boundary). Please report it.
    EdgeErrPanic = 9,
    /// Feedback not joined: no answer with that prediction id is kept (too old, or the library
    /// was reloaded), the row already has its truth, or the truth does not fit the answer.
    EdgeErrFeedback = 10,
}

/// Element type: 32-bit float.
pub const EDGE_DTYPE_F32: u32 = 0;
/// Element type: 64-bit float.
pub const EDGE_DTYPE_F64: u32 = 1;
/// Element type: 64-bit signed integer.
pub const EDGE_DTYPE_I64: u32 = 2;
/// Element type: 32-bit signed integer.
pub const EDGE_DTYPE_I32: u32 = 3;
/// Element type: 8-bit unsigned integer.
pub const EDGE_DTYPE_U8: u32 = 4;
/// Element type: 8-bit signed integer.
pub const EDGE_DTYPE_I8: u32 = 5;

/// A caller-owned input tensor: `rank` dimensions at `shape`, elements row-major at `data`
/// (native endianness, aligned for the element type). Only read during the call.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct EdgeTensorView {
    /// One of the `EDGE_DTYPE_*` constants.
    pub dtype: u32,
    /// First element (may be NULL only when the shape has no elements).
    pub data: *const c_void,
    /// `rank` dimensions, outermost (batch) first.
    pub shape: *const usize,
    /// Number of dimensions.
    pub rank: usize,
}

/// One raw output tensor of an answer, as 32-bit floats; the pointers live as long as the answer.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct EdgeOutputView {
    /// Output name in the model graph (NUL-terminated).
    pub name: *const c_char,
    /// `rank` dimensions.
    pub shape: *const usize,
    /// Number of dimensions.
    pub rank: usize,
    /// `len` elements, row-major.
    pub data: *const f32,
    /// Number of elements.
    pub len: usize,
}

/// A verified, self-tested model (opaque), with the answers it keeps for feedback.
pub struct EdgeModel {
    model: Model,
    feedback: FeedbackLog,
}

/// The answer to one [`edge_predict`] call (opaque).
pub struct EdgeAnswer {
    json: CString,
    prediction_id: CString,
    rows: usize,
    latency_ms: f64,
    outputs: Vec<OwnedOutput>,
}

struct OwnedOutput {
    name: CString,
    shape: Vec<usize>,
    data: Vec<f32>,
}

thread_local! {
    static LAST_ERROR: RefCell<CString> = RefCell::new(CString::default());
}

fn set_last_error(message: &str) {
    let text = CString::new(message.replace('\0', " ")).unwrap_or_default();
    LAST_ERROR.with(|e| *e.borrow_mut() = text);
}

/// An error on its way to C: a status and a message.
struct Failure(EdgeStatus, String);

impl Failure {
    fn argument(message: impl Into<String>) -> Failure {
        Failure(EdgeStatus::EdgeErrArgument, message.into())
    }
}

impl From<ModelError> for Failure {
    fn from(e: ModelError) -> Failure {
        let status = match &e {
            ModelError::Bundle(BundleError::Trust(_)) => EdgeStatus::EdgeErrTrust,
            ModelError::Bundle(BundleError::Io(_)) => EdgeStatus::EdgeErrIo,
            ModelError::Bundle(_) => EdgeStatus::EdgeErrBundle,
            ModelError::Input(_) => EdgeStatus::EdgeErrInput,
            ModelError::EngineLoad { .. } | ModelError::EngineRun { .. } => {
                EdgeStatus::EdgeErrEngine
            }
            _ => EdgeStatus::EdgeErrModel,
        };
        Failure(status, e.to_string())
    }
}

impl From<KeyError> for Failure {
    fn from(e: KeyError) -> Failure {
        let status = match e {
            KeyError::Io { .. } => EdgeStatus::EdgeErrIo,
            _ => EdgeStatus::EdgeErrKey,
        };
        Failure(status, e.to_string())
    }
}

/// Runs `body`, turning its error or panic into a status and a last-error message.
fn boundary(body: impl FnOnce() -> Result<(), Failure>) -> EdgeStatus {
    match catch_unwind(AssertUnwindSafe(body)) {
        Ok(Ok(())) => EdgeStatus::EdgeOk,
        Ok(Err(Failure(status, message))) => {
            set_last_error(&message);
            status
        }
        Err(panic) => {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".into());
            set_last_error(&format!("internal error (please report): {what}"));
            EdgeStatus::EdgeErrPanic
        }
    }
}

/// # Safety
/// `ptr` is NULL or points to a NUL-terminated string.
unsafe fn c_str<'a>(ptr: *const c_char, what: &str) -> Result<&'a str, Failure> {
    if ptr.is_null() {
        return Err(Failure::argument(format!("{what} is NULL")));
    }
    // SAFETY: not NULL, and the caller promises a NUL-terminated string.
    unsafe { CStr::from_ptr(ptr) }
        .to_str()
        .map_err(|_| Failure::argument(format!("{what} is not UTF-8")))
}

/// # Safety
/// `ptr` is NULL or points to `len` readable bytes.
unsafe fn c_bytes<'a>(ptr: *const u8, len: usize, what: &str) -> Result<&'a [u8], Failure> {
    if ptr.is_null() {
        return Err(Failure::argument(format!("{what} is NULL")));
    }
    // SAFETY: not NULL, and the caller promises `len` readable bytes.
    Ok(unsafe { std::slice::from_raw_parts(ptr, len) })
}

/// # Safety
/// `model` is NULL or a live model.
unsafe fn live_handle<'a>(model: *const EdgeModel) -> Result<&'a EdgeModel, Failure> {
    // SAFETY: the caller promises NULL or a live model.
    unsafe { model.as_ref() }.ok_or_else(|| Failure::argument("model is NULL"))
}

/// # Safety
/// `model` is NULL or a live model.
unsafe fn live_model<'a>(model: *const EdgeModel) -> Result<&'a Model, Failure> {
    // SAFETY: the caller promises NULL or a live model.
    unsafe { model.as_ref() }
        .map(|m| &m.model)
        .ok_or_else(|| Failure::argument("model is NULL"))
}

fn out_ptr<T>(out: *mut *mut T) -> Result<(), Failure> {
    if out.is_null() {
        return Err(Failure::argument("the output pointer is NULL"));
    }
    Ok(())
}

fn read_file(path: &str, what: &str) -> Result<Vec<u8>, Failure> {
    std::fs::read(path).map_err(|e| Failure(EdgeStatus::EdgeErrIo, format!("{what} {path}: {e}")))
}

fn load(
    bundle: &[u8],
    trust: &[u8],
    root_key_text: &str,
    root_key_origin: &str,
) -> Result<Box<EdgeModel>, Failure> {
    let root = edge_runtime::keys::parse_public_key(root_key_text, root_key_origin)?;
    let trust = TrustRoot::from_bytes(trust, RootAnchor::Pinned(root))
        .map_err(|e| Failure(EdgeStatus::EdgeErrTrust, e.to_string()))?;
    let model = Model::load(bundle, &trust, &LoadOptions::default())?;
    Ok(Box::new(EdgeModel {
        model,
        feedback: FeedbackLog::new(FeedbackLimits::default()),
    }))
}

/// The library version (`"0.1.0"`), a static string.
#[no_mangle]
pub extern "C" fn edge_version() -> *const c_char {
    concat!(env!("CARGO_PKG_VERSION"), "\0").as_ptr().cast()
}

/// The message of the last call that failed on this thread (`""` if none). The string belongs to
/// the library and stays valid until the next failing call on this thread.
#[no_mangle]
pub extern "C" fn edge_last_error() -> *const c_char {
    LAST_ERROR.with(|e| e.borrow().as_ptr())
}

/// Verifies a bundle held in memory and loads it.
///
/// `trust` is a trust root document (`trust.cbor`); `root_public_key` is the text of the fleet's
/// root public key file (`root.pub`, as written by `edgectl keygen`), which the trust root must be
/// signed by. The bundle must carry enough valid signatures from the trust root's signers, and its
/// self-test must pass on this device. On success `*out` holds a model to free with
/// [`edge_model_free`].
///
/// # Safety
/// `bundle` and `trust` point to `bundle_len` / `trust_len` readable bytes, `root_public_key` to a
/// NUL-terminated string, `out` to writable storage for a pointer.
#[no_mangle]
pub unsafe extern "C" fn edge_model_load(
    bundle: *const u8,
    bundle_len: usize,
    trust: *const u8,
    trust_len: usize,
    root_public_key: *const c_char,
    out: *mut *mut EdgeModel,
) -> EdgeStatus {
    boundary(|| {
        out_ptr(out)?;
        // SAFETY: the caller promises these lengths and a NUL-terminated key (here and below).
        let bundle = unsafe { c_bytes(bundle, bundle_len, "bundle")? };
        // SAFETY: as above.
        let trust = unsafe { c_bytes(trust, trust_len, "trust")? };
        // SAFETY: as above.
        let root = unsafe { c_str(root_public_key, "root_public_key")? };
        let model = load(bundle, trust, root, "root_public_key")?;
        // SAFETY: `out` is not NULL (checked) and the caller promises it is writable.
        unsafe { *out = Box::into_raw(model) };
        Ok(())
    })
}

/// [`edge_model_load`] from three files: the bundle (`.efb`), the trust root (`trust.cbor`) and the
/// root public key (`root.pub`).
///
/// # Safety
/// The paths are NUL-terminated strings, `out` points to writable storage for a pointer.
#[no_mangle]
pub unsafe extern "C" fn edge_model_load_files(
    bundle_path: *const c_char,
    trust_path: *const c_char,
    root_public_key_path: *const c_char,
    out: *mut *mut EdgeModel,
) -> EdgeStatus {
    boundary(|| {
        out_ptr(out)?;
        // SAFETY: the caller promises NUL-terminated strings (here and below).
        let bundle = read_file(unsafe { c_str(bundle_path, "bundle_path")? }, "bundle")?;
        // SAFETY: as above.
        let trust = read_file(unsafe { c_str(trust_path, "trust_path")? }, "trust root")?;
        // SAFETY: as above.
        let root_path = unsafe { c_str(root_public_key_path, "root_public_key_path")? };
        let root = read_file(root_path, "root public key")?;
        let root = String::from_utf8_lossy(&root);
        let model = load(&bundle, &trust, &root, root_path)?;
        // SAFETY: `out` is not NULL (checked) and the caller promises it is writable.
        unsafe { *out = Box::into_raw(model) };
        Ok(())
    })
}

/// Frees a model (NULL is ignored). No other thread may be using it.
///
/// # Safety
/// `model` is NULL or was returned by a load function and not freed yet.
#[no_mangle]
pub unsafe extern "C" fn edge_model_free(model: *mut EdgeModel) {
    if !model.is_null() {
        // SAFETY: the caller promises a model from a load function, not freed yet.
        let _ = catch_unwind(AssertUnwindSafe(|| drop(unsafe { Box::from_raw(model) })));
    }
}

fn dtype_of(code: u32) -> Result<DType, Failure> {
    Ok(match code {
        EDGE_DTYPE_F32 => DType::F32,
        EDGE_DTYPE_F64 => DType::F64,
        EDGE_DTYPE_I64 => DType::I64,
        EDGE_DTYPE_I32 => DType::I32,
        EDGE_DTYPE_U8 => DType::U8,
        EDGE_DTYPE_I8 => DType::I8,
        other => return Err(Failure::argument(format!("unknown dtype code {other}"))),
    })
}

/// # Safety
/// `data` is NULL or points to `count` aligned, readable elements of `T`.
unsafe fn copy_elements<T: Copy>(data: *const c_void, count: usize) -> Result<Vec<T>, Failure> {
    if count == 0 {
        return Ok(Vec::new());
    }
    let ptr = data.cast::<T>();
    if ptr.is_null() {
        return Err(Failure::argument("input data is NULL"));
    }
    if !ptr.is_aligned() {
        return Err(Failure::argument(format!(
            "input data is not aligned to {} bytes",
            std::mem::align_of::<T>()
        )));
    }
    // SAFETY: not NULL, aligned (checked), and the caller promises `count` readable elements.
    Ok(unsafe { std::slice::from_raw_parts(ptr, count) }.to_vec())
}

/// # Safety
/// The view's pointers are valid as documented on [`EdgeTensorView`].
unsafe fn tensor_from_view(view: &EdgeTensorView, index: usize) -> Result<Tensor, Failure> {
    let dtype = dtype_of(view.dtype)?;
    if view.rank > 16 {
        return Err(Failure::argument(format!(
            "input {index}: rank {} is too large",
            view.rank
        )));
    }
    if view.rank > 0 && view.shape.is_null() {
        return Err(Failure::argument(format!("input {index}: shape is NULL")));
    }
    let shape = if view.rank == 0 {
        Vec::new()
    } else {
        // SAFETY: not NULL (checked), and the view promises `rank` sizes.
        unsafe { std::slice::from_raw_parts(view.shape, view.rank) }.to_vec()
    };
    let count = shape
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .filter(|&n| {
            n.checked_mul(dtype.size())
                .is_some_and(|b| b <= isize::MAX as usize)
        })
        .ok_or_else(|| Failure::argument(format!("input {index}: shape {shape:?} overflows")))?;
    // SAFETY: the view promises `count` elements of its dtype at `data` (every arm).
    let data = unsafe {
        match dtype {
            DType::F32 => TensorData::F32(copy_elements(view.data, count)?),
            DType::F64 => TensorData::F64(copy_elements(view.data, count)?),
            DType::I64 => TensorData::I64(copy_elements(view.data, count)?),
            DType::I32 => TensorData::I32(copy_elements(view.data, count)?),
            DType::U8 => TensorData::U8(copy_elements(view.data, count)?),
            DType::I8 => TensorData::I8(copy_elements(view.data, count)?),
        }
    };
    Ok(Tensor { shape, data })
}

/// Predicts: validates the inputs against the bundle's input spec, normalizes them, runs the
/// engine and post-processes the outputs, counting the call in the model's statistics. On success
/// `*out` holds an answer to free with [`edge_answer_free`].
///
/// # Safety
/// `model` is a live model, `inputs` points to `n_inputs` views whose pointers are valid for the
/// call, `out` points to writable storage for a pointer.
#[no_mangle]
pub unsafe extern "C" fn edge_predict(
    model: *const EdgeModel,
    inputs: *const EdgeTensorView,
    n_inputs: usize,
    out: *mut *mut EdgeAnswer,
) -> EdgeStatus {
    boundary(|| {
        out_ptr(out)?;
        // SAFETY: the caller promises a live model.
        let handle = unsafe { live_handle(model)? };
        let model = &handle.model;
        if n_inputs > 0 && inputs.is_null() {
            return Err(Failure::argument("inputs is NULL"));
        }
        let views = if n_inputs == 0 {
            &[][..]
        } else {
            // SAFETY: not NULL (checked), and the caller promises `n_inputs` views.
            unsafe { std::slice::from_raw_parts(inputs, n_inputs) }
        };
        let tensors = views
            .iter()
            .enumerate()
            // SAFETY: the caller promises each view's pointers are valid for the call.
            .map(|(i, v)| unsafe { tensor_from_view(v, i) })
            .collect::<Result<Vec<_>, _>>()?;
        let mut response = model.predict_with(tensors, &RAW_OUTPUTS)?;
        handle.feedback.record(&mut response);
        let answer = Box::into_raw(Box::new(answer_of(response)?));
        // SAFETY: `out` is not NULL (checked) and the caller promises it is writable.
        unsafe { *out = answer };
        Ok(())
    })
}

/// Answers carry the raw outputs (for [`edge_answer_output`]).
const RAW_OUTPUTS: PredictOptions = PredictOptions {
    top_k: None,
    raw: true,
};

fn answer_of(mut response: PredictResponse) -> Result<EdgeAnswer, Failure> {
    let outputs = std::mem::take(&mut response.raw)
        .into_iter()
        .map(|o| OwnedOutput {
            name: CString::new(o.name.replace('\0', " ")).unwrap_or_default(),
            shape: o.shape,
            data: o.data.into_iter().map(|v| v as f32).collect(),
        })
        .collect();
    let json = serde_json::to_string(&response)
        .map_err(|e| Failure(EdgeStatus::EdgeErrModel, e.to_string()))?;
    Ok(EdgeAnswer {
        json: CString::new(json).unwrap_or_default(),
        prediction_id: CString::new(response.prediction_id.unwrap_or_default()).unwrap_or_default(),
        rows: response.results.len(),
        latency_ms: response.latency_ms,
        outputs,
    })
}

/// An input buffer owned by the library, filled in place by the caller (opaque): see
/// [`edge_input_buffer_new`].
pub struct EdgeInputBuffer {
    buffer: InputBuffer,
}

/// Borrows an input buffer for input `index` of `model` with `rank` dimensions at `shape` (the
/// input's shape, its dynamic batch dimension given): the caller writes the input straight into
/// [`edge_input_buffer_data`] and passes the buffer to [`edge_predict_buffers`], so the input is
/// never copied on its way to the engine. On the `cuda` engine the buffer is page-locked host
/// memory mapped into the device ([`edge_input_buffer_pinned`]), so its upload is one DMA with no
/// staging copy. Allocate once and reuse it for every call; free it with
/// [`edge_input_buffer_free`] before its model.
///
/// # Safety
/// `model` is a live model, `shape` points to `rank` sizes, `out` to writable storage for a
/// pointer.
#[no_mangle]
pub unsafe extern "C" fn edge_input_buffer_new(
    model: *const EdgeModel,
    index: usize,
    shape: *const usize,
    rank: usize,
    out: *mut *mut EdgeInputBuffer,
) -> EdgeStatus {
    boundary(|| {
        out_ptr(out)?;
        // SAFETY: the caller promises a live model.
        let model = unsafe { live_model(model)? };
        if rank > 16 || (rank > 0 && shape.is_null()) {
            return Err(Failure::argument("shape is NULL or its rank is over 16"));
        }
        let shape = if rank == 0 {
            &[][..]
        } else {
            // SAFETY: not NULL (checked), and the caller promises `rank` sizes.
            unsafe { std::slice::from_raw_parts(shape, rank) }
        };
        let buffer = model.input_buffer(index, shape)?;
        let buffer = Box::into_raw(Box::new(EdgeInputBuffer { buffer }));
        // SAFETY: `out` is not NULL (checked) and the caller promises it is writable.
        unsafe { *out = buffer };
        Ok(())
    })
}

/// The buffer's elements, row-major, of the input's element type (`EDGE_DTYPE_*`, aligned for
/// it), to write into; `*len_bytes` receives its size in bytes when not NULL. The pointer stays
/// valid until the buffer is freed. Each [`edge_predict_buffers`] normalizes the values in place
/// (the bundle's preprocessing): write the next input in full before the next call. NULL when
/// `buffer` is NULL.
///
/// # Safety
/// `buffer` is NULL or a live buffer not in use by a running [`edge_predict_buffers`];
/// `len_bytes` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn edge_input_buffer_data(
    buffer: *mut EdgeInputBuffer,
    len_bytes: *mut usize,
) -> *mut c_void {
    // SAFETY: the caller promises NULL or a live buffer nobody else is using.
    let Some(b) = (unsafe { buffer.as_mut() }) else {
        return std::ptr::null_mut();
    };
    match catch_unwind(AssertUnwindSafe(|| {
        b.buffer
            .as_mut_bytes()
            .map(|bytes| (bytes.as_mut_ptr(), bytes.len()))
    })) {
        Ok(Ok((ptr, len))) => {
            if !len_bytes.is_null() {
                // SAFETY: not NULL, and the caller promises it is writable.
                unsafe { *len_bytes = len };
            }
            ptr.cast()
        }
        Ok(Err(e)) => {
            set_last_error(&e.to_string());
            std::ptr::null_mut()
        }
        Err(_) => std::ptr::null_mut(),
    }
}

/// 1 when the engine page-locked the buffer for its device (the `cuda` engine), else 0.
///
/// # Safety
/// `buffer` is NULL or a live buffer.
#[no_mangle]
pub unsafe extern "C" fn edge_input_buffer_pinned(buffer: *const EdgeInputBuffer) -> i32 {
    // SAFETY: the caller promises NULL or a live buffer.
    unsafe { buffer.as_ref() }.is_some_and(|b| b.buffer.is_pinned()) as i32
}

/// [`edge_predict`] on input buffers the caller filled in place: `buffers` holds `n_buffers`
/// buffers from [`edge_input_buffer_new`], one per model input, in input order. A buffer may be
/// used by one call at a time.
///
/// # Safety
/// `model` is a live model, `buffers` points to `n_buffers` live, distinct buffers, `out` to
/// writable storage for a pointer.
#[no_mangle]
pub unsafe extern "C" fn edge_predict_buffers(
    model: *const EdgeModel,
    buffers: *const *mut EdgeInputBuffer,
    n_buffers: usize,
    out: *mut *mut EdgeAnswer,
) -> EdgeStatus {
    boundary(|| {
        out_ptr(out)?;
        // SAFETY: the caller promises a live model.
        let handle = unsafe { live_handle(model)? };
        let model = &handle.model;
        if n_buffers > 0 && buffers.is_null() {
            return Err(Failure::argument("buffers is NULL"));
        }
        let pointers = if n_buffers == 0 {
            &[][..]
        } else {
            // SAFETY: not NULL (checked), and the caller promises `n_buffers` pointers.
            unsafe { std::slice::from_raw_parts(buffers, n_buffers) }
        };
        for (i, p) in pointers.iter().enumerate() {
            if p.is_null() {
                return Err(Failure::argument(format!("buffer {i} is NULL")));
            }
            if pointers[..i].contains(p) {
                return Err(Failure::argument(format!("buffer {i} is passed twice")));
            }
        }
        let mut borrowed: Vec<&mut InputBuffer> = pointers
            .iter()
            // SAFETY: each is not NULL and distinct (checked), and the caller promises live
            // buffers no other call is using: one unique borrow each.
            .map(|&p| unsafe { &mut (*p).buffer })
            .collect();
        let mut response = model.predict_buffers(&mut borrowed, &RAW_OUTPUTS)?;
        handle.feedback.record(&mut response);
        let answer = Box::into_raw(Box::new(answer_of(response)?));
        // SAFETY: `out` is not NULL (checked) and the caller promises it is writable.
        unsafe { *out = answer };
        Ok(())
    })
}

/// Frees an input buffer (NULL is ignored). No call may be using it.
///
/// # Safety
/// `buffer` is NULL or was returned by [`edge_input_buffer_new`] and not freed yet.
#[no_mangle]
pub unsafe extern "C" fn edge_input_buffer_free(buffer: *mut EdgeInputBuffer) {
    if !buffer.is_null() {
        // SAFETY: the caller promises a buffer from edge_input_buffer_new, not freed yet.
        let _ = catch_unwind(AssertUnwindSafe(|| drop(unsafe { Box::from_raw(buffer) })));
    }
}

/// The answer as JSON, the same document the agent's `POST /v1/predict` returns:
/// `{"model", "version", "bundle", "results": [...], "latency_ms"}`. Owned by the answer.
///
/// # Safety
/// `answer` is NULL or a live answer.
#[no_mangle]
pub unsafe extern "C" fn edge_answer_json(answer: *const EdgeAnswer) -> *const c_char {
    // SAFETY: the caller promises NULL or a live answer.
    match unsafe { answer.as_ref() } {
        Some(a) => a.json.as_ptr(),
        None => c"".as_ptr(),
    }
}

/// The answer's prediction id, to send its ground truth with ([`edge_feedback_label`],
/// [`edge_feedback_value`], [`edge_feedback_reward`]); `""` for NULL. Valid until the answer is
/// freed.
///
/// # Safety
/// `answer` is NULL or a live answer.
#[no_mangle]
pub unsafe extern "C" fn edge_answer_prediction_id(answer: *const EdgeAnswer) -> *const c_char {
    // SAFETY: the caller promises NULL or a live answer.
    match unsafe { answer.as_ref() } {
        Some(a) => a.prediction_id.as_ptr(),
        None => c"".as_ptr(),
    }
}

/// Rows in the answer (the input's batch size); 0 for NULL.
///
/// # Safety
/// `answer` is NULL or a live answer.
#[no_mangle]
pub unsafe extern "C" fn edge_answer_rows(answer: *const EdgeAnswer) -> usize {
    // SAFETY: the caller promises NULL or a live answer.
    unsafe { answer.as_ref() }.map_or(0, |a| a.rows)
}

/// Time spent inside the runtime for this call, in milliseconds; 0 for NULL.
///
/// # Safety
/// `answer` is NULL or a live answer.
#[no_mangle]
pub unsafe extern "C" fn edge_answer_latency_ms(answer: *const EdgeAnswer) -> f64 {
    // SAFETY: the caller promises NULL or a live answer.
    unsafe { answer.as_ref() }.map_or(0.0, |a| a.latency_ms)
}

/// Number of raw output tensors in the answer; 0 for NULL.
///
/// # Safety
/// `answer` is NULL or a live answer.
#[no_mangle]
pub unsafe extern "C" fn edge_answer_output_count(answer: *const EdgeAnswer) -> usize {
    // SAFETY: the caller promises NULL or a live answer.
    unsafe { answer.as_ref() }.map_or(0, |a| a.outputs.len())
}

/// Raw output `index` of the model (before the bundle's post-processing, e.g. logits), as f32.
/// The view's pointers live as long as the answer.
///
/// # Safety
/// `answer` is a live answer, `out` points to writable storage for a view.
#[no_mangle]
pub unsafe extern "C" fn edge_answer_output(
    answer: *const EdgeAnswer,
    index: usize,
    out: *mut EdgeOutputView,
) -> EdgeStatus {
    boundary(|| {
        // SAFETY: the caller promises a live answer.
        let answer =
            unsafe { answer.as_ref() }.ok_or_else(|| Failure::argument("answer is NULL"))?;
        // SAFETY: the caller promises writable storage for a view.
        let out = unsafe { out.as_mut() }
            .ok_or_else(|| Failure::argument("the output pointer is NULL"))?;
        let o = answer.outputs.get(index).ok_or_else(|| {
            Failure::argument(format!(
                "output {index} does not exist (the model has {})",
                answer.outputs.len()
            ))
        })?;
        *out = EdgeOutputView {
            name: o.name.as_ptr(),
            shape: o.shape.as_ptr(),
            rank: o.shape.len(),
            data: o.data.as_ptr(),
            len: o.data.len(),
        };
        Ok(())
    })
}

/// Frees an answer (NULL is ignored).
///
/// # Safety
/// `answer` is NULL or was returned by [`edge_predict`] and not freed yet.
#[no_mangle]
pub unsafe extern "C" fn edge_answer_free(answer: *mut EdgeAnswer) {
    if !answer.is_null() {
        // SAFETY: the caller promises an answer from edge_predict, not freed yet.
        let _ = catch_unwind(AssertUnwindSafe(|| drop(unsafe { Box::from_raw(answer) })));
    }
}

fn give_string(text: String, out: *mut *mut c_char) -> Result<(), Failure> {
    let text = CString::new(text).map_err(|e| Failure(EdgeStatus::EdgeErrModel, e.to_string()))?;
    // SAFETY: the caller checked `out` with `out_ptr`.
    unsafe { *out = text.into_raw() };
    Ok(())
}

/// What the model is, as JSON: `{"model", "version", "bundle", "engine", "inputs": [{"name",
/// "dtype", "shape"}], "outputs": [...]}` (`shape` entries are numbers, or names for dynamic
/// dims). `*out` is a string to free with [`edge_string_free`].
///
/// # Safety
/// `model` is a live model, `out` points to writable storage for a pointer.
#[no_mangle]
pub unsafe extern "C" fn edge_model_info_json(
    model: *const EdgeModel,
    out: *mut *mut c_char,
) -> EdgeStatus {
    boundary(|| {
        out_ptr(out)?;
        // SAFETY: the caller promises a live model.
        let model = unsafe { live_model(model)? };
        let r = model.model_ref();
        let inputs: Vec<_> = model
            .manifest()
            .inputs
            .iter()
            .map(|i| {
                serde_json::json!({
                    "name": i.name,
                    "dtype": i.dtype.to_string(),
                    "shape": i.shape.iter().map(|d| match d {
                        edge_runtime::bundle::Dim::Fixed(n) => serde_json::json!(n),
                        edge_runtime::bundle::Dim::Named(s) => serde_json::json!(s),
                    }).collect::<Vec<_>>(),
                })
            })
            .collect();
        let info = serde_json::json!({
            "model": r.model,
            "version": r.version,
            "bundle": r.bundle,
            "engine": model.engine_name(),
            "engine_choice": model.engine_choice(),
            "inputs": inputs,
            "outputs": model.output_names(),
        });
        give_string(info.to_string(), out)
    })
}

/// The model's counters since it was loaded, as JSON (`requests`, `errors`, `rows`, `latency_ms`
/// histogram, `confidence` histogram, `class_counts`, ...). `*out` is a string to free with
/// [`edge_string_free`].
///
/// # Safety
/// `model` is a live model, `out` points to writable storage for a pointer.
#[no_mangle]
pub unsafe extern "C" fn edge_model_stats_json(
    model: *const EdgeModel,
    out: *mut *mut c_char,
) -> EdgeStatus {
    boundary(|| {
        out_ptr(out)?;
        // SAFETY: the caller promises a live model.
        let model = unsafe { live_model(model)? };
        let json = serde_json::to_string(&model.stats())
            .map_err(|e| Failure(EdgeStatus::EdgeErrModel, e.to_string()))?;
        give_string(json, out)
    })
}

fn join(model: *const EdgeModel, id: *const c_char, row: usize, truth: Truth) -> EdgeStatus {
    boundary(|| {
        // SAFETY: the caller promises a live model.
        let handle = unsafe { live_handle(model)? };
        // SAFETY: the caller promises NULL or a NUL-terminated string.
        let id = unsafe { c_str(id, "prediction_id")? };
        handle
            .feedback
            .join(id, row, truth)
            .map(|_| ())
            .map_err(|e| Failure(EdgeStatus::EdgeErrFeedback, e.to_string()))
    })
}

/// Ground truth for row `row` of the answer `prediction_id`: its true class label (the label's
/// text, e.g. `"7"`). Counted in [`edge_model_feedback_json`].
///
/// # Safety
/// `model` is a live model; `prediction_id` and `label` are NUL-terminated strings.
#[no_mangle]
pub unsafe extern "C" fn edge_feedback_label(
    model: *const EdgeModel,
    prediction_id: *const c_char,
    row: usize,
    label: *const c_char,
) -> EdgeStatus {
    // SAFETY: the caller promises NULL or a NUL-terminated string.
    match unsafe { c_str(label, "label") } {
        Ok(l) => join(model, prediction_id, row, Truth::Label(l.to_string())),
        Err(f) => boundary(|| Err(f)),
    }
}

/// Ground truth for row `row` of the regression answer `prediction_id`: the true value.
///
/// # Safety
/// `model` is a live model; `prediction_id` is a NUL-terminated string.
#[no_mangle]
pub unsafe extern "C" fn edge_feedback_value(
    model: *const EdgeModel,
    prediction_id: *const c_char,
    row: usize,
    value: f64,
) -> EdgeStatus {
    join(model, prediction_id, row, Truth::Value(value))
}

/// A reward for row `row` of the answer `prediction_id` (any task, e.g. 1 for a click).
///
/// # Safety
/// `model` is a live model; `prediction_id` is a NUL-terminated string.
#[no_mangle]
pub unsafe extern "C" fn edge_feedback_reward(
    model: *const EdgeModel,
    prediction_id: *const c_char,
    row: usize,
    reward: f64,
) -> EdgeStatus {
    join(model, prediction_id, row, Truth::Reward(reward))
}

/// The ground truth joined since the last call, per model version, as JSON: `{"1.0.0":
/// {"labelled": …, "correct": …, "per_class": [[label, labelled, correct], …], "values": …,
/// "abs_error": …, …}}`. `*out` is a string to free with [`edge_string_free`].
///
/// # Safety
/// `model` is a live model, `out` points to writable storage for a pointer.
#[no_mangle]
pub unsafe extern "C" fn edge_model_feedback_json(
    model: *const EdgeModel,
    out: *mut *mut c_char,
) -> EdgeStatus {
    boundary(|| {
        out_ptr(out)?;
        // SAFETY: the caller promises a live model.
        let handle = unsafe { live_handle(model)? };
        let json = serde_json::to_string(&handle.feedback.take())
            .map_err(|e| Failure(EdgeStatus::EdgeErrModel, e.to_string()))?;
        give_string(json, out)
    })
}

/// Frees a string returned through an `out` parameter (NULL is ignored).
///
/// # Safety
/// `text` is NULL or was returned by this library and not freed yet.
#[no_mangle]
pub unsafe extern "C" fn edge_string_free(text: *mut c_char) {
    if !text.is_null() {
        // SAFETY: the caller promises a string from this library, not freed yet.
        drop(unsafe { CString::from_raw(text) });
    }
}
