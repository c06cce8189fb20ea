//! The DynamoDB backend (aws-sdk-dynamodb, serde_dynamo).
//!
//! ## Table design
//! One table, `<prefix>items`, on-demand billing, defined once in
//! `infra/dynamodb-table.json` (read here at compile time, and by Terraform):
//!
//! | attribute | what |
//! |---|---|
//! | `pk` (hash key) | `<kind>#<id>` |
//! | `kind`, `id` | the item's kind and id (`id` is every index's sort key) |
//! | `version` | optimistic concurrency: 1 at creation, +1 per update |
//! | `doc` | the object, a map (serde_dynamo) |
//! | `account_key`, `zone_key`, `host_key`, `network_key`, `state_key` | `<kind>#<value>`, present only when the object has that key (sparse indexes) |
//!
//! Access patterns: by id (GetItem on `pk`, consistent); all of a kind
//! (GSI `by_kind`: `kind`, `id`); by account, zone, host, network or state
//! (GSIs `by_account` … `by_state`: `<name>_key`, `id`). Every listing is one
//! index Query in id order, paged with `id > :after`, as on SQLite.
//!
//! Correctness never rests on an index: indexes are eventually consistent, so
//! they only find candidates; reads that decide go to the base table with
//! consistent reads, and claims are conditional writes (`attribute_not_exists`,
//! `version = :v`) inside TransactWriteItems. Transaction conflicts and
//! throttling are retried with jittered backoff.

use std::time::Duration;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::types::Update;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, ConditionCheck, Delete, GlobalSecondaryIndex,
    KeySchemaElement, KeyType, Projection, ProjectionType, Put, ScalarAttributeType,
    TransactWriteItem,
};
use std::collections::HashMap;
use stratus_model::{KINDS, Keys};
use uuid::Uuid;

use crate::item::{Condition, CounterKey, Index, Item, Page, Write, counter_deltas};
use crate::{Result, StoreError};

/// TransactWriteItems' limit.
pub const MAX_TRANSACTION_ITEMS: usize = 100;
/// Retries of a transient failure (transaction conflict, throttling) before giving up.
const MAX_TRANSIENT_RETRIES: u32 = 30;

/// The table's definition, `infra/dynamodb-table.json`, shaped as Terraform's
/// `aws_dynamodb_table` arguments so that Terraform reads the same file.
#[derive(Debug, serde::Deserialize)]
pub struct TableDefinition {
    pub name_suffix: String,
    pub billing_mode: String,
    pub hash_key: String,
    pub attributes: Vec<AttributeSpec>,
    pub global_secondary_indexes: Vec<IndexSpec>,
}

#[derive(Debug, serde::Deserialize)]
pub struct AttributeSpec {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: String,
}

#[derive(Debug, serde::Deserialize)]
pub struct IndexSpec {
    pub name: String,
    pub hash_key: String,
    pub range_key: String,
    pub projection_type: String,
}

/// The table definition's text, as committed.
pub const TABLE_DEFINITION: &str = include_str!("../../../infra/dynamodb-table.json");

impl TableDefinition {
    /// The committed definition. It is checked by a unit test, so this cannot fail in a build that passed its tests.
    pub fn committed() -> Result<Self> {
        serde_json::from_str(TABLE_DEFINITION)
            .map_err(|e| StoreError::Invalid(format!("infra/dynamodb-table.json: {e}")))
    }
}

/// Faults to inject, for running the conformance suite against what moto
/// never does: transaction conflicts, throttling, and stale index reads.
#[derive(Debug, Clone, Copy, Default)]
pub struct Faults {
    /// Chance that a transaction is cancelled with `TransactionConflict`.
    pub transaction_conflict: f64,
    /// Chance that a call is throttled.
    pub throttling: f64,
    /// Chance that a candidate scan misses an item (index lag).
    pub stale_index: f64,
}

impl Faults {
    fn roll(p: f64) -> bool {
        p > 0.0 && rand::random::<f64>() < p
    }
}

pub struct DynamoStore {
    client: Client,
    table: String,
    faults: Faults,
}

#[derive(Debug)]
enum Failure {
    Transient(String),
    Fatal(StoreError),
}

fn classify<E: ProvideErrorMetadata + std::fmt::Debug>(table: &str, e: &SdkError<E>) -> Failure {
    let code = e.code().unwrap_or_default();
    match code {
        "ResourceNotFoundException" => Failure::Fatal(StoreError::MissingTable {
            table: table.to_string(),
            how: "create it with stratus_store::dynamodb::DynamoStore::create_table (the local runner does at start-up)".into(),
        }),
        "ProvisionedThroughputExceededException" | "ThrottlingException" | "RequestLimitExceeded" | "InternalServerError" => {
            Failure::Transient(code.to_string())
        }
        _ => match e {
            SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) => Failure::Transient(format!("{e:?}")),
            _ => Failure::Fatal(StoreError::Backend(format!("DynamoDB: {code}: {}", e.message().unwrap_or(&format!("{e:?}"))))),
        },
    }
}

/// Runs `op` until it succeeds, fails for good, or has failed transiently
/// (transaction conflict, throttling) `MAX_TRANSIENT_RETRIES` times, backing off between tries.
/// Each try is boxed: the SDK's request futures are deep enough that, inlined
/// into a caller's future, they overflow rustc's layout query depth.
async fn retrying<T, F, Fut>(mut op: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = std::result::Result<T, Failure>>,
{
    let mut attempt = 0;
    loop {
        match Box::pin(op()).await {
            Ok(v) => return Ok(v),
            Err(Failure::Transient(why)) if attempt < MAX_TRANSIENT_RETRIES => {
                tracing::debug!(why = %why, attempt, "transient DynamoDB failure; retrying");
                attempt += 1;
                backoff(attempt).await;
            }
            Err(Failure::Transient(why)) => {
                return Err(StoreError::Backend(format!(
                    "DynamoDB: still failing after {attempt} retries: {why}"
                )));
            }
            Err(Failure::Fatal(e)) => return Err(e),
        }
    }
}

async fn backoff(attempt: u32) {
    let ceiling = 10u64.saturating_mul(1 << attempt.min(7));
    tokio::time::sleep(Duration::from_millis(1 + rand::random::<u64>() % ceiling)).await;
}

fn s(v: impl Into<String>) -> AttributeValue {
    AttributeValue::S(v.into())
}

fn static_kind(kind: &str) -> Option<&'static str> {
    KINDS.iter().find(|k| **k == kind).copied()
}

impl DynamoStore {
    /// Connects to `endpoint` (moto, or AWS's regional endpoint). Credentials and
    /// region come from the environment when set (as on Lambda), otherwise
    /// static local ones for an emulator.
    pub async fn connect(endpoint: &str, prefix: &str, faults: Faults) -> Result<Self> {
        use aws_sdk_dynamodb::config::{BehaviorVersion, Credentials, Region};
        let region = std::env::var("AWS_REGION").unwrap_or_else(|_| "us-east-1".into());
        let mut loader = aws_config::defaults(BehaviorVersion::latest())
            .region(Region::new(region))
            .endpoint_url(endpoint);
        if std::env::var_os("AWS_ACCESS_KEY_ID").is_none() {
            loader = loader.credentials_provider(Credentials::new(
                "local",
                "local",
                None,
                None,
                "stratus-local",
            ));
        }
        let config = loader.load().await;
        let table = format!("{prefix}{}", TableDefinition::committed()?.name_suffix);
        if !table
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_-.".contains(c))
        {
            return Err(StoreError::Backend(format!(
                "table prefix {prefix:?} may hold only letters, digits, _, - and ."
            )));
        }
        Ok(Self {
            client: Client::new(&config),
            table,
            faults,
        })
    }

    pub fn table(&self) -> &str {
        &self.table
    }

    /// Creates the table and its indexes from `infra/dynamodb-table.json`; safe to repeat.
    pub async fn create_table(&self) -> Result<()> {
        let def = TableDefinition::committed()?;
        let key = |name: &str, key_type: KeyType| {
            KeySchemaElement::builder()
                .attribute_name(name)
                .key_type(key_type)
                .build()
                .map_err(backend)
        };
        let mut req = self
            .client
            .create_table()
            .table_name(&self.table)
            .billing_mode(BillingMode::from(def.billing_mode.as_str()))
            .key_schema(key(&def.hash_key, KeyType::Hash)?);
        for index in &def.global_secondary_indexes {
            req = req.global_secondary_indexes(
                GlobalSecondaryIndex::builder()
                    .index_name(&index.name)
                    .key_schema(key(&index.hash_key, KeyType::Hash)?)
                    .key_schema(key(&index.range_key, KeyType::Range)?)
                    .projection(
                        Projection::builder()
                            .projection_type(ProjectionType::from(index.projection_type.as_str()))
                            .build(),
                    )
                    .build()
                    .map_err(backend)?,
            );
        }
        for a in &def.attributes {
            req = req.attribute_definitions(
                AttributeDefinition::builder()
                    .attribute_name(&a.name)
                    .attribute_type(ScalarAttributeType::from(a.kind.as_str()))
                    .build()
                    .map_err(backend)?,
            );
        }
        match req.send().await {
            Ok(_) => Ok(()),
            Err(e) if e.code() == Some("ResourceInUseException") => Ok(()),
            Err(e) => Err(StoreError::Backend(format!(
                "creating table {}: {}",
                self.table,
                e.message().unwrap_or(&format!("{e:?}"))
            ))),
        }
    }

    fn to_attributes(item: &Item) -> Result<HashMap<String, AttributeValue>> {
        let doc: serde_json::Value = serde_json::from_str(&item.doc).map_err(backend)?;
        let doc: AttributeValue = serde_dynamo::to_attribute_value(doc).map_err(backend)?;
        let mut a = HashMap::from([
            ("pk".to_string(), s(format!("{}#{}", item.kind, item.id))),
            ("kind".to_string(), s(item.kind)),
            ("id".to_string(), s(item.id.to_string())),
            (
                "version".to_string(),
                AttributeValue::N(item.version.to_string()),
            ),
            ("doc".to_string(), doc),
        ]);
        let k = &item.keys;
        let keyed = |v: &Option<String>| v.as_ref().map(|v| s(format!("{}#{v}", item.kind)));
        for (name, value) in [
            ("account_key", keyed(&k.account.map(|u| u.to_string()))),
            ("zone_key", keyed(&k.zone.map(|u| u.to_string()))),
            ("host_key", keyed(&k.host.map(|u| u.to_string()))),
            ("network_key", keyed(&k.network.map(|u| u.to_string()))),
            ("state_key", keyed(&k.state)),
        ] {
            if let Some(v) = value {
                a.insert(name.to_string(), v);
            }
        }
        Ok(a)
    }

    fn from_attributes(kind: &'static str, a: &HashMap<String, AttributeValue>) -> Result<Item> {
        let text = |name: &str| a.get(name).and_then(|v| v.as_s().ok()).cloned();
        let id_text = text("id").unwrap_or_default();
        let id = Uuid::parse_str(&id_text).map_err(|_| StoreError::Decode {
            kind,
            id: Uuid::nil(),
            error: format!("item {kind}#{id_text}: field id is not a UUID"),
        })?;
        let decode = |field: &str, why: &str| StoreError::Decode {
            kind,
            id,
            error: format!("field {field}: {why}"),
        };
        let version = a
            .get("version")
            .and_then(|v| v.as_n().ok())
            .and_then(|n| n.parse::<u64>().ok())
            .ok_or_else(|| decode("version", "missing or not a whole number"))?;
        let doc = a.get("doc").ok_or_else(|| decode("doc", "missing"))?;
        let doc: serde_json::Value = serde_dynamo::from_attribute_value(doc.clone())
            .map_err(|e| decode("doc", &e.to_string()))?;
        let key_value =
            |name: &str| text(name).and_then(|v| v.split_once('#').map(|(_, v)| v.to_string()));
        let uuid_key = |name: &str| key_value(name).and_then(|v| Uuid::parse_str(&v).ok());
        Ok(Item {
            kind,
            id,
            version,
            keys: Keys {
                account: uuid_key("account_key"),
                zone: uuid_key("zone_key"),
                host: uuid_key("host_key"),
                network: uuid_key("network_key"),
                state: key_value("state_key"),
            },
            doc: doc.to_string(),
        })
    }

    /// A consistent read by id.
    pub async fn get(&self, kind: &'static str, id: Uuid) -> Result<Option<Item>> {
        let out = retrying(|| async {
            if Faults::roll(self.faults.throttling) {
                return Err(Failure::Transient("ThrottlingException (injected)".into()));
            }
            self.client
                .get_item()
                .table_name(&self.table)
                .key("pk", s(format!("{kind}#{id}")))
                .consistent_read(true)
                .send()
                .await
                .map_err(|e| classify(&self.table, &e))
        })
        .await?;
        out.item()
            .map(|a| Self::from_attributes(kind, a))
            .transpose()
    }

    /// Applies every write or none (TransactWriteItems), with the counters the
    /// writes move. The current version and keys of each written item are read
    /// first (consistently); a write whose caller accepted any version is pinned
    /// to the version read, so that a write in between fails the transaction
    /// (and this retries it) instead of letting the counters drift.
    pub async fn transact(&self, writes: Vec<Write>) -> Result<()> {
        retrying(|| self.transact_once(&writes)).await
    }

    async fn transact_once(&self, writes: &[Write]) -> std::result::Result<(), Failure> {
        let mut items = Vec::with_capacity(writes.len());
        let mut deltas = std::collections::BTreeMap::new();
        let mut pinned = Vec::with_capacity(writes.len());
        for w in writes {
            let (kind, id, condition) = w.target();
            let current = self.get(kind, id).await.map_err(Failure::Fatal)?;
            let found = current.as_ref().map(|i| i.version);
            let holds = match condition {
                Condition::Any => true,
                Condition::Absent => found.is_none(),
                Condition::Version(v) => found == Some(v),
            };
            if !holds {
                return Err(Failure::Fatal(StoreError::Conflict {
                    kind,
                    id,
                    expected: condition,
                    found,
                }));
            }
            let effective = match (condition, found) {
                (Condition::Any, Some(v)) => Condition::Version(v),
                (Condition::Any, None) => Condition::Absent,
                (c, _) => c,
            };
            pinned.push(condition == Condition::Any);
            match w {
                Write::Put { item, .. } => counter_deltas(
                    kind,
                    current.as_ref().map(|i| &i.keys),
                    Some(&item.keys),
                    &mut deltas,
                ),
                Write::Delete { .. } => {
                    counter_deltas(kind, current.as_ref().map(|i| &i.keys), None, &mut deltas)
                }
                Write::Check { .. } => {}
            }
            let (expr, values) = match effective {
                Condition::Any => (None, None),
                Condition::Absent => (Some("attribute_not_exists(pk)".to_string()), None),
                Condition::Version(v) => (
                    Some("version = :expected".to_string()),
                    Some(HashMap::from([(
                        ":expected".to_string(),
                        AttributeValue::N(v.to_string()),
                    )])),
                ),
            };
            let key = HashMap::from([("pk".to_string(), s(format!("{kind}#{id}")))]);
            let item = match w {
                Write::Put { item, .. } => TransactWriteItem::builder()
                    .put(
                        Put::builder()
                            .table_name(&self.table)
                            .set_item(Some(Self::to_attributes(item).map_err(Failure::Fatal)?))
                            .set_condition_expression(expr)
                            .set_expression_attribute_values(values)
                            .build()
                            .map_err(|e| Failure::Fatal(backend(e)))?,
                    )
                    .build(),
                Write::Delete { .. } => TransactWriteItem::builder()
                    .delete(
                        Delete::builder()
                            .table_name(&self.table)
                            .set_key(Some(key))
                            .set_condition_expression(expr)
                            .set_expression_attribute_values(values)
                            .build()
                            .map_err(|e| Failure::Fatal(backend(e)))?,
                    )
                    .build(),
                Write::Check { .. } => TransactWriteItem::builder()
                    .condition_check(
                        ConditionCheck::builder()
                            .table_name(&self.table)
                            .set_key(Some(key))
                            .condition_expression(expr.unwrap_or_else(|| {
                                "attribute_exists(pk) OR attribute_not_exists(pk)".into()
                            }))
                            .set_expression_attribute_values(values)
                            .build()
                            .map_err(|e| Failure::Fatal(backend(e)))?,
                    )
                    .build(),
            };
            items.push(item);
        }
        for (c, delta) in &deltas {
            items.push(
                TransactWriteItem::builder()
                    .update(
                        Update::builder()
                            .table_name(&self.table)
                            .key("pk", s(counter_pk(c)))
                            .update_expression("ADD n :d")
                            .expression_attribute_values(":d", AttributeValue::N(delta.to_string()))
                            .build()
                            .map_err(|e| Failure::Fatal(backend(e)))?,
                    )
                    .build(),
            );
        }
        if items.len() > MAX_TRANSACTION_ITEMS {
            return Err(Failure::Fatal(StoreError::Invalid(format!(
                "a transaction holds at most {MAX_TRANSACTION_ITEMS} writes on DynamoDB; these {} writes and their {} counters make {}",
                writes.len(),
                deltas.len(),
                items.len()
            ))));
        }
        if Faults::roll(self.faults.transaction_conflict) {
            return Err(Failure::Transient("TransactionConflict (injected)".into()));
        }
        if Faults::roll(self.faults.throttling) {
            return Err(Failure::Transient("ThrottlingException (injected)".into()));
        }
        match self.client.transact_write_items().set_transact_items(Some(items)).send().await {
            Ok(_) => Ok(()),
            Err(e) => match e.as_service_error() {
                Some(aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError::TransactionCanceledException(c)) => {
                    let reasons: Vec<String> = c.cancellation_reasons().iter().map(|r| r.code().unwrap_or("None").to_string()).collect();
                    match reasons.iter().position(|r| r == "ConditionalCheckFailed") {
                        // A write pinned by us lost a race: read again and retry.
                        Some(i) if i < writes.len() && pinned[i] => Err(Failure::Transient("a write changed the item meanwhile".into())),
                        Some(i) if i < writes.len() => {
                            let (kind, id, expected) = writes[i].target();
                            let found = self.get(kind, id).await.map_err(Failure::Fatal)?.map(|item| item.version);
                            Err(Failure::Fatal(StoreError::Conflict { kind, id, expected, found }))
                        }
                        _ => Err(Failure::Transient(format!("transaction cancelled: {reasons:?}"))),
                    }
                }
                _ => Err(classify(&self.table, &e)),
            },
        }
    }

    /// Loads new items without transactions: BatchWriteItem, 25 at a time,
    /// then one `ADD` per counter the items move. For importing into a table
    /// that does not hold these items yet (a migration, a benchmark's data
    /// set); it checks no condition, so it is never a path for live writes.
    pub async fn import(&self, items: &[Item]) -> Result<()> {
        use aws_sdk_dynamodb::types::{PutRequest, WriteRequest};
        let mut deltas = std::collections::BTreeMap::new();
        for chunk in items.chunks(25) {
            let mut requests = Vec::with_capacity(chunk.len());
            for item in chunk {
                counter_deltas(item.kind, None, Some(&item.keys), &mut deltas);
                requests.push(
                    WriteRequest::builder()
                        .put_request(
                            PutRequest::builder()
                                .set_item(Some(Self::to_attributes(item)?))
                                .build()
                                .map_err(backend)?,
                        )
                        .build(),
                );
            }
            let mut attempt = 0;
            while !requests.is_empty() {
                let out = retrying(|| async {
                    self.client
                        .batch_write_item()
                        .request_items(&self.table, requests.clone())
                        .send()
                        .await
                        .map_err(|e| classify(&self.table, &e))
                })
                .await?;
                // What DynamoDB did not take (throttled) is sent again, after a pause.
                requests = out
                    .unprocessed_items()
                    .and_then(|u| u.get(&self.table))
                    .cloned()
                    .unwrap_or_default();
                if !requests.is_empty() {
                    attempt += 1;
                    backoff(attempt).await;
                }
            }
        }
        for (c, delta) in &deltas {
            retrying(|| async {
                self.client
                    .update_item()
                    .table_name(&self.table)
                    .key("pk", s(counter_pk(c)))
                    .update_expression("ADD n :d")
                    .expression_attribute_values(":d", AttributeValue::N(delta.to_string()))
                    .send()
                    .await
                    .map_err(|e| classify(&self.table, &e))
            })
            .await?;
        }
        Ok(())
    }

    /// One hit on `key`'s window (item `window#<key>`, outside every index):
    /// an atomic `ADD` while the window lasts; once it has ended (or for a
    /// first hit) a conditional put begins it again, and whoever loses that
    /// race adds to the window the winner began. Returns the hits and the
    /// window's end.
    pub async fn hit(&self, key: &str, now_ms: i64, window_ms: i64) -> Result<(u64, i64)> {
        let pk = format!("window#{key}");
        let number = |a: &HashMap<String, AttributeValue>, name: &str| {
            a.get(name)
                .and_then(|v| v.as_n().ok())
                .and_then(|n| n.parse::<i64>().ok())
        };
        for _ in 0..8 {
            let added = retrying(|| async {
                if Faults::roll(self.faults.throttling) {
                    return Err(Failure::Transient("ThrottlingException (injected)".into()));
                }
                match self
                    .client
                    .update_item()
                    .table_name(&self.table)
                    .key("pk", s(pk.clone()))
                    .update_expression("ADD n :one")
                    .condition_expression("ends >= :now")
                    .expression_attribute_values(":one", AttributeValue::N("1".into()))
                    .expression_attribute_values(":now", AttributeValue::N(now_ms.to_string()))
                    .return_values(aws_sdk_dynamodb::types::ReturnValue::AllNew)
                    .send()
                    .await
                {
                    Ok(out) => Ok(out
                        .attributes()
                        .and_then(|a| Some((number(a, "n")?, number(a, "ends")?)))),
                    Err(e) if e.code() == Some("ConditionalCheckFailedException") => Ok(None),
                    Err(e) => Err(classify(&self.table, &e)),
                }
            })
            .await?;
            if let Some((n, ends)) = added {
                return Ok((n.max(0) as u64, ends));
            }
            let ends = now_ms + window_ms;
            let began = retrying(|| async {
                if Faults::roll(self.faults.throttling) {
                    return Err(Failure::Transient("ThrottlingException (injected)".into()));
                }
                match self
                    .client
                    .put_item()
                    .table_name(&self.table)
                    .item("pk", s(pk.clone()))
                    .item("n", AttributeValue::N("1".into()))
                    .item("ends", AttributeValue::N(ends.to_string()))
                    .condition_expression("attribute_not_exists(pk) OR ends < :now")
                    .expression_attribute_values(":now", AttributeValue::N(now_ms.to_string()))
                    .send()
                    .await
                {
                    Ok(_) => Ok(true),
                    Err(e) if e.code() == Some("ConditionalCheckFailedException") => Ok(false),
                    Err(e) => Err(classify(&self.table, &e)),
                }
            })
            .await?;
            if began {
                return Ok((1, ends));
            }
        }
        Err(StoreError::Backend(format!(
            "DynamoDB: window {key} kept changing under 8 tries"
        )))
    }

    /// How many items a counter holds (one consistent read).
    pub async fn count(&self, counter: CounterKey) -> Result<u64> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("pk", s(counter_pk(&counter)))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| match classify(&self.table, &e) {
                Failure::Fatal(e) => e,
                Failure::Transient(why) => StoreError::Backend(why),
            })?;
        let n = out
            .item()
            .and_then(|a| a.get("n"))
            .and_then(|v| v.as_n().ok())
            .and_then(|n| n.parse::<i64>().ok())
            .unwrap_or(0);
        Ok(n.max(0) as u64)
    }

    /// The id of the `position`-th (0-based) item of `kind` by `index`, in id
    /// order: a Query that returns ids only, skipping `position` items.
    pub async fn id_at(
        &self,
        kind: &'static str,
        index: &Index,
        position: u64,
    ) -> Result<Option<Uuid>> {
        let (index_name, attribute, value) = index_query(kind, index);
        let mut skipped = 0u64;
        let mut start: Option<HashMap<String, AttributeValue>> = None;
        loop {
            let out = self
                .client
                .query()
                .table_name(&self.table)
                .index_name(index_name)
                .key_condition_expression("#k = :k")
                .expression_attribute_names("#k", attribute)
                .expression_attribute_names("#id", "id")
                .expression_attribute_values(":k", s(value.clone()))
                .projection_expression("#id")
                .set_exclusive_start_key(start.clone())
                .send()
                .await
                .map_err(|e| match classify(&self.table, &e) {
                    Failure::Fatal(e) => e,
                    Failure::Transient(why) => StoreError::Backend(why),
                })?;
            let page = out.items();
            if skipped + page.len() as u64 > position {
                let id = page[(position - skipped) as usize]
                    .get("id")
                    .and_then(|v| v.as_s().ok())
                    .and_then(|i| Uuid::parse_str(i).ok());
                return Ok(id);
            }
            skipped += page.len() as u64;
            start = out.last_evaluated_key().cloned();
            if start.is_none() {
                return Ok(None);
            }
        }
    }

    /// One page of `kind` by `index`, in id order, after `after` (an index Query).
    pub async fn query(
        &self,
        kind: &'static str,
        index: &Index,
        after: Option<Uuid>,
        limit: usize,
    ) -> Result<Page<Item>> {
        self.query_inner(kind, index, after, limit, false).await
    }

    /// Like `query`, for callers that only look for candidates and decide with
    /// conditional writes; under fault injection it may miss items, as a lagging index does.
    pub async fn candidates(
        &self,
        kind: &'static str,
        index: &Index,
        after: Option<Uuid>,
        limit: usize,
    ) -> Result<Page<Item>> {
        self.query_inner(kind, index, after, limit, true).await
    }

    async fn query_inner(
        &self,
        kind: &'static str,
        index: &Index,
        after: Option<Uuid>,
        limit: usize,
        candidates: bool,
    ) -> Result<Page<Item>> {
        let (index_name, attribute, value) = index_query(kind, index);
        let mut items: Vec<Item> = Vec::with_capacity(limit + 1);
        let mut start: Option<HashMap<String, AttributeValue>> = None;
        loop {
            let out = retrying(|| async {
                if Faults::roll(self.faults.throttling) {
                    return Err(Failure::Transient("ThrottlingException (injected)".into()));
                }
                // DynamoDB takes no empty string in a key condition: without a cursor, no `id >`.
                let query = match after {
                    Some(a) => self
                        .client
                        .query()
                        .key_condition_expression("#k = :k AND #id > :after")
                        .expression_attribute_names("#id", "id")
                        .expression_attribute_values(":after", s(a.to_string())),
                    None => self.client.query().key_condition_expression("#k = :k"),
                };
                query
                    .table_name(&self.table)
                    .index_name(index_name)
                    .expression_attribute_names("#k", attribute)
                    .expression_attribute_values(":k", s(value.clone()))
                    .limit((limit + 1 - items.len()) as i32)
                    .set_exclusive_start_key(start.clone())
                    .send()
                    .await
                    .map_err(|e| classify(&self.table, &e))
            })
            .await?;
            for a in out.items() {
                if candidates && Faults::roll(self.faults.stale_index) {
                    continue;
                }
                let item_kind = a
                    .get("kind")
                    .and_then(|v| v.as_s().ok())
                    .and_then(|k| static_kind(k))
                    .unwrap_or(kind);
                items.push(Self::from_attributes(item_kind, a)?);
            }
            start = out.last_evaluated_key().cloned();
            if start.is_none() || items.len() > limit {
                break;
            }
        }
        let next = if items.len() > limit {
            items.truncate(limit);
            items.last().map(|i| i.id)
        } else {
            None
        };
        Ok(Page { items, next })
    }
}

fn index_query(kind: &'static str, index: &Index) -> (&'static str, &'static str, String) {
    match index {
        Index::All => ("by_kind", "kind", kind.to_string()),
        Index::Account(u) => ("by_account", "account_key", format!("{kind}#{u}")),
        Index::Zone(u) => ("by_zone", "zone_key", format!("{kind}#{u}")),
        Index::Host(u) => ("by_host", "host_key", format!("{kind}#{u}")),
        Index::Network(u) => ("by_network", "network_key", format!("{kind}#{u}")),
        Index::State(st) => ("by_state", "state_key", format!("{kind}#{st}")),
    }
}

/// Counters live in the same table, outside every index (they have no `kind` or `*_key`).
fn counter_pk(c: &CounterKey) -> String {
    format!("counter#{}#{}#{}", c.kind, c.index, c.value)
}

fn backend(e: impl std::fmt::Display) -> StoreError {
    StoreError::Backend(e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_committed_table_definition_is_the_one_the_code_queries() {
        let def = TableDefinition::committed().expect("infra/dynamodb-table.json parses");
        let u = Uuid::nil();
        let queried: Vec<(&str, &str)> = [
            Index::All,
            Index::Account(u),
            Index::Zone(u),
            Index::Host(u),
            Index::Network(u),
            Index::State("Running".into()),
        ]
        .iter()
        .map(|i| {
            let (name, attribute, _) = index_query("vm", i);
            (name, attribute)
        })
        .collect();
        let defined: Vec<(&str, &str)> = def
            .global_secondary_indexes
            .iter()
            .map(|i| (i.name.as_str(), i.hash_key.as_str()))
            .collect();
        assert_eq!(defined, queried);
        for index in &def.global_secondary_indexes {
            assert_eq!(index.range_key, "id", "{} sorts by id", index.name);
            assert_eq!(
                ProjectionType::from(index.projection_type.as_str()),
                ProjectionType::All
            );
        }
        // Exactly the key attributes are defined (DynamoDB refuses unused definitions).
        let mut defined: Vec<&str> = def.attributes.iter().map(|a| a.name.as_str()).collect();
        let mut keys = vec![def.hash_key.as_str(), "id"];
        keys.extend(queried.iter().map(|(_, k)| *k));
        defined.sort();
        keys.sort();
        assert_eq!(defined, keys);
        assert!(def.attributes.iter().all(|a| a.kind == "S"));
        assert_eq!(def.hash_key, "pk");
        assert_eq!(
            BillingMode::from(def.billing_mode.as_str()),
            BillingMode::PayPerRequest
        );
    }
}
