//! The Consul HTTP client.

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::Deserialize;

/// Consul's default `wait` for a blocking query, and its maximum.
pub const DEFAULT_WAIT: Duration = Duration::from_secs(300);
pub const MAX_WAIT: Duration = Duration::from_secs(600);

#[derive(Debug, thiserror::Error)]
pub enum ConsulError {
    #[error("Consul at {addr} is unreachable: {source}")]
    Unreachable {
        addr: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("Consul answered {status} to {what}: {body}")]
    Status {
        what: String,
        status: u16,
        body: String,
    },
    #[error("Consul's answer to {what} does not decode: {error}")]
    Decode { what: String, error: String },
}

impl ConsulError {
    /// Worth trying again later: Consul was unreachable or answered 5xx.
    pub fn is_transient(&self) -> bool {
        match self {
            ConsulError::Unreachable { .. } => true,
            ConsulError::Status { status, .. } => *status >= 500,
            ConsulError::Decode { .. } => false,
        }
    }
}

pub type Result<T> = std::result::Result<T, ConsulError>;

/// The pause before try `attempt` (1-based) after Consul failed: doubling
/// from 200 ms up to 10 s, with jitter over its upper half.
pub fn backoff(attempt: u32) -> Duration {
    let ceiling = 100u64.saturating_mul(1 << attempt.min(7)).min(10_000);
    Duration::from_millis(ceiling / 2 + rand::random::<u64>() % (ceiling / 2 + 1))
}

/// A blocking query's parameters: wait for a change past `index`, up to `wait`.
#[derive(Debug, Clone, Copy, Default)]
pub struct QueryOptions {
    pub index: Option<u64>,
    pub wait: Option<Duration>,
}

/// An answer and the `X-Consul-Index` it came with.
#[derive(Debug, Clone, PartialEq)]
pub struct Response<T> {
    pub value: T,
    pub index: u64,
}

/// A KV entry, its value decoded from base64.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KvPair {
    pub key: String,
    pub value: Option<Vec<u8>>,
    pub flags: u64,
    pub create_index: u64,
    pub modify_index: u64,
    pub lock_index: u64,
    pub session: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct WireKv {
    key: String,
    value: Option<String>,
    #[serde(default)]
    flags: u64,
    create_index: u64,
    modify_index: u64,
    #[serde(default)]
    lock_index: u64,
    #[serde(default)]
    session: Option<String>,
}

/// Conditions and markers of a KV write.
#[derive(Debug, Clone, Default)]
pub struct PutOptions {
    /// Write only if the key's ModifyIndex is this (0: only if absent).
    pub cas: Option<u64>,
    pub flags: Option<u64>,
    /// Take the key's lock for this session (false if another holds it).
    pub acquire: Option<String>,
    /// Release the key's lock held by this session.
    pub release: Option<String>,
}

#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    base: String,
    addr: String,
    token: Option<String>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl Client {
    /// A client of the agent at `addr` (`host:port` or a URL), sending `token`
    /// as `X-Consul-Token` when given.
    pub fn new(addr: &str, token: Option<String>) -> Self {
        let base = if addr.starts_with("http://") || addr.starts_with("https://") {
            addr.trim_end_matches('/').to_string()
        } else {
            format!("http://{addr}")
        };
        Client {
            // No overall timeout here: each request sets its own, longer than its wait.
            http: reqwest::Client::builder()
                .connect_timeout(Duration::from_secs(5))
                .build()
                .expect("an HTTP client without TLS builds"),
            base,
            addr: addr.to_string(),
            token,
        }
    }

    /// From `CONSUL_HTTP_ADDR` and `CONSUL_HTTP_TOKEN`, as Consul's own tools read them.
    pub fn from_env() -> Option<Self> {
        use stratus_contracts::config::{ENV_CONSUL_HTTP_ADDR, ENV_CONSUL_HTTP_TOKEN};
        let set = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        let addr = set(ENV_CONSUL_HTTP_ADDR)?;
        Some(Self::new(&addr, set(ENV_CONSUL_HTTP_TOKEN)))
    }

    /// From the configuration's `consul_http_addr` and `consul_http_token`.
    pub fn from_config(config: &stratus_contracts::config::Config) -> Option<Self> {
        let addr = config.consul_http_addr.as_deref()?;
        Some(Self::new(
            addr,
            config
                .consul_http_token
                .as_ref()
                .map(|t| t.expose().to_string()),
        ))
    }

    pub fn addr(&self) -> &str {
        &self.addr
    }

    fn request(
        &self,
        method: reqwest::Method,
        path: &str,
        q: &QueryOptions,
    ) -> reqwest::RequestBuilder {
        let mut r = self
            .http
            .request(method, format!("{}/v1/{path}", self.base));
        if let Some(t) = &self.token {
            r = r.header("X-Consul-Token", t);
        }
        let mut query: Vec<(&str, String)> = Vec::new();
        if let Some(i) = q.index {
            // An index below 1 is treated as 1, as Consul advises.
            query.push(("index", i.max(1).to_string()));
        }
        let wait = q.wait.map(|w| w.min(MAX_WAIT));
        if let Some(w) = wait {
            query.push(("wait", format!("{}ms", w.as_millis())));
        }
        if q.index.is_some() {
            // Consul adds up to wait/16 of jitter: the HTTP timeout must exceed it.
            let w = wait.unwrap_or(DEFAULT_WAIT);
            r = r.timeout(w + w / 16 + Duration::from_secs(5));
        } else {
            r = r.timeout(Duration::from_secs(30));
        }
        r.query(&query)
    }

    async fn send(&self, what: &str, r: reqwest::RequestBuilder) -> Result<(u16, u64, String)> {
        let resp = r.send().await.map_err(|source| ConsulError::Unreachable {
            addr: self.addr.clone(),
            source,
        })?;
        let status = resp.status().as_u16();
        let index = resp
            .headers()
            .get("X-Consul-Index")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let body = resp
            .text()
            .await
            .map_err(|source| ConsulError::Unreachable {
                addr: self.addr.clone(),
                source,
            })?;
        if status >= 400 && status != 404 {
            return Err(ConsulError::Status {
                what: what.to_string(),
                status,
                body,
            });
        }
        Ok((status, index, body))
    }

    fn decode<T: serde::de::DeserializeOwned>(what: &str, body: &str) -> Result<T> {
        serde_json::from_str(body).map_err(|e| ConsulError::Decode {
            what: what.to_string(),
            error: e.to_string(),
        })
    }

    fn pair(w: WireKv, what: &str) -> Result<KvPair> {
        let value = match w.value {
            Some(v) => Some(STANDARD.decode(v).map_err(|e| ConsulError::Decode {
                what: what.to_string(),
                error: format!("value of {}: {e}", w.key),
            })?),
            None => None,
        };
        Ok(KvPair {
            key: w.key,
            value,
            flags: w.flags,
            create_index: w.create_index,
            modify_index: w.modify_index,
            lock_index: w.lock_index,
            session: w.session,
        })
    }

    /// One key (`None` if absent), blocking when `q.index` is set.
    pub async fn kv_get(&self, key: &str, q: &QueryOptions) -> Result<Response<Option<KvPair>>> {
        let what = format!("GET kv/{key}");
        let (status, index, body) = self
            .send(
                &what,
                self.request(reqwest::Method::GET, &format!("kv/{key}"), q),
            )
            .await?;
        if status == 404 {
            return Ok(Response { value: None, index });
        }
        let mut pairs: Vec<WireKv> = Self::decode(&what, &body)?;
        let value = match pairs.pop() {
            Some(w) => Some(Self::pair(w, &what)?),
            None => None,
        };
        Ok(Response { value, index })
    }

    /// Every key under `prefix`, in key order.
    pub async fn kv_list(&self, prefix: &str, q: &QueryOptions) -> Result<Response<Vec<KvPair>>> {
        let what = format!("GET kv/{prefix}?recurse");
        let (status, index, body) = self
            .send(
                &what,
                self.request(reqwest::Method::GET, &format!("kv/{prefix}"), q)
                    .query(&[("recurse", "")]),
            )
            .await?;
        if status == 404 {
            return Ok(Response {
                value: vec![],
                index,
            });
        }
        let pairs: Vec<WireKv> = Self::decode(&what, &body)?;
        let value = pairs
            .into_iter()
            .map(|w| Self::pair(w, &what))
            .collect::<Result<Vec<_>>>()?;
        Ok(Response { value, index })
    }

    /// Writes `value`; false when a condition (`cas`, `acquire`) did not hold.
    pub async fn kv_put(&self, key: &str, value: &[u8], o: &PutOptions) -> Result<bool> {
        let what = format!("PUT kv/{key}");
        let mut query: Vec<(&str, String)> = Vec::new();
        if let Some(c) = o.cas {
            query.push(("cas", c.to_string()));
        }
        if let Some(f) = o.flags {
            query.push(("flags", f.to_string()));
        }
        if let Some(s) = &o.acquire {
            query.push(("acquire", s.clone()));
        }
        if let Some(s) = &o.release {
            query.push(("release", s.clone()));
        }
        let r = self
            .request(
                reqwest::Method::PUT,
                &format!("kv/{key}"),
                &QueryOptions::default(),
            )
            .query(&query)
            .body(value.to_vec());
        let (_, _, body) = self.send(&what, r).await?;
        Self::decode(&what, &body)
    }

    /// Deletes `key` (and everything under it with `recurse`); with `cas`, only at that ModifyIndex.
    pub async fn kv_delete(&self, key: &str, recurse: bool, cas: Option<u64>) -> Result<bool> {
        let what = format!("DELETE kv/{key}");
        let mut query: Vec<(&str, String)> = Vec::new();
        if recurse {
            query.push(("recurse", String::new()));
        }
        if let Some(c) = cas {
            query.push(("cas", c.to_string()));
        }
        let r = self
            .request(
                reqwest::Method::DELETE,
                &format!("kv/{key}"),
                &QueryOptions::default(),
            )
            .query(&query);
        let (_, _, body) = self.send(&what, r).await?;
        Self::decode(&what, &body)
    }

    /// The leader's address (`""` when there is none): a liveness probe.
    pub async fn leader(&self) -> Result<String> {
        let what = "GET status/leader";
        let (_, _, body) = self
            .send(
                what,
                self.request(
                    reqwest::Method::GET,
                    "status/leader",
                    &QueryOptions::default(),
                ),
            )
            .await?;
        Self::decode(what, &body)
    }

    /// Runs `op` until it succeeds or fails for good, backing off (with
    /// jitter, up to 10 s between tries) while Consul is unreachable or
    /// answers 5xx, and saying so in the log each time.
    pub async fn retrying<T, F, Fut>(&self, what: &str, mut op: F) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T>>,
    {
        let mut attempt: u32 = 0;
        loop {
            match op().await {
                Err(e) if e.is_transient() => {
                    attempt += 1;
                    let pause = backoff(attempt);
                    tracing::warn!(what, attempt, error = %e, pause_ms = pause.as_millis() as u64, "Consul call failed; retrying");
                    tokio::time::sleep(pause).await;
                }
                other => return other,
            }
        }
    }
}

/// A service registration (`/agent/service/register`), in Consul's field names.
#[derive(Debug, Clone, Default, serde::Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase")]
pub struct ServiceRegistration {
    #[serde(rename = "ID", skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    pub name: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub address: String,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub port: u16,
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub meta: std::collections::BTreeMap<String, String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub check: Option<CheckDefinition>,
}

fn is_zero(p: &u16) -> bool {
    *p == 0
}

/// A TTL check (the kind Stratus uses: the process says it is alive).
#[derive(Debug, Clone, Default, serde::Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase")]
pub struct CheckDefinition {
    #[serde(rename = "CheckID", skip_serializing_if = "Option::is_none")]
    pub check_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// e.g. `15s`.
    #[serde(rename = "TTL")]
    pub ttl: String,
    /// Initial status; Consul's default is `critical`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deregister_critical_service_after: Option<String>,
}

/// One instance of a service and its checks (`/health/service/:name`).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase")]
pub struct ServiceEntry {
    pub node: serde_json::Value,
    pub service: AgentService,
    pub checks: Vec<HealthCheck>,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase")]
pub struct AgentService {
    #[serde(rename = "ID")]
    pub id: String,
    pub service: String,
    #[serde(default)]
    pub tags: Option<Vec<String>>,
    #[serde(default)]
    pub address: String,
    #[serde(default)]
    pub port: u16,
    #[serde(default)]
    pub meta: Option<std::collections::BTreeMap<String, String>>,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase")]
pub struct HealthCheck {
    #[serde(rename = "CheckID")]
    pub check_id: String,
    pub name: String,
    /// `passing`, `warning` or `critical`.
    pub status: String,
    #[serde(default)]
    pub output: String,
    #[serde(rename = "ServiceID", default)]
    pub service_id: String,
}

impl Client {
    async fn agent_put(
        &self,
        what: &str,
        path: &str,
        body: Option<Vec<u8>>,
        query: &[(&str, String)],
    ) -> Result<()> {
        let mut r = self
            .request(reqwest::Method::PUT, path, &QueryOptions::default())
            .query(query);
        if let Some(b) = body {
            r = r.header("content-type", "application/json").body(b);
        }
        let (status, _, body) = self.send(what, r).await?;
        if status == 404 {
            // An unknown service or check: the caller re-registers.
            return Err(ConsulError::Status {
                what: what.to_string(),
                status,
                body,
            });
        }
        Ok(())
    }

    /// Registers (or replaces) a service with this agent.
    pub async fn register_service(&self, s: &ServiceRegistration) -> Result<()> {
        let body = serde_json::to_vec(s).map_err(|e| ConsulError::Decode {
            what: "service registration".into(),
            error: e.to_string(),
        })?;
        self.agent_put(
            "PUT agent/service/register",
            "agent/service/register",
            Some(body),
            &[],
        )
        .await
    }

    pub async fn deregister_service(&self, id: &str) -> Result<()> {
        let what = format!("PUT agent/service/deregister/{id}");
        self.agent_put(&what, &format!("agent/service/deregister/{id}"), None, &[])
            .await
    }

    /// Marks a TTL check passing (and restarts its TTL); 404 if the agent does not know it.
    pub async fn check_pass(&self, check_id: &str, note: &str) -> Result<()> {
        self.check_update("pass", check_id, note).await
    }

    pub async fn check_warn(&self, check_id: &str, note: &str) -> Result<()> {
        self.check_update("warn", check_id, note).await
    }

    pub async fn check_fail(&self, check_id: &str, note: &str) -> Result<()> {
        self.check_update("fail", check_id, note).await
    }

    async fn check_update(&self, verb: &str, check_id: &str, note: &str) -> Result<()> {
        let what = format!("PUT agent/check/{verb}/{check_id}");
        self.agent_put(
            &what,
            &format!("agent/check/{verb}/{check_id}"),
            None,
            &[("note", note.to_string())],
        )
        .await
    }

    /// Every service name and its tags (`/catalog/services`).
    pub async fn catalog_services(
        &self,
        q: &QueryOptions,
    ) -> Result<Response<std::collections::BTreeMap<String, Vec<String>>>> {
        let what = "GET catalog/services";
        let (_, index, body) = self
            .send(
                what,
                self.request(reqwest::Method::GET, "catalog/services", q),
            )
            .await?;
        Ok(Response {
            value: Self::decode(what, &body)?,
            index,
        })
    }

    /// The instances of `name` with their checks; only those whose checks all pass with `passing`.
    pub async fn health_service(
        &self,
        name: &str,
        passing: bool,
        q: &QueryOptions,
    ) -> Result<Response<Vec<ServiceEntry>>> {
        let what = format!("GET health/service/{name}");
        let mut r = self.request(reqwest::Method::GET, &format!("health/service/{name}"), q);
        if passing {
            r = r.query(&[("passing", "")]);
        }
        let (_, index, body) = self.send(&what, r).await?;
        Ok(Response {
            value: Self::decode(&what, &body)?,
            index,
        })
    }
}

/// What happens to a session's keys when it ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Behavior {
    /// Its locks are released (the keys stay).
    #[default]
    Release,
    /// Its locked keys are deleted.
    Delete,
}

/// A session to create (`/session/create`).
#[derive(Debug, Clone)]
pub struct SessionOptions {
    pub name: String,
    /// Invalidated when not renewed for this long (Consul: 10 s to 24 h; it may
    /// take up to twice this to notice). `None`: no TTL.
    pub ttl: Option<Duration>,
    /// After the session ends, nobody may take its locks for this long.
    pub lock_delay: Duration,
    pub behavior: Behavior,
    /// Also invalidated when one of these checks goes critical.
    pub service_checks: Vec<String>,
}

impl Default for SessionOptions {
    fn default() -> Self {
        SessionOptions {
            name: String::new(),
            ttl: None,
            lock_delay: Duration::from_secs(15),
            behavior: Behavior::Release,
            service_checks: vec![],
        }
    }
}

/// A session as Consul describes it (`/session/info`).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase")]
pub struct SessionInfo {
    #[serde(rename = "ID")]
    pub id: String,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub node: String,
    /// In nanoseconds, as Consul reports it.
    #[serde(default)]
    pub lock_delay: u64,
    #[serde(default)]
    pub behavior: String,
    #[serde(rename = "TTL", default)]
    pub ttl: String,
    pub create_index: u64,
    pub modify_index: u64,
}

/// A Go duration string Consul parses (`"10s"`, `"1500ms"`).
fn go_duration(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{}ms", d.as_millis())
    }
}

impl Client {
    /// Creates a session; its id.
    pub async fn session_create(&self, o: &SessionOptions) -> Result<String> {
        let mut body = serde_json::json!({
            "Name": o.name,
            "LockDelay": go_duration(o.lock_delay),
            "Behavior": match o.behavior { Behavior::Release => "release", Behavior::Delete => "delete" },
        });
        if let Some(ttl) = o.ttl {
            body["TTL"] = serde_json::json!(go_duration(ttl));
        }
        if !o.service_checks.is_empty() {
            body["ServiceChecks"] = serde_json::json!(
                o.service_checks
                    .iter()
                    .map(|c| serde_json::json!({ "ID": c }))
                    .collect::<Vec<_>>()
            );
        }
        let what = "PUT session/create";
        let r = self
            .request(
                reqwest::Method::PUT,
                "session/create",
                &QueryOptions::default(),
            )
            .header("content-type", "application/json")
            .body(body.to_string());
        let (_, _, body) = self.send(what, r).await?;
        #[derive(Deserialize)]
        struct Created {
            #[serde(rename = "ID")]
            id: String,
        }
        Ok(Self::decode::<Created>(what, &body)?.id)
    }

    /// Renews a session's TTL; `None` when it no longer exists (it was invalidated).
    pub async fn session_renew(&self, id: &str) -> Result<Option<SessionInfo>> {
        let what = format!("PUT session/renew/{id}");
        let r = self.request(
            reqwest::Method::PUT,
            &format!("session/renew/{id}"),
            &QueryOptions::default(),
        );
        let (status, _, body) = self.send(&what, r).await?;
        if status == 404 {
            return Ok(None);
        }
        Ok(Self::decode::<Option<Vec<SessionInfo>>>(&what, &body)?.and_then(|mut v| v.pop()))
    }

    /// Ends a session now (its locks are released or keys deleted, lock-delay applies).
    pub async fn session_destroy(&self, id: &str) -> Result<bool> {
        let what = format!("PUT session/destroy/{id}");
        let r = self.request(
            reqwest::Method::PUT,
            &format!("session/destroy/{id}"),
            &QueryOptions::default(),
        );
        let (_, _, body) = self.send(&what, r).await?;
        Self::decode(&what, &body)
    }

    /// A session, `None` when it does not exist.
    pub async fn session_info(&self, id: &str) -> Result<Option<SessionInfo>> {
        let what = format!("GET session/info/{id}");
        let r = self.request(
            reqwest::Method::GET,
            &format!("session/info/{id}"),
            &QueryOptions::default(),
        );
        let (_, _, body) = self.send(&what, r).await?;
        // Older agents answer `null` for an unknown session, newer ones `[]`.
        Ok(Self::decode::<Option<Vec<SessionInfo>>>(&what, &body)?.and_then(|mut v| v.pop()))
    }

    /// Takes `key`'s lock for `session`, writing `value`; false if another holds it
    /// (or its last holder's lock-delay has not passed).
    pub async fn lock_acquire(&self, key: &str, session: &str, value: &[u8]) -> Result<bool> {
        self.kv_put(
            key,
            value,
            &PutOptions {
                acquire: Some(session.to_string()),
                ..Default::default()
            },
        )
        .await
    }

    /// Releases `key`'s lock held by `session`; false if it does not hold it.
    pub async fn lock_release(&self, key: &str, session: &str) -> Result<bool> {
        self.kv_put(
            key,
            b"",
            &PutOptions {
                release: Some(session.to_string()),
                ..Default::default()
            },
        )
        .await
    }
}
