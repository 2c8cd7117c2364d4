//! kill -9 at each reconcile step (download, write, verify, activate, trial): after a restart
//! the device serves a verified model at once, finishes the reconcile (the download resumes with
//! a Range request), and the server has every message the outbox held, each sequence number
//! used for exactly one message.

use std::time::Duration;

mod common;

use common::fleet::{free_port, Agent, Fleet, Traffic};
use edge_protocol::Step;

const T: Duration = Duration::from_secs(60);

fn crash_at(step: &str) {
    let fleet = Fleet::new();
    let state = tempfile::tempdir().unwrap();
    let config = fleet.agent_config("dev-k", state.path(), free_port(), "");
    // 1.0.0 installed and committed
    let mut agent = Agent::start(&config, state.path(), &[]);
    agent.wait_ready();
    let v1 = fleet.publish_artifact(&fleet.digits("1.0.0", |_| {}));
    fleet.send_desired("dev-k", 1, vec![v1]);
    fleet.wait_event("1.0.0", Step::Activated, T);
    let traffic = Traffic::start(&agent.api, Duration::from_millis(20));
    fleet.wait_event("1.0.0", Step::Committed, T);
    traffic.stop();
    agent.kill9();

    // restart armed: die at `step` while installing 2.0.0 (a bundle large enough that half of
    // it is a real partial download: the payload is the same ONNX, the manifest padded)
    let mut agent = Agent::start(&config, state.path(), &[("EDGE_AGENT_FAILPOINT", step)]);
    agent.wait_ready();
    let v2 = fleet.publish_artifact(&fleet.digits("2.0.0", |s| {
        s.description = "x".repeat(200_000);
    }));
    fleet.send_desired("dev-k", 2, vec![v2]);
    let traffic = (step == "trial").then(|| Traffic::start(&agent.api, Duration::from_millis(10)));
    let status = agent.wait_exit(T);
    drop(traffic);
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(
        status.signal(),
        Some(9),
        "died by SIGKILL at '{step}': {}",
        agent.log_text()
    );
    let partial_existed = std::fs::read_dir(state.path().join("downloads"))
        .map(|d| {
            d.flatten()
                .any(|e| e.path().extension().is_some_and(|x| x == "partial"))
        })
        .unwrap_or(false);

    // restart: serves a verified model at once
    let mut agent = Agent::start(&config, state.path(), &[]);
    agent.wait_ready();
    let (code, answer) = agent.predict_row(&[0.0; 64]);
    assert_eq!(
        code, 200,
        "after a crash at '{step}' the device serves: {answer}"
    );
    let version = answer["version"].as_str().unwrap().to_string();
    assert!(version == "1.0.0" || version == "2.0.0", "{answer}");
    // ... and finishes the job
    let traffic = Traffic::start(&agent.api, Duration::from_millis(10));
    fleet.wait_event("2.0.0", Step::Committed, T);
    let answers = traffic.stop();
    assert!(answers.iter().all(|(c, _)| *c == 200));
    if step == "download" {
        assert!(
            partial_existed,
            "half the bundle was on disk when the agent died"
        );
        let ranges = fleet.http.ranges.lock().unwrap().clone();
        assert_eq!(
            ranges.len(),
            1,
            "the download resumed where it stopped: {ranges:?}"
        );
    }
    // the outbox lost nothing: once it drains, every sequence number from 1 up arrived, in
    // order, each for one message only
    let deadline = std::time::Instant::now() + T;
    loop {
        let queued = agent.status()["outbox"]["queued"].as_u64().unwrap();
        if queued == 0 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "outbox does not drain"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_millis(300));
    let seqs = fleet.first_arrivals();
    let expected: Vec<u64> = (1..=*seqs.iter().max().unwrap()).collect();
    assert_eq!(seqs, expected, "after a crash at '{step}'");
}

#[test]
fn kill_9_while_downloading() {
    crash_at("download");
}

#[test]
fn kill_9_after_writing_the_bundle() {
    crash_at("write");
}

#[test]
fn kill_9_after_verifying() {
    crash_at("verify");
}

#[test]
fn kill_9_after_activating() {
    crash_at("activate");
}

#[test]
fn kill_9_during_the_trial() {
    crash_at("trial");
}

#[test]
fn a_trial_that_keeps_crashing_boots_back_into_the_previous_version() {
    let fleet = Fleet::new();
    let state = tempfile::tempdir().unwrap();
    let config = fleet.agent_config("dev-c", state.path(), free_port(), "");
    let env = [("EDGE_AGENT_TRIAL__MAX_BOOTS", "2")];
    let mut agent = Agent::start(&config, state.path(), &env);
    agent.wait_ready();
    let v1 = fleet.publish_artifact(&fleet.digits("1.0.0", |_| {}));
    fleet.send_desired("dev-c", 1, vec![v1]);
    fleet.wait_event("1.0.0", Step::Activated, T);
    let traffic = Traffic::start(&agent.api, Duration::from_millis(20));
    fleet.wait_event("1.0.0", Step::Committed, T);
    traffic.stop();
    // 2.0.0 goes on a long trial, and the process keeps dying during it
    let v2 = fleet.publish_artifact(
        &fleet.digits("2.0.0", |s| s.health.as_mut().unwrap().trial_seconds = 600),
    );
    fleet.send_desired("dev-c", 2, vec![v2]);
    fleet.wait_event("2.0.0", Step::Activated, T);
    for boot in 1..=3 {
        agent.kill9();
        agent = Agent::start(&config, state.path(), &env);
        agent.wait_ready();
        let (_, answer) = agent.predict_row(&[0.0; 64]);
        let want = if boot <= 2 { "2.0.0" } else { "1.0.0" };
        assert_eq!(answer["version"], want, "boot {boot}: {answer}");
    }
    let rolled = fleet.wait_event("2.0.0", Step::RolledBack, T);
    assert!(rolled.detail.unwrap().contains("crash loop"));
    assert_eq!(agent.status()["models"][0]["bad_versions"][0], "2.0.0");
}
