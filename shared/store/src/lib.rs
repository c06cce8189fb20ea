//! The data service's store: one interface, two backends with the same
//! semantics (the same conflicts, transactions, ordering and paging).
//!
//! - [`Store`] is the typed interface the functions use: create, get,
//!   update and delete with optimistic concurrency (a version per object),
//!   listings by the keys each object exposes, and all-or-nothing transactions.
//! - Backends implement the raw layer in [`item`]: SQLite ([`sqlite`]), the
//!   embedded default, now; DynamoDB next.

pub mod conformance;
pub mod dynamodb;
pub mod item;
pub mod primitives;
pub mod sqlite;

use stratus_model::{Id, Object};
use uuid::Uuid;

pub use item::{Condition, Index, Item, Page, Write};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A write's condition did not hold: the object exists when it must not,
    /// is missing, or has moved on from the expected version.
    #[error("conflict on {kind} {id}: expected {expected}, found {}", found.map(|v| format!("version {v}")).unwrap_or_else(|| "nothing".into()))]
    Conflict {
        kind: &'static str,
        id: Uuid,
        expected: Condition,
        found: Option<u64>,
    },
    /// A stored document does not decode as its type.
    #[error("{kind} {id} does not decode: {error}")]
    Decode {
        kind: &'static str,
        id: Uuid,
        error: String,
    },
    /// An object the operation needs does not exist.
    #[error("{kind} {id} does not exist")]
    NotFound { kind: &'static str, id: Uuid },
    /// The request cannot be met as asked.
    #[error("{0}")]
    Invalid(String),
    /// No address, capacity or similar resource is left.
    #[error("{0}")]
    Exhausted(String),
    /// The table is missing.
    #[error("table {table} is missing: {how}")]
    MissingTable { table: String, how: String },
    #[error("store: {0}")]
    Backend(String),
}

impl StoreError {
    /// Whether trying again (after re-reading) may succeed.
    pub fn is_conflict(&self) -> bool {
        matches!(self, StoreError::Conflict { .. })
    }
}

pub type Result<T> = std::result::Result<T, StoreError>;

/// Why [`Store::secret_box`] has no box.
#[derive(Debug, thiserror::Error)]
pub enum SecretBoxError {
    #[error("the secret key: {0}")]
    Key(stratus_secrets::SecretError),
    #[error("counting sealed secrets: {0}")]
    Store(StoreError),
}

/// An object and the version it was read or written at.
#[derive(Debug, Clone, PartialEq)]
pub struct Versioned<T> {
    pub value: T,
    pub version: u64,
}

/// A window's hits so far, this one included, and when the window ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hits {
    pub count: u64,
    pub ends: chrono::DateTime<chrono::Utc>,
}

/// How [`Store::page`] found where its page starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PagePath {
    /// Page 1: from the start.
    First,
    /// After the last id of the page before, remembered when it was served.
    Cursor,
    /// A keys-only skip to the page's position (a cold random jump).
    Skip,
}

/// A CloudStack page: its items and `count`, the number of all matches.
#[derive(Debug, Clone, PartialEq)]
pub struct ListPage<T> {
    pub items: Vec<Versioned<T>>,
    pub count: u64,
    pub path: PagePath,
}

type CursorKey = (&'static str, Index, usize, u64);

/// Where pages start, remembered for sequential walks (`cs` walks 1, 2, 3 …).
#[derive(Default)]
struct Cursors {
    map: std::sync::Mutex<std::collections::HashMap<CursorKey, (Uuid, std::time::Instant)>>,
}

impl Cursors {
    const TTL: std::time::Duration = std::time::Duration::from_secs(60);
    const MAX: usize = 4096;

    fn get(&self, key: &CursorKey) -> Option<Uuid> {
        let map = self.map.lock().ok()?;
        map.get(key)
            .filter(|(_, at)| at.elapsed() < Self::TTL)
            .map(|(id, _)| *id)
    }

    fn put(&self, key: CursorKey, id: Uuid) {
        if let Ok(mut map) = self.map.lock() {
            if map.len() >= Self::MAX {
                map.retain(|_, (_, at)| at.elapsed() < Self::TTL);
                if map.len() >= Self::MAX {
                    map.clear();
                }
            }
            map.insert(key, (id, std::time::Instant::now()));
        }
    }
}

pub enum Backend {
    Sqlite(sqlite::SqliteStore),
    DynamoDb(dynamodb::DynamoStore),
}

/// The typed store.
pub struct Store {
    backend: Backend,
    cursors: Cursors,
}

fn to_item<T: Object>(value: &T, version: u64) -> Item {
    Item {
        kind: T::KIND,
        id: value.id(),
        version,
        keys: value.keys(),
        doc: serde_json::to_string(value).expect("objects serialise"),
    }
}

fn decode_page<T: Object>(page: Page<Item>) -> Result<Page<Versioned<T>>> {
    Ok(Page {
        items: page
            .items
            .into_iter()
            .map(from_item)
            .collect::<Result<_>>()?,
        next: page.next,
    })
}

fn from_item<T: Object>(item: Item) -> Result<Versioned<T>> {
    let value = serde_json::from_str(&item.doc).map_err(|e| StoreError::Decode {
        kind: item.kind,
        id: item.id,
        error: e.to_string(),
    })?;
    Ok(Versioned {
        value,
        version: item.version,
    })
}

impl Store {
    pub fn new(backend: Backend) -> Self {
        Self {
            backend,
            cursors: Cursors::default(),
        }
    }

    /// Counts one hit on the fixed window named `key`, atomically, for
    /// every process sharing the store (a rate limit's counter): if the
    /// window ended before `now` (or never began), a new one begins at `now`
    /// lasting `window`, holding this hit; otherwise the hit is added to it.
    /// One write, never a read-then-write race. A key holds one window at a
    /// time, reset in place, so the windows of a key take no more room over time.
    pub async fn hit(
        &self,
        key: &str,
        now: chrono::DateTime<chrono::Utc>,
        window: std::time::Duration,
    ) -> Result<Hits> {
        let now_ms = now.timestamp_millis();
        let window_ms = i64::try_from(window.as_millis()).unwrap_or(i64::MAX / 4);
        let (count, ends_ms) = match &self.backend {
            Backend::Sqlite(s) => s.hit(key.to_string(), now_ms, window_ms).await?,
            Backend::DynamoDb(d) => d.hit(key, now_ms, window_ms).await?,
        };
        Ok(Hits {
            count,
            ends: chrono::DateTime::from_timestamp_millis(ends_ms).unwrap_or(now),
        })
    }

    /// How many objects of type `T` the index holds (a counter read, no scan).
    pub async fn count<T: Object>(&self, index: &Index) -> Result<u64> {
        let counter = index.counter(T::KIND);
        match &self.backend {
            Backend::Sqlite(s) => s.count(counter).await,
            Backend::DynamoDb(d) => d.count(counter).await,
        }
    }

    /// CloudStack's `page` (1-based) of `pagesize` objects by `index`, in id
    /// order, with `count`. A sequential walk reads one page per call (the
    /// cursor of page N+1 is remembered when page N is served); a cold jump to
    /// page N skips (N-1) x pagesize keys without reading their documents.
    pub async fn page<T: Object>(
        &self,
        index: &Index,
        page: u64,
        pagesize: usize,
    ) -> Result<ListPage<T>> {
        if page == 0 || pagesize == 0 {
            return Err(StoreError::Invalid(format!(
                "page {page} of size {pagesize}: both start at 1"
            )));
        }
        let count = self.count::<T>(index).await?;
        let (after, path) = if page == 1 {
            (None, PagePath::First)
        } else if let Some(cursor) = self.cursors.get(&(T::KIND, index.clone(), pagesize, page)) {
            (Some(cursor), PagePath::Cursor)
        } else {
            let position = (page - 1) * pagesize as u64 - 1;
            let id = match &self.backend {
                Backend::Sqlite(s) => s.id_at(T::KIND, index, position).await?,
                Backend::DynamoDb(d) => d.id_at(T::KIND, index, position).await?,
            };
            match id {
                Some(id) => (Some(id), PagePath::Skip),
                None => {
                    return Ok(ListPage {
                        items: Vec::new(),
                        count,
                        path: PagePath::Skip,
                    });
                }
            }
        };
        let listed = self.list::<T>(index, after, pagesize).await?;
        if let (Some(last), Some(_)) = (listed.items.last(), listed.next) {
            self.cursors.put(
                (T::KIND, index.clone(), pagesize, page + 1),
                last.value.id(),
            );
        }
        Ok(ListPage {
            items: listed.items,
            count,
            path,
        })
    }

    /// Opens the store the configuration selects (`sqlite:PATH` or `dynamodb:URL`),
    /// creating the SQLite table if needed; a missing DynamoDB table is reported on first use.
    pub async fn open(
        selection: &stratus_contracts::config::StoreSelection,
        prefix: &str,
    ) -> Result<Self> {
        use stratus_contracts::config::StoreSelection;
        Ok(match selection {
            StoreSelection::Sqlite(path) => {
                Self::new(Backend::Sqlite(sqlite::SqliteStore::open(path, prefix)?))
            }
            StoreSelection::DynamoDb(url) => Self::new(Backend::DynamoDb(
                dynamodb::DynamoStore::connect(url, prefix, Default::default()).await?,
            )),
        })
    }

    /// After a write that replaced a secret in the clear (sealing a store
    /// from before): SQLite checkpoints and truncates its WAL; DynamoDB keeps
    /// no old versions, so there is nothing to do.
    pub async fn checkpoint(&self) -> Result<()> {
        match &self.backend {
            Backend::Sqlite(s) => s.checkpoint().await,
            Backend::DynamoDb(_) => Ok(()),
        }
    }

    /// The box that opens the secrets this store holds, its key from
    /// `source` (`STRATUS_SECRET_KEY`), loaded once per process. A missing
    /// key file is made only while the store holds no sealed secret: with
    /// sealed secrets present, a new key would open none of them, so that is
    /// an error naming the file. (A store from before sealing holds only
    /// plain-text keys: it gets its key file here, and the bootstrap seals them.)
    pub async fn secret_box(
        &self,
        source: &stratus_contracts::config::SecretKeySource,
    ) -> std::result::Result<stratus_model::SecretBox, SecretBoxError> {
        let no_sealed = !self
            .walk::<stratus_model::ApiKey>(&Index::All)
            .await
            .map_err(SecretBoxError::Store)?
            .iter()
            .any(|k| k.value.secret_key.is_sealed());
        let provider = stratus_secrets::provider(source, no_sealed);
        stratus_model::SecretBox::load(&*provider)
            .await
            .map_err(SecretBoxError::Key)
    }

    async fn get_item(&self, kind: &'static str, id: Uuid) -> Result<Option<Item>> {
        match &self.backend {
            Backend::Sqlite(s) => s.get(kind, id).await,
            Backend::DynamoDb(d) => d.get(kind, id).await,
        }
    }

    pub(crate) async fn write(&self, writes: Vec<Write>) -> Result<()> {
        // Every write of the store passes here: with RUST_LOG=stratus_store=debug
        // a flow's transactions can be counted (the deploy path's report does).
        if tracing::enabled!(tracing::Level::DEBUG) {
            let kinds: Vec<&str> = writes.iter().map(|w| w.target().0).collect();
            tracing::debug!(writes = kinds.len(), kinds = ?kinds, "store transaction");
        }
        // One write per item, as DynamoDB requires, so that both backends accept the same transactions.
        let mut targets = std::collections::HashSet::new();
        for w in &writes {
            let (kind, id, _) = w.target();
            if !targets.insert((kind, id)) {
                return Err(StoreError::Invalid(format!(
                    "a transaction may write {kind} {id} only once"
                )));
            }
        }
        match &self.backend {
            Backend::Sqlite(s) => s.transact(writes).await,
            Backend::DynamoDb(d) => d.transact(writes).await,
        }
    }

    /// Like [`Store::list`], for callers that only look for candidates and decide
    /// with conditional writes (on DynamoDB the index may lag).
    pub(crate) async fn candidates<T: Object>(
        &self,
        index: &Index,
        after: Option<Uuid>,
        limit: usize,
    ) -> Result<Page<Versioned<T>>> {
        let page = match &self.backend {
            Backend::Sqlite(s) => s.query(T::KIND, index, after, limit).await?,
            Backend::DynamoDb(d) => d.candidates(T::KIND, index, after, limit).await?,
        };
        decode_page(page)
    }

    pub async fn get<T: Object>(&self, id: Id<T>) -> Result<Option<Versioned<T>>> {
        self.get_item(T::KIND, id.uuid())
            .await?
            .map(from_item)
            .transpose()
    }

    /// Creates `value`; a conflict if its id is taken.
    pub async fn create<T: Object>(&self, value: &T) -> Result<Versioned<T>> {
        let mut tx = Transaction::new();
        tx.create(value);
        self.transact(tx).await?;
        Ok(Versioned {
            value: value.clone(),
            version: 1,
        })
    }

    /// Writes `v.value` over version `v.version`; a conflict if it has moved on.
    pub async fn update<T: Object>(&self, v: &Versioned<T>) -> Result<Versioned<T>> {
        let mut tx = Transaction::new();
        tx.update(v);
        self.transact(tx).await?;
        Ok(Versioned {
            value: v.value.clone(),
            version: v.version + 1,
        })
    }

    /// Deletes the object at version `v.version`; a conflict if it has moved on.
    pub async fn delete<T: Object>(&self, v: &Versioned<T>) -> Result<()> {
        let mut tx = Transaction::new();
        tx.delete(v);
        self.transact(tx).await
    }

    /// One page of objects of type `T` by `index`, in id order, after `after`.
    pub async fn list<T: Object>(
        &self,
        index: &Index,
        after: Option<Uuid>,
        limit: usize,
    ) -> Result<Page<Versioned<T>>> {
        let page = match &self.backend {
            Backend::Sqlite(s) => s.query(T::KIND, index, after, limit).await?,
            Backend::DynamoDb(d) => d.query(T::KIND, index, after, limit).await?,
        };
        decode_page(page)
    }

    /// Every object of type `T` by `index`, in id order, read a page of 500 at a time.
    pub async fn walk<T: Object>(&self, index: &Index) -> Result<Vec<Versioned<T>>> {
        let mut out = Vec::new();
        let mut after = None;
        loop {
            let page = self.list::<T>(index, after, 500).await?;
            out.extend(page.items);
            match page.next {
                Some(n) => after = Some(n),
                None => return Ok(out),
            }
        }
    }

    /// Applies every write or none.
    pub async fn transact(&self, tx: Transaction) -> Result<()> {
        self.write(tx.writes).await
    }

    /// Loads objects that the store does not hold yet, in bulk: an import or a
    /// benchmark's data set. On DynamoDB this skips transactions and
    /// conditions (see `DynamoStore::import`); on SQLite it is transactions
    /// of 500 creates. Live writes go through `transact`.
    pub async fn import<T: Object>(&self, objects: &[T]) -> Result<()> {
        match &self.backend {
            Backend::DynamoDb(d) => {
                let items: Vec<Item> = objects.iter().map(|o| to_item(o, 1)).collect();
                d.import(&items).await
            }
            Backend::Sqlite(_) => {
                for chunk in objects.chunks(500) {
                    let mut tx = Transaction::new();
                    for o in chunk {
                        tx.create(o);
                    }
                    self.transact(tx).await?;
                }
                Ok(())
            }
        }
    }
}

/// Writes applied together, all or nothing.
#[derive(Default)]
pub struct Transaction {
    writes: Vec<Write>,
}

impl Transaction {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn create<T: Object>(&mut self, value: &T) -> &mut Self {
        self.writes.push(Write::Put {
            item: to_item(value, 1),
            condition: Condition::Absent,
        });
        self
    }

    pub fn update<T: Object>(&mut self, v: &Versioned<T>) -> &mut Self {
        self.writes.push(Write::Put {
            item: to_item(&v.value, v.version + 1),
            condition: Condition::Version(v.version),
        });
        self
    }

    pub fn delete<T: Object>(&mut self, v: &Versioned<T>) -> &mut Self {
        self.writes.push(Write::Delete {
            kind: T::KIND,
            id: v.value.id(),
            condition: Condition::Version(v.version),
        });
        self
    }

    /// Requires `id` to be at `version` without writing it.
    pub fn check<T: Object>(&mut self, id: Id<T>, version: u64) -> &mut Self {
        self.writes.push(Write::Check {
            kind: T::KIND,
            id: id.uuid(),
            condition: Condition::Version(version),
        });
        self
    }

    /// Requires `id` to be absent.
    pub fn check_absent<T: Object>(&mut self, id: Id<T>) -> &mut Self {
        self.writes.push(Write::Check {
            kind: T::KIND,
            id: id.uuid(),
            condition: Condition::Absent,
        });
        self
    }

    /// Adds `other`'s writes to this transaction's.
    pub fn extend(&mut self, other: Transaction) -> &mut Self {
        self.writes.extend(other.writes);
        self
    }

    pub fn len(&self) -> usize {
        self.writes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.writes.is_empty()
    }
}
