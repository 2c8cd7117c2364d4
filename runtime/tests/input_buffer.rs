//! Input buffers the app borrows and fills in place: the same answers as `predict_with` on every
//! sample model, reusable across calls, counted in the stats, and every misuse refused with an
//! error (shape, element type, NaN, order, count).

mod common;

use common::*;
use edge_runtime::engine::EngineKind;
use edge_runtime::{InputError, Model, ModelError, PredictOptions, Tensor, TensorData};

fn rows(x: &Tensor, n: usize) -> Tensor {
    let row: usize = x.shape[1..].iter().product();
    let TensorData::F32(v) = &x.data else {
        panic!("f32 sample inputs")
    };
    Tensor {
        shape: [n]
            .into_iter()
            .chain(x.shape[1..].iter().copied())
            .collect(),
        data: TensorData::F32(v[..n * row].to_vec()),
    }
}

fn raw() -> PredictOptions {
    PredictOptions {
        top_k: None,
        raw: true,
    }
}

/// Buffers and owned tensors give identical raw outputs and answers, call after call.
fn check_same_answers(model: &Model, x: &Tensor) {
    let mut buffer = model.input_buffer(0, &x.shape).unwrap();
    let TensorData::F32(values) = &x.data else {
        panic!()
    };
    let want = model.predict_with(vec![x.clone()], &raw()).unwrap();
    for _ in 0..3 {
        // written in place; the previous call left normalized values there
        buffer
            .as_mut_slice::<f32>()
            .unwrap()
            .copy_from_slice(values);
        let got = model
            .predict_buffers(std::slice::from_mut(&mut buffer), &raw())
            .unwrap();
        assert_eq!(
            serde_json::to_value(&got.results).unwrap(),
            serde_json::to_value(&want.results).unwrap()
        );
        assert_eq!(got.raw.len(), want.raw.len());
        for (g, w) in got.raw.iter().zip(&want.raw) {
            assert_eq!(g.shape, w.shape);
            assert_eq!(g.data, w.data, "{}", g.name);
        }
    }
}

#[test]
fn buffers_give_the_same_answers_as_tensors_on_every_sample_model() {
    for (model, input) in [
        ("diabetes", "diabetes/test_x.npy"),
        ("vibration", "vibration/test_x.npy"),
        ("digits", "digits/test_x.npy"),
    ] {
        let m = load_on(model, EngineKind::Cpu);
        let x = read_npy(input);
        check_same_answers(&m, &rows(&x, 1));
        check_same_answers(&m, &rows(&x, 4.min(x.shape[0])));
    }
}

#[test]
fn predictions_from_buffers_are_counted() {
    let m = load_on("digits", EngineKind::Cpu);
    let x = rows(&read_npy("digits/test_x.npy"), 1);
    let before = m.stats().requests;
    let mut buffers = m.input_buffers().unwrap();
    assert_eq!(buffers.len(), 1);
    assert_eq!(buffers[0].shape(), &[1, 1, 8, 8]);
    let TensorData::F32(v) = &x.data else {
        panic!()
    };
    buffers[0].fill(v).unwrap();
    m.predict_buffers(&mut buffers, &PredictOptions::default())
        .unwrap();
    assert_eq!(m.stats().requests, before + 1);
}

#[test]
fn the_cpu_engine_does_not_pin_and_says_so() {
    let m = load_on("digits", EngineKind::Cpu);
    let b = m.input_buffer(0, &[2, 1, 8, 8]).unwrap();
    assert!(!b.is_pinned());
    assert!(b.pin_note().unwrap().contains("ordinary memory"), "{b:?}");
}

fn input_error(e: ModelError) -> InputError {
    match e {
        ModelError::Input(i) => i,
        other => panic!("not an input error: {other}"),
    }
}

#[test]
fn misuse_is_refused_with_an_error() {
    let m = load_on("digits", EngineKind::Cpu);
    // shape that does not fit the spec, at allocation
    let e = input_error(m.input_buffer(0, &[1, 1, 8, 9]).unwrap_err());
    assert!(matches!(e, InputError::WrongShape { .. }), "{e}");
    // batch over the model's max, and zero-sized
    assert!(m.input_buffer(0, &[100_000, 1, 8, 8]).is_err());
    assert!(m.input_buffer(0, &[0, 1, 8, 8]).is_err());
    // an input the model does not have
    assert!(m.input_buffer(1, &[1, 1, 8, 8]).is_err());
    // wrong element type
    let mut b = m.input_buffer(0, &[1, 1, 8, 8]).unwrap();
    assert!(b.as_mut_slice::<i64>().is_err());
    assert!(b.fill(&[1.0f32; 3]).is_err());
    // NaN under nan_policy = reject, found in the buffer at run time
    b.as_mut_slice::<f32>().unwrap()[5] = f32::NAN;
    let e = input_error(
        m.predict_buffers(std::slice::from_mut(&mut b), &PredictOptions::default())
            .unwrap_err(),
    );
    assert!(matches!(e, InputError::NonFinite { index: 5, .. }), "{e}");
    // wrong number of buffers
    let e = input_error(
        m.run_buffers::<edge_runtime::InputBuffer>(&mut [])
            .unwrap_err(),
    );
    assert!(matches!(e, InputError::WrongInputCount { .. }), "{e}");
    // the error was counted, the model still serves
    assert_eq!(m.stats().errors, 1);
    b.as_mut_slice::<f32>().unwrap()[5] = 0.0;
    m.run_buffers(std::slice::from_mut(&mut b)).unwrap();
}

#[cfg(feature = "gpu")]
#[test]
fn buffers_run_on_the_gpu_engine_too() {
    let cpu = load_on("digits", EngineKind::Cpu);
    let gpu = load_on("digits", EngineKind::Gpu);
    assert_eq!(gpu.engine_choice().used, "gpu", "{:?}", gpu.engine_choice());
    let x = rows(&read_npy("digits/test_x.npy"), 8);
    let TensorData::F32(v) = &x.data else {
        panic!()
    };
    let want = cpu.run(vec![x.clone()]).unwrap();
    let mut b = gpu.input_buffer(0, &x.shape).unwrap();
    b.fill(v).unwrap();
    let got = gpu.run_buffers(std::slice::from_mut(&mut b)).unwrap();
    let (TensorData::F32(g), TensorData::F32(w)) = (&got[0].data, &want[0].data) else {
        panic!()
    };
    let worst = g
        .iter()
        .zip(w)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    assert!(worst < 1e-3, "{worst}");
}
