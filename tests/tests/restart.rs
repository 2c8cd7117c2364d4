//! Scenario 4 of issue 5: `ota-server` killed (-9) in the middle of a phased rollout and started
//! again: the rollout resumes from its stored phase and completes, and every device converges.

use std::time::Duration;

use fleet_tests::{wait_converged, Agent, Server, Traffic};
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
    wait_converged(&server, &r1, &agents, "1.0.0", Duration::from_secs(90));
    let v2 = server.push(keys.digits("2.0.0", |_| {}));
    // the soak outlasts the kill and the restart (a few seconds on a loaded 2-core machine): were
    // it over first, the rollout would rightly be in phase 1, with a new phase clock
    let r2 = server.roll(
        &v2,
        json!([{"percent": 50, "soak_seconds": 15}, {"percent": 100}]),
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
    wait_converged(&server, &r2, &agents, "2.0.0", Duration::from_secs(90));
}
