//! README's first command, as a user runs it: `edgectl demo --non-interactive` starts the
//! server and a dozen agents, rolls v2 out (a shadow phase beside v1 first, then in phases), a
//! bad v3 that must halt at its canary phase and roll back, and v4 in an A/B experiment decided
//! on the apps' labels; it exits 0 only if all of that held, and prints a JSON summary.

use std::process::Command;

use fleet_tests::binary;

#[test]
fn the_demo_shadows_and_rolls_out_v2_rolls_back_v3_and_decides_v4_by_experiment() {
    // the demo finds ota-server and edge-agent next to edgectl
    binary("ota-server");
    binary("edge-agent");
    let out = Command::new(binary("edgectl"))
        .args(["demo", "--non-interactive", "--timeout", "240"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}\n{stdout}");
    let summary: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(summary["ok"], true, "{summary:#}");
    assert_eq!(
        summary["final_devices_per_version"]["4.0.0"]
            .as_array()
            .unwrap()
            .len(),
        12
    );
    let rollouts = summary["rollouts"].as_array().unwrap();
    assert_eq!(rollouts[1]["status"], "completed");
    assert_eq!(rollouts[1]["phases_reached"], 4);
    assert_eq!(rollouts[1]["devices_per_version"]["2.0.0"], 12);
    assert!(
        summary["shadow"]["agreement"].as_f64().unwrap() >= 0.9,
        "{summary:#}"
    );
    assert_eq!(summary["experiment"]["verdict"], "candidate_better");
    assert!(
        summary["experiment"]["candidate_accuracy"]
            .as_f64()
            .unwrap()
            > summary["experiment"]["incumbent_accuracy"]
                .as_f64()
                .unwrap(),
        "{summary:#}"
    );
    assert_eq!(rollouts[2]["status"], "rolled_back");
    assert_eq!(rollouts[2]["phases_reached"], 1);
    let reason = rollouts[2]["decisions"].as_array().unwrap().last().unwrap()["reason"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(reason.contains("PSI"), "{reason}");
    assert!(summary["seconds"].as_f64().unwrap() < 240.0);
}
