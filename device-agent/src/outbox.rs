//! The telemetry outbox: signed device messages (events, telemetry windows) waiting for the
//! broker's acknowledgement, in redb, surviving power loss.
//!
//! - **Sequence numbers are assigned at append**, inside the same transaction that stores the
//!   sealed (signed) payload. A message resent after a crash is byte-identical, same `seq`, so
//!   the server's replay guard drops a duplicate instead of counting it twice, and no message is
//!   ever re-sent under a new sequence number.
//! - **Durability**: each `append` and `ack` is one redb write transaction committed with
//!   `Durability::Immediate` (fsync). Batching many messages per append amortizes the fsync.
//! - **Bounded**: when the stored payload bytes exceed `max_bytes`, the oldest *telemetry* is
//!   dropped first; events go only when no telemetry is left. Drops are counted (persisted) so
//!   the agent can report them.
//! - Messages are deleted only by `ack`, after the broker acknowledged them (MQTT QoS 1 PUBACK).

use std::path::Path;

use redb::{Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};

const OUTBOX: TableDefinition<u64, &[u8]> = TableDefinition::new("outbox");
const META: TableDefinition<&str, u64> = TableDefinition::new("outbox_meta");
const NEXT_SEQ: &str = "next_seq";
const BYTES: &str = "bytes";
const DROPPED_TELEMETRY: &str = "dropped_telemetry";
const DROPPED_EVENTS: &str = "dropped_events";

/// What a message is, for the drop order when the outbox is full.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Class {
    /// Telemetry windows: dropped first.
    Telemetry = 0,
    /// Reconcile events: dropped last.
    Event = 1,
}

/// A queued message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    /// The sequence number in its signed header.
    pub seq: u64,
    /// Its class.
    pub class: Class,
    /// The sealed envelope, ready to publish.
    pub payload: Vec<u8>,
}

/// Counters of the outbox.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OutboxStats {
    /// Messages queued.
    pub queued: u64,
    /// Payload bytes queued.
    pub bytes: u64,
    /// Telemetry messages dropped because the outbox was full, ever.
    pub dropped_telemetry: u64,
    /// Events dropped because the outbox was full, ever.
    pub dropped_events: u64,
    /// The sequence number the next message gets.
    pub next_seq: u64,
}

/// Outbox failures.
#[derive(Debug, thiserror::Error)]
pub enum OutboxError {
    /// The store failed (disk full, I/O error, corrupted file).
    #[error("outbox store: {0}")]
    Store(#[from] redb::Error),
    /// One message larger than the whole bound.
    #[error("a {size}-byte message cannot fit an outbox bounded at {max} bytes")]
    MessageTooLarge {
        /// Message size.
        size: u64,
        /// Bound.
        max: u64,
    },
    /// A stored record without its class byte.
    #[error("outbox record {0} is corrupt")]
    Corrupt(u64),
}

fn store<E: Into<redb::Error>>(e: E) -> OutboxError {
    OutboxError::Store(e.into())
}

/// The durable outbox.
pub struct Outbox {
    db: std::sync::Arc<Database>,
    max_bytes: u64,
}

fn meta(table: &impl ReadableTable<&'static str, u64>, key: &str) -> Result<u64, OutboxError> {
    Ok(table
        .get(key)
        .map_err(store)?
        .map(|v| v.value())
        .unwrap_or(0))
}

impl Outbox {
    /// Opens (or creates) the outbox in the redb file at `path`, bounded at `max_bytes` of
    /// payload. Sequence numbers start at 1.
    pub fn open(path: &Path, max_bytes: u64) -> Result<Outbox, OutboxError> {
        let db = Database::create(path).map_err(store)?;
        Outbox::with_db(std::sync::Arc::new(db), max_bytes)
    }

    /// The outbox inside an already open database (the agent keeps all its state in one file).
    pub fn with_db(db: std::sync::Arc<Database>, max_bytes: u64) -> Result<Outbox, OutboxError> {
        let tx = db.begin_write().map_err(store)?;
        {
            tx.open_table(OUTBOX).map_err(store)?;
            let mut m = tx.open_table(META).map_err(store)?;
            if m.get(NEXT_SEQ).map_err(store)?.is_none() {
                m.insert(NEXT_SEQ, 1).map_err(store)?;
            }
        }
        tx.commit().map_err(store)?;
        Ok(Outbox { db, max_bytes })
    }

    /// Appends a batch in one durable transaction. For each item, `seal(seq, item)` is called
    /// with the sequence number the outbox assigns and must return the signed payload (an
    /// `edge_protocol::seal` envelope whose header carries that `seq`). Returns the sequence
    /// numbers assigned. Makes room by dropping the oldest telemetry (then events) if needed.
    pub fn append<T>(
        &self,
        items: impl IntoIterator<Item = (Class, T)>,
        mut seal: impl FnMut(u64, T) -> Vec<u8>,
    ) -> Result<Vec<u64>, OutboxError> {
        let tx = self.db.begin_write().map_err(store)?;
        let mut assigned = Vec::new();
        {
            let mut table = tx.open_table(OUTBOX).map_err(store)?;
            let mut m = tx.open_table(META).map_err(store)?;
            let mut next = meta(&m, NEXT_SEQ)?.max(1);
            let mut bytes = meta(&m, BYTES)?;
            let mut record = Vec::new();
            for (class, item) in items {
                let payload = seal(next, item);
                let size = payload.len() as u64;
                if size > self.max_bytes {
                    return Err(OutboxError::MessageTooLarge {
                        size,
                        max: self.max_bytes,
                    });
                }
                record.clear();
                record.push(class as u8);
                record.extend_from_slice(&payload);
                table.insert(next, record.as_slice()).map_err(store)?;
                assigned.push(next);
                bytes += size;
                next += 1;
            }
            // make room: oldest telemetry first, then oldest events
            for (class, counter) in [
                (Class::Telemetry, DROPPED_TELEMETRY),
                (Class::Event, DROPPED_EVENTS),
            ] {
                if bytes <= self.max_bytes {
                    break;
                }
                let mut excess = bytes - self.max_bytes;
                let mut dropped = 0u64;
                let mut freed = 0u64;
                for entry in table
                    .extract_if(|_, v: &[u8]| {
                        let hit = excess > 0 && v.first() == Some(&(class as u8));
                        if hit {
                            let size = (v.len() - 1) as u64;
                            excess = excess.saturating_sub(size);
                        }
                        hit
                    })
                    .map_err(store)?
                {
                    let (_, v) = entry.map_err(store)?;
                    freed += (v.value().len() - 1) as u64;
                    dropped += 1;
                }
                bytes -= freed;
                let total = meta(&m, counter)? + dropped;
                m.insert(counter, total).map_err(store)?;
            }
            m.insert(NEXT_SEQ, next).map_err(store)?;
            m.insert(BYTES, bytes).map_err(store)?;
        }
        tx.commit().map_err(store)?;
        Ok(assigned)
    }

    /// Up to `max` queued messages, oldest first.
    pub fn peek(&self, max: usize) -> Result<Vec<Message>, OutboxError> {
        let tx = self.db.begin_read().map_err(store)?;
        let table = tx.open_table(OUTBOX).map_err(store)?;
        let mut out = Vec::new();
        for entry in table.iter().map_err(store)?.take(max) {
            let (k, v) = entry.map_err(store)?;
            let (seq, v) = (k.value(), v.value());
            let class = match v.first() {
                Some(0) => Class::Telemetry,
                Some(1) => Class::Event,
                _ => return Err(OutboxError::Corrupt(seq)),
            };
            out.push(Message {
                seq,
                class,
                payload: v[1..].to_vec(),
            });
        }
        Ok(out)
    }

    /// Deletes acknowledged messages (unknown sequence numbers are ignored: a message may have
    /// been dropped for space after it was sent).
    pub fn ack(&self, seqs: &[u64]) -> Result<(), OutboxError> {
        let tx = self.db.begin_write().map_err(store)?;
        {
            let mut table = tx.open_table(OUTBOX).map_err(store)?;
            let mut m = tx.open_table(META).map_err(store)?;
            let mut bytes = meta(&m, BYTES)?;
            for &seq in seqs {
                if let Some(v) = table.remove(seq).map_err(store)? {
                    bytes = bytes.saturating_sub((v.value().len() as u64).saturating_sub(1));
                }
            }
            m.insert(BYTES, bytes).map_err(store)?;
        }
        tx.commit().map_err(store)?;
        Ok(())
    }

    /// The counters.
    pub fn stats(&self) -> Result<OutboxStats, OutboxError> {
        let tx = self.db.begin_read().map_err(store)?;
        let table = tx.open_table(OUTBOX).map_err(store)?;
        let m = tx.open_table(META).map_err(store)?;
        Ok(OutboxStats {
            queued: table.len().map_err(store)?,
            bytes: meta(&m, BYTES)?,
            dropped_telemetry: meta(&m, DROPPED_TELEMETRY)?,
            dropped_events: meta(&m, DROPPED_EVENTS)?,
            next_seq: meta(&m, NEXT_SEQ)?,
        })
    }
}
