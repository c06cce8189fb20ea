//! Test support: a SQLite store with a zone, pod and cluster; settings with
//! fixed values; a stand-in for Consul's `health/service` answering which
//! host agents pass.

use std::collections::HashMap;
use std::sync::Arc;

use chrono::Utc;
use stratus_contracts::message_types::saga::StepRef;
use stratus_contracts::settings::{Pending, ScopeId, Setting, SettingsSource};
use stratus_model::samples::{Fixture, Sample};
use stratus_model::*;
use stratus_store::sqlite::SqliteStore;
use stratus_store::{Backend, Store};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::Compute;

pub fn step_ref(undo: bool) -> StepRef {
    StepRef {
        saga_id: "6a1f0c2e-0d1b-4c3e-9f00-000000000001".into(),
        step: "reserve-capacity".into(),
        undo,
    }
}

/// Settings with fixed values: global ones and cluster-scoped ones.
#[derive(Default)]
pub struct FixedSettings {
    values: HashMap<(String, Option<String>), String>,
}

impl FixedSettings {
    pub fn set_in(&mut self, name: &str, cluster: Id<Cluster>, value: &str) {
        self.values
            .insert((name.into(), Some(cluster.to_string())), value.into());
    }
}

impl SettingsSource for FixedSettings {
    fn value(&self, setting: &'static Setting) -> String {
        self.values
            .get(&(setting.name.to_string(), None))
            .cloned()
            .unwrap_or_else(|| setting.default.to_string())
    }

    fn value_in(&self, setting: &'static Setting, at: &ScopeId) -> String {
        self.values
            .get(&(setting.name.to_string(), Some(at.id.clone())))
            .cloned()
            .unwrap_or_else(|| self.value(setting))
    }

    fn update<'a>(
        &'a self,
        _setting: &'static Setting,
        _at: Option<&'a ScopeId>,
        _value: &'a str,
    ) -> Pending<'a, Result<(), String>> {
        Box::pin(async { Err("fixed settings".to_string()) })
    }
}

/// A zone with one Enabled pod and cluster, in a fresh SQLite store.
pub struct World {
    pub store: Arc<Store>,
    pub fixture: Fixture,
    pub zone: Id<Zone>,
    pub pod: Id<Pod>,
    pub cluster: Id<Cluster>,
}

impl World {
    pub async fn new() -> World {
        let store = Arc::new(Store::new(Backend::Sqlite(
            SqliteStore::open_scratch("t_").unwrap(),
        )));
        let mut fixture = Fixture::default();
        let zone = store
            .create(&Zone::sample(&fixture))
            .await
            .unwrap()
            .value
            .id;
        fixture.zone = zone;
        let mut w = World {
            store,
            fixture,
            zone,
            pod: Id::new(),
            cluster: Id::new(),
        };
        w.pod = w.pod(AllocationState::Enabled).await;
        w.fixture.pod = w.pod;
        w.cluster = w.cluster(AllocationState::Enabled, w.pod).await;
        w.fixture.cluster = w.cluster;
        w
    }

    pub async fn pod(&self, state: AllocationState) -> Id<Pod> {
        let pod = Pod {
            allocation_state: state,
            ..Pod::sample(&self.fixture)
        };
        self.store.create(&pod).await.unwrap().value.id
    }

    pub async fn cluster(&self, state: AllocationState, pod: Id<Pod>) -> Id<Cluster> {
        let cluster = Cluster {
            pod_id: pod,
            allocation_state: state,
            ..Cluster::sample(&self.fixture)
        };
        self.store.create(&cluster).await.unwrap().value.id
    }

    /// An Up, Enabled routing host (16 x 2000 MHz, 64 GiB) named `name`,
    /// changed by `shape` before it is stored.
    pub async fn host(&self, name: &str, shape: impl FnOnce(&mut Host)) -> Host {
        let mut host = Host {
            name: name.into(),
            state: HostState::Up,
            resource_state: ResourceState::Enabled,
            last_pinged: Some(Utc::now()),
            ..Host::sample(&self.fixture)
        };
        shape(&mut host);
        self.store.create(&host).await.unwrap().value
    }

    pub fn compute(
        &self,
        settings: FixedSettings,
        consul: Option<stratus_discovery::Client>,
    ) -> Compute {
        Compute {
            store: self.store.clone(),
            settings: Arc::new(settings),
            consul,
        }
    }
}

/// Answers `GET /v1/health/service/stratus-agent?passing` with one passing
/// instance per host name given, as Consul does for registered agents.
pub struct FakeConsul {
    addr: String,
}

impl FakeConsul {
    pub async fn start(passing: &[&str]) -> FakeConsul {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let entries: Vec<serde_json::Value> = passing
            .iter()
            .map(|h| {
                serde_json::json!({
                    "Node": {"Node": "node-1"},
                    "Service": {
                        "ID": format!("stratus-agent-{h}"),
                        "Service": "stratus-agent",
                        "Meta": {"host": h},
                    },
                    "Checks": [{
                        "CheckID": format!("service:stratus-agent-{h}"),
                        "Name": "agent heartbeat",
                        "Status": "passing",
                        "ServiceID": format!("stratus-agent-{h}"),
                    }],
                })
            })
            .collect();
        let body = serde_json::to_string(&entries).unwrap();
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                let body = body.clone();
                tokio::spawn(async move {
                    let mut request = Vec::new();
                    let mut buf = [0u8; 1024];
                    while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                        match socket.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => request.extend_from_slice(&buf[..n]),
                        }
                    }
                    let head = String::from_utf8_lossy(&request);
                    let (status, body) =
                        if head.starts_with("GET /v1/health/service/stratus-agent?passing") {
                            ("200 OK", body)
                        } else {
                            ("404 Not Found", String::new())
                        };
                    let response = format!(
                        "HTTP/1.1 {status}\r\ncontent-type: application/json\r\nx-consul-index: 7\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = socket.write_all(response.as_bytes()).await;
                });
            }
        });
        FakeConsul { addr }
    }

    pub fn client(&self) -> stratus_discovery::Client {
        stratus_discovery::Client::new(&self.addr, None)
    }
}
