//! The outbox: the bound and its drop order, acknowledgement, real signed messages that a
//! server's replay guard accepts exactly once, and a kill -9 in the middle of appends and acks.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use device_agent::outbox::{Class, Outbox};
use ed25519_dalek::SigningKey;
use edge_protocol::{open, seal, Event, Events, Header, Kind, ReplayGuard, Step};

fn payload(seq: u64, len: usize) -> Vec<u8> {
    let mut p = format!("msg-{seq}:").into_bytes();
    p.resize(len, b'x');
    p
}

#[test]
fn full_outbox_drops_oldest_telemetry_first_then_events_and_counts_it() {
    let dir = tempfile::tempdir().unwrap();
    let outbox = Outbox::open(&dir.path().join("agent.redb"), 1000).unwrap();
    // 4 events and 6 telemetry messages of 100 bytes, interleaved: 1000 bytes, exactly full
    let classes: Vec<Class> = (0..10)
        .map(|i| {
            if i % 3 == 0 {
                Class::Event
            } else {
                Class::Telemetry
            }
        })
        .collect();
    let seqs = outbox
        .append(classes.iter().map(|&c| (c, ())), |seq, ()| {
            payload(seq, 100)
        })
        .unwrap();
    assert_eq!(seqs, (1..=10).collect::<Vec<_>>());
    assert_eq!(outbox.stats().unwrap().dropped_telemetry, 0);

    // 3 more telemetry messages: the 3 oldest telemetry go, every event stays
    outbox
        .append((0..3).map(|_| (Class::Telemetry, ())), |seq, ()| {
            payload(seq, 100)
        })
        .unwrap();
    let left: Vec<u64> = outbox.peek(100).unwrap().iter().map(|m| m.seq).collect();
    assert_eq!(left, vec![1, 4, 6, 7, 8, 9, 10, 11, 12, 13]);
    let s = outbox.stats().unwrap();
    assert_eq!(
        (s.queued, s.bytes, s.dropped_telemetry, s.dropped_events),
        (10, 1000, 3, 0)
    );

    // 10 events: all telemetry goes first, then the oldest events
    outbox
        .append((0..10).map(|_| (Class::Event, ())), |seq, ()| {
            payload(seq, 100)
        })
        .unwrap();
    let left = outbox.peek(100).unwrap();
    assert!(left.iter().all(|m| m.class == Class::Event));
    assert_eq!(
        left.iter().map(|m| m.seq).collect::<Vec<_>>(),
        (14..=23).collect::<Vec<_>>()
    );
    let s = outbox.stats().unwrap();
    assert_eq!((s.dropped_telemetry, s.dropped_events), (9, 4));

    // a message larger than the whole bound is refused, nothing changes
    assert!(outbox
        .append([(Class::Event, ())], |seq, ()| payload(seq, 1001))
        .is_err());
    assert_eq!(outbox.stats().unwrap().next_seq, 24);

    // ack deletes; unknown seqs are ignored; everything survives a reopen
    outbox.ack(&[14, 15, 999]).unwrap();
    drop(outbox);
    let outbox = Outbox::open(&dir.path().join("agent.redb"), 1000).unwrap();
    let s = outbox.stats().unwrap();
    assert_eq!(
        (
            s.queued,
            s.bytes,
            s.dropped_telemetry,
            s.dropped_events,
            s.next_seq
        ),
        (8, 800, 9, 4, 24)
    );
    assert_eq!(outbox.peek(1).unwrap()[0].payload, payload(16, 100));
}

#[test]
fn a_resent_message_is_identical_and_the_server_counts_it_once() {
    let dir = tempfile::tempdir().unwrap();
    let key = SigningKey::from_bytes(&[3u8; 32]);
    let outbox = Outbox::open(&dir.path().join("agent.redb"), 1 << 20).unwrap();
    let event = |n: u64| Events {
        events: vec![Event {
            at: n,
            generation: 1,
            model: "digits".into(),
            version: "1.0.0".into(),
            step: Step::Committed,
            detail: None,
        }],
    };
    outbox
        .append((0..3).map(|n| (Class::Event, n)), |seq, n| {
            seal(
                &key,
                Header {
                    sender: "dev-1".into(),
                    seq,
                    sent_at: 0,
                    kind: Kind::Events,
                },
                &event(n),
            )
        })
        .unwrap();
    let mut server = ReplayGuard::default();
    let vk = key.verifying_key();
    let first = outbox.peek(10).unwrap();
    for m in &first {
        let (h, body): (Header, Events) = open(&m.payload, Kind::Events, |_| Some(vk)).unwrap();
        assert_eq!(h.seq, m.seq);
        assert_eq!(body.events[0].at, m.seq - 1);
        server.accept(&h).unwrap();
    }
    // the broker never acknowledged: after a restart the same bytes go out again and are dropped
    drop(outbox);
    let outbox = Outbox::open(&dir.path().join("agent.redb"), 1 << 20).unwrap();
    let again = outbox.peek(10).unwrap();
    assert_eq!(again, first);
    for m in &again {
        let (h, _): (Header, Events) = open(&m.payload, Kind::Events, |_| Some(vk)).unwrap();
        assert!(
            server.accept(&h).is_err(),
            "duplicate seq {} accepted twice",
            h.seq
        );
    }
}

const CHILD_ENV: &str = "EDGE_OUTBOX_KILL_TEST_DIR";

/// The writer the kill -9 test runs in a child process: appends batches and acks, printing what
/// it committed after each commit returns.
fn child_writer(dir: &str) -> ! {
    let outbox = Outbox::open(&std::path::Path::new(dir).join("agent.redb"), 1 << 30).unwrap();
    loop {
        let seqs = outbox
            .append((0..20).map(|_| (Class::Telemetry, ())), |seq, ()| {
                payload(seq, 256)
            })
            .unwrap();
        println!("committed {} {}", seqs[0], seqs[seqs.len() - 1]);
        let oldest: Vec<u64> = outbox.peek(10).unwrap().iter().map(|m| m.seq).collect();
        println!(
            "acking {}",
            oldest
                .iter()
                .map(u64::to_string)
                .collect::<Vec<_>>()
                .join(",")
        );
        outbox.ack(&oldest).unwrap();
        println!("acked");
    }
}

#[test]
fn kill_9_mid_write_loses_nothing_committed_and_reuses_no_sequence_number() {
    if let Ok(dir) = std::env::var(CHILD_ENV) {
        child_writer(&dir);
    }
    let dir = tempfile::tempdir().unwrap();
    for round in 0..3 {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "kill_9_mid_write_loses_nothing_committed_and_reuses_no_sequence_number",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_ENV, dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut committed = BTreeSet::new();
        let mut acked = BTreeSet::new();
        let mut in_flight_ack: Vec<u64> = Vec::new();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let start = Instant::now();
        let target = 40 + round * 17; // kill at a different point each round
        let mut seen = 0;
        let mut take = |line: &str, seen: &mut usize| {
            if let Some(rest) = line.strip_prefix("committed ") {
                let (a, b) = rest.split_once(' ').unwrap();
                committed.extend(a.parse::<u64>().unwrap()..=b.parse().unwrap());
                *seen += 1;
            } else if let Some(rest) = line.strip_prefix("acking ") {
                in_flight_ack = rest
                    .split(',')
                    .filter(|s| !s.is_empty())
                    .map(|s| s.parse().unwrap())
                    .collect();
            } else if line == "acked" {
                acked.extend(in_flight_ack.drain(..));
            }
        };
        for line in lines.by_ref() {
            take(&line.unwrap(), &mut seen);
            if seen >= target || start.elapsed() > Duration::from_secs(30) {
                break;
            }
        }
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        // the writer ran on until the kill landed: what it printed meanwhile is still in the
        // pipe (an ack is announced before it starts), so the accounting includes it
        for line in lines {
            take(&line.unwrap(), &mut seen);
        }
        assert!(
            seen >= target,
            "the writer was too slow to reach {target} batches"
        );

        let outbox = Outbox::open(&dir.path().join("agent.redb"), 1 << 30).unwrap();
        let present: BTreeSet<u64> = outbox
            .peek(usize::MAX)
            .unwrap()
            .iter()
            .map(|m| m.seq)
            .collect();
        for m in outbox.peek(usize::MAX).unwrap() {
            assert_eq!(
                m.payload,
                payload(m.seq, 256),
                "seq {} holds another message's bytes",
                m.seq
            );
        }
        // every committed, unacknowledged message survived (those of an ack cut short may be gone)
        let must_be_there: BTreeSet<u64> = committed
            .difference(&acked)
            .filter(|s| !in_flight_ack.contains(s))
            .copied()
            .collect();
        let lost: Vec<_> = must_be_there.difference(&present).collect();
        assert!(
            lost.is_empty(),
            "round {round}: lost committed messages {lost:?}"
        );
        // nothing acknowledged came back
        assert!(
            present.is_disjoint(&acked),
            "round {round}: acknowledged messages reappeared"
        );
        // the next sequence number is beyond every one ever handed out
        let stats = outbox.stats().unwrap();
        assert!(stats.next_seq > *committed.iter().max().unwrap());
        assert_eq!(stats.bytes, present.len() as u64 * 256);
    }
}
