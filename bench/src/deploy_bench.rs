//! VM deploy latency through every real hop: the whole platform as
//! `scripts/run-local` runs it (the repository's manifest: API, orchestrator,
//! network, compute, storage, three simulated hosts' agents), one deploy at a
//! time, simulator delays zero. Each deploy's latency is its job's own server
//! timestamps (created to completed, read from the store: the API shows them
//! to the second only); each VM is destroyed (expunge=true) before the next.
//! The baseline, measured in the same run: disableAccount, a job of one step
//! through the same API, outbox, broker and orchestrator.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::Value;
use stratus_contracts::config::StoreSelection;
use stratus_model::{AsyncJob, Id, JobStatus};
use stratus_store::Store;

use crate::runner_bench::{Runner, bench_env, bin_dir};
use crate::stats::Summary;

pub struct Options {
    pub deploys: usize,
    pub baseline_jobs: usize,
}

fn repo_file(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(path)
}

struct Client {
    http: reqwest::Client,
    endpoint: String,
    key: String,
    secret: String,
}

impl Client {
    async fn get(&self, params: &[(&str, &str)]) -> anyhow::Result<Value> {
        let expires = (chrono::Utc::now() + chrono::Duration::minutes(10))
            .format("%Y-%m-%dT%H:%M:%S%z")
            .to_string();
        let mut pairs: Vec<(String, String)> = vec![
            ("apiKey".into(), self.key.clone()),
            ("response".into(), "json".into()),
            ("signatureVersion".into(), "3".into()),
            ("expires".into(), expires),
        ];
        pairs.extend(params.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        let url = format!(
            "{}?{}",
            self.endpoint,
            stratus_cloudstack::signature::signed_query(&pairs, &self.secret)
        );
        let r = self.http.get(url).send().await?;
        let status = r.status();
        let body: Value = r.json().await?;
        if !status.is_success() {
            bail!("{status}: {body}");
        }
        // The one top-level key: `<command>response`.
        Ok(body
            .as_object()
            .and_then(|m| m.values().next().cloned())
            .unwrap_or(Value::Null))
    }

    /// Polls a job every 2 ms until it ends; fails unless it succeeded.
    async fn wait(&self, job: &str) -> anyhow::Result<Value> {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let r = self
                .get(&[("command", "queryAsyncJobResult"), ("jobid", job)])
                .await?;
            match r["jobstatus"].as_u64() {
                Some(0) if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(2)).await
                }
                Some(1) => return Ok(r),
                _ => bail!("job {job} did not succeed: {r}"),
            }
        }
    }

    async fn first_id(
        &self,
        command: &str,
        key: &str,
        extra: &[(&str, &str)],
    ) -> anyhow::Result<String> {
        let mut params = vec![("command", command)];
        params.extend_from_slice(extra);
        let r = self.get(&params).await?;
        r[key][0]["id"]
            .as_str()
            .map(str::to_string)
            .with_context(|| format!("{command}: no {key}: {r}"))
    }
}

/// A job's server-side duration, from its record.
async fn server_time(store: &Store, job: &str) -> anyhow::Result<Duration> {
    let id: Id<AsyncJob> = job.parse().context("job id")?;
    let j = store.get(id).await?.context("job record")?.value;
    if j.status != JobStatus::Succeeded {
        bail!("job {job} is {:?}", j.status);
    }
    let completed = j.completed.context("completed")?;
    Ok((completed - j.created).to_std().unwrap_or_default())
}

fn line(what: &str, samples: &mut [Duration]) -> Summary {
    let s = Summary::of(samples);
    println!(
        "  {what:<42} n {:>4}   p50 {:>8.2} ms   p99 {:>8.2} ms   max {:>8.2} ms",
        samples.len(),
        s.p50.as_secs_f64() * 1e3,
        s.p99.as_secs_f64() * 1e3,
        s.max.as_secs_f64() * 1e3
    );
    s
}

pub async fn run(amqp_url: &str, o: Options) -> anyhow::Result<()> {
    let bin_dir = bin_dir(&[
        "stratus-local",
        "stratus-fn-api",
        "stratus-fn-bootstrap",
        "stratus-fn-orchestrator",
        "stratus-fn-network",
        "stratus-fn-compute",
        "stratus-fn-storage",
        "stratus-fn-outbox-relay",
        "stratus-fn-fabric-monitor",
        "stratus-fn-diag",
        "stratus-agent",
    ])?;
    let (_vhost, home, config) = bench_env(amqp_url)?;
    let runner = Runner::start(
        &bin_dir,
        &repo_file("infra/manifest.json"),
        &config,
        "warn",
        &home.join("runner.log"),
    )?;
    let gateway = runner
        .gateway
        .clone()
        .context("the runner has no gateway")?;
    let (key, secret) = crate::runner_bench::admin_keys(&home)?;
    let c = Client {
        http: reqwest::Client::new(),
        endpoint: format!("http://{gateway}/client/api"),
        key,
        secret,
    };
    let StoreSelection::Sqlite(path) = &config.store else {
        bail!("the deploy benchmark reads jobs from the embedded SQLite store");
    };
    let store = Store::new(stratus_store::Backend::Sqlite(
        stratus_store::sqlite::SqliteStore::open(path, &config.table_prefix)?,
    ));
    // Every host Up (their agents' checks pass) before the first deploy.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let hosts = c.get(&[("command", "listHosts")]).await?;
        let up = hosts["host"]
            .as_array()
            .map(|h| h.iter().filter(|h| h["state"] == "Up").count())
            .unwrap_or(0);
        if up == 3 {
            break;
        }
        if Instant::now() > deadline {
            bail!("hosts not Up: {hosts}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let zone = c.first_id("listZones", "zone", &[]).await?;
    let offering = c
        .first_id("listServiceOfferings", "serviceoffering", &[])
        .await?;
    let template = c
        .first_id(
            "listTemplates",
            "template",
            &[("templatefilter", "featured")],
        )
        .await?;

    // The baseline: disableAccount jobs (one step) on an account of its own.
    let created = c
        .get(&[
            ("command", "createAccount"),
            ("username", "bench"),
            ("password", "bench-password-1"),
            ("email", "bench@example.com"),
            ("firstname", "B"),
            ("lastname", "Ench"),
            ("accounttype", "0"),
        ])
        .await?;
    let account = created["account"]["id"]
        .as_str()
        .context("account id")?
        .to_string();
    let mut baseline = Vec::with_capacity(o.baseline_jobs);
    for _ in 0..o.baseline_jobs {
        let r = c
            .get(&[
                ("command", "disableAccount"),
                ("id", &account),
                ("lock", "false"),
            ])
            .await?;
        let job = r["jobid"].as_str().context("jobid")?.to_string();
        c.wait(&job).await?;
        baseline.push(server_time(&store, &job).await?);
        c.get(&[("command", "enableAccount"), ("id", &account)])
            .await?;
    }

    let mut deploys = Vec::with_capacity(o.deploys);
    let mut destroys = Vec::with_capacity(o.deploys);
    let mut observed = Vec::with_capacity(o.deploys);
    for i in 0..o.deploys {
        if i % 10 == 0 {
            eprintln!("deploy-bench: {i}/{} deploys", o.deploys);
        }
        let t = Instant::now();
        let r = c
            .get(&[
                ("command", "deployVirtualMachine"),
                ("zoneid", &zone),
                ("serviceofferingid", &offering),
                ("templateid", &template),
                ("name", &format!("bench-{i}")),
            ])
            .await?;
        let job = r["jobid"].as_str().context("jobid")?.to_string();
        let vm = r["id"].as_str().context("id")?.to_string();
        c.wait(&job).await?;
        observed.push(t.elapsed());
        deploys.push(server_time(&store, &job).await?);
        let r = c
            .get(&[
                ("command", "destroyVirtualMachine"),
                ("id", &vm),
                ("expunge", "true"),
            ])
            .await?;
        let job = r["jobid"].as_str().context("jobid")?.to_string();
        c.wait(&job).await?;
        destroys.push(server_time(&store, &job).await?);
    }
    println!("deploy latency, concurrency 1, simulator delays zero (job created -> completed):");
    let base = line("baseline: disableAccount (1 step)", &mut baseline);
    let d = line("deployVirtualMachine (7 steps, 5 remote)", &mut deploys);
    line(
        "  the same, as the client saw it (2 ms polls)",
        &mut observed,
    );
    line(
        "destroyVirtualMachine expunge=true (8 steps)",
        &mut destroys,
    );
    let ratio = |a: Duration, b: Duration| a.as_secs_f64() / b.as_secs_f64().max(1e-9);
    println!(
        "  ratio deploy/baseline: p50 {:.1}x   p99 {:.1}x",
        ratio(d.p50, base.p50),
        ratio(d.p99, base.p99)
    );
    drop(runner);
    let _ = std::fs::remove_dir_all(&home);
    Ok(())
}
