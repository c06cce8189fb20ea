//! The simulator's mocks read from and used up in Consul's KV through the
//! real HTTP client, against a small in-process KV that speaks Consul's
//! `?recurse` listing (base64 values, indexes) and `?cas=` writes.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde_json::json;
use stratus_agent::driver::{Driver, DriverError};
use stratus_agent::sim::{Mocks, SimDriver};
use stratus_contracts::message_types::Placement;
use stratus_contracts::message_types::agent::StartVm;
use stratus_contracts::simulator::{MOCK_PREFIX, Mock, MockResult};

#[derive(Default)]
struct Kv {
    index: u64,
    /// key -> (value, create index, modify index)
    entries: BTreeMap<String, (Vec<u8>, u64, u64)>,
}

type Shared = Arc<Mutex<Kv>>;

async fn kv_get(
    State(kv): State<Shared>,
    Path(key): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let kv = kv.lock().unwrap();
    let recurse = q.contains_key("recurse");
    let found: Vec<_> = kv
        .entries
        .iter()
        .filter(|(k, _)| {
            if recurse {
                k.starts_with(&key)
            } else {
                **k == key
            }
        })
        .map(|(k, (v, c, m))| {
            json!({"Key": k, "Value": STANDARD.encode(v), "Flags": 0,
                   "CreateIndex": c, "ModifyIndex": m, "LockIndex": 0})
        })
        .collect();
    if found.is_empty() {
        return (
            StatusCode::NOT_FOUND,
            [("X-Consul-Index", kv.index.to_string())],
        )
            .into_response();
    }
    (
        [("X-Consul-Index", kv.index.to_string())],
        axum::Json(found),
    )
        .into_response()
}

async fn kv_put(
    State(kv): State<Shared>,
    Path(key): Path<String>,
    Query(q): Query<HashMap<String, String>>,
    body: axum::body::Bytes,
) -> axum::Json<bool> {
    let mut kv = kv.lock().unwrap();
    let current = kv.entries.get(&key).map(|(_, _, m)| *m);
    if let Some(cas) = q.get("cas").and_then(|c| c.parse::<u64>().ok()) {
        let holds = match current {
            None => cas == 0,
            Some(m) => m == cas,
        };
        if !holds {
            return axum::Json(false);
        }
    }
    kv.index += 1;
    let index = kv.index;
    let created = kv.entries.get(&key).map(|(_, c, _)| *c).unwrap_or(index);
    kv.entries.insert(key, (body.to_vec(), created, index));
    axum::Json(true)
}

async fn serve(kv: Shared) -> String {
    let app = Router::new()
        .route("/v1/kv/{*key}", get(kv_get).put(kv_put))
        .with_state(kv);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr.to_string()
}

fn placement() -> Placement {
    Placement {
        zone_id: "z1".into(),
        pod_id: "p1".into(),
        cluster_id: "c1".into(),
        host_id: "h1".into(),
        host_name: "SimHost-kv".into(),
    }
}

fn start() -> StartVm {
    StartVm {
        vm_id: "vm-1".into(),
        vm_name: "i-2-1-VM".into(),
        placement: placement(),
        cpu_number: 1,
        cpu_speed: 500,
        memory_mb: 512,
        nics: vec![],
        volume_ids: vec![],
        user_data: None,
    }
}

fn home() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("stratus-agent-kv-{:016x}", rand::random::<u64>()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[tokio::test]
async fn mocks_in_consul_are_applied_and_used_up() {
    let kv: Shared = Arc::default();
    let addr = serve(kv.clone()).await;
    let client = stratus_discovery::Client::new(&addr, None);
    let mock = |id: &str, result: MockResult, count: Option<u32>, host: Option<&str>| Mock {
        id: id.into(),
        name: "StartCommand".into(),
        value: "result:fail".into(),
        wait_ms: 0,
        result,
        count,
        zone_id: Some("z1".into()),
        pod_id: None,
        cluster_id: None,
        host_id: host.map(String::from),
    };
    for m in [
        // Zone-wide, every use: a pass. The host's own, once: a failure.
        mock("zone-wide", MockResult::Pass, None, None),
        mock("this-host", MockResult::Fail, Some(1), Some("h1")),
    ] {
        let put = client
            .kv_put(
                &format!("{MOCK_PREFIX}{}", m.id),
                &serde_json::to_vec(&m).unwrap(),
                &Default::default(),
            )
            .await
            .unwrap();
        assert!(put);
    }
    // An undecodable value is skipped.
    client
        .kv_put(&format!("{MOCK_PREFIX}garbage"), b"{", &Default::default())
        .await
        .unwrap();

    let dir = home();
    let sim = SimDriver::open(&dir, "SimHost-kv", Mocks::from_consul(Some(client))).unwrap();
    assert_eq!(
        sim.start_vm(&start()).await.unwrap_err(),
        DriverError::Failed {
            code: 530,
            text: "Simulated failure".into()
        }
    );
    let stored: Mock = {
        let kv = kv.lock().unwrap();
        serde_json::from_slice(&kv.entries[&format!("{MOCK_PREFIX}this-host")].0).unwrap()
    };
    assert_eq!(stored.count, Some(0), "the use was taken in Consul");
    // Used up: the zone-wide pass applies now.
    sim.start_vm(&start()).await.unwrap();
    assert_eq!(sim.list_vms().await.unwrap().len(), 1);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn an_unreachable_consul_runs_commands_without_mocks() {
    // A port nobody listens on: bind one, then let it go.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    drop(listener);
    let dir = home();
    let client = stratus_discovery::Client::new(&addr, None);
    let sim = SimDriver::open(&dir, "SimHost-kv", Mocks::from_consul(Some(client))).unwrap();
    let started = Instant::now();
    sim.start_vm(&start()).await.unwrap();
    assert!(started.elapsed() < Duration::from_secs(3));
    let _ = std::fs::remove_dir_all(&dir);
}
