//! The local runner against a bare lapin consumer, in one run:
//! - throughput: prefill N no-op messages, drain them through the runner and the
//!   diag function, and through a bare consumer with the same prefetch and the
//!   same ack mode (one multiple-ack per batch);
//! - latency: publish at a fixed rate (batching window 0) and measure publish to
//!   handler entry (the harness's `handler entered` log line) against publish
//!   to delivery at the bare consumer.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, bail};
use futures::{FutureExt, StreamExt};
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicQosOptions, QueueDeclareOptions, QueuePurgeOptions,
};
use lapin::types::FieldTable;
use lapin::{Channel, Connection};
use stratus_contracts::config::Config;
use stratus_contracts::message_types::diag;
use stratus_contracts::names;
use stratus_messaging::Envelope;
use stratus_messaging::broker;
use stratus_messaging::publisher::{Outgoing, Publisher};

use crate::stats::Summary;

const QUEUE: &str = "stratus.fn.diag";

pub struct Options {
    pub messages: usize,
    pub batch_size: u16,
    pub latency_messages: usize,
    pub rate: u32,
}

pub(crate) struct Vhost(pub String);

impl Drop for Vhost {
    fn drop(&mut self) {
        let _ = Command::new("rabbitmqctl")
            .args(["-q", "delete_vhost", &self.0])
            .output();
    }
}

pub(crate) fn rabbitmqctl(args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new("rabbitmqctl")
        .args(args)
        .output()
        .context("running rabbitmqctl")?;
    if !out.status.success() {
        bail!(
            "rabbitmqctl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

/// The binaries beside this one, checked to hold `needed`.
pub(crate) fn bin_dir(needed: &[&str]) -> anyhow::Result<PathBuf> {
    let dir = std::env::current_exe()?
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default();
    for b in needed {
        if !dir.join(b).is_file() {
            bail!(
                "{} has no {b}: run `cargo build --release --bins` first",
                dir.display()
            );
        }
    }
    Ok(dir)
}

/// The root admin's API key and secret key, as bootstrap wrote them to
/// `cloudstack.ini` in the runner's state directory.
pub(crate) fn admin_keys(home: &Path) -> anyhow::Result<(String, String)> {
    let ini = std::fs::read_to_string(home.join("cloudstack.ini"))
        .map_err(|e| anyhow::anyhow!("cloudstack.ini: {e}"))?;
    let field = |name: &str| {
        ini.lines()
            .find_map(|l| l.strip_prefix(&format!("{name} = ")))
            .map(str::to_string)
            .ok_or_else(|| anyhow::anyhow!("no {name} in cloudstack.ini"))
    };
    Ok((field("key")?, field("secret")?))
}

/// A benchmark's own vhost (deleted on drop), state directory and
/// configuration (the embedded store in that directory).
pub(crate) fn bench_env(amqp_url: &str) -> anyhow::Result<(Vhost, PathBuf, Config)> {
    let vhost = Vhost(format!(
        "bench-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    ));
    rabbitmqctl(&["-q", "add_vhost", &vhost.0])?;
    rabbitmqctl(&[
        "-q",
        "set_permissions",
        "-p",
        &vhost.0,
        "guest",
        ".*",
        ".*",
        ".*",
    ])?;
    let home = std::env::temp_dir().join(format!("stratus-{}", vhost.0));
    std::fs::create_dir_all(&home)?;
    let config = Config::from_lookup(|k| match k {
        "STRATUS_AMQP_URL" => Some(amqp_url.to_string()),
        "STRATUS_AMQP_VHOST" => Some(vhost.0.clone()),
        "STRATUS_HOME" => Some(home.display().to_string()),
        "STRATUS_STORE" => None,
        _ => std::env::var(k).ok(),
    })?;
    Ok((vhost, home, config))
}

pub async fn run(amqp_url: &str, o: Options) -> anyhow::Result<()> {
    let bin_dir = bin_dir(&["stratus-local", "stratus-fn-diag"])?;
    let (_vhost, home, config) = bench_env(amqp_url)?;
    let topology = broker::topology(&config)?;
    let connection = broker::connect(&config, "bench").await?;
    broker::declare_topology(&connection, &topology).await?;
    let publisher = Publisher::new(config.clone(), Arc::new(topology), "bench");
    let channel = connection.create_channel().await?;

    println!(
        "== throughput: drain {} prefilled no-op messages, batch size {}, batching window 0 ==",
        o.messages, o.batch_size
    );
    prefill(&publisher, o.messages).await?;
    let bare = drain_bare(&connection, o.messages, o.batch_size).await?;
    let bare_rate = o.messages as f64 / bare.as_secs_f64();
    println!(
        "  bare lapin consumer : {:>9.0} msg/s  ({:.2} s)",
        bare_rate,
        bare.as_secs_f64()
    );

    prefill(&publisher, o.messages).await?;
    let manifest = write_manifest(&home, o.batch_size)?;
    let runner = Runner::start(
        &bin_dir,
        &manifest,
        &config,
        "warn",
        &home.join("runner-throughput.log"),
    )?;
    let started = wait_for_first_take(&channel, o.messages).await?;
    wait_for_empty(&channel).await?;
    let status = runner.wait_until_handled(o.messages as u64).await?;
    let took = started.elapsed();
    let runner_rate = o.messages as f64 / took.as_secs_f64();
    let invocations = status["functions"][0]["invocations"].as_u64().unwrap_or(0);
    let batches = status["queue_triggers"][0]["batches"].as_u64().unwrap_or(0);
    println!(
        "  runner + diag       : {:>9.0} msg/s  ({:.2} s, {} invocations, {} batches, {} errors)",
        runner_rate,
        took.as_secs_f64(),
        invocations,
        batches,
        status["functions"][0]["errors"]
    );
    println!(
        "  ratio runner / bare : {:.2}   (target >= 0.5)",
        runner_rate / bare_rate
    );
    if invocations != batches {
        bail!("the runner's invocations ({invocations}) differ from its batches ({batches})");
    }
    drop(runner);

    println!(
        "== latency: publish to handler entry, {} messages at {} msg/s, batching window 0 ==",
        o.latency_messages, o.rate
    );
    channel
        .queue_purge(QUEUE.into(), QueuePurgeOptions::default())
        .await?;
    let bare = latency_bare(
        &connection,
        &publisher,
        o.latency_messages,
        o.rate,
        o.batch_size,
    )
    .await?;
    let log = home.join("runner-latency.log");
    let runner = Runner::start(
        &bin_dir,
        &manifest,
        &config,
        "warn,stratus_messaging::harness=debug",
        &log,
    )?;
    runner.wait_until_ready_instance().await?;
    let sent = publish_paced(&publisher, o.latency_messages, o.rate).await?;
    runner.wait_until_handled(o.latency_messages as u64).await?;
    drop(runner);
    let entries = handler_entries(&log)?;
    let mut samples: Vec<Duration> = sent
        .iter()
        .filter_map(|(id, at)| {
            entries
                .get(id)
                .and_then(|entered| entered.duration_since(*at).ok())
        })
        .collect();
    if samples.len() < sent.len() * 99 / 100 {
        bail!(
            "only {} of {} messages have a handler-entry log line",
            samples.len(),
            sent.len()
        );
    }
    let mut bare_samples = bare;
    let b = Summary::of(&mut bare_samples);
    let r = Summary::of(&mut samples);
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    println!(
        "  bare lapin consumer : p50 {:>7.3} ms  p99 {:>7.3} ms",
        ms(b.p50),
        ms(b.p99)
    );
    println!(
        "  runner + diag       : p50 {:>7.3} ms  p99 {:>7.3} ms",
        ms(r.p50),
        ms(r.p99)
    );
    println!(
        "  added by the runner : p50 {:>7.3} ms  p99 {:>7.3} ms   (target: added p50 < 1 ms)",
        ms(r.p50) - ms(b.p50),
        ms(r.p99) - ms(b.p99)
    );
    let _ = std::fs::remove_dir_all(&home);
    Ok(())
}

async fn prefill(publisher: &Publisher, n: usize) -> anyhow::Result<()> {
    let started = Instant::now();
    let chunk = 5000;
    let mut done = 0;
    while done < n {
        let count = chunk.min(n - done);
        let batch: Vec<Outgoing> = (0..count)
            .map(|_| {
                Outgoing::envelope(
                    names::COMMANDS_EXCHANGE,
                    diag::NOOP,
                    &Envelope::new(diag::NOOP, &diag::Noop {}),
                )
            })
            .collect();
        publisher.publish_all(&batch).await?;
        done += count;
        eprint!("\r  prefilling: {done}/{n}");
    }
    eprintln!(
        "\r  prefilled {n} in {:.1} s            ",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

async fn consumer(
    connection: &Connection,
    prefetch: u16,
) -> anyhow::Result<(Channel, lapin::Consumer)> {
    let channel = connection.create_channel().await?;
    channel
        .basic_qos(prefetch, BasicQosOptions::default())
        .await?;
    let consumer = channel
        .basic_consume(
            QUEUE.into(),
            "bench-bare".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    Ok((channel, consumer))
}

/// Drains `n` messages in batches like the MQ trigger: first message, then what is already here, one multiple-ack.
async fn drain_bare(connection: &Connection, n: usize, batch: u16) -> anyhow::Result<Duration> {
    let (channel, mut consumer) = consumer(connection, batch).await?;
    let mut seen = 0;
    let mut started = None;
    while seen < n {
        let first = consumer.next().await.context("consumer ended")??;
        started.get_or_insert_with(Instant::now);
        let mut last = first;
        let mut size = 1;
        while size < batch as usize {
            match consumer.next().now_or_never() {
                Some(Some(d)) => {
                    last = d?;
                    size += 1;
                }
                _ => break,
            }
        }
        last.ack(BasicAckOptions { multiple: true }).await?;
        seen += size;
    }
    let took = started.map(|s| s.elapsed()).unwrap_or_default();
    channel.close(200, "done".into()).await?;
    Ok(took)
}

async fn depth(channel: &Channel) -> anyhow::Result<u32> {
    let q = channel
        .queue_declare(
            QUEUE.into(),
            QueueDeclareOptions {
                passive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await?;
    Ok(q.message_count())
}

/// The moment the runner first takes messages off the prefilled queue.
async fn wait_for_first_take(channel: &Channel, n: usize) -> anyhow::Result<Instant> {
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if (depth(channel).await? as usize) < n {
            return Ok(Instant::now());
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    bail!("the runner took nothing from the queue in 60 s")
}

/// Waits, cheaply, until no message is ready (the last batch may still be in flight).
async fn wait_for_empty(channel: &Channel) -> anyhow::Result<()> {
    while depth(channel).await? > 0 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    Ok(())
}

async fn latency_bare(
    connection: &Connection,
    publisher: &Publisher,
    n: usize,
    rate: u32,
    batch: u16,
) -> anyhow::Result<Vec<Duration>> {
    let (channel, mut consumer) = consumer(connection, batch).await?;
    let receiver = tokio::spawn(async move {
        let mut received: HashMap<String, SystemTime> = HashMap::new();
        while received.len() < n {
            let Some(Ok(d)) = consumer.next().await else {
                break;
            };
            let at = SystemTime::now();
            if let Some(id) = d.properties.message_id() {
                received.insert(id.to_string(), at);
            }
            let _ = d.ack(BasicAckOptions::default()).await;
        }
        received
    });
    let sent = publish_paced(publisher, n, rate).await?;
    let received = receiver.await?;
    channel.close(200, "done".into()).await?;
    Ok(sent
        .iter()
        .filter_map(|(id, at)| received.get(id).and_then(|r| r.duration_since(*at).ok()))
        .collect())
}

/// Publishes `n` no-op messages at `rate` per second; returns each message id with its publish time.
async fn publish_paced(
    publisher: &Publisher,
    n: usize,
    rate: u32,
) -> anyhow::Result<Vec<(String, SystemTime)>> {
    let mut ticks = tokio::time::interval(Duration::from_secs_f64(1.0 / rate as f64));
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut sent = Vec::with_capacity(n);
    for _ in 0..n {
        ticks.tick().await;
        let env = Envelope::new(diag::NOOP, &diag::Noop {});
        let at = SystemTime::now();
        publisher
            .publish(Outgoing::envelope(
                names::COMMANDS_EXCHANGE,
                diag::NOOP,
                &env,
            ))
            .await?;
        sent.push((env.message_id.to_string(), at));
    }
    Ok(sent)
}

/// Handler-entry times by message id, from the function's JSON log lines.
fn handler_entries(log: &Path) -> anyhow::Result<HashMap<String, SystemTime>> {
    let text = std::fs::read_to_string(log)?;
    let mut out = HashMap::new();
    for line in text.lines().filter(|l| l.contains("handler entered")) {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        let (Some(ts), Some(id)) = (v["timestamp"].as_str(), v["span"]["message_id"].as_str())
        else {
            continue;
        };
        let t = chrono::DateTime::parse_from_rfc3339(ts)?;
        out.insert(id.to_string(), SystemTime::from(t));
    }
    Ok(out)
}

fn write_manifest(home: &Path, batch_size: u16) -> anyhow::Result<PathBuf> {
    let manifest = serde_json::json!({
        "functions": [{
            "name": "diag",
            "binary": "stratus-fn-diag",
            "timeout_seconds": 60,
            "min_instances": 1,
            "max_instances": 1,
            "triggers": [{ "type": "queue", "queue": QUEUE, "batch_size": batch_size, "batching_window_ms": 0, "concurrency": 1 }]
        }]
    });
    let path = home.join("manifest.json");
    std::fs::write(&path, serde_json::to_vec_pretty(&manifest)?)?;
    Ok(path)
}

pub(crate) struct Runner {
    child: Child,
    status_url: String,
    /// The runner's token for its status (from its 0600 `local-runner.json`).
    token: String,
    http: reqwest::Client,
    /// The HTTP gateway's address, when the manifest has HTTP routes.
    pub gateway: Option<String>,
}

impl Runner {
    pub(crate) fn start(
        bin_dir: &Path,
        manifest: &Path,
        config: &Config,
        log_filter: &str,
        log: &Path,
    ) -> anyhow::Result<Self> {
        let address = config.home.join("local-runner.json");
        let _ = std::fs::remove_file(&address);
        let mut cmd = Command::new(bin_dir.join("stratus-local"));
        cmd.arg("up")
            .arg("--manifest")
            .arg(manifest)
            .arg("--bin-dir")
            .arg(bin_dir)
            .args(["--gateway", "127.0.0.1:0", "--consul", "127.0.0.1:0"])
            .envs(config.to_env())
            .env("RUST_LOG", log_filter);
        cmd.stdout(Stdio::null())
            .stderr(std::fs::File::create(log)?);
        stop_with_parent(&mut cmd);
        let child = cmd.spawn()?;
        let started = Instant::now();
        loop {
            if let Ok(text) = std::fs::read(&address)
                && let Ok(v) = serde_json::from_slice::<serde_json::Value>(&text)
            {
                return Ok(Self {
                    child,
                    status_url: format!(
                        "http://{}/local/status",
                        v["runtime_api"].as_str().unwrap_or_default()
                    ),
                    token: v["token"].as_str().unwrap_or_default().to_string(),
                    http: reqwest::Client::new(),
                    gateway: v["gateway"].as_str().map(str::to_string),
                });
            }
            if started.elapsed() > Duration::from_secs(30) {
                bail!("stratus-local did not start; see {}", log.display());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    pub(crate) async fn status(&self) -> anyhow::Result<serde_json::Value> {
        Ok(self
            .http
            .get(&self.status_url)
            .bearer_auth(&self.token)
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?)
    }

    async fn wait_until_handled(&self, n: u64) -> anyhow::Result<serde_json::Value> {
        let deadline = Instant::now() + Duration::from_secs(600);
        loop {
            let s = self.status().await?;
            if s["queue_triggers"][0]["messages"].as_u64() >= Some(n)
                && s["functions"][0]["in_flight"] == 0
            {
                // The status reads the functions' counters and the triggers'
                // one after the other, so one snapshot can catch a batch
                // between them (seen as "invocations (9) differ from batches
                // (10)"). Everything is handled now: a second read is settled.
                return self.status().await;
            }
            if Instant::now() > deadline {
                bail!("the runner did not handle {n} messages: {s}");
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    async fn wait_until_ready_instance(&self) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            let s = self.status().await?;
            if s["functions"][0]["instances"]
                .as_array()
                .is_some_and(|a| a.iter().any(|i| i["state"] == "idle"))
            {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        bail!("no instance became ready")
    }
}

impl Drop for Runner {
    fn drop(&mut self) {
        // SAFETY: signalling our own child.
        unsafe {
            libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM);
        }
        let _ = self.child.wait();
    }
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
