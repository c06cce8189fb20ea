//! The Consul client's contract suite, against the local runner's stand-in
//! (always) and a real Consul (when `STRATUS_TEST_CONSUL_ADDR` names one).

use std::sync::Arc;

use stratus_discovery::{Client, PutOptions, QueryOptions, contract};
use stratus_local::consul::Consul;
use stratus_tests::{Runner, RunnerOptions, TestEnv, diag_manifest};

async fn stand_in(dir: &std::path::Path) -> (String, Arc<Consul>) {
    let consul = Consul::open(Some(dir.to_path_buf())).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    tokio::spawn(stratus_local::consul::serve(listener, consul.clone()));
    (addr, consul)
}

fn temp_dir(name: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("stratus-consul-{name}-{:08x}", rand_u32()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn rand_u32() -> u32 {
    uuid::Uuid::new_v4().as_u128() as u32
}

#[tokio::test(flavor = "multi_thread")]
async fn the_stand_in_keeps_the_contract() {
    let (addr, _) = stand_in(&temp_dir("contract")).await;
    contract::run_all(&Client::new(&addr, None)).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_real_consul_keeps_the_contract() {
    let Ok(addr) = std::env::var("STRATUS_TEST_CONSUL_ADDR") else {
        eprintln!(
            "SKIPPED: STRATUS_TEST_CONSUL_ADDR is not set (no Consul binary can be installed here)"
        );
        return;
    };
    contract::run_all(&Client::new(&addr, std::env::var("CONSUL_HTTP_TOKEN").ok())).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_stand_ins_kv_survives_a_restart() {
    let dir = temp_dir("persist");
    let (addr, _) = stand_in(&dir).await;
    let c = Client::new(&addr, None);
    assert!(
        c.kv_put(
            "stratus/config/default.page.size",
            b"250",
            &PutOptions::default()
        )
        .await
        .unwrap()
    );
    let before = c
        .kv_get("stratus/config/default.page.size", &QueryOptions::default())
        .await
        .unwrap();
    let (addr, _) = stand_in(&dir).await;
    let c = Client::new(&addr, None);
    let after = c
        .kv_get("stratus/config/default.page.size", &QueryOptions::default())
        .await
        .unwrap();
    assert_eq!(
        after.value.as_ref().unwrap().value.as_deref(),
        Some(&b"250"[..])
    );
    assert_eq!(
        after.value.unwrap().modify_index,
        before.value.unwrap().modify_index
    );
    assert!(
        c.kv_put("stratus/x", b"y", &PutOptions::default())
            .await
            .unwrap()
    );
    let next = c
        .kv_get("stratus/x", &QueryOptions::default())
        .await
        .unwrap();
    assert!(
        next.index > before.index,
        "indexes never go backwards across a restart"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_runner_serves_the_stand_in_with_its_kv_under_its_home() {
    let env = TestEnv::new("consul-runner");
    let runner = Runner::start(
        &env,
        RunnerOptions {
            manifest: diag_manifest(|_| {}),
            topology: None,
            extra_args: vec![],
        },
    );
    let addr = runner
        .consul
        .clone()
        .expect("the runner serves a Consul stand-in");
    let c = Client::new(&addr, None);
    assert_eq!(c.leader().await.unwrap(), "127.0.0.1:8300");
    assert!(runner.log().contains("development stand-in for Consul"));
    // Its KV lives under STRATUS_HOME.
    assert!(
        c.kv_put("stratus/probe", b"1", &PutOptions::default())
            .await
            .unwrap()
    );
    assert!(env.home.join("consul-kv.json").is_file());
}

/// Checks `got` against a golden shape key by key: every key of `want` is in
/// `got` with a value of the same JSON type; objects recurse (except the maps
/// with free keys), arrays through their first element; `null` accepts anything.
fn same_shape(
    want: &serde_json::Value,
    got: &serde_json::Value,
    path: &str,
    problems: &mut Vec<String>,
) {
    use serde_json::Value;
    const MAPS: &[&str] = &[
        "TaggedAddresses",
        "Meta",
        "NodeMeta",
        "ServiceMeta",
        "ServiceTaggedAddresses",
    ];
    let kind = |v: &Value| match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    };
    if want.is_null() {
        return;
    }
    if kind(want) != kind(got) {
        problems.push(format!(
            "{path}: {} in Consul's shape, {} here ({got})",
            kind(want),
            kind(got)
        ));
        return;
    }
    match (want, got) {
        (Value::Object(w), Value::Object(g)) => {
            let leaf = path.rsplit('.').next().unwrap_or_default();
            if MAPS.contains(&leaf) {
                return;
            }
            for (k, wv) in w {
                match g.get(k) {
                    Some(gv) => same_shape(wv, gv, &format!("{path}.{k}"), problems),
                    None => problems.push(format!("{path}.{k}: missing")),
                }
            }
        }
        (Value::Array(w), Value::Array(g)) => {
            if let (Some(wv), Some(gv)) = (w.first(), g.first()) {
                same_shape(wv, gv, &format!("{path}[0]"), problems);
            }
        }
        _ => {}
    }
}

fn fixture(name: &str) -> serde_json::Value {
    let path = stratus_tests::root()
        .join("shared/discovery/fixtures")
        .join(name);
    serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap()
}

/// The stand-in's answers have the shapes of Consul's documented responses.
#[tokio::test(flavor = "multi_thread")]
async fn the_stand_ins_answers_have_consuls_documented_shapes() {
    use stratus_discovery::{Behavior, CheckDefinition, ServiceRegistration, SessionOptions};
    let (addr, _) = stand_in(&temp_dir("shapes")).await;
    let c = Client::new(&addr, None);
    c.register_service(&ServiceRegistration {
        id: Some("stratus-agent-SimHost-c0-h0".into()),
        name: "stratus-agent".into(),
        tags: vec!["host-agent".into()],
        address: "127.0.0.1".into(),
        meta: [("host".to_string(), "SimHost-c0-h0".to_string())].into(),
        check: Some(CheckDefinition {
            ttl: "30s".into(),
            status: Some("passing".into()),
            ..Default::default()
        }),
        ..Default::default()
    })
    .await
    .unwrap();
    let session = c
        .session_create(&SessionOptions {
            name: "shapes".into(),
            ttl: Some(std::time::Duration::from_secs(10)),
            behavior: Behavior::Release,
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(
        c.lock_acquire("stratus/locks/example", &session, b"holder")
            .await
            .unwrap()
    );
    let http = reqwest::Client::new();
    let get = |path: String| {
        let (http, addr) = (http.clone(), addr.clone());
        async move {
            http.get(format!("http://{addr}/v1/{path}"))
                .send()
                .await
                .unwrap()
                .json::<serde_json::Value>()
                .await
                .unwrap()
        }
    };
    let created = http
        .put(format!("http://{addr}/v1/session/create"))
        .body("{}")
        .send()
        .await
        .unwrap()
        .json::<serde_json::Value>()
        .await
        .unwrap();
    let answers = [
        ("kv-read.json", get("kv/stratus/locks/example".into()).await),
        (
            "session-info.json",
            get(format!("session/info/{session}")).await,
        ),
        ("session-create.json", created),
        (
            "health-service.json",
            get("health/service/stratus-agent".into()).await,
        ),
        (
            "catalog-service.json",
            get("catalog/service/stratus-agent".into()).await,
        ),
        (
            "catalog-services.json",
            get("catalog/services".into()).await,
        ),
    ];
    let mut problems = Vec::new();
    for (file, got) in &answers {
        same_shape(&fixture(file), got, file, &mut problems);
    }
    assert!(
        problems.is_empty(),
        "shapes differ from Consul's:\n{}",
        problems.join("\n")
    );
    // The checker itself notices a missing key and a wrong type.
    let mut found = Vec::new();
    same_shape(
        &serde_json::json!({"A": 1, "B": "x"}),
        &serde_json::json!({"A": "1"}),
        "t",
        &mut found,
    );
    assert_eq!(found.len(), 2, "{found:?}");
}

/// Waits until the `stratus-agent` instance `id` is passing.
async fn passing_within(c: &Client, id: &str, seconds: u64, failure: &str) {
    let started = std::time::Instant::now();
    loop {
        let passing = c
            .health_service("stratus-agent", true, &QueryOptions::default())
            .await
            .unwrap()
            .value;
        if passing.iter().any(|e| e.service.id == id) {
            return;
        }
        assert!(
            started.elapsed() < std::time::Duration::from_secs(seconds),
            "{failure}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

/// A process started while Consul is down keeps running, says why in its log,
/// retries with backoff, and registers once Consul is there.
#[tokio::test(flavor = "multi_thread")]
async fn an_agent_outlives_an_unreachable_consul() {
    // A free port nobody listens on (yet).
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr = format!("127.0.0.1:{port}");
    let dir = temp_dir("agent-unreachable");
    let log = dir.join("agent.log");
    let mut agent =
        std::process::Command::new(stratus_tests::root().join("target/debug/stratus-agent"))
            .args(["--host", "SimHost-x"])
            .env("CONSUL_HTTP_ADDR", &addr)
            .env("RUST_LOG", "info")
            .stdout(std::fs::File::create(&log).unwrap())
            .stderr(std::fs::File::create(dir.join("agent.err")).unwrap())
            .spawn()
            .expect("stratus-agent is built (cargo build --workspace --bins)");
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    assert!(
        agent.try_wait().unwrap().is_none(),
        "the agent exited while Consul was down"
    );
    let text = std::fs::read_to_string(&log).unwrap()
        + &std::fs::read_to_string(dir.join("agent.err")).unwrap();
    assert!(
        text.contains(&format!("Consul at {addr} is unreachable")) && text.contains("retrying"),
        "{text}"
    );
    let tries = text.matches("heartbeat failed; retrying").count();
    assert!(
        (2..30).contains(&tries),
        "{tries} tries in 3 s: no backoff?\n{text}"
    );
    // Consul comes up on that address: the agent registers and passes.
    let consul = Consul::open(Some(dir.clone())).unwrap();
    let listener = tokio::net::TcpListener::bind(&addr).await.unwrap();
    tokio::spawn(stratus_local::consul::serve(listener, consul));
    let c = Client::new(&addr, None);
    passing_within(
        &c,
        "stratus-agent-SimHost-x",
        20,
        "the agent never registered",
    )
    .await;
    // Consul forgets it (as a restarted agent without its data would): the
    // next heartbeat gets 404 and the agent registers again. A short
    // ping.interval makes the heartbeats frequent.
    assert!(
        c.kv_put(
            "stratus/config/global/ping.interval",
            b"3",
            &PutOptions::default()
        )
        .await
        .unwrap()
    );
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    c.deregister_service("stratus-agent-SimHost-x")
        .await
        .unwrap();
    passing_within(
        &c,
        "stratus-agent-SimHost-x",
        10,
        "the agent never registered again",
    )
    .await;
    let log = std::fs::read_to_string(&log).unwrap()
        + &std::fs::read_to_string(dir.join("agent.err")).unwrap();
    assert!(
        log.contains("Consul does not know our check; registering again"),
        "{log}"
    );
    assert!(
        log.contains("\"ttl_s\":3"),
        "the new ping.interval was not taken: {log}"
    );
    let _ = agent.kill();
    let _ = agent.wait();
}
