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
