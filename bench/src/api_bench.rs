//! The API function through the whole local path (HTTP gateway, Runtime API,
//! `stratus-fn-api` under `lambda_http`, the SQLite store) against a bare axum
//! handler answering the same JSON, both driven by the same keep-alive client
//! with the same concurrency in one run: signed listZones, and
//! listVirtualMachines (a page of 500 out of 10,000 VMs). The runner's
//! invocation count must equal the requests sent.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use stratus_contracts::config::StoreSelection;
use stratus_model::samples::{Fixture, Sample};
use stratus_model::{Account, Domain, Vm};
use stratus_store::Store;

use crate::runner_bench::{Runner, bench_env, bin_dir};
use crate::stats::Summary;

pub struct Options {
    pub requests: usize,
    pub vm_requests: usize,
    pub concurrency: usize,
    pub vms: usize,
}

fn repo_file(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(path)
}

fn write_manifest(home: &Path, instances: usize) -> anyhow::Result<PathBuf> {
    let manifest = serde_json::json!({
        "functions": [
            {
                "name": "api", "binary": "stratus-fn-api", "timeout_seconds": 30,
                "min_instances": instances, "max_instances": instances,
                "triggers": [{ "type": "http", "route": "/client/api", "methods": ["GET", "POST"] }]
            },
            {
                "name": "diag", "binary": "stratus-fn-diag", "timeout_seconds": 30,
                "min_instances": instances, "max_instances": instances,
                "triggers": [{ "type": "http", "route": "/diag", "methods": ["GET"] }]
            },
            {
                "name": "bootstrap", "binary": "stratus-fn-bootstrap", "timeout_seconds": 60,
                "triggers": [{ "type": "startup", "event": {
                    "zone_file": repo_file("infra/simulator-zone.json").display().to_string()
                } }]
            }
        ]
    });
    let path = home.join("manifest.json");
    std::fs::write(&path, serde_json::to_vec_pretty(&manifest)?)?;
    Ok(path)
}

/// Drives `urls()` requests with `concurrency` keep-alive connections; every
/// answer must be 200. Returns the latencies.
async fn drive(
    client: &reqwest::Client,
    requests: usize,
    concurrency: usize,
    url: Arc<dyn Fn() -> String + Send + Sync>,
) -> anyhow::Result<(Duration, Vec<Duration>)> {
    let started = Instant::now();
    let mut tasks = Vec::new();
    for worker in 0..concurrency {
        let (client, url) = (client.clone(), url.clone());
        let n = requests / concurrency + usize::from(worker < requests % concurrency);
        tasks.push(tokio::spawn(async move {
            let mut samples = Vec::with_capacity(n);
            for _ in 0..n {
                let t = Instant::now();
                let r = client.get(url()).send().await?;
                let status = r.status();
                let body = r.bytes().await?;
                if !status.is_success() {
                    bail!("{status}: {}", String::from_utf8_lossy(&body));
                }
                samples.push(t.elapsed());
            }
            Ok::<_, anyhow::Error>(samples)
        }));
    }
    let mut all = Vec::with_capacity(requests);
    for t in tasks {
        all.extend(t.await??);
    }
    Ok((started.elapsed(), all))
}

fn signed(endpoint: &str, key: &str, secret: &str, params: &[(&str, &str)]) -> String {
    let expires = (chrono::Utc::now() + chrono::Duration::minutes(10))
        .format("%Y-%m-%dT%H:%M:%S%z")
        .to_string();
    let mut pairs: Vec<(String, String)> = vec![
        ("apiKey".into(), key.into()),
        ("response".into(), "json".into()),
        ("signatureVersion".into(), "3".into()),
        ("expires".into(), expires),
    ];
    pairs.extend(params.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    format!(
        "{endpoint}?{}",
        stratus_cloudstack::signature::signed_query(&pairs, secret)
    )
}

fn line(what: &str, took: Duration, samples: &mut [Duration]) -> f64 {
    let s = Summary::of(samples);
    let rate = samples.len() as f64 / took.as_secs_f64();
    println!(
        "  {what:<34} {rate:>8.0} req/s   p50 {:>7.3} ms   p99 {:>7.3} ms",
        s.p50.as_secs_f64() * 1e3,
        s.p99.as_secs_f64() * 1e3
    );
    rate
}

pub async fn run(amqp_url: &str, o: Options) -> anyhow::Result<()> {
    let bin_dir = bin_dir(&[
        "stratus-local",
        "stratus-fn-api",
        "stratus-fn-bootstrap",
        "stratus-fn-diag",
    ])?;
    let (_vhost, home, config) = bench_env(amqp_url)?;
    let manifest = write_manifest(&home, o.concurrency)?;
    let runner = Runner::start(
        &bin_dir,
        &manifest,
        &config,
        "warn",
        &home.join("runner.log"),
    )?;
    let gateway = runner
        .gateway
        .clone()
        .context("the runner has no gateway")?;
    let endpoint = format!("http://{gateway}/client/api");
    let (key, secret) = crate::runner_bench::admin_keys(&home)?;

    // 10,000 VMs of the admin's account, straight into the store the function reads.
    let StoreSelection::Sqlite(path) = &config.store else {
        bail!("the API benchmark runs on the embedded SQLite store");
    };
    let store = Store::new(stratus_store::Backend::Sqlite(
        stratus_store::sqlite::SqliteStore::open(path, &config.table_prefix)?,
    ));
    let root = Domain::id_for("ROOT");
    let admin = Account::id_for(root, "admin");
    let f = Fixture::default();
    let vms: Vec<Vm> = (0..o.vms)
        .map(|_| Vm {
            account_id: admin,
            domain_id: root,
            ..Vm::sample(&f)
        })
        .collect();
    store.import(&vms).await?;

    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(o.concurrency)
        .build()?;
    // The bodies the bare handler answers with: what the function answered.
    let zones_body = client
        .get(signed(
            &endpoint,
            &key,
            &secret,
            &[("command", "listZones")],
        ))
        .send()
        .await?
        .text()
        .await?;
    let vm_params = [
        ("command", "listVirtualMachines"),
        ("page", "1"),
        ("pagesize", "500"),
    ];
    let vms_body = client
        .get(signed(&endpoint, &key, &secret, &vm_params))
        .send()
        .await?
        .text()
        .await?;
    let page: serde_json::Value = serde_json::from_str(&vms_body)?;
    if page["listvirtualmachinesresponse"]["count"] != o.vms
        || page["listvirtualmachinesresponse"]["virtualmachine"]
            .as_array()
            .map(Vec::len)
            != Some(500)
    {
        bail!(
            "listVirtualMachines did not answer a page of 500 of {}: {vms_body:.300}",
            o.vms
        );
    }
    let bare = bare_server(zones_body.clone(), vms_body.clone()).await?;

    let before = function_invocations(&runner).await?;
    println!(
        "== API: {} signed requests per phase ({} for listVirtualMachines), {} keep-alive connections, {} warm instances ==",
        o.requests, o.vm_requests, o.concurrency, o.concurrency
    );
    let (k, s, e) = (key.clone(), secret.clone(), endpoint.clone());
    let (took, mut samples) = drive(
        &client,
        o.requests,
        o.concurrency,
        Arc::new(move || signed(&e, &k, &s, &[("command", "listZones")])),
    )
    .await?;
    let zones = line("listZones via gateway+runner+fn", took, &mut samples);
    let (k, s, b) = (key.clone(), secret.clone(), format!("http://{bare}/zones"));
    let (took, mut samples) = drive(
        &client,
        o.requests,
        o.concurrency,
        Arc::new(move || signed(&b, &k, &s, &[("command", "listZones")])),
    )
    .await?;
    let zones_bare = line("listZones, bare axum handler", took, &mut samples);
    println!(
        "  ratio                              {:.2}   (target >= 0.33)",
        zones / zones_bare
    );
    // Where the time goes: the platform's floor (the diag function answering
    // through the same gateway and runner), and the handler alone.
    let (k, s, d) = (
        key.clone(),
        secret.clone(),
        format!("http://{gateway}/diag"),
    );
    let (took, mut samples) = drive(
        &client,
        o.requests,
        o.concurrency,
        Arc::new(move || signed(&d, &k, &s, &[("command", "listZones")])),
    )
    .await?;
    line("diag via gateway+runner+fn (floor)", took, &mut samples);
    // The same handler called in process, over the same store.
    let store = Arc::new(Store::new(stratus_store::Backend::Sqlite(
        stratus_store::sqlite::SqliteStore::open(path, &config.table_prefix)?,
    )));
    let secrets = Arc::new(store.secret_box(&config.secret_key).await?);
    let api = stratus_fn_api::Api::new(
        store,
        None,
        Arc::new(stratus_contracts::settings::Defaults::default()),
        secrets,
    );
    let mut samples = Vec::with_capacity(o.requests);
    let started = Instant::now();
    for _ in 0..o.requests {
        let url = signed("", &key, &secret, &[("command", "listZones")]);
        let t = Instant::now();
        let r = api
            .handle(&stratus_fn_api::Request {
                method: "GET".into(),
                raw_query: url.trim_start_matches('?').to_string(),
                ..Default::default()
            })
            .await;
        if r.status != 200 {
            bail!("in process: {}", r.body);
        }
        samples.push(t.elapsed());
    }
    line(
        "listZones, the handler in process",
        started.elapsed(),
        &mut samples,
    );

    let (k, s, e) = (key.clone(), secret.clone(), endpoint.clone());
    let (took, mut samples) = drive(
        &client,
        o.vm_requests,
        o.concurrency,
        Arc::new(move || signed(&e, &k, &s, &vm_params)),
    )
    .await?;
    let vms_rate = line("listVirtualMachines page via fn", took, &mut samples);
    let (k, s, b) = (key.clone(), secret.clone(), format!("http://{bare}/vms"));
    let (took, mut samples) = drive(
        &client,
        o.vm_requests,
        o.concurrency,
        Arc::new(move || signed(&b, &k, &s, &vm_params)),
    )
    .await?;
    let vms_bare = line("listVirtualMachines, bare handler", took, &mut samples);
    println!(
        "  ratio                              {:.2}",
        vms_rate / vms_bare
    );

    let after = function_invocations(&runner).await?;
    let sent = (o.requests + o.vm_requests) as u64;
    println!(
        "  runner invocations of api: {} for {sent} requests sent",
        after - before
    );
    if after - before != sent {
        bail!(
            "invocations ({}) differ from requests sent ({sent})",
            after - before
        );
    }
    drop(runner);
    let _ = std::fs::remove_dir_all(&home);
    Ok(())
}

async fn function_invocations(runner: &Runner) -> anyhow::Result<u64> {
    let s = runner.status().await?;
    s["functions"]
        .as_array()
        .and_then(|fs| fs.iter().find(|f| f["function"] == "api"))
        .and_then(|f| f["invocations"].as_u64())
        .context("the api function's invocation count")
}

/// A bare axum server answering the captured bodies, on an ephemeral port.
async fn bare_server(zones: String, vms: String) -> anyhow::Result<String> {
    use axum::routing::get;
    let json = |body: String| {
        move || {
            let body = body.clone();
            async move { ([("content-type", "application/json; charset=UTF-8")], body) }
        }
    };
    let app = axum::Router::new()
        .route("/zones", get(json(zones)))
        .route("/vms", get(json(vms)));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?.to_string();
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok(addr)
}
