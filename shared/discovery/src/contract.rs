//! The contract suite: what Stratus relies on from Consul, run unchanged
//! against the local runner's stand-in and, when `STRATUS_TEST_CONSUL_ADDR`
//! names one, a real Consul. Every key lives under a fresh prefix.

use std::time::{Duration, Instant};

use crate::client::{
    Behavior, CheckDefinition, Client, ConsulError, PutOptions, QueryOptions, ServiceRegistration,
    SessionOptions,
};

fn prefix() -> String {
    format!("stratus-contract/{:016x}", rand::random::<u64>())
}

/// Put, get, flags, indexes, absent keys.
pub async fn kv_round_trip(c: &Client) {
    let p = prefix();
    let key = format!("{p}/a");
    let missing = c.kv_get(&key, &QueryOptions::default()).await.unwrap();
    assert_eq!(missing.value, None);
    assert!(missing.index > 0, "X-Consul-Index on a 404");
    assert!(
        c.kv_put(
            &key,
            b"one",
            &PutOptions {
                flags: Some(42),
                ..Default::default()
            }
        )
        .await
        .unwrap()
    );
    let got = c.kv_get(&key, &QueryOptions::default()).await.unwrap();
    let pair = got.value.expect("written");
    assert_eq!(
        (pair.key.as_str(), pair.value.as_deref(), pair.flags),
        (key.as_str(), Some(&b"one"[..]), 42)
    );
    assert_eq!(pair.create_index, pair.modify_index);
    assert!(got.index >= pair.modify_index);
    assert!(
        c.kv_put(&key, b"two", &PutOptions::default())
            .await
            .unwrap()
    );
    let again = c
        .kv_get(&key, &QueryOptions::default())
        .await
        .unwrap()
        .value
        .unwrap();
    assert_eq!(again.value.as_deref(), Some(&b"two"[..]));
    assert_eq!(again.create_index, pair.create_index);
    assert!(again.modify_index > pair.modify_index);
    // An empty value is a value.
    assert!(
        c.kv_put(&format!("{p}/empty"), b"", &PutOptions::default())
            .await
            .unwrap()
    );
    let empty = c
        .kv_get(&format!("{p}/empty"), &QueryOptions::default())
        .await
        .unwrap()
        .value
        .unwrap();
    assert!(empty.value.is_none_or(|v| v.is_empty()));
    c.kv_delete(&p, true, None).await.unwrap();
}

/// Check-and-set: 0 creates only when absent; a stale index loses.
pub async fn kv_check_and_set(c: &Client) {
    let p = prefix();
    let key = format!("{p}/cas");
    let create = PutOptions {
        cas: Some(0),
        ..Default::default()
    };
    assert!(c.kv_put(&key, b"first", &create).await.unwrap());
    assert!(
        !c.kv_put(&key, b"second", &create).await.unwrap(),
        "cas=0 on an existing key"
    );
    let current = c
        .kv_get(&key, &QueryOptions::default())
        .await
        .unwrap()
        .value
        .unwrap();
    let at = |i: u64| PutOptions {
        cas: Some(i),
        ..Default::default()
    };
    assert!(
        c.kv_put(&key, b"next", &at(current.modify_index))
            .await
            .unwrap()
    );
    assert!(
        !c.kv_put(&key, b"stale", &at(current.modify_index))
            .await
            .unwrap(),
        "stale cas"
    );
    let now = c
        .kv_get(&key, &QueryOptions::default())
        .await
        .unwrap()
        .value
        .unwrap();
    assert_eq!(now.value.as_deref(), Some(&b"next"[..]));
    // Delete with a stale cas fails; with the current one it succeeds.
    assert!(
        !c.kv_delete(&key, false, Some(current.modify_index))
            .await
            .unwrap()
    );
    assert!(
        c.kv_delete(&key, false, Some(now.modify_index))
            .await
            .unwrap()
    );
    assert_eq!(
        c.kv_get(&key, &QueryOptions::default())
            .await
            .unwrap()
            .value,
        None
    );
}

/// Listing under a prefix in key order, and deleting a tree.
pub async fn kv_list_and_delete_tree(c: &Client) {
    let p = prefix();
    for k in ["b", "a", "c/d", "c/e"] {
        assert!(
            c.kv_put(&format!("{p}/{k}"), k.as_bytes(), &PutOptions::default())
                .await
                .unwrap()
        );
    }
    assert!(
        c.kv_put(&format!("{p}x/other"), b"x", &PutOptions::default())
            .await
            .unwrap()
    );
    let all = c
        .kv_list(&format!("{p}/"), &QueryOptions::default())
        .await
        .unwrap()
        .value;
    let keys: Vec<String> = all
        .iter()
        .map(|k| k.key.trim_start_matches(&format!("{p}/")).to_string())
        .collect();
    assert_eq!(keys, ["a", "b", "c/d", "c/e"]);
    assert!(c.kv_delete(&format!("{p}/c/"), true, None).await.unwrap());
    let left = c
        .kv_list(&format!("{p}/"), &QueryOptions::default())
        .await
        .unwrap()
        .value;
    assert_eq!(left.len(), 2);
    c.kv_delete(&format!("{p}/"), true, None).await.unwrap();
    c.kv_delete(&format!("{p}x/"), true, None).await.unwrap();
    assert!(
        c.kv_list(&format!("{p}/"), &QueryOptions::default())
            .await
            .unwrap()
            .value
            .is_empty()
    );
}

/// A blocking query waits for `wait` when nothing changes, and returns at
/// once with a higher index when something does.
pub async fn kv_blocking_queries(c: &Client) {
    let p = prefix();
    let key = format!("{p}/watched");
    assert!(c.kv_put(&key, b"v1", &PutOptions::default()).await.unwrap());
    let first = c.kv_get(&key, &QueryOptions::default()).await.unwrap();
    // Nothing changes: the query returns after about `wait`, same index.
    let started = Instant::now();
    let q = QueryOptions {
        index: Some(first.index),
        wait: Some(Duration::from_millis(1500)),
    };
    let idle = c.kv_get(&key, &q).await.unwrap();
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(1400),
        "returned after {took:?}"
    );
    assert!(
        took < Duration::from_millis(1500 + 1500 / 16 + 1500),
        "returned after {took:?}"
    );
    assert_eq!(idle.index, first.index);
    // A change returns it early.
    let writer = {
        let (c, key) = (c.clone(), key.clone());
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(300)).await;
            c.kv_put(&key, b"v2", &PutOptions::default()).await.unwrap();
        })
    };
    let started = Instant::now();
    let q = QueryOptions {
        index: Some(first.index),
        wait: Some(Duration::from_secs(10)),
    };
    let changed = c.kv_get(&key, &q).await.unwrap();
    writer.await.unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "a change did not wake the query"
    );
    assert!(changed.index > first.index);
    assert_eq!(changed.value.unwrap().value.as_deref(), Some(&b"v2"[..]));
    c.kv_delete(&p, true, None).await.unwrap();
}

/// A service with a TTL check: critical until passed, out of `?passing`
/// again once its TTL lapses (a blocking health query sees it happen),
/// unknown checks are 404 (the cue to re-register), deregistration removes it.
pub async fn ttl_checks_drive_health(c: &Client) {
    let name = format!("stratus-contract-{:08x}", rand::random::<u32>());
    let id = format!("{name}-1");
    let check = format!("service:{id}");
    c.register_service(&ServiceRegistration {
        id: Some(id.clone()),
        name: name.clone(),
        tags: vec!["agent".into()],
        address: "127.0.0.1".into(),
        port: 7001,
        check: Some(CheckDefinition {
            ttl: "2s".into(),
            ..Default::default()
        }),
        ..Default::default()
    })
    .await
    .unwrap();
    let services = c
        .catalog_services(&QueryOptions::default())
        .await
        .unwrap()
        .value;
    assert_eq!(services.get(&name), Some(&vec!["agent".to_string()]));
    let all = c
        .health_service(&name, false, &QueryOptions::default())
        .await
        .unwrap()
        .value;
    assert_eq!(all.len(), 1);
    assert_eq!(
        (all[0].service.id.as_str(), all[0].service.port),
        (id.as_str(), 7001)
    );
    let mine = all[0]
        .checks
        .iter()
        .find(|k| k.check_id == check)
        .expect("the service's check");
    assert_eq!(mine.status, "critical", "a new TTL check starts critical");
    assert!(
        c.health_service(&name, true, &QueryOptions::default())
            .await
            .unwrap()
            .value
            .is_empty()
    );
    c.check_pass(&check, "alive").await.unwrap();
    let passing = c
        .health_service(&name, true, &QueryOptions::default())
        .await
        .unwrap();
    assert_eq!(passing.value.len(), 1);
    // Nothing passes the check again: within the TTL (plus a reaper tick) it lapses,
    // and a blocking query waiting on the passing list returns with it gone.
    let started = Instant::now();
    let q = QueryOptions {
        index: Some(passing.index),
        wait: Some(Duration::from_secs(15)),
    };
    let mut lapsed = c.health_service(&name, true, &q).await.unwrap();
    while !lapsed.value.is_empty() && started.elapsed() < Duration::from_secs(15) {
        let q = QueryOptions {
            index: Some(lapsed.index),
            wait: Some(Duration::from_secs(15)),
        };
        lapsed = c.health_service(&name, true, &q).await.unwrap();
    }
    assert!(
        lapsed.value.is_empty(),
        "the lapsed service is still passing"
    );
    assert!(
        started.elapsed() >= Duration::from_millis(1500),
        "lapsed too early: {:?}",
        started.elapsed()
    );
    let entry = c
        .health_service(&name, false, &QueryOptions::default())
        .await
        .unwrap()
        .value;
    let mine = entry[0]
        .checks
        .iter()
        .find(|k| k.check_id == check)
        .unwrap();
    assert_eq!(mine.status, "critical");
    // An unknown check is a 404: the cue for a process to register again.
    match c.check_pass("stratus-contract-no-such-check", "").await {
        Err(ConsulError::Status { status: 404, .. }) => {}
        other => panic!("expected a 404, got {other:?}"),
    }
    c.deregister_service(&id).await.unwrap();
    assert!(
        c.health_service(&name, false, &QueryOptions::default())
            .await
            .unwrap()
            .value
            .is_empty()
    );
    assert!(
        !c.catalog_services(&QueryOptions::default())
            .await
            .unwrap()
            .value
            .contains_key(&name)
    );
}

fn session(ttl: Option<u64>, lock_delay_ms: u64, behavior: Behavior) -> SessionOptions {
    SessionOptions {
        name: "stratus-contract".into(),
        ttl: ttl.map(Duration::from_secs),
        lock_delay: Duration::from_millis(lock_delay_ms),
        behavior,
        service_checks: vec![],
    }
}

async fn holder(c: &Client, key: &str) -> Option<String> {
    c.kv_get(key, &QueryOptions::default())
        .await
        .unwrap()
        .value
        .and_then(|p| p.session)
}

/// Sessions: TTL bounds, locks (one holder; re-entrant; plain writes keep
/// the lock; release only by the holder), destroy with either behaviour,
/// lock-delay after a session ends, unknown sessions refused.
pub async fn sessions_and_locks(c: &Client) {
    for ttl in [5, 86_401] {
        match c
            .session_create(&session(Some(ttl), 0, Behavior::Release))
            .await
        {
            Err(ConsulError::Status { status, body, .. }) if status >= 400 => {
                assert!(body.contains("TTL"), "{body}")
            }
            other => panic!("a session TTL of {ttl} s was not refused: {other:?}"),
        }
    }
    let p = prefix();
    let key = format!("{p}/leader");
    let s1 = c
        .session_create(&session(Some(10), 0, Behavior::Release))
        .await
        .unwrap();
    let s2 = c
        .session_create(&session(Some(10), 0, Behavior::Release))
        .await
        .unwrap();
    let info = c.session_info(&s1).await.unwrap().expect("created");
    assert_eq!(
        (
            info.id.as_str(),
            info.ttl.as_str(),
            info.behavior.as_str(),
            info.lock_delay
        ),
        (s1.as_str(), "10s", "release", 0)
    );
    assert!(c.lock_acquire(&key, &s1, b"one").await.unwrap());
    assert!(
        !c.lock_acquire(&key, &s2, b"two").await.unwrap(),
        "two holders"
    );
    let pair = c
        .kv_get(&key, &QueryOptions::default())
        .await
        .unwrap()
        .value
        .unwrap();
    assert_eq!(
        (
            pair.session.as_deref(),
            pair.lock_index,
            pair.value.as_deref()
        ),
        (Some(s1.as_str()), 1, Some(&b"one"[..]))
    );
    // The holder may take it again; a plain write does not break the lock.
    assert!(c.lock_acquire(&key, &s1, b"again").await.unwrap());
    assert!(
        c.kv_put(&key, b"plain", &PutOptions::default())
            .await
            .unwrap()
    );
    let pair = c
        .kv_get(&key, &QueryOptions::default())
        .await
        .unwrap()
        .value
        .unwrap();
    assert_eq!(
        (pair.session.as_deref(), pair.lock_index),
        (Some(s1.as_str()), 1)
    );
    assert!(
        !c.lock_release(&key, &s2).await.unwrap(),
        "released by a non-holder"
    );
    assert!(c.lock_release(&key, &s1).await.unwrap());
    assert_eq!(holder(c, &key).await, None);
    // An explicit release has no lock-delay.
    assert!(c.lock_acquire(&key, &s2, b"two").await.unwrap());
    let pair = c
        .kv_get(&key, &QueryOptions::default())
        .await
        .unwrap()
        .value
        .unwrap();
    assert_eq!(pair.lock_index, 2);
    // Destroying a `release` session frees its lock and keeps the key.
    assert!(c.session_destroy(&s2).await.unwrap());
    assert_eq!(holder(c, &key).await, None);
    assert!(
        c.kv_get(&key, &QueryOptions::default())
            .await
            .unwrap()
            .value
            .is_some()
    );
    assert_eq!(c.session_info(&s2).await.unwrap(), None);
    assert_eq!(
        c.session_renew(&s2).await.unwrap(),
        None,
        "renewed a destroyed session"
    );
    let renewed = c.session_renew(&s1).await.unwrap().expect("s1 lives");
    assert_eq!(renewed.id, s1);
    // A `delete` session's keys go with it.
    let s3 = c
        .session_create(&session(Some(10), 0, Behavior::Delete))
        .await
        .unwrap();
    let doomed = format!("{p}/ephemeral");
    assert!(c.lock_acquire(&doomed, &s3, b"x").await.unwrap());
    assert!(c.session_destroy(&s3).await.unwrap());
    assert!(
        c.kv_get(&doomed, &QueryOptions::default())
            .await
            .unwrap()
            .value
            .is_none()
    );
    // Lock-delay: after its holder's session ends, nobody takes the lock for a while.
    let s4 = c
        .session_create(&session(Some(10), 2_000, Behavior::Release))
        .await
        .unwrap();
    let delayed = format!("{p}/delayed");
    assert!(c.lock_acquire(&delayed, &s4, b"x").await.unwrap());
    assert!(c.session_destroy(&s4).await.unwrap());
    let ended = Instant::now();
    assert!(
        !c.lock_acquire(&delayed, &s1, b"y").await.unwrap(),
        "taken during the lock-delay"
    );
    tokio::time::sleep(Duration::from_millis(2_500).saturating_sub(ended.elapsed())).await;
    assert!(
        c.lock_acquire(&delayed, &s1, b"y").await.unwrap(),
        "still refused after the lock-delay"
    );
    // An unknown session cannot lock.
    match c
        .lock_acquire(&key, "00000000-0000-0000-0000-000000000000", b"z")
        .await
    {
        Err(ConsulError::Status {
            status: 500, body, ..
        }) => {
            assert!(body.contains("invalid session"), "{body}")
        }
        other => panic!("an unknown session locked: {other:?}"),
    }
    assert!(c.session_destroy(&s1).await.unwrap());
    c.kv_delete(&p, true, None).await.unwrap();
}

/// A holder that stops renewing (it died) loses its lock within twice the
/// session TTL (plus its lock-delay, 0 here), and not before the TTL; a
/// holder that renews keeps its lock all along. Seen by a blocking query.
pub async fn a_dead_holders_lock_lapses(c: &Client) {
    let ttl = Duration::from_secs(10);
    let p = prefix();
    let (dead_key, live_key) = (format!("{p}/dead"), format!("{p}/live"));
    let dead = c
        .session_create(&session(Some(10), 0, Behavior::Release))
        .await
        .unwrap();
    let live = c
        .session_create(&session(Some(10), 0, Behavior::Release))
        .await
        .unwrap();
    let started = Instant::now();
    assert!(c.lock_acquire(&dead_key, &dead, b"dead").await.unwrap());
    assert!(c.lock_acquire(&live_key, &live, b"live").await.unwrap());
    let renewing = {
        let (c, live) = (c.clone(), live.clone());
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(3)).await;
                assert!(
                    c.session_renew(&live).await.unwrap().is_some(),
                    "the renewed session ended"
                );
            }
        })
    };
    let mut seen = c.kv_get(&dead_key, &QueryOptions::default()).await.unwrap();
    while seen
        .value
        .as_ref()
        .and_then(|p| p.session.clone())
        .is_some()
        && started.elapsed() < 3 * ttl
    {
        seen = c
            .kv_get(
                &dead_key,
                &QueryOptions {
                    index: Some(seen.index),
                    wait: Some(Duration::from_secs(5)),
                },
            )
            .await
            .unwrap();
    }
    let lapsed = started.elapsed();
    assert_eq!(
        seen.value.and_then(|p| p.session),
        None,
        "the dead holder kept its lock"
    );
    assert!(lapsed >= ttl, "the lock lapsed before the TTL: {lapsed:?}");
    assert!(
        lapsed <= 2 * ttl + Duration::from_secs(2),
        "the lock lapsed late: {lapsed:?}"
    );
    assert_eq!(
        holder(c, &live_key).await.as_deref(),
        Some(live.as_str()),
        "the renewing holder lost its lock"
    );
    renewing.abort();
    assert!(c.session_destroy(&live).await.unwrap());
    c.kv_delete(&p, true, None).await.unwrap();
}

/// An unreachable agent is a clear, transient error, never a hang.
pub async fn unreachable_is_a_clear_transient_error() {
    let c = Client::new("127.0.0.1:1", None);
    let e = c.kv_get("x", &QueryOptions::default()).await.unwrap_err();
    assert!(e.is_transient());
    assert!(
        e.to_string()
            .starts_with("Consul at 127.0.0.1:1 is unreachable"),
        "{e}"
    );
}

/// Everything above, in order.
pub async fn run_all(c: &Client) {
    assert!(c.leader().await.is_ok());
    kv_round_trip(c).await;
    kv_check_and_set(c).await;
    kv_list_and_delete_tree(c).await;
    kv_blocking_queries(c).await;
    ttl_checks_drive_health(c).await;
    sessions_and_locks(c).await;
    a_dead_holders_lock_lapses(c).await;
    unreachable_is_a_clear_transient_error().await;
}
