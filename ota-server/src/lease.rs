//! Keeping the engine lease through a long step. The engine thread renews its lease once a
//! tick, between steps; a step that outlasts the lease (50,000 desired states written in one
//! transaction on a loaded machine) would lose it: fencing refuses the step's write, and the
//! next leader starts with a full step of its own, which can outlast the lease again. The
//! [`LeaseKeeper`] renews the lease beside a running step, but only for a bounded time: a step
//! hung past [`LeaseKeeper::bound`] is not kept alive, and another replica takes over within
//! the bound plus one lease. A paused process (SIGSTOP) renews nothing, its keeper included.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::store::{Store, StoreError};

/// How many leases long a step may run while the keeper still renews its lease.
pub const STEP_BOUND_LEASES: u32 = 4;

/// Renews one lease while a step under it runs, within a bound.
pub struct LeaseKeeper {
    name: String,
    holder: String,
    ttl: Duration,
    bound: Duration,
    /// The step running now: when it began and the fencing token it runs under.
    running: Mutex<Option<(Instant, u64)>>,
}

/// What one look by the keeper found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Keep {
    /// No step runs: the engine thread renews the lease itself.
    Idle,
    /// A step runs; the lease was renewed under its token.
    Renewed,
    /// A step has run longer than the bound (its age): the lease is left to expire.
    Overdue(Duration),
    /// Another holder has the lease (or a new token): the running step's writes are fenced.
    Lost,
}

/// Marks a step as running until dropped ([`LeaseKeeper::stepping`]).
pub struct Stepping<'a> {
    keeper: &'a LeaseKeeper,
    began: Instant,
}

impl Stepping<'_> {
    /// How long the step has run.
    pub fn elapsed(&self) -> Duration {
        self.began.elapsed()
    }
}

impl Drop for Stepping<'_> {
    fn drop(&mut self) {
        *self.keeper.lock() = None;
    }
}

impl LeaseKeeper {
    /// A keeper of lease `name` for `holder`, renewing it for `ttl` at a time, for steps of at
    /// most [`STEP_BOUND_LEASES`] leases.
    pub fn new(name: &str, holder: &str, ttl: Duration) -> LeaseKeeper {
        LeaseKeeper {
            name: name.to_string(),
            holder: holder.to_string(),
            ttl,
            bound: ttl * STEP_BOUND_LEASES,
            running: Mutex::new(None),
        }
    }

    /// The longest step whose lease is kept.
    pub fn bound(&self) -> Duration {
        self.bound
    }

    /// How often the keeper should look: three times a lease.
    pub fn period(&self) -> Duration {
        self.ttl / 3
    }

    /// Marks a step under fencing `token` as begun; it ends when the guard is dropped.
    pub fn stepping(&self, token: u64) -> Stepping<'_> {
        let began = Instant::now();
        *self.lock() = Some((began, token));
        Stepping {
            keeper: self,
            began,
        }
    }

    /// One look: renews the lease while a step younger than the bound runs under it.
    pub fn keep<S: Store + ?Sized>(&self, store: &S) -> Result<Keep, StoreError> {
        let Some((began, token)) = *self.lock() else {
            return Ok(Keep::Idle);
        };
        let age = began.elapsed();
        if age > self.bound {
            return Ok(Keep::Overdue(age));
        }
        match store.lease(&self.name, &self.holder, self.ttl)? {
            Some(held) if held == token => Ok(Keep::Renewed),
            _ => Ok(Keep::Lost),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<(Instant, u64)>> {
        self.running
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::RedbStore;

    fn store() -> (tempfile::TempDir, RedbStore) {
        let dir = tempfile::tempdir().unwrap();
        let store = RedbStore::open(&dir.path().join("s.redb")).unwrap();
        (dir, store)
    }

    #[test]
    fn a_long_step_keeps_its_lease_and_a_hung_one_loses_it() {
        let (_dir, store) = store();
        let ttl = Duration::from_millis(300);
        let token = store.lease("engine", "a", ttl).unwrap().unwrap();
        let keeper = LeaseKeeper::new("engine", "a", ttl);
        assert_eq!(keeper.keep(&store).unwrap(), Keep::Idle);
        let step = keeper.stepping(token);
        // the step runs three leases long, the keeper looking three times a lease
        while step.elapsed() < ttl * 3 {
            std::thread::sleep(keeper.period());
            assert_eq!(keeper.keep(&store).unwrap(), Keep::Renewed);
            assert_eq!(store.lease("engine", "b", ttl).unwrap(), None, "kept");
        }
        // past the bound the keeper stops renewing, and the lease goes to another replica
        while step.elapsed() <= keeper.bound() {
            std::thread::sleep(keeper.period());
            keeper.keep(&store).unwrap();
        }
        assert!(matches!(keeper.keep(&store).unwrap(), Keep::Overdue(_)));
        std::thread::sleep(ttl + Duration::from_millis(50));
        let taken = store.lease("engine", "b", ttl).unwrap();
        assert_eq!(taken, Some(token + 1));
        drop(step);
        assert_eq!(keeper.keep(&store).unwrap(), Keep::Idle);
        // a step that began under the old token learns that it lost the lease
        let _stale = keeper.stepping(token);
        assert_eq!(keeper.keep(&store).unwrap(), Keep::Lost);
    }
}
