//! The data service's store on one backend: put, get, conditional update and
//! query (throughput, p50, p99), then CloudStack's paging path (`page=N`,
//! `pagesize=500`, with `count`) over many VMs of one account: the first,
//! middle and last page on a sequential walk (as `cs` walks) and on cold
//! jumps, with the last/first ratio.

use std::sync::Arc;
use std::time::{Duration, Instant};

use stratus_model::Vm;
use stratus_model::samples::{Fixture, Sample};
use stratus_store::dynamodb::{DynamoStore, Faults};
use stratus_store::sqlite::SqliteStore;
use stratus_store::{Backend, Index, PagePath, Store};

use crate::stats::Summary;

pub struct Options {
    pub backend: String,
    pub endpoint: String,
    pub ops: usize,
    pub vms: usize,
    pub pagesize: usize,
}

async fn open(o: &Options, prefix: &str, dir: &std::path::Path) -> anyhow::Result<Store> {
    Ok(match o.backend.as_str() {
        "sqlite" => Store::new(Backend::Sqlite(SqliteStore::open(
            &dir.join("bench.db"),
            prefix,
        )?)),
        "dynamodb" => {
            let d = DynamoStore::connect(&o.endpoint, prefix, Faults::default()).await?;
            d.create_table().await?;
            Store::new(Backend::DynamoDb(d))
        }
        other => anyhow::bail!("--backend {other:?}: expected sqlite or dynamodb"),
    })
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn line(what: &str, samples: &mut [Duration]) {
    let s = Summary::of(samples);
    println!(
        "  {what:<20} {:>8.0} ops/s   p50 {:>7.3} ms   p99 {:>7.3} ms",
        samples.len() as f64 / s.total.as_secs_f64(),
        ms(s.p50),
        ms(s.p99)
    );
}

pub async fn run(o: Options) -> anyhow::Result<()> {
    let dir = std::env::temp_dir().join(format!(
        "stratus-store-bench-{}",
        uuid::Uuid::new_v4().simple()
    ));
    std::fs::create_dir_all(&dir)?;
    let prefix = format!("b{}_", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    let store = Arc::new(open(&o, &prefix, &dir).await?);
    let label = if o.backend == "dynamodb" {
        " (moto: emulator-bound figures)"
    } else {
        ""
    };
    println!(
        "== store operations on {}{label}, {} each, one task ==",
        o.backend, o.ops
    );
    let f = Fixture::default();
    let mut created = Vec::with_capacity(o.ops);
    let mut samples = Vec::with_capacity(o.ops);
    for _ in 0..o.ops {
        let vm = Vm::sample(&f);
        let t = Instant::now();
        created.push(store.create(&vm).await?);
        samples.push(t.elapsed());
    }
    line("put (create)", &mut samples);
    samples.clear();
    for v in &created {
        let t = Instant::now();
        store.get(v.value.id).await?;
        samples.push(t.elapsed());
    }
    line("get (consistent)", &mut samples);
    samples.clear();
    for v in &created {
        let t = Instant::now();
        store.update(v).await?;
        samples.push(t.elapsed());
    }
    line("conditional update", &mut samples);
    samples.clear();
    // What the API's rate limit adds to each call of a limited account:
    // one atomic hit on the account's window.
    let window = Duration::from_secs(3600);
    for _ in 0..o.ops {
        let t = Instant::now();
        store
            .hit("bench-account", chrono::Utc::now(), window)
            .await?;
        samples.push(t.elapsed());
    }
    line("hit (api.throttling window)", &mut samples);
    samples.clear();
    let by_account = Index::Account(f.account.uuid());
    for _ in 0..(o.ops / 10).max(10) {
        let t = Instant::now();
        store.list::<Vm>(&by_account, None, 100).await?;
        samples.push(t.elapsed());
    }
    line("query (100 items)", &mut samples);

    println!(
        "== paging: {} VMs of one account, pagesize {}, with count ==",
        o.vms, o.pagesize
    );
    let g = Fixture::default();
    let started = Instant::now();
    // Loaded by the bulk import (no transactions): the figure is the paging
    // path, not the load; moto copies its whole table per transaction.
    let chunk = 1_000;
    let mut done = 0;
    while done < o.vms {
        let n = chunk.min(o.vms - done);
        let vms: Vec<Vm> = (0..n).map(|_| Vm::sample(&g)).collect();
        store.import(&vms).await?;
        done += n;
        if done % (o.vms / 10).max(chunk) < chunk || done == o.vms {
            eprint!("\r  loading: {done}/{}", o.vms);
        }
    }
    eprintln!(
        "\r  loaded {} VMs in {:.1} s            ",
        o.vms,
        started.elapsed().as_secs_f64()
    );
    let index = Index::Account(g.account.uuid());
    let pages = o.vms.div_ceil(o.pagesize) as u64;
    let middle = pages.div_ceil(2);
    let mut walk = Vec::new();
    for page in 1..=pages {
        let t = Instant::now();
        let p = store.page::<Vm>(&index, page, o.pagesize).await?;
        walk.push(t.elapsed());
        anyhow::ensure!(p.count == o.vms as u64, "count {} != {}", p.count, o.vms);
        anyhow::ensure!(
            page == 1 || p.path == PagePath::Cursor,
            "page {page} took path {:?}",
            p.path
        );
    }
    let (first, mid, last) = (
        walk[0],
        walk[(middle - 1) as usize],
        walk[(pages - 1) as usize],
    );
    println!(
        "  sequential walk    : first {:>8.2} ms  middle {:>8.2} ms  last {:>8.2} ms   last/first {:.2} (target <= 1.5)",
        ms(first),
        ms(mid),
        ms(last),
        last.as_secs_f64() / first.as_secs_f64()
    );
    let cold = open(&o, &prefix, &dir).await?;
    let mut jumps = Vec::new();
    for page in [1, middle, pages] {
        let t = Instant::now();
        let p = cold.page::<Vm>(&index, page, o.pagesize).await?;
        jumps.push(t.elapsed());
        anyhow::ensure!(!p.items.is_empty(), "page {page} empty");
        anyhow::ensure!(
            page == 1 || p.path == PagePath::Skip,
            "page {page} took path {:?}",
            p.path
        );
    }
    println!(
        "  cold jumps         : first {:>8.2} ms  middle {:>8.2} ms  last {:>8.2} ms   last/first {:.2} (grows with the page: keys-only skip)",
        ms(jumps[0]),
        ms(jumps[1]),
        ms(jumps[2]),
        jumps[2].as_secs_f64() / jumps[0].as_secs_f64()
    );
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
