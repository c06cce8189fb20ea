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
    conformance::run_all(Arc::new(open(&path))).await;
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
