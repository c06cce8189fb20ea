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
    };
}

/// CRUD and listing for every object type.
pub async fn every_kind(store: &Store) {
    let f = Fixture::default();
    for_every_kind!(crud, store, &f);
    for_every_kind!(found_by_its_keys, store, &f);
    // The macro and KINDS must not drift apart.
    assert_eq!(KINDS.len(), 25);
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
    let mut tx = Transaction::new();
    tx.create(&fresh)
        .check(existing.value.id, 1)
        .delete(&existing);
    store.transact(tx).await.unwrap();
    assert!(store.get(fresh.id).await.unwrap().is_some());
    assert!(store.get(existing.value.id).await.unwrap().is_none());
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

/// Everything above, in order.
pub async fn run_all(store: Arc<Store>) {
    every_kind(&store).await;
    state_changes_move_between_listings(&store).await;
    transactions_are_all_or_nothing(&store).await;
    listings_page_in_id_order(&store).await;
    racing_creates_have_one_winner(store.clone(), 50).await;
}
