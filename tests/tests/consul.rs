//! The Consul client's contract suite, against the local runner's stand-in
//! (always) and a real Consul (when `STRATUS_TEST_CONSUL_ADDR` names one).

use stratus_discovery::{Client, PutOptions, QueryOptions, contract};
use stratus_local::consul::Consul;
use stratus_tests::{Runner, RunnerOptions, TestEnv, diag_manifest};

/// A stand-in on an ephemeral port: its address and its ACL token (kept in
/// `dir` as the runner keeps it, so a restart on `dir` keeps it too).
async fn stand_in(dir: &std::path::Path) -> (String, String) {
    let token =
        stratus_local::secrets::load_or_create(&dir.join(stratus_local::consul::TOKEN_FILE))
            .unwrap();
    let consul = Consul::open(Some(dir.to_path_buf()), token.clone()).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    tokio::spawn(stratus_local::consul::serve(listener, consul));
    (addr, token)
}

fn temp_dir(name: &str) -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix(&format!("stratus-consul-{name}-"))
        .tempdir()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_stand_in_keeps_the_contract() {
    let dir = temp_dir("contract");
    let (addr, token) = stand_in(dir.path()).await;
    contract::run_all(&Client::new(&addr, Some(token))).await;
}

/// Consul's text for the anonymous token lacking `resource:access` on `name`
/// (`acl/errors.go`, `PermissionDeniedError.Error`, with `ResourceDescriptor`
/// quoting the name).
fn anonymous_denied(resource: &str, access: &str, name: &str) -> String {
    format!(
        "Permission denied: anonymous token lacks permission '{resource}:{access}' on \"{name}\". The anonymous token is used implicitly when a request does not specify a token."
    )
}

/// The stand-in checks Consul's ACL token as a Consul with default policy
/// deny and one management token: no token is the anonymous token's 403 with
/// Consul's text, or a listing filtered to nothing; an unknown token is
/// `ACL not found`; the token, however it is sent, may do everything.
#[tokio::test(flavor = "multi_thread")]
async fn the_stand_in_checks_consuls_acl_token() {
    let dir = temp_dir("acl");
    let (addr, token) = stand_in(dir.path()).await;
    let http = reqwest::Client::new();
    let url = |path: &str| format!("http://{addr}/v1/{path}");
    let key = "stratus/config/global/default.page.size";
    let kv = url(&format!("kv/{key}"));
    let text = |r: reqwest::Response| async move { (r.status().as_u16(), r.text().await.unwrap()) };

    // Without a token: writes and single reads are refused, with Consul's text.
    let write = anonymous_denied("key", "write", key);
    assert_eq!(
        text(http.put(&kv).body("5").send().await.unwrap()).await,
        (403, write.clone())
    );
    assert_eq!(
        text(http.delete(&kv).send().await.unwrap()).await,
        (403, write)
    );
    assert_eq!(
        text(http.get(&kv).send().await.unwrap()).await,
        (403, anonymous_denied("key", "read", key))
    );
    let register = http
        .put(url("agent/service/register"))
        .body(r#"{"Name": "stratus-agent", "Check": {"TTL": "10s"}}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(
        text(register).await,
        (403, anonymous_denied("service", "write", "stratus-agent"))
    );
    let session = http
        .put(url("session/create"))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(
        text(session).await,
        (403, anonymous_denied("session", "write", "stratus-local"))
    );

    // An unknown token, however it is sent.
    let wrong = stratus_local::secrets::generate();
    for r in [
        http.put(&kv).header("X-Consul-Token", &wrong),
        http.put(&kv).bearer_auth(&wrong),
        http.put(format!("{kv}?token={wrong}")),
        http.get(&kv).header("X-Consul-Token", &wrong),
    ] {
        assert_eq!(
            text(r.body("6").send().await.unwrap()).await,
            (403, "ACL not found".to_string())
        );
    }

    // The token, however it is sent, writes.
    for (n, r) in [
        http.put(&kv).header("X-Consul-Token", &token),
        http.put(&kv).bearer_auth(&token),
        http.put(format!("{kv}?token={token}")),
    ]
    .into_iter()
    .enumerate()
    {
        let r = r.body(format!("{}", 100 + n)).send().await.unwrap();
        assert_eq!(text(r).await, (200, "true".to_string()));
    }
    let c = Client::new(&addr, Some(token.clone()));
    let read = c.kv_get(key, &QueryOptions::default()).await.unwrap();
    assert_eq!(
        read.value.unwrap().value.as_deref(),
        Some(&b"102"[..]),
        "only the token's writes were taken"
    );

    // Listings without a token are filtered to nothing, as Consul filters them.
    let listing = http.get(url("kv/stratus/?recurse")).send().await.unwrap();
    assert_eq!(listing.status(), 404);
    assert_eq!(
        listing.headers()["X-Consul-Results-Filtered-By-ACLs"],
        "true"
    );
    assert!(listing.headers().contains_key("X-Consul-Index"));
    let services = http.get(url("catalog/services")).send().await.unwrap();
    assert_eq!(
        services.headers()["X-Consul-Results-Filtered-By-ACLs"],
        "true"
    );
    assert_eq!(text(services).await, (200, "{}".to_string()));
    let health = http
        .get(url("health/service/stratus-agent"))
        .send()
        .await
        .unwrap();
    assert_eq!(text(health).await, (200, "[]".to_string()));
    // The leader is anyone's to ask.
    let leader = http.get(url("status/leader")).send().await.unwrap();
    assert_eq!(leader.status(), 200);
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
    let tmp = temp_dir("persist");
    let dir = tmp.path().to_path_buf();
    let (addr, token) = stand_in(&dir).await;
    let c = Client::new(&addr, Some(token));
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
    let (addr, token) = stand_in(&dir).await;
    let c = Client::new(&addr, Some(token));
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
    // The leader is anyone's to ask, as on Consul.
    assert_eq!(
        Client::new(&addr, None).leader().await.unwrap(),
        "127.0.0.1:8300"
    );
    let c = runner.consul_client();
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
    let dir = temp_dir("shapes");
    let (addr, token) = stand_in(dir.path()).await;
    let c = Client::new(&addr, Some(token.clone()));
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
        let (http, addr, token) = (http.clone(), addr.clone(), token.clone());
        async move {
            http.get(format!("http://{addr}/v1/{path}"))
                .header("X-Consul-Token", &token)
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
        .header("X-Consul-Token", &token)
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
    let tmp = temp_dir("agent-unreachable");
    let dir = tmp.path().to_path_buf();
    let token =
        stratus_local::secrets::load_or_create(&dir.join(stratus_local::consul::TOKEN_FILE))
            .unwrap();
    let log = dir.join("agent.log");
    let mut agent =
        std::process::Command::new(stratus_tests::root().join("target/debug/stratus-agent"))
            .args(["--host", "SimHost-x"])
            .env("CONSUL_HTTP_ADDR", &addr)
            .env("CONSUL_HTTP_TOKEN", &token)
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
    let consul = Consul::open(Some(dir.clone()), token.clone()).unwrap();
    let listener = tokio::net::TcpListener::bind(&addr).await.unwrap();
    tokio::spawn(stratus_local::consul::serve(listener, consul));
    let c = Client::new(&addr, Some(token));
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

/// The runner's stand-in serves Consul's ACL check: a write without the token
/// (or with another) gets Consul's 403 and is not applied; the functions and
/// processes, which were given the token, still read and write.
#[tokio::test(flavor = "multi_thread")]
async fn the_runners_stand_in_refuses_writes_without_its_token() {
    let env = TestEnv::new("consul-acl");
    let runner = Runner::start(
        &env,
        RunnerOptions {
            manifest: diag_manifest(|_| {}),
            topology: None,
            extra_args: vec![],
        },
    );
    let addr = runner.consul.clone().unwrap();
    let key = "stratus/config/global/default.page.size";
    let url = format!("http://{addr}/v1/kv/{key}");
    let http = reqwest::Client::new();
    let anonymous = http.put(&url).body("1").send().await.unwrap();
    assert_eq!(anonymous.status(), 403);
    assert_eq!(
        anonymous.text().await.unwrap(),
        format!(
            "Permission denied: anonymous token lacks permission 'key:write' on \"{key}\". The anonymous token is used implicitly when a request does not specify a token."
        )
    );
    let wrong = http
        .put(&url)
        .header("X-Consul-Token", uuid::Uuid::new_v4().to_string())
        .body("1")
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 403);
    assert_eq!(wrong.text().await.unwrap(), "ACL not found");
    // Nothing was written; with the token, the write is taken.
    let c = runner.consul_client();
    let read = c.kv_get(key, &QueryOptions::default()).await.unwrap();
    assert_eq!(read.value, None);
    assert!(c.kv_put(key, b"250", &PutOptions::default()).await.unwrap());
    let token_file = env.home.join("consul-token");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&token_file).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert!(
        !runner
            .log()
            .contains(runner.consul_token.as_deref().unwrap())
    );
}
