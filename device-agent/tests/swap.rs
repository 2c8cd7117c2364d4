//! Atomic activation under load: two client threads hammer `predict` while the model is swapped
//! 20 times between two versions. No request may fail, and every answer must be the answer of the
//! version it names (the two versions compute different outputs for the same input).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

mod common;

use common::{read_npy, Signing};
use device_agent::host::ModelHost;
use edge_protocol::Prediction;
use edge_runtime::{Model, PredictOptions};

/// Digits bundles: v1 as shipped; v2 with a different input scale, so its outputs differ.
fn bundles() -> (Signing, Vec<u8>, Vec<u8>) {
    let signing = Signing::new();
    let v1 = signing.digits(|_| {});
    let v2 = signing.digits(|spec| {
        spec.version = "2.0.0".into();
        spec.input
            .as_mut()
            .unwrap()
            .normalize
            .as_mut()
            .unwrap()
            .scale = Some(0.05);
    });
    (signing, v1, v2)
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
    let (signing, v1, v2) = bundles();
    let load = |b: &[u8]| Arc::new(signing.load(b));
    let input = read_npy("digits/test_x.npy").rows(5, 6);
    let expected = |m: &Model| top(&m.predict(vec![input.clone()]).unwrap().results[0]);
    let (e1, e2) = (expected(&load(&v1)), expected(&load(&v2)));
    assert_ne!(e1, e2, "the two versions must be distinguishable");

    let host = Arc::new(ModelHost::new(Default::default()));
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
