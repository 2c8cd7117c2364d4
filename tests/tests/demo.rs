//! README's first command, as a user runs it: `edgectl demo --non-interactive` starts the
//! server and a dozen agents, rolls v2 out in phases and a bad v3 that must halt at its canary
//! phase and roll back; it exits 0 only if all of that held, and prints a JSON summary.

use std::process::Command;

use fleet_tests::binary;

#[test]
fn the_demo_rolls_out_v2_and_rolls_back_the_bad_v3() {
    // the demo finds ota-server and edge-agent next to edgectl
    binary("ota-server");
    binary("edge-agent");
    let out = Command::new(binary("edgectl"))
        .args(["demo", "--non-interactive", "--timeout", "170"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}\n{stdout}");
    let summary: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(summary["ok"], true, "{summary:#}");
    assert_eq!(
        summary["final_devices_per_version"]["2.0.0"]
            .as_array()
            .unwrap()
            .len(),
        12
    );
    let rollouts = summary["rollouts"].as_array().unwrap();
    assert_eq!(rollouts[1]["status"], "completed");
    assert_eq!(rollouts[1]["phases_reached"], 3);
    assert_eq!(rollouts[2]["status"], "rolled_back");
    assert_eq!(rollouts[2]["phases_reached"], 1);
    let reason = rollouts[2]["decisions"].as_array().unwrap().last().unwrap()["reason"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(reason.contains("PSI"), "{reason}");
    assert!(summary["seconds"].as_f64().unwrap() < 180.0);
}
