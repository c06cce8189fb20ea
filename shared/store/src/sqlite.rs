//! The embedded backend: one SQLite file shared by every function process.
//!
//! - WAL with `synchronous=NORMAL`: a committed transaction survives a crash of
//!   any process; after a power loss or an OS crash the last transactions
//!   before it may be rolled back, never half-applied (the database stays
//!   consistent).
//! - Safe for many processes: every write transaction is `BEGIN IMMEDIATE` (it
//!   takes the write lock up front, so two writers never deadlock upgrading a
//!   read lock), and a busy handler waits in sub-millisecond steps with jitter.
//! - Nothing but SQL runs inside a transaction: no I/O, no awaiting.
//! - Two connections per store: writes run on the blocking pool (a write may
//!   wait for another process's write lock); reads run in place on their own
//!   connection, since a WAL read takes microseconds and never waits for a
//!   writer. A thread hop per read cost more than the read.
//!
//! One table holds every kind: `(kind, id)` is the key; `account`, `zone`,
//! `host`, `network` and `state` are indexed together with `kind` and `id`, so
//! a listing by any of them is an index range scan in id order.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};
use stratus_model::Keys;
use uuid::Uuid;

use crate::item::{Condition, CounterKey, Index, Item, Page, Write, counter_deltas};
use crate::{Result, StoreError};

/// How long a busy handler keeps waiting for the write lock, in all.
const BUSY_LIMIT: Duration = Duration::from_secs(10);

pub struct SqliteStore {
    conn: Arc<Mutex<Connection>>,
    reader: Mutex<Connection>,
    table: String,
    // Last, so that it is dropped after the connections are closed.
    scratch: Option<ScratchDir>,
}

/// The directory of a scratch store (`SqliteStore::open_scratch`), removed
/// with the store.
struct ScratchDir(std::path::PathBuf);

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn backend(e: impl std::fmt::Display) -> StoreError {
    StoreError::Backend(e.to_string())
}

/// Waits for the lock in sub-millisecond steps with jitter (50-500 µs).
fn busy(attempt: i32) -> bool {
    // The mean wait is 275 µs; give up after about BUSY_LIMIT.
    if attempt as u128 * 275 > BUSY_LIMIT.as_micros() {
        return false;
    }
    std::thread::sleep(Duration::from_micros(50 + rand::random::<u64>() % 450));
    true
}

fn connect(path: &Path) -> Result<Connection> {
    let mut conn = Connection::open(path)
        .map_err(|e| StoreError::Backend(format!("opening {}: {e}", path.display())))?;
    conn.busy_handler(Some(busy)).map_err(backend)?;
    conn.pragma_update(None, "journal_mode", "WAL")
        .map_err(backend)?;
    conn.pragma_update(None, "synchronous", "NORMAL")
        .map_err(backend)?;
    // Content a write replaces or deletes is zeroed in the b-tree pages it
    // rewrites anyway (no extra I/O): a replaced value does not linger.
    conn.pragma_update(None, "secure_delete", "FAST")
        .map_err(backend)?;
    // Every statement is prepared once per connection (parsing was a quarter
    // of a point read's CPU); there are a few dozen distinct ones.
    conn.set_prepared_statement_cache_capacity(64);
    // ... and stays prepared: without the query planner stability guarantee,
    // SQLite (built with STAT4) re-prepares a cached statement whenever a
    // rebound `LIMIT ?` or range parameter might change its plan, which it
    // did on every page read (`sqlite3Reprepare` was a tenth of the API's CPU).
    conn.set_db_config(
        rusqlite::config::DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG,
        true,
    )
    .map_err(backend)?;
    Ok(conn)
}

impl SqliteStore {
    /// A store in a fresh directory of the system's temporary directory,
    /// removed, database and all, when the store is dropped: for tests and
    /// benchmarks, which would otherwise leave a file behind on every run.
    pub fn open_scratch(prefix: &str) -> Result<Self> {
        let dir = std::env::temp_dir().join(format!("stratus-scratch-{}", Uuid::new_v4().simple()));
        let mut store = Self::open(&dir.join("store.db"), prefix)?;
        store.scratch = Some(ScratchDir(dir));
        Ok(store)
    }

    /// Opens (and creates, if needed) the store at `path`, its table named `<prefix>items`.
    /// Only its owner may read it: a directory made for it is 0700; the
    /// database is made (or tightened to) 0600 before SQLite opens it, so
    /// the `-wal` and `-shm` files SQLite makes with its mode are 0600 too,
    /// and existing ones are tightened.
    pub fn open(path: &Path, prefix: &str) -> Result<Self> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            use std::os::unix::fs::DirBuilderExt;
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(stratus_secrets::private::DIR_MODE)
                .create(dir)
                .map_err(|e| StoreError::Backend(format!("creating {}: {e}", dir.display())))?;
        }
        let private = |p: &Path, make: bool| {
            if make {
                stratus_secrets::private::file(p)
            } else {
                stratus_secrets::private::restrict(p, stratus_secrets::private::FILE_MODE)
            }
            .map_err(|e| StoreError::Backend(format!("making {} private: {e}", p.display())))
        };
        private(path, true)?;
        for suffix in ["-wal", "-shm", "-journal"] {
            let mut side = path.as_os_str().to_owned();
            side.push(suffix);
            private(Path::new(&side), false)?;
        }
        let conn = connect(path)?;
        let table = format!("{prefix}items");
        if !table.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(StoreError::Backend(format!(
                "table prefix {prefix:?} may hold only letters, digits and _"
            )));
        }
        let mut ddl = format!(
            "CREATE TABLE IF NOT EXISTS {table} (
                kind TEXT NOT NULL, id TEXT NOT NULL, version INTEGER NOT NULL,
                account TEXT, zone TEXT, host TEXT, network TEXT, state TEXT,
                doc TEXT NOT NULL,
                PRIMARY KEY (kind, id)) WITHOUT ROWID;"
        );
        ddl.push_str(&format!(
            "CREATE TABLE IF NOT EXISTS {table}_counters (kind TEXT NOT NULL, idx TEXT NOT NULL, value TEXT NOT NULL,
                n INTEGER NOT NULL, PRIMARY KEY (kind, idx, value)) WITHOUT ROWID;"
        ));
        // Fixed windows of hits (`Store::hit`): one row per key, reset in place.
        ddl.push_str(&format!(
            "CREATE TABLE IF NOT EXISTS {table}_windows (key TEXT NOT NULL PRIMARY KEY,
                n INTEGER NOT NULL, ends INTEGER NOT NULL) WITHOUT ROWID;"
        ));
        for col in ["account", "zone", "host", "network", "state"] {
            ddl.push_str(&format!(
                "CREATE INDEX IF NOT EXISTS {table}_by_{col} ON {table} (kind, {col}, id);"
            ));
        }
        conn.execute_batch(&format!("BEGIN IMMEDIATE; {ddl} COMMIT;"))
            .map_err(backend)?;
        Ok(Self {
            conn: Arc::new(Mutex::new(conn)),
            reader: Mutex::new(connect(path)?),
            table,
            scratch: None,
        })
    }

    /// Copies the WAL into the database and truncates it, so what writes
    /// replaced is gone from both files (with `secure_delete`). Readers in
    /// other processes may keep part of it for now; that is not an error.
    pub async fn checkpoint(&self) -> Result<()> {
        self.blocking(|conn, _| {
            conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
                .map_err(backend)
        })
        .await
    }

    /// Runs a read in place, on the read connection.
    fn read<R>(&self, f: impl FnOnce(&mut Connection, &str) -> Result<R>) -> Result<R> {
        let mut conn = self
            .reader
            .lock()
            .map_err(|_| StoreError::Backend("the read connection's lock is poisoned".into()))?;
        f(&mut conn, &self.table)
    }

    async fn blocking<R: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection, &str) -> Result<R> + Send + 'static,
    ) -> Result<R> {
        let conn = self.conn.clone();
        let table = self.table.clone();
        tokio::task::spawn_blocking(move || {
            let mut conn = conn
                .lock()
                .map_err(|_| StoreError::Backend("the connection's lock is poisoned".into()))?;
            f(&mut conn, &table)
        })
        .await
        .map_err(backend)?
    }

    pub async fn get(&self, kind: &'static str, id: Uuid) -> Result<Option<Item>> {
        self.read(move |conn, table| {
            conn.prepare_cached(&format!("SELECT version, account, zone, host, network, state, doc FROM {table} WHERE kind = ?1 AND id = ?2"))
                .map_err(backend)?
                .query_row(params![kind, id.to_string()], |r| row_item(kind, id, r))
            .optional()
            .map_err(backend)
        })
    }

    /// Applies every write or none, in one `BEGIN IMMEDIATE` transaction.
    pub async fn transact(&self, writes: Vec<Write>) -> Result<()> {
        self.blocking(move |conn, table| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(backend)?;
            let mut deltas = std::collections::BTreeMap::new();
            for w in &writes {
                let (kind, id, condition) = w.target();
                let current: Option<Item> = tx
                    .prepare_cached(&format!("SELECT version, account, zone, host, network, state, doc FROM {table} WHERE kind = ?1 AND id = ?2"))
                    .map_err(backend)?
                    .query_row(params![kind, id.to_string()], |r| row_item(kind, id, r))
                    .optional()
                    .map_err(backend)?;
                let found = current.as_ref().map(|i| i.version);
                match w {
                    Write::Put { item, .. } => counter_deltas(kind, current.as_ref().map(|i| &i.keys), Some(&item.keys), &mut deltas),
                    Write::Delete { .. } => counter_deltas(kind, current.as_ref().map(|i| &i.keys), None, &mut deltas),
                    Write::Check { .. } => {}
                }
                let holds = match condition {
                    Condition::Any => true,
                    Condition::Absent => found.is_none(),
                    Condition::Version(v) => found == Some(v),
                };
                if !holds {
                    // Dropping the transaction rolls it back.
                    return Err(StoreError::Conflict { kind, id, expected: condition, found });
                }
                match w {
                    Write::Put { item, .. } => {
                        let k = &item.keys;
                        tx.prepare_cached(
                            &format!(
                                "INSERT INTO {table} (kind, id, version, account, zone, host, network, state, doc)
                                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
                                 ON CONFLICT (kind, id) DO UPDATE SET version = excluded.version, account = excluded.account,
                                   zone = excluded.zone, host = excluded.host, network = excluded.network,
                                   state = excluded.state, doc = excluded.doc"
                            ),
                        )
                        .map_err(backend)?
                        .execute(params![
                                item.kind,
                                item.id.to_string(),
                                item.version as i64,
                                k.account.map(|u| u.to_string()),
                                k.zone.map(|u| u.to_string()),
                                k.host.map(|u| u.to_string()),
                                k.network.map(|u| u.to_string()),
                                k.state,
                                item.doc
                            ])
                        .map_err(backend)?;
                    }
                    Write::Delete { kind, id, .. } => {
                        tx.prepare_cached(&format!("DELETE FROM {table} WHERE kind = ?1 AND id = ?2"))
                            .map_err(backend)?
                            .execute(params![kind, id.to_string()])
                            .map_err(backend)?;
                    }
                    Write::Check { .. } => {}
                }
            }
            for (c, delta) in &deltas {
                tx.prepare_cached(&format!(
                    "INSERT INTO {table}_counters (kind, idx, value, n) VALUES (?1, ?2, ?3, ?4)
                     ON CONFLICT (kind, idx, value) DO UPDATE SET n = n + excluded.n"
                ))
                .map_err(backend)?
                .execute(params![c.kind, c.index, c.value, delta])
                .map_err(backend)?;
            }
            tx.commit().map_err(backend)
        })
        .await
    }

    /// One hit on `key`'s window, in one statement: a window that ended
    /// before `now_ms` (or none) begins again at `now_ms` with this hit;
    /// otherwise the hit is added to it. Returns the hits and the window's end.
    pub async fn hit(&self, key: String, now_ms: i64, window_ms: i64) -> Result<(u64, i64)> {
        self.blocking(move |conn, table| {
            conn.prepare_cached(&format!(
                "INSERT INTO {table}_windows (key, n, ends) VALUES (?1, 1, ?2 + ?3)
                 ON CONFLICT (key) DO UPDATE SET
                   n = CASE WHEN ends < ?2 THEN 1 ELSE n + 1 END,
                   ends = CASE WHEN ends < ?2 THEN ?2 + ?3 ELSE ends END
                 RETURNING n, ends"
            ))
            .map_err(backend)?
            .query_row(params![key, now_ms, window_ms], |r| {
                Ok((r.get::<_, i64>(0)? as u64, r.get::<_, i64>(1)?))
            })
            .map_err(backend)
        })
        .await
    }

    /// One page of `kind` by `index` in id order, after `after`.
    pub async fn query(
        &self,
        kind: &'static str,
        index: &Index,
        after: Option<Uuid>,
        limit: usize,
    ) -> Result<Page<Item>> {
        let (column, value) = index_filter(index);
        self.read(move |conn, table| {
            let filter = column.map(|c| format!("AND {c} = ?2")).unwrap_or_default();
            let sql = format!(
                "SELECT id, version, account, zone, host, network, state, doc FROM {table}
                 WHERE kind = ?1 {filter} AND id > ?3 ORDER BY id LIMIT ?4"
            );
            let mut stmt = conn.prepare_cached(&sql).map_err(backend)?;
            let after = after.map(|u| u.to_string()).unwrap_or_default();
            let fetch = (limit + 1) as i64;
            let rows = stmt
                .query_map(
                    params![kind, value.unwrap_or_default(), after, fetch],
                    |r| {
                        let id: String = r.get(0)?;
                        let id = Uuid::parse_str(&id).map_err(|e| {
                            rusqlite::Error::FromSqlConversionFailure(
                                0,
                                rusqlite::types::Type::Text,
                                Box::new(e),
                            )
                        })?;
                        row_item_at(kind, id, r, 1)
                    },
                )
                .map_err(backend)?;
            let mut items = rows
                .collect::<std::result::Result<Vec<Item>, _>>()
                .map_err(backend)?;
            let next = if items.len() > limit {
                items.truncate(limit);
                items.last().map(|i| i.id)
            } else {
                None
            };
            Ok(Page { items, next })
        })
    }
}

impl SqliteStore {
    /// How many items a counter holds (a single-row read).
    pub async fn count(&self, counter: CounterKey) -> Result<u64> {
        self.read(move |conn, table| {
            let n: Option<i64> = conn
                .prepare_cached(&format!(
                    "SELECT n FROM {table}_counters WHERE kind = ?1 AND idx = ?2 AND value = ?3"
                ))
                .map_err(backend)?
                .query_row(params![counter.kind, counter.index, counter.value], |r| {
                    r.get(0)
                })
                .optional()
                .map_err(backend)?;
            Ok(n.unwrap_or(0).max(0) as u64)
        })
    }

    /// The id of the `position`-th (0-based) item of `kind` by `index`, in id
    /// order: an index-only scan of the covering index, reading no documents.
    pub async fn id_at(
        &self,
        kind: &'static str,
        index: &Index,
        position: u64,
    ) -> Result<Option<Uuid>> {
        let (column, value) = index_filter(index);
        self.read(move |conn, table| {
            let filter = column.map(|c| format!("AND {c} = ?2")).unwrap_or_default();
            let sql = format!(
                "SELECT id FROM {table} WHERE kind = ?1 {filter} ORDER BY id LIMIT 1 OFFSET ?3"
            );
            let id: Option<String> = conn
                .prepare_cached(&sql)
                .map_err(backend)?
                .query_row(
                    params![kind, value.unwrap_or_default(), position as i64],
                    |r| r.get(0),
                )
                .optional()
                .map_err(backend)?;
            Ok(id.and_then(|i| Uuid::parse_str(&i).ok()))
        })
    }
}

fn index_filter(index: &Index) -> (Option<&'static str>, Option<String>) {
    match index {
        Index::All => (None, None),
        Index::Account(u) => (Some("account"), Some(u.to_string())),
        Index::Zone(u) => (Some("zone"), Some(u.to_string())),
        Index::Host(u) => (Some("host"), Some(u.to_string())),
        Index::Network(u) => (Some("network"), Some(u.to_string())),
        Index::State(s) => (Some("state"), Some(s.clone())),
    }
}

fn row_item(kind: &'static str, id: Uuid, r: &rusqlite::Row<'_>) -> rusqlite::Result<Item> {
    row_item_at(kind, id, r, 0)
}

/// Reads `version, account, zone, host, network, state, doc` starting at column `at`.
fn row_item_at(
    kind: &'static str,
    id: Uuid,
    r: &rusqlite::Row<'_>,
    at: usize,
) -> rusqlite::Result<Item> {
    let uuid = |i: usize| -> rusqlite::Result<Option<Uuid>> {
        let s: Option<String> = r.get(at + i)?;
        Ok(s.and_then(|s| Uuid::parse_str(&s).ok()))
    };
    Ok(Item {
        kind,
        id,
        version: r.get::<_, i64>(at)? as u64,
        keys: Keys {
            account: uuid(1)?,
            zone: uuid(2)?,
            host: uuid(3)?,
            network: uuid(4)?,
            state: r.get(at + 5)?,
        },
        doc: r.get(at + 6)?,
    })
}
