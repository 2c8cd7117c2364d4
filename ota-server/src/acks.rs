//! End-to-end acknowledgement of device messages: which sequence number of each device the
//! ingest has committed to the store. The device gate ([`crate::gate`]) holds a device's PUBACK
//! until its message is committed here, so a message leaves the device's outbox only once it
//! is in the store: a server killed between the broker and the store loses nothing (the device
//! sends it again, to whichever replica it reaches, and the replay guard counts it once).
//!
//! A batch the ingest gave up on is reported here too ([`IngestAcks::failed`]): the gate then
//! closes the connection at once, so the device sends the message again. A batch that is only
//! late (the ingest behind under load) is waited for: closing then would bring the same
//! messages back and deepen the backlog.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::Notify;

/// Committed sequence numbers per device, and a wake-up for those waiting on one.
#[derive(Debug, Default)]
pub struct IngestAcks {
    committed: Mutex<HashMap<String, u64>>,
    /// Per device, the highest sequence number of a batch the ingest gave up on.
    failed: Mutex<HashMap<String, u64>>,
    changed: Notify,
}

/// How a wait for a message ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Settled {
    /// Committed (or refused for good: nothing to send again).
    Done,
    /// Its batch failed: the device must send it again.
    Failed,
    /// Neither, by the deadline.
    TimedOut,
}

impl IngestAcks {
    /// Marks messages as done with (committed, or refused for good), per device the highest
    /// sequence number of the batch, and wakes the waiters.
    pub fn done<'a>(&self, batch: impl IntoIterator<Item = (&'a str, u64)>) {
        {
            let mut committed = self
                .committed
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            for (device, seq) in batch {
                let at = committed.entry(device.to_string()).or_insert(0);
                *at = (*at).max(seq);
            }
        }
        self.changed.notify_waiters();
    }

    /// Marks the messages of a batch the ingest gave up on (per device its highest sequence
    /// number) and wakes the waiters.
    pub fn failed<'a>(&self, batch: impl IntoIterator<Item = (&'a str, u64)>) {
        {
            let mut failed = self.failed.lock().unwrap_or_else(|p| p.into_inner());
            for (device, seq) in batch {
                let at = failed.entry(device.to_string()).or_insert(0);
                *at = (*at).max(seq);
            }
        }
        self.changed.notify_waiters();
    }

    fn lost(&self, device: &str, seq: u64) -> bool {
        self.failed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(device)
            .is_some_and(|&at| at >= seq)
    }

    /// Whether `device`'s message `seq` is done with.
    pub fn reached(&self, device: &str, seq: u64) -> bool {
        self.committed
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .get(device)
            .is_some_and(|&at| at >= seq)
    }

    /// Waits until `device`'s message `seq` is done with; false if its batch failed or after
    /// `timeout`.
    pub async fn wait(&self, device: &str, seq: u64, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        self.wait_until(device, seq, deadline).await == Settled::Done
    }

    /// Waits until `device`'s message `seq` is done with, its batch failed, or `deadline`.
    pub async fn wait_until(
        &self,
        device: &str,
        seq: u64,
        deadline: tokio::time::Instant,
    ) -> Settled {
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            if self.reached(device, seq) {
                return Settled::Done;
            }
            if self.lost(device, seq) {
                return Settled::Failed;
            }
            if tokio::time::timeout_at(deadline, changed).await.is_err() {
                return if self.reached(device, seq) {
                    Settled::Done
                } else {
                    Settled::TimedOut
                };
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[tokio::test]
    async fn waiters_wake_when_their_message_is_done() {
        let acks = Arc::new(IngestAcks::default());
        let a = acks.clone();
        let waiter = tokio::spawn(async move { a.wait("dev-1", 3, Duration::from_secs(5)).await });
        acks.done([("dev-1", 2), ("dev-2", 9)]);
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiter.is_finished(), "2 is not 3");
        acks.done([("dev-1", 4)]);
        assert!(waiter.await.unwrap());
        assert!(!acks.wait("dev-3", 1, Duration::from_millis(30)).await);
        // a failed batch ends the wait at once, without the timeout
        let a = acks.clone();
        let waiter = tokio::spawn(async move {
            let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
            a.wait_until("dev-4", 2, deadline).await
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        acks.failed([("dev-4", 3)]);
        let settled = tokio::time::timeout(Duration::from_secs(5), waiter).await;
        assert_eq!(settled.unwrap().unwrap(), Settled::Failed);
    }
}
