//! A shadow on one device, against a scripted server: the candidate (a digits model that names
//! every class one off) is downloaded, verified and loaded beside the active model; the app's
//! answers keep coming from the active one; the telemetry windows carry the shadow's runs and
//! its (zero) agreement, and the feedback the app sent; after a kill -9 the shadow is back; a
//! desired state without it stops it.

use std::time::{Duration, Instant};

mod common;

use common::fleet::{free_port, http_post, Agent, Fleet, Traffic};
use edge_fleet_kit::fixtures::relabel;
use edge_protocol::{DesiredShadow, Step};

const T: Duration = Duration::from_secs(60);

fn wait_until<V>(what: &str, mut f: impl FnMut() -> Option<V>) -> V {
    let deadline = Instant::now() + T;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn shadow_version(agent: &Agent) -> Option<String> {
    agent.status()["models"][0]["shadow"]["version"]
        .as_str()
        .map(str::to_string)
}

#[test]
fn a_shadow_runs_beside_the_active_model_never_answers_and_survives_a_restart() {
    let fleet = Fleet::new();
    let state = tempfile::tempdir().unwrap();
    let config = fleet.agent_config("dev-s", state.path(), free_port(), "");
    // one-second telemetry windows
    let env = [("EDGE_AGENT_TELEMETRY__WINDOW_SECONDS", "1")];
    let mut agent = Agent::start(&config, state.path(), &env);
    agent.wait_ready();
    let v1 = fleet.publish_artifact(&fleet.digits("1.0.0", |_| {}));
    fleet.send_desired("dev-s", 1, vec![v1.clone()]);
    fleet.wait_event("1.0.0", Step::Activated, T);
    let traffic = Traffic::start(&agent.api, Duration::from_millis(10));
    fleet.wait_event("1.0.0", Step::Committed, T);
    traffic.stop();

    // the candidate names every class one off
    let flipped = fleet.digits("2.0.0", |s| relabel(s, |c| (c + 1) % 10));
    let v2 = fleet.publish_artifact(&flipped);
    let shadow = DesiredShadow {
        model: v2,
        sample_ppm: 1_000_000,
        cpu_millicores: 500,
    };
    fleet.send_desired_shadows("dev-s", 2, vec![v1.clone()], vec![shadow.clone()]);
    fleet.wait_event("2.0.0", Step::Shadowing, T);
    assert_eq!(shadow_version(&agent).as_deref(), Some("2.0.0"));
    assert_eq!(
        agent.status()["models"][0]["slots"]["shadow"]["version"],
        "2.0.0"
    );

    let traffic = Traffic::start(&agent.api, Duration::from_millis(10));
    let window = wait_until("a shadow window with compared answers", || {
        fleet
            .windows()
            .into_iter()
            .find(|w| w.version == "2.0.0" && w.shadow.as_ref().is_some_and(|s| s.compared >= 20))
    });
    let agreement = window.shadow.clone().unwrap();
    assert_eq!(agreement.active_version, "1.0.0");
    assert_eq!(agreement.agreed, 0, "every label one off: {agreement:?}");
    assert!(window.requests >= agreement.compared, "{window:?}");
    // ground truth for an answer: joined, and reported with the version that answered
    let (code, answer) = agent.predict_row(&[0.0; 64]);
    assert_eq!((code, answer["version"].as_str()), (200, Some("1.0.0")));
    let id = answer["prediction_id"].as_str().unwrap();
    let label = answer["results"][0]["label"].as_str().unwrap();
    let body = serde_json::json!({"prediction_id": id, "label": label}).to_string();
    let url = agent.url("/v1/models/digits/feedback");
    let (code, text) = http_post(&url, "application/json", body.as_bytes(), &[]).unwrap();
    assert_eq!(code, 200, "{text}");
    assert!(text.contains("\"correct\":true"), "{text}");
    let (code, text) = http_post(&url, "application/json", body.as_bytes(), &[]).unwrap();
    assert_eq!(code, 409, "the same row twice: {text}");
    let bogus = serde_json::json!({"prediction_id": "feed-1", "label": "1"}).to_string();
    let (code, _) = http_post(&url, "application/json", bogus.as_bytes(), &[]).unwrap();
    assert_eq!(code, 404);
    let both = serde_json::json!({"prediction_id": id, "label": "1", "reward": 1}).to_string();
    let (code, _) = http_post(&url, "application/json", both.as_bytes(), &[]).unwrap();
    assert_eq!(code, 400);
    wait_until("the feedback in a window of 1.0.0", || {
        fleet.windows().into_iter().find(|w| {
            w.version == "1.0.0"
                && w.shadow.is_none()
                && w.feedback
                    .as_ref()
                    .is_some_and(|f| f.labelled == 1 && f.correct == 1)
        })
    });
    let answers = traffic.stop();
    assert!(!answers.is_empty());
    assert!(
        answers
            .iter()
            .all(|(c, v)| *c == 200 && v["version"] == "1.0.0"),
        "every answer from the active model"
    );

    // kill -9: the shadow is back after the restart, and still answers nothing
    agent.kill9();
    let mut agent = Agent::start(&config, state.path(), &env);
    agent.wait_ready();
    wait_until("the shadow after the restart", || {
        (shadow_version(&agent).as_deref() == Some("2.0.0")).then_some(())
    });
    let (code, answer) = agent.predict_row(&[0.0; 64]);
    assert_eq!((code, answer["version"].as_str()), (200, Some("1.0.0")));

    // a desired state without it stops it
    fleet.send_desired_shadows("dev-s", 3, vec![v1], vec![]);
    wait_until("the shadow to stop", || {
        let s = agent.status();
        (s["models"][0]["shadow"].is_null() && s["models"][0]["slots"]["shadow"].is_null())
            .then_some(())
    });
}
