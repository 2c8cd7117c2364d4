//! The C ABI called as C would call it: through raw pointers, checking status codes and messages,
//! including every way a caller can get it wrong.
//!
//! Every `unsafe` block here is one C ABI call (or reading what it returned), sound under that
//! function's own `# Safety` section, and several deliberately break it (NULL pointers) to check
//! the refusals; one comment per call would only repeat those sections.
#![allow(clippy::undocumented_unsafe_blocks)]

mod common;

use std::ffi::{c_char, c_void, CStr, CString};
use std::ptr::{null, null_mut};

use edge_runtime::trust::{RootAnchor, TrustRoot};
use edge_runtime::{LoadOptions, Model, TensorData};
use edgefleet::*;

fn last_error() -> String {
    unsafe { CStr::from_ptr(edge_last_error()) }
        .to_string_lossy()
        .into_owned()
}

fn load(fleet: &common::Fleet, root_pub: &str, bundle: &[u8]) -> (EdgeStatus, *mut EdgeModel) {
    let root = CString::new(root_pub).unwrap();
    let mut model = null_mut();
    let status = unsafe {
        edge_model_load(
            bundle.as_ptr(),
            bundle.len(),
            fleet.trust.as_ptr(),
            fleet.trust.len(),
            root.as_ptr(),
            &mut model,
        )
    };
    (status, model)
}

fn view(data: &[f32], shape: &[usize]) -> EdgeTensorView {
    EdgeTensorView {
        dtype: EDGE_DTYPE_F32,
        data: data.as_ptr().cast(),
        shape: shape.as_ptr(),
        rank: shape.len(),
    }
}

fn predict(
    model: *const EdgeModel,
    input: EdgeTensorView,
) -> Result<serde_json::Value, (EdgeStatus, String)> {
    let mut answer = null_mut();
    let status = unsafe { edge_predict(model, &input, 1, &mut answer) };
    if status != EdgeStatus::EdgeOk {
        assert!(answer.is_null());
        return Err((status, last_error()));
    }
    let json = unsafe { CStr::from_ptr(edge_answer_json(answer)) }
        .to_str()
        .unwrap()
        .to_owned();
    unsafe { edge_answer_free(answer) };
    Ok(serde_json::from_str(&json).unwrap())
}

fn take_string(status: EdgeStatus, text: *mut c_char) -> serde_json::Value {
    assert_eq!(status, EdgeStatus::EdgeOk, "{}", last_error());
    let json = unsafe { CStr::from_ptr(text) }.to_str().unwrap().to_owned();
    unsafe { edge_string_free(text) };
    serde_json::from_str(&json).unwrap()
}

#[test]
fn c_callers_get_the_same_answers_as_rust_callers() {
    let fleet = common::digits_fleet();
    let (status, model) = load(&fleet, &fleet.root_pub, &fleet.bundle);
    assert_eq!(status, EdgeStatus::EdgeOk, "{}", last_error());

    let root = edge_runtime::keys::parse_public_key(&fleet.root_pub, "root").unwrap();
    let trust = TrustRoot::from_bytes(&fleet.trust, RootAnchor::Pinned(root)).unwrap();
    let rust_model = Model::load(&fleet.bundle, &trust, &LoadOptions::default()).unwrap();

    for i in 0..20 {
        let digit = common::digit(i);
        let TensorData::F32(pixels) = &digit.data else {
            panic!("f32 digits")
        };
        let c = predict(model, view(pixels, &digit.shape)).unwrap();
        let rust = rust_model.predict(vec![digit.clone()]).unwrap();
        let rust: serde_json::Value =
            serde_json::from_str(&serde_json::to_string(&rust).unwrap()).unwrap();
        assert_eq!(c["results"], rust["results"], "row {i}");
        assert_eq!(c["bundle"], rust["bundle"]);
    }

    // raw outputs: the logits, 1x10
    let digit = common::digit(0);
    let TensorData::F32(pixels) = &digit.data else {
        unreachable!()
    };
    let input = view(pixels, &digit.shape);
    let mut answer = null_mut();
    assert_eq!(
        unsafe { edge_predict(model, &input, 1, &mut answer) },
        EdgeStatus::EdgeOk
    );
    assert_eq!(unsafe { edge_answer_rows(answer) }, 1);
    assert!(unsafe { edge_answer_latency_ms(answer) } > 0.0);
    assert_eq!(unsafe { edge_answer_output_count(answer) }, 1);
    let mut out = EdgeOutputView {
        name: null(),
        shape: null(),
        rank: 0,
        data: null(),
        len: 0,
    };
    assert_eq!(
        unsafe { edge_answer_output(answer, 0, &mut out) },
        EdgeStatus::EdgeOk
    );
    assert_eq!(
        unsafe { CStr::from_ptr(out.name) }.to_str().unwrap(),
        "logits"
    );
    assert_eq!(
        unsafe { std::slice::from_raw_parts(out.shape, out.rank) },
        &[1, 10]
    );
    let logits = unsafe { std::slice::from_raw_parts(out.data, out.len) };
    let want = rust_model.run(vec![digit.clone()]).unwrap();
    let TensorData::F32(want) = &want[0].data else {
        panic!("f32 logits")
    };
    assert_eq!(logits, &want[..]);
    assert_eq!(
        unsafe { edge_answer_output(answer, 1, &mut out) },
        EdgeStatus::EdgeErrArgument
    );
    assert!(
        last_error().contains("output 1 does not exist"),
        "{}",
        last_error()
    );
    unsafe { edge_answer_free(answer) };

    let mut text = null_mut();
    let info = take_string(unsafe { edge_model_info_json(model, &mut text) }, text);
    assert_eq!(info["model"], "digits");
    assert_eq!(info["engine"], "cpu");
    assert_eq!(
        info["inputs"][0]["shape"],
        serde_json::json!(["N", 1, 8, 8])
    );
    let stats = take_string(unsafe { edge_model_stats_json(model, &mut text) }, text);
    assert_eq!(stats["requests"], 21);
    assert_eq!(stats["errors"], 0);
    unsafe { edge_model_free(model) };
}

#[test]
fn input_buffers_filled_in_place_give_the_same_answers() {
    let fleet = common::digits_fleet();
    let (status, model) = load(&fleet, &fleet.root_pub, &fleet.bundle);
    assert_eq!(status, EdgeStatus::EdgeOk, "{}", last_error());
    let shape = [1usize, 1, 8, 8];
    let mut buffer = null_mut();
    assert_eq!(
        unsafe { edge_input_buffer_new(model, 0, shape.as_ptr(), 4, &mut buffer) },
        EdgeStatus::EdgeOk,
        "{}",
        last_error()
    );
    assert_eq!(unsafe { edge_input_buffer_pinned(buffer) }, 0, "cpu engine");
    let mut len = 0usize;
    let data = unsafe { edge_input_buffer_data(buffer, &mut len) };
    assert!(!data.is_null());
    assert_eq!(len, 64 * 4);
    for i in 0..10 {
        let digit = common::digit(i);
        let TensorData::F32(pixels) = &digit.data else {
            panic!("f32 digits")
        };
        // the app writes the input where the runtime will read it
        unsafe { std::ptr::copy_nonoverlapping(pixels.as_ptr(), data.cast::<f32>(), 64) };
        let mut answer = null_mut();
        let buffers = [buffer];
        assert_eq!(
            unsafe { edge_predict_buffers(model, buffers.as_ptr(), 1, &mut answer) },
            EdgeStatus::EdgeOk,
            "{}",
            last_error()
        );
        let json: serde_json::Value = serde_json::from_str(
            unsafe { CStr::from_ptr(edge_answer_json(answer)) }
                .to_str()
                .unwrap(),
        )
        .unwrap();
        unsafe { edge_answer_free(answer) };
        let want = predict(model, view(pixels, &digit.shape)).unwrap();
        assert_eq!(json["results"], want["results"], "row {i}");
    }
    // misuse: wrong shape, NULL buffers, a buffer twice, the wrong count
    let mut other = null_mut();
    let bad = [1usize, 1, 8, 9];
    assert_eq!(
        unsafe { edge_input_buffer_new(model, 0, bad.as_ptr(), 4, &mut other) },
        EdgeStatus::EdgeErrInput
    );
    assert!(last_error().contains("shape"), "{}", last_error());
    assert!(other.is_null());
    let mut answer = null_mut();
    assert_eq!(
        unsafe { edge_predict_buffers(model, null(), 1, &mut answer) },
        EdgeStatus::EdgeErrArgument
    );
    let twice = [buffer, buffer];
    assert_eq!(
        unsafe { edge_predict_buffers(model, twice.as_ptr(), 2, &mut answer) },
        EdgeStatus::EdgeErrArgument
    );
    assert!(last_error().contains("twice"), "{}", last_error());
    assert_eq!(
        unsafe { edge_predict_buffers(model, twice.as_ptr(), 0, &mut answer) },
        EdgeStatus::EdgeErrInput
    );
    assert!(answer.is_null());
    assert!(unsafe { edge_input_buffer_data(null_mut(), null_mut()) }.is_null());
    unsafe { edge_input_buffer_free(buffer) };
    unsafe { edge_input_buffer_free(null_mut()) };
    unsafe { edge_model_free(model) };
}

#[test]
fn load_failures_are_codes_with_messages() {
    let fleet = common::digits_fleet();
    let (status, model) = load(&fleet, &fleet.other_root_pub, &fleet.bundle);
    assert_eq!(status, EdgeStatus::EdgeErrTrust);
    assert!(model.is_null());
    assert!(!last_error().is_empty());

    let mut tampered = fleet.bundle.clone();
    let n = tampered.len();
    tampered[n - 100] ^= 1;
    let (status, _) = load(&fleet, &fleet.root_pub, &tampered);
    assert_eq!(status, EdgeStatus::EdgeErrBundle, "{}", last_error());

    let (status, _) = load(&fleet, "not a key", &fleet.bundle);
    assert_eq!(status, EdgeStatus::EdgeErrKey, "{}", last_error());

    let (status, _) = load(&fleet, &fleet.root_pub, b"EFB?");
    assert_eq!(status, EdgeStatus::EdgeErrBundle);

    // NULLs
    let root = CString::new(fleet.root_pub.clone()).unwrap();
    let status = unsafe {
        edge_model_load(
            null(),
            10,
            fleet.trust.as_ptr(),
            fleet.trust.len(),
            root.as_ptr(),
            &mut null_mut(),
        )
    };
    assert_eq!(status, EdgeStatus::EdgeErrArgument);
    assert_eq!(last_error(), "bundle is NULL");
    let status = unsafe {
        edge_model_load(
            fleet.bundle.as_ptr(),
            fleet.bundle.len(),
            fleet.trust.as_ptr(),
            fleet.trust.len(),
            root.as_ptr(),
            null_mut(),
        )
    };
    assert_eq!(status, EdgeStatus::EdgeErrArgument);

    // files
    let path = |n: &str| CString::new(fleet.path(n).to_str().unwrap()).unwrap();
    let mut model = null_mut();
    let status = unsafe {
        edge_model_load_files(
            path("missing.efb").as_ptr(),
            path("trust.cbor").as_ptr(),
            path("root.pub").as_ptr(),
            &mut model,
        )
    };
    assert_eq!(status, EdgeStatus::EdgeErrIo);
    assert!(last_error().contains("missing.efb"), "{}", last_error());
    let status = unsafe {
        edge_model_load_files(
            path("digits.efb").as_ptr(),
            path("trust.cbor").as_ptr(),
            path("other-root.pub").as_ptr(),
            &mut model,
        )
    };
    assert_eq!(status, EdgeStatus::EdgeErrTrust);
    let status = unsafe {
        edge_model_load_files(
            path("digits.efb").as_ptr(),
            path("trust.cbor").as_ptr(),
            path("root.pub").as_ptr(),
            &mut model,
        )
    };
    assert_eq!(status, EdgeStatus::EdgeOk, "{}", last_error());
    unsafe { edge_model_free(model) };
    unsafe { edge_model_free(null_mut()) };
    unsafe { edge_answer_free(null_mut()) };
    unsafe { edge_string_free(null_mut()) };
}

#[test]
fn bad_inputs_are_refused_with_codes_and_counted() {
    let fleet = common::digits_fleet();
    let (status, model) = load(&fleet, &fleet.root_pub, &fleet.bundle);
    assert_eq!(status, EdgeStatus::EdgeOk);
    let pixels = vec![1.0f32; 64];

    let (code, msg) = predict(model, view(&pixels, &[1, 1, 4, 16])).unwrap_err();
    assert_eq!(code, EdgeStatus::EdgeErrInput);
    assert!(msg.contains("shape"), "{msg}");

    let mut nan = pixels.clone();
    nan[5] = f32::NAN;
    let (code, msg) = predict(model, view(&nan, &[1, 1, 8, 8])).unwrap_err();
    assert_eq!(code, EdgeStatus::EdgeErrInput);
    assert!(
        msg.to_lowercase().contains("nan") || msg.contains("finite"),
        "{msg}"
    );

    let mut bad = view(&pixels, &[1, 1, 8, 8]);
    bad.dtype = 77;
    assert_eq!(
        predict(model, bad).unwrap_err().0,
        EdgeStatus::EdgeErrArgument
    );

    let ints = vec![1i32; 64];
    let mut wrong_type = view(&pixels, &[1, 1, 8, 8]);
    wrong_type.dtype = EDGE_DTYPE_I32;
    wrong_type.data = ints.as_ptr().cast();
    let (code, msg) = predict(model, wrong_type).unwrap_err();
    assert_eq!(code, EdgeStatus::EdgeErrInput);
    assert!(msg.contains("i32") || msg.contains("dtype"), "{msg}");

    let bytes = vec![0u8; 64 * 4 + 1];
    let misaligned = EdgeTensorView {
        dtype: EDGE_DTYPE_F32,
        data: unsafe { bytes.as_ptr().add(1) }.cast::<c_void>(),
        shape: [1usize, 1, 8, 8].as_ptr(),
        rank: 4,
    };
    if !(misaligned.data as usize).is_multiple_of(4) {
        let (code, msg) = predict(model, misaligned).unwrap_err();
        assert_eq!(code, EdgeStatus::EdgeErrArgument);
        assert!(msg.contains("aligned"), "{msg}");
    }

    let overflow = [usize::MAX, 2, 8, 8];
    let (code, msg) = predict(model, view(&pixels, &overflow)).unwrap_err();
    assert_eq!(code, EdgeStatus::EdgeErrArgument);
    assert!(msg.contains("overflows"), "{msg}");

    let null_data = EdgeTensorView {
        dtype: EDGE_DTYPE_F32,
        data: null(),
        shape: [1usize, 1, 8, 8].as_ptr(),
        rank: 4,
    };
    assert_eq!(
        predict(model, null_data).unwrap_err().0,
        EdgeStatus::EdgeErrArgument
    );
    assert_eq!(
        predict(null(), view(&pixels, &[1, 1, 8, 8])).unwrap_err().0,
        EdgeStatus::EdgeErrArgument
    );

    let mut answer = null_mut();
    assert_eq!(
        unsafe { edge_predict(model, null(), 1, &mut answer) },
        EdgeStatus::EdgeErrArgument
    );
    assert_eq!(
        unsafe { edge_predict(model, null(), 0, &mut answer) },
        EdgeStatus::EdgeErrInput
    );

    // a good call still works after all of that, and the refused calls that reached the model
    // are in its error count
    assert!(predict(model, view(&pixels, &[1, 1, 8, 8])).is_ok());
    let mut text = null_mut();
    let stats = take_string(unsafe { edge_model_stats_json(model, &mut text) }, text);
    assert_eq!(stats["requests"], 5, "{stats}");
    assert_eq!(stats["errors"], 4, "{stats}");
    unsafe { edge_model_free(model) };
}

#[test]
fn one_model_serves_several_threads() {
    let fleet = common::digits_fleet();
    let (status, model) = load(&fleet, &fleet.root_pub, &fleet.bundle);
    assert_eq!(status, EdgeStatus::EdgeOk);
    let shared = model as usize;
    let answers: Vec<_> = (0..4)
        .map(|t| {
            std::thread::spawn(move || {
                let digit = common::digit(t);
                let TensorData::F32(pixels) = &digit.data else {
                    unreachable!()
                };
                (0..10)
                    .map(|_| {
                        predict(shared as *const EdgeModel, view(pixels, &digit.shape)).unwrap()
                            ["results"][0]["label"]
                            .clone()
                    })
                    .collect::<Vec<_>>()
            })
        })
        .map(|h| h.join().unwrap())
        .collect();
    for labels in answers {
        assert!(labels.windows(2).all(|w| w[0] == w[1]));
    }
    // the last error is per thread: another thread's failure does not show here
    std::thread::spawn(move || {
        assert_eq!(
            predict(shared as *const EdgeModel, view(&[0.0; 3], &[1, 3]))
                .unwrap_err()
                .0,
            EdgeStatus::EdgeErrInput
        );
    })
    .join()
    .unwrap();
    assert!(!last_error().contains("shape"));
    unsafe { edge_model_free(model) };
}

#[test]
fn the_version_is_the_crate_version() {
    let v = unsafe { CStr::from_ptr(edge_version()) }.to_str().unwrap();
    assert_eq!(v, env!("CARGO_PKG_VERSION"));
}

#[test]
fn ground_truth_is_joined_to_answers_by_prediction_id() {
    let fleet = common::digits_fleet();
    let (status, model) = load(&fleet, &fleet.root_pub, &fleet.bundle);
    assert_eq!(status, EdgeStatus::EdgeOk, "{}", last_error());
    let digit = common::digit(0);
    let TensorData::F32(pixels) = &digit.data else {
        panic!("f32 digits")
    };
    let input = view(pixels, &digit.shape);
    let mut answer = null_mut();
    assert_eq!(
        unsafe { edge_predict(model, &input, 1, &mut answer) },
        EdgeStatus::EdgeOk
    );
    let id = unsafe { CStr::from_ptr(edge_answer_prediction_id(answer)) }.to_owned();
    let json: serde_json::Value = serde_json::from_str(
        unsafe { CStr::from_ptr(edge_answer_json(answer)) }
            .to_str()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(json["prediction_id"].as_str(), id.to_str().ok());
    let predicted = CString::new(json["results"][0]["label"].as_str().unwrap()).unwrap();
    unsafe { edge_answer_free(answer) };

    let st = unsafe { edge_feedback_label(model, id.as_ptr(), 0, predicted.as_ptr()) };
    assert_eq!(st, EdgeStatus::EdgeOk, "{}", last_error());
    // the same row twice, a row that does not exist, an id never given, a value for a class
    let again = unsafe { edge_feedback_label(model, id.as_ptr(), 0, predicted.as_ptr()) };
    assert_eq!(again, EdgeStatus::EdgeErrFeedback);
    assert!(
        last_error().contains("already has feedback"),
        "{}",
        last_error()
    );
    let no_row = unsafe { edge_feedback_reward(model, id.as_ptr(), 3, 1.0) };
    assert_eq!(no_row, EdgeStatus::EdgeErrFeedback);
    let bogus = CString::new("nope-1").unwrap();
    let unknown = unsafe { edge_feedback_reward(model, bogus.as_ptr(), 0, 1.0) };
    assert_eq!(unknown, EdgeStatus::EdgeErrFeedback);
    assert!(
        last_error().contains("no answer with prediction id"),
        "{}",
        last_error()
    );
    let wrong = unsafe { edge_feedback_value(model, id.as_ptr(), 0, 3.0) };
    assert_eq!(wrong, EdgeStatus::EdgeErrFeedback);
    let null_label = unsafe { edge_feedback_label(model, id.as_ptr(), 0, null()) };
    assert_eq!(null_label, EdgeStatus::EdgeErrArgument);
    assert_eq!(
        unsafe { edge_feedback_reward(null(), id.as_ptr(), 0, 1.0) },
        EdgeStatus::EdgeErrArgument
    );

    let mut text = null_mut();
    let sums = take_string(unsafe { edge_model_feedback_json(model, &mut text) }, text);
    let version = sums.as_object().unwrap().values().next().unwrap().clone();
    assert_eq!(
        (version["labelled"].as_u64(), version["correct"].as_u64()),
        (Some(1), Some(1))
    );
    let mut text = null_mut();
    let empty = take_string(unsafe { edge_model_feedback_json(model, &mut text) }, text);
    assert_eq!(empty, serde_json::json!({}), "taken by the first call");
    unsafe { edge_model_free(model) };
}
