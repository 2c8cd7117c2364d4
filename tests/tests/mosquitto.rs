//! Scenario 7 of issue 5, interop: scenario 1 with a real Mosquitto broker between the server
//! (`ota-server serve --broker mqtt://…`) and the agents, configured with per-device topic ACLs
//! (see `fleet_tests::mosquitto`). Mosquitto comes from `apt-get install mosquitto` (`.ci/run`).

use fleet_tests::mosquitto::Mosquitto;
use fleet_tests::staged::{fleet_size, staged_rollout};

#[test]
fn three_phase_rollout_through_mosquitto() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Mosquitto::start(&dir.path().join("mosquitto"));
    let n = fleet_size();
    let run = staged_rollout(dir.path(), n, Some(&broker));
    eprintln!(
        "{n} agents via Mosquitto: v2 converged in {:.1} s; devices per phase {:?}",
        run.converge.as_secs_f64(),
        run.phase_devices
    );
}

/// A client that records the topics of the messages it receives.
struct Listener {
    client: rumqttc::Client,
    topics: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl Listener {
    fn connect(port: u16, user: &str) -> Listener {
        use rumqttc::{Client, Event, MqttOptions, Packet};
        let mut options = MqttOptions::new(user, "127.0.0.1", port);
        options.set_credentials(user, "-");
        let (client, mut connection) = Client::new(options, 10);
        let topics = std::sync::Arc::new(std::sync::Mutex::new(vec![]));
        let seen = topics.clone();
        std::thread::spawn(move || {
            for event in connection.iter() {
                match event {
                    Ok(Event::Incoming(Packet::Publish(p))) => seen.lock().unwrap().push(p.topic),
                    Ok(_) => {}
                    Err(_) => return,
                }
            }
        });
        Listener { client, topics }
    }
    fn seen(&self) -> Vec<String> {
        self.topics.lock().unwrap().clone()
    }
}

/// The ACL file the test (and README) uses holds a device to its own topics: Mosquitto does not
/// deliver another device's desired state to it, nor its publishes on another device's topic.
#[test]
fn mosquitto_acls_hold_a_device_to_its_own_topics() {
    use rumqttc::QoS;
    use std::time::Duration;

    let dir = tempfile::tempdir().unwrap();
    let broker = Mosquitto::start(dir.path());
    let server = Listener::connect(broker.port, fleet_tests::mosquitto::SERVER_USER);
    let device = Listener::connect(broker.port, "dev-x");
    server
        .client
        .subscribe("edgefleet/v1/devices/+/up", QoS::AtLeastOnce)
        .unwrap();
    device
        .client
        .subscribe("edgefleet/v1/devices/+/desired", QoS::AtLeastOnce)
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    for d in ["dev-y", "dev-x"] {
        let (up, desired) = (
            format!("edgefleet/v1/devices/{d}/up"),
            format!("edgefleet/v1/devices/{d}/desired"),
        );
        device
            .client
            .publish(up, QoS::AtLeastOnce, false, "m")
            .unwrap();
        server
            .client
            .publish(desired, QoS::AtLeastOnce, true, "m")
            .unwrap();
    }
    fleet_tests::wait_for(
        "the device's own messages to pass",
        Duration::from_secs(10),
        || (!server.seen().is_empty() && !device.seen().is_empty()).then_some(()),
        || broker.log_text(),
    );
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        server.seen(),
        ["edgefleet/v1/devices/dev-x/up"],
        "server got"
    );
    assert_eq!(
        device.seen(),
        ["edgefleet/v1/devices/dev-x/desired"],
        "dev-x got"
    );
}
