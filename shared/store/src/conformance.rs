//! The conformance suite: the behaviour every backend must share, written
//! against [`Store`] only, so that it runs unchanged on each backend. Each
//! check panics with what went wrong. Test support, not for production use.

use std::collections::HashSet;
use std::fmt::Debug;
use std::sync::Arc;

use stratus_model::samples::{Fixture, Sample};
use stratus_model::*;

use crate::{Condition, Index, Store, StoreError, Transaction, Versioned};

/// Create, read, update and delete one sample of `T`, with every conflict.
pub async fn crud<T: Sample + PartialEq + Debug>(store: &Store, f: &Fixture) {
    let kind = T::KIND;
    let value = T::sample(f);
    let id: Id<T> = Id::from_uuid(value.id());
    let created = store
        .create(&value)
        .await
        .unwrap_or_else(|e| panic!("{kind}: create: {e}"));
    assert_eq!(created.version, 1, "{kind}");
    let read = store
        .get(id)
        .await
        .unwrap()
        .unwrap_or_else(|| panic!("{kind}: not found after create"));
    assert_eq!(read, created, "{kind}: read back differs");

    match store.create(&value).await {
        Err(StoreError::Conflict {
            expected: Condition::Absent,
            found: Some(1),
            ..
        }) => {}
        other => panic!("{kind}: a second create must conflict, got {other:?}"),
    }
    let updated = store
        .update(&read)
        .await
        .unwrap_or_else(|e| panic!("{kind}: update: {e}"));
    assert_eq!(updated.version, 2, "{kind}");
    match store.update(&read).await {
        Err(StoreError::Conflict {
            expected: Condition::Version(1),
            found: Some(2),
            ..
        }) => {}
        other => panic!("{kind}: a stale update must conflict, got {other:?}"),
    }
    match store.delete(&read).await {
        Err(StoreError::Conflict { found: Some(2), .. }) => {}
        other => panic!("{kind}: a stale delete must conflict, got {other:?}"),
    }
    assert_eq!(
        store.get(id).await.unwrap().map(|v| v.version),
        Some(2),
        "{kind}: a failed write changed it"
    );
    store
        .delete(&updated)
        .await
        .unwrap_or_else(|e| panic!("{kind}: delete: {e}"));
    assert!(
        store.get(id).await.unwrap().is_none(),
        "{kind}: still there after delete"
    );
    match store.update(&updated).await {
        Err(StoreError::Conflict { found: None, .. }) => {}
        other => panic!("{kind}: updating a deleted object must conflict, got {other:?}"),
    }
}

/// A sample of `T` is found by every key it exposes.
pub async fn found_by_its_keys<T: Sample + PartialEq + Debug>(store: &Store, f: &Fixture) {
    let value = T::sample(f);
    store.create(&value).await.unwrap();
    let keys = value.keys();
    let mut indexes = vec![Index::All];
    indexes.extend(keys.account.map(Index::Account));
    indexes.extend(keys.zone.map(Index::Zone));
    indexes.extend(keys.host.map(Index::Host));
    indexes.extend(keys.network.map(Index::Network));
    indexes.extend(keys.state.clone().map(Index::State));
    for index in indexes {
        let mut found = false;
        let mut after = None;
        loop {
            let page = store.list::<T>(&index, after, 100).await.unwrap();
            found |= page.items.iter().any(|v| v.value.id() == value.id());
            match page.next {
                Some(n) => after = Some(n),
                None => break,
            }
        }
        assert!(found, "{}: not listed by {index:?}", T::KIND);
    }
}

macro_rules! for_every_kind {
    ($check:ident, $store:expr, $f:expr) => {
        $check::<Domain>($store, $f).await;
        $check::<Account>($store, $f).await;
        $check::<User>($store, $f).await;
        $check::<ApiKey>($store, $f).await;
        $check::<Session>($store, $f).await;
        $check::<Zone>($store, $f).await;
        $check::<Pod>($store, $f).await;
        $check::<Cluster>($store, $f).await;
        $check::<Host>($store, $f).await;
        $check::<StoragePool>($store, $f).await;
        $check::<ServiceOffering>($store, $f).await;
        $check::<DiskOffering>($store, $f).await;
        $check::<Template>($store, $f).await;
        $check::<NetworkOffering>($store, $f).await;
        $check::<Network>($store, $f).await;
        $check::<IpAddress>($store, $f).await;
        $check::<Vm>($store, $f).await;
        $check::<Nic>($store, $f).await;
        $check::<Volume>($store, $f).await;
        $check::<Snapshot>($store, $f).await;
        $check::<SshKeyPair>($store, $f).await;
        $check::<SecurityGroup>($store, $f).await;
        $check::<Tag>($store, $f).await;
        $check::<AsyncJob>($store, $f).await;
        $check::<Event>($store, $f).await;
        $check::<Saga>($store, $f).await;
        $check::<OutboxMessage>($store, $f).await;
        $check::<Handled>($store, $f).await;
        $check::<Reservation>($store, $f).await;
        $check::<Alert>($store, $f).await;
        $check::<VlanClaim>($store, $f).await;
    };
}

/// CRUD and listing for every object type.
pub async fn every_kind(store: &Store) {
    let f = Fixture::default();
    for_every_kind!(crud, store, &f);
    for_every_kind!(found_by_its_keys, store, &f);
    // The macro and KINDS must not drift apart.
    assert_eq!(KINDS.len(), 31);
}

/// A state change moves an object between state listings.
pub async fn state_changes_move_between_listings(store: &Store) {
    let f = Fixture::default();
    let vm = store.create(&Vm::sample(&f)).await.unwrap();
    let running = Index::State(state_name(&VmState::Running));
    let stopped = Index::State(state_name(&VmState::Stopped));
    let has =
        |page: &crate::Page<Versioned<Vm>>, id: Id<Vm>| page.items.iter().any(|v| v.value.id == id);
    assert!(has(
        &store.list::<Vm>(&running, None, 10_000).await.unwrap(),
        vm.value.id
    ));
    let mut changed = vm.clone();
    changed.value.state = VmState::Stopped;
    changed.value.host_id = None;
    store.update(&changed).await.unwrap();
    assert!(!has(
        &store.list::<Vm>(&running, None, 10_000).await.unwrap(),
        vm.value.id
    ));
    assert!(has(
        &store.list::<Vm>(&stopped, None, 10_000).await.unwrap(),
        vm.value.id
    ));
    assert!(
        !has(
            &store
                .list::<Vm>(&Index::Host(f.host.uuid()), None, 10_000)
                .await
                .unwrap(),
            vm.value.id
        ),
        "still listed on its old host"
    );
}

/// Transactions apply every write or none.
pub async fn transactions_are_all_or_nothing(store: &Store) {
    let f = Fixture::default();
    let existing = store.create(&Network::sample(&f)).await.unwrap();
    let fresh = Vm::sample(&f);
    let mut tx = Transaction::new();
    tx.create(&fresh).create(&existing.value);
    match store.transact(tx).await {
        Err(StoreError::Conflict {
            kind: "network", ..
        }) => {}
        other => panic!("expected a conflict on the network, got {other:?}"),
    }
    assert!(
        store.get(fresh.id).await.unwrap().is_none(),
        "half of a failed transaction was applied"
    );

    // A check that fails stops the writes beside it.
    let mut tx = Transaction::new();
    tx.create(&fresh).check(existing.value.id, 7);
    assert!(store.transact(tx).await.unwrap_err().is_conflict());
    assert!(store.get(fresh.id).await.unwrap().is_none());

    // A check that holds lets them through; updates and deletes mix with creates.
    let other = store.create(&Network::sample(&f)).await.unwrap();
    let mut tx = Transaction::new();
    tx.create(&fresh).check(other.value.id, 1).delete(&existing);
    store.transact(tx).await.unwrap();
    assert!(store.get(fresh.id).await.unwrap().is_some());
    assert!(store.get(existing.value.id).await.unwrap().is_none());

    // One write per item in a transaction, on every backend.
    let mut tx = Transaction::new();
    tx.check(other.value.id, 1).delete(&other);
    assert!(matches!(
        store.transact(tx).await,
        Err(StoreError::Invalid(_))
    ));
    assert!(store.get(other.value.id).await.unwrap().is_some());
}

/// Listings come in id order, page after page, without gaps or repeats.
pub async fn listings_page_in_id_order(store: &Store) {
    let f = Fixture::default();
    let mut ids = Vec::new();
    for _ in 0..25 {
        ids.push(store.create(&Vm::sample(&f)).await.unwrap().value.id);
    }
    ids.sort();
    let mut seen = Vec::new();
    let mut after = None;
    let mut pages = 0;
    loop {
        let page = store
            .list::<Vm>(&Index::Account(f.account.uuid()), after, 10)
            .await
            .unwrap();
        pages += 1;
        seen.extend(page.items.iter().map(|v| v.value.id));
        match page.next {
            Some(n) => after = Some(n),
            None => break,
        }
    }
    assert_eq!(seen, ids);
    assert_eq!(pages, 3);
    let empty = store
        .list::<Vm>(&Index::Account(uuid::Uuid::new_v4()), None, 10)
        .await
        .unwrap();
    assert!(empty.items.is_empty() && empty.next.is_none());
}

/// Racers creating the same derived id: exactly one wins, the rest conflict.
pub async fn racing_creates_have_one_winner(store: Arc<Store>, racers: usize) {
    let f = Fixture::default();
    let template = IpAddress::sample(&f);
    let mut tasks = Vec::new();
    for i in 0..racers {
        let store = store.clone();
        let mut ip = template.clone();
        ip.nic_id = Some(Id::new());
        tasks.push(tokio::spawn(async move { (i, store.create(&ip).await) }));
    }
    let mut winners = HashSet::new();
    for t in tasks {
        let (i, result) = t.await.unwrap();
        match result {
            Ok(_) => {
                winners.insert(i);
            }
            Err(e) if e.is_conflict() => {}
            Err(e) => panic!("racer {i}: {e}"),
        }
    }
    assert_eq!(winners.len(), 1, "winners: {winners:?}");
}

/// The outbox row lands with its state change, or not at all.
pub async fn outbox_rows_travel_with_their_state_change(store: &Store) {
    use stratus_model::samples::Sample as _;
    let f = Fixture::default();
    let account = store.create(&Account::sample(&f)).await.unwrap();
    let message = OutboxMessage::sample(&f);
    let mut disabled = account.clone();
    disabled.value.state = AccountState::Disabled;
    let mut tx = Transaction::new();
    tx.update(&disabled).enqueue(&message);
    store.transact(tx).await.unwrap();
    let pending = store
        .outbox_pending(std::time::Duration::ZERO, 10_000)
        .await
        .unwrap();
    assert!(
        pending.iter().any(|m| m.id == message.id),
        "the outbox row is missing"
    );
    // A state change that fails takes its message with it.
    let other = OutboxMessage::sample(&f);
    let mut tx = Transaction::new();
    tx.update(&disabled).enqueue(&other);
    assert!(store.transact(tx).await.unwrap_err().is_conflict());
    assert!(
        store.get(other.id).await.unwrap().is_none(),
        "a message without its state change"
    );
    // Rows younger than the relay's cutoff are left to their publisher.
    assert!(
        !store
            .outbox_pending(std::time::Duration::from_secs(3600), 10_000)
            .await
            .unwrap()
            .iter()
            .any(|m| m.id == message.id)
    );
    store.outbox_sent(message.id).await.unwrap();
    store.outbox_sent(message.id).await.unwrap();
    assert!(store.get(message.id).await.unwrap().is_none());
}

/// A redelivered message has its effect once.
pub async fn a_handled_message_has_its_effect_once(store: &Store) {
    let f = Fixture::default();
    let saga = store.create(&Saga::sample(&f)).await.unwrap();
    let message_id = uuid::Uuid::new_v4();
    let apply = |current: Versioned<Saga>| {
        let mut next = current;
        next.value
            .step_log
            .push(serde_json::json!({"message": message_id.to_string()}));
        let mut tx = Transaction::new();
        tx.update(&next).mark_handled("orchestrator", message_id);
        tx
    };
    assert!(!store.was_handled("orchestrator", message_id).await.unwrap());
    store.transact(apply(saga.clone())).await.unwrap();
    let after = store.get(saga.value.id).await.unwrap().unwrap();
    assert!(store.was_handled("orchestrator", message_id).await.unwrap());
    let again = store.transact(apply(after.clone())).await.unwrap_err();
    assert!(again.is_duplicate(), "{again}");
    assert_eq!(
        store
            .get(saga.value.id)
            .await
            .unwrap()
            .unwrap()
            .value
            .step_log
            .len(),
        saga.value.step_log.len() + 1
    );
    // Another consumer may handle the same message.
    let mut tx = Transaction::new();
    tx.mark_handled("compute", message_id);
    store.transact(tx).await.unwrap();
}

fn small_network(f: &Fixture, cidr: &str, gateway: &str) -> Network {
    let mut n = Network::sample(f);
    n.cidr = cidr.into();
    n.gateway = gateway.into();
    n
}

fn ip_request(network: Id<Network>, key: &str) -> crate::primitives::IpRequest {
    crate::primitives::IpRequest {
        key: key.into(),
        network_id: network,
        vm_id: Id::new(),
        requested: None,
        is_default: true,
        device_id: 0,
    }
}

/// Addresses are handed out in order, requested ones honoured, repeats idempotent.
pub async fn ip_allocation(store: &Store) {
    let f = Fixture::default();
    let network = store
        .create(&small_network(&f, "10.9.0.0/29", "10.9.0.1"))
        .await
        .unwrap()
        .value;
    let a = store
        .allocate_ip(&ip_request(network.id, "a"))
        .await
        .unwrap()
        .value;
    assert_eq!(a.0.address, "10.9.0.2");
    assert_eq!(a.1.ip_address, "10.9.0.2");
    assert_eq!(a.0.nic_id, Some(a.1.id));
    let again = store
        .allocate_ip(&ip_request(network.id, "a"))
        .await
        .unwrap()
        .value;
    assert_eq!(again, a, "a repeated key allocates nothing new");
    let mut wanted = ip_request(network.id, "b");
    wanted.requested = Some("10.9.0.6".parse().unwrap());
    assert_eq!(
        store.allocate_ip(&wanted).await.unwrap().value.0.address,
        "10.9.0.6"
    );
    let mut taken = ip_request(network.id, "c");
    taken.requested = Some("10.9.0.6".parse().unwrap());
    assert!(matches!(
        store.allocate_ip(&taken).await,
        Err(StoreError::Exhausted(_))
    ));
    let mut outside = ip_request(network.id, "c");
    outside.requested = Some("10.9.0.1".parse().unwrap());
    assert!(
        matches!(
            store.allocate_ip(&outside).await,
            Err(StoreError::Invalid(_))
        ),
        "the gateway is not usable"
    );
    for key in ["c", "d", "e"] {
        store
            .allocate_ip(&ip_request(network.id, key))
            .await
            .unwrap();
    }
    assert!(matches!(
        store.allocate_ip(&ip_request(network.id, "f")).await,
        Err(StoreError::Exhausted(_))
    ));
    store.release_ip("a").await.unwrap();
    store.release_ip("a").await.unwrap();
    assert_eq!(
        store
            .allocate_ip(&ip_request(network.id, "f"))
            .await
            .unwrap()
            .value
            .0
            .address,
        "10.9.0.2"
    );
}

type Racer<T> = tokio::task::JoinHandle<(
    crate::Result<crate::primitives::Allocated<T>>,
    std::time::Duration,
)>;

/// Winners, their retries, and the racers' times; a racer may only win or find the resource exhausted.
async fn tally<T>(tasks: Vec<Racer<T>>) -> (usize, u32, Vec<std::time::Duration>) {
    let (mut wins, mut retries, mut took) = (0, 0, Vec::new());
    for t in tasks {
        let (result, elapsed) = t.await.unwrap();
        took.push(elapsed);
        match result {
            Ok(a) => {
                wins += 1;
                retries += a.retries;
            }
            Err(StoreError::Exhausted(_)) => {}
            Err(e) => panic!("{e}"),
        }
    }
    (wins, retries, took)
}

fn p99(mut v: Vec<std::time::Duration>) -> std::time::Duration {
    v.sort();
    v[(v.len() - 1) * 99 / 100]
}

/// `racers` tasks race for the last address of a network: exactly one wins.
pub async fn racing_for_the_last_address(stores: &[Arc<Store>], racers: usize) {
    let f = Fixture::default();
    let network = stores[0]
        .create(&small_network(&f, "10.8.0.0/29", "10.8.0.1"))
        .await
        .unwrap()
        .value;
    for key in ["1", "2", "3", "4"] {
        stores[0]
            .allocate_ip(&ip_request(network.id, key))
            .await
            .unwrap();
    }
    let mut tasks = Vec::new();
    for i in 0..racers {
        let store = stores[i % stores.len()].clone();
        let req = ip_request(network.id, &format!("racer-{i}"));
        tasks.push(tokio::spawn(async move {
            let started = std::time::Instant::now();
            (store.allocate_ip(&req).await, started.elapsed())
        }));
    }
    let (wins, retries, took) = tally(tasks).await;
    println!(
        "last address: {racers} racers on {} connections: {wins} winner, {retries} retries, p99 {:?}",
        stores.len(),
        p99(took)
    );
    assert_eq!(wins, 1);
}

/// Capacity is held once per key, within the overprovisioned limit, and given back once.
pub async fn capacity_reservation(store: &Store) {
    let f = Fixture::default();
    let mut host = Host::sample(&f);
    host.cpu_number = 2;
    host.cpu_speed = 1000;
    host.memory_total = 4 << 30;
    let host = store.create(&host).await.unwrap().value;
    let r = store
        .reserve_capacity("vm-1", host.id, 1000, 2 << 30, 1.0, 1.0)
        .await
        .unwrap()
        .value;
    assert_eq!(
        store
            .reserve_capacity("vm-1", host.id, 1000, 2 << 30, 1.0, 1.0)
            .await
            .unwrap()
            .value,
        r
    );
    let h = store.get(host.id).await.unwrap().unwrap().value;
    assert_eq!(
        (h.cpu_allocated, h.memory_allocated),
        (1000, 2 << 30),
        "a repeated key held twice"
    );
    assert!(matches!(
        store
            .reserve_capacity("vm-2", host.id, 1500, 1 << 30, 1.0, 1.0)
            .await,
        Err(StoreError::Exhausted(_))
    ));
    // The factor in force when reserving sets the limit.
    store
        .reserve_capacity("vm-2", host.id, 1500, 1 << 30, 2.0, 1.0)
        .await
        .unwrap();
    store.release_capacity("vm-1").await.unwrap();
    store.release_capacity("vm-1").await.unwrap();
    store.release_capacity("vm-2").await.unwrap();
    let h = store.get(host.id).await.unwrap().unwrap().value;
    assert_eq!((h.cpu_allocated, h.memory_allocated), (0, 0));
}

/// `racers` tasks race for the last capacity of a host: exactly one wins.
pub async fn racing_for_the_last_capacity(stores: &[Arc<Store>], racers: usize) {
    let f = Fixture::default();
    let mut host = Host::sample(&f);
    host.cpu_number = 1;
    host.cpu_speed = 1000;
    let host = stores[0].create(&host).await.unwrap().value;
    let mut tasks = Vec::new();
    for i in 0..racers {
        let store = stores[i % stores.len()].clone();
        tasks.push(tokio::spawn(async move {
            let started = std::time::Instant::now();
            (
                store
                    .reserve_capacity(&format!("racer-{i}"), host.id, 1000, 1 << 20, 1.0, 1.0)
                    .await,
                started.elapsed(),
            )
        }));
    }
    let (wins, retries, took) = tally(tasks).await;
    println!(
        "last capacity: {racers} racers on {} connections: {wins} winner, {retries} retries, p99 {:?}",
        stores.len(),
        p99(took)
    );
    assert_eq!(wins, 1);
    let h = stores[0].get(host.id).await.unwrap().unwrap().value;
    assert_eq!(h.cpu_allocated, 1000, "capacity held more than once");
}

/// CloudStack paging: `count` from counters kept with every write, pages by
/// cursor on a walk and by keys-only skip on a cold jump, the same items either way.
pub async fn paging_with_counts(stores: &[Arc<Store>]) {
    use crate::PagePath;
    let (store, cold) = (&stores[0], &stores[stores.len() - 1]);
    let f = Fixture::default();
    let by_account = Index::Account(f.account.uuid());
    let mut vms = Vec::new();
    for _ in 0..23 {
        vms.push(store.create(&Vm::sample(&f)).await.unwrap());
    }
    assert_eq!(store.count::<Vm>(&by_account).await.unwrap(), 23);
    let mut walked = Vec::new();
    for (page, (len, path)) in [
        (10, PagePath::First),
        (10, PagePath::Cursor),
        (3, PagePath::Cursor),
    ]
    .into_iter()
    .enumerate()
    {
        let p = store
            .page::<Vm>(&by_account, page as u64 + 1, 10)
            .await
            .unwrap();
        assert_eq!(
            (p.items.len(), p.path, p.count),
            (len, path, 23),
            "page {}",
            page + 1
        );
        walked.extend(p.items.into_iter().map(|v| v.value.id));
    }
    let mut ids: Vec<Id<Vm>> = vms.iter().map(|v| v.value.id).collect();
    ids.sort();
    assert_eq!(walked, ids);
    // A cold jump (another connection, nothing remembered) finds the same page.
    let p = cold.page::<Vm>(&by_account, 3, 10).await.unwrap();
    assert_eq!(p.path, PagePath::Skip);
    assert_eq!(
        p.items.iter().map(|v| v.value.id).collect::<Vec<_>>(),
        ids[20..].to_vec()
    );
    let past = cold.page::<Vm>(&by_account, 4, 10).await.unwrap();
    assert!(past.items.is_empty());
    assert_eq!(past.count, 23);
    // Counters follow deletes and state changes.
    store.delete(&vms[0]).await.unwrap();
    assert_eq!(store.count::<Vm>(&by_account).await.unwrap(), 22);
    let running = Index::State(state_name(&VmState::Running));
    let stopped = Index::State(state_name(&VmState::Stopped));
    let (r0, s0) = (
        store.count::<Vm>(&running).await.unwrap(),
        store.count::<Vm>(&stopped).await.unwrap(),
    );
    let mut stop = vms[1].clone();
    stop.value.state = VmState::Stopped;
    store.update(&stop).await.unwrap();
    assert_eq!(store.count::<Vm>(&running).await.unwrap(), r0 - 1);
    assert_eq!(store.count::<Vm>(&stopped).await.unwrap(), s0 + 1);
    // A failed transaction moves no counter.
    let mut tx = Transaction::new();
    tx.create(&Vm::sample(&f)).check(vms[1].value.id, 99);
    assert!(store.transact(tx).await.is_err());
    assert_eq!(store.count::<Vm>(&by_account).await.unwrap(), 22);
    assert!(matches!(
        store.page::<Vm>(&by_account, 0, 10).await,
        Err(StoreError::Invalid(_))
    ));
}

/// A bulk import: every object readable and listed, and the counters moved
/// as creates would have moved them.
pub async fn an_import_counts_like_creates(store: &Store) {
    let f = Fixture::default();
    let by_account = Index::Account(f.account.uuid());
    let vms: Vec<Vm> = (0..60).map(|_| Vm::sample(&f)).collect();
    store.import(&vms).await.unwrap();
    assert_eq!(store.count::<Vm>(&by_account).await.unwrap(), 60);
    let running = Index::State(state_name(&vms[0].state));
    assert!(store.count::<Vm>(&running).await.unwrap() >= 60);
    let got = store.get::<Vm>(vms[59].id).await.unwrap().unwrap();
    assert_eq!((got.value, got.version), (vms[59].clone(), 1));
    let listed = store.list::<Vm>(&by_account, None, 100).await.unwrap();
    assert_eq!(listed.items.len(), 60);
    let p = store.page::<Vm>(&by_account, 2, 50).await.unwrap();
    assert_eq!((p.items.len(), p.count), (10, 60));
}

/// Fixed windows of hits (a rate limit's counters): counted per key, ended
/// after their length and begun again by the next hit, and exact when
/// connections race, a fresh window's first hit included.
pub async fn hits_in_a_window(stores: &[Arc<Store>]) {
    use chrono::{Duration, TimeZone, Utc};
    let store = &stores[0];
    let key = format!("conformance-{}", uuid::Uuid::new_v4());
    let t0 = Utc.timestamp_millis_opt(1_800_000_000_000).unwrap();
    let window = std::time::Duration::from_millis(1000);
    let at = move |ms: i64| t0 + Duration::milliseconds(ms);
    for n in 1..=3 {
        let h = store.hit(&key, at(n as i64 - 1), window).await.unwrap();
        assert_eq!(
            (h.count, h.ends),
            (n, at(1000)),
            "hit {n} of the first window"
        );
    }
    // The window's last instant still counts; the next one begins a new window.
    assert_eq!(store.hit(&key, at(1000), window).await.unwrap().count, 4);
    let h = store.hit(&key, at(1001), window).await.unwrap();
    assert_eq!(
        (h.count, h.ends),
        (1, at(2001)),
        "a new window after the end"
    );
    let other = format!("{key}-other");
    assert_eq!(store.hit(&other, at(1002), window).await.unwrap().count, 1);
    assert_eq!(store.hit(&key, at(1003), window).await.unwrap().count, 2);

    // Racers over every connection: each hit gets its own count, none lost,
    // on a running window and on a fresh key (everyone begins it at once).
    for (name, first) in [(key.clone(), 3u64), (format!("{key}-fresh"), 1)] {
        let racers = 40;
        let tasks: Vec<_> = (0..racers)
            .map(|i| {
                let store = stores[i % stores.len()].clone();
                let (name, now) = (name.clone(), at(1500));
                tokio::spawn(async move { store.hit(&name, now, window).await.unwrap() })
            })
            .collect();
        let mut counts = Vec::new();
        for t in tasks {
            counts.push(t.await.unwrap().count);
        }
        counts.sort_unstable();
        let expected: Vec<u64> = (first..first + racers as u64).collect();
        assert_eq!(counts, expected, "{name}: racing hits");
    }
}

/// Everything above, in order. `stores` are separate connections to one store.
pub async fn run_all(stores: &[Arc<Store>]) {
    let store = &stores[0];
    every_kind(store).await;
    state_changes_move_between_listings(store).await;
    transactions_are_all_or_nothing(store).await;
    listings_page_in_id_order(store).await;
    racing_creates_have_one_winner(store.clone(), 50).await;
    outbox_rows_travel_with_their_state_change(store).await;
    a_handled_message_has_its_effect_once(store).await;
    ip_allocation(store).await;
    capacity_reservation(store).await;
    racing_for_the_last_address(stores, 50).await;
    racing_for_the_last_capacity(stores, 50).await;
    paging_with_counts(stores).await;
    an_import_counts_like_creates(store).await;
    hits_in_a_window(stores).await;
}
