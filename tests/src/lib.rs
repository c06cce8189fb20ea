//! Helpers for Stratus's integration and end-to-end tests. Each test gets its
//! own RabbitMQ vhost, ports and `STRATUS_HOME`, so tests do not collide.

pub mod cloudstack;
pub mod events;
pub mod faults;
pub mod inproc;
pub mod vm_flow;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, ConfirmSelectOptions, QueueBindOptions,
    QueueDeclareOptions,
};
use lapin::types::FieldTable;
use lapin::{Channel, Connection};
use stratus_contracts::config::Config;
use stratus_contracts::topology::Topology;
use stratus_messaging::broker;
use stratus_messaging::publisher::{Outgoing, Publisher};
use stratus_messaging::rmq_event::{self, RmqMessage};

/// The workspace root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

/// Where `cargo build --workspace --bins` put the binaries.
pub fn bin_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("target"));
    let dir = target.join("debug");
    assert!(
        dir.join("stratus-local").is_file(),
        "{} has no stratus-local: run `cargo build --workspace --bins` first (scripts/test does)",
        dir.display()
    );
    dir
}

fn rabbitmqctl(args: &[&str]) {
    let out = Command::new("rabbitmqctl")
        .args(args)
        .output()
        .expect("rabbitmqctl runs (is RabbitMQ installed?)");
    assert!(
        out.status.success(),
        "rabbitmqctl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A test's own vhost and state directory; both are removed on drop.
pub struct TestEnv {
    pub name: String,
    pub vhost: String,
    pub home: PathBuf,
    pub config: Config,
}

impl TestEnv {
    pub fn new(name: &str) -> Self {
        let vhost = format!(
            "test-{name}-{}",
            &uuid::Uuid::new_v4().simple().to_string()[..8]
        );
        rabbitmqctl(&["-q", "add_vhost", &vhost]);
        rabbitmqctl(&[
            "-q",
            "set_permissions",
            "-p",
            &vhost,
            "guest",
            ".*",
            ".*",
            ".*",
        ]);
        let home = std::env::temp_dir().join(format!("stratus-{vhost}"));
        std::fs::create_dir_all(&home).unwrap();
        let config = Config::from_lookup(|k| match k {
            "STRATUS_AMQP_VHOST" => Some(vhost.clone()),
            "STRATUS_HOME" => Some(home.display().to_string()),
            _ => std::env::var(k).ok(),
        })
        .unwrap();
        Self {
            name: name.to_string(),
            vhost,
            home,
            config,
        }
    }

    /// A topology file for this test: the repository's, with delay tiers, attempts
    /// and delivery limits shortened so that retries finish within a test.
    pub fn fast_topology(&self, max_attempts: u32, delivery_limit: u32) -> (PathBuf, Topology) {
        let mut t = Topology::parse("builtin", broker::BUILTIN_TOPOLOGY).unwrap();
        t.retry.max_attempts = max_attempts;
        for (i, tier) in t.retry.tiers.iter_mut().enumerate() {
            tier.delay_ms = 100 * (i as u64 + 1);
        }
        t.queue_defaults.delivery_limit = Some(delivery_limit);
        let path = self.home.join("topology.json");
        std::fs::write(&path, serde_json::to_vec_pretty(&t).unwrap()).unwrap();
        (path, t)
    }

    pub async fn connect(&self) -> Connection {
        broker::connect(&self.config, &format!("test {}", self.name))
            .await
            .unwrap()
    }

    pub fn publisher(&self, topology: Topology) -> Publisher {
        Publisher::new(
            self.config.clone(),
            Arc::new(topology),
            &format!("test {}", self.name),
        )
    }

    /// Declares a queue bound to `exchange` with `key`, for a test to watch.
    pub async fn watch(&self, connection: &Connection, exchange: &str, key: &str) -> Watch {
        let channel = connection.create_channel().await.unwrap();
        let queue = format!("test.watch.{}", uuid::Uuid::new_v4().simple());
        channel
            .queue_declare(
                queue.as_str().into(),
                QueueDeclareOptions {
                    exclusive: true,
                    auto_delete: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await
            .unwrap();
        channel
            .queue_bind(
                queue.as_str().into(),
                exchange.into(),
                key.into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .unwrap();
        Watch::on(channel, &queue).await
    }

    /// Watches an existing queue (for example `stratus.parked`).
    pub async fn watch_queue(&self, connection: &Connection, queue: &str) -> Watch {
        let channel = connection.create_channel().await.unwrap();
        Watch::on(channel, queue).await
    }

    /// Ready messages in `queue`.
    pub async fn depth(&self, connection: &Connection, queue: &str) -> u32 {
        self.passive_declare(connection, queue)
            .await
            .unwrap()
            .message_count()
    }

    /// Whether `queue` exists in this test's vhost.
    pub async fn queue_exists(&self, connection: &Connection, queue: &str) -> bool {
        self.passive_declare(connection, queue).await.is_ok()
    }

    async fn passive_declare(
        &self,
        connection: &Connection,
        queue: &str,
    ) -> Result<lapin::Queue, lapin::Error> {
        let channel = connection.create_channel().await.unwrap();
        let q = channel
            .queue_declare(
                queue.into(),
                QueueDeclareOptions {
                    passive: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await;
        let _ = channel.close(200, "ok".into()).await;
        q
    }
}

impl Drop for TestEnv {
    fn drop(&mut self) {
        let _ = Command::new("rabbitmqctl")
            .args(["-q", "delete_vhost", &self.vhost])
            .output();
        let _ = std::fs::remove_dir_all(&self.home);
    }
}

/// A consumer on a queue, for assertions.
pub struct Watch {
    _channel: Channel,
    consumer: lapin::Consumer,
}

impl Watch {
    async fn on(channel: Channel, queue: &str) -> Self {
        let tag = format!("watch-{}", uuid::Uuid::new_v4().simple());
        let consumer = channel
            .basic_consume(
                queue.into(),
                tag.as_str().into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .unwrap();
        Self {
            _channel: channel,
            consumer,
        }
    }

    /// The next message as the AWS rendering (acked), or None after `within`.
    pub async fn next(&mut self, within: Duration) -> Option<RmqMessage> {
        let delivery = tokio::time::timeout(within, self.consumer.next())
            .await
            .ok()??
            .ok()?;
        delivery.ack(BasicAckOptions::default()).await.unwrap();
        Some(rmq_event::render_message(
            &delivery.properties,
            &delivery.data,
            delivery.redelivered,
        ))
    }

    /// Asserts that nothing arrives within `within`.
    pub async fn expect_none(&mut self, within: Duration) {
        if let Some(m) = self.next(within).await {
            panic!("expected no message, got {m:?}");
        }
    }
}

/// A running `stratus-local up`, stopped on drop.
pub struct Runner {
    child: Child,
    pub runtime_api: String,
    pub gateway: Option<String>,
    /// The Consul stand-in's address.
    pub consul: Option<String>,
    /// The runner's token for its Invoke API and status (from its 0600
    /// `local-runner.json`), sent as `Authorization: Bearer`.
    pub token: Option<String>,
    /// The Consul stand-in's ACL token (`$STRATUS_HOME/consul-token`).
    pub consul_token: Option<String>,
    log: PathBuf,
}

pub struct RunnerOptions<'a> {
    pub manifest: serde_json::Value,
    pub topology: Option<&'a Path>,
    pub extra_args: Vec<String>,
}

impl Runner {
    pub fn start(env: &TestEnv, options: RunnerOptions<'_>) -> Self {
        let manifest = env.home.join("manifest.json");
        std::fs::write(
            &manifest,
            serde_json::to_vec_pretty(&options.manifest).unwrap(),
        )
        .unwrap();
        let log = env.home.join("runner.log");
        let address_file = env.home.join("local-runner.json");
        let _ = std::fs::remove_file(&address_file);
        let mut cmd = Command::new(bin_dir().join("stratus-local"));
        // Freezing is on in tests, as on Lambda: code that needs background work between invocations fails here too.
        cmd.arg("up")
            .arg("--manifest")
            .arg(&manifest)
            .args([
                "--gateway",
                "127.0.0.1:0",
                "--consul",
                "127.0.0.1:0",
                "--freeze-idle",
            ])
            .args(&options.extra_args);
        if let Some(t) = options.topology {
            cmd.arg("--topology").arg(t);
        }
        for (k, v) in env.config.to_env() {
            cmd.env(k, v);
        }
        cmd.env("RUST_LOG", "info,lapin=warn,stratus_messaging=debug")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap());
        stop_with_parent(&mut cmd);
        let mut child = cmd.spawn().unwrap();
        let started = Instant::now();
        loop {
            if let Ok(text) = std::fs::read(&address_file)
                && let Ok(v) = serde_json::from_slice::<serde_json::Value>(&text)
            {
                let consul_token = std::fs::read_to_string(env.home.join("consul-token"))
                    .ok()
                    .map(|t| t.trim().to_string());
                return Self {
                    child,
                    runtime_api: v["runtime_api"].as_str().unwrap().to_string(),
                    gateway: v["gateway"].as_str().map(str::to_string),
                    consul: v["consul"].as_str().map(str::to_string),
                    token: v["token"].as_str().map(str::to_string),
                    consul_token,
                    log,
                };
            }
            if let Some(status) = child.try_wait().unwrap() {
                panic!(
                    "stratus-local exited ({status}):\n{}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
            }
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "stratus-local did not start:\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// A request to the runner's Runtime API server, with its token.
    pub fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let r =
            reqwest::Client::new().request(method, format!("http://{}{path}", self.runtime_api));
        match &self.token {
            Some(t) => r.bearer_auth(t),
            None => r,
        }
    }

    pub async fn status(&self) -> serde_json::Value {
        self.request(reqwest::Method::GET, "/local/status")
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// Invokes `function` through the runner's Invoke API, with its token.
    pub async fn invoke(&self, function: &str, payload: &serde_json::Value) -> reqwest::Response {
        self.request(
            reqwest::Method::POST,
            &format!("/2015-03-31/functions/{function}/invocations"),
        )
        .json(payload)
        .send()
        .await
        .unwrap()
    }

    /// A Consul client of the runner's stand-in, with its ACL token.
    pub fn consul_client(&self) -> stratus_discovery::Client {
        stratus_discovery::Client::new(
            self.consul
                .as_deref()
                .expect("the runner serves a Consul stand-in"),
            self.consul_token.clone(),
        )
    }

    /// The status of one function.
    pub async fn function(&self, name: &str) -> serde_json::Value {
        let s = self.status().await;
        s["functions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["function"] == name)
            .cloned()
            .unwrap()
    }

    /// Waits until `check` holds for the status, or panics with the log after `within`.
    pub async fn wait_for(
        &self,
        what: &str,
        within: Duration,
        check: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let started = Instant::now();
        loop {
            let s = self.status().await;
            if check(&s) {
                return s;
            }
            if started.elapsed() > within {
                panic!(
                    "{what}: not reached in {within:?}; status {s:#}\nlog:\n{}",
                    self.log()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Runner {
    fn drop(&mut self) {
        // SAFETY: signalling our own child.
        unsafe {
            libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM);
        }
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(10) {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A manifest with the diag function on its queue, and any changes `edit` makes.
pub fn diag_manifest(edit: impl FnOnce(&mut serde_json::Value)) -> serde_json::Value {
    let mut m = serde_json::json!({
        "functions": [{
            "name": "diag",
            "binary": "stratus-fn-diag",
            "timeout_seconds": 10,
            "max_instances": 2,
            "triggers": [{ "type": "queue", "queue": "stratus.fn.diag", "batch_size": 10, "batching_window_ms": 0, "concurrency": 1 }]
        }]
    });
    edit(&mut m);
    m
}

/// Publishes a command envelope (confirmed) to the commands exchange.
pub async fn send(publisher: &Publisher, envelope: &stratus_messaging::Envelope) {
    let out = Outgoing::envelope(
        stratus_contracts::names::COMMANDS_EXCHANGE,
        &envelope.message_type,
        envelope,
    );
    publisher.publish(out).await.unwrap();
}

/// A raw channel in confirm mode, for publishing what Stratus never would.
pub async fn raw_channel(connection: &Connection) -> Channel {
    let channel = connection.create_channel().await.unwrap();
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    channel
}

/// The parked reason header of a parked message.
pub fn parked_reason(m: &RmqMessage) -> String {
    m.basic_properties
        .header(stratus_contracts::names::HEADER_PARKED_REASON)
        .and_then(rmq_event::header_string)
        .unwrap_or_default()
}

/// Sends a `diag.echo` and waits for the `diag.echoed` that answers it: the platform is serving.
pub async fn assert_echo_flows(env: &TestEnv, publisher: &Publisher, runner: &Runner, text: &str) {
    use stratus_contracts::message_types::diag;
    let connection = env.connect().await;
    let mut events = env
        .watch(
            &connection,
            stratus_contracts::names::INTERNAL_EVENTS_EXCHANGE,
            diag::ECHOED,
        )
        .await;
    let echo = stratus_messaging::Envelope::new(diag::ECHO, &diag::Echo { text: text.into() });
    send(publisher, &echo).await;
    let reply = events
        .next(Duration::from_secs(30))
        .await
        .unwrap_or_else(|| panic!("no answer to the echo {text:?}; log:\n{}", runner.log()));
    let body: diag::Echoed = stratus_messaging::Envelope::from_rmq(&reply)
        .unwrap()
        .body()
        .unwrap();
    assert_eq!(body.in_reply_to, echo.message_id.to_string());
}

/// Makes the child get SIGTERM when this process dies (a killed benchmark or
/// test run), so that no runner and its functions outlive it.
fn stop_with_parent(cmd: &mut Command) {
    use std::os::unix::process::CommandExt;
    // SAFETY: prctl is async-signal-safe; nothing else runs between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
            Ok(())
        });
    }
}
