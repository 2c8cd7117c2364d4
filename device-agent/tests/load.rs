//! Two clients hammer `POST /v1/models/digits/predict` on the running agent while the server
//! swaps the model 20 times (alternating two versions that answer differently). No request
//! fails, and every answer is the answer of the version it names.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

mod common;

use common::fleet::{free_port, http_post, Agent, Fleet};
use edge_protocol::Step;
use edge_runtime::trust::{RootAnchor, TrustRoot};
use edge_runtime::{LoadOptions, Model};

const T: Duration = Duration::from_secs(60);

#[test]
fn twenty_swaps_through_the_agent_fail_no_request() {
    let fleet = Fleet::new();
    let state = tempfile::tempdir().unwrap();
    let config = fleet.agent_config("dev-l", state.path(), free_port(), "");
    let mut agent = Agent::start(&config, state.path(), &[]);
    agent.wait_ready();
    // one input row over and over is all the drift there is: this test is about swaps, so the
    // trials never reach a verdict (each swap supersedes the running trial)
    let endless = |s: &mut edge_pack::pack::PackSpec| {
        let h = s.health.as_mut().unwrap();
        h.trial_seconds = 600;
        h.min_requests = u64::MAX;
    };
    let b1 = fleet.digits("1.0.0", endless);
    let b2 = fleet.digits("2.0.0", |s| {
        endless(s);
        s.input.as_mut().unwrap().normalize.as_mut().unwrap().scale = Some(0.05);
    });
    let row = common::read_npy("digits/test_x.npy").rows(5, 6);
    let trust = TrustRoot::from_bytes(
        &std::fs::read(&fleet.trust_path).unwrap(),
        RootAnchor::SelfSigned,
    )
    .unwrap();
    let expected = |b: &[u8]| {
        let r = Model::load(b, &trust, &LoadOptions::default())
            .unwrap()
            .predict(vec![row.clone()])
            .unwrap();
        serde_json::from_str::<serde_json::Value>(&serde_json::to_string(&r.results).unwrap())
            .unwrap()
    };
    let (e1, e2) = (expected(&b1), expected(&b2));
    assert_ne!(e1, e2, "the versions must be distinguishable");
    let d1 = fleet.publish_artifact(&b1);
    let d2 = fleet.publish_artifact(&b2);
    fleet.send_desired("dev-l", 1, vec![d1.clone()]);
    fleet.wait_event("1.0.0", Step::Activated, T);

    let stop = Arc::new(AtomicBool::new(false));
    let answers = Arc::new(Mutex::new(Vec::new()));
    let url = agent.url("/v1/models/digits/predict");
    let body = row.to_le_bytes();
    let clients: Vec<_> = (0..2)
        .map(|_| {
            let (stop, answers, url, body) =
                (stop.clone(), answers.clone(), url.clone(), body.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let r = http_post(
                        &url,
                        "application/octet-stream",
                        &body,
                        &[("x-shape", "1,1,8,8")],
                    );
                    answers.lock().unwrap().push(r.map_err(|e| e.to_string()));
                }
            })
        })
        .collect();
    for generation in 2..=21u64 {
        let want = if generation % 2 == 0 { &d2 } else { &d1 };
        fleet.send_desired("dev-l", generation, vec![want.clone()]);
        fleet.wait_event_where(
            &format!("Activated at generation {generation}"),
            |e| e.generation == generation && e.step == Step::Activated,
            T,
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    stop.store(true, Ordering::Relaxed);
    clients.into_iter().for_each(|c| c.join().unwrap());
    let answers = answers.lock().unwrap();
    assert!(answers.len() > 100, "only {} requests", answers.len());
    let mut seen = std::collections::BTreeMap::new();
    for a in answers.iter() {
        let (code, text) = a.as_ref().expect("no transport error");
        assert_eq!(*code, 200, "{text}");
        let v: serde_json::Value = serde_json::from_str(text).unwrap();
        let version = v["version"].as_str().unwrap().to_string();
        let want = if version == "1.0.0" { &e1 } else { &e2 };
        assert_eq!(&v["results"], want, "the answer is the answer of {version}");
        *seen.entry(version).or_insert(0) += 1;
    }
    assert_eq!(seen.len(), 2, "both versions served: {seen:?}");
    let swaps = fleet
        .events()
        .iter()
        .filter(|e| e.step == Step::Activated)
        .count();
    assert_eq!(swaps, 21);
    eprintln!("{} requests across 20 swaps: {seen:?}", answers.len());
}
