//! Scenario 6 of issue 5: an artifact corrupted on the server's disk. Every agent refuses it
//! (its digest does not match the desired state) and reports why; the failures reach the
//! rollout's install-failure gate, which rolls the rollout back; every device stays on v1.

use std::time::Duration;

use fleet_tests::{wait_for, Agent, Server, Traffic};
use serde_json::json;

#[test]
fn a_corrupted_artifact_is_refused_and_trips_the_install_failure_gate() {
    let dir = tempfile::tempdir().unwrap();
    let (keys, server) = Server::fresh(dir.path());
    let data = server.data.clone();
    let token = server.enrollment_token(json!({"hw": "x86"}));
    let agents: Vec<Agent> = (0..3)
        .map(|i| {
            let id = format!("dev-{i}");
            Agent::start(&id, &dir.path().join(&id), &keys, &server, &token)
        })
        .collect();
    let logs = || {
        agents
            .iter()
            .map(|a| format!("--- {} ---\n{}", a.id, a.log_text()))
            .collect::<String>()
    };
    let _traffic = Traffic::start(agents.iter().map(|a| a.api.clone()).collect());
    let gates = json!({"max_install_failure_rate": 0.0, "min_reporting_devices": 1});
    let rollout =
        |sha: &str| server.roll(sha, json!([{"percent": 100}]), gates.clone(), "rollback");
    let v1 = server.push(keys.digits("1.0.0", |_| {}));
    let r1 = rollout(&v1);
    wait_for(
        "v1 everywhere",
        Duration::from_secs(90),
        || (server.rollout_status(&r1) == "completed").then_some(()),
        logs,
    );

    // v2 uploaded intact, then one byte flipped on the server's disk
    let v2 = server.push(keys.digits("2.0.0", |_| {}));
    let path = data.join("artifacts").join(format!("{v2}.efb"));
    let mut bytes = std::fs::read(&path).unwrap();
    let n = bytes.len();
    bytes[n - 100] ^= 0x40;
    std::fs::write(&path, bytes).unwrap();
    let r2 = rollout(&v2);
    let done = wait_for(
        "the install-failure gate to roll v2 back",
        Duration::from_secs(120),
        || {
            let r = server.api("GET", &format!("/v1/rollouts/{r2}"), None);
            (r["status"] == "rolled_back").then_some(r)
        },
        || {
            format!(
                "{}\n{}",
                server.api("GET", &format!("/v1/rollouts/{r2}"), None),
                logs()
            )
        },
    );
    let t = done["transitions"]
        .as_array()
        .unwrap()
        .last()
        .unwrap()
        .clone();
    assert!(
        t["reason"]
            .as_str()
            .unwrap()
            .contains("install failure rate"),
        "{t}"
    );
    assert!(
        t["health"]["install_failures"].as_u64().unwrap() >= 1,
        "{t}"
    );
    // the devices said why (the digest; a device still retrying when the rollback landed is
    // then refused the artifact: 403, it is no longer in its desired state), and none runs v2
    let mut reasons = Vec::new();
    for a in &agents {
        let events = server.api("GET", &format!("/v1/devices/{}/events", a.id), None);
        reasons.extend(
            events["events"]
                .as_array()
                .unwrap()
                .iter()
                .flat_map(|m| m["events"].as_array().unwrap().clone())
                .filter(|e| e["version"] == "2.0.0" && e["step"] == "failed")
                .map(|e| e["detail"].as_str().unwrap_or_default().to_string()),
        );
        assert_eq!(a.active_version().as_deref(), Some("1.0.0"), "{}", a.id);
    }
    assert!(
        reasons
            .iter()
            .any(|d| d.contains("sha256") || d.contains("digest")),
        "{reasons:?}"
    );
    assert!(
        reasons
            .iter()
            .all(|d| d.contains("sha256") || d.contains("digest") || d.contains("403")),
        "{reasons:?}"
    );
}
