//! Scenario 4 of issue 5: `ota-server` killed (-9) in the middle of a phased rollout and started
//! again: the rollout resumes from its stored phase and completes, and every device converges.

use std::time::Duration;

use fleet_tests::{wait_for, Agent, Server, Traffic};
use serde_json::json;

#[test]
fn a_rollout_resumes_after_the_server_is_killed_mid_phase() {
    let dir = tempfile::tempdir().unwrap();
    let (keys, mut server) = Server::fresh(dir.path());
    let token = server.enrollment_token(json!({"hw": "x86"}));
    let agents: Vec<Agent> = (0..4)
        .map(|i| {
            let id = format!("dev-{i}");
            Agent::start(&id, &dir.path().join(&id), &keys, &server, &token)
        })
        .collect();
    let _traffic = Traffic::start(agents.iter().map(|a| a.api.clone()).collect());
    let gates = json!({"min_reporting_devices": 1});
    let v1 = server.push(keys.digits("1.0.0", |_| {}));
    let r1 = server.roll(&v1, json!([{"percent": 100}]), gates.clone(), "pause");
    wait_for(
        "v1 everywhere",
        Duration::from_secs(90),
        || {
            let done = server.rollout_status(&r1) == "completed";
            (done
                && agents
                    .iter()
                    .all(|a| a.active_version().as_deref() == Some("1.0.0")))
            .then_some(())
        },
        String::new,
    );
    let v2 = server.push(keys.digits("2.0.0", |_| {}));
    let r2 = server.roll(
        &v2,
        json!([{"percent": 50, "soak_seconds": 4}, {"percent": 100}]),
        gates,
        "pause",
    );
    std::thread::sleep(Duration::from_secs(2));
    let before = server.api("GET", &format!("/v1/rollouts/{r2}"), None);
    assert_eq!(before["phase"], 0, "{before}");
    let (data, http, mqtt) = (server.data.clone(), server.http_port(), server.mqtt_port);
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
            let done = server.rollout_status(&r2) == "completed";
            (done
                && agents
                    .iter()
                    .all(|a| a.active_version().as_deref() == Some("2.0.0")))
            .then_some(())
        },
        || {
            server
                .api("GET", &format!("/v1/rollouts/{r2}"), None)
                .to_string()
        },
    );
}
