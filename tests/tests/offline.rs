//! Scenario 3 of issue 5: a device that is off while a rollout runs gets its desired state when
//! it comes back (retained on its topic, and re-sent after its hello) and converges.

use std::time::Duration;

use fleet_tests::{free_port, wait_for, Agent, Keys, Server, Traffic};
use serde_json::json;

#[test]
fn a_device_off_during_the_rollout_converges_when_it_returns() {
    let dir = tempfile::tempdir().unwrap();
    let keys = Keys::new(dir.path());
    let data = dir.path().join("server");
    Server::init(&data, &keys);
    let server = Server::start(&data, free_port(), free_port());
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
    let start = |id: &str| Agent::start(id, &dir.path().join(id), &keys, &server, &token);
    let mut agents: Vec<Agent> = (0..3).map(|i| start(&format!("dev-{i}"))).collect();
    let traffic = Traffic::start(agents.iter().map(|a| a.api.clone()).collect());
    let version_of = |a: &Agent| {
        a.status().and_then(|s| {
            s["models"][0]["slots"]["active"]["version"]
                .as_str()
                .map(str::to_string)
        })
    };
    let roll = |version: &str| {
        let v = server.api(
            "POST",
            "/v1/bundles",
            Some(("application/octet-stream", keys.digits(version, |_| {}))),
        );
        let spec = json!({"bundle": format!("sha256:{}", v["sha256"].as_str().unwrap()),
                          "selector": "hw=x86", "phases": [{"percent": 100}],
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
    let r1 = roll("1.0.0");
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

    // dev-2 goes dark; v2 rolls out to the other two and completes
    let away = agents.pop().unwrap();
    drop(away);
    let r2 = roll("2.0.0");
    wait_for(
        "v2 on the devices that are on",
        Duration::from_secs(90),
        || {
            let done =
                server.api("GET", &format!("/v1/rollouts/{r2}"), None)["status"] == "completed";
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

    // it comes back (same state directory) and catches up
    drop(traffic);
    let back = start("dev-2");
    let _traffic = Traffic::start(vec![back.api.clone()]);
    wait_for(
        "dev-2 to catch up to 2.0.0",
        Duration::from_secs(90),
        || (version_of(&back).as_deref() == Some("2.0.0")).then_some(()),
        || back.log_text(),
    );
}
