//! One racing process for the multi-process SQLite test:
//! `race DB NETWORK_ID HOST_ID PREFIX RACERS` races RACERS tasks for an
//! address of the network and for capacity on the host, and prints a JSON line
//! with how many it won.

use std::sync::Arc;

use stratus_model::Id;
use stratus_store::primitives::IpRequest;
use stratus_store::sqlite::SqliteStore;
use stratus_store::{Backend, Store, StoreError};

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let [_, db, network, host, prefix, racers] = args.as_slice() else {
        eprintln!("usage: race DB NETWORK_ID HOST_ID PREFIX RACERS");
        std::process::exit(2);
    };
    let store = Arc::new(Store::new(Backend::Sqlite(
        SqliteStore::open(std::path::Path::new(db), "stratus_").unwrap(),
    )));
    let network: Id<stratus_model::Network> = network.parse().unwrap();
    let host: Id<stratus_model::Host> = host.parse().unwrap();
    let racers: usize = racers.parse().unwrap();
    let mut tasks = Vec::new();
    for i in 0..racers {
        let store = store.clone();
        let key = format!("{prefix}-{i}");
        tasks.push(tokio::spawn(async move {
            let req = IpRequest {
                key: key.clone(),
                network_id: network,
                vm_id: Id::new(),
                requested: None,
                is_default: true,
                device_id: 0,
            };
            let ip = store.allocate_ip(&req).await;
            let cap = store
                .reserve_capacity(&key, host, 1000, 1 << 20, 1.0, 1.0)
                .await;
            (ip, cap)
        }));
    }
    let (mut ip_wins, mut cap_wins, mut retries) = (0, 0, 0);
    for t in tasks {
        let (ip, cap) = t.await.unwrap();
        match ip {
            Ok(a) => {
                ip_wins += 1;
                retries += a.retries;
            }
            Err(StoreError::Exhausted(_)) => {}
            Err(e) => panic!("{e}"),
        }
        match cap {
            Ok(a) => {
                cap_wins += 1;
                retries += a.retries;
            }
            Err(StoreError::Exhausted(_)) => {}
            Err(e) => panic!("{e}"),
        }
    }
    println!("{{\"ip_wins\":{ip_wins},\"capacity_wins\":{cap_wins},\"retries\":{retries}}}");
}
