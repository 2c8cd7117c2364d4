//! Rollouts judged by the model itself (issue 27), end to end with real processes: six agents
//! answer digits from the test set and the traffic sends each answer's true label back through
//! the agents' local API (`POST /v1/models/digits/feedback`).
//!
//! 1. v1 everywhere: a mediocre model (five pairs of labels swapped: about half its answers are
//!    wrong).
//! 2. A shadow phase that fails on agreement: v2 names every class one off (a candidate that
//!    flips labels); it runs beside v1 on live requests, its agreement is far under the gate,
//!    the rollout rolls back, and none of its answers ever reached an app.
//! 3. A shadow phase that passes: v3 answers as v1 does; while it shadows, the apps' answers
//!    still come from v1; then it ships to every device.
//! 4. An A/B experiment decided for the candidate: v4 (the labels right) against v3 on
//!    accuracy; the sequential test finds it better and the rollout completes.
//! 5. An A/B experiment decided against: v5 (the swapped labels again) against v4; the test
//!    finds it worse and the rollout rolls back, the candidate's arm back on v4.
//!
//! The dashboard (headless Chromium) then draws the experiment's arms, its confidence sequence
//! and the shadow's agreement.

use std::time::Duration;

use edge_fleet_kit::fixtures::relabel;
use edge_fleet_kit::traffic::Traffic;
use fleet_tests::{wait_for, Agent, Server};

use ota_server::cohort::in_phase;
use serde_json::{json, Value};

fn rollout(server: &Server, spec: Value) -> String {
    server.api(
        "POST",
        "/v1/rollouts",
        Some(("application/json", spec.to_string().into_bytes())),
    )["id"]
        .as_str()
        .unwrap_or_else(|| panic!("rollout refused: {spec}"))
        .to_string()
}

fn view(server: &Server, id: &str) -> Value {
    server.api("GET", &format!("/v1/rollouts/{id}"), None)
}

fn wait_status(server: &Server, id: &str, status: &str, agents: &[Agent], secs: u64) -> Value {
    wait_for(
        &format!("{id} to be {status}"),
        Duration::from_secs(secs),
        || {
            let v = view(server, id);
            (v["status"] == status).then_some(v)
        },
        || {
            let logs: String = agents
                .iter()
                .take(2)
                .map(|a| format!("--- {} ---\n{}", a.id, a.log_text()))
                .collect();
            format!("{}\n{logs}", view(server, id))
        },
    )
}

fn wait_versions(agents: &[Agent], want: impl Fn(&Agent) -> &'static str, what: &str) {
    wait_for(
        what,
        Duration::from_secs(90),
        || {
            agents
                .iter()
                .all(|a| a.active_version().as_deref() == Some(want(a)))
                .then_some(())
        },
        || {
            agents
                .iter()
                .map(|a| format!("{}: {:?}\n", a.id, a.active_version()))
                .collect()
        },
    );
}

/// The version of one answer to a test image, asked directly.
fn answered_by(agent: &Agent) -> String {
    let row: Vec<Vec<f32>> = (0..8).map(|i| vec![(i * 2) as f32; 8]).collect();
    let (code, text) = fleet_tests::call(
        "POST",
        &format!("http://{}/v1/models/digits/predict", agent.api),
        None,
        Some((
            "application/json",
            json!({ "input": [[row]] }).to_string().into_bytes(),
        )),
    );
    assert_eq!(code, 200, "{text}");
    let v: Value = serde_json::from_str(&text).unwrap();
    assert!(v["prediction_id"].is_string(), "{v}");
    v["version"].as_str().unwrap().to_string()
}

#[test]
fn shadow_phases_and_experiments_decide_on_the_models_own_signals() {
    let dir = tempfile::tempdir().unwrap();
    let (keys, server) = Server::fresh(dir.path());
    let token = server.enrollment_token(json!({"hw": "x86"}));
    // three devices in the candidate's arm of both experiments (r-4, r-5), three in neither
    let arm = |d: &str, r: &str| in_phase(d, &format!("{r}/arm"), 50.0);
    let pick = |in_arm: bool| -> Vec<String> {
        (0..2000)
            .map(|i| format!("dev-{i}"))
            .filter(|d| arm(d, "r-4") == in_arm && arm(d, "r-5") == in_arm)
            .take(3)
            .collect()
    };
    let ids: Vec<String> = pick(true).into_iter().chain(pick(false)).collect();
    let agents: Vec<Agent> = ids
        .iter()
        .map(|id| Agent::start(id, &dir.path().join(id), &keys, &server, &token))
        .collect();
    let traffic = Traffic::to(agents.iter().map(|a| a.api.clone()).collect())
        .every(Duration::from_millis(15))
        .feedback()
        .recording()
        .start();

    let half_swapped = |c: usize| if c < 6 { c ^ 1 } else { c };
    let with_labels = |version: &str, label_of: &dyn Fn(usize) -> usize| {
        let bundle = keys.digits(version, |s| relabel(s, label_of));
        format!("sha256:{}", server.push(bundle))
    };

    // 1. the mediocre incumbent everywhere
    let v1 = with_labels("1.0.0", &half_swapped);
    let r1 = rollout(
        &server,
        json!({"bundle": v1, "selector": "hw=x86", "phases": [{"percent": 100}]}),
    );
    wait_status(&server, &r1, "completed", &agents, 120);
    wait_versions(&agents, |_| "1.0.0", "every device on 1.0.0");

    // 2. a shadow that flips labels fails on agreement
    let v2 = with_labels("2.0.0", &|c| (c + 1) % 10);
    let r2 = rollout(
        &server,
        json!({"bundle": v2, "selector": "hw=x86",
               "phases": [{"percent": 100, "soak_seconds": 2, "shadow": {"sample": 1.0, "cpu_budget": 0.5}},
                          {"percent": 100}],
               "gates": {"min_shadow_agreement": 0.9, "min_shadow_requests": 60, "min_reporting_devices": 6},
               "on_gate_failure": "rollback"}),
    );
    let v = wait_status(&server, &r2, "rolled_back", &agents, 90);
    let last = v["transitions"].as_array().unwrap().last().unwrap().clone();
    assert!(
        last["reason"]
            .as_str()
            .unwrap()
            .contains("shadow agreement"),
        "{last}"
    );
    let shadow = &last["health"]["shadow"];
    assert!(shadow["requests"].as_u64().unwrap() >= 60, "{shadow}");
    assert!(shadow["agreement"].as_f64().unwrap() < 0.5, "{shadow}");
    // the agents stop the shadow
    wait_for(
        "the flipped shadow to stop everywhere",
        Duration::from_secs(30),
        || {
            agents
                .iter()
                .all(|a| {
                    a.status().is_some_and(|s| {
                        s["models"][0]["shadow"].is_null()
                            && s["models"][0]["slots"]["shadow"].is_null()
                    })
                })
                .then_some(())
        },
        || format!("{:?}", agents[0].status()),
    );

    // 3. a shadow that agrees passes, and while it shadows, v1 still answers
    let v3 = with_labels("3.0.0", &half_swapped);
    let r3 = rollout(
        &server,
        json!({"bundle": v3, "selector": "hw=x86",
               "phases": [{"percent": 100, "soak_seconds": 6, "shadow": {"sample": 0.5, "cpu_budget": 0.5}},
                          {"percent": 100}],
               "gates": {"min_shadow_agreement": 0.95, "min_shadow_requests": 40, "max_shadow_p99_ms": 500,
                         "min_reporting_devices": 6},
               "on_gate_failure": "rollback"}),
    );
    wait_for(
        "3.0.0 to shadow on every device",
        Duration::from_secs(60),
        || {
            agents
                .iter()
                .all(|a| {
                    a.status()
                        .is_some_and(|s| s["models"][0]["shadow"]["version"] == "3.0.0")
                })
                .then_some(())
        },
        || format!("{}\n{:?}", view(&server, &r3), agents[0].status()),
    );
    for a in &agents {
        assert_eq!(answered_by(a), "1.0.0", "{}: a shadow answered", a.id);
    }
    let v = wait_status(&server, &r3, "completed", &agents, 120);
    let passed = &v["transitions"][0];
    assert_eq!(passed["to_phase"], 1, "{passed}");
    let agreement = passed["health"]["shadow"]["agreement"].as_f64().unwrap();
    assert!(agreement >= 0.95, "{passed}");
    wait_versions(&agents, |_| "3.0.0", "every device on 3.0.0");

    // 4. an experiment the candidate wins on accuracy
    let v4 = with_labels("4.0.0", &|c| c);
    let experiment = json!({"metric": "accuracy", "alpha": 0.05, "tau": 0.1, "min_samples": 30,
                            "max_seconds": 120, "on_inconclusive": "rollback"});
    let r4 = rollout(
        &server,
        json!({"bundle": v4, "selector": "hw=x86",
               "phases": [{"percent": 100, "experiment": experiment}, {"percent": 100}],
               "on_gate_failure": "rollback"}),
    );
    assert_eq!(r4, "r-4");
    let candidates: Vec<&str> = ids[..3].iter().map(String::as_str).collect();
    wait_versions(
        &agents,
        |a| {
            if candidates.contains(&a.id.as_str()) {
                "4.0.0"
            } else {
                "3.0.0"
            }
        },
        "the candidate's arm on 4.0.0, the incumbent's on 3.0.0",
    );
    let v = wait_status(&server, &r4, "completed", &agents, 120);
    let decided = &v["transitions"][0];
    assert!(
        decided["reason"]
            .as_str()
            .unwrap()
            .contains("the candidate is better"),
        "{decided}"
    );
    let look = &decided["health"]["experiment"];
    assert_eq!(look["verdict"], "candidate_better", "{look}");
    assert!(look["candidate"]["mean"].as_f64().unwrap() > 0.9, "{look}");
    assert!(look["incumbent"]["mean"].as_f64().unwrap() < 0.8, "{look}");
    assert!(look["interval"][0].as_f64().unwrap() > 0.0, "{look}");
    assert!(!v["looks"].as_array().unwrap().is_empty(), "looks kept");
    let (ok, shown) = fleet_tests::edgectl(&server, &["rollout", "show", &r4]);
    assert!(
        ok && shown.contains("experiment (arm A") && shown.contains("candidate_better"),
        "{shown}"
    );
    wait_versions(&agents, |_| "4.0.0", "every device on 4.0.0");

    // 5. an experiment the candidate loses: rolled back
    let v5 = with_labels("5.0.0", &half_swapped);
    let r5 = rollout(
        &server,
        json!({"bundle": v5, "selector": "hw=x86",
               "phases": [{"percent": 100, "experiment": experiment}, {"percent": 100}],
               "on_gate_failure": "rollback"}),
    );
    let v = wait_status(&server, &r5, "rolled_back", &agents, 120);
    let decided = v["transitions"].as_array().unwrap().last().unwrap().clone();
    assert!(
        decided["reason"]
            .as_str()
            .unwrap()
            .contains("the candidate is worse"),
        "{decided}"
    );
    assert!(
        decided["health"]["experiment"]["interval"][1]
            .as_f64()
            .unwrap()
            < 0.0,
        "{decided}"
    );
    wait_versions(&agents, |_| "4.0.0", "every device back on 4.0.0");

    // the dashboard draws the experiment's arms and confidence sequence, and shadow agreement
    let browser = fleet_tests::webdriver::Browser::start(1280, 900);
    browser.goto(&server.u("/"));
    browser.type_into("#token", &server.admin);
    browser.click("#login");
    browser.wait("#online", Duration::from_secs(20));
    browser.goto(&server.u(&format!("/#/rollouts/{r4}")));
    browser.wait("#experiment", Duration::from_secs(20));
    assert!(
        browser.text("#experiment").contains("candidate better"),
        "{}",
        browser.text("main")
    );
    assert!(browser.text("#arms").contains("B (candidate)"));
    assert!(browser
        .find("[data-chart='Experiment: accuracy B − A'] svg path.new")
        .is_some());
    assert!(browser
        .find("[data-chart='Accuracy (app labels)'] svg")
        .is_some());
    browser
        .screenshot(&fleet_tests::workspace().join("target/dashboard-screenshots/experiment.png"));
    browser.goto(&server.u(&format!("/#/rollouts/{r3}")));
    browser.wait(
        "[data-chart='Shadow agreement'] svg path.new",
        Duration::from_secs(20),
    );

    for id in [&r2, &r3, &r4, &r5] {
        for t in view(&server, id)["transitions"].as_array().unwrap() {
            eprintln!("{id}: {}", t["reason"]);
        }
    }
    // no answer ever came from a shadow: the flipped candidate never answered at all, and the
    // answers carry ids the apps sent feedback with
    let (sent, answers) = traffic.stop();
    assert!(sent > 500, "{sent}");
    let flipped = answers
        .iter()
        .filter(|(code, v)| *code == 200 && v["version"] == "2.0.0")
        .count();
    assert_eq!(flipped, 0, "answers from the shadow that failed");
    assert!(answers
        .iter()
        .filter(|(code, _)| *code == 200)
        .all(|(_, v)| v["prediction_id"].is_string()));
}
