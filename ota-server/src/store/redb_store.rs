//! [`Store`] on redb: one redb table per [`Table`], `&str` keys, JSON bytes; every batch one
//! durable write transaction.

use std::path::Path;
use std::time::Duration;

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

use super::{LeaseRecord, Store, StoreError, Table, Write};

fn def(t: Table) -> TableDefinition<'static, &'static str, &'static [u8]> {
    TableDefinition::new(t.name())
}

fn backend<E: std::fmt::Display>(e: E) -> StoreError {
    StoreError::Backend(e.to_string())
}

/// The single-machine store.
pub struct RedbStore {
    db: Database,
}

impl RedbStore {
    /// Opens or creates the database file.
    pub fn open(path: &Path) -> Result<RedbStore, StoreError> {
        let db = Database::create(path).map_err(|e| {
            StoreError::Backend(format!(
                "cannot open {} ({e}); is another ota-server using this data dir?",
                path.display()
            ))
        })?;
        let tx = db.begin_write().map_err(backend)?;
        for t in Table::ALL {
            tx.open_table(def(t)).map_err(backend)?;
        }
        tx.commit().map_err(backend)?;
        Ok(RedbStore { db })
    }
}

impl Store for RedbStore {
    fn get(&self, table: Table, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let tx = self.db.begin_read().map_err(backend)?;
        let t = tx.open_table(def(table)).map_err(backend)?;
        Ok(t.get(key).map_err(backend)?.map(|v| v.value().to_vec()))
    }

    fn scan(
        &self,
        table: Table,
        prefix: &str,
        limit: usize,
    ) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        let tx = self.db.begin_read().map_err(backend)?;
        let t = tx.open_table(def(table)).map_err(backend)?;
        let mut out = Vec::new();
        for entry in t.range(prefix..).map_err(backend)? {
            let (k, v) = entry.map_err(backend)?;
            let key = k.value();
            if !key.starts_with(prefix) || out.len() >= limit {
                break;
            }
            out.push((key.to_string(), v.value().to_vec()));
        }
        Ok(out)
    }

    fn write(&self, writes: Vec<Write>) -> Result<(), StoreError> {
        let tx = self.db.begin_write().map_err(backend)?;
        for w in &writes {
            match w {
                Write::Expect(table, key, expected) => {
                    let t = tx.open_table(def(*table)).map_err(backend)?;
                    let now = t.get(key.as_str()).map_err(backend)?;
                    if now.as_ref().map(|v| v.value()) != expected.as_deref() {
                        return Err(StoreError::Conflict {
                            table: table.name(),
                            key: key.clone(),
                        });
                    }
                }
                Write::Fence { name, token } => {
                    let t = tx.open_table(def(Table::Leases)).map_err(backend)?;
                    let held = t
                        .get(name.as_str())
                        .map_err(backend)?
                        .and_then(|v| serde_json::from_slice::<LeaseRecord>(v.value()).ok());
                    if !held.is_some_and(|l| l.token == *token && l.expires_ms > now_ms()) {
                        return Err(StoreError::Fenced {
                            name: name.clone(),
                            token: *token,
                        });
                    }
                }
                Write::Put(table, key, value) => {
                    let mut t = tx.open_table(def(*table)).map_err(backend)?;
                    t.insert(key.as_str(), value.as_slice()).map_err(backend)?;
                }
                Write::Delete(table, key) => {
                    let mut t = tx.open_table(def(*table)).map_err(backend)?;
                    t.remove(key.as_str()).map_err(backend)?;
                }
            }
        }
        tx.commit().map_err(backend)
    }

    fn reserve(&self, name: &str, n: u64) -> Result<u64, StoreError> {
        let tx = self.db.begin_write().map_err(backend)?;
        let next = {
            let mut t = tx.open_table(def(Table::Counters)).map_err(backend)?;
            let current = t
                .get(name)
                .map_err(backend)?
                .and_then(|v| <[u8; 8]>::try_from(v.value()).ok())
                .map(u64::from_le_bytes)
                .unwrap_or(0);
            let next = current + n.max(1);
            t.insert(name, next.to_le_bytes().as_slice())
                .map_err(backend)?;
            next
        };
        tx.commit().map_err(backend)?;
        Ok(next)
    }

    fn lease(&self, name: &str, holder: &str, ttl: Duration) -> Result<Option<u64>, StoreError> {
        let tx = self.db.begin_write().map_err(backend)?;
        let now = now_ms();
        let taken = {
            let mut t = tx.open_table(def(Table::Leases)).map_err(backend)?;
            let current = t
                .get(name)
                .map_err(backend)?
                .map(|v| super::decode::<LeaseRecord>(Table::Leases, name, v.value()))
                .transpose()?;
            let next = match current {
                Some(l) if l.holder == holder && l.expires_ms > now => Some(l.token),
                Some(l) if l.expires_ms > now => None,
                Some(l) if l.holder == holder => Some(l.token),
                Some(l) => Some(l.token + 1),
                None => Some(1),
            };
            if let Some(token) = next {
                let record = LeaseRecord {
                    holder: holder.to_string(),
                    token,
                    expires_ms: now + ttl.as_millis() as u64,
                };
                let bytes = serde_json::to_vec(&record).expect("lease serializes");
                t.insert(name, bytes.as_slice()).map_err(backend)?;
            }
            next
        };
        tx.commit().map_err(backend)?;
        Ok(taken)
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::super::{event_key, put, Records};
    use super::*;
    use std::sync::Arc;

    #[test]
    fn records_survive_a_reopen_and_batches_are_atomic() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("server.redb");
        {
            let r = Records::new(Arc::new(RedbStore::open(&path).unwrap()));
            r.put(
                Table::Devices,
                "dev-1",
                &serde_json::json!({"tags": {"hw": "x86"}}),
            )
            .unwrap();
            r.store()
                .write(vec![
                    put(Table::Events, &event_key("dev-1", 2), &"b"),
                    put(Table::Events, &event_key("dev-1", 10), &"c"),
                    put(Table::Events, &event_key("dev-1", 1), &"a"),
                    put(Table::Events, &event_key("dev-10", 1), &"other device"),
                ])
                .unwrap();
            assert_eq!(r.store().increment("generation/dev-1").unwrap(), 1);
            assert_eq!(r.store().increment("generation/dev-1").unwrap(), 2);
        }
        let r = Records::new(Arc::new(RedbStore::open(&path).unwrap()));
        let d: serde_json::Value = r.get(Table::Devices, "dev-1").unwrap().unwrap();
        assert_eq!(d["tags"]["hw"], "x86");
        let events: Vec<String> = r.list(Table::Events, "dev-1/", 100).unwrap();
        assert_eq!(
            events,
            vec!["a", "b", "c"],
            "in sequence order, only this device"
        );
        assert_eq!(
            r.list::<String>(Table::Events, "dev-1/", 2).unwrap().len(),
            2
        );
        assert_eq!(r.store().increment("generation/dev-1").unwrap(), 3);
        r.delete(Table::Devices, "dev-1").unwrap();
        assert!(r
            .get::<serde_json::Value>(Table::Devices, "dev-1")
            .unwrap()
            .is_none());
        // a corrupt record is an error naming it, not a panic
        r.store()
            .write(vec![Write::Put(
                Table::Bundles,
                "x".into(),
                b"{not json".to_vec(),
            )])
            .unwrap();
        let e = r.get::<serde_json::Value>(Table::Bundles, "x").unwrap_err();
        assert!(e.to_string().contains("bundles/x"), "{e}");
    }

    #[test]
    fn a_second_server_on_the_same_data_dir_is_refused_with_a_reason() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("server.redb");
        let _first = RedbStore::open(&path).unwrap();
        let e = RedbStore::open(&path).err().unwrap();
        assert!(e.to_string().contains("another ota-server"), "{e}");
    }
}
