//! Scenario 8 of issue 5: a flaky network. Every agent reaches the server (HTTPS for
//! enrollment and downloads, MQTT over TLS for everything else) only through TCP proxies that
//! cut connections at random moments and stall them. The fleet still converges through a
//! three-phase rollout, and no telemetry is lost or doubled: every prediction the agents
//! answered is counted by the server exactly once, and every message each agent numbered was
//! accepted exactly once (redeliveries refused by the replay guard).

use std::time::Duration;

use fleet_tests::proxy::{Flakiness, FlakyProxy};
use fleet_tests::{wait_converged, wait_uplink_complete, Agent, AgentOptions, Server, Traffic};
use serde_json::json;

#[test]
fn over_a_flaky_network_the_fleet_converges_and_telemetry_arrives_once() {
    let dir = tempfile::tempdir().unwrap();
    let (keys, server) = Server::fresh(dir.path());
    let token = server.enrollment_token(json!({"hw": "x86"}));
    let seed = std::env::var("FLAKY_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        });
    // every MQTT connection is cut at some point of its life (at most 6 s): the run always
    // sees cuts, whatever the seed; HTTP connections only sometimes
    let every_cut = Flakiness {
        cut_chance: 1.0,
        ..Flakiness::default()
    };
    let mqtt = FlakyProxy::start(server.mqtt_port, every_cut, seed).unwrap();
    let http = FlakyProxy::start(server.http_port(), Flakiness::default(), seed ^ 0x5eed).unwrap();
    let options = AgentOptions {
        http: Some(format!("https://127.0.0.1:{}", http.port)),
        mqtt: Some(format!("mqtts://127.0.0.1:{}", mqtt.port)),
        env: vec![],
    };
    let agents: Vec<Agent> = (0..4)
        .map(|i| {
            let id = format!("dev-{i}");
            Agent::start_with(&id, &dir.path().join(&id), &keys, &server, &token, &options)
        })
        .collect();
    let traffic = Traffic::start(agents.iter().map(|a| a.api.clone()).collect());
    let gates = json!({"min_reporting_devices": 1});
    let r1 = server.roll(
        &server.push(keys.digits("1.0.0", |_| {})),
        json!([{"percent": 100}]),
        gates.clone(),
        "pause",
    );
    wait_converged(&server, &r1, &agents, "1.0.0", Duration::from_secs(120));
    let r2 = server.roll(
        &server.push(keys.digits("2.0.0", |_| {})),
        json!([{"percent": 25, "soak_seconds": 2}, {"percent": 50, "soak_seconds": 2}, {"percent": 100}]),
        gates,
        "pause",
    );
    wait_converged(&server, &r2, &agents, "2.0.0", Duration::from_secs(180));
    let answered = traffic.stop();

    let counted = wait_uplink_complete(&server, &agents, Duration::from_secs(90));
    let duplicates: u64 = agents
        .iter()
        .map(|a| {
            server.device(&a.id)["uplink"]["duplicates"]
                .as_u64()
                .unwrap()
        })
        .sum();
    eprintln!(
        "mqtt proxy: {}; http proxy: {}; {answered} predictions answered, {counted} counted, \
         {duplicates} redeliveries refused",
        mqtt.summary(),
        http.summary()
    );
    assert_eq!(
        counted, answered,
        "every prediction counted once (seed {seed})"
    );
    assert!(
        mqtt.stats.cuts.load(std::sync::atomic::Ordering::Relaxed) > 0,
        "the network was flaky: {}",
        mqtt.summary()
    );
}
