//! The simulator's run-time behaviour, as CloudStack's `configureSimulator`
//! sets it (see `stratus_contracts::simulator`): before each command the
//! simulator reads the mocks under [`MOCK_PREFIX`] in Consul's KV, keeps those
//! that apply to the command on this host, and takes the most specific one
//! (host, then cluster, pod, zone, then unscoped; among equals the newest,
//! as a later `configureSimulator` replaces an earlier one). A mock with a
//! count gives up one use through a check-and-set on its key, so that two
//! agents (or two commands) never spend the same use; the count reaching 0
//! leaves the mock in place, used up.
//!
//! Consul is never allowed to hold a command: without a Consul client there
//! are no mocks, and a Consul that fails or is slow to answer is logged and
//! the command runs without mocks, after at most [`Mocks::budget`].

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use stratus_contracts::message_types::Placement;
use stratus_contracts::simulator::{MOCK_PREFIX, Mock};
use stratus_discovery::{Client, PutOptions, QueryOptions};

/// How often a lost check-and-set is tried again (another agent took a use
/// of the same mock between our read and our write) before the command runs
/// without the mock.
pub const CAS_TRIES: u32 = 5;

/// The longest the mocks may hold a command (reading them and taking a use).
pub const DEFAULT_BUDGET: Duration = Duration::from_secs(2);

/// One mock as stored, with the indexes its check-and-set needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MockEntry {
    pub key: String,
    pub mock: Mock,
    /// When the key was made: among mocks of the same scope, the newest wins.
    pub create_index: u64,
    /// The check-and-set index of the next write.
    pub modify_index: u64,
}

/// Where mocks are kept: Consul's KV in production, a list in tests.
pub trait MockSource: Send + Sync {
    /// Every mock, decodable or not (an undecodable one is logged and skipped).
    fn list(&self) -> BoxFuture<'_, Result<Vec<MockEntry>, String>>;
    /// Writes `mock` over `entry` if the key is still at `entry.modify_index`;
    /// false when it is not (someone wrote it in between).
    fn replace<'a>(
        &'a self,
        entry: &'a MockEntry,
        mock: &'a Mock,
    ) -> BoxFuture<'a, Result<bool, String>>;
}

/// The mocks in Consul's KV under [`MOCK_PREFIX`].
pub struct ConsulMocks {
    pub client: Client,
}

impl MockSource for ConsulMocks {
    fn list(&self) -> BoxFuture<'_, Result<Vec<MockEntry>, String>> {
        Box::pin(async move {
            let pairs = self
                .client
                .kv_list(MOCK_PREFIX, &QueryOptions::default())
                .await
                .map_err(|e| e.to_string())?
                .value;
            let mut entries = Vec::with_capacity(pairs.len());
            for pair in pairs {
                let Some(value) = pair.value.as_deref() else {
                    continue;
                };
                match serde_json::from_slice::<Mock>(value) {
                    Ok(mock) => entries.push(MockEntry {
                        key: pair.key,
                        mock,
                        create_index: pair.create_index,
                        modify_index: pair.modify_index,
                    }),
                    Err(e) => {
                        tracing::warn!(key = %pair.key, error = %e, "simulator mock does not decode; ignored")
                    }
                }
            }
            Ok(entries)
        })
    }

    fn replace<'a>(
        &'a self,
        entry: &'a MockEntry,
        mock: &'a Mock,
    ) -> BoxFuture<'a, Result<bool, String>> {
        Box::pin(async move {
            let value = serde_json::to_vec(mock).map_err(|e| e.to_string())?;
            self.client
                .kv_put(
                    &entry.key,
                    &value,
                    &PutOptions {
                        cas: Some(entry.modify_index),
                        ..Default::default()
                    },
                )
                .await
                .map_err(|e| e.to_string())
        })
    }
}

/// The mock that applies to `message_type` on the host at `placement`: the
/// most specific scope, then the newest.
pub fn choose<'a>(
    entries: &'a [MockEntry],
    message_type: &str,
    placement: &Placement,
) -> Option<&'a MockEntry> {
    entries
        .iter()
        .filter(|e| e.mock.applies(message_type, placement))
        .max_by_key(|e| (e.mock.specificity(), e.create_index))
}

/// The simulator's view of the mocks.
#[derive(Clone)]
pub struct Mocks {
    source: Option<Arc<dyn MockSource>>,
    /// The longest reading the mocks and taking a use may take.
    pub budget: Duration,
}

impl Mocks {
    /// No mocks: every command runs as usual (no Consul configured).
    pub fn none() -> Self {
        Self {
            source: None,
            budget: DEFAULT_BUDGET,
        }
    }

    pub fn new(source: Arc<dyn MockSource>) -> Self {
        Self {
            source: Some(source),
            budget: DEFAULT_BUDGET,
        }
    }

    /// The mocks in Consul, or none without a client.
    pub fn from_consul(client: Option<Client>) -> Self {
        match client {
            Some(client) => Self::new(Arc::new(ConsulMocks { client })),
            None => Self::none(),
        }
    }

    pub fn enabled(&self) -> bool {
        self.source.is_some()
    }

    /// The mock to apply to this command, one use of it taken; None when no
    /// mock applies or the mocks could not be read in time (logged).
    pub async fn take(&self, message_type: &str, placement: &Placement) -> Option<Mock> {
        let source = self.source.as_ref()?;
        match tokio::time::timeout(
            self.budget,
            take_from(source.as_ref(), message_type, placement),
        )
        .await
        {
            Ok(Ok(mock)) => mock,
            Ok(Err(error)) => {
                tracing::warn!(message_type, error = %error, "could not read the simulator's mocks; running without them");
                None
            }
            Err(_) => {
                tracing::warn!(
                    message_type,
                    budget_ms = self.budget.as_millis() as u64,
                    "Consul did not answer in time for the simulator's mocks; running without them"
                );
                None
            }
        }
    }
}

async fn take_from(
    source: &dyn MockSource,
    message_type: &str,
    placement: &Placement,
) -> Result<Option<Mock>, String> {
    for _ in 0..CAS_TRIES {
        let entries = source.list().await?;
        let Some(entry) = choose(&entries, message_type, placement) else {
            return Ok(None);
        };
        let Some(count) = entry.mock.count else {
            return Ok(Some(entry.mock.clone()));
        };
        // `applies` left out used-up mocks, so count > 0 here.
        let used = Mock {
            count: Some(count.saturating_sub(1)),
            ..entry.mock.clone()
        };
        if source.replace(entry, &used).await? {
            tracing::debug!(mock_id = %used.id, uses_left = count.saturating_sub(1), "took one use of a simulator mock");
            return Ok(Some(used));
        }
        tracing::debug!(mock_id = %entry.mock.id, "lost the check-and-set on a simulator mock; reading again");
    }
    Err(format!(
        "lost the check-and-set on the mocks {CAS_TRIES} times in a row"
    ))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::sync::Mutex;
    use stratus_contracts::message_types::agent;
    use stratus_contracts::simulator::MockResult;

    /// Mocks in memory, with Consul's check-and-set, and a number of writes
    /// to lose as if another agent had written first.
    #[derive(Default)]
    pub struct FakeMocks {
        pub entries: Mutex<Vec<MockEntry>>,
        pub lose_next: Mutex<u32>,
        pub down: Mutex<bool>,
        next_index: Mutex<u64>,
    }

    impl FakeMocks {
        pub fn add(&self, mock: Mock) {
            let mut index = self.next_index.lock().unwrap();
            *index += 1;
            self.entries.lock().unwrap().push(MockEntry {
                key: format!("{MOCK_PREFIX}{}", mock.id),
                mock,
                create_index: *index,
                modify_index: *index,
            });
        }

        pub fn count_of(&self, id: &str) -> Option<u32> {
            let entries = self.entries.lock().unwrap();
            entries.iter().find(|e| e.mock.id == id).unwrap().mock.count
        }
    }

    impl MockSource for FakeMocks {
        fn list(&self) -> BoxFuture<'_, Result<Vec<MockEntry>, String>> {
            let result = if *self.down.lock().unwrap() {
                Err("connection refused".to_string())
            } else {
                Ok(self.entries.lock().unwrap().clone())
            };
            Box::pin(async move { result })
        }

        fn replace<'a>(
            &'a self,
            entry: &'a MockEntry,
            mock: &'a Mock,
        ) -> BoxFuture<'a, Result<bool, String>> {
            let mut lose = self.lose_next.lock().unwrap();
            let mut index = self.next_index.lock().unwrap();
            let mut entries = self.entries.lock().unwrap();
            let stored = entries.iter_mut().find(|e| e.key == entry.key);
            let written = match stored {
                Some(stored) if *lose > 0 => {
                    // Another agent took a use first: its write moves the index.
                    *lose -= 1;
                    *index += 1;
                    stored.modify_index = *index;
                    false
                }
                Some(stored) if stored.modify_index == entry.modify_index => {
                    *index += 1;
                    stored.mock = mock.clone();
                    stored.modify_index = *index;
                    true
                }
                _ => false,
            };
            Box::pin(async move { Ok(written) })
        }
    }

    pub fn placement() -> Placement {
        Placement {
            zone_id: "z1".into(),
            pod_id: "p1".into(),
            cluster_id: "c1".into(),
            host_id: "h1".into(),
            host_name: "SimHost-1".into(),
        }
    }

    pub fn mock(id: &str, name: &str, result: MockResult, count: Option<u32>) -> Mock {
        Mock {
            id: id.into(),
            name: name.into(),
            value: format!("result:{result:?}").to_lowercase(),
            wait_ms: 0,
            result,
            count,
            zone_id: None,
            pod_id: None,
            cluster_id: None,
            host_id: None,
        }
    }

    #[tokio::test]
    async fn the_most_specific_mock_wins_then_the_newest() {
        let fake = Arc::new(FakeMocks::default());
        let mut zone = mock("zone", "StartCommand", MockResult::Fail, None);
        zone.zone_id = Some("z1".into());
        let mut cluster = mock("cluster", "StartCommand", MockResult::Pass, None);
        cluster.cluster_id = Some("c1".into());
        let mut other_host = mock("other-host", "StartCommand", MockResult::Fault, None);
        other_host.host_id = Some("h2".into());
        let stop = mock("stop", "StopCommand", MockResult::Fail, None);
        for m in [zone.clone(), cluster, other_host, stop] {
            fake.add(m);
        }
        let mocks = Mocks::new(fake.clone());
        let p = placement();
        assert_eq!(mocks.take(agent::START_VM, &p).await.unwrap().id, "cluster");
        assert_eq!(mocks.take(agent::STOP_VM, &p).await.unwrap().id, "stop");
        assert!(mocks.take(agent::CREATE_VOLUMES, &p).await.is_none());
        let mut host = mock("host", "StartCommand", MockResult::Fail, None);
        host.host_id = Some("h1".into());
        fake.add(host);
        assert_eq!(mocks.take(agent::START_VM, &p).await.unwrap().id, "host");
        // Two mocks of one scope: the newer one.
        let mut newer_zone = zone.clone();
        newer_zone.id = "zone-2".into();
        fake.add(newer_zone);
        let only_zones: Vec<MockEntry> = fake
            .entries
            .lock()
            .unwrap()
            .iter()
            .filter(|e| e.mock.id.starts_with("zone"))
            .cloned()
            .collect();
        assert_eq!(
            choose(&only_zones, agent::START_VM, &p).unwrap().mock.id,
            "zone-2"
        );
        // Another zone: nothing applies.
        let elsewhere = Placement {
            zone_id: "z9".into(),
            ..p
        };
        assert!(choose(&only_zones, agent::START_VM, &elsewhere).is_none());
    }

    #[tokio::test]
    async fn a_counted_mock_is_used_up_through_check_and_set() {
        let fake = Arc::new(FakeMocks::default());
        fake.add(mock("twice", "CreateCommand", MockResult::Fail, Some(2)));
        let mocks = Mocks::new(fake.clone());
        let p = placement();
        let first = mocks.take(agent::CREATE_VOLUMES, &p).await.unwrap();
        assert_eq!(first.result, MockResult::Fail);
        assert_eq!(fake.count_of("twice"), Some(1));
        // A lost check-and-set (another agent wrote first) is read and tried again.
        *fake.lose_next.lock().unwrap() = 2;
        assert!(mocks.take(agent::CREATE_VOLUMES, &p).await.is_some());
        assert_eq!(fake.count_of("twice"), Some(0));
        // Used up: it stays, and no longer applies.
        assert!(mocks.take(agent::CREATE_VOLUMES, &p).await.is_none());
        assert_eq!(fake.entries.lock().unwrap().len(), 1);
    }

    #[tokio::test]
    async fn losing_every_check_and_set_or_consul_runs_without_mocks() {
        let fake = Arc::new(FakeMocks::default());
        fake.add(mock("once", "StopCommand", MockResult::Fail, Some(1)));
        let mocks = Mocks::new(fake.clone());
        let p = placement();
        *fake.lose_next.lock().unwrap() = CAS_TRIES;
        assert!(mocks.take(agent::STOP_VM, &p).await.is_none());
        assert_eq!(fake.count_of("once"), Some(1), "no use was taken");
        *fake.down.lock().unwrap() = true;
        assert!(mocks.take(agent::STOP_VM, &p).await.is_none());
        *fake.down.lock().unwrap() = false;
        assert!(mocks.take(agent::STOP_VM, &p).await.is_some());
        assert!(Mocks::none().take(agent::STOP_VM, &p).await.is_none());
    }

    /// A source that never answers: the budget ends the wait.
    struct Silent;
    impl MockSource for Silent {
        fn list(&self) -> BoxFuture<'_, Result<Vec<MockEntry>, String>> {
            Box::pin(std::future::pending())
        }
        fn replace<'a>(
            &'a self,
            _: &'a MockEntry,
            _: &'a Mock,
        ) -> BoxFuture<'a, Result<bool, String>> {
            Box::pin(std::future::pending())
        }
    }

    #[tokio::test]
    async fn a_silent_consul_holds_a_command_no_longer_than_the_budget() {
        let mut mocks = Mocks::new(Arc::new(Silent));
        mocks.budget = Duration::from_millis(50);
        let started = std::time::Instant::now();
        assert!(mocks.take(agent::START_VM, &placement()).await.is_none());
        assert!(started.elapsed() < Duration::from_secs(1));
    }
}
