//! End to end with the real `edge-agent` process, an in-process broker and artifact server:
//! install → trial → commit, self-test failure, trial failure and rollback, forged and replayed
//! desired states, the anti-rollback floor, sideload without a server, the local API's answers
//! and errors.

use std::time::Duration;

mod common;

use common::fleet::{free_port, http_get, http_post, Agent, Fleet, Traffic};
use edge_protocol::Step;

const T: Duration = Duration::from_secs(60);

fn served_version(agent: &Agent) -> String {
    let (code, body) = agent.predict_row(&[0.0; 64]);
    assert_eq!(code, 200, "{body}");
    body["version"].as_str().unwrap().to_string()
}

/// A device with digits 1.0.0 committed.
fn device_with_v1(fleet: &Fleet, device: &str, env: &[(&str, &str)]) -> (Agent, tempfile::TempDir) {
    let state = tempfile::tempdir().unwrap();
    let config = fleet.agent_config(device, state.path(), free_port(), "");
    let mut agent = Agent::start(&config, state.path(), env);
    agent.wait_ready();
    let v1 = fleet.publish_artifact(&fleet.digits("1.0.0", |_| {}));
    fleet.send_desired(device, 1, vec![v1]);
    fleet.wait_event("1.0.0", Step::Activated, T);
    let traffic = Traffic::start(&agent.api, Duration::from_millis(20));
    fleet.wait_event("1.0.0", Step::Committed, T);
    traffic.stop();
    (agent, state)
}

#[test]
fn desired_state_downloads_with_resume_verifies_activates_and_commits() {
    let fleet = Fleet::new();
    let state = tempfile::tempdir().unwrap();
    let config = fleet.agent_config(
        "dev-a",
        state.path(),
        free_port(),
        "[telemetry]\nwindow_seconds = 1",
    );
    let mut agent = Agent::start(&config, state.path(), &[]);
    agent.wait_ready();
    // nothing installed yet: a clear 404
    let (code, body) = agent.predict_row(&[0.0; 64]);
    assert_eq!(code, 404, "{body}");

    fleet
        .http
        .cut_next
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let v1 = fleet.publish_artifact(&fleet.digits("1.0.0", |_| {}));
    fleet.send_desired("dev-a", 1, vec![v1]);
    fleet.wait_event("1.0.0", Step::Activated, T);
    let ranges = fleet.http.ranges.lock().unwrap().clone();
    assert_eq!(
        ranges.len(),
        1,
        "the cut transfer is resumed with one Range request: {ranges:?}"
    );
    assert_ne!(ranges[0], "bytes=0-");

    let traffic = Traffic::start(&agent.api, Duration::from_millis(10));
    let committed = fleet.wait_event("1.0.0", Step::Committed, T);
    assert_eq!(committed.generation, 1);
    std::thread::sleep(Duration::from_millis(1500));
    let answers = traffic.stop();
    assert!(
        answers
            .iter()
            .all(|(c, b)| *c == 200 && b["version"] == "1.0.0"),
        "{answers:?}"
    );

    // the step order, each a signed event
    let steps: Vec<Step> = fleet
        .events()
        .iter()
        .filter(|e| e.version == "1.0.0")
        .map(|e| e.step.clone())
        .collect();
    assert_eq!(
        steps,
        vec![
            Step::Downloading,
            Step::Verified,
            Step::Activated,
            Step::Committed
        ]
    );
    // telemetry arrives, signed, with the traffic it saw
    let deadline = std::time::Instant::now() + T;
    loop {
        let requests: u64 = fleet
            .received
            .lock()
            .unwrap()
            .iter()
            .filter_map(|u| match u {
                common::fleet::Up::Telemetry(_, t) => {
                    Some(t.windows.iter().map(|w| w.requests).sum::<u64>())
                }
                _ => None,
            })
            .sum();
        if requests >= answers.len() as u64 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "telemetry counted {requests} of {} requests",
            answers.len()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // sequence numbers strictly increase, no duplicates reach the log twice with new numbers
    let seqs: Vec<u64> = fleet
        .received
        .lock()
        .unwrap()
        .iter()
        .map(|u| u.header().seq)
        .collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");

    // status and models
    let status = agent.status();
    assert_eq!(status["applied_generation"], 1);
    assert_eq!(status["models"][0]["slots"]["active"]["version"], "1.0.0");
    assert_eq!(status["models"][0]["state"], "serving");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_edge-agent"))
        .args(["status", "--config"])
        .arg(&agent.config)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("digits") && text.contains("1.0.0") && text.contains("connected"),
        "{text}"
    );
}

#[test]
fn a_bundle_failing_its_self_test_is_never_activated() {
    let fleet = Fleet::new();
    let (agent, _state) = device_with_v1(&fleet, "dev-b", &[]);
    let bad = fleet.publish_artifact(&fleet.digits_failing_self_test("2.0.0"));
    fleet.send_desired("dev-b", 2, vec![bad]);
    let failed = fleet.wait_event("2.0.0", Step::Failed, T);
    assert!(
        failed.detail.as_deref().unwrap().contains("self-test"),
        "{failed:?}"
    );
    assert!(!fleet
        .events()
        .iter()
        .any(|e| e.version == "2.0.0" && e.step == Step::Activated));
    assert_eq!(served_version(&agent), "1.0.0");
    let status = agent.status();
    assert_eq!(status["models"][0]["bad_versions"][0], "2.0.0");
}

#[test]
fn a_trial_over_its_latency_budget_is_rolled_back_and_marked_bad() {
    let fleet = Fleet::new();
    let (agent, _state) = device_with_v1(&fleet, "dev-c", &[]);
    let slow = fleet.publish_artifact(&fleet.digits("2.0.0", |s| {
        let h = s.health.as_mut().unwrap();
        h.max_p99_ms = Some(0.000_001); // no model meets a nanosecond budget
        h.trial_seconds = 30;
    }));
    fleet.send_desired("dev-c", 2, vec![slow]);
    fleet.wait_event("2.0.0", Step::Activated, T);
    let traffic = Traffic::start(&agent.api, Duration::from_millis(10));
    let rolled = fleet.wait_event("2.0.0", Step::RolledBack, T);
    let answers = traffic.stop();
    assert!(
        rolled.detail.as_deref().unwrap().contains("p99 latency"),
        "{rolled:?}"
    );
    assert!(
        answers.iter().all(|(c, _)| *c == 200),
        "no request fails across the rollback"
    );
    assert_eq!(served_version(&agent), "1.0.0");
    let status = agent.status();
    assert_eq!(status["models"][0]["bad_versions"][0], "2.0.0");
    assert_eq!(status["models"][0]["slots"]["active"]["version"], "1.0.0");
}

#[test]
fn a_prediction_distribution_far_from_the_reference_fails_the_trial() {
    let fleet = Fleet::new();
    let (agent, _state) = device_with_v1(&fleet, "dev-d", &[]);
    let drifting = fleet.publish_artifact(&fleet.digits("2.0.0", |s| {
        let h = s.health.as_mut().unwrap();
        h.max_psi = 0.25;
        h.min_requests = 30;
        h.trial_seconds = 30;
    }));
    fleet.send_desired("dev-d", 2, vec![drifting]);
    fleet.wait_event("2.0.0", Step::Activated, T);
    // the same blank image over and over: one class, far from the reference's spread
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let s = stop.clone();
    let api = agent.api.clone();
    let pump = std::thread::spawn(move || {
        while !s.load(std::sync::atomic::Ordering::Relaxed) {
            let blank = [[0.0f32; 8]; 8];
            let body = serde_json::json!({"input": [[blank]]});
            let _ = http_post(
                &format!("http://{api}/v1/models/digits/predict"),
                "application/json",
                body.to_string().as_bytes(),
                &[],
            );
        }
    });
    let rolled = fleet.wait_event("2.0.0", Step::RolledBack, T);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    pump.join().unwrap();
    assert!(
        rolled.detail.as_deref().unwrap().contains("PSI"),
        "{rolled:?}"
    );
    assert_eq!(served_version(&agent), "1.0.0");
}

#[test]
fn forged_replayed_and_stale_desired_states_are_ignored() {
    let fleet = Fleet::new();
    let (agent, _state) = device_with_v1(&fleet, "dev-e", &[]);
    let v2 = fleet.publish_artifact(&fleet.digits("2.0.0", |_| {}));
    // a genuine document (no models) moves the device to generation 7
    let genuine = fleet.seal_desired("dev-e", 7, vec![]);
    fleet.send_desired_bytes("dev-e", genuine.clone());
    let deadline = std::time::Instant::now() + T;
    while agent.status()["applied_generation"] != 7 {
        assert!(std::time::Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(50));
    }
    // signed by a key that is not the director
    let mallory = edge_runtime::keys::generate().unwrap();
    fleet.send_desired_bytes(
        "dev-e",
        fleet.seal_desired_with(&mallory, "dev-e", 8, vec![v2.clone()]),
    );
    // validly signed, but for another device
    fleet.send_desired_bytes("dev-e", fleet.seal_desired("dev-x", 9, vec![v2.clone()]));
    // validly signed, a fresh sequence number, but an older generation
    fleet.send_desired_bytes("dev-e", fleet.seal_desired("dev-e", 3, vec![v2.clone()]));
    // a newer genuine document, then the older one again, byte for byte (a replay)
    fleet.send_desired_bytes("dev-e", fleet.seal_desired("dev-e", 10, vec![]));
    fleet.send_desired_bytes("dev-e", genuine);
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        !fleet.events().iter().any(|e| e.version == "2.0.0"),
        "nothing was downloaded: {:?}",
        fleet.events()
    );
    assert_eq!(served_version(&agent), "1.0.0");
    assert_eq!(agent.status()["applied_generation"], 10);
    let log = agent.log_text();
    assert!(log.contains("bad signature"), "{log}");
    assert!(log.contains("dev-x"), "{log}");
    assert!(log.contains("not newer"), "{log}");
    assert!(log.contains("replayed"), "{log}");
}

#[test]
fn a_downgrade_below_the_floor_is_refused() {
    let fleet = Fleet::new();
    let (agent, _state) = device_with_v1(&fleet, "dev-f", &[]);
    let v2 =
        fleet.publish_artifact(&fleet.digits("2.0.0", |s| s.min_version = Some("2.0.0".into())));
    fleet.send_desired("dev-f", 2, vec![v2]);
    fleet.wait_event("2.0.0", Step::Activated, T);
    let traffic = Traffic::start(&agent.api, Duration::from_millis(20));
    fleet.wait_event("2.0.0", Step::Committed, T);
    traffic.stop();
    assert_eq!(agent.status()["models"][0]["floor"], "2.0.0");
    // the server (or an attacker holding old signed bundles) asks for 1.0.0 again
    let v1 = fleet.publish_artifact(&fleet.digits("1.0.0", |_| {}));
    fleet.send_desired("dev-f", 3, vec![v1]);
    let deadline = std::time::Instant::now() + T;
    let refused = loop {
        if let Some(e) = fleet
            .events()
            .into_iter()
            .find(|e| e.version == "1.0.0" && e.generation == 3)
        {
            break e;
        }
        assert!(std::time::Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(refused.step, Step::Failed);
    assert!(refused.detail.unwrap().contains("floor"));
    assert_eq!(served_version(&agent), "2.0.0");
}

#[test]
fn a_sideloaded_bundle_serves_with_no_server_configured() {
    let fleet = Fleet::new(); // only for its signing keys and trust root
    let state = tempfile::tempdir().unwrap();
    let sideload = state.path().join("bundles-in-image");
    std::fs::create_dir_all(&sideload).unwrap();
    std::fs::write(sideload.join("digits-1.efb"), fleet.digits("1.0.0", |_| {})).unwrap();
    std::fs::write(sideload.join("digits-2.efb"), fleet.digits("1.2.0", |_| {})).unwrap();
    std::fs::write(sideload.join("garbage.efb"), b"not a bundle").unwrap();
    let port = free_port();
    let config = format!(
        "device_id = \"dev-s\"\nstate_dir = \"{}\"\ntrust_root = \"{}\"\nroot_key = \"{}\"\n[api]\nlisten = \"127.0.0.1:{port}\"\nsocket = \"{}\"\n[sideload]\ndir = \"{}\"\n",
        state.path().join("state").display(),
        fleet.trust_path.display(),
        fleet.root_pub_path.display(),
        state.path().join("api.sock").display(),
        sideload.display()
    );
    let mut agent = Agent::start(&config, state.path(), &[]);
    agent.wait_ready();
    assert_eq!(
        served_version(&agent),
        "1.2.0",
        "the highest sideloaded version"
    );
    let models =
        serde_json::from_str::<serde_json::Value>(&http_get(&agent.url("/v1/models")).unwrap().1)
            .unwrap();
    assert_eq!(models["models"][0]["slots"]["active"]["version"], "1.2.0");
    assert_eq!(models["models"][0]["state"], "serving");
    // the Unix socket answers too
    let out = std::process::Command::new("curl")
        .args(["-s", "--unix-socket"])
        .arg(state.path().join("api.sock"))
        .arg("http://agent/healthz")
        .output();
    if let Ok(out) = out {
        if out.status.success() {
            assert!(String::from_utf8_lossy(&out.stdout).contains("\"ok\""));
        }
    }
    // restart: served from the slot, sideload not installed twice
    agent.kill9();
    let mut agent = Agent::start(&config, state.path(), &[]);
    agent.wait_ready();
    assert_eq!(served_version(&agent), "1.2.0");
    let log = agent.log_text();
    assert!(
        !log.contains("Committed"),
        "nothing to install at the second start: {log}"
    );
}

#[test]
fn the_local_api_answers_errors_with_json_and_serves_raw_input_and_metrics() {
    let fleet = Fleet::new();
    let (agent, _state) = device_with_v1(
        &fleet,
        "dev-g",
        &[("EDGE_AGENT_API__MAX_BODY_BYTES", "65536")],
    );
    let url = agent.url("/v1/models/digits/predict");
    // raw little-endian f32 form
    let x = common::read_npy("digits/test_x.npy").rows(0, 2);
    let (code, body) = http_post(
        &url,
        "application/octet-stream",
        &x.to_le_bytes(),
        &[("x-shape", "2,1,8,8")],
    )
    .unwrap();
    assert_eq!(code, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["results"].as_array().unwrap().len(), 2);
    assert!(v["latency_ms"].as_f64().unwrap() > 0.0);
    assert!(v["bundle"].as_str().unwrap().starts_with("sha256:"));
    assert!(v["results"][0]["predictions"][0]["probability"]
        .as_f64()
        .is_some());
    // errors
    type Case<'a> = (
        String,
        &'a str,
        Vec<u8>,
        Vec<(&'a str, &'a str)>,
        u16,
        &'a str,
    );
    let cases: Vec<Case> = vec![
        (agent.url("/v1/models/nope/predict"), "application/json", b"{\"input\": [[1]]}".to_vec(), vec![], 404, "no model named 'nope'"),
        (url.clone(), "application/json", b"{\"input\": ".to_vec(), vec![], 400, "not a predict request"),
        (url.clone(), "application/json", b"{\"input\": [[1, 2], [3]]}".to_vec(), vec![], 400, "ragged"),
        (url.clone(), "application/json", b"{\"input\": [[[[1,2,3]]]]}".to_vec(), vec![], 400, "image"),
        (url.clone(), "application/json", br#"{"input": [[[["NaN",0,0,0,0,0,0,0],[0,0,0,0,0,0,0,0],[0,0,0,0,0,0,0,0],[0,0,0,0,0,0,0,0],[0,0,0,0,0,0,0,0],[0,0,0,0,0,0,0,0],[0,0,0,0,0,0,0,0],[0,0,0,0,0,0,0,0]]]]}"#.to_vec(), vec![], 400, "non-finite"),
        (url.clone(), "application/octet-stream", vec![0; 10], vec![("x-shape", "1,1,8,8")], 400, "needs 256"),
        (url.clone(), "text/plain", b"hi".to_vec(), vec![], 415, "application/json"),
        (url.clone(), "application/json", vec![b' '; 100_000], vec![], 413, "limit"),
    ];
    for (u, ct, body, headers, want, says) in cases {
        let (code, text) = http_post(&u, ct, &body, &headers).unwrap();
        assert_eq!(code, want, "{text}");
        let v: serde_json::Value =
            serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON: {text}"));
        assert!(v["error"].as_str().unwrap().contains(says), "{text}");
    }
    let (code, text) = http_get(&url).unwrap();
    assert_eq!(code, 405, "{text}");
    assert!(text.contains("predict is POST"), "{text}");
    let (code, metrics) = http_get(&agent.url("/metrics")).unwrap();
    assert_eq!(code, 200);
    assert!(
        metrics.contains("edgefleet_predict_requests_total{model=\"digits\",version=\"1.0.0\"}"),
        "{metrics}"
    );
    assert!(metrics.contains(
        "edgefleet_predict_latency_ms_bucket{model=\"digits\",version=\"1.0.0\",le=\"+Inf\"}"
    ));
    assert!(
        metrics.contains("edgefleet_api_refused_total{reason=\"too_large\"} 1"),
        "{metrics}"
    );
    assert!(metrics.contains("edgefleet_outbox_queued"));
    assert!(metrics.contains("edgefleet_mqtt_connected 1"));
}
