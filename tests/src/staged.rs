//! Scenario 1 of issue 5 as a function, so that it runs against the embedded broker (as scenario
//! one) and against Mosquitto (as scenario seven): `n` agents in three sites, v1 to all, then v2 in three
//! phases (10 % → 50 % → 100 %) with soak times and gates. While it runs, every observation of
//! the fleet is checked against the phase the server was in: a device outside the phases
//! reached so far never runs v2. At the end every device runs v2 and every prediction the
//! agents answered was counted by the server exactly once.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use ota_server::cohort::in_phase;
use serde_json::json;

use crate::mosquitto::Mosquitto;
use crate::{free_port, Traffic};
use crate::{wait_converged, wait_for, wait_uplink_complete, Agent, AgentOptions, Keys, Server};

/// Agents for scenarios 1 and 7: `FLEET_AGENTS` if set, else the 50 (about 15 s on a
/// 2-core machine).
pub fn fleet_size() -> usize {
    std::env::var("FLEET_AGENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(50)
}

/// What the run saw.
#[derive(Debug)]
pub struct StagedRun {
    /// Devices per phase index at the moment the phase advanced (0-based), as the server
    /// listed them.
    pub phase_devices: BTreeMap<usize, usize>,
    /// Predictions answered by the agents.
    pub answered: u64,
    /// Time from creating the v2 rollout to every device running v2.
    pub converge: Duration,
}

const PHASES: [f64; 3] = [10.0, 50.0, 100.0];

/// Runs the scenario in `dir` with `n` agents; through `broker` when given.
pub fn staged_rollout(dir: &Path, n: usize, broker: Option<&Mosquitto>) -> StagedRun {
    let keys = Keys::new(dir);
    let data = dir.join("server");
    Server::init(&data, &keys);
    let server = match broker {
        None => Server::start(&data, free_port(), free_port()),
        Some(m) => Server::start_with(
            &data,
            free_port(),
            m.port,
            &["--broker", &m.url(), "--device-rate", "0"],
        ),
    };
    let options = AgentOptions {
        mqtt: broker.map(Mosquitto::url),
        ..AgentOptions::default()
    };
    let sites = ["north", "south", "east"];
    let tokens: Vec<String> = sites
        .iter()
        .map(|site| server.enrollment_token(json!({"hw": "x86", "site": site})))
        .collect();
    // ids numbered from the first one that hashes into v2's canary phase (the rollout will be
    // r-2), so the canary is never empty however small the fleet
    let first = (0..)
        .find(|i| in_phase(&format!("dev-{i:03}"), "r-2", PHASES[0]))
        .unwrap();
    let agents: Vec<Agent> = (first..first + n)
        .map(|i| {
            let id = format!("dev-{i:03}");
            let token = &tokens[i % sites.len()];
            Agent::start_with(&id, &dir.join(&id), &keys, &server, token, &options)
        })
        .collect();
    wait_for(
        &format!("{n} enrolled devices"),
        Duration::from_secs(120),
        || {
            let v = server.api("GET", "/v1/devices", None);
            (v["devices"].as_array()?.len() == n).then_some(())
        },
        || server.log_text(),
    );
    let traffic = Traffic::start(agents.iter().map(|a| a.api.clone()).collect());
    let gates = json!({"min_reporting_devices": 1, "max_error_rate": 0.01});
    let r1 = server.roll(
        &server.push(keys.digits("1.0.0", |_| {})),
        json!([{"percent": 100}]),
        gates.clone(),
        "rollback",
    );
    wait_converged(&server, &r1, &agents, "1.0.0", Duration::from_secs(180));

    let started = Instant::now();
    let r2 = server.roll(
        &server.push(keys.digits("2.0.0", |_| {})),
        json!([{"percent": PHASES[0], "soak_seconds": 3},
               {"percent": PHASES[1], "soak_seconds": 3},
               {"percent": PHASES[2]}]),
        gates,
        "rollback",
    );
    let mut phase_devices = BTreeMap::new();
    let deadline = Instant::now() + Duration::from_secs(240);
    loop {
        let before = server.api("GET", &format!("/v1/rollouts/{r2}"), None);
        let phase = before["phase"].as_u64().unwrap() as usize;
        let versions: Vec<Option<String>> = agents.iter().map(Agent::active_version).collect();
        let after = server.api("GET", &format!("/v1/rollouts/{r2}"), None);
        assert!(
            after["status"] == "running" || after["status"] == "completed",
            "{r2} stopped: {after}"
        );
        if after["phase"] == before["phase"] && before["status"] == "running" {
            phase_devices.insert(
                phase,
                before["phase_devices"].as_u64().unwrap_or(0) as usize,
            );
            for (a, v) in agents.iter().zip(&versions) {
                if v.as_deref() == Some("2.0.0") {
                    assert!(
                        in_phase(&a.id, &r2, PHASES[phase]),
                        "{} runs 2.0.0 while {r2} is in phase {phase} ({} %) without it",
                        a.id,
                        PHASES[phase]
                    );
                }
            }
        }
        if after["status"] == "completed" && versions.iter().all(|v| v.as_deref() == Some("2.0.0"))
        {
            break;
        }
        assert!(Instant::now() < deadline, "{r2} did not converge: {after}");
        std::thread::sleep(Duration::from_millis(200));
    }
    let converge = started.elapsed();
    assert!(
        phase_devices.get(&0).is_some_and(|d| *d >= 1),
        "the canary phase was seen, with devices: {phase_devices:?}"
    );
    let answered = traffic.stop();
    let counted = wait_uplink_complete(&server, &agents, Duration::from_secs(90));
    assert_eq!(counted, answered, "every prediction counted once");
    StagedRun {
        phase_devices,
        answered,
        converge,
    }
}
