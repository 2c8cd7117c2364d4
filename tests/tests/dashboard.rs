//! The dashboard in a real headless Chromium (WebDriver) against a live server with three agents:
//! sign in with the admin token, watch a three-phase rollout advance on its page without a reload,
//! pause it from the page (with the confirm step) and see the API report it paused; a viewer token
//! sees no action buttons; the page never requests anything outside the server; it fits a phone
//! width. A screenshot of each page goes to `target/dashboard-screenshots/`.

use std::path::PathBuf;
use std::time::Duration;

use fleet_tests::webdriver::Browser;
use fleet_tests::{call, wait_converged, wait_for, workspace, Agent, Server, Traffic};
use serde_json::json;

fn shots() -> PathBuf {
    workspace().join("target/dashboard-screenshots")
}

#[test]
fn operators_watch_and_steer_a_rollout_in_the_browser() {
    let dir = tempfile::tempdir().unwrap();
    let (keys, server) = Server::fresh(dir.path());
    let token = server.enrollment_token(json!({"hw": "x86", "site": "lab"}));
    let agents: Vec<Agent> = (0..3)
        .map(|i| {
            let id = format!("dev-{i}");
            Agent::start(&id, &dir.path().join(&id), &keys, &server, &token)
        })
        .collect();
    let _traffic = Traffic::start(agents.iter().map(|a| a.api.clone()).collect());
    let gates =
        json!({"min_reporting_devices": 1, "max_error_rate": 0.05, "max_p99_latency_ms": 500.0});
    let r1 = server.roll(
        &server.push(keys.digits("1.0.0", |_| {})),
        json!([{"percent": 100}]),
        gates.clone(),
        "pause",
    );
    wait_converged(&server, &r1, &agents, "1.0.0", Duration::from_secs(90));
    let v2 = server.push(keys.digits("2.0.0", |_| {}));
    let r2 = server.roll(
        &v2,
        json!([{"percent": 34, "soak_seconds": 8}, {"percent": 67, "soak_seconds": 600},
               {"percent": 100}]),
        gates,
        "pause",
    );
    let viewer = server.api_token("wall-screen", "viewer");

    // the page is served with a same-origin-only policy
    let (code, html) = call("GET", &server.u("/"), None, None);
    assert_eq!(code, 200);
    assert!(html.contains("/ui/app.js"), "{html}");

    let browser = Browser::start(1280, 800);
    browser.goto(&server.u("/"));
    browser.type_into("#token", &server.admin);
    browser.click("#login");
    browser.wait("#online", Duration::from_secs(20));
    wait_for(
        "the overview to list the devices",
        Duration::from_secs(20),
        || browser.text("#online").starts_with("3 / 3").then_some(()),
        || browser.text("main"),
    );
    assert!(browser.text("#active-rollouts").contains(&r2));
    browser.screenshot(&shots().join("overview.png"));

    // the rollout page moves from phase 1 to phase 2 by itself
    browser.goto(&server.u(&format!("/#/rollouts/{r2}")));
    browser.wait("#phases", Duration::from_secs(20));
    let loaded = browser.js("return window.edgefleetLoadedAt");
    assert_eq!(browser.text("#phase-number"), "1");
    wait_for(
        "the page to show phase 2 without a reload",
        Duration::from_secs(90),
        || (browser.text("#phase-number") == "2").then_some(()),
        || {
            server
                .api("GET", &format!("/v1/rollouts/{r2}"), None)
                .to_string()
        },
    );
    assert_eq!(
        browser.js("return window.edgefleetLoadedAt"),
        loaded,
        "updated in place, not reloaded"
    );
    assert!(browser
        .text("#decisions")
        .contains("phase 1 running → phase 2 running"));
    assert!(
        browser
            .find("[data-chart='Error rate'] svg path.new")
            .is_some(),
        "a chart line"
    );
    assert!(
        browser
            .find("[data-chart='Install failure rate'] svg")
            .is_some(),
        "installs charted: {}",
        browser.text("main")
    );
    browser.screenshot(&shots().join("rollout.png"));

    // pause from the page: the button asks first, then the API says paused
    browser.click("#actions button[data-action=pause]");
    browser.wait("#confirm", Duration::from_secs(10));
    assert_eq!(
        server.rollout_status(&r2),
        "running",
        "nothing before confirming"
    );
    browser.click("#confirm-yes");
    wait_for(
        "the API to report the rollout paused",
        Duration::from_secs(20),
        || (server.rollout_status(&r2) == "paused").then_some(()),
        || browser.text("main"),
    );
    wait_for(
        "the page to show it paused",
        Duration::from_secs(20),
        || {
            browser
                .find("#actions button[data-action=resume]")
                .map(|_| ())
        },
        || browser.text("main"),
    );
    let decisions = server.api("GET", &format!("/v1/rollouts/{r2}"), None);
    assert!(
        decisions["transitions"]
            .to_string()
            .contains("paused by init"),
        "the decision log names who paused: {decisions}"
    );

    // device and model pages
    browser.goto(&server.u("/#/devices/dev-0"));
    browser.wait("#slots", Duration::from_secs(20));
    assert!(browser.text("#slots").contains("digits"));
    browser.wait(
        "#device-charts [data-chart='Predictions'] svg path, #device-charts [data-chart='Predictions'] svg circle",
        Duration::from_secs(20),
    );
    browser.screenshot(&shots().join("device.png"));
    browser.goto(&server.u(&format!("/#/bundles/{v2}")));
    browser.wait("#bundle-detail", Duration::from_secs(20));
    assert!(browser.text("#bundle-detail").contains(&v2));
    browser.screenshot(&shots().join("models.png"));

    // nothing outside the server was requested
    let origin = server.url.clone();
    let requested = browser.js("return performance.getEntriesByType('resource').map(e => e.name)");
    let requested: Vec<String> = serde_json::from_value(requested).unwrap();
    assert!(!requested.is_empty());
    for url in &requested {
        assert!(
            url.starts_with(&origin),
            "request outside the server: {url}"
        );
    }

    // a phone-width window: no sideways scrolling
    browser.resize(390, 844);
    let rollout_page = format!("/#/rollouts/{r2}");
    for (page, ready, shot) in [
        ("/#/", "#online", "overview-phone.png"),
        (rollout_page.as_str(), "#phases", "rollout-phone.png"),
    ] {
        browser.goto(&server.u(page));
        browser.wait(ready, Duration::from_secs(20));
        let overflow = browser.js(
            "return document.documentElement.scrollWidth - document.documentElement.clientWidth",
        );
        assert!(
            overflow.as_i64().unwrap() <= 0,
            "{page} wider than the phone: {overflow}"
        );
        browser.screenshot(&shots().join(shot));
    }
    browser.resize(1280, 800);
    browser.goto(&server.u("/#/"));

    // a viewer sees the rollout but no buttons
    browser.click("#logout");
    browser.type_into("#token", &viewer);
    browser.click("#login");
    browser.wait("#online", Duration::from_secs(20));
    browser.goto(&server.u(&format!("/#/rollouts/{r2}")));
    browser.wait("#phases", Duration::from_secs(20));
    assert!(browser.text("#who").contains("viewer"));
    assert_eq!(
        browser.js("return document.querySelectorAll('#actions button').length"),
        0,
        "a viewer gets no action buttons"
    );
    browser.screenshot(&shots().join("rollout-viewer.png"));
}
