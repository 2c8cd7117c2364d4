//! Scenario 4 of issue 5: `ota-server` killed (-9) in the middle of a phased rollout and started
//! again: the rollout resumes from its stored phase and completes, and every device converges.

use std::time::Duration;

use fleet_tests::{free_port, wait_for, Agent, Keys, Server, Traffic};
use serde_json::json;

#[test]
fn a_rollout_resumes_after_the_server_is_killed_mid_phase() {
    let dir = tempfile::tempdir().unwrap();
    let keys = Keys::new(dir.path());
    let data = dir.path().join("server");
    Server::init(&data, &keys);
    let (http, mqtt) = (free_port(), free_port());
    let mut server = Server::start(&data, http, mqtt);
    let token = server.api(
        "POST",
        "/v1/enrollment-tokens",
        Some((
            "application/json",
            json!({"name": "t", "tags": {"hw": "x86"}})
                .to_string()
                .into_bytes(),
        )),
    )["token"]
        .as_str()
        .unwrap()
        .to_string();
    let agents: Vec<Agent> = (0..4)
        .map(|i| {
            let id = format!("dev-{i}");
            Agent::start(&id, &dir.path().join(&id), &keys, &server, &token)
        })
        .collect();
    let _traffic = Traffic::start(agents.iter().map(|a| a.api.clone()).collect());
    let version_of = |a: &Agent| {
        a.status().and_then(|s| {
            s["models"][0]["slots"]["active"]["version"]
                .as_str()
                .map(str::to_string)
        })
    };
    let roll = |server: &Server, version: &str, phases: serde_json::Value| {
        let v = server.api(
            "POST",
            "/v1/bundles",
            Some(("application/octet-stream", keys.digits(version, |_| {}))),
        );
        let spec = json!({"bundle": format!("sha256:{}", v["sha256"].as_str().unwrap()),
                          "selector": "hw=x86", "phases": phases,
                          "gates": {"min_reporting_devices": 1}, "on_gate_failure": "pause"});
        server.api(
            "POST",
            "/v1/rollouts",
            Some(("application/json", spec.to_string().into_bytes())),
        )["id"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let r1 = roll(&server, "1.0.0", json!([{"percent": 100}]));
    wait_for(
        "v1 everywhere",
        Duration::from_secs(90),
        || {
            let done =
                server.api("GET", &format!("/v1/rollouts/{r1}"), None)["status"] == "completed";
            (done
                && agents
                    .iter()
                    .all(|a| version_of(a).as_deref() == Some("1.0.0")))
            .then_some(())
        },
        String::new,
    );
    let r2 = roll(
        &server,
        "2.0.0",
        json!([{"percent": 50, "soak_seconds": 4}, {"percent": 100}]),
    );
    std::thread::sleep(Duration::from_secs(2));
    let before = server.api("GET", &format!("/v1/rollouts/{r2}"), None);
    assert_eq!(before["phase"], 0, "{before}");
    server.kill9();
    let server = Server::start(&data, http, mqtt);
    let after = server.api("GET", &format!("/v1/rollouts/{r2}"), None);
    assert_eq!(
        after["phase_started"], before["phase_started"],
        "the phase clock survived"
    );
    wait_for(
        "r-2 to complete after the restart",
        Duration::from_secs(90),
        || {
            let r = server.api("GET", &format!("/v1/rollouts/{r2}"), None);
            let done = r["status"] == "completed";
            (done
                && agents
                    .iter()
                    .all(|a| version_of(a).as_deref() == Some("2.0.0")))
            .then_some(())
        },
        || {
            server
                .api("GET", &format!("/v1/rollouts/{r2}"), None)
                .to_string()
        },
    );
}
