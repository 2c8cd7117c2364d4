//! Scenario 6 of issue 5: an artifact corrupted on the server's disk. Every agent refuses it
//! (its digest does not match the desired state) and reports why; the failures reach the
//! rollout's install-failure gate, which rolls the rollout back; every device stays on v1.

use std::time::Duration;

use fleet_tests::{free_port, wait_for, Agent, Keys, Server, Traffic};
use serde_json::json;

#[test]
fn a_corrupted_artifact_is_refused_and_trips_the_install_failure_gate() {
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
    let push = |version: &str| {
        let v = server.api(
            "POST",
            "/v1/bundles",
            Some(("application/octet-stream", keys.digits(version, |_| {}))),
        );
        v["sha256"].as_str().unwrap().to_string()
    };
    let rollout = |sha: &str| {
        let spec = json!({"bundle": format!("sha256:{sha}"), "selector": "hw=x86", "phases": [{"percent": 100}],
                          "gates": {"max_install_failure_rate": 0.0, "min_reporting_devices": 1},
                          "on_gate_failure": "rollback"});
        server.api(
            "POST",
            "/v1/rollouts",
            Some(("application/json", spec.to_string().into_bytes())),
        )["id"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let v1 = push("1.0.0");
    let r1 = rollout(&v1);
    wait_for(
        "v1 everywhere",
        Duration::from_secs(90),
        || {
            (server.api("GET", &format!("/v1/rollouts/{r1}"), None)["status"] == "completed")
                .then_some(())
        },
        logs,
    );

    // v2 uploaded intact, then one byte flipped on the server's disk
    let v2 = push("2.0.0");
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
        let status = a.status().unwrap();
        let active = status["models"][0]["slots"]["active"]["version"].clone();
        assert_eq!(active, "1.0.0", "{}: {status}", a.id);
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
