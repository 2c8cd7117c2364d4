//! Sensor sources end to end: the agent process samples emulated MPU-6050s through the real
//! driver, feeds 128-sample windows to the sideloaded vibration model, and shows the latest answer
//! on `GET /v1/sensors`; a worn machine is called an anomaly, a chip that NACKs or returns garbage
//! is counted and retried, a missing chip or model never takes the agent down.

mod common;

use std::time::{Duration, Instant};

use common::fleet::{free_port, http_get, Agent, Fleet};
use serde_json::Value;

fn sensors(agent: &Agent) -> Vec<Value> {
    let (code, body) = http_get(&agent.url("/v1/sensors")).unwrap();
    assert_eq!(code, 200, "{body}");
    serde_json::from_str::<Value>(&body).unwrap()["sensors"]
        .as_array()
        .unwrap()
        .clone()
}

fn sensor(agent: &Agent, name: &str) -> Value {
    let (code, body) = http_get(&agent.url(&format!("/v1/sensors/{name}"))).unwrap();
    assert_eq!(code, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

fn wait_for(agent: &Agent, what: &str, timeout: Duration, ok: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + timeout;
    loop {
        let all = Value::Array(sensors(agent));
        if ok(&all) {
            return all;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}: {all:#}\n{}",
            agent.log_text()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn config(fleet: &Fleet, dir: &std::path::Path, port: u16, sensors: &str) -> String {
    format!(
        "device_id = \"dev-imu\"\nstate_dir = \"{}\"\ntrust_root = \"{}\"\nroot_key = \"{}\"\n\
         [api]\nlisten = \"127.0.0.1:{port}\"\n[sideload]\ndir = \"{}\"\n{sensors}",
        dir.join("state").display(),
        fleet.trust_path.display(),
        fleet.root_pub_path.display(),
        dir.join("image").display(),
    )
}

#[test]
fn windows_from_an_emulated_imu_are_classified_and_faults_are_survived() {
    let fleet = Fleet::new(); // for its signing key and trust root
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("image")).unwrap();
    std::fs::write(dir.path().join("image/vibration.efb"), fleet.vibration()).unwrap();
    let sensors_toml = r#"
[[sensor]]
name = "pump"
bus = "sim:wears-after=4,seed=3"
model = "vibration"

[[sensor]]
name = "fan"
bus = "sim:healthy,nack-every=300,seed=5"
address = 0x69
rate_hz = 200
model = "vibration"

[[sensor]]
name = "garbled"
bus = "sim:healthy,garbage-every=3"
model = "vibration"

[[sensor]]
name = "unplugged"
bus = "sim:absent"
model = "vibration"

[[sensor]]
name = "no-model"
bus = "sim:healthy"
model = "does-not-exist"
"#;
    let port = free_port();
    let mut agent = Agent::start(
        &config(&fleet, dir.path(), port, sensors_toml),
        dir.path(),
        &[],
    );
    agent.wait_ready();

    // the pump is healthy for its first 4 s of samples (6 windows of 0.64 s), worn afterwards
    let first = wait_for(
        &agent,
        "the pump's first answer",
        Duration::from_secs(30),
        |s| s[0]["latest"]["window"].as_u64().is_some(),
    );
    assert_eq!(first[0]["latest"]["answer"]["label"], "normal", "{first:#}");
    assert_eq!(first[0]["latest"]["answer"]["model"], "vibration");
    assert_eq!(first[0]["state"], "running");
    let worn = wait_for(&agent, "the pump to wear", Duration::from_secs(60), |s| {
        s[0]["latest"]["answer"]["label"] == "anomaly" && s[0]["windows"].as_u64() > Some(7)
    });
    let pump = &worn[0];
    assert!(pump["latest"]["answer"]["probability"].as_f64().unwrap() > 0.9);
    assert_eq!(pump["read_errors"], 0);
    assert_eq!(pump["predictions"], pump["windows"]);

    // the fan NACKs every 300th transaction: the broken window is dropped, sampling goes on
    let fan = sensor(&agent, "fan");
    assert!(fan["read_errors"].as_u64().unwrap() > 0, "{fan:#}");
    assert!(fan["predictions"].as_u64().unwrap() > 0, "{fan:#}");
    assert_eq!(fan["latest"]["answer"]["label"], "normal");
    assert!(fan["last_error"]
        .as_str()
        .unwrap()
        .contains("no acknowledge"));

    // every 3rd read is garbage: no 128-sample window can complete, and after 5 failures in a
    // row... it never gets 5 in a row, so it keeps reading and counting
    let garbled = sensor(&agent, "garbled");
    assert!(garbled["read_errors"].as_u64().unwrap() > 10, "{garbled:#}");
    assert_eq!(garbled["predictions"], 0);
    assert!(garbled["last_error"].as_str().unwrap().contains("0xff"));

    // nothing at the address: retried with backoff, the agent stays up and serves
    let unplugged = sensor(&agent, "unplugged");
    assert_eq!(unplugged["state"], "retrying", "{unplugged:#}");
    assert!(
        unplugged["init_errors"].as_u64().unwrap() >= 2,
        "{unplugged:#}"
    );
    assert_eq!(unplugged["samples"], 0);

    let no_model = sensor(&agent, "no-model");
    assert_eq!(no_model["state"], "waiting for model");
    assert!(no_model["prediction_errors"].as_u64().unwrap() > 0);

    // predictions are counted in the model's counters, like app requests
    let (_, metrics) = http_get(&agent.url("/metrics")).unwrap();
    let requests: f64 = metrics
        .lines()
        .find(|l| l.starts_with("edgefleet_predict_requests_total{model=\"vibration\""))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .expect("vibration requests in /metrics");
    assert!(requests >= pump["predictions"].as_f64().unwrap());
    assert!(metrics.contains("edgefleet_sensor_read_errors_total{sensor=\"fan\"}"));
    assert!(metrics.contains("edgefleet_sensor_windows_total{sensor=\"pump\"}"));

    let (code, _) = http_get(&agent.url("/v1/sensors/nope")).unwrap();
    assert_eq!(code, 404);
    let (code, _) = http_get(&agent.url("/healthz")).unwrap();
    assert_eq!(code, 200);
    assert!(
        agent.child.try_wait().unwrap().is_none(),
        "the agent is still running"
    );
}

#[test]
fn a_bad_sensor_section_is_refused_at_start_with_a_clear_error() {
    let fleet = Fleet::new();
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("image")).unwrap();
    let bad = "[[sensor]]\nname = \"x\"\nbus = \"sim:wobbly\"\nmodel = \"vibration\"\n";
    let mut agent = Agent::start(
        &config(&fleet, dir.path(), free_port(), bad),
        dir.path(),
        &[],
    );
    let status = agent.wait_exit(Duration::from_secs(30));
    assert!(!status.success());
    assert!(
        agent.log_text().contains("unknown part 'wobbly'"),
        "{}",
        agent.log_text()
    );
}
