//! [`Store`] on PostgreSQL, for several `ota-server` replicas sharing one system of record.
//!
//! One relation per [`Table`] in a schema of its own (`--store-schema`, default `edgefleet`),
//! created by the versioned migrations in [`MIGRATIONS`] (applied in order under an advisory
//! lock, each recorded in `schema_migrations`, so replicas that start together migrate once).
//! Keys are `text COLLATE "C"` primary keys: byte order, the order redb gives, so a prefix
//! scan is an index range (a device's events by sequence, a series' minutes by time). Records
//! are `jsonb`, with the fields queries select on lifted into indexed generated columns
//! (devices by tag and by online, desired states by generation). Counters and leases are typed
//! rows. Every write of a desired state takes the next value of a sequence (`change`, indexed):
//! the feed [`Store::desired_after`] serves replicas. Only the leading engine writes desired
//! states, in one transaction a step, and a new leader's lease waits for the old leader's
//! fenced transaction (`FOR SHARE` on the lease row), so change numbers commit in order and a
//! reader that saw change n has seen every change below it.
//!
//! The trait is synchronous (redb is); each call runs on this store's own small tokio runtime
//! over a connection pool and the caller waits for its answer, so it may be called from any
//! thread, inside another runtime or not. A connection the database dropped (restart,
//! failover) is replaced on the next call; the call that saw it fails with
//! [`StoreError::Backend`] and its caller retries as it does on any store error.

use std::collections::BTreeMap;
use std::future::Future;
use std::str::FromStr;
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use tokio_postgres::NoTls;

use super::{DesiredChange, LeaseRecord, LockGuard, Store, StoreError, Table, Write};

/// The schema's versions, applied in order; a version once released is never edited.
pub const MIGRATIONS: &[(i32, &str, &str)] = &[(
    1,
    "tables, keys in byte order, indexed generated columns",
    r#"
CREATE TABLE devices (
    key text COLLATE "C" PRIMARY KEY,
    body jsonb NOT NULL,
    tags jsonb GENERATED ALWAYS AS (body -> 'tags') STORED,
    online boolean GENERATED ALWAYS AS ((body ->> 'online')::boolean) STORED
);
CREATE INDEX devices_by_tag ON devices USING gin (tags jsonb_path_ops);
CREATE INDEX devices_online ON devices (key) WHERE online;
CREATE SEQUENCE desired_change;
CREATE TABLE desired (
    key text COLLATE "C" PRIMARY KEY,
    body jsonb NOT NULL,
    generation numeric GENERATED ALWAYS AS ((body ->> 'generation')::numeric) STORED,
    change bigint NOT NULL DEFAULT nextval('desired_change')
);
CREATE INDEX desired_by_change ON desired (change);
CREATE FUNCTION desired_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.change := nextval('desired_change');
    RETURN NEW;
END $$;
CREATE TRIGGER desired_changed BEFORE UPDATE ON desired
    FOR EACH ROW EXECUTE FUNCTION desired_changed();
CREATE TABLE bundles (key text COLLATE "C" PRIMARY KEY, body jsonb NOT NULL);
CREATE TABLE rollouts (
    key text COLLATE "C" PRIMARY KEY,
    body jsonb NOT NULL,
    status text GENERATED ALWAYS AS (body ->> 'status') STORED
);
CREATE TABLE tokens (key text COLLATE "C" PRIMARY KEY, body jsonb NOT NULL);
CREATE TABLE events (key text COLLATE "C" PRIMARY KEY, body jsonb NOT NULL);
CREATE TABLE telemetry (key text COLLATE "C" PRIMARY KEY, body jsonb NOT NULL);
CREATE TABLE enrollment (key text COLLATE "C" PRIMARY KEY, body jsonb NOT NULL);
CREATE TABLE changes (key text COLLATE "C" PRIMARY KEY, body jsonb NOT NULL);
CREATE TABLE counters (key text COLLATE "C" PRIMARY KEY, value bigint NOT NULL);
CREATE TABLE leases (
    key text COLLATE "C" PRIMARY KEY,
    holder text NOT NULL,
    token bigint NOT NULL,
    expires_at timestamptz NOT NULL
);
"#,
)];

/// How long one call may wait for the database before it fails.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// The PostgreSQL store.
pub struct PgStore {
    runtime: Option<tokio::runtime::Runtime>,
    pool: Pool,
    target: String,
}

fn pg_error(target: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::Backend(format!("postgres at {target}: {e}"))
}

impl PgStore {
    /// Connects to `url` (`postgres://user:password@host:port/database`, libpq style) and
    /// brings the schema `schema` up to the newest migration, creating it if missing.
    pub fn connect(url: &str, schema: &str) -> Result<PgStore, StoreError> {
        if schema.is_empty()
            || !schema
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        {
            return Err(StoreError::Backend(format!(
                "schema name '{schema}': use lowercase letters, digits and '_'"
            )));
        }
        let mut config = tokio_postgres::Config::from_str(url).map_err(|e| {
            StoreError::Backend(format!(
                "--store '{url}' is not a PostgreSQL URL ({e}); use postgres://user:password@host:port/database"
            ))
        })?;
        config
            .options(format!(
                "-c search_path={schema} -c client_min_messages=warning"
            ))
            .application_name("ota-server")
            .connect_timeout(Duration::from_secs(5));
        let target = {
            let hosts = config
                .get_hosts()
                .iter()
                .map(|h| match h {
                    tokio_postgres::config::Host::Tcp(s) => s.clone(),
                    tokio_postgres::config::Host::Unix(p) => p.display().to_string(),
                })
                .collect::<Vec<_>>()
                .join(",");
            let port = config.get_ports().first().copied().unwrap_or(5432);
            format!(
                "{hosts}:{port}/{}",
                config.get_dbname().unwrap_or("(default)")
            )
        };
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("postgres")
            .enable_all()
            .build()
            .map_err(|e| StoreError::Backend(format!("postgres runtime: {e}")))?;
        let manager = Manager::from_config(
            config,
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = {
            let _guard = runtime.enter();
            Pool::builder(manager)
                .max_size(8)
                .runtime(deadpool_postgres::Runtime::Tokio1)
                .wait_timeout(Some(CALL_TIMEOUT))
                .create_timeout(Some(Duration::from_secs(10)))
                .build()
                .map_err(|e| pg_error(&target, e))?
        };
        let store = PgStore {
            runtime: Some(runtime),
            pool,
            target,
        };
        store.migrate(schema)?;
        Ok(store)
    }

    /// Where it connects (host:port/database), for messages.
    pub fn target(&self) -> &str {
        &self.target
    }

    /// Runs `f` with a pooled connection on this store's runtime and waits for its answer.
    fn call<T, F, Fut>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(deadpool_postgres::Object) -> Fut + Send + 'static,
        Fut: Future<Output = Result<T, tokio_postgres::Error>> + Send,
    {
        let pool = self.pool.clone();
        let target = self.target.clone();
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        let runtime = self.runtime.as_ref().expect("runtime lives until drop");
        runtime.spawn(async move {
            let work = async {
                let client = pool.get().await.map_err(|e| {
                    pg_error(
                        &target,
                        format!(
                            "no connection ({e}); is PostgreSQL running? (scripts/cluster.sh pg starts one)"
                        ),
                    )
                })?;
                f(client).await.map_err(|e| pg_error(&target, describe(&e)))
            };
            let answer = match tokio::time::timeout(CALL_TIMEOUT, work).await {
                Ok(answer) => answer,
                Err(_) => Err(pg_error(
                    &target,
                    format!("no answer within {} s", CALL_TIMEOUT.as_secs()),
                )),
            };
            let _ = tx.send(answer);
        });
        rx.recv()
            .map_err(|_| StoreError::Backend("postgres call abandoned".into()))?
    }

    fn migrate(&self, schema: &str) -> Result<(), StoreError> {
        let schema = schema.to_string();
        self.call(move |mut client| async move {
            let tx = client.transaction().await?;
            // one migrator at a time across replicas (the key is arbitrary but fixed)
            tx.execute("SELECT pg_advisory_xact_lock(7220114)", &[])
                .await?;
            tx.batch_execute(&format!(
                "CREATE SCHEMA IF NOT EXISTS {schema};
                 CREATE TABLE IF NOT EXISTS {schema}.schema_migrations (
                     version integer PRIMARY KEY,
                     name text NOT NULL,
                     applied_at timestamptz NOT NULL DEFAULT now())"
            ))
            .await?;
            let applied: Vec<i32> = tx
                .query(
                    &format!("SELECT version FROM {schema}.schema_migrations"),
                    &[],
                )
                .await?
                .iter()
                .map(|r| r.get(0))
                .collect();
            for (version, name, sql) in MIGRATIONS {
                if applied.contains(version) {
                    continue;
                }
                tx.batch_execute(&format!("SET LOCAL search_path = {schema}; {sql}"))
                    .await?;
                tx.execute(
                    &format!(
                        "INSERT INTO {schema}.schema_migrations (version, name) VALUES ($1, $2)"
                    ),
                    &[version, name],
                )
                .await?;
            }
            tx.commit().await
        })
    }
}

impl Drop for PgStore {
    fn drop(&mut self) {
        // dropping a runtime blocks; a store dropped inside another runtime must not
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

/// A held advisory lock: unlocked on its connection when dropped (the connection then goes
/// back to the pool).
struct AdvisoryLock {
    client: Option<deadpool_postgres::Object>,
    key: i64,
    handle: tokio::runtime::Handle,
}

impl Drop for AdvisoryLock {
    fn drop(&mut self) {
        if let Some(client) = self.client.take() {
            let key = self.key;
            self.handle.spawn(async move {
                let _ = client
                    .execute("SELECT pg_advisory_unlock($1)", &[&key])
                    .await;
            });
        }
    }
}

/// The database's own message (the driver's Display is often just "db error").
fn describe(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{}: {}", db.code().code(), db.message()),
        None => e.to_string(),
    }
}

/// `prefix` as a LIKE pattern matching keys that start with it.
fn like_prefix(prefix: &str) -> String {
    let mut p = String::with_capacity(prefix.len() + 1);
    for c in prefix.chars() {
        if matches!(c, '\\' | '%' | '_') {
            p.push('\\');
        }
        p.push(c);
    }
    p.push('%');
    p
}

fn lease_json(holder: String, token: i64, expires_ms: i64) -> Vec<u8> {
    serde_json::to_vec(&LeaseRecord {
        holder,
        token: token as u64,
        expires_ms: expires_ms.max(0) as u64,
    })
    .expect("lease serializes")
}

/// What a batch leaves behind, per table: the last write of each key wins (the batch is one
/// transaction, so only its end state matters), and guards are checked first.
#[derive(Default)]
struct Plan {
    fences: Vec<(String, i64)>,
    expects: Vec<(Table, String, Option<Vec<u8>>)>,
    puts: BTreeMap<&'static str, (Table, Vec<String>, Vec<String>)>,
    deletes: BTreeMap<&'static str, Vec<String>>,
}

impl Plan {
    fn of(writes: Vec<Write>) -> Result<Plan, StoreError> {
        // (relation, key) → the batch's last word on it
        type Last = BTreeMap<(&'static str, String), (Table, Option<Vec<u8>>)>;
        let mut last: Last = BTreeMap::new();
        let mut plan = Plan::default();
        for w in writes {
            match w {
                Write::Put(t, k, v) => {
                    last.insert((t.name(), k), (t, Some(v)));
                }
                Write::Delete(t, k) => {
                    last.insert((t.name(), k), (t, None));
                }
                Write::Expect(t, k, v) => plan.expects.push((t, k, v)),
                Write::Fence { name, token } => plan.fences.push((name, token as i64)),
            }
        }
        for ((name, key), (table, value)) in last {
            match value {
                Some(bytes) => {
                    let text = match table {
                        Table::Counters => match <[u8; 8]>::try_from(bytes.as_slice()) {
                            Ok(b) => u64::from_le_bytes(b).to_string(),
                            Err(_) => {
                                return Err(StoreError::Backend(format!(
                                    "counter {key}: 8 bytes expected"
                                )))
                            }
                        },
                        _ => String::from_utf8(bytes).map_err(|_| StoreError::Corrupt {
                            table: table.name(),
                            key: key.clone(),
                            reason: "not UTF-8 JSON".into(),
                        })?,
                    };
                    let entry = plan
                        .puts
                        .entry(name)
                        .or_insert_with(|| (table, Vec::new(), Vec::new()));
                    entry.1.push(key);
                    entry.2.push(text);
                }
                None => plan.deletes.entry(name).or_default().push(key),
            }
        }
        Ok(plan)
    }
}

impl Store for PgStore {
    fn get(&self, table: Table, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let key = key.to_string();
        self.call(move |client| async move {
            Ok(match table {
                Table::Counters => client
                    .query_opt("SELECT value FROM counters WHERE key = $1", &[&key])
                    .await?
                    .map(|r| (r.get::<_, i64>(0) as u64).to_le_bytes().to_vec()),
                Table::Leases => client
                    .query_opt(
                        "SELECT holder, token, (extract(epoch FROM expires_at) * 1000)::bigint
                         FROM leases WHERE key = $1",
                        &[&key],
                    )
                    .await?
                    .map(|r| lease_json(r.get(0), r.get(1), r.get(2))),
                _ => client
                    .query_opt(
                        &format!("SELECT body::text FROM {} WHERE key = $1", table.name()),
                        &[&key],
                    )
                    .await?
                    .map(|r| r.get::<_, String>(0).into_bytes()),
            })
        })
    }

    fn scan(
        &self,
        table: Table,
        prefix: &str,
        limit: usize,
    ) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        let pattern = like_prefix(prefix);
        let limit = limit.min(i64::MAX as usize) as i64;
        self.call(move |client| async move {
            let sql = match table {
                Table::Counters => "SELECT key, value::text FROM counters \
                     WHERE key LIKE $1 ORDER BY key LIMIT $2"
                    .to_string(),
                Table::Leases => "SELECT key, json_build_object('holder', holder, 'token', token, \
                     'expires_ms', (extract(epoch FROM expires_at) * 1000)::bigint)::text \
                     FROM leases WHERE key LIKE $1 ORDER BY key LIMIT $2"
                    .to_string(),
                _ => format!(
                    "SELECT key, body::text FROM {} WHERE key LIKE $1 ORDER BY key LIMIT $2",
                    table.name()
                ),
            };
            let rows = client.query(&sql, &[&pattern, &limit]).await?;
            Ok(rows
                .iter()
                .map(|r| {
                    let key: String = r.get(0);
                    let text: String = r.get(1);
                    let bytes = match table {
                        Table::Counters => text.parse::<u64>().unwrap_or(0).to_le_bytes().to_vec(),
                        _ => text.into_bytes(),
                    };
                    (key, bytes)
                })
                .collect())
        })
    }

    fn write(&self, writes: Vec<Write>) -> Result<(), StoreError> {
        if writes.is_empty() {
            return Ok(());
        }
        let plan = Plan::of(writes)?;
        let refused = self.call(move |mut client| async move {
            let tx = client.transaction().await?;
            for (name, token) in &plan.fences {
                // FOR SHARE: a replica taking the lease over waits until this batch is in
                let held = tx
                    .query_opt(
                        "SELECT 1 FROM leases WHERE key = $1 AND token = $2 \
                         AND expires_at > clock_timestamp() FOR SHARE",
                        &[name, token],
                    )
                    .await?;
                if held.is_none() {
                    return Ok(Some(StoreError::Fenced {
                        name: name.clone(),
                        token: *token as u64,
                    }));
                }
            }
            // the guarded records, locked, one query per table
            let mut by_table: BTreeMap<&'static str, (Table, Vec<String>)> = BTreeMap::new();
            for (table, key, _) in &plan.expects {
                by_table
                    .entry(table.name())
                    .or_insert_with(|| (*table, Vec::new()))
                    .1
                    .push(key.clone());
            }
            let mut now: std::collections::HashMap<(&'static str, String), Vec<u8>> =
                Default::default();
            for (name, (table, keys)) in &by_table {
                let sql = match table {
                    Table::Counters => "SELECT key, value::text FROM counters \
                         WHERE key = ANY($1) FOR UPDATE"
                        .to_string(),
                    _ => {
                        format!("SELECT key, body::text FROM {name} WHERE key = ANY($1) FOR UPDATE")
                    }
                };
                for row in tx.query(&sql, &[keys]).await? {
                    let (key, text): (String, String) = (row.get(0), row.get(1));
                    let bytes = match table {
                        Table::Counters => text.parse::<u64>().unwrap_or(0).to_le_bytes().to_vec(),
                        _ => text.into_bytes(),
                    };
                    now.insert((*name, key), bytes);
                }
            }
            for (table, key, expected) in &plan.expects {
                if now.get(&(table.name(), key.clone())) != expected.as_ref() {
                    return Ok(Some(StoreError::Conflict {
                        table: table.name(),
                        key: key.clone(),
                    }));
                }
            }
            for (name, keys) in &plan.deletes {
                tx.execute(&format!("DELETE FROM {name} WHERE key = ANY($1)"), &[keys])
                    .await?;
            }
            for (name, (table, keys, values)) in &plan.puts {
                let sql = match table {
                    Table::Counters => "INSERT INTO counters (key, value) \
                         SELECT k, v::bigint FROM unnest($1::text[], $2::text[]) AS u(k, v) \
                         ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value"
                        .to_string(),
                    Table::Leases => "INSERT INTO leases (key, holder, token, expires_at) \
                         SELECT k, v::jsonb ->> 'holder', (v::jsonb ->> 'token')::bigint, \
                         to_timestamp((v::jsonb ->> 'expires_ms')::double precision / 1000) \
                         FROM unnest($1::text[], $2::text[]) AS u(k, v) \
                         ON CONFLICT (key) DO UPDATE SET holder = EXCLUDED.holder, \
                         token = EXCLUDED.token, expires_at = EXCLUDED.expires_at"
                        .to_string(),
                    _ => format!(
                        "INSERT INTO {name} (key, body) \
                         SELECT k, v::jsonb FROM unnest($1::text[], $2::text[]) AS u(k, v) \
                         ON CONFLICT (key) DO UPDATE SET body = EXCLUDED.body"
                    ),
                };
                tx.execute(&sql, &[keys, values]).await?;
            }
            tx.commit().await?;
            Ok(None)
        })?;
        match refused {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    fn reserve(&self, name: &str, n: u64) -> Result<u64, StoreError> {
        let name = name.to_string();
        let n = n.max(1) as i64;
        self.call(move |client| async move {
            let row = client
                .query_one(
                    "INSERT INTO counters (key, value) VALUES ($1, $2) \
                     ON CONFLICT (key) DO UPDATE SET value = counters.value + EXCLUDED.value \
                     RETURNING value",
                    &[&name, &n],
                )
                .await?;
            Ok(row.get::<_, i64>(0) as u64)
        })
    }

    fn lease(&self, name: &str, holder: &str, ttl: Duration) -> Result<Option<u64>, StoreError> {
        let (name, holder) = (name.to_string(), holder.to_string());
        let ttl_ms = ttl.as_millis() as f64;
        self.call(move |client| async move {
            let row = client
                .query_opt(
                    "INSERT INTO leases AS l (key, holder, token, expires_at) \
                     VALUES ($1, $2, 1, clock_timestamp() + $3::float8 * interval '1 millisecond') \
                     ON CONFLICT (key) DO UPDATE SET \
                       token = CASE WHEN l.holder = EXCLUDED.holder THEN l.token ELSE l.token + 1 END, \
                       holder = EXCLUDED.holder, expires_at = EXCLUDED.expires_at \
                     WHERE l.holder = EXCLUDED.holder OR l.expires_at <= clock_timestamp() \
                     RETURNING token",
                    &[&name, &holder, &ttl_ms],
                )
                .await?;
            Ok(row.map(|r| r.get::<_, i64>(0) as u64))
        })
    }

    fn get_many(&self, table: Table, keys: &[String]) -> Result<Vec<Option<Vec<u8>>>, StoreError> {
        if matches!(table, Table::Counters | Table::Leases) {
            return keys.iter().map(|k| self.get(table, k)).collect();
        }
        let wanted = keys.to_vec();
        let found = self.call(move |client| async move {
            let sql = format!(
                "SELECT key, body::text FROM {} WHERE key = ANY($1)",
                table.name()
            );
            let rows = client.query(&sql, &[&wanted]).await?;
            Ok(rows
                .iter()
                .map(|r| (r.get::<_, String>(0), r.get::<_, String>(1).into_bytes()))
                .collect::<std::collections::HashMap<_, _>>())
        })?;
        Ok(keys.iter().map(|k| found.get(k).cloned()).collect())
    }

    fn lock(&self, name: &str) -> Result<LockGuard, StoreError> {
        // an advisory lock held by one pooled connection, released by it (or by its death)
        let key = name.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
        }) as i64;
        // the server gives up waiting before this call's own timeout would abandon the query
        // (an abandoned wait could take the lock on a connection gone back to the pool)
        let client = self.call(move |client| async move {
            client
                .batch_execute(&format!(
                    "SET lock_timeout = '20s'; SELECT pg_advisory_lock({key}); RESET lock_timeout"
                ))
                .await?;
            Ok(client)
        })?;
        let handle = self
            .runtime
            .as_ref()
            .expect("runtime lives until drop")
            .handle()
            .clone();
        Ok(LockGuard(Some(Box::new(AdvisoryLock {
            client: Some(client),
            key,
            handle,
        }))))
    }

    fn desired_after(
        &self,
        after: u64,
        limit: usize,
    ) -> Result<Option<Vec<DesiredChange>>, StoreError> {
        let after = after.min(i64::MAX as u64) as i64;
        let limit = limit.min(i64::MAX as usize) as i64;
        self.call(move |client| async move {
            let rows = client
                .query(
                    "SELECT change, key, body::text FROM desired WHERE change > $1 \
                     ORDER BY change LIMIT $2",
                    &[&after, &limit],
                )
                .await?;
            Ok(Some(
                rows.iter()
                    .map(|r| {
                        (
                            r.get::<_, i64>(0) as u64,
                            r.get::<_, String>(1),
                            r.get::<_, String>(2).into_bytes(),
                        )
                    })
                    .collect(),
            ))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_escape_like_wildcards() {
        assert_eq!(like_prefix("dev-1/"), "dev-1/%");
        assert_eq!(like_prefix("a_b%c\\"), "a\\_b\\%c\\\\%");
        assert_eq!(like_prefix(""), "%");
    }

    #[test]
    fn a_batch_keeps_the_last_write_of_each_key() {
        let plan = Plan::of(vec![
            Write::Put(Table::Devices, "a".into(), b"1".to_vec()),
            Write::Delete(Table::Devices, "a".into()),
            Write::Put(Table::Devices, "b".into(), b"2".to_vec()),
            Write::Put(Table::Devices, "b".into(), b"3".to_vec()),
            Write::Put(Table::Counters, "c".into(), 7u64.to_le_bytes().to_vec()),
        ])
        .unwrap();
        assert_eq!(plan.deletes["devices"], vec!["a".to_string()]);
        assert_eq!(plan.puts["devices"].1, vec!["b".to_string()]);
        assert_eq!(plan.puts["devices"].2, vec!["3".to_string()]);
        assert_eq!(plan.puts["counters"].2, vec!["7".to_string()]);
    }
}
