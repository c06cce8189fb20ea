//! Starting the platform (`up`), one-off invocations (`invoke`) and `status`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use stratus_contracts::config::Config;
use stratus_contracts::manifest::{Function, Manifest, Trigger, parse_rate};
use stratus_contracts::topology::Topology;
use stratus_messaging::broker;
use tokio::net::TcpListener;

use crate::gateway::{self, Route};
use crate::mq_trigger::{QueueTrigger, QueueTriggerSpec};
use crate::pool::{FunctionSpec, Outcome, Pool};
use crate::runtime_api::{self, RuntimeApi};
use crate::schedule;
use crate::status::{self, RunnerAddress};
use crate::supervisor::{ProcessSpec, Supervisor};

#[derive(clap::Args, Clone)]
pub struct CommonArgs {
    /// The function manifest.
    #[arg(long, default_value = "infra/manifest.json")]
    pub manifest: PathBuf,
    /// The broker topology (default: the one built into every binary).
    #[arg(long)]
    pub topology: Option<PathBuf>,
    /// Where the binaries are (default: beside stratus-local).
    #[arg(long)]
    pub bin_dir: Option<PathBuf>,
}

#[derive(clap::Args)]
pub struct UpArgs {
    #[command(flatten)]
    pub common: CommonArgs,
    /// The HTTP gateway's address (`http://ADDR/client/api`).
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub gateway: String,
    /// The Runtime API's address (port 0: an ephemeral port).
    #[arg(long, default_value = "127.0.0.1:0")]
    pub runtime_api: String,
    /// Freeze idle instances (SIGSTOP) and thaw them per invocation, as Lambda does.
    #[arg(long)]
    pub freeze_idle: bool,
    /// Stop instances idle this long (seconds), keeping each function's minimum.
    #[arg(long, default_value_t = 300)]
    pub idle_timeout: u64,
    /// Where the Consul stand-in listens when `CONSUL_HTTP_ADDR` is not set.
    #[arg(long, default_value = "127.0.0.1:8500")]
    pub consul: String,
}

fn bin_dir(common: &CommonArgs) -> anyhow::Result<PathBuf> {
    match &common.bin_dir {
        Some(d) => Ok(d.clone()),
        None => {
            let exe = std::env::current_exe().context("locating stratus-local")?;
            Ok(exe.parent().map(Path::to_path_buf).unwrap_or_default())
        }
    }
}

fn binary_path(dir: &Path, what: &str, binary: &str) -> anyhow::Result<PathBuf> {
    let path = dir.join(binary);
    if !path.is_file() {
        bail!(
            "{what}: binary {} not found (build it with `cargo build --workspace --bins`, or pass --bin-dir)",
            path.display()
        );
    }
    Ok(path)
}

/// The environment every child gets: the platform's configuration, the topology file, and its own.
fn child_environment(
    config: &Config,
    topology: Option<&Path>,
    own: &BTreeMap<String, String>,
) -> anyhow::Result<Vec<(String, String)>> {
    let mut env: Vec<(String, String)> = config
        .to_env()
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
    if let Some(t) = topology {
        let abs = std::fs::canonicalize(t).with_context(|| format!("topology {}", t.display()))?;
        env.push((broker::ENV_TOPOLOGY.to_string(), abs.display().to_string()));
    }
    env.extend(own.iter().map(|(k, v)| (k.clone(), v.clone())));
    Ok(env)
}

fn function_spec(
    f: &Function,
    dir: &Path,
    env: Vec<(String, String)>,
) -> anyhow::Result<FunctionSpec> {
    Ok(FunctionSpec {
        name: f.name.clone(),
        binary: binary_path(dir, &format!("function {}", f.name), &f.binary)?,
        environment: env,
        timeout: Duration::from_secs(f.timeout_seconds as u64),
        memory_mb: f.memory_mb,
        min_instances: f.min_instances,
        max_instances: f.max_instances,
    })
}

fn load_topology(common: &CommonArgs, config: &Config) -> anyhow::Result<Topology> {
    let t = match &common.topology {
        Some(path) => Topology::load(path)?,
        None => Topology::parse("infra/topology.json (built in)", broker::BUILTIN_TOPOLOGY)?,
    };
    Ok(t.with_external_events_exchange(&config.events_exchange))
}

async fn bind(addr: &str, what: &str) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr).await.map_err(|e| {
        if e.kind() == std::io::ErrorKind::AddrInUse {
            anyhow!("cannot listen on {addr} for the {what}: the address is in use (is another stratus-local running?); choose another with --{}", if what.contains("gateway") { "gateway" } else if what.contains("Consul") { "consul" } else { "runtime-api" })
        } else {
            anyhow!("cannot listen on {addr} for the {what}: {e}")
        }
    })
}

/// Creates the data service's table where it is missing: the SQLite file and
/// table, or the DynamoDB table and its indexes, from the store's one definition.
async fn prepare_store(config: &Config) -> anyhow::Result<()> {
    use stratus_contracts::config::StoreSelection;
    match &config.store {
        StoreSelection::Sqlite(path) => {
            stratus_store::sqlite::SqliteStore::open(path, &config.table_prefix)
                .with_context(|| format!("preparing the store {}", config.store))?;
        }
        StoreSelection::DynamoDb(url) => {
            let store = stratus_store::dynamodb::DynamoStore::connect(
                url,
                &config.table_prefix,
                Default::default(),
            )
            .await?;
            store
                .create_table()
                .await
                .with_context(|| format!("creating table {} at {url}", store.table()))?;
        }
    }
    tracing::info!(store = %config.store, prefix = %config.table_prefix, "store ready");
    Ok(())
}

/// Invokes a `startup` function once and waits for it: its event plus the
/// API's `endpoint`, with `*_file` paths made absolute against the manifest's
/// directory. Its answer is printed, so it carries no secret (bootstrap's
/// keys are in the 0600 `cloudstack.ini` it names).
async fn run_startup(
    function: &str,
    mut event: serde_json::Map<String, serde_json::Value>,
    pool: &Arc<Pool>,
    endpoint: &str,
    manifest_dir: &Path,
) -> anyhow::Result<()> {
    for (k, v) in event.iter_mut() {
        if k.ends_with("_file")
            && let Some(path) = v.as_str()
        {
            let abs = std::path::absolute(manifest_dir.join(path))?;
            *v = serde_json::Value::String(abs.display().to_string());
        }
    }
    event.insert("endpoint".into(), endpoint.into());
    tracing::info!(function, "running startup function");
    match pool.invoke(serde_json::to_vec(&event)?.into()).await {
        crate::pool::Outcome::Success(body) => {
            tracing::info!(function, "startup function done");
            eprintln!(
                "stratus-local: {function}: {}",
                String::from_utf8_lossy(&body)
            );
            Ok(())
        }
        crate::pool::Outcome::Error(body) => Err(anyhow!(
            "startup function {function} failed: {}",
            String::from_utf8_lossy(&body)
        )),
    }
}

pub async fn up(args: UpArgs) -> anyhow::Result<ExitCode> {
    let mut config = Config::from_env()?;
    let manifest = Manifest::load(&args.common.manifest)?;
    let dir = bin_dir(&args.common)?;
    let topology = load_topology(&args.common, &config)?;
    for f in &manifest.functions {
        for (j, t) in f.triggers.iter().enumerate() {
            if let Trigger::Queue { queue, .. } = t
                && !topology.queues.iter().any(|q| &q.name == queue)
            {
                bail!(
                    "{}: functions ({}).triggers[{j}].queue: queue {queue:?} is not in the topology",
                    args.common.manifest.display(),
                    f.name
                );
            }
        }
    }

    broker::declare_all(&config, &topology, "stratus-local").await?;
    // The state directory is the runner's user's alone: it holds the store
    // (every API key), cloudstack.ini and the tokens.
    stratus_secrets::private::home(&config.home)?;
    prepare_store(&config).await?;
    // Consul: the one given, or the development stand-in, whose address the
    // functions and processes started here then receive.
    let consul_addr = match &config.consul_http_addr {
        Some(addr) => {
            // Its token, if one is given, goes to the functions and processes unchanged.
            tracing::info!(consul = %addr, token_given = config.consul_http_token.is_some(), "using Consul at CONSUL_HTTP_ADDR");
            None
        }
        None => {
            let listener = bind(&args.consul, "Consul stand-in").await?;
            let addr = listener.local_addr()?.to_string();
            let token_file = config.home.join(crate::consul::TOKEN_FILE);
            let token = crate::secrets::load_or_create(&token_file)?;
            let consul = crate::consul::Consul::open(Some(config.home.clone()), token.clone())?;
            tokio::spawn(crate::consul::serve(listener, consul));
            tracing::warn!(consul = %addr, token_file = %token_file.display(), "serving a development stand-in for Consul (CONSUL_HTTP_ADDR is not set): KV, sessions, services and health checks; one node; ACLs with one token (default policy deny), handed to functions and processes as CONSUL_HTTP_TOKEN");
            if config.consul_http_token.is_some() {
                tracing::info!(
                    "CONSUL_HTTP_TOKEN is set, but the stand-in's own token is the one handed on"
                );
            }
            config.consul_http_addr = Some(addr.clone());
            config.consul_http_token = Some(stratus_contracts::config::Secret::new(token));
            Some(addr)
        }
    };

    let runtime_listener = bind(&args.runtime_api, "Runtime API").await?;
    let runtime_addr = runtime_listener.local_addr()?.to_string();
    let has_http = manifest
        .functions
        .iter()
        .any(|f| f.triggers.iter().any(|t| matches!(t, Trigger::Http { .. })));
    let gateway_listener = if has_http {
        Some(bind(&args.gateway, "HTTP gateway").await?)
    } else {
        None
    };

    let idle_timeout = Duration::from_secs(args.idle_timeout);
    let mut pools = BTreeMap::new();
    let mut triggers = Vec::new();
    let mut routes = Vec::new();
    let mut startups = Vec::new();
    for f in &manifest.functions {
        let env = child_environment(&config, args.common.topology.as_deref(), &f.environment)?;
        let pool = Pool::new(
            function_spec(f, &dir, env)?,
            runtime_addr.clone(),
            args.freeze_idle,
            idle_timeout,
        );
        for t in &f.triggers {
            match t {
                Trigger::Queue {
                    queue,
                    batch_size,
                    batching_window_ms,
                    concurrency,
                } => {
                    let spec = QueueTriggerSpec {
                        function: f.name.clone(),
                        queue: queue.clone(),
                        batch_size: *batch_size,
                        batching_window: Duration::from_millis(*batching_window_ms as u64),
                        concurrency: *concurrency,
                    };
                    triggers.push(QueueTrigger::new(spec, config.clone(), pool.clone()));
                }
                Trigger::Http { route, methods } => routes.push(Route {
                    path: route.clone(),
                    methods: methods.clone(),
                    pool: Some(pool.clone()),
                }),
                Trigger::Schedule { expression } => schedule::start(
                    f.name.clone(),
                    expression.clone(),
                    parse_rate(expression).map_err(|e| anyhow!(e))?,
                    pool.clone(),
                ),
                Trigger::Startup { event } => {
                    startups.push((f.name.clone(), event.clone(), pool.clone()))
                }
            }
        }
        pools.insert(f.name.clone(), pool);
    }
    let supervisor = Arc::new(Supervisor::default());
    // The Invoke API's and the status's token: new at each start, kept in the
    // 0600 local-runner.json for this user's `stratus-local status`.
    let token = crate::secrets::generate();
    let api = Arc::new(RuntimeApi {
        pools: pools.clone(),
        triggers: triggers.clone(),
        supervisor: supervisor.clone(),
        token: token.clone(),
    });
    tokio::spawn(async move {
        if let Err(e) = axum::serve(runtime_listener, runtime_api::router(api)).await {
            tracing::error!(error = %e, "Runtime API server stopped");
        }
    });
    for pool in pools.values() {
        pool.start()
            .await
            .with_context(|| format!("starting {}", pool.spec.name))?;
    }
    for t in &triggers {
        t.start();
    }
    let gateway_addr = match gateway_listener {
        Some(listener) => {
            let addr = listener.local_addr()?.to_string();
            tokio::spawn(gateway::serve(listener, gateway::router(routes)));
            Some(addr)
        }
        None => None,
    };
    let endpoint = format!(
        "http://{}/client/api",
        gateway_addr.as_deref().unwrap_or("127.0.0.1:8080")
    );
    let manifest_dir = args
        .common
        .manifest
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default();
    for (function, event, pool) in startups {
        run_startup(&function, event, &pool, &endpoint, &manifest_dir).await?;
    }
    for p in &manifest.processes {
        let env = child_environment(&config, args.common.topology.as_deref(), &p.environment)?;
        let spec = ProcessSpec {
            name: p.name.clone(),
            binary: binary_path(&dir, &format!("process {}", p.name), &p.binary)?,
            args: p.args.clone(),
            environment: env,
            instances: p.min_instances,
        };
        supervisor.start(spec).await;
    }

    let address_file = config.home.join("local-runner.json");
    let address = RunnerAddress {
        pid: std::process::id(),
        runtime_api: runtime_addr.clone(),
        gateway: gateway_addr.clone(),
        consul: consul_addr.clone(),
        token: Some(token),
    };
    stratus_secrets::private::replace(&address_file, &serde_json::to_vec_pretty(&address)?)
        .with_context(|| format!("writing {}", address_file.display()))?;
    tracing::info!(
        functions = pools.len(),
        queue_triggers = triggers.len(),
        processes = manifest.processes.len(),
        runtime_api = %runtime_addr,
        gateway = gateway_addr.as_deref().unwrap_or("-"),
        vhost = %config.amqp_vhost,
        home = %config.home.display(),
        "stratus-local ready"
    );
    if let Some(g) = &gateway_addr {
        eprintln!("stratus-local: ready; CloudStack API at http://{g}/client/api");
    } else {
        eprintln!("stratus-local: ready; runtime API at http://{runtime_addr}");
    }

    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    tracing::info!("stopping");
    supervisor.shutdown();
    for pool in pools.values() {
        pool.shutdown().await;
    }
    let _ = std::fs::remove_file(&address_file);
    Ok(ExitCode::SUCCESS)
}

/// A function's `bootstrap` taken out of its Lambda zip, in a private (0700)
/// directory of its own that goes when this does.
struct Unpacked {
    dir: PathBuf,
}

impl Unpacked {
    fn new(zip: &Path) -> anyhow::Result<Self> {
        use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
        let bytes = crate::package::read_bootstrap(zip)?;
        let dir =
            std::env::temp_dir().join(format!("stratus-package-{}", uuid::Uuid::new_v4().simple()));
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&dir)
            .with_context(|| format!("creating {}", dir.display()))?;
        let unpacked = Self { dir };
        let binary = unpacked.dir.join(crate::package::ENTRY);
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o700)
            .open(&binary)
            .with_context(|| format!("writing {}", binary.display()))?;
        std::io::Write::write_all(&mut file, &bytes)?;
        file.sync_all()?;
        Ok(unpacked)
    }
}

impl Drop for Unpacked {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Invokes `function` once with the event file; with `package`, runs the
/// `bootstrap` of that zip (the artifact Lambda would run) instead of the binary.
pub async fn invoke(
    function: &str,
    event: &Path,
    package: Option<&Path>,
    common: CommonArgs,
) -> anyhow::Result<ExitCode> {
    let config = Config::from_env()?;
    let manifest = Manifest::load(&common.manifest)?;
    let f = manifest.function(function).ok_or_else(|| {
        anyhow!(
            "{}: no function named {function:?}",
            common.manifest.display()
        )
    })?;
    let payload = if event == Path::new("-") {
        let mut s = Vec::new();
        std::io::Read::read_to_end(&mut std::io::stdin(), &mut s)?;
        s
    } else {
        std::fs::read(event).with_context(|| format!("reading the event {}", event.display()))?
    };
    serde_json::from_slice::<serde_json::Value>(&payload)
        .with_context(|| format!("the event {} is not JSON", event.display()))?;
    let dir = bin_dir(&common)?;
    let listener = bind("127.0.0.1:0", "Runtime API").await?;
    let addr = listener.local_addr()?.to_string();
    let env = child_environment(&config, common.topology.as_deref(), &f.environment)?;
    let unpacked = package
        .map(|zip| {
            Unpacked::new(zip)
                .with_context(|| format!("function {function}: its package {}", zip.display()))
        })
        .transpose()?;
    let mut spec = match &unpacked {
        // Run as Lambda runs it: the file `bootstrap` in the package's directory.
        Some(u) => {
            let mut f = f.clone();
            f.binary = crate::package::ENTRY.to_string();
            function_spec(&f, &u.dir, env)?
        }
        None => function_spec(f, &dir, env)?,
    };
    spec.min_instances = 0;
    spec.max_instances = 1;
    let pool = Pool::new(spec, addr, false, Duration::from_secs(3600));
    let api = Arc::new(RuntimeApi {
        pools: [(f.name.clone(), pool.clone())].into_iter().collect(),
        triggers: Vec::new(),
        supervisor: Arc::new(Supervisor::default()),
        // Nobody invokes this one-off runner but us.
        token: crate::secrets::generate(),
    });
    tokio::spawn(async move { axum::serve(listener, runtime_api::router(api)).await });
    let outcome = pool.invoke(payload.into()).await;
    pool.shutdown().await;
    drop(unpacked);
    match outcome {
        Outcome::Success(body) => {
            println!("{}", String::from_utf8_lossy(&body));
            Ok(ExitCode::SUCCESS)
        }
        Outcome::Error(body) => {
            println!("{}", String::from_utf8_lossy(&body));
            eprintln!("stratus-local: the function failed (X-Amz-Function-Error: Unhandled)");
            Ok(ExitCode::from(1))
        }
    }
}

pub async fn status(json: bool) -> anyhow::Result<ExitCode> {
    let config = Config::from_env()?;
    let file = config.home.join("local-runner.json");
    let text = std::fs::read(&file).map_err(|_| {
        anyhow!("no stratus-local is running under STRATUS_HOME={} (no {}); start one with scripts/run-local", config.home.display(), file.display())
    })?;
    let address: RunnerAddress =
        serde_json::from_slice(&text).with_context(|| format!("reading {}", file.display()))?;
    let token = address.token.as_deref().ok_or_else(|| {
        anyhow!(
            "{} has no token (a runner from before the Invoke API and the status asked for one): restart it",
            file.display()
        )
    })?;
    let url = format!("http://{}/local/status", address.runtime_api);
    let value: serde_json::Value = reqwest::Client::new()
        .get(&url)
        .bearer_auth(token)
        .send()
        .await
        .and_then(|r| r.error_for_status())
        .map_err(|e| {
            anyhow!(
                "stratus-local (pid {}) does not answer at {url}: {e}",
                address.pid
            )
        })?
        .json()
        .await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&value)?);
    } else {
        print!("{}", status::render(&value));
    }
    Ok(ExitCode::SUCCESS)
}
