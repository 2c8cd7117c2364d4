//! Trial-window verdicts on the real digits model: healthy traffic passes (only after the
//! window), inverted images fail on input and prediction PSI, an impossible latency budget fails
//! on p99, NaN traffic fails on error rate, and what happened before the trial does not count.

use std::time::{Duration, Instant};

mod common;

use common::{read_npy, Signing};
use device_agent::trial::{TrialWindow, Verdict};
use edge_runtime::bundle::HealthSpec;
use edge_runtime::{Model, TensorData};

fn digits(health: Option<HealthSpec>) -> Model {
    let signing = Signing::new();
    signing.load(&signing.digits(|spec| spec.health = health))
}

/// One request per test row, optionally transformed.
fn serve(model: &Model, rows: usize, transform: impl Fn(f32) -> f32) {
    let x = read_npy("digits/test_x.npy");
    for i in 0..rows {
        let mut row = x.rows(i % 360, i % 360 + 1);
        if let TensorData::F32(v) = &mut row.data {
            v.iter_mut().for_each(|p| *p = transform(*p));
        }
        let _ = model.predict(vec![row]);
    }
}

#[test]
fn healthy_traffic_passes_only_after_the_window_and_needs_enough_requests() {
    let model = digits(None);
    // inverted traffic before the trial must not count against it
    serve(&model, 200, |p| 16.0 - p);
    let t0 = Instant::now();
    let trial = TrialWindow::start(&model, t0);
    serve(&model, 50, |p| p);
    assert!(
        matches!(
            trial.evaluate(&model, t0 + Duration::from_secs(120)),
            Verdict::Pending(_)
        ),
        "50 < min_requests 100"
    );
    serve(&model, 310, |p| p);
    match trial.evaluate(&model, t0 + Duration::from_secs(30)) {
        Verdict::Pending(r) => assert_eq!(r.requests, 360),
        other => panic!("before the 60 s window: {other:?}"),
    }
    match trial.evaluate(&model, t0 + Duration::from_secs(61)) {
        Verdict::Pass(r) => {
            assert_eq!(r.error_rate, 0.0);
            assert!(r.prediction_psi.unwrap() < 0.1, "{r:?}");
            assert!(r.worst_feature.as_ref().unwrap().1 < 0.25, "{r:?}");
            assert!(r.p99_ms.unwrap() > 0.0);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_shifted_input_distribution_fails_the_trial_on_psi() {
    let model = digits(None);
    let t0 = Instant::now();
    let trial = TrialWindow::start(&model, t0);
    serve(&model, 150, |p| 16.0 - p); // a camera with the wrong polarity
    match trial.evaluate(&model, t0 + Duration::from_secs(1)) {
        Verdict::Fail(reason, r) => {
            assert!(reason.contains("PSI"), "{reason}");
            assert!(r.worst_feature.unwrap().1 > 0.25);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_latency_budget_the_model_cannot_meet_fails_on_p99() {
    let model = digits(Some(HealthSpec {
        max_p99_ms: Some(0.000_1),
        ..HealthSpec::default()
    }));
    let t0 = Instant::now();
    let trial = TrialWindow::start(&model, t0);
    serve(&model, 120, |p| p);
    match trial.evaluate(&model, t0) {
        Verdict::Fail(reason, _) => assert!(reason.starts_with("p99 latency"), "{reason}"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn failing_requests_fail_the_trial_on_error_rate() {
    let model = digits(None);
    let t0 = Instant::now();
    let trial = TrialWindow::start(&model, t0);
    serve(&model, 100, |p| p);
    serve(&model, 20, |_| f32::NAN); // refused by the NaN policy: counted as errors
    match trial.evaluate(&model, t0) {
        Verdict::Fail(reason, r) => {
            assert!(reason.starts_with("error rate"), "{reason}");
            assert_eq!(
                (r.requests, (r.error_rate * 120.0).round() as u64),
                (120, 20)
            );
        }
        other => panic!("{other:?}"),
    }
}
