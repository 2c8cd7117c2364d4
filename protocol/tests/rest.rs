//! The REST contract's JSON shapes, pinned: what operators' scripts, the dashboard and
//! `edgectl` read. A change here is an API change.

use edge_protocol::rest::{
    PhaseHealth, PhaseProgress, Rollout, RolloutSpec, RolloutStatus, RolloutView, Transition,
};
use edge_protocol::selector::Selector;
use serde_json::json;

fn spec() -> RolloutSpec {
    serde_json::from_value(json!({
        "bundle": "sha256:00",
        "selector": "hw=jetson-orin, site in (berlin,paris)",
        "phases": [{"percent": 5.0, "soak_seconds": 600}, {"percent": 100.0}],
        "gates": {"max_psi": 0.2},
    }))
    .unwrap()
}

#[test]
fn a_rollout_spec_reads_with_defaults_and_keeps_the_selector_text() {
    let s = spec();
    assert_eq!(
        s.selector.as_str(),
        "hw=jetson-orin, site in (berlin,paris)"
    );
    assert_eq!(s.selector.requirements.len(), 2);
    assert_eq!(s.phases[1].soak_seconds, 0);
    assert_eq!(
        s.gates.min_reporting_devices, 1,
        "a gates object defaults it to 1"
    );
    assert_eq!(
        serde_json::to_value(&s).unwrap(),
        json!({
            "bundle": "sha256:00",
            "selector": "hw=jetson-orin, site in (berlin,paris)",
            "phases": [{"percent": 5.0, "soak_seconds": 600}, {"percent": 100.0, "soak_seconds": 0}],
            "gates": {"max_install_failure_rate": null, "max_error_rate": null,
                      "max_p99_latency_ms": null, "max_psi": 0.2, "min_mean_confidence": null,
                      "min_reporting_devices": 1, "min_requests": 0},
            "on_gate_failure": "pause",
        })
    );
}

/// Fail closed: a selector that does not parse refuses the whole document (a stored rollout
/// that no longer parses is never read as "every device").
#[test]
fn a_selector_that_does_not_parse_refuses_the_document() {
    let err = serde_json::from_value::<RolloutSpec>(json!({
        "bundle": "sha256:00", "selector": "site in (a,b", "phases": [{"percent": 5.0}],
    }))
    .unwrap_err();
    assert!(err.to_string().contains("selector 'site in (a,b'"), "{err}");
    let unknown = serde_json::from_value::<RolloutSpec>(json!({
        "bundle": "sha256:00", "phases": [{"percent": 5.0}], "gate": {},
    }));
    assert!(unknown.is_err(), "unknown fields are refused");
    assert_eq!(Selector::parse("").unwrap().requirements.len(), 0);
}

#[test]
fn the_rollout_view_is_the_rollout_flattened_with_its_live_health() {
    let mut r = Rollout::new("r-1".into(), "digits".into(), "2.0.0".into(), spec(), 100);
    let health = PhaseHealth {
        devices: 3,
        reporting_devices: 2,
        requests: 40,
        psi: Some(0.5),
        ..Default::default()
    };
    r.status = RolloutStatus::Paused;
    r.transitions.push(Transition {
        at: 160,
        from_phase: 0,
        to_phase: 0,
        from_status: RolloutStatus::Running,
        to_status: RolloutStatus::Paused,
        reason: "gate failed in phase 0: prediction PSI 0.500 over 0.2".into(),
        health: Some(health.clone()),
    });
    let view = RolloutView {
        rollout: r,
        selected_devices: 60,
        phase_devices: 3,
        health: health.clone(),
        phases_detail: vec![PhaseProgress {
            phase: 0,
            percent: 5.0,
            soak_seconds: 600,
            targeted: 3,
            updated: 2,
            rolled_back: 0,
            healthy: 2,
            reached: true,
        }],
    };
    let v = serde_json::to_value(&view).unwrap();
    let health_json = json!({"devices": 3, "reporting_devices": 2, "installs": 0,
        "install_failures": 0, "requests": 40, "errors": 0, "p99_ms": null, "psi": 0.5,
        "mean_confidence": null});
    assert_eq!(v["id"], "r-1");
    assert_eq!(v["status"], "paused");
    assert_eq!(v["phase"], 0);
    assert_eq!(v["phase_started"], 100);
    assert_eq!(
        v["spec"]["selector"],
        "hw=jetson-orin, site in (berlin,paris)"
    );
    assert_eq!(v["health"], health_json);
    assert_eq!(v["transitions"][0]["health"], health_json);
    assert_eq!(v["transitions"][0]["to_status"], "paused");
    assert_eq!(
        v["phases_detail"][0],
        json!({"phase": 0, "percent": 5.0, "soak_seconds": 600, "targeted": 3, "updated": 2,
               "rolled_back": 0, "healthy": 2, "reached": true})
    );
    assert_eq!(
        (v["selected_devices"].clone(), v["phase_devices"].clone()),
        (json!(60), json!(3))
    );
    // and back: what the CLI reads is what the server wrote
    assert_eq!(serde_json::from_value::<RolloutView>(v).unwrap(), view);
}

#[test]
fn rolled_back_status_and_roles_are_snake_and_lower_case() {
    assert_eq!(
        serde_json::to_value(RolloutStatus::RolledBack).unwrap(),
        "rolled_back"
    );
    assert_eq!(
        serde_json::to_value(edge_protocol::rest::Role::Operator).unwrap(),
        "operator"
    );
}
