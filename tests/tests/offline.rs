//! Scenario 3 of issue 5: a device that is off while a rollout runs gets its desired state when
//! it comes back (retained on its topic, and re-sent after its hello) and converges.

use std::time::Duration;

use fleet_tests::{wait_for, Agent, Server, Traffic};
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

    // dev-2 goes dark; v2 rolls out to the other two and completes
    let away = agents.pop().unwrap();
    drop(away);
    let r2 = roll("2.0.0");
    wait_for(
        "v2 on the devices that are on",
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
