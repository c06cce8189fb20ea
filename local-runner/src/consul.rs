//! A development stand-in for Consul's HTTP API, served when no
//! `CONSUL_HTTP_ADDR` is given. It answers the subset Stratus uses with
//! Consul's JSON shapes, `X-Consul-Index` headers and blocking queries.
//! So far: KV (get with `recurse`/`keys`/`raw`, put with `cas`/`flags`,
//! delete with `recurse`/`cas`, 512 KB values), `status/leader`, agent
//! services with TTL checks (register, deregister, check pass/warn/fail,
//! expiry), `catalog/services`, `catalog/service/:name` and
//! `health/service/:name` (`?passing`), all blocking; sessions (create with
//! TTL 10 s to 24 h, lock-delay up to 60 s, behaviour `release` or `delete`,
//! service checks; renew, destroy, info, list; invalidation at twice the TTL
//! after the last renewal, as Consul's servers time it) and locks
//! (`acquire`/`release`, refused during a lock-delay). The KV and sessions
//! persist under `STRATUS_HOME`; registrations do not (as an agent restarted without its
//! data dir, so processes re-register when their check is unknown). It is
//! not Consul: one node, no Raft.
//!
//! ACLs as Consul serves them with `default_policy = "deny"` and one
//! management token (the runner makes it, keeps it in `$STRATUS_HOME/consul-token`
//! and hands it to functions and processes as `CONSUL_HTTP_TOKEN`), taken
//! from `X-Consul-Token`, `Authorization: Bearer` or `?token=`: an unknown
//! token gets 403 `ACL not found`; a request without one is the anonymous
//! token's, which may do nothing: a write, a single-key read or a session
//! change gets 403 with Consul's text (`Permission denied: anonymous token
//! lacks permission 'key:write' on "..."...`), and a listing (KV `recurse`
//! or `keys`, catalog, health, sessions) comes back filtered to nothing, with
//! `X-Consul-Results-Filtered-By-ACLs: true`. `status/leader` needs no token,
//! as on Consul.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::sync::watch;

/// Where the runner keeps the stand-in's ACL token, under `STRATUS_HOME` (0600).
pub const TOKEN_FILE: &str = "consul-token";

/// Consul's limit on a KV value.
pub const MAX_VALUE: usize = 512 * 1024;
const DEFAULT_WAIT: Duration = Duration::from_secs(300);
const MAX_WAIT: Duration = Duration::from_secs(600);

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Entry {
    value: Vec<u8>,
    flags: u64,
    create_index: u64,
    modify_index: u64,
    lock_index: u64,
    /// The session holding the key's lock.
    #[serde(default)]
    session: Option<String>,
}

/// A session (`/session/create`): TTL-bound when `ttl_ms` is set, and ended
/// early by any of its service checks going critical.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Session {
    id: String,
    name: String,
    lock_delay_ms: u64,
    /// `release` or `delete`: what happens to its keys when it ends.
    behavior: String,
    ttl: Option<String>,
    ttl_ms: Option<u64>,
    /// Unix ms after which the session is invalidated: twice its TTL past the
    /// last renewal, as Consul's servers time it.
    expires_ms: Option<u64>,
    service_checks: Vec<String>,
    create_index: u64,
    modify_index: u64,
}

impl Session {
    fn render(&self) -> serde_json::Value {
        json!({
            "ID": self.id, "Name": self.name, "Node": NODE,
            // Consul reports LockDelay in nanoseconds and TTL as it was given.
            "LockDelay": self.lock_delay_ms * 1_000_000,
            "Behavior": self.behavior, "TTL": self.ttl.clone().unwrap_or_default(),
            "NodeChecks": ["serfHealth"],
            "ServiceChecks": if self.service_checks.is_empty() { serde_json::Value::Null } else {
                json!(self.service_checks.iter().map(|c| json!({"ID": c, "Namespace": ""})).collect::<Vec<_>>())
            },
            "CreateIndex": self.create_index, "ModifyIndex": self.modify_index,
        })
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or_default()
}

/// Consul's bounds on a session's TTL and lock-delay.
const SESSION_TTL_MIN: Duration = Duration::from_secs(10);
const SESSION_TTL_MAX: Duration = Duration::from_secs(86_400);
const LOCK_DELAY_MAX: Duration = Duration::from_secs(60);
const DEFAULT_LOCK_DELAY: Duration = Duration::from_secs(15);

#[derive(Debug, Default, Serialize, Deserialize)]
struct Data {
    /// The last index handed out; every write takes the next one.
    index: u64,
    kv: BTreeMap<String, Entry>,
    /// When each deleted key went, so that a watch on it or its prefix wakes.
    tombstones: BTreeMap<String, u64>,
    #[serde(default)]
    sessions: BTreeMap<String, Session>,
    /// Keys whose holder's session was invalidated: no acquire before this unix ms.
    #[serde(default)]
    lock_delays: BTreeMap<String, u64>,
}

impl Data {
    /// Ends a session: its locks are released (lock-delay starts on each) or
    /// its keys deleted, as its behaviour says.
    fn invalidate(&mut self, id: &str, index: u64) -> bool {
        let Some(session) = self.sessions.remove(id) else {
            return false;
        };
        let held: Vec<String> = self
            .kv
            .iter()
            .filter(|(_, e)| e.session.as_deref() == Some(id))
            .map(|(k, _)| k.clone())
            .collect();
        let now = now_ms();
        for key in held {
            if session.behavior == "delete" {
                self.kv.remove(&key);
                self.tombstones.insert(key.clone(), index);
            } else if let Some(e) = self.kv.get_mut(&key) {
                e.session = None;
                e.modify_index = index;
            }
            if session.lock_delay_ms > 0 {
                self.lock_delays.insert(key, now + session.lock_delay_ms);
            }
        }
        true
    }
}

/// The node the stand-in pretends to be.
const NODE: &str = "stratus-local";

#[derive(Debug, Clone)]
struct Service {
    id: String,
    name: String,
    tags: Vec<String>,
    address: String,
    port: u16,
    meta: BTreeMap<String, String>,
    create_index: u64,
    modify_index: u64,
}

#[derive(Debug, Clone)]
struct Check {
    id: String,
    name: String,
    service_id: String,
    service_name: String,
    status: &'static str,
    output: String,
    ttl: Option<Duration>,
    deadline: Option<tokio::time::Instant>,
    create_index: u64,
    modify_index: u64,
}

#[derive(Debug, Default)]
struct Agent {
    services: BTreeMap<String, Service>,
    checks: BTreeMap<String, Check>,
    /// The index of the last change to services or checks.
    index: u64,
}

pub struct Consul {
    agent: Mutex<Agent>,
    data: Mutex<Data>,
    changed: watch::Sender<u64>,
    file: Option<PathBuf>,
    /// The one ACL token with rights (a management token).
    token: String,
}

impl Consul {
    /// A stand-in whose KV persists in `dir` (`consul-kv.json`), if given,
    /// serving requests that carry `token` (see the module's ACLs).
    pub fn open(dir: Option<PathBuf>, token: String) -> anyhow::Result<Arc<Self>> {
        if token.is_empty() {
            anyhow::bail!("the Consul stand-in needs an ACL token");
        }
        let file = dir.map(|d| d.join("consul-kv.json"));
        // Only its owner may read the KV (settings, session data): one written before with a wider mode is tightened.
        if let Some(f) = &file {
            stratus_secrets::private::restrict(f, stratus_secrets::private::FILE_MODE)
                .map_err(|e| anyhow::anyhow!("{}: {e}", f.display()))?;
        }
        let mut data = match &file {
            Some(f) if f.exists() => serde_json::from_slice(&std::fs::read(f)?)
                .map_err(|e| anyhow::anyhow!("{}: {e}", f.display()))?,
            _ => Data::default(),
        };
        // Index 0 is never valid in Consul; start at 1.
        data.index = data.index.max(1);
        // Renewals are not persisted: as Consul's servers do after a leader
        // change, every session's TTL clock starts again.
        for session in data.sessions.values_mut() {
            session.expires_ms = session.ttl_ms.map(|t| now_ms() + 2 * t);
        }
        let (changed, _) = watch::channel(data.index);
        Ok(Arc::new(Consul {
            agent: Mutex::new(Agent::default()),
            data: Mutex::new(data),
            changed,
            file,
            token,
        }))
    }

    fn persist(&self, data: &Data) {
        if let Some(f) = &self.file {
            let written = serde_json::to_vec(data)
                .map_err(std::io::Error::other)
                .and_then(|bytes| stratus_secrets::private::replace(f, &bytes));
            if let Err(e) = written {
                tracing::error!(file = %f.display(), error = %e, "the Consul stand-in could not persist its KV");
            }
        }
    }

    /// Applies a write under the lock, persists and wakes watchers.
    fn write<R>(&self, f: impl FnOnce(&mut Data, u64) -> (R, bool)) -> R {
        let mut data = self.data.lock().expect("stand-in lock");
        let next = data.index + 1;
        let (result, wrote) = f(&mut data, next);
        if wrote {
            data.index = next;
            self.persist(&data);
            self.changed.send_replace(next);
        }
        result
    }
}

impl Consul {
    /// Takes the next index for a change outside the KV, and wakes watchers.
    fn bump(&self) -> u64 {
        let mut data = self.data.lock().expect("stand-in lock");
        data.index += 1;
        let next = data.index;
        drop(data);
        self.changed.send_replace(next);
        next
    }

    /// Invalidates sessions whose TTL ran out, or one of whose service checks
    /// is critical or gone.
    fn expire_sessions(&self) {
        // The agent's lock is never held while taking the data's (the other
        // order is taken on check updates).
        let healthy: Vec<String> = {
            let agent = self.agent.lock().expect("stand-in lock");
            agent
                .checks
                .values()
                .filter(|c| c.status != "critical")
                .map(|c| c.id.clone())
                .collect()
        };
        let now = now_ms();
        self.write(|data, next| {
            data.lock_delays.retain(|_, until| *until > now);
            let ended: Vec<String> = data
                .sessions
                .values()
                .filter(|s| {
                    s.expires_ms.is_some_and(|e| e <= now)
                        || s.service_checks.iter().any(|c| !healthy.contains(c))
                })
                .map(|s| s.id.clone())
                .collect();
            for id in &ended {
                data.invalidate(id, next);
                tracing::info!(session = %id, "Consul stand-in: session invalidated");
            }
            ((), !ended.is_empty())
        })
    }

    /// Moves TTL checks whose time ran out to critical.
    fn expire(&self) {
        let now = tokio::time::Instant::now();
        let mut agent = self.agent.lock().expect("stand-in lock");
        let lapsed: Vec<String> = agent
            .checks
            .values()
            .filter(|c| c.status != "critical" && c.deadline.is_some_and(|d| d <= now))
            .map(|c| c.id.clone())
            .collect();
        if lapsed.is_empty() {
            return;
        }
        let index = self.bump();
        for id in lapsed {
            if let Some(c) = agent.checks.get_mut(&id) {
                c.status = "critical";
                c.output = "TTL expired".into();
                c.modify_index = index;
                tracing::info!(check = %id, "Consul stand-in: TTL check expired");
            }
        }
        agent.index = index;
    }
}

pub fn router(consul: Arc<Consul>) -> Router {
    use axum::routing::put;
    Router::new()
        .route(
            "/v1/status/leader",
            get(|| async { axum::Json("127.0.0.1:8300") }),
        )
        .route("/v1/agent/service/register", put(service_register))
        .route("/v1/agent/service/deregister/{id}", put(service_deregister))
        .route("/v1/agent/check/{verb}/{id}", put(check_update))
        .route("/v1/session/create", put(session_create))
        .route("/v1/session/destroy/{id}", put(session_destroy))
        .route("/v1/session/renew/{id}", put(session_renew))
        .route("/v1/session/info/{id}", get(session_info))
        .route("/v1/session/list", get(session_list))
        .route("/v1/catalog/services", get(catalog_services))
        .route("/v1/catalog/service/{name}", get(catalog_service))
        .route("/v1/health/service/{name}", get(health_service))
        .route(
            "/v1/kv/",
            get(kv_get_root).put(kv_put_root).delete(kv_delete_root),
        )
        .route("/v1/kv/{*key}", get(kv_get).put(kv_put).delete(kv_delete))
        .layer(axum::middleware::from_fn_with_state(consul.clone(), acl))
        .with_state(consul)
}

// ---- ACLs ----

#[derive(Deserialize)]
struct TokenQuery {
    token: Option<String>,
}

/// The token a request presents, where Consul looks for it: `?token=`,
/// `X-Consul-Token`, then `Authorization: Bearer`.
fn presented_token(request: &axum::extract::Request) -> Option<String> {
    let from_query = Query::<TokenQuery>::try_from_uri(request.uri())
        .ok()
        .and_then(|q| q.0.token);
    let from_header = || {
        request
            .headers()
            .get("X-Consul-Token")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let from_bearer = || crate::secrets::bearer(request.headers()).map(str::to_string);
    [from_query, from_header(), from_bearer()]
        .into_iter()
        .flatten()
        .find(|t| !t.is_empty())
}

/// Consul's ACL check (default policy deny, one management token).
async fn acl(
    State(consul): State<Arc<Consul>>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    // Consul answers its status endpoints whatever the token.
    if request.uri().path().starts_with("/v1/status/") {
        return next.run(request).await;
    }
    match presented_token(&request) {
        Some(t) if crate::secrets::same(t.as_bytes(), consul.token.as_bytes()) => {
            next.run(request).await
        }
        Some(_) => error(StatusCode::FORBIDDEN, "ACL not found"),
        None => anonymous(&consul, request, next).await,
    }
}

/// Consul's 403 for the anonymous token lacking `resource:access` on `name`.
fn anonymous_denied(resource: &str, access: &str, name: &str) -> Response {
    error(
        StatusCode::FORBIDDEN,
        &format!(
            "Permission denied: anonymous token lacks permission '{resource}:{access}' on \"{name}\". The anonymous token is used implicitly when a request does not specify a token."
        ),
    )
}

/// A listing filtered by the ACLs to nothing: the handler's answer (so a
/// blocking query still blocks, and its index stands) with `empty` for body
/// (or a 404 without one, as Consul's KV answers an empty listing).
fn filtered(answer: Response, empty: Option<&'static str>) -> Response {
    let (mut parts, _) = answer.into_parts();
    parts.headers.remove(axum::http::header::CONTENT_LENGTH);
    parts.headers.insert(
        "X-Consul-Results-Filtered-By-ACLs",
        HeaderValue::from_static("true"),
    );
    let body = match empty {
        Some(json) if parts.status.is_success() => {
            parts.headers.insert(
                axum::http::header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            axum::body::Body::from(json)
        }
        _ => {
            if parts.status.is_success() {
                parts.status = StatusCode::NOT_FOUND;
            }
            parts.headers.remove(axum::http::header::CONTENT_TYPE);
            axum::body::Body::empty()
        }
    };
    Response::from_parts(parts, body)
}

/// Decodes a path's `%XX` escapes (a KV key as Consul reads it).
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let (Some(h), Some(l)) = (hex(bytes[i + 1]), hex(bytes[i + 2]))
        {
            out.push((h * 16 + l) as u8);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// What the anonymous token gets under default policy deny.
async fn anonymous(
    consul: &Consul,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let path = request.uri().path().to_string();
    let read = request.method() == axum::http::Method::GET;
    let listing = request
        .uri()
        .query()
        .unwrap_or_default()
        .split('&')
        .any(|p| matches!(p.split('=').next(), Some("recurse") | Some("keys")));
    if let Some(key) = path.strip_prefix("/v1/kv/") {
        if read && listing {
            return filtered(next.run(request).await, None);
        }
        return anonymous_denied(
            "key",
            if read { "read" } else { "write" },
            &percent_decode(key),
        );
    }
    let segments: Vec<&str> = path.trim_start_matches("/v1/").split('/').collect();
    match segments.as_slice() {
        ["agent", "service", "register"] => {
            let body = axum::body::to_bytes(request.into_body(), 1024 * 1024)
                .await
                .unwrap_or_default();
            let name = serde_json::from_slice::<serde_json::Value>(&body)
                .ok()
                .and_then(|v| v["Name"].as_str().map(str::to_string))
                .unwrap_or_default();
            anonymous_denied("service", "write", &name)
        }
        ["agent", "service", "deregister", id] => {
            let id = percent_decode(id);
            let agent = consul.agent.lock().expect("stand-in lock");
            let name = agent
                .services
                .get(&id)
                .map_or(id.clone(), |s| s.name.clone());
            anonymous_denied("service", "write", &name)
        }
        ["agent", "check", _, id] => {
            let id = percent_decode(id);
            let agent = consul.agent.lock().expect("stand-in lock");
            match agent.checks.get(&id) {
                Some(c) if !c.service_name.is_empty() => {
                    anonymous_denied("service", "write", &c.service_name)
                }
                _ => anonymous_denied("node", "write", NODE),
            }
        }
        ["session", "create" | "destroy" | "renew", ..] => {
            anonymous_denied("session", "write", NODE)
        }
        ["session", "info" | "list", ..] | ["catalog", "service", _] | ["health", "service", _] => {
            filtered(next.run(request).await, Some("[]"))
        }
        ["catalog", "services"] => filtered(next.run(request).await, Some("{}")),
        _ => next.run(request).await,
    }
}

/// Serves the stand-in on `listener` until the process ends.
pub async fn serve(listener: tokio::net::TcpListener, consul: Arc<Consul>) {
    let reaper = consul.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        loop {
            tick.tick().await;
            reaper.expire();
            reaper.expire_sessions();
        }
    });
    if let Err(e) = axum::serve(listener, router(consul)).await {
        tracing::error!(error = %e, "the Consul stand-in stopped");
    }
}

#[derive(Debug, Default, Deserialize)]
struct KvQuery {
    index: Option<u64>,
    wait: Option<String>,
    recurse: Option<String>,
    raw: Option<String>,
    keys: Option<String>,
    separator: Option<String>,
    cas: Option<u64>,
    flags: Option<u64>,
    acquire: Option<String>,
    release: Option<String>,
}

/// Consul's duration strings: `10s`, `500ms`, `1m`, `1h`.
fn parse_wait(s: &str) -> Option<Duration> {
    let (n, unit) = s
        .find(|c: char| !c.is_ascii_digit())
        .map(|i| s.split_at(i))
        .unwrap_or((s, "s"));
    let n: u64 = n.parse().ok()?;
    Some(match unit {
        "ms" => Duration::from_millis(n),
        "s" | "" => Duration::from_secs(n),
        "m" => Duration::from_secs(n * 60),
        "h" => Duration::from_secs(n * 3600),
        _ => return None,
    })
}

fn error(status: StatusCode, text: &str) -> Response {
    (status, text.to_string()).into_response()
}

fn with_index(index: u64, mut r: Response) -> Response {
    r.headers_mut()
        .insert("X-Consul-Index", HeaderValue::from(index));
    r.headers_mut()
        .insert("X-Consul-KnownLeader", HeaderValue::from_static("true"));
    r
}

/// The index a read of `key` (or of the prefix, with recurse) reports: the
/// highest ModifyIndex among what it returns and the deletions under it, else
/// the store's index.
fn read_index(data: &Data, key: &str, prefix: bool) -> u64 {
    let matches = |k: &String| if prefix { k.starts_with(key) } else { k == key };
    let live = data
        .kv
        .iter()
        .filter(|(k, _)| matches(k))
        .map(|(_, e)| e.modify_index);
    let dead = data
        .tombstones
        .iter()
        .filter(|(k, _)| matches(k))
        .map(|(_, i)| *i);
    live.chain(dead).max().unwrap_or(data.index)
}

async fn kv_get_root(state: State<Arc<Consul>>, q: Query<KvQuery>) -> Response {
    kv_read(state.0, String::new(), q.0).await
}

async fn kv_get(
    State(consul): State<Arc<Consul>>,
    Path(key): Path<String>,
    Query(q): Query<KvQuery>,
) -> Response {
    kv_read(consul, key, q).await
}

async fn kv_read(consul: Arc<Consul>, key: String, q: KvQuery) -> Response {
    let prefix = q.recurse.is_some() || q.keys.is_some();
    if let Some(wanted) = q.index {
        let wait = q
            .wait
            .as_deref()
            .and_then(parse_wait)
            .unwrap_or(DEFAULT_WAIT)
            .min(MAX_WAIT);
        // Consul adds up to wait/16 of jitter.
        let jitter =
            Duration::from_millis(rand::random::<u64>() % (wait.as_millis() as u64 / 16 + 1));
        let deadline = tokio::time::Instant::now() + wait + jitter;
        let mut changes = consul.changed.subscribe();
        loop {
            let index = read_index(&consul.data.lock().expect("stand-in lock"), &key, prefix);
            if index > wanted {
                break;
            }
            if tokio::time::timeout_at(deadline, changes.changed())
                .await
                .is_err()
            {
                break;
            }
        }
    }
    let data = consul.data.lock().expect("stand-in lock");
    let index = read_index(&data, &key, prefix);
    if q.keys.is_some() {
        let sep = q.separator.unwrap_or_default();
        let mut keys: Vec<String> = Vec::new();
        for k in data.kv.keys().filter(|k| k.starts_with(&key)) {
            let rest = &k[key.len()..];
            let shown = match (!sep.is_empty()).then(|| rest.find(&sep)).flatten() {
                Some(i) => format!("{key}{}", &rest[..i + sep.len()]),
                None => k.clone(),
            };
            if keys.last() != Some(&shown) {
                keys.push(shown);
            }
        }
        return with_index(
            index,
            if keys.is_empty() {
                StatusCode::NOT_FOUND.into_response()
            } else {
                axum::Json(keys).into_response()
            },
        );
    }
    let entries: Vec<(&String, &Entry)> = if prefix {
        data.kv
            .iter()
            .filter(|(k, _)| k.starts_with(&key))
            .collect()
    } else {
        data.kv.get_key_value(&key).into_iter().collect()
    };
    if entries.is_empty() {
        return with_index(index, StatusCode::NOT_FOUND.into_response());
    }
    if q.raw.is_some() && !prefix {
        return with_index(index, entries[0].1.value.clone().into_response());
    }
    let body: Vec<serde_json::Value> = entries
        .iter()
        .map(|(k, e)| {
            let mut pair = json!({
                "LockIndex": e.lock_index,
                "Key": k,
                "Flags": e.flags,
                "Value": if e.value.is_empty() { None } else { Some(STANDARD.encode(&e.value)) },
                "CreateIndex": e.create_index,
                "ModifyIndex": e.modify_index,
            });
            if let Some(session) = &e.session {
                pair["Session"] = json!(session);
            }
            pair
        })
        .collect();
    with_index(index, axum::Json(body).into_response())
}

async fn kv_put_root() -> Response {
    error(StatusCode::METHOD_NOT_ALLOWED, "Missing key name")
}

async fn kv_put(
    State(consul): State<Arc<Consul>>,
    Path(key): Path<String>,
    Query(q): Query<KvQuery>,
    body: Bytes,
) -> Response {
    if body.len() > MAX_VALUE {
        return error(
            StatusCode::PAYLOAD_TOO_LARGE,
            &format!("Value exceeds {MAX_VALUE} byte limit"),
        );
    }
    if q.acquire.is_some() && q.release.is_some() {
        return error(
            StatusCode::BAD_REQUEST,
            "Conflicting flags: acquire and release",
        );
    }
    let now = now_ms();
    let written = consul.write(|data, next| {
        let session = q.acquire.as_ref().or(q.release.as_ref());
        if let Some(s) = session
            && !data.sessions.contains_key(s)
        {
            return (Err(format!("invalid session {s:?}")), false);
        }
        let current = data.kv.get(&key);
        let holds = match q.cas {
            None => true,
            Some(0) => current.is_none(),
            Some(i) => current.map(|e| e.modify_index) == Some(i),
        };
        if !holds {
            return (Ok(false), false);
        }
        let holder = current.and_then(|e| e.session.clone());
        if let Some(s) = &q.acquire {
            let delayed = data.lock_delays.get(&key).is_some_and(|until| *until > now);
            match &holder {
                Some(h) if h != s => return (Ok(false), false),
                None if delayed => return (Ok(false), false),
                _ => {}
            }
        }
        if let Some(s) = &q.release
            && holder.as_ref() != Some(s)
        {
            return (Ok(false), false);
        }
        let entry = data.kv.entry(key.clone()).or_insert(Entry {
            value: vec![],
            flags: 0,
            create_index: next,
            modify_index: next,
            lock_index: 0,
            session: None,
        });
        entry.value = body.to_vec();
        entry.flags = q.flags.unwrap_or(0);
        entry.modify_index = next;
        if let Some(s) = &q.acquire
            && entry.session.is_none()
        {
            entry.session = Some(s.clone());
            entry.lock_index += 1;
        }
        if q.release.is_some() {
            entry.session = None;
        }
        data.tombstones.remove(&key);
        (Ok(true), true)
    });
    let ok = match written {
        Ok(ok) => ok,
        // Consul answers an unknown session with a server error.
        Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, &e),
    };
    axum::Json(ok).into_response()
}

async fn kv_delete_root(state: State<Arc<Consul>>, q: Query<KvQuery>) -> Response {
    kv_remove(state.0, String::new(), q.0)
}

async fn kv_delete(
    State(consul): State<Arc<Consul>>,
    Path(key): Path<String>,
    Query(q): Query<KvQuery>,
) -> Response {
    kv_remove(consul, key, q)
}

fn kv_remove(consul: Arc<Consul>, key: String, q: KvQuery) -> Response {
    if q.cas == Some(0) {
        return error(
            StatusCode::BAD_REQUEST,
            "Invalid cas index: must be greater than zero",
        );
    }
    let ok = consul.write(|data, next| {
        if let Some(cas) = q.cas
            && data.kv.get(&key).map(|e| e.modify_index) != Some(cas)
        {
            return (false, false);
        }
        let gone: Vec<String> = if q.recurse.is_some() {
            data.kv
                .keys()
                .filter(|k| k.starts_with(&key))
                .cloned()
                .collect()
        } else {
            data.kv
                .contains_key(&key)
                .then(|| key.clone())
                .into_iter()
                .collect()
        };
        for k in &gone {
            data.kv.remove(k);
            data.tombstones.insert(k.clone(), next);
        }
        // Deleting nothing still succeeds, as in Consul, without a new index.
        (true, !gone.is_empty())
    });
    axum::Json(ok).into_response()
}

// ---- sessions ----

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct SessionRequest {
    #[serde(default)]
    name: String,
    lock_delay: Option<serde_json::Value>,
    behavior: Option<String>,
    #[serde(rename = "TTL")]
    ttl: Option<String>,
    #[serde(default)]
    service_checks: Vec<ServiceCheckRef>,
}

#[derive(Debug, Deserialize)]
struct ServiceCheckRef {
    #[serde(rename = "ID")]
    id: String,
}

/// A Go duration as Consul takes it here: a string (`"15s"`) or nanoseconds.
fn go_duration(v: &serde_json::Value) -> Option<Duration> {
    match v {
        serde_json::Value::String(s) => parse_wait(s),
        serde_json::Value::Number(n) => n.as_u64().map(Duration::from_nanos),
        _ => None,
    }
}

async fn session_create(State(consul): State<Arc<Consul>>, body: Bytes) -> Response {
    let req: SessionRequest = if body.is_empty() {
        SessionRequest::default()
    } else {
        match serde_json::from_slice(&body) {
            Ok(r) => r,
            Err(e) => {
                return error(
                    StatusCode::BAD_REQUEST,
                    &format!("Request decode failed: {e}"),
                );
            }
        }
    };
    let ttl = match req.ttl.as_deref().filter(|t| !t.is_empty()) {
        None => None,
        Some(t) => match parse_wait(t) {
            Some(d) if d.is_zero() => None,
            Some(d) if (SESSION_TTL_MIN..=SESSION_TTL_MAX).contains(&d) => Some(d),
            Some(d) => {
                return error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    &format!(
                        "Invalid Session TTL '{}', must be between [10s=24h0m0s]",
                        d.as_nanos()
                    ),
                );
            }
            None => {
                return error(
                    StatusCode::BAD_REQUEST,
                    &format!("Request decode failed: time: invalid duration {t:?}"),
                );
            }
        },
    };
    let lock_delay = match &req.lock_delay {
        None => DEFAULT_LOCK_DELAY,
        Some(v) => match go_duration(v) {
            Some(d) => d.min(LOCK_DELAY_MAX),
            None => {
                return error(
                    StatusCode::BAD_REQUEST,
                    "Request decode failed: invalid LockDelay",
                );
            }
        },
    };
    let behavior = match req.behavior.as_deref() {
        None | Some("") | Some("release") => "release",
        Some("delete") => "delete",
        Some(b) => {
            return error(
                StatusCode::INTERNAL_SERVER_ERROR,
                &format!("Invalid Behavior setting '{b}'"),
            );
        }
    };
    let service_checks: Vec<String> = req.service_checks.into_iter().map(|c| c.id).collect();
    {
        let agent = consul.agent.lock().expect("stand-in lock");
        if let Some(c) = service_checks
            .iter()
            .find(|c| agent.checks.get(*c).is_none_or(|k| k.status == "critical"))
        {
            return error(
                StatusCode::INTERNAL_SERVER_ERROR,
                &format!("Check '{c}' is in critical state"),
            );
        }
    }
    let id = uuid::Uuid::new_v4().to_string();
    consul.write(|data, next| {
        data.sessions.insert(
            id.clone(),
            Session {
                id: id.clone(),
                name: req.name,
                lock_delay_ms: lock_delay.as_millis() as u64,
                behavior: behavior.to_string(),
                ttl: ttl.map(|_| req.ttl.clone().unwrap_or_default()),
                ttl_ms: ttl.map(|t| t.as_millis() as u64),
                expires_ms: ttl.map(|t| now_ms() + 2 * t.as_millis() as u64),
                service_checks,
                create_index: next,
                modify_index: next,
            },
        );
        ((), true)
    });
    axum::Json(json!({ "ID": id })).into_response()
}

async fn session_destroy(State(consul): State<Arc<Consul>>, Path(id): Path<String>) -> Response {
    consul.write(|data, next| ((), data.invalidate(&id, next)));
    axum::Json(true).into_response()
}

async fn session_renew(State(consul): State<Arc<Consul>>, Path(id): Path<String>) -> Response {
    let data = &mut consul.data.lock().expect("stand-in lock");
    let index = data.index;
    let Some(session) = data.sessions.get_mut(&id) else {
        return error(
            StatusCode::NOT_FOUND,
            &format!("Session id '{id}' not found"),
        );
    };
    if let Some(ttl) = session.ttl_ms {
        session.expires_ms = Some(now_ms() + 2 * ttl);
    }
    with_index(index, axum::Json(vec![session.render()]).into_response())
}

async fn session_info(State(consul): State<Arc<Consul>>, Path(id): Path<String>) -> Response {
    let data = consul.data.lock().expect("stand-in lock");
    let found: Vec<serde_json::Value> = data
        .sessions
        .get(&id)
        .map(Session::render)
        .into_iter()
        .collect();
    with_index(data.index, axum::Json(found).into_response())
}

async fn session_list(State(consul): State<Arc<Consul>>) -> Response {
    let data = consul.data.lock().expect("stand-in lock");
    let all: Vec<serde_json::Value> = data.sessions.values().map(Session::render).collect();
    with_index(data.index, axum::Json(all).into_response())
}

// ---- agent, catalog, health ----

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Registration {
    #[serde(rename = "ID")]
    id: Option<String>,
    name: String,
    #[serde(default)]
    tags: Vec<String>,
    #[serde(default)]
    address: String,
    #[serde(default)]
    port: u16,
    #[serde(default)]
    meta: BTreeMap<String, String>,
    check: Option<CheckDef>,
    #[serde(default)]
    checks: Vec<CheckDef>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct CheckDef {
    #[serde(rename = "CheckID")]
    check_id: Option<String>,
    name: Option<String>,
    #[serde(rename = "TTL")]
    ttl: Option<String>,
    status: Option<String>,
}

fn status_name(s: &str) -> Option<&'static str> {
    match s {
        "passing" => Some("passing"),
        "warning" => Some("warning"),
        "critical" => Some("critical"),
        _ => None,
    }
}

async fn service_register(State(consul): State<Arc<Consul>>, body: Bytes) -> Response {
    let reg: Registration = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                &format!("Request decode failed: {e}"),
            );
        }
    };
    if reg.name.is_empty() {
        return error(StatusCode::BAD_REQUEST, "Missing service name");
    }
    let id = reg
        .id
        .clone()
        .filter(|i| !i.is_empty())
        .unwrap_or_else(|| reg.name.clone());
    let mut defs: Vec<CheckDef> = reg.checks;
    let single = reg.check.is_some();
    defs.extend(reg.check);
    let mut checks = Vec::new();
    for (n, d) in defs.into_iter().enumerate() {
        let ttl = match d.ttl.as_deref().map(parse_wait) {
            Some(Some(t)) => Some(t),
            Some(None) => {
                return error(
                    StatusCode::BAD_REQUEST,
                    "Invalid check: TTL must be a duration",
                );
            }
            None => {
                return error(
                    StatusCode::BAD_REQUEST,
                    "Invalid check: only TTL checks are served by this stand-in",
                );
            }
        };
        let status = match d.status.as_deref() {
            None | Some("") => "critical",
            Some(s) => match status_name(s) {
                Some(s) => s,
                None => {
                    return error(
                        StatusCode::BAD_REQUEST,
                        &format!("Invalid check status: {s:?}"),
                    );
                }
            },
        };
        let check_id = d.check_id.unwrap_or_else(|| {
            if single {
                format!("service:{id}")
            } else {
                format!("service:{id}:{}", n + 1)
            }
        });
        checks.push((check_id, d.name, ttl, status));
    }
    let index = consul.bump();
    let mut agent = consul.agent.lock().expect("stand-in lock");
    // Re-registering replaces the service's checks.
    agent.checks.retain(|_, c| c.service_id != id);
    let create_index = agent
        .services
        .get(&id)
        .map(|s| s.create_index)
        .unwrap_or(index);
    agent.services.insert(
        id.clone(),
        Service {
            id: id.clone(),
            name: reg.name.clone(),
            tags: reg.tags,
            address: reg.address,
            port: reg.port,
            meta: reg.meta,
            create_index,
            modify_index: index,
        },
    );
    for (check_id, name, ttl, status) in checks {
        agent.checks.insert(
            check_id.clone(),
            Check {
                id: check_id.clone(),
                name: name.unwrap_or_else(|| format!("Service '{}' check", reg.name)),
                service_id: id.clone(),
                service_name: reg.name.clone(),
                status,
                output: String::new(),
                ttl,
                deadline: ttl.map(|t| tokio::time::Instant::now() + t),
                create_index: index,
                modify_index: index,
            },
        );
    }
    agent.index = index;
    StatusCode::OK.into_response()
}

async fn service_deregister(State(consul): State<Arc<Consul>>, Path(id): Path<String>) -> Response {
    let mut agent = consul.agent.lock().expect("stand-in lock");
    if agent.services.remove(&id).is_none() {
        return error(
            StatusCode::NOT_FOUND,
            &format!(
                "Unknown service ID {id:?}. Ensure that the service ID is passed, not the service name."
            ),
        );
    }
    agent.checks.retain(|_, c| c.service_id != id);
    agent.index = consul.bump();
    StatusCode::OK.into_response()
}

#[derive(Debug, Default, Deserialize)]
struct NoteQuery {
    note: Option<String>,
}

async fn check_update(
    State(consul): State<Arc<Consul>>,
    Path((verb, id)): Path<(String, String)>,
    Query(q): Query<NoteQuery>,
) -> Response {
    let status = match verb.as_str() {
        "pass" => "passing",
        "warn" => "warning",
        "fail" => "critical",
        _ => return error(StatusCode::NOT_FOUND, "Unknown check action"),
    };
    let mut agent = consul.agent.lock().expect("stand-in lock");
    let Some(check) = agent.checks.get_mut(&id) else {
        return error(
            StatusCode::NOT_FOUND,
            &format!(
                "Unknown check ID {id:?}. Ensure that the check ID is passed, not the check name."
            ),
        );
    };
    check.deadline = check.ttl.map(|t| tokio::time::Instant::now() + t);
    let note = q.note.unwrap_or_default();
    if check.status != status || check.output != note {
        check.status = status;
        check.output = note;
        let index = consul.bump();
        check.modify_index = index;
        agent.index = index;
    }
    StatusCode::OK.into_response()
}

/// Blocks until the agent's index passes `wanted` or the wait ends.
async fn block_on_agent(consul: &Consul, wanted: Option<u64>, wait: Option<&str>) {
    let Some(wanted) = wanted else { return };
    let wait = wait
        .and_then(parse_wait)
        .unwrap_or(DEFAULT_WAIT)
        .min(MAX_WAIT);
    let jitter = Duration::from_millis(rand::random::<u64>() % (wait.as_millis() as u64 / 16 + 1));
    let deadline = tokio::time::Instant::now() + wait + jitter;
    let mut changes = consul.changed.subscribe();
    loop {
        if agent_index(consul) > wanted {
            return;
        }
        if tokio::time::timeout_at(deadline, changes.changed())
            .await
            .is_err()
        {
            return;
        }
    }
}

fn agent_index(consul: &Consul) -> u64 {
    consul.agent.lock().expect("stand-in lock").index.max(1)
}

#[derive(Debug, Default, Deserialize)]
struct CatalogQuery {
    index: Option<u64>,
    wait: Option<String>,
    passing: Option<String>,
    tag: Option<String>,
}

fn node() -> serde_json::Value {
    json!({
        "ID": "6f3cbd1e-0000-4000-8000-000000000001",
        "Node": NODE,
        "Address": "127.0.0.1",
        "Datacenter": "dc1",
        "TaggedAddresses": { "lan": "127.0.0.1", "wan": "127.0.0.1" },
        "Meta": {},
        "CreateIndex": 1,
        "ModifyIndex": 1,
    })
}

/// A service's tagged addresses as an agent fills them in: its own address,
/// on the LAN and the WAN, when it has one.
fn tagged_addresses(s: &Service) -> serde_json::Value {
    if s.address.is_empty() {
        return json!({});
    }
    let at = json!({ "Address": s.address, "Port": s.port });
    json!({ "lan_ipv4": at, "wan_ipv4": at })
}

async fn catalog_services(
    State(consul): State<Arc<Consul>>,
    Query(q): Query<CatalogQuery>,
) -> Response {
    block_on_agent(&consul, q.index, q.wait.as_deref()).await;
    let agent = consul.agent.lock().expect("stand-in lock");
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::from([("consul".to_string(), vec![])]);
    for s in agent.services.values() {
        let tags = out.entry(s.name.clone()).or_default();
        for t in &s.tags {
            if !tags.contains(t) {
                tags.push(t.clone());
            }
        }
    }
    with_index(agent.index.max(1), axum::Json(out).into_response())
}

/// The registered instances of service `name` (with tag `?tag=`, when given).
fn instances<'a>(
    agent: &'a Agent,
    name: &'a str,
    q: &'a CatalogQuery,
) -> impl Iterator<Item = &'a Service> {
    agent
        .services
        .values()
        .filter(move |s| s.name == name && q.tag.as_ref().is_none_or(|t| s.tags.contains(t)))
}

async fn catalog_service(
    State(consul): State<Arc<Consul>>,
    Path(name): Path<String>,
    Query(q): Query<CatalogQuery>,
) -> Response {
    block_on_agent(&consul, q.index, q.wait.as_deref()).await;
    let agent = consul.agent.lock().expect("stand-in lock");
    let n = node();
    let body: Vec<serde_json::Value> = instances(&agent, &name, &q)
        .map(|s| {
            json!({
                "ID": n["ID"], "Node": NODE, "Address": "127.0.0.1", "Datacenter": "dc1",
                "TaggedAddresses": n["TaggedAddresses"], "NodeMeta": {},
                "ServiceKind": "", "ServiceID": s.id, "ServiceName": s.name, "ServiceTags": s.tags,
                "ServiceAddress": s.address, "ServicePort": s.port, "ServiceMeta": s.meta,
                "ServiceTaggedAddresses": tagged_addresses(s),
                "ServiceWeights": { "Passing": 1, "Warning": 1 }, "ServiceEnableTagOverride": false,
                "ServiceProxy": { "MeshGateway": {}, "Expose": {} }, "ServiceConnect": {},
                "CreateIndex": s.create_index, "ModifyIndex": s.modify_index,
            })
        })
        .collect();
    with_index(agent.index.max(1), axum::Json(body).into_response())
}

async fn health_service(
    State(consul): State<Arc<Consul>>,
    Path(name): Path<String>,
    Query(q): Query<CatalogQuery>,
) -> Response {
    block_on_agent(&consul, q.index, q.wait.as_deref()).await;
    let agent = consul.agent.lock().expect("stand-in lock");
    let serf = json!({
        "Node": NODE, "CheckID": "serfHealth", "Name": "Serf Health Status", "Status": "passing",
        "Notes": "", "Output": "Agent alive and reachable", "ServiceID": "", "ServiceName": "",
        "ServiceTags": [], "Type": "", "CreateIndex": 1, "ModifyIndex": 1,
    });
    let body: Vec<serde_json::Value> = instances(&agent, &name, &q)
        .filter_map(|s| {
            let checks: Vec<&Check> = agent.checks.values().filter(|c| c.service_id == s.id).collect();
            if q.passing.is_some() && checks.iter().any(|c| c.status != "passing") {
                return None;
            }
            let mut rendered = vec![serf.clone()];
            rendered.extend(checks.iter().map(|c| {
                json!({
                    "Node": NODE, "CheckID": c.id, "Name": c.name, "Status": c.status, "Notes": "",
                    "Output": c.output, "ServiceID": c.service_id, "ServiceName": c.service_name,
                    "ServiceTags": s.tags, "Type": "ttl", "CreateIndex": c.create_index, "ModifyIndex": c.modify_index,
                })
            }));
            Some(json!({
                "Node": node(),
                "Service": {
                    "ID": s.id, "Service": s.name, "Tags": s.tags, "Address": s.address, "Port": s.port,
                    "TaggedAddresses": tagged_addresses(s), "Meta": s.meta, "Weights": { "Passing": 1, "Warning": 1 }, "EnableTagOverride": false,
                    "CreateIndex": s.create_index, "ModifyIndex": s.modify_index,
                },
                "Checks": rendered,
            }))
        })
        .collect();
    with_index(agent.index.max(1), axum::Json(body).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_parse_as_consul_writes_them() {
        assert_eq!(parse_wait("10s"), Some(Duration::from_secs(10)));
        assert_eq!(parse_wait("1500ms"), Some(Duration::from_millis(1500)));
        assert_eq!(parse_wait("2m"), Some(Duration::from_secs(120)));
        assert_eq!(parse_wait("7"), Some(Duration::from_secs(7)));
        assert_eq!(parse_wait("soon"), None);
    }
}
