//! Atomic activation under load: two client threads hammer `predict` while the model is swapped
//! 20 times between two versions. No request may fail, and every answer must be the answer of the
//! version it names (the two versions compute different outputs for the same input).

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use device_agent::host::ModelHost;
use edge_protocol::Prediction;
use edge_runtime::pack::{pack, Calibration, PackSpec};
use edge_runtime::trust::{self, RootAnchor, TrustRoot, TrustSpec};
use edge_runtime::{npy, LoadOptions, Model, PredictOptions, Tensor};

fn models() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../models")
}

fn read_npy(rel: &str) -> Tensor {
    npy::read(std::fs::File::open(models().join(rel)).unwrap(), 1 << 30).unwrap()
}

/// Digits bundles: v1 as shipped; v2 with a different input scale, so its outputs differ.
fn bundles() -> (TrustRoot, Vec<u8>, Vec<u8>) {
    let root = edge_runtime::keys::generate().unwrap();
    let signer = edge_runtime::keys::generate().unwrap();
    let spec = TrustSpec {
        version: 1,
        created: 0,
        expires: u64::MAX,
        signers: vec![("s".into(), signer.verifying_key())],
        threshold: 1,
        director: None,
    };
    let doc = trust::create(&spec, &root, None).unwrap();
    let trust = TrustRoot::from_bytes(&doc, RootAnchor::Pinned(root.verifying_key())).unwrap();
    let onnx = std::fs::read(models().join("digits/model.onnx")).unwrap();
    let base: PackSpec =
        toml::from_str(&std::fs::read_to_string(models().join("digits/spec.toml")).unwrap())
            .unwrap();
    let calibration = Calibration {
        inputs: read_npy("digits/calib_x.npy"),
        targets: None,
    };
    let v1 = pack(
        &onnx,
        base.clone(),
        Some(&calibration),
        std::slice::from_ref(&signer),
        0,
    )
    .unwrap()
    .0;
    let mut spec2 = base;
    spec2.version = "2.0.0".into();
    spec2
        .input
        .as_mut()
        .unwrap()
        .normalize
        .as_mut()
        .unwrap()
        .scale = Some(0.05);
    let v2 = pack(&onnx, spec2, Some(&calibration), &[signer], 0)
        .unwrap()
        .0;
    (trust, v1, v2)
}

fn top(p: &Prediction) -> (usize, f32) {
    match p {
        Prediction::Classification {
            class_index,
            probability,
            ..
        } => (*class_index, *probability),
        other => panic!("{other:?}"),
    }
}

#[test]
fn twenty_swaps_under_load_fail_no_request_and_every_answer_names_its_version() {
    let (trust, v1, v2) = bundles();
    let load = |b: &[u8]| Arc::new(Model::load(b, &trust, &LoadOptions::default()).unwrap());
    let input = read_npy("digits/test_x.npy").rows(5, 6);
    let expected = |m: &Model| top(&m.predict(vec![input.clone()]).unwrap().results[0]);
    let (e1, e2) = (expected(&load(&v1)), expected(&load(&v2)));
    assert_ne!(e1, e2, "the two versions must be distinguishable");

    let host = Arc::new(ModelHost::new());
    host.activate(load(&v1));
    let stop = Arc::new(AtomicBool::new(false));
    let answers = Arc::new(Mutex::new(Vec::new()));
    let clients: Vec<_> = (0..2)
        .map(|_| {
            let (host, stop, answers, input) =
                (host.clone(), stop.clone(), answers.clone(), input.clone());
            std::thread::spawn(move || {
                let mut failures = Vec::new();
                let mut local = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    match host.predict("digits", vec![input.clone()], &PredictOptions::default()) {
                        Ok(r) => local.push((r.model.version.clone(), top(&r.results[0]))),
                        Err(e) => failures.push(e.to_string()),
                    }
                }
                answers.lock().unwrap().extend(local);
                failures
            })
        })
        .collect();

    for swap in 0..20 {
        std::thread::sleep(Duration::from_millis(5));
        // each swap loads a fresh model (verify + optimize + self-test), as the agent does
        let next = if swap % 2 == 0 { load(&v2) } else { load(&v1) };
        host.activate(next);
    }
    std::thread::sleep(Duration::from_millis(5));
    stop.store(true, Ordering::Relaxed);
    let failures: Vec<String> = clients
        .into_iter()
        .flat_map(|c| c.join().unwrap())
        .collect();
    assert!(failures.is_empty(), "failed requests: {failures:?}");

    let answers = answers.lock().unwrap();
    assert!(
        answers.len() >= 100,
        "only {} requests overlapped the swaps",
        answers.len()
    );
    let mut per_version = [0usize; 2];
    for (version, got) in answers.iter() {
        let want = match version.as_str() {
            "1.0.0" => {
                per_version[0] += 1;
                e1
            }
            "2.0.0" => {
                per_version[1] += 1;
                e2
            }
            other => panic!("unknown version {other}"),
        };
        assert_eq!(
            got.0, want.0,
            "answer named {version} has another version's class"
        );
        assert!(
            (got.1 - want.1).abs() < 1e-6,
            "answer named {version} has probability {} instead of {}",
            got.1,
            want.1
        );
    }
    assert!(
        per_version.iter().all(|&n| n > 0),
        "both versions served: {per_version:?}"
    );
    // after 20 swaps (an even number) v1 is active again
    assert_eq!(
        host.list(),
        vec![("digits".to_string(), "1.0.0".to_string())]
    );
    assert!(host
        .predict("nope", vec![input], &PredictOptions::default())
        .is_err());
}
