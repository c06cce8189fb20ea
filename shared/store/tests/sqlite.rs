//! The conformance suite on the SQLite backend, in one process and across processes.

use std::sync::Arc;

use stratus_model::Vm;
use stratus_store::sqlite::SqliteStore;
use stratus_store::{Backend, Store, StoreError, Write, conformance};

fn temp_db(name: &str) -> std::path::PathBuf {
    std::env::temp_dir()
        .join(format!(
            "stratus-store-{name}-{}",
            uuid::Uuid::new_v4().simple()
        ))
        .join("stratus.db")
}

fn open(path: &std::path::Path) -> Store {
    Store::new(Backend::Sqlite(
        SqliteStore::open(path, "stratus_").unwrap(),
    ))
}

#[tokio::test]
async fn sqlite_conforms() {
    let path = temp_db("conformance");
    let stores: Vec<Arc<Store>> = (0..8).map(|_| Arc::new(open(&path))).collect();
    conformance::run_all(&stores).await;
    let _ = std::fs::remove_dir_all(path.parent().unwrap());
}

#[tokio::test]
async fn an_item_that_fails_to_decode_names_its_key_and_field() {
    let path = temp_db("decode");
    let raw = SqliteStore::open(&path, "stratus_").unwrap();
    let id = uuid::Uuid::new_v4();
    let item = stratus_store::Item {
        kind: "vm",
        id,
        version: 1,
        keys: Default::default(),
        doc: format!("{{\"id\":\"{id}\"}}"),
    };
    raw.transact(vec![Write::Put {
        item,
        condition: stratus_store::Condition::Absent,
    }])
    .await
    .unwrap();
    let store = Store::new(Backend::Sqlite(raw));
    match store.get::<Vm>(stratus_model::Id::from_uuid(id)).await {
        Err(e @ StoreError::Decode { .. }) => {
            let text = e.to_string();
            assert!(
                text.contains("vm")
                    && text.contains(&id.to_string())
                    && text.contains("missing field `name`"),
                "{text}"
            );
        }
        other => panic!("expected a decode error, got {other:?}"),
    }
    let _ = std::fs::remove_dir_all(path.parent().unwrap());
}

#[tokio::test]
async fn a_bad_table_prefix_is_refused() {
    let path = temp_db("prefix");
    let e = SqliteStore::open(&path, "x; DROP")
        .err()
        .unwrap()
        .to_string();
    let _ = std::fs::remove_dir_all(path.parent().unwrap());
    assert!(e.contains("table prefix"), "{e}");
}

#[tokio::test]
async fn racers_on_separate_connections_have_one_winner() {
    use stratus_model::samples::{Fixture, Sample};
    let path = temp_db("race");
    let stores: Vec<Arc<Store>> = (0..8).map(|_| Arc::new(open(&path))).collect();
    let f = Fixture::default();
    let ip = stratus_model::IpAddress::sample(&f);
    let started = std::time::Instant::now();
    let mut tasks = Vec::new();
    for i in 0..50 {
        let store = stores[i % stores.len()].clone();
        let ip = ip.clone();
        tasks.push(tokio::spawn(async move {
            let t = std::time::Instant::now();
            (store.create(&ip).await, t.elapsed())
        }));
    }
    let mut wins = 0;
    let mut latencies = Vec::new();
    for t in tasks {
        let (result, took) = t.await.unwrap();
        latencies.push(took);
        match result {
            Ok(_) => wins += 1,
            Err(e) => assert!(e.is_conflict(), "{e}"),
        }
    }
    latencies.sort();
    println!(
        "50 racers on 8 connections: {wins} winner, p99 {:?}, all in {:?}",
        latencies[latencies.len() * 99 / 100],
        started.elapsed()
    );
    assert_eq!(wins, 1);
    let _ = std::fs::remove_dir_all(path.parent().unwrap());
}

#[tokio::test]
async fn racing_processes_have_one_winner() {
    use stratus_model::samples::{Fixture, Sample};
    let path = temp_db("processes");
    let store = open(&path);
    let f = Fixture::default();
    let mut network = stratus_model::Network::sample(&f);
    network.cidr = "10.7.0.0/29".into();
    network.gateway = "10.7.0.1".into();
    let network = store.create(&network).await.unwrap().value;
    for key in ["1", "2", "3", "4"] {
        let req = stratus_store::primitives::IpRequest {
            key: key.into(),
            network_id: network.id,
            vm_id: stratus_model::Id::new(),
            requested: None,
            is_default: true,
            device_id: 0,
        };
        store.allocate_ip(&req).await.unwrap();
    }
    let mut host = stratus_model::Host::sample(&f);
    host.cpu_number = 1;
    host.cpu_speed = 1000;
    let host = store.create(&host).await.unwrap().value;
    // The example binary beside this test binary (cargo test builds examples).
    let exe = std::env::current_exe().unwrap();
    let race = exe
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .join("examples/race");
    assert!(
        race.is_file(),
        "{} is missing: run `cargo test -p stratus-store` (without a target filter, so that examples are built)",
        race.display()
    );
    let started = std::time::Instant::now();
    let children: Vec<_> = (0..4)
        .map(|p| {
            std::process::Command::new(&race)
                .args([
                    path.to_str().unwrap(),
                    &network.id.to_string(),
                    &host.id.to_string(),
                    &format!("p{p}"),
                    "13",
                ])
                .stdout(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let (mut ip_wins, mut cap_wins, mut retries) = (0, 0, 0);
    for c in children {
        let out = c.wait_with_output().unwrap();
        assert!(out.status.success());
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        ip_wins += v["ip_wins"].as_u64().unwrap();
        cap_wins += v["capacity_wins"].as_u64().unwrap();
        retries += v["retries"].as_u64().unwrap();
    }
    println!(
        "4 processes x 13 racers: {ip_wins} address winner, {cap_wins} capacity winner, {retries} retries, {:?}",
        started.elapsed()
    );
    assert_eq!((ip_wins, cap_wins), (1, 1));
    let h = store.get(host.id).await.unwrap().unwrap().value;
    assert_eq!(h.cpu_allocated, 1000);
    let _ = std::fs::remove_dir_all(path.parent().unwrap());
}

fn mode(p: &std::path::Path) -> String {
    use std::os::unix::fs::PermissionsExt;
    format!(
        "{:o}",
        std::fs::metadata(p).unwrap().permissions().mode() & 0o777
    )
}

/// The database and its WAL are only their owner's: made 0600 (SQLite gives
/// `-wal`/`-shm` the database's mode), a directory made for them 0700, and a
/// store made before with wider modes tightened when opened.
#[tokio::test]
async fn the_database_files_are_private_and_wider_ones_are_tightened() {
    use std::os::unix::fs::PermissionsExt;
    let path = temp_db("modes");
    let dir = path.parent().unwrap().to_path_buf();
    let store = open(&path);
    store
        .create(&<Vm as stratus_model::samples::Sample>::sample(
            &Default::default(),
        ))
        .await
        .unwrap();
    let wal = dir.join("stratus.db-wal");
    let shm = dir.join("stratus.db-shm");
    assert_eq!(
        (mode(&dir), mode(&path), mode(&wal), mode(&shm)),
        ("700".into(), "600".into(), "600".into(), "600".into())
    );
    drop(store);
    // A store from before: world-readable files.
    for f in [&path, &wal, &shm] {
        if f.exists() {
            std::fs::set_permissions(f, std::fs::Permissions::from_mode(0o644)).unwrap();
        }
    }
    let store = open(&path);
    store
        .create(&<Vm as stratus_model::samples::Sample>::sample(
            &Default::default(),
        ))
        .await
        .unwrap();
    for f in [&path, &wal, &shm] {
        assert_eq!(mode(f), "600", "{}", f.display());
    }
    let _ = std::fs::remove_dir_all(dir);
}
