//! CloudStack's settings kept in Consul's KV: the running platform's
//! [`SettingsSource`]. Values live under [`KV_PREFIX`] (`global/<name>`, or
//! `<scope>/<id>/<name>`); a setting without a value there has its default.
//!
//! Functions call [`SettingsSource::refresh`] at the start of each
//! invocation, which re-reads the whole prefix (one KV read) when the cache is
//! older than `max_age`: Lambda freezes an idle function, so a background
//! watch would not run. Long-running processes call [`ConsulSettings::watch`]
//! instead, a blocking query that applies each change as it lands.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use stratus_contracts::settings::{KV_PREFIX, Pending, ScopeId, Setting, SettingsSource, kv_key};

use crate::client::{Client, PutOptions, QueryOptions};

#[derive(Debug, Default)]
struct Cache {
    /// KV key -> value, for every key under the prefix.
    values: BTreeMap<String, String>,
    /// When the cache was last read (or a read last failed).
    fetched: Option<Instant>,
    /// The `X-Consul-Index` of the last read.
    index: u64,
}

pub struct ConsulSettings {
    client: Client,
    max_age: Duration,
    cache: RwLock<Cache>,
}

impl ConsulSettings {
    /// Settings read through `client`, re-read when older than `max_age`.
    pub fn new(client: Client, max_age: Duration) -> Arc<Self> {
        Arc::new(ConsulSettings {
            client,
            max_age,
            cache: RwLock::new(Cache::default()),
        })
    }

    fn cached(&self, key: &str) -> Option<String> {
        self.cache
            .read()
            .expect("settings cache")
            .values
            .get(key)
            .cloned()
    }

    /// Reads the whole prefix once; on failure keeps what it had (and says so).
    async fn load(&self, q: &QueryOptions) -> Result<(), crate::ConsulError> {
        let read = self.client.kv_list(KV_PREFIX, q).await;
        let mut cache = self.cache.write().expect("settings cache");
        cache.fetched = Some(Instant::now());
        let read = read?;
        cache.values = read
            .value
            .into_iter()
            .map(|p| {
                let value = String::from_utf8_lossy(&p.value.unwrap_or_default()).into_owned();
                (p.key, value)
            })
            .collect();
        // An index that goes backwards (a restored or restarted agent) starts over.
        cache.index = if read.index < cache.index {
            0
        } else {
            read.index
        };
        Ok(())
    }

    /// Keeps the cache current for as long as the process runs: a blocking
    /// query on the prefix, retried with backoff while Consul is unreachable.
    pub async fn watch(self: Arc<Self>) {
        loop {
            let index = self.cache.read().expect("settings cache").index;
            let q = QueryOptions {
                index: Some(index.max(1)),
                wait: Some(Duration::from_secs(60)),
            };
            let this = self.clone();
            let _ = self
                .client
                .retrying("watch settings", || {
                    let this = this.clone();
                    async move { this.load(&q).await }
                })
                .await
                .inspect_err(|e| tracing::error!(error = %e, "settings watch failed"));
            // Consul advises rate-limiting a watch loop.
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl SettingsSource for ConsulSettings {
    fn value(&self, setting: &'static Setting) -> String {
        self.cached(&kv_key(setting.name, None))
            .unwrap_or_else(|| setting.default.to_string())
    }

    fn value_in(&self, setting: &'static Setting, at: &ScopeId) -> String {
        self.cached(&kv_key(setting.name, Some(at)))
            .unwrap_or_else(|| self.value(setting))
    }

    fn refresh(&self) -> Pending<'_, ()> {
        Box::pin(async move {
            let fresh = self
                .cache
                .read()
                .expect("settings cache")
                .fetched
                .is_some_and(|t| t.elapsed() < self.max_age);
            if fresh {
                return;
            }
            // One try: an invocation does not wait out an outage. The values
            // in hand (or the defaults) serve, and the next invocation after
            // `max_age` tries again.
            if let Err(e) = self.load(&QueryOptions::default()).await {
                tracing::warn!(error = %e, "settings not refreshed from Consul; using the values in hand");
            }
        })
    }

    fn update<'a>(
        &'a self,
        setting: &'static Setting,
        at: Option<&'a ScopeId>,
        value: &'a str,
    ) -> Pending<'a, Result<(), String>> {
        Box::pin(async move {
            let key = kv_key(setting.name, at);
            self.client
                .kv_put(&key, value.as_bytes(), &PutOptions::default())
                .await
                .map_err(|e| e.to_string())?;
            // Read-your-writes in this instance; others see it within `max_age`.
            self.cache
                .write()
                .expect("settings cache")
                .values
                .insert(key, value.to_string());
            Ok(())
        })
    }
}
