//! The server's state behind one small trait (DESIGN decision 9): tables of keyed JSON records,
//! with atomic multi-record writes, compare-and-set guards, counters and leases. redb backs it
//! on one machine ([`RedbStore`], the default); PostgreSQL backs several stateless replicas
//! ([`PgStore`]: one relation per table, versioned migrations) without the rest of the server
//! changing.
//!
//! [`Records`] adds the typed layer the server uses: serde records per table, keys chosen so a
//! prefix scan lists a device's events in sequence order.

mod postgres;
mod redb_store;

pub use postgres::PgStore;
pub use redb_store::RedbStore;

use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;

/// The tables.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Table {
    /// Enrolled devices, by id.
    Devices,
    /// Uploaded bundles, by sha256 hex.
    Bundles,
    /// Rollouts, by id.
    Rollouts,
    /// Admin tokens, by sha256 of the token.
    Tokens,
    /// Device events, by `device/seq` (seq zero-padded).
    Events,
    /// Desired state per device, by id.
    Desired,
    /// Counters (ids, generations), by name.
    Counters,
    /// Telemetry aggregates, by `rollout/version/phase/bucket`.
    Telemetry,
    /// Enrollment tokens (`token/<sha256>`) and pre-authorized keys (`key/<hex>`).
    Enrollment,
    /// The engine's journal of enrollments (`device/<id>/<token sha256>`), consumed by its
    /// next step ([`crate::devices::journal`]).
    Changes,
    /// Leases (the engine's leadership), by name ([`LeaseRecord`]).
    Leases,
}

impl Table {
    /// Every table.
    pub const ALL: [Table; 11] = [
        Table::Devices,
        Table::Bundles,
        Table::Rollouts,
        Table::Tokens,
        Table::Events,
        Table::Desired,
        Table::Counters,
        Table::Telemetry,
        Table::Enrollment,
        Table::Changes,
        Table::Leases,
    ];

    /// Stable name (redb table name, PostgreSQL `table` column).
    pub fn name(self) -> &'static str {
        match self {
            Table::Devices => "devices",
            Table::Bundles => "bundles",
            Table::Rollouts => "rollouts",
            Table::Tokens => "tokens",
            Table::Events => "events",
            Table::Desired => "desired",
            Table::Counters => "counters",
            Table::Telemetry => "telemetry",
            Table::Enrollment => "enrollment",
            Table::Changes => "changes",
            Table::Leases => "leases",
        }
    }
}

/// One write in an atomic batch.
#[derive(Clone, Debug, PartialEq)]
pub enum Write {
    /// Insert or replace.
    Put(Table, String, Vec<u8>),
    /// Delete (absent is fine).
    Delete(Table, String),
    /// A guard, not a change: the batch applies only if the record is still these bytes as
    /// read (`None`: still absent); otherwise the whole batch fails with
    /// [`StoreError::Conflict`] and the caller reads again. How replicas that share a database
    /// update the same record without losing one another's writes.
    Expect(Table, String, Option<Vec<u8>>),
    /// A guard: the batch applies only while the lease `name` is still held with this
    /// fencing token ([`Store::lease`]); otherwise [`StoreError::Fenced`]. A leader that was
    /// paused past its lease writes nothing.
    Fence {
        /// Lease name.
        name: String,
        /// The token [`Store::lease`] returned.
        token: u64,
    },
}

/// Store failures.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The backend failed (disk full, corruption, connection lost).
    #[error("store: {0}")]
    Backend(String),
    /// A record did not decode.
    #[error("store: record {table}/{key} is corrupt: {reason}")]
    Corrupt {
        /// Table name.
        table: &'static str,
        /// Key.
        key: String,
        /// Why.
        reason: String,
    },
    /// A [`Write::Expect`] guard failed: another writer changed the record since it was read.
    #[error("store: {table}/{key} was changed by another writer; read it again")]
    Conflict {
        /// Table name.
        table: &'static str,
        /// Key.
        key: String,
    },
    /// A [`Write::Fence`] guard failed: the lease moved on (or expired) since the token was
    /// taken.
    #[error("store: write refused: lease '{name}' token {token} is no longer held (another replica leads, or the lease expired)")]
    Fenced {
        /// Lease name.
        name: String,
        /// The stale token.
        token: u64,
    },
}

/// The storage backend.
pub trait Store: Send + Sync {
    /// One record.
    fn get(&self, table: Table, key: &str) -> Result<Option<Vec<u8>>, StoreError>;
    /// Records whose key starts with `prefix`, in key order, at most `limit`.
    fn scan(
        &self,
        table: Table,
        prefix: &str,
        limit: usize,
    ) -> Result<Vec<(String, Vec<u8>)>, StoreError>;
    /// Applies every write or none, durably.
    fn write(&self, writes: Vec<Write>) -> Result<(), StoreError>;
    /// Reads a counter, adds one and stores it, atomically; returns the new value.
    fn increment(&self, name: &str) -> Result<u64, StoreError> {
        self.reserve(name, 1)
    }
    /// Adds `n` (at least 1) to a counter atomically and returns the new value: the caller owns
    /// the `n` values ending there (one commit for a block of sequence numbers).
    fn reserve(&self, name: &str, n: u64) -> Result<u64, StoreError>;
    /// Takes or keeps the lease `name` for `holder` for `ttl` from now: `Some(token)` while
    /// `holder` holds it, `None` while another holder's lease has not expired. The fencing
    /// token grows by one each time the lease changes hands, never otherwise; writes guarded by
    /// [`Write::Fence`] with an older token are refused.
    fn lease(&self, name: &str, holder: &str, ttl: Duration) -> Result<Option<u64>, StoreError>;
    /// Several records of one table at once (one round trip on PostgreSQL), in `keys`' order.
    fn get_many(&self, table: Table, keys: &[String]) -> Result<Vec<Option<Vec<u8>>>, StoreError> {
        keys.iter().map(|k| self.get(table, k)).collect()
    }
    /// Holds the lock `name` among every server sharing this store until the guard is dropped
    /// (or the server dies): for work whose reads and writes must not interleave with another
    /// replica's, such as the ingest's read-modify-write of shared aggregates. A single server
    /// (redb) has nothing to exclude: a no-op guard.
    fn lock(&self, name: &str) -> Result<LockGuard, StoreError> {
        let _ = name;
        Ok(LockGuard(None))
    }
    /// The desired states written after change number `after`, oldest first, at most `limit`:
    /// (change number, device, record). How replicas that did not compute a desired state learn
    /// of it and publish it to the devices connected to them. `None` where the store serves a
    /// single server (redb), which publishes what its own engine computed.
    fn desired_after(
        &self,
        after: u64,
        limit: usize,
    ) -> Result<Option<Vec<DesiredChange>>, StoreError> {
        let _ = (after, limit);
        Ok(None)
    }
}

/// One entry of the desired-state feed: change number, device, the record's bytes.
pub type DesiredChange = (u64, String, Vec<u8>);

/// A held [`Store::lock`]; released when dropped (the box's own `Drop` unlocks).
pub struct LockGuard(#[allow(dead_code)] pub(crate) Option<Box<dyn Send>>);

impl std::fmt::Debug for LockGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LockGuard")
    }
}

/// A lease as stored: who holds it, its fencing token, until when (unix milliseconds).
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct LeaseRecord {
    /// Holder (a replica's id).
    pub holder: String,
    /// Fencing token.
    pub token: u64,
    /// Expiry, unix milliseconds.
    pub expires_ms: u64,
}

/// Typed records over a [`Store`].
pub struct Records<S: Store + ?Sized> {
    store: std::sync::Arc<S>,
}

impl<S: Store + ?Sized> Clone for Records<S> {
    fn clone(&self) -> Self {
        Records {
            store: self.store.clone(),
        }
    }
}

impl<S: Store + ?Sized> Records<S> {
    /// Wraps a store.
    pub fn new(store: std::sync::Arc<S>) -> Self {
        Records { store }
    }

    /// The backend.
    pub fn store(&self) -> &S {
        &self.store
    }

    /// A typed record.
    pub fn get<T: DeserializeOwned>(
        &self,
        table: Table,
        key: &str,
    ) -> Result<Option<T>, StoreError> {
        self.store
            .get(table, key)?
            .map(|b| decode(table, key, &b))
            .transpose()
    }

    /// Typed records by key prefix.
    pub fn list<T: DeserializeOwned>(
        &self,
        table: Table,
        prefix: &str,
        limit: usize,
    ) -> Result<Vec<T>, StoreError> {
        self.store
            .scan(table, prefix, limit)?
            .into_iter()
            .map(|(k, b)| decode(table, &k, &b))
            .collect()
    }

    /// Stores one typed record.
    pub fn put<T: Serialize>(&self, table: Table, key: &str, value: &T) -> Result<(), StoreError> {
        self.store.write(vec![put(table, key, value)])
    }

    /// Deletes one record.
    pub fn delete(&self, table: Table, key: &str) -> Result<(), StoreError> {
        self.store
            .write(vec![Write::Delete(table, key.to_string())])
    }
}

/// A typed put for a batch.
pub fn put<T: Serialize>(table: Table, key: &str, value: &T) -> Write {
    Write::Put(
        table,
        key.to_string(),
        serde_json::to_vec(value).expect("records serialize"),
    )
}

/// A record's JSON as `T`, or [`StoreError::Corrupt`] naming it.
pub fn decode<T: DeserializeOwned>(table: Table, key: &str, bytes: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::Corrupt {
        table: table.name(),
        key: key.to_string(),
        reason: e.to_string(),
    })
}

/// The event key of `device`'s message `seq`: a prefix scan on `device/` lists them in order.
pub fn event_key(device: &str, seq: u64) -> String {
    format!("{device}/{seq:020}")
}
