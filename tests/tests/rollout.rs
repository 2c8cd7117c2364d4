//! The OTA loop end to end with real processes on loopback: `ota-server` (MQTT ended by its
//! device gate) and three `edge-agent`s that enroll with a token.
//!
//! 1. v1 goes to every device in one phase; each device commits it (seen through the server's
//!    event history, so events crossed gate, hub, signature check and ingest).
//! 2. v2 goes out in two phases: only the device hashed into the first phase gets it; the phase
//!    advances only after its soak time and once its telemetry passed the gates; then the
//!    other two get it.
//! 3. The server is killed (-9) and restarted: devices, rollouts and desired states are still
//!    there, and the agents reconnect to the new broker.
//! 4. v3 fails its confidence gate in its first phase: the rollout rolls back by itself and
//!    the device that had v3 is told to run v2 again, and does.

use std::time::Duration;

use fleet_tests::{call, edgectl, free_port, wait_for, Agent, Keys, Server, Traffic};
use ota_server::cohort::in_phase;
use serde_json::{json, Value};

fn active_version(a: &Agent) -> Option<String> {
    let s = a.status()?;
    let m = s["models"]
        .as_array()?
        .iter()
        .find(|m| m["name"] == "digits")?;
    (m["state"] == "serving")
        .then(|| m["slots"]["active"]["version"].as_str().map(str::to_string))
        .flatten()
}

fn upload(server: &Server, bundle: Vec<u8>) -> String {
    let v = server.api(
        "POST",
        "/v1/bundles",
        Some(("application/octet-stream", bundle)),
    );
    format!("sha256:{}", v["sha256"].as_str().unwrap())
}

fn rollout(server: &Server, spec: Value) -> String {
    let v = server.api(
        "POST",
        "/v1/rollouts",
        Some(("application/json", spec.to_string().into_bytes())),
    );
    v["id"].as_str().unwrap().to_string()
}

fn committed(server: &Server, device: &str, version: &str) -> bool {
    let v = server.api("GET", &format!("/v1/devices/{device}/events"), None);
    v["events"].as_array().unwrap().iter().any(|m| {
        m["events"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["version"] == version && e["step"] == "committed")
    })
}

#[test]
fn staged_rollout_gates_restart_and_automatic_rollback() {
    let dir = tempfile::tempdir().unwrap();
    let keys = Keys::new(dir.path());
    let data = dir.path().join("server");
    Server::init(&data, &keys);
    let (http_port, mqtt_port) = (free_port(), free_port());
    let mut server = Server::start(&data, http_port, mqtt_port);
    let token = server.api(
        "POST",
        "/v1/enrollment-tokens",
        Some((
            "application/json",
            json!({"name": "lab", "uses": 3, "tags": {"hw": "x86", "site": "lab"}})
                .to_string()
                .into_bytes(),
        )),
    )["token"]
        .as_str()
        .unwrap()
        .to_string();

    // device ids chosen so that exactly one is in the first (34 %) phase of r-2 and of r-3
    let first: Vec<String> = (0..400)
        .map(|i| format!("dev-{i}"))
        .filter(|d| in_phase(d, "r-2", 34.0) && in_phase(d, "r-3", 34.0))
        .take(1)
        .collect();
    let rest: Vec<String> = (0..400)
        .map(|i| format!("dev-{i}"))
        .filter(|d| !in_phase(d, "r-2", 34.0) && !in_phase(d, "r-3", 34.0))
        .take(2)
        .collect();
    let ids: Vec<String> = first.iter().chain(&rest).cloned().collect();
    let agents: Vec<Agent> = ids
        .iter()
        .map(|id| Agent::start(id, &dir.path().join(id), &keys, &server, &token))
        .collect();
    let logs = || {
        agents
            .iter()
            .map(|a| format!("--- {} ---\n{}", a.id, a.log_text()))
            .collect::<String>()
    };
    wait_for(
        "three enrolled devices",
        Duration::from_secs(60),
        || {
            let v = server.api("GET", "/v1/devices", None);
            (v["devices"].as_array().unwrap().len() == 3).then_some(())
        },
        logs,
    );

    // predictions on every device throughout (a trial commits only after a few requests)
    let traffic = Traffic::start(agents.iter().map(|a| a.api.clone()).collect());

    // 1. v1 everywhere
    let v1 = upload(&server, keys.digits("1.0.0", |_| {}));
    let r1 = rollout(
        &server,
        json!({"bundle": v1, "selector": "hw=x86", "phases": [{"percent": 100}],
               "gates": {}, "on_gate_failure": "pause"}),
    );
    assert_eq!(r1, "r-1");
    for a in &agents {
        wait_for(
            &format!("{} to commit 1.0.0 (by its events)", a.id),
            Duration::from_secs(90),
            || committed(&server, &a.id, "1.0.0").then_some(()),
            logs,
        );
    }
    // r-1 completes once its phase's telemetry passed the (default) gates; until then a second
    // rollout of the model over the same devices would be refused
    wait_for(
        "r-1 to complete",
        Duration::from_secs(60),
        || (server.api("GET", "/v1/rollouts/r-1", None)["status"] == "completed").then_some(()),
        logs,
    );
    // a device may only fetch what it is told to run
    let v2_bytes = keys.digits("2.0.0", |_| {});
    let v2 = upload(&server, v2_bytes);
    let state = std::fs::read_to_string(dir.path().join(&ids[0]).join("state/enrollment.json"));
    if let Ok(text) = state {
        let e: Value = serde_json::from_str(&text).unwrap();
        if let Some(t) = e["device_token"].as_str() {
            let path = format!("/v1/artifacts/{}", v2.trim_start_matches("sha256:"));
            let (code, _) = call("GET", &server.u(&path), Some(t), None);
            assert_eq!(code, 403, "v2 is not in its desired state yet");
        }
    }

    // 2. v2 in two phases, gated on the first phase's telemetry
    let r2 = rollout(
        &server,
        json!({"bundle": v2, "selector": "hw=x86",
               "phases": [{"percent": 34, "soak_seconds": 3}, {"percent": 100}],
               "gates": {"max_error_rate": 0.05, "min_reporting_devices": 1, "max_install_failure_rate": 0.0},
               "on_gate_failure": "pause"}),
    );
    assert_eq!(r2, "r-2");
    wait_for(
        "the first-phase device to commit 2.0.0",
        Duration::from_secs(90),
        || committed(&server, &ids[0], "2.0.0").then_some(()),
        logs,
    );
    let r = server.api("GET", "/v1/rollouts/r-2", None);
    assert_eq!(r["phase"], 0, "{r}");
    assert_eq!(r["phase_devices"], 1, "{r}");
    for other in &agents[1..] {
        assert_eq!(
            active_version(other).as_deref(),
            Some("1.0.0"),
            "not in phase 0"
        );
    }
    let done = wait_for(
        "r-2 to complete",
        Duration::from_secs(90),
        || {
            let r = server.api("GET", "/v1/rollouts/r-2", None);
            (r["status"] == "completed").then_some(r)
        },
        || {
            format!(
                "{}\n{}",
                server.api("GET", "/v1/rollouts/r-2", None),
                logs()
            )
        },
    );
    let advance = &done["transitions"][0];
    assert_eq!(
        (advance["from_phase"].as_u64(), advance["to_phase"].as_u64()),
        (Some(0), Some(1)),
        "{done}"
    );
    let created = done["phase_started"].as_u64().unwrap();
    assert!(advance["at"].as_u64().unwrap() <= created, "{done}");
    assert!(
        advance["health"]["reporting_devices"].as_u64().unwrap() >= 1,
        "{advance}"
    );
    assert!(
        advance["health"]["requests"].as_u64().unwrap() > 0,
        "{advance}"
    );
    for a in &agents {
        wait_for(
            &format!("{} to commit 2.0.0", a.id),
            Duration::from_secs(90),
            || committed(&server, &a.id, "2.0.0").then_some(()),
            logs,
        );
    }
    assert!(traffic.sent() > 0);

    // 3. kill -9 and restart: everything is still there and the agents come back
    server.kill9();
    let server = Server::start(&data, http_port, mqtt_port);
    let devices = server.api("GET", "/v1/devices", None);
    assert_eq!(devices["devices"].as_array().unwrap().len(), 3);
    assert_eq!(
        server.api("GET", "/v1/rollouts/r-2", None)["status"],
        "completed"
    );
    assert_eq!(
        server.api("GET", "/v1/bundles", None)["bundles"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    wait_for(
        "the agents to say hello to the restarted server",
        Duration::from_secs(60),
        || {
            let v = server.api("GET", "/v1/devices", None);
            v["devices"]
                .as_array()
                .unwrap()
                .iter()
                .all(|d| d["online"] == true && d["reported"]["models"][0]["active"] == "2.0.0")
                .then_some(())
        },
        || format!("{}\n{}", server.api("GET", "/v1/devices", None), logs()),
    );

    // 4. v3 fails the confidence gate in phase 0 → automatic rollback to v2 (driven by edgectl)
    let v3_path = dir.path().join("digits-3.0.0.efb");
    std::fs::write(&v3_path, keys.digits("3.0.0", |_| {})).unwrap();
    let v3_file = v3_path.to_str().unwrap();
    let (ok, out) = edgectl(&server, &["push", v3_file]);
    assert!(ok && out.contains("pushed digits 3.0.0"), "{out}");
    let (ok, out) = edgectl(
        &server,
        &[
            "rollout",
            "create",
            "--bundle",
            v3_file,
            "--selector",
            "hw=x86",
            "--phase",
            "34:600",
            "--phase",
            "100",
            "--gate",
            "min_mean_confidence=0.9999",
            "--gate",
            "min_reporting_devices=1",
            "--gate",
            "min_requests=10",
            "--on-gate-failure",
            "rollback",
        ],
    );
    assert!(ok && out.contains("created r-3"), "{out}");
    let (ok, out) = edgectl(
        &server,
        &[
            "rollout",
            "create",
            "--bundle",
            v3_file,
            "--phase",
            "100",
            "--selector",
            "hw=x86",
        ],
    );
    assert!(
        !ok && out.contains("409") && out.contains("r-3"),
        "overlapping rollout refused: {out}"
    );
    let (ok, out) = edgectl(&server, &["rollout", "watch", "r-3", "--interval", "1"]);
    assert!(
        ok && out.contains("rolled_back"),
        "watch ends with the rollback: {out}"
    );
    let (ok, out) = edgectl(&server, &["devices", "list"]);
    assert!(
        ok && out.lines().count() == 3 && out.contains("online"),
        "{out}"
    );
    let rolled = wait_for(
        "r-3 to roll back on its gate",
        Duration::from_secs(90),
        || {
            let r = server.api("GET", "/v1/rollouts/r-3", None);
            (r["status"] == "rolled_back").then_some(r)
        },
        || {
            format!(
                "{}\n{}",
                server.api("GET", "/v1/rollouts/r-3", None),
                logs()
            )
        },
    );
    let t = rolled["transitions"]
        .as_array()
        .unwrap()
        .last()
        .unwrap()
        .clone();
    assert!(t["reason"].as_str().unwrap().contains("confidence"), "{t}");
    assert!(
        t["health"]["mean_confidence"].as_f64().unwrap() < 0.9999,
        "{t}"
    );
    wait_for(
        "the first-phase device to run 2.0.0 again",
        Duration::from_secs(90),
        || (active_version(&agents[0]).as_deref() == Some("2.0.0")).then_some(()),
        logs,
    );
    for a in &agents[1..] {
        assert_eq!(
            active_version(a).as_deref(),
            Some("2.0.0"),
            "never reached by r-3"
        );
    }
    let metrics = call("GET", &server.u("/metrics"), Some(&server.admin), None).1;
    assert!(metrics.contains("edgefleet_devices 3"), "{metrics}");
}
