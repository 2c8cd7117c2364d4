//! Outbox appends per second with durability (one fsync'd redb commit per append call), at
//! several batch sizes, with 512-byte payloads; and acks per second.
//!
//!     cargo run --release -p device-agent --example outbox_bench [-- MESSAGES]
//!
//! Prints one JSON line per batch size. Runs in a temporary directory on the current disk.

use std::time::Instant;

use device_agent::outbox::{Class, Outbox};

fn main() {
    let messages: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(20_000);
    for batch in [1usize, 10, 100] {
        let dir = tempfile::tempdir().expect("temp dir");
        let outbox = Outbox::open(&dir.path().join("agent.redb"), 1 << 30).expect("open");
        let calls = (messages / batch).max(1);
        let start = Instant::now();
        for _ in 0..calls {
            outbox
                .append((0..batch).map(|_| (Class::Telemetry, ())), |_, ()| {
                    vec![0x5a; 512]
                })
                .expect("append");
        }
        let append_s = start.elapsed().as_secs_f64();
        let seqs: Vec<u64> = outbox
            .peek(usize::MAX)
            .expect("peek")
            .iter()
            .map(|m| m.seq)
            .collect();
        let start = Instant::now();
        for chunk in seqs.chunks(batch) {
            outbox.ack(chunk).expect("ack");
        }
        let ack_s = start.elapsed().as_secs_f64();
        println!(
            "{{\"batch\": {batch}, \"messages\": {}, \"appends_per_s\": {:.0}, \"commits_per_s\": {:.0}, \"acks_per_s\": {:.0}}}",
            calls * batch,
            (calls * batch) as f64 / append_s,
            calls as f64 / append_s,
            seqs.len() as f64 / ack_s
        );
    }
}
