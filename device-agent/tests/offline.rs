//! The broker goes away while telemetry keeps flowing: the outbox grows but stays within its
//! bound (dropping the oldest telemetry first, counted), and when the broker returns it drains
//! in sequence order. The server can account for every sequence number: received, or counted
//! as dropped.

use std::time::{Duration, Instant};

mod common;

use common::fleet::{free_port, Agent, Fleet, Traffic};
use edge_protocol::Step;

const T: Duration = Duration::from_secs(60);
const BOUND: u64 = 65_536;

#[test]
fn outbox_grows_within_its_bound_offline_and_drains_in_order() {
    let fleet = Fleet::new();
    let state = tempfile::tempdir().unwrap();
    let extra = format!("[telemetry]\nwindow_seconds = 1\noutbox_max_bytes = {BOUND}");
    let config = fleet.agent_config("dev-o", state.path(), free_port(), &extra);
    let mut agent = Agent::start(&config, state.path(), &[]);
    agent.wait_ready();
    let v1 = fleet.publish_artifact(&fleet.digits("1.0.0", |_| {}));
    fleet.send_desired("dev-o", 1, vec![v1]);
    fleet.wait_event("1.0.0", Step::Activated, T);
    let traffic = Traffic::start(&agent.api, Duration::from_millis(5));
    fleet.wait_event("1.0.0", Step::Committed, T);

    // broker unreachable
    fleet.proxy.down();
    // the agent notices the cut connection (a moment), and what the broker already had reaches
    // the server; from then on nothing gets through
    let deadline = Instant::now() + T;
    while agent.status()["server"]["connected"] != false {
        assert!(
            Instant::now() < deadline,
            "the agent never noticed the broker was gone"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(300));
    let received_before = fleet.received.lock().unwrap().len();
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut max_queued = 0;
    loop {
        let s = agent.status();
        assert_eq!(s["server"]["connected"], false);
        let ob = &s["outbox"];
        let bytes = ob["bytes"].as_u64().unwrap();
        assert!(
            bytes <= BOUND,
            "outbox {bytes} bytes over its {BOUND}-byte bound"
        );
        max_queued = max_queued.max(ob["queued"].as_u64().unwrap());
        if ob["dropped_telemetry"].as_u64().unwrap() >= 3 {
            break;
        }
        assert!(Instant::now() < deadline, "the bound was never hit: {s}");
        std::thread::sleep(Duration::from_millis(250));
    }
    assert!(
        max_queued >= 5,
        "telemetry queued up while offline ({max_queued})"
    );
    assert_eq!(
        fleet.received.lock().unwrap().len(),
        received_before,
        "nothing got through"
    );
    let answers = traffic.stop();
    assert!(
        answers.iter().all(|(c, _)| *c == 200),
        "inference does not care about the broker"
    );

    // broker back
    fleet.proxy.up();
    let deadline = Instant::now() + T;
    let status = loop {
        let s = agent.status();
        if s["outbox"]["queued"] == 0 && s["server"]["connected"] == true {
            break s;
        }
        assert!(Instant::now() < deadline, "outbox did not drain: {s}");
        std::thread::sleep(Duration::from_millis(100));
    };
    std::thread::sleep(Duration::from_millis(500));
    let dropped = status["outbox"]["dropped_telemetry"].as_u64().unwrap()
        + status["outbox"]["dropped_events"].as_u64().unwrap();
    assert_eq!(
        status["outbox"]["dropped_events"], 0,
        "events are dropped last"
    );
    let seqs = fleet.first_arrivals();
    assert!(
        seqs.windows(2).all(|w| w[0] < w[1]),
        "drained in order: {seqs:?}"
    );
    let max = *seqs.iter().max().unwrap();
    let missing = max - seqs.len() as u64;
    assert_eq!(
        missing, dropped,
        "every sequence number is either received or counted as dropped"
    );
    // the next hello tells the server the drop count too
    let hello_drops = fleet
        .received
        .lock()
        .unwrap()
        .iter()
        .filter_map(|u| match u {
            common::fleet::Up::Hello(_, h) => Some(h.dropped_telemetry),
            _ => None,
        })
        .max()
        .unwrap();
    assert!(hello_drops > 0 && hello_drops <= dropped);
}
