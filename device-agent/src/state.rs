//! Small durable facts of the agent, in the same redb file as the slots and the outbox: the last
//! applied desired generation, the director's last accepted sequence number (replay protection
//! across restarts), the desired document itself (re-applied at start) and the last time the
//! server was heard from.

use std::sync::Arc;

use redb::{Database, ReadableDatabase, TableDefinition};

const META: TableDefinition<&str, &[u8]> = TableDefinition::new("agent_meta");

const APPLIED_GENERATION: &str = "applied_generation";
const DIRECTOR_SEQ: &str = "director_seq";
const DESIRED_DOC: &str = "desired_doc";
const LAST_SYNC: &str = "last_sync";

/// The agent's small facts.
pub struct AgentState {
    db: Arc<Database>,
}

fn store<E: Into<redb::Error>>(e: E) -> redb::Error {
    e.into()
}

impl AgentState {
    /// Opens the facts table in `db`.
    pub fn open(db: Arc<Database>) -> Result<AgentState, redb::Error> {
        let tx = db.begin_write().map_err(store)?;
        tx.open_table(META).map_err(store)?;
        tx.commit().map_err(store)?;
        Ok(AgentState { db })
    }

    fn get(&self, key: &str) -> Result<Option<Vec<u8>>, redb::Error> {
        let tx = self.db.begin_read().map_err(store)?;
        let t = tx.open_table(META).map_err(store)?;
        Ok(t.get(key).map_err(store)?.map(|v| v.value().to_vec()))
    }

    fn get_u64(&self, key: &str) -> Result<u64, redb::Error> {
        Ok(self
            .get(key)?
            .and_then(|v| <[u8; 8]>::try_from(v.as_slice()).ok())
            .map(u64::from_le_bytes)
            .unwrap_or(0))
    }

    fn put(&self, pairs: &[(&str, &[u8])]) -> Result<(), redb::Error> {
        let tx = self.db.begin_write().map_err(store)?;
        {
            let mut t = tx.open_table(META).map_err(store)?;
            for (k, v) in pairs {
                t.insert(*k, *v).map_err(store)?;
            }
        }
        tx.commit().map_err(store)?;
        Ok(())
    }

    /// The last desired generation accepted (0: none).
    pub fn applied_generation(&self) -> Result<u64, redb::Error> {
        self.get_u64(APPLIED_GENERATION)
    }

    /// The director's last accepted sequence number (0: none).
    pub fn director_seq(&self) -> Result<u64, redb::Error> {
        self.get_u64(DIRECTOR_SEQ)
    }

    /// The sealed desired document last accepted, as received.
    pub fn desired_doc(&self) -> Result<Option<Vec<u8>>, redb::Error> {
        self.get(DESIRED_DOC)
    }

    /// Records an accepted desired document in one transaction: its generation, the director's
    /// sequence number and the document.
    pub fn accept_desired(&self, generation: u64, seq: u64, doc: &[u8]) -> Result<(), redb::Error> {
        self.put(&[
            (APPLIED_GENERATION, &generation.to_le_bytes()),
            (DIRECTOR_SEQ, &seq.to_le_bytes()),
            (DESIRED_DOC, doc),
        ])
    }

    /// Unix seconds the server was last heard from (0: never).
    pub fn last_sync(&self) -> Result<u64, redb::Error> {
        self.get_u64(LAST_SYNC)
    }

    /// Records contact with the server.
    pub fn touch_sync(&self, at: u64) -> Result<(), redb::Error> {
        self.put(&[(LAST_SYNC, &at.to_le_bytes())])
    }
}
