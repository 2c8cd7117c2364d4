//! End-to-end acknowledgement of device messages: which sequence number of each device the
//! ingest has committed to the store. The device gate ([`crate::gate`]) holds a device's PUBACK
//! until its message is committed here, so a message leaves the device's outbox only once it
//! is in the store: a server killed between the broker and the store loses nothing (the device
//! sends it again, to whichever replica it reaches, and the replay guard counts it once).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::Notify;

/// Committed sequence numbers per device, and a wake-up for those waiting on one.
#[derive(Debug, Default)]
pub struct IngestAcks {
    committed: Mutex<HashMap<String, u64>>,
    changed: Notify,
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

    fn reached(&self, device: &str, seq: u64) -> bool {
        self.committed
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .get(device)
            .is_some_and(|&at| at >= seq)
    }

    /// Waits until `device`'s message `seq` is done with; false after `timeout`.
    pub async fn wait(&self, device: &str, seq: u64, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            if self.reached(device, seq) {
                return true;
            }
            if tokio::time::timeout_at(deadline, changed).await.is_err() {
                return self.reached(device, seq);
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
    }
}
