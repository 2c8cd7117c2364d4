//! The runtime end to end on the sample models: pack → verify → load (self-test) → predict.

mod common;

use common::*;
use edge_protocol::Prediction;
use edge_runtime::bundle::{self, StoredTensor};
use edge_runtime::engine::EngineOptions;
use edge_runtime::stats::{psi, Histogram};
use edge_runtime::{InputError, LoadOptions, Model, ModelError, Tensor, TensorData};

fn load(bytes: &[u8], trust: &edge_runtime::trust::TrustRoot) -> Model {
    Model::load(bytes, trust, &LoadOptions::default()).unwrap()
}

fn digits() -> (
    Model,
    Vec<u8>,
    edge_runtime::SigningKey,
    edge_runtime::trust::TrustRoot,
) {
    let signer = key();
    let (_, trust) = trust_with(&key(), &[&signer], 1, u64::MAX);
    let bytes = pack_model("digits", std::slice::from_ref(&signer));
    (load(&bytes, &trust), bytes, signer, trust)
}

fn classes(model: &Model, x: &Tensor) -> Vec<usize> {
    let r = model.predict(vec![x.clone()]).unwrap();
    assert_eq!(r.model.model, "digits");
    assert!(r.model.bundle.starts_with("sha256:"));
    r.results
        .iter()
        .map(|p| match p {
            Prediction::Classification {
                class_index,
                probability,
                predictions,
                ..
            } => {
                assert!((0.0..=1.0).contains(probability));
                assert_eq!(predictions.len(), 3, "spec top_k");
                *class_index
            }
            other => panic!("{other:?}"),
        })
        .collect()
}

#[test]
fn digits_bundle_reaches_the_accuracy_of_the_model() {
    let (model, ..) = digits();
    let x = read_npy("digits/test_x.npy");
    let y = read_npy("digits/test_y.npy").to_f64_vec();
    let predicted = classes(&model, &x);
    let accuracy = predicted
        .iter()
        .zip(&y)
        .filter(|(p, t)| **p == **t as usize)
        .count() as f64
        / y.len() as f64;
    assert!(accuracy >= 0.97, "accuracy {accuracy}");
    let stats = model.stats();
    assert_eq!(stats.requests, 1);
    assert_eq!(stats.rows, y.len() as u64);
    assert_eq!(stats.class_counts.iter().sum::<u64>(), y.len() as u64);
}

#[test]
fn a_bundle_whose_self_test_fails_never_loads() {
    let (_, bytes, signer, trust) = digits();
    let (mut manifest, payload) = parts(&bytes);
    let out = &mut manifest.self_test.vectors[0].outputs[0];
    let mut t = out.to_tensor().unwrap();
    if let TensorData::F32(v) = &mut t.data {
        v[3] += 0.5;
    }
    *out = StoredTensor::from_tensor(&t);
    let altered = bundle::build(manifest, &payload, &[signer]);
    match Model::load(&altered, &trust, &LoadOptions::default()) {
        Err(ModelError::SelfTest {
            index: 0,
            element: 3,
            ..
        }) => {}
        other => panic!("{other:?}"),
    }
}

#[test]
fn bad_inputs_get_typed_errors_and_are_counted() {
    let (model, ..) = digits();
    let ok = vec![0.5f32; 64];
    type Check = fn(&InputError) -> bool;
    let cases: Vec<(Vec<Tensor>, Check)> = vec![
        (vec![Tensor::f32(vec![1, 1, 8, 7], vec![0.0; 56])], |e| {
            matches!(e, InputError::WrongShape { .. })
        }),
        (vec![Tensor::f32(vec![1, 8, 8], ok.clone())], |e| {
            matches!(e, InputError::WrongShape { .. })
        }),
        (
            vec![Tensor {
                shape: vec![1, 1, 8, 8],
                data: TensorData::F64(vec![0.0; 64]),
            }],
            |e| matches!(e, InputError::WrongDtype { .. }),
        ),
        (
            vec![Tensor {
                shape: vec![1, 1, 8, 8],
                data: TensorData::I64(vec![0; 64]),
            }],
            |e| matches!(e, InputError::WrongDtype { .. }),
        ),
        (
            vec![Tensor::f32(vec![1, 1, 8, 8], {
                let mut v = ok.clone();
                v[9] = f32::NAN;
                v
            })],
            |e| matches!(e, InputError::NonFinite { index: 9, .. }),
        ),
        (
            vec![Tensor::f32(vec![1, 1, 8, 8], {
                let mut v = ok.clone();
                v[0] = f32::INFINITY;
                v
            })],
            |e| matches!(e, InputError::NonFinite { index: 0, .. }),
        ),
        (vec![Tensor::f32(vec![0, 1, 8, 8], vec![])], |e| {
            matches!(e, InputError::Empty { .. })
        }),
        (vec![Tensor::f32(vec![1, 1, 80, 8], vec![0.0; 640])], |e| {
            matches!(e, InputError::WrongShape { .. })
        }),
        (vec![Tensor::f32(vec![1, 1, 8, 8], vec![0.0; 640])], |e| {
            matches!(e, InputError::ElementCount { .. })
        }),
        (
            vec![Tensor::f32(vec![513, 1, 8, 8], vec![0.0; 513 * 64])],
            |e| matches!(e, InputError::BatchTooLarge { max: 512, .. }),
        ),
        (vec![], |e| {
            matches!(
                e,
                InputError::WrongInputCount {
                    expected: 1,
                    got: 0
                }
            )
        }),
    ];
    let n = cases.len() as u64;
    for (inputs, expected) in cases {
        match model.predict(inputs) {
            Err(ModelError::Input(e)) => assert!(expected(&e), "unexpected {e:?}"),
            other => panic!("expected an input error, got {other:?}"),
        }
    }
    assert!(model
        .predict(vec![Tensor::f32(vec![1, 1, 8, 8], ok)])
        .is_ok());
    let stats = model.stats();
    assert_eq!((stats.requests, stats.errors), (n + 1, n));
}

#[test]
fn diabetes_interval_covers_the_test_split_at_its_stated_rate() {
    let signer = key();
    let (_, trust) = trust_with(&key(), &[&signer], 1, u64::MAX);
    let model = load(&pack_model("diabetes", &[signer]), &trust);
    let x = read_npy("diabetes/test_x.npy");
    let y = read_npy("diabetes/test_y.npy").to_f64_vec();
    let r = model.predict(vec![x]).unwrap();
    let mut inside = 0;
    for (p, t) in r.results.iter().zip(&y) {
        match p {
            Prediction::Regression {
                value,
                interval: Some(i),
            } => {
                assert!(i.lower < *value && *value < i.upper);
                assert_eq!(i.coverage, 0.9);
                inside += usize::from(i.lower <= *t && *t <= i.upper);
            }
            other => panic!("{other:?}"),
        }
    }
    let n = y.len() as f64;
    let empirical = inside as f64 / n;
    // sampling error of a proportion over n test rows: 3 standard deviations either side
    let sd = (0.9f64 * 0.1 / n).sqrt();
    assert!(
        (empirical - 0.9).abs() <= 3.0 * sd,
        "coverage {empirical} on {n} rows, stated 0.9 ± {}",
        3.0 * sd
    );
}

#[test]
fn reference_statistics_detect_a_shifted_input_distribution() {
    let (model, ..) = digits();
    let reference = &model.manifest().reference;
    assert_eq!(reference.rows, 200);
    assert_eq!(reference.features.len(), 64);
    let x = read_npy("digits/test_x.npy");
    let values = x.to_f64_vec();
    // feature 36 (a central pixel): PSI of the test split vs the calibration reference is small…
    let reference_hist = &reference.features[36].histogram;
    let observe = |vals: &mut dyn Iterator<Item = f64>| {
        let mut h = Histogram::with_edges(reference_hist.edges.clone());
        vals.for_each(|v| h.observe(v));
        psi(&reference_hist.counts, &h.counts).unwrap()
    };
    let same = observe(&mut values.iter().skip(36).step_by(64).copied());
    // …and large for inverted images (a camera with the wrong polarity)
    let shifted = observe(&mut values.iter().skip(36).step_by(64).map(|v| 16.0 - v));
    assert!(same < 0.1, "PSI on the test split {same}");
    assert!(shifted > 0.25, "PSI on inverted inputs {shifted}");
    // the predicted class distribution of the test split is close to the reference
    model.predict(vec![x]).unwrap();
    let stats = model.stats();
    let p = psi(&reference.class_counts, &stats.class_counts).unwrap();
    assert!(p < 0.1, "prediction PSI {p}");
    // the live input statistics sample at most MAX_FEATURE_SAMPLES elements of the 360x64 batch,
    // spread over every feature
    let sampled: u64 = stats.features.iter().map(|h| h.total()).sum();
    assert!(
        sampled > 0 && sampled <= edge_runtime::MAX_FEATURE_SAMPLES as u64,
        "{sampled}"
    );
    assert!(stats.features.iter().all(|h| h.total() > 0));
    let live = psi(
        &reference.features[36].histogram.counts,
        &stats.features[36].counts,
    )
    .unwrap();
    assert!(live < 0.25, "live PSI of feature 36 {live}");
}

#[test]
fn a_model_is_shared_across_threads_and_two_threads_give_the_same_answers() {
    let (model, bytes, _, trust) = digits();
    let x = read_npy("digits/test_x.npy").rows(0, 32);
    let expected = model.run(vec![x.clone()]).unwrap();
    four_callers_get(std::sync::Arc::new(model), &x, &expected);
    let two = Model::load(
        &bytes,
        &trust,
        &LoadOptions {
            engine: EngineOptions {
                threads: Some(2),
                ..Default::default()
            },
            ..Default::default()
        },
    )
    .unwrap();
    let got = two.run(vec![x.clone()]).unwrap();
    let (a, b) = (got[0].to_f64_vec(), expected[0].to_f64_vec());
    assert!(a.iter().zip(&b).all(|(x, y)| (x - y).abs() < 1e-4));
    // runs go through the model's own pool: callers on many threads at once share it
    four_callers_get(std::sync::Arc::new(two), &x, &got);
}

/// int8 MobileNetV2 (our quantizer's QDQ graph: integer 1×1, depthwise and first-conv ops on
/// x86 with AVX-512 VNNI and aarch64 with dotprod, float ones elsewhere) on two threads gives
/// the one-thread answer bit for bit (each output is computed whole by one thread), also to
/// four callers at once, who take turns on the model's workers.
#[test]
fn int8_mobilenetv2_on_two_threads_answers_four_callers_as_on_one() {
    use edge_pack::quantize::{quantize, QuantizeOptions, RangeMethod};
    let onnx = std::fs::read(models().join("mobilenetv2/model.onnx")).unwrap();
    let x = read_npy("mobilenetv2/ref_input.npy");
    let calibration = read_npy("mobilenetv2/calib_x.npy").rows(0, 2);
    let options = QuantizeOptions {
        weights_only: false,
        range: RangeMethod::MinMax,
    };
    let (int8, _) = quantize(&onnx, &[vec![calibration]], &options).unwrap();
    let signer = key();
    let (_, trust) = trust_with(&key(), &[&signer], 1, u64::MAX);
    let bytes = edge_pack::pack::pack(
        &int8,
        spec("mobilenetv2"),
        None,
        std::slice::from_ref(&signer),
        now(),
    )
    .unwrap()
    .0;
    let on = |threads| {
        let engine = EngineOptions {
            threads: Some(threads),
            ..Default::default()
        };
        let options = LoadOptions {
            engine,
            ..Default::default()
        };
        Model::load(&bytes, &trust, &options).unwrap()
    };
    let expected = on(1).run(vec![x.clone()]).unwrap();
    let two = std::sync::Arc::new(on(2));
    assert_eq!(two.run(vec![x.clone()]).unwrap(), expected);
    four_callers_get(two, &x, &expected);
}

/// A thread count above the device's cores (a bundle's hint, an agent's setting) is capped at
/// the cores: a multi-threaded run's helpers spin while it is on.
#[test]
fn threads_beyond_the_cores_are_capped_at_the_cores() {
    let (_, bytes, _, trust) = digits();
    let engine = EngineOptions {
        threads: Some(100_000),
        ..Default::default()
    };
    let options = LoadOptions {
        engine,
        ..Default::default()
    };
    let model = Model::load(&bytes, &trust, &options).unwrap();
    let cores = std::thread::available_parallelism().unwrap().get();
    let device = &model.engine_choice().device;
    let expected = match cores {
        1 => "cpu (1 thread;".to_string(),
        n => format!("cpu ({n} threads;"),
    };
    assert!(device.starts_with(&expected), "{device}");
    let x = read_npy("digits/test_x.npy").rows(0, 4);
    assert_eq!(model.run(vec![x.clone()]).unwrap().len(), 1);
}

/// Four threads run `model` on `x` at once; each gets `expected`.
fn four_callers_get(model: std::sync::Arc<Model>, x: &Tensor, expected: &[Tensor]) {
    let handles: Vec<_> = (0..4)
        .map(|_| {
            let (m, x) = (model.clone(), x.clone());
            std::thread::spawn(move || m.run(vec![x]).unwrap())
        })
        .collect();
    for h in handles {
        assert_eq!(h.join().unwrap(), expected);
    }
}

#[test]
fn a_spec_that_does_not_match_the_graph_is_refused_at_pack_time() {
    let onnx = std::fs::read(models().join("digits/model.onnx")).unwrap();
    let mut spec = spec("digits");
    spec.input.as_mut().unwrap().name = "pixels".into();
    let err = edge_pack::pack::pack(&onnx, spec, None, &[key()], now()).unwrap_err();
    assert!(err.to_string().contains("'image'"), "{err}");
}

#[test]
fn packing_without_calibration_records_synthetic_self_tests_and_no_reference() {
    let signer = key();
    let (_, trust) = trust_with(&key(), &[&signer], 1, u64::MAX);
    let onnx = std::fs::read(models().join("digits/model.onnx")).unwrap();
    let (bytes, report) = edge_pack::pack::pack(
        &onnx,
        spec("digits"),
        None,
        std::slice::from_ref(&signer),
        now(),
    )
    .unwrap();
    assert_eq!((report.self_test_vectors, report.calibration_rows), (4, 0));
    let model = load(&bytes, &trust);
    assert!(model.manifest().reference.features.is_empty());
    assert_eq!(model.manifest().self_test.vectors.len(), 4);

    // a regression spec that promises an interval cannot be packed without targets
    let onnx = std::fs::read(models().join("diabetes/model.onnx")).unwrap();
    let calibration = edge_pack::pack::Calibration {
        inputs: read_npy("diabetes/calib_x.npy"),
        targets: None,
    };
    let err = edge_pack::pack::pack(
        &onnx,
        spec("diabetes"),
        Some(&calibration),
        &[signer],
        now(),
    )
    .unwrap_err();
    assert!(err.to_string().contains("calibration targets"), "{err}");
}

#[test]
fn vibration_bundle_separates_worn_machines_and_sees_them_as_drift() {
    let signer = key();
    let (_, trust) = trust_with(&key(), &[&signer], 1, u64::MAX);
    let bytes = pack_model("vibration", std::slice::from_ref(&signer));
    let x = read_npy("vibration/test_x.npy");
    let y = read_npy("vibration/test_y.npy").to_f64_vec();
    let model = load(&bytes, &trust);
    let mut correct = 0;
    for start in (0..y.len()).step_by(64) {
        let end = (start + 64).min(y.len());
        let r = model.predict(vec![x.rows(start, end)]).unwrap();
        for (p, t) in r.results.iter().zip(&y[start..end]) {
            if let Prediction::Classification { class_index, .. } = p {
                correct += usize::from(*class_index == *t as usize);
            }
        }
    }
    let accuracy = correct as f64 / y.len() as f64;
    assert!(accuracy >= 0.97, "accuracy {accuracy}");

    // The reference statistics come from healthy windows only (one drift feature per axis): worn
    // windows shift the distribution the agent reports as PSI, healthy ones do not.
    let worst_psi = |label: f64| {
        let m = load(&bytes, &trust);
        let rows: Vec<usize> = (0..y.len()).filter(|&i| y[i] == label).take(64).collect();
        for &i in &rows {
            m.predict(vec![x.rows(i, i + 1)]).unwrap();
        }
        let reference = &m.manifest().reference.features;
        assert_eq!(reference.len(), 3);
        reference
            .iter()
            .zip(&m.stats().features)
            .map(|(r, o)| psi(&r.histogram.counts, &o.counts).unwrap())
            .fold(0.0f64, f64::max)
    };
    let (healthy, worn) = (worst_psi(0.0), worst_psi(1.0));
    assert!(healthy < 0.1, "healthy PSI {healthy}");
    assert!(worn > 0.25, "worn PSI {worn}");
}

#[test]
fn a_profile_names_the_plans_ops_and_refuses_bad_inputs() {
    let (model, ..) = digits();
    let x = read_npy("digits/test_x.npy");
    let per_row: usize = x.shape[1..].iter().product();
    let mut shape = x.shape.clone();
    shape[0] = 4;
    let rows = Tensor {
        shape,
        data: match &x.data {
            TensorData::F32(v) => TensorData::F32(v[..4 * per_row].to_vec()),
            other => panic!("{other:?}"),
        },
    };
    let ops = model.profile(vec![rows.clone()], 5).unwrap();
    assert!(!ops.is_empty());
    assert!(ops.windows(2).all(|w| w[0].ms >= w[1].ms), "slowest first");
    assert!(ops.iter().all(|o| o.nodes >= 1 && o.ms >= 0.0));
    // the graph's work is somewhere: a convolution or product among the op kinds
    assert!(
        ops.iter()
            .any(|o| o.op.contains("Conv") || o.op.contains("MatMul") || o.op.contains("Edge")),
        "{ops:?}"
    );
    // the inputs are checked as for a run
    let wrong = Tensor {
        shape: vec![4, 3],
        data: TensorData::F32(vec![0.0; 12]),
    };
    assert!(matches!(
        model.profile(vec![wrong], 5),
        Err(ModelError::Input(_))
    ));
}
