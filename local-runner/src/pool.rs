//! A function's execution environments: child processes running the function
//! binary against our Runtime API, one invocation at a time each, as on Lambda.
//!
//! - Instances start on demand up to `max_instances` (and `min_instances` are
//!   kept warm); an instance idle past the idle timeout is stopped (above min).
//! - The deadline is enforced as the platform does: at the timeout the process is
//!   killed and the invocation fails with `Sandbox.Timedout`; the next one gets a
//!   fresh instance. The deadline belongs to the pool, not to the caller: an
//!   invocation runs in a task of its own, so a caller that goes away (a client
//!   that hung up on the gateway) cannot take the deadline with it.
//! - An instance that answered but does not ask for its next event within the
//!   timeout is hung (its runtime is stuck after the handler): it is killed and
//!   replaced. An invocation that finds no instance within the timeout (every
//!   one busy) fails with `TooManyRequestsException`, as a throttled invoke does.
//! - A process that exits is replaced; its invocation fails with `Runtime.ExitError`.
//! - With freezing on, an instance that asks for its next event is stopped
//!   (SIGSTOP) and resumed (SIGCONT) only to take one, as Lambda freezes idle
//!   environments: background work between invocations does not run here either.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde::Serialize;
use tokio::process::Command;
use tokio::sync::{Mutex, mpsc, oneshot};

/// Lambda's limit on the init phase.
pub const INIT_TIMEOUT: Duration = Duration::from_secs(10);
/// Lambda's synchronous response limit.
pub const MAX_RESPONSE_BYTES: usize = 6 * 1024 * 1024;
pub const ACCOUNT_ID: &str = "123456789012";
pub const REGION: &str = "us-east-1";

#[derive(Debug, Clone)]
pub struct FunctionSpec {
    pub name: String,
    pub binary: PathBuf,
    pub environment: Vec<(String, String)>,
    pub timeout: Duration,
    pub memory_mb: u32,
    pub min_instances: u32,
    pub max_instances: u32,
}

impl FunctionSpec {
    pub fn arn(&self) -> String {
        format!(
            "arn:aws:lambda:{REGION}:{ACCOUNT_ID}:function:{}",
            self.name
        )
    }
}

/// How an invocation ended, as the Invoke API reports it.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// The function's response payload.
    Success(Bytes),
    /// `X-Amz-Function-Error: Unhandled`, with the runtime's diagnostic JSON or the platform's.
    Error(Bytes),
}

impl Outcome {
    pub fn is_success(&self) -> bool {
        matches!(self, Outcome::Success(_))
    }

    fn platform_error(error_type: &str, message: &str) -> Self {
        Outcome::Error(Bytes::from(
            serde_json::json!({ "errorType": error_type, "errorMessage": message }).to_string(),
        ))
    }
}

pub struct Invocation {
    pub request_id: String,
    pub payload: Bytes,
    pub deadline_ms: u64,
    pub trace_id: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum InstanceState {
    Starting,
    Idle,
    Busy,
    Retiring,
}

impl Instance {
    /// Marks it retiring and kills its process (resumed first, if frozen).
    fn retire(&mut self) {
        self.state = InstanceState::Retiring;
        signal(self.pid, libc::SIGCONT);
        signal(self.pid, libc::SIGKILL);
    }
}

struct Instance {
    /// The secret in the path of its `AWS_LAMBDA_RUNTIME_API`: only this
    /// instance (and the runner's user) knows it, so only it can play its runtime.
    secret: String,
    pid: u32,
    state: InstanceState,
    frozen: bool,
    started: Instant,
    last_used: Instant,
    mailbox: mpsc::Sender<Invocation>,
    inbox: Arc<Mutex<mpsc::Receiver<Invocation>>>,
    /// The invocation it is running, and where its outcome goes.
    current: Option<(String, oneshot::Sender<Outcome>)>,
    /// When it answered its last invocation, until it asks for the next one.
    answered: Option<Instant>,
}

enum Readiness {
    Ready(u64),
    /// An instance's process exited before its first `/next`, and when.
    InitFailed(u64, String, Instant),
}

#[derive(Default, Serialize)]
pub struct Counters {
    pub invocations: AtomicU64,
    pub errors: AtomicU64,
    pub timeouts: AtomicU64,
    /// Instances killed for not asking for their next event after answering.
    pub hung: AtomicU64,
    /// Invocations that found no instance within the timeout.
    pub throttles: AtomicU64,
    pub crashes: AtomicU64,
    pub cold_starts: AtomicU64,
}

#[derive(Debug, Serialize)]
pub struct InstanceStatus {
    pub id: u64,
    pub pid: u32,
    pub state: InstanceState,
    pub frozen: bool,
    pub age_seconds: u64,
}

#[derive(Debug, Serialize)]
pub struct PoolStatus {
    pub function: String,
    pub instances: Vec<InstanceStatus>,
    pub in_flight: usize,
    /// Invocations waiting for an instance.
    pub waiting: u64,
    pub invocations: u64,
    pub errors: u64,
    pub timeouts: u64,
    pub hung: u64,
    pub throttles: u64,
    pub crashes: u64,
    pub cold_starts: u64,
}

pub struct Pool {
    pub spec: FunctionSpec,
    runtime_api: String,
    freeze_idle: bool,
    idle_timeout: Duration,
    instances: Mutex<HashMap<u64, Instance>>,
    next_id: AtomicU64,
    ready_tx: mpsc::UnboundedSender<Readiness>,
    ready_rx: Mutex<mpsc::UnboundedReceiver<Readiness>>,
    waiting: AtomicU64,
    pub counters: Counters,
}

impl Pool {
    /// `runtime_api` is the `host:port` of the Runtime API server.
    pub fn new(
        spec: FunctionSpec,
        runtime_api: String,
        freeze_idle: bool,
        idle_timeout: Duration,
    ) -> Arc<Self> {
        let (ready_tx, ready_rx) = mpsc::unbounded_channel();
        Arc::new(Self {
            spec,
            runtime_api,
            freeze_idle,
            idle_timeout,
            instances: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(1),
            ready_tx,
            ready_rx: Mutex::new(ready_rx),
            waiting: AtomicU64::new(0),
            counters: Counters::default(),
        })
    }

    /// Starts the warm instances and the idle reaper.
    pub async fn start(self: &Arc<Self>) -> std::io::Result<()> {
        for _ in 0..self.spec.min_instances {
            self.spawn_instance().await?;
        }
        let pool = Arc::downgrade(self);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(1)).await;
                let Some(pool) = pool.upgrade() else { return };
                pool.reap_idle().await;
                pool.reap_hung().await;
                pool.keep_warm().await;
            }
        });
        Ok(())
    }

    async fn spawn_instance(self: &Arc<Self>) -> std::io::Result<u64> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let secret = crate::secrets::generate();
        let spec = &self.spec;
        let mut cmd = Command::new(&spec.binary);
        let task_root = spec
            .binary
            .parent()
            .map(|p| p.display().to_string())
            .unwrap_or_default();
        let stream = format!(
            "{}/[$LATEST]{:032x}",
            chrono::Utc::now().format("%Y/%m/%d"),
            rand::random::<u128>()
        );
        cmd.env_clear()
            .envs(std::env::vars().filter(|(k, _)| {
                k == "PATH" || k == "HOME" || k == "RUST_LOG" || k == "RUST_BACKTRACE"
            }))
            .env(
                "AWS_LAMBDA_RUNTIME_API",
                format!(
                    "http://{}/fn/{}/{}/{}",
                    self.runtime_api, spec.name, id, secret
                ),
            )
            .env("AWS_LAMBDA_FUNCTION_NAME", &spec.name)
            .env("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
            .env(
                "AWS_LAMBDA_FUNCTION_MEMORY_SIZE",
                spec.memory_mb.to_string(),
            )
            .env(
                "AWS_LAMBDA_FUNCTION_TIMEOUT",
                spec.timeout.as_secs().to_string(),
            )
            .env(
                "AWS_LAMBDA_LOG_GROUP_NAME",
                format!("/aws/lambda/{}", spec.name),
            )
            .env("AWS_LAMBDA_LOG_STREAM_NAME", stream)
            .env("AWS_LAMBDA_INITIALIZATION_TYPE", "on-demand")
            .env("AWS_EXECUTION_ENV", "AWS_Lambda_provided.al2023")
            .env("AWS_REGION", REGION)
            .env("AWS_DEFAULT_REGION", REGION)
            .env("LAMBDA_TASK_ROOT", task_root)
            .env("LAMBDA_RUNTIME_DIR", "/var/runtime")
            .env("_HANDLER", "bootstrap")
            .env("TZ", ":UTC")
            .envs(
                spec.environment
                    .iter()
                    .map(|(k, v)| (k.as_str(), v.as_str())),
            )
            .stdin(std::process::Stdio::null())
            .kill_on_drop(true);
        // The instance is known before its process can ask for an event: the
        // lock is held across the spawn (a first `/next` arriving before the
        // insert was refused, and lambda_runtime panics on that refusal).
        let mut instances = self.instances.lock().await;
        let mut child = cmd.spawn()?;
        let pid = child.id().unwrap_or_default();
        let (mailbox, inbox) = mpsc::channel(1);
        let now = Instant::now();
        instances.insert(
            id,
            Instance {
                secret,
                pid,
                state: InstanceState::Starting,
                frozen: false,
                started: now,
                last_used: now,
                mailbox,
                inbox: Arc::new(Mutex::new(inbox)),
                current: None,
                answered: None,
            },
        );
        drop(instances);
        self.counters.cold_starts.fetch_add(1, Ordering::Relaxed);
        tracing::info!(function = %spec.name, instance = id, pid, "instance started");
        // Lambda's init limit: an instance that has not asked for an event in time is killed.
        let watchdog = Arc::downgrade(self);
        tokio::spawn(async move {
            tokio::time::sleep(INIT_TIMEOUT).await;
            let Some(pool) = watchdog.upgrade() else {
                return;
            };
            if pool
                .instances
                .lock()
                .await
                .get(&id)
                .is_some_and(|i| i.state == InstanceState::Starting)
            {
                tracing::warn!(function = %pool.spec.name, instance = id, "init phase over {}s; killing", INIT_TIMEOUT.as_secs());
                signal(pid, libc::SIGKILL);
            }
        });
        // Supervise: on exit, fail what it was running and forget it.
        let pool = self.clone();
        tokio::spawn(async move {
            let status = child
                .wait()
                .await
                .map(|s| s.to_string())
                .unwrap_or_else(|e| e.to_string());
            pool.on_exit(id, &status).await;
        });
        Ok(id)
    }

    async fn on_exit(&self, id: u64, status: &str) {
        let Some(instance) = self.instances.lock().await.remove(&id) else {
            return;
        };
        let retiring = instance.state == InstanceState::Retiring;
        if let Some((request_id, done)) = instance.current {
            self.counters.crashes.fetch_add(1, Ordering::Relaxed);
            tracing::error!(function = %self.spec.name, instance = id, request_id, status, "instance exited during an invocation");
            let _ = done.send(Outcome::platform_error(
                "Runtime.ExitError",
                &format!("RequestId: {request_id} Error: Runtime exited ({status})"),
            ));
        } else if instance.state == InstanceState::Starting {
            self.counters.crashes.fetch_add(1, Ordering::Relaxed);
            tracing::error!(function = %self.spec.name, instance = id, status, "instance exited during init");
            let _ = self.ready_tx.send(Readiness::InitFailed(
                id,
                status.to_string(),
                Instant::now(),
            ));
        } else if !retiring {
            self.counters.crashes.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(function = %self.spec.name, instance = id, status, "idle instance exited");
        }
    }

    /// Whether `secret` is instance `id`'s: the Runtime API serves a call only then.
    pub async fn authorized(&self, id: u64, secret: &str) -> bool {
        self.instances
            .lock()
            .await
            .get(&id)
            .is_some_and(|i| crate::secrets::same(secret.as_bytes(), i.secret.as_bytes()))
    }

    /// The `AWS_LAMBDA_RUNTIME_API` instance `id` was given, for tests that play its runtime.
    #[cfg(test)]
    pub(crate) async fn runtime_api_of(&self, id: u64) -> Option<String> {
        let instances = self.instances.lock().await;
        let i = instances.get(&id)?;
        Some(format!(
            "http://{}/fn/{}/{id}/{}",
            self.runtime_api, self.spec.name, i.secret
        ))
    }

    /// Called by the Runtime API when an instance asks for its next event.
    /// Returns the instance's inbox to wait on.
    pub async fn next_requested(&self, id: u64) -> Option<Arc<Mutex<mpsc::Receiver<Invocation>>>> {
        let mut instances = self.instances.lock().await;
        let instance = instances.get_mut(&id)?;
        if let Some((request_id, done)) = instance.current.take() {
            // It asked for more without answering: Lambda reports the invocation as failed.
            let _ = done.send(Outcome::platform_error("Runtime.NoResponse", &format!("RequestId: {request_id} the runtime asked for the next event without a response")));
        }
        if instance.state == InstanceState::Retiring {
            return Some(instance.inbox.clone());
        }
        instance.state = InstanceState::Idle;
        instance.answered = None;
        instance.last_used = Instant::now();
        if self.freeze_idle {
            signal(instance.pid, libc::SIGSTOP);
            instance.frozen = true;
        }
        let _ = self.ready_tx.send(Readiness::Ready(id));
        Some(instance.inbox.clone())
    }

    /// Called by the Runtime API with an instance's response or error.
    /// Returns false when the request id is not the one the instance is running.
    pub async fn complete(&self, id: u64, request_id: &str, outcome: Outcome) -> bool {
        let mut instances = self.instances.lock().await;
        let Some(instance) = instances.get_mut(&id) else {
            return false;
        };
        match instance.current.take() {
            Some((current, done)) if current == request_id => {
                let _ = done.send(outcome);
                instance.answered = Some(Instant::now());
                true
            }
            other => {
                instance.current = other;
                false
            }
        }
    }

    /// Records an init error reported by the runtime (`/runtime/init/error`).
    pub async fn init_error(&self, id: u64, body: &[u8]) {
        tracing::error!(function = %self.spec.name, instance = id, error = %String::from_utf8_lossy(body), "init error reported by the runtime");
    }

    /// Invokes the function once (RequestResponse), starting an instance if none is free.
    /// The invocation runs in a task of the pool's: if the caller goes away,
    /// it still ends, by its answer or by its deadline.
    pub async fn invoke(self: &Arc<Self>, payload: Bytes) -> Outcome {
        self.counters.invocations.fetch_add(1, Ordering::Relaxed);
        let pool = self.clone();
        tokio::spawn(async move {
            let outcome = pool.invoke_inner(payload).await;
            // Counted here, where it is known even when nobody waits for it.
            if !outcome.is_success() {
                pool.counters.errors.fetch_add(1, Ordering::Relaxed);
            }
            outcome
        })
        .await
        .unwrap_or_else(|e| {
            self.counters.errors.fetch_add(1, Ordering::Relaxed);
            Outcome::platform_error(
                "Runtime.Unknown",
                &format!("the invocation task failed: {e}"),
            )
        })
    }

    async fn invoke_inner(self: &Arc<Self>, payload: Bytes) -> Outcome {
        let request_id = uuid::Uuid::new_v4().to_string();
        let id = match self.acquire().await {
            Ok(id) => id,
            Err(outcome) => return outcome,
        };
        let timeout = self.spec.timeout;
        let deadline_ms =
            (chrono::Utc::now().timestamp_millis() as u64) + timeout.as_millis() as u64;
        let (done_tx, done_rx) = oneshot::channel();
        let invocation = Invocation {
            request_id: request_id.clone(),
            payload,
            deadline_ms,
            trace_id: xray_trace_id(),
        };
        {
            let mut instances = self.instances.lock().await;
            let Some(instance) = instances.get_mut(&id) else {
                return Outcome::platform_error(
                    "Runtime.ExitError",
                    "the instance exited before the invocation started",
                );
            };
            instance.state = InstanceState::Busy;
            instance.current = Some((request_id.clone(), done_tx));
            if instance.frozen {
                signal(instance.pid, libc::SIGCONT);
                instance.frozen = false;
            }
            if instance.mailbox.try_send(invocation).is_err() {
                instance.current = None;
                return Outcome::platform_error("Runtime.ExitError", "the instance is gone");
            }
        }
        match tokio::time::timeout(timeout, done_rx).await {
            Ok(Ok(outcome)) => outcome,
            Ok(Err(_)) => Outcome::platform_error(
                "Runtime.ExitError",
                &format!("RequestId: {request_id} the instance went away"),
            ),
            Err(_) => {
                self.counters.timeouts.fetch_add(1, Ordering::Relaxed);
                let mut instances = self.instances.lock().await;
                if let Some(instance) = instances.get_mut(&id) {
                    instance.current = None;
                    instance.retire();
                }
                tracing::warn!(function = %self.spec.name, instance = id, request_id, "task timed out; instance killed");
                Outcome::platform_error(
                    "Sandbox.Timedout",
                    &format!(
                        "RequestId: {request_id} Error: Task timed out after {:.2} seconds",
                        timeout.as_secs_f64()
                    ),
                )
            }
        }
    }

    /// Takes an idle instance, starting one when none is free and the pool is below its maximum.
    async fn acquire(self: &Arc<Self>) -> Result<u64, Outcome> {
        self.waiting.fetch_add(1, Ordering::SeqCst);
        let result = self.acquire_inner().await;
        self.waiting.fetch_sub(1, Ordering::SeqCst);
        result
    }

    async fn acquire_inner(self: &Arc<Self>) -> Result<u64, Outcome> {
        let since = Instant::now();
        // As long as a cold start may take, and no less than the function's timeout.
        let patience = self.spec.timeout.max(INIT_TIMEOUT + Duration::from_secs(1));
        loop {
            if since.elapsed() >= patience {
                self.counters.throttles.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(function = %self.spec.name, waited_ms = since.elapsed().as_millis() as u64, "no instance became free; invocation throttled");
                return Err(Outcome::platform_error(
                    "TooManyRequestsException",
                    &format!(
                        "Rate Exceeded. No instance of {} became free within {} s (max_instances {})",
                        self.spec.name,
                        patience.as_secs(),
                        self.spec.max_instances
                    ),
                ));
            }
            self.scale_up().await;
            let readiness = {
                let mut rx = self.ready_rx.lock().await;
                // Re-check scaling while waiting, so that an instance lost meanwhile is replaced.
                match tokio::time::timeout(Duration::from_millis(500), rx.recv()).await {
                    Ok(Some(r)) => r,
                    Ok(None) => {
                        return Err(Outcome::platform_error(
                            "Runtime.Unavailable",
                            "the pool is shut down",
                        ));
                    }
                    Err(_) => continue,
                }
            };
            match readiness {
                Readiness::Ready(id) => {
                    // Claimed under the lock: the idle reaper retires only
                    // idle instances, so it cannot take this one away now.
                    let mut instances = self.instances.lock().await;
                    if let Some(i) = instances
                        .get_mut(&id)
                        .filter(|i| i.state == InstanceState::Idle && i.current.is_none())
                    {
                        i.state = InstanceState::Busy;
                        return Ok(id);
                    }
                }
                // A failure before this invocation waited (a pre-warmed
                // instance, say) is not its cold start: it was logged, and
                // the pool replaces the instance.
                Readiness::InitFailed(_, _, at) if at < since => {}
                Readiness::InitFailed(id, status, _) => {
                    return Err(Outcome::platform_error(
                        "Runtime.ExitError",
                        &format!(
                            "instance {id} of {} exited during init ({status})",
                            self.spec.name
                        ),
                    ));
                }
            }
        }
    }

    /// Starts instances for waiting invocations that no idle or starting instance will serve.
    async fn scale_up(self: &Arc<Self>) {
        let (live, starting, idle) = {
            let instances = self.instances.lock().await;
            let live = instances
                .values()
                .filter(|i| i.state != InstanceState::Retiring)
                .count() as u64;
            let starting = instances
                .values()
                .filter(|i| i.state == InstanceState::Starting)
                .count() as u64;
            let idle = instances
                .values()
                .filter(|i| i.state == InstanceState::Idle)
                .count() as u64;
            (live, starting, idle)
        };
        let waiting = self.waiting.load(Ordering::SeqCst);
        let mut missing = waiting.saturating_sub(starting + idle);
        let mut room = (self.spec.max_instances as u64).saturating_sub(live);
        while missing > 0 && room > 0 {
            if let Err(e) = self.spawn_instance().await {
                tracing::error!(function = %self.spec.name, binary = %self.spec.binary.display(), error = %e, "cannot start instance");
                tokio::time::sleep(Duration::from_secs(1)).await;
                return;
            }
            missing -= 1;
            room -= 1;
        }
    }

    /// Restores the warm minimum after an instance was lost.
    async fn keep_warm(self: &Arc<Self>) {
        let live = self
            .instances
            .lock()
            .await
            .values()
            .filter(|i| i.state != InstanceState::Retiring)
            .count() as u32;
        for _ in live..self.spec.min_instances {
            if let Err(e) = self.spawn_instance().await {
                tracing::error!(function = %self.spec.name, error = %e, "cannot restore a warm instance");
                return;
            }
        }
    }

    /// Kills instances that answered but have not asked for their next event
    /// within the function's timeout: their runtime is stuck after the handler.
    async fn reap_hung(&self) {
        let mut instances = self.instances.lock().await;
        for (id, instance) in instances.iter_mut() {
            if instance.state == InstanceState::Busy
                && instance.current.is_none()
                && instance
                    .answered
                    .is_some_and(|at| at.elapsed() >= self.spec.timeout)
            {
                self.counters.hung.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(function = %self.spec.name, instance = id, pid = instance.pid, timeout_s = self.spec.timeout.as_secs(), "instance answered but did not ask for its next event; killed as hung");
                instance.retire();
            }
        }
    }

    async fn reap_idle(&self) {
        let mut instances = self.instances.lock().await;
        let min = self.spec.min_instances as usize;
        let mut live = instances
            .values()
            .filter(|i| i.state != InstanceState::Retiring)
            .count();
        for (id, instance) in instances.iter_mut() {
            if live <= min {
                break;
            }
            if instance.state == InstanceState::Idle
                && instance.last_used.elapsed() >= self.idle_timeout
            {
                tracing::info!(function = %self.spec.name, instance = id, "stopping idle instance");
                instance.retire();
                live -= 1;
            }
        }
    }

    /// Stops every instance.
    pub async fn shutdown(&self) {
        let mut instances = self.instances.lock().await;
        for instance in instances.values_mut() {
            instance.retire();
        }
    }

    pub async fn status(&self) -> PoolStatus {
        let instances = self.instances.lock().await;
        let mut list: Vec<InstanceStatus> = instances
            .iter()
            .map(|(id, i)| InstanceStatus {
                id: *id,
                pid: i.pid,
                state: i.state,
                frozen: i.frozen,
                age_seconds: i.started.elapsed().as_secs(),
            })
            .collect();
        list.sort_by_key(|i| i.id);
        let c = &self.counters;
        PoolStatus {
            function: self.spec.name.clone(),
            in_flight: instances.values().filter(|i| i.current.is_some()).count(),
            waiting: self.waiting.load(Ordering::SeqCst),
            instances: list,
            invocations: c.invocations.load(Ordering::Relaxed),
            errors: c.errors.load(Ordering::Relaxed),
            timeouts: c.timeouts.load(Ordering::Relaxed),
            hung: c.hung.load(Ordering::Relaxed),
            throttles: c.throttles.load(Ordering::Relaxed),
            crashes: c.crashes.load(Ordering::Relaxed),
            cold_starts: c.cold_starts.load(Ordering::Relaxed),
        }
    }
}

fn signal(pid: u32, sig: libc::c_int) {
    if pid > 0 {
        // SAFETY: kill(2) with a pid we started; a stale pid at worst gets ESRCH.
        unsafe {
            libc::kill(pid as libc::pid_t, sig);
        }
    }
}

/// An X-Ray trace header as Lambda passes it in `Lambda-Runtime-Trace-Id`.
fn xray_trace_id() -> String {
    let epoch = chrono::Utc::now().timestamp() as u32;
    let root: u128 = rand::random::<u128>() >> 32;
    let parent: u64 = rand::random();
    format!("Root=1-{epoch:08x}-{root:024x};Parent={parent:016x};Sampled=0")
}
