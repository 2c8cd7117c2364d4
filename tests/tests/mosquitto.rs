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

/// What a [`Listener`]'s connection has seen.
#[derive(Default)]
struct Seen {
    /// Topics of the messages received.
    topics: Vec<String>,
    connected: bool,
    subscribed: bool,
    /// The error that ended the connection.
    error: Option<String>,
}

/// A client that records the topics of the messages it receives.
struct Listener {
    client: rumqttc::Client,
    seen: std::sync::Arc<std::sync::Mutex<Seen>>,
}

impl Listener {
    /// Connects as `user` and waits for the broker's CONNACK.
    fn connect(port: u16, user: &str) -> Listener {
        use rumqttc::{Client, Event, MqttOptions, Packet};
        let mut options = MqttOptions::new(user, "127.0.0.1", port);
        options.set_credentials(user, "-");
        let (client, mut connection) = Client::new(options, 10);
        let seen = std::sync::Arc::new(std::sync::Mutex::new(Seen::default()));
        let state = seen.clone();
        std::thread::spawn(move || {
            for event in connection.iter() {
                let mut state = state.lock().unwrap();
                match event {
                    Ok(Event::Incoming(Packet::Publish(p))) => state.topics.push(p.topic),
                    Ok(Event::Incoming(Packet::ConnAck(_))) => state.connected = true,
                    Ok(Event::Incoming(Packet::SubAck(_))) => state.subscribed = true,
                    Ok(_) => {}
                    Err(e) => {
                        state.error = Some(e.to_string());
                        return;
                    }
                }
            }
        });
        let listener = Listener { client, seen };
        listener.wait(&format!("{user} to connect"), |s| s.connected);
        listener
    }

    /// Subscribes and waits for the SUBACK.
    fn subscribe(&self, filter: &str) {
        let sent = self.client.subscribe(filter, rumqttc::QoS::AtLeastOnce);
        sent.unwrap_or_else(|e| panic!("subscribe: {e}; connection: {:?}", self.error()));
        self.wait(&format!("a SUBACK for {filter}"), |s| s.subscribed);
    }

    fn publish(&self, topic: String, retain: bool) {
        let sent = self
            .client
            .publish(topic, rumqttc::QoS::AtLeastOnce, retain, "m");
        sent.unwrap_or_else(|e| panic!("publish: {e}; connection: {:?}", self.error()));
    }

    /// Waits up to 10 s for `done`; panics at once, with the reason, if the connection ends.
    fn wait(&self, what: &str, done: impl Fn(&Seen) -> bool) {
        fleet_tests::wait_for(
            what,
            std::time::Duration::from_secs(10),
            || {
                let seen = self.seen.lock().unwrap();
                if let Some(e) = &seen.error {
                    panic!("waiting for {what}: the connection ended: {e}");
                }
                done(&seen).then_some(())
            },
            String::new,
        )
    }

    fn error(&self) -> Option<String> {
        self.seen.lock().unwrap().error.clone()
    }

    fn topics(&self) -> Vec<String> {
        self.seen.lock().unwrap().topics.clone()
    }
}

/// The ACL file the test (and README) uses holds a device to its own topics: Mosquitto does not
/// deliver another device's desired state to it, nor its publishes on another device's topic.
#[test]
fn mosquitto_acls_hold_a_device_to_its_own_topics() {
    use std::time::Duration;

    let dir = tempfile::tempdir().unwrap();
    let broker = Mosquitto::start(dir.path());
    let server = Listener::connect(broker.port, fleet_tests::mosquitto::SERVER_USER);
    let device = Listener::connect(broker.port, "dev-x");
    server.subscribe("edgefleet/v1/devices/+/up");
    device.subscribe("edgefleet/v1/devices/+/desired");
    for d in ["dev-y", "dev-x"] {
        device.publish(format!("edgefleet/v1/devices/{d}/up"), false);
        server.publish(format!("edgefleet/v1/devices/{d}/desired"), true);
    }
    fleet_tests::wait_for(
        "the device's own messages to pass",
        Duration::from_secs(10),
        || (!server.topics().is_empty() && !device.topics().is_empty()).then_some(()),
        || broker.log_text(),
    );
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        server.topics(),
        ["edgefleet/v1/devices/dev-x/up"],
        "server got"
    );
    assert_eq!(
        device.topics(),
        ["edgefleet/v1/devices/dev-x/desired"],
        "dev-x got"
    );
}
