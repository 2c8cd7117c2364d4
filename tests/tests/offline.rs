//! Scenario 3 of issue 5: a device that is off while a rollout runs gets its desired state when
//! it comes back (retained on its topic, and re-sent after its hello) and converges.

use std::time::Duration;

use fleet_tests::{wait_converged, wait_for, Agent, Server, Traffic};
use serde_json::json;

#[test]
fn a_device_off_during_the_rollout_converges_when_it_returns() {
    let dir = tempfile::tempdir().unwrap();
    let (keys, server) = Server::fresh(dir.path());
    let token = server.enrollment_token(json!({"hw": "x86"}));
    let start = |id: &str| Agent::start(id, &dir.path().join(id), &keys, &server, &token);
    let mut agents: Vec<Agent> = (0..3).map(|i| start(&format!("dev-{i}"))).collect();
    let traffic = Traffic::start(agents.iter().map(|a| a.api.clone()).collect());
    let roll = |version: &str| {
        let sha = server.push(keys.digits(version, |_| {}));
        server.roll(
            &sha,
            json!([{"percent": 100}]),
            json!({"min_reporting_devices": 1}),
            "pause",
        )
    };
    let r1 = roll("1.0.0");
    wait_converged(&server, &r1, &agents, "1.0.0", Duration::from_secs(90));

    // dev-2 goes dark; v2 rolls out to the other two and completes
    let away = agents.pop().unwrap();
    drop(away);
    let r2 = roll("2.0.0");
    wait_converged(&server, &r2, &agents, "2.0.0", Duration::from_secs(90));

    // it comes back (same state directory) and catches up
    drop(traffic);
    let back = start("dev-2");
    let _traffic = Traffic::start(vec![back.api.clone()]);
    wait_for(
        "dev-2 to catch up to 2.0.0",
        Duration::from_secs(90),
        || (back.active_version().as_deref() == Some("2.0.0")).then_some(()),
        || back.log_text(),
    );
}
