//! Issue 26: three `ota-server` replicas on one PostgreSQL, devices spread over them through a
//! load balancer, a three-phase rollout during which the engine's leader is killed (-9), the
//! next leader is paused (SIGSTOP) until a third takes over and then resumed (SIGCONT: it must
//! write nothing), and PostgreSQL is restarted. The rollout completes on every device; every
//! prediction is counted exactly once; no device ever runs the new version ahead of its phase.

use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use fleet_tests::postgres::Postgres;
use fleet_tests::proxy::Balancer;
use fleet_tests::{
    call, free_port, wait_converged, wait_for, wait_uplink_complete, Agent, AgentOptions, Keys,
    Server, Traffic,
};
use ota_server::cohort::in_phase;
use serde_json::{json, Value};

const LEASE_SECONDS: u64 = 3;

fn healthz(server: &Server) -> Option<Value> {
    let (code, body) = call("GET", &server.u("/healthz"), None, None);
    (code == 200)
        .then(|| serde_json::from_str(&body).ok())
        .flatten()
}

fn leading(server: &Server) -> bool {
    healthz(server).is_some_and(|h| h["engine_leader"] == true)
}

fn engine_steps(server: &Server) -> u64 {
    let (_, text) = call("GET", &server.u("/metrics"), Some(&server.admin), None);
    text.lines()
        .find_map(|l| l.strip_prefix("edgefleet_engine_steps_total "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no engine step counter in:\n{text}"))
}

fn signal(server: &Server, sig: &str) {
    let ok = Command::new("kill")
        .args([sig, &server.child.id().to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill {sig}");
}

/// The replica that leads now among `live` (by index), waiting up to `timeout` for one.
fn leader(replicas: &[Server], live: &[usize], timeout: Duration) -> usize {
    wait_for(
        "a replica leading the engine",
        timeout,
        || live.iter().copied().find(|&i| leading(&replicas[i])),
        || {
            live.iter()
                .map(|&i| format!("{:?}\n", healthz(&replicas[i])))
                .collect()
        },
    )
}

#[test]
fn replicas_survive_a_killed_leader_a_paused_leader_and_a_database_restart() {
    let dir = tempfile::tempdir().unwrap();
    // PostgreSQL runs as its own user: it must be able to reach its directory
    std::fs::set_permissions(
        dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let pg = Postgres::up(&dir.path().join("cluster"));
    let store = ["--store", pg.url.as_str(), "--store-schema", "cluster"];
    let keys = Keys::new(dir.path());
    let seed = dir.path().join("seed");
    Server::init_with(&seed, &keys, &store);
    let artifacts = dir.path().join("artifacts");
    let replicas: Vec<Server> = (0..3)
        .map(|i| {
            let data = dir.path().join(format!("replica-{i}"));
            edge_fleet_kit::server::copy_data_dir(&seed, &data).unwrap();
            let replica = format!("replica-{i}");
            let lease = LEASE_SECONDS.to_string();
            let mut args = store.to_vec();
            args.extend([
                "--artifacts",
                artifacts.to_str().unwrap(),
                "--replica-id",
                &replica,
                "--lease-seconds",
                &lease,
            ]);
            Server::start_with(&data, free_port(), free_port(), &args)
        })
        .collect();
    let mut replicas = replicas;
    let leaders: Vec<usize> = (0..3).filter(|&i| leading(&replicas[i])).collect();
    assert!(leaders.len() <= 1, "one leader at most: {leaders:?}");

    let mqtt = Balancer::start(replicas.iter().map(|r| r.mqtt_port).collect()).unwrap();
    let http = Balancer::start(replicas.iter().map(|r| r.http_port()).collect()).unwrap();
    let options = AgentOptions {
        http: Some(format!("https://127.0.0.1:{}", http.port)),
        mqtt: Some(format!("mqtts://127.0.0.1:{}", mqtt.port)),
        env: vec![],
    };
    let token = replicas[0].enrollment_token(json!({"hw": "x86"}));
    let agents: Vec<Agent> = (0..6)
        .map(|i| {
            let id = format!("dev-{i}");
            Agent::start_with(
                &id,
                &dir.path().join(&id),
                &keys,
                &replicas[0],
                &token,
                &options,
            )
        })
        .collect();
    let gates = json!({"min_reporting_devices": 1});
    let traffic = Traffic::start(agents.iter().map(|a| a.api.clone()).collect());
    // the API of any replica: upload on one, roll out on another, watch on a third
    let v1 = replicas[0].push(keys.digits("1.0.0", |_| {}));
    let r1 = replicas[1].roll(&v1, json!([{"percent": 100}]), gates.clone(), "pause");
    wait_converged(
        &replicas[2],
        &r1,
        &agents,
        "1.0.0",
        Duration::from_secs(120),
    );
    let v2 = replicas[1].push(keys.digits("2.0.0", |_| {}));
    let r2 = replicas[2].roll(
        &v2,
        json!([{"percent": 34, "soak_seconds": 8}, {"percent": 67, "soak_seconds": 8}, {"percent": 100}]),
        gates,
        "pause",
    );

    // a watcher: a device on 2.0.0 must be in the phase the rollout is in (versions read
    // first, the phase after: phases only move forward, so a late phase read cannot hide one)
    let stop = Arc::new(AtomicBool::new(false));
    let ahead: Arc<Mutex<Vec<String>>> = Arc::default();
    let urls: Vec<(String, String)> = replicas
        .iter()
        .map(|r| (r.url.clone(), r.admin.clone()))
        .collect();
    let apis: Vec<(String, String)> = agents
        .iter()
        .map(|a| (a.id.clone(), a.api.clone()))
        .collect();
    let watcher = {
        let (stop, ahead, r2) = (stop.clone(), ahead.clone(), r2.clone());
        std::thread::spawn(move || {
            let mut looks = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let on_v2: Vec<&String> = apis
                    .iter()
                    .filter(|(_, api)| {
                        let (_, body) = call("GET", &format!("http://{api}/v1/status"), None, None);
                        serde_json::from_str::<Value>(&body)
                            .is_ok_and(|s| s["models"][0]["slots"]["active"]["version"] == "2.0.0")
                    })
                    .map(|(id, _)| id)
                    .collect();
                let rollout = urls.iter().find_map(|(url, admin)| {
                    let (code, body) =
                        call("GET", &format!("{url}/v1/rollouts/{r2}"), Some(admin), None);
                    (code == 200)
                        .then(|| serde_json::from_str::<Value>(&body).ok())
                        .flatten()
                });
                if let Some(r) = rollout {
                    let phase = r["phase"].as_u64().unwrap_or(0) as usize;
                    let percent = r["spec"]["phases"][phase]["percent"]
                        .as_f64()
                        .unwrap_or(100.0);
                    let done = r["status"] == "completed";
                    for id in on_v2 {
                        if !done && !in_phase(id, &r2, percent) {
                            ahead
                                .lock()
                                .unwrap()
                                .push(format!("{id} on 2.0.0 in phase {phase} ({percent} %)"));
                        }
                    }
                    looks += 1;
                }
                std::thread::sleep(Duration::from_millis(300));
            }
            looks
        })
    };

    // 1. the leader killed -9 mid-phase: another takes over within the lease
    std::thread::sleep(Duration::from_secs(2));
    let first = leader(&replicas, &[0, 1, 2], Duration::from_secs(10));
    assert_eq!(
        replicas[2].api("GET", &format!("/v1/rollouts/{r2}"), None)["phase"],
        0
    );
    replicas[first].kill9();
    let killed_at = Instant::now();
    let live: Vec<usize> = (0..3).filter(|&i| i != first).collect();
    let second = leader(&replicas, &live, Duration::from_secs(LEASE_SECONDS + 10));
    let takeover = killed_at.elapsed();
    eprintln!("replica-{first} killed; replica-{second} leads after {takeover:?}");
    assert!(
        takeover <= Duration::from_secs(LEASE_SECONDS + 3),
        "takeover took {takeover:?} (lease {LEASE_SECONDS} s, ticks of 1 s)"
    );

    // 2. the new leader paused past its lease; the last replica takes over; resumed, the old
    // one finds its lease gone and writes nothing (its writes would carry a stale token)
    let third = *live.iter().find(|&&i| i != second).unwrap();
    let steps_before = engine_steps(&replicas[second]);
    signal(&replicas[second], "-STOP");
    let paused_at = Instant::now();
    let taken = leader(&replicas, &[third], Duration::from_secs(LEASE_SECONDS + 10));
    assert_eq!(taken, third);
    eprintln!(
        "replica-{second} paused; replica-{third} leads after {:?}",
        paused_at.elapsed()
    );
    signal(&replicas[second], "-CONT");
    std::thread::sleep(Duration::from_secs(3));
    assert!(!leading(&replicas[second]), "the resumed replica follows");
    assert!(leading(&replicas[third]), "one leader");
    assert_eq!(
        engine_steps(&replicas[second]),
        steps_before,
        "the resumed old leader completed no engine step:\n{}",
        replicas[second].log_text()
    );

    // 3. PostgreSQL restarted under the running fleet, mid-rollout
    let before = replicas[third].api("GET", &format!("/v1/rollouts/{r2}"), None);
    assert_eq!(before["status"], "running", "{before}");
    pg.restart();
    eprintln!("PostgreSQL restarted in phase {}", before["phase"]);

    wait_converged(
        &replicas[third],
        &r2,
        &agents,
        "2.0.0",
        Duration::from_secs(240),
    );
    stop.store(true, Ordering::Relaxed);
    let looks = watcher.join().unwrap();
    let answered = traffic.stop();
    let counted = wait_uplink_complete(&replicas[third], &agents, Duration::from_secs(120));
    eprintln!("{answered} predictions answered, {counted} counted; {looks} phase checks");
    assert!(looks > 10, "the phase watcher looked {looks} times");
    assert_eq!(
        *ahead.lock().unwrap(),
        Vec::<String>::new(),
        "devices ahead of their phase"
    );
    assert_eq!(
        counted, answered,
        "every answered prediction counted exactly once"
    );
    // the fenced, resumed replica still serves the API
    assert_eq!(
        replicas[second].rollout_status(&r2),
        "completed",
        "any replica answers"
    );
    drop(replicas.remove(first));
}
