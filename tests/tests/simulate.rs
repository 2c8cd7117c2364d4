//! `edgectl simulate` end to end at a small size: its own server, 60 simulated devices that
//! enroll, connect over TLS, install v1 and then v2 through three phases; the JSON report
//! accounts for every device and every download, and the server ingested what they sent; the
//! same with the devices split over worker processes (`--workers`, how 30,000 and more run).

use std::process::Command;

use fleet_tests::binary;
use serde_json::Value;

#[test]
fn the_simulator_drives_a_fleet_through_both_rollouts_and_reports() {
    simulate(1);
}

#[test]
fn the_simulator_splits_its_devices_over_worker_processes() {
    simulate(3);
}

fn simulate(workers: usize) {
    let out = Command::new(binary("edgectl"))
        .args(["simulate", "--devices", "60", "--window-seconds", "1"])
        .args(["--soak-seconds", "1", "--timeout", "150", "--json"])
        .args(["--workers", &workers.to_string()])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_str(&stdout).expect("a JSON report");
    assert_eq!(report["devices"], 60);
    assert_eq!(report["connected"], 60);
    assert_eq!(report["downloads"], 120, "each device fetched v1 and v2");
    assert_eq!(report["download_errors"], 0);
    assert_eq!(report["v1_one_phase"]["desired"]["delivered"], 60);
    assert_eq!(report["v2_three_phases"]["desired"]["delivered"], 60);
    let steady = &report["steady"];
    let (sent, ingested) = (
        steady["telemetry_sent_per_s"].as_f64().unwrap(),
        steady["messages_ingested_per_s"].as_f64().unwrap(),
    );
    assert!(
        sent > 30.0 && ingested > 0.5 * sent,
        "60 devices, one window a second each: sent {sent}/s, ingested {ingested}/s"
    );
    assert!(report["server_peak_rss_mb"].as_f64().unwrap() > 1.0);
}
