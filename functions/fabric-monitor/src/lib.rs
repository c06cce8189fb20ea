//! Fabric monitoring: hosts move between CloudStack's states from their
//! agents' health in Consul.
//!
//! Each host's agent (`stratus-agent`) registers the `stratus-agent` service
//! with a TTL check of `ping.interval` seconds and keeps it passing. A sweep:
//! - an agent whose checks all pass brings its host `Up` (from any state but
//!   `Removed`) and records when it was last seen (`lastpinged`);
//! - an `Up` host whose agent's check lapsed, or whose agent is gone, goes to
//!   `Alert` (CloudStack's PingTimeout);
//! - an `Alert` host unseen for `ping.interval` x `ping.timeout` (CloudStack's
//!   computation: 150 s by default) goes `Down` (HostDown).
//!
//! Every change is one conditional write of the host with its event (and,
//! for `Alert` and `Down`, an alert), so a concurrent or stale sweep changes
//! nothing twice.
//!
//! One monitor sweeps at a time: it holds a Consul session lock on
//! [`FABRIC_MONITOR_LOCK`]. The session (TTL 10 s, renewed by every
//! invocation) lives as long as this instance keeps being invoked; when the
//! instance dies or is frozen for good, Consul invalidates the session within
//! twice its TTL and another instance takes the lock.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use stratus_contracts::names::{AGENT_SERVICE, FABRIC_MONITOR_LOCK};
use stratus_contracts::settings::{SettingsSource, names};
use stratus_discovery::{Behavior, Client, ConsulError, QueryOptions, SessionOptions};
use stratus_model::{Account, Alert, Domain, Event, EventLevel, EventState, Host, HostState, Id};
use stratus_store::{Index, Store, StoreError, Transaction, Versioned};
use tokio::sync::Mutex;

#[derive(Debug, thiserror::Error)]
pub enum MonitorError {
    #[error(transparent)]
    Consul(#[from] ConsulError),
    #[error("the data service: {0}")]
    Store(#[from] StoreError),
}

/// What Consul says of a host's agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Agent {
    /// Registered, every check passing.
    Passing,
    /// Registered, a check not passing (its TTL lapsed, or it failed).
    Failing,
    /// Not registered.
    Absent,
}

/// The state a host moves to, and CloudStack's name for the event, if any.
pub fn next_state(
    state: HostState,
    agent: Agent,
    last_pinged: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
    down_after: Duration,
) -> Option<(HostState, &'static str)> {
    match (state, agent) {
        (HostState::Removed, _) => None,
        (HostState::Up, Agent::Passing) => None,
        (_, Agent::Passing) => Some((HostState::Up, "AgentConnected")),
        (HostState::Up, _) => Some((HostState::Alert, "PingTimeout")),
        (HostState::Alert, _) => {
            let unseen = last_pinged
                .map(|t| (now - t).to_std().unwrap_or_default())
                .unwrap_or(Duration::MAX);
            (unseen >= down_after).then_some((HostState::Down, "HostDown"))
        }
        _ => None,
    }
}

/// `ping.interval` x `ping.timeout`, as CloudStack computes a host's timeout.
pub fn down_after(settings: &dyn SettingsSource) -> Duration {
    let interval = settings.integer(names::ping_interval()).max(1) as f64;
    let timeout = settings.float(names::ping_timeout()).max(0.0);
    Duration::from_secs_f64(interval * timeout)
}

#[derive(Debug, Serialize, PartialEq)]
pub struct Change {
    pub host: String,
    pub from: String,
    pub to: String,
    pub event: &'static str,
}

#[derive(Debug, Serialize, Default)]
pub struct Sweep {
    /// False when another monitor holds the lock (nothing was looked at).
    pub swept: bool,
    pub hosts: usize,
    pub changes: Vec<Change>,
}

pub struct Monitor {
    store: Arc<Store>,
    consul: Client,
    settings: Arc<dyn SettingsSource>,
    /// This instance's session, kept across invocations.
    session: Mutex<Option<String>>,
    /// Who we are, written into the lock's value.
    holder: String,
}

/// The session's TTL (Consul's minimum). Lock-delay is 0: every write of a
/// sweep is conditional on the version it read, so a stale holder's late
/// writes fail instead of doing harm, and a successor need not wait.
const SESSION_TTL: Duration = Duration::from_secs(10);

impl Monitor {
    pub fn new(
        store: Arc<Store>,
        consul: Client,
        settings: Arc<dyn SettingsSource>,
        holder: String,
    ) -> Self {
        Monitor {
            store,
            consul,
            settings,
            session: Mutex::new(None),
            holder,
        }
    }

    /// Renews this instance's session (creating one if it has none or it
    /// ended) and takes the lock with it; false if another holds the lock.
    async fn hold_lock(&self) -> Result<bool, ConsulError> {
        let mut session = self.session.lock().await;
        if let Some(id) = session.as_ref()
            && self.consul.session_renew(id).await?.is_none()
        {
            tracing::warn!(session = %id, "the monitor's session ended; creating another");
            *session = None;
        }
        let id = match session.as_ref() {
            Some(id) => id.clone(),
            None => {
                let id = self
                    .consul
                    .session_create(&SessionOptions {
                        name: "stratus-fabric-monitor".into(),
                        ttl: Some(SESSION_TTL),
                        lock_delay: Duration::ZERO,
                        behavior: Behavior::Release,
                        service_checks: vec![],
                    })
                    .await?;
                *session = Some(id.clone());
                id
            }
        };
        self.consul
            .lock_acquire(FABRIC_MONITOR_LOCK, &id, self.holder.as_bytes())
            .await
    }

    /// The agents Consul knows, by host name.
    async fn agents(&self) -> Result<BTreeMap<String, Agent>, ConsulError> {
        let entries = self
            .consul
            .health_service(AGENT_SERVICE, false, &QueryOptions::default())
            .await?
            .value;
        let mut agents = BTreeMap::new();
        for e in entries {
            let Some(host) = e.service.meta.as_ref().and_then(|m| m.get("host")).cloned() else {
                continue;
            };
            let passing = e.checks.iter().all(|c| c.status == "passing");
            let agent = if passing {
                Agent::Passing
            } else {
                Agent::Failing
            };
            // Two registrations for one host: any passing one counts.
            let best = match agents.get(&host) {
                Some(Agent::Passing) => Agent::Passing,
                _ => agent,
            };
            agents.insert(host, best);
        }
        Ok(agents)
    }

    /// One sweep, if this instance holds the lock.
    pub async fn tick(&self, now: DateTime<Utc>) -> Result<Sweep, MonitorError> {
        self.settings.refresh().await;
        if !self.hold_lock().await? {
            tracing::debug!("another monitor holds the lock");
            return Ok(Sweep::default());
        }
        let agents = self.agents().await?;
        let down_after = down_after(self.settings.as_ref());
        let refresh_ping =
            Duration::from_secs(self.settings.integer(names::ping_interval()).max(1) as u64);
        let mut sweep = Sweep {
            swept: true,
            ..Sweep::default()
        };
        for host in self.store.walk::<Host>(&Index::All).await? {
            sweep.hosts += 1;
            let agent = agents
                .get(&host.value.name)
                .copied()
                .unwrap_or(Agent::Absent);
            if let Some(change) = self
                .apply(host, agent, now, down_after, refresh_ping)
                .await?
            {
                sweep.changes.push(change);
            }
        }
        Ok(sweep)
    }

    async fn apply(
        &self,
        mut host: Versioned<Host>,
        agent: Agent,
        now: DateTime<Utc>,
        down_after: Duration,
        refresh_ping: Duration,
    ) -> Result<Option<Change>, MonitorError> {
        let h = &host.value;
        let next = next_state(h.state, agent, h.last_pinged, now, down_after);
        let stale_ping = h
            .last_pinged
            .is_none_or(|t| (now - t).to_std().unwrap_or_default() >= refresh_ping);
        let Some((to, event)) = next else {
            // Still Up: remember when it was last seen, once per ping interval.
            if agent == Agent::Passing && stale_ping {
                host.value.last_pinged = Some(now);
                let mut tx = Transaction::new();
                tx.update(&host);
                return self.write(&mut tx).await.map(|_| None);
            }
            return Ok(None);
        };
        let from = h.state;
        let change = Change {
            host: h.name.clone(),
            from: format!("{from:?}"),
            to: format!("{to:?}"),
            event,
        };
        let unseen = h
            .last_pinged
            .map(|t| format!("{} s", (now - t).num_seconds()))
            .unwrap_or_else(|| "never".into());
        let (level, text) = match to {
            HostState::Up => (
                EventLevel::Info,
                format!(
                    "Host {} is Up (was {from:?}): its agent is connected",
                    h.name
                ),
            ),
            HostState::Alert => (
                EventLevel::Warn,
                format!(
                    "Host {} moved from {from:?} to Alert: its agent's health check lapsed ({event}; last seen {unseen} ago)",
                    h.name
                ),
            ),
            _ => (
                EventLevel::Error,
                format!(
                    "Host {} moved from {from:?} to Down: unseen for {unseen}, past ping.interval x ping.timeout = {} s ({event})",
                    h.name,
                    down_after.as_secs_f64()
                ),
            ),
        };
        let mut tx = Transaction::new();
        let root = Domain::id_for("ROOT");
        tx.create(&Event {
            id: Id::new(),
            event_type: "HOST.STATE".into(),
            level,
            state: EventState::Completed,
            description: text,
            // System events belong to the root admin's account here.
            account_id: Account::id_for(root, "admin"),
            resource_type: Some("Host".into()),
            resource_id: Some(h.id.uuid()),
            created: now,
        });
        if to != HostState::Up {
            tx.create(&host_alert(h, to, now));
        }
        if to == HostState::Up {
            host.value.last_pinged = Some(now);
        }
        host.value.state = to;
        tx.update(&host);
        tracing::info!(host = %change.host, from = %change.from, to = %change.to, event, "host state changed");
        self.write(&mut tx)
            .await
            .map(|written| written.then_some(change))
    }

    /// Commits; false when the host moved meanwhile (the next sweep sees it).
    async fn write(&self, tx: &mut Transaction) -> Result<bool, MonitorError> {
        match self.store.transact(std::mem::take(tx)).await {
            Ok(()) => Ok(true),
            Err(StoreError::Conflict { .. }) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }
}

/// CloudStack's host alert (type 7, `ALERT.HOST`).
fn host_alert(h: &Host, to: HostState, now: DateTime<Utc>) -> Alert {
    let what = if to == HostState::Down {
        "Host is down"
    } else {
        "Host is in Alert state"
    };
    Alert {
        id: Id::new(),
        alert_type: 7,
        name: "ALERT.HOST".into(),
        subject: format!(
            "{what}, name: {} (id:{}), availability zone: {}, pod: {}",
            h.name, h.id, h.zone_id, h.pod_id
        ),
        zone_id: h.zone_id,
        pod_id: Some(h.pod_id),
        sent: now,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use stratus_contracts::settings::Defaults;

    const LIMIT: Duration = Duration::from_secs(150);

    #[test]
    fn hosts_move_as_cloudstack_moves_them() {
        let now = Utc::now();
        let ago = |s: i64| Some(now - chrono::Duration::seconds(s));
        use HostState::*;
        // A connecting agent brings any host Up.
        for from in [Disconnected, Alert, Down, Connecting] {
            assert_eq!(
                next_state(from, Agent::Passing, None, now, LIMIT),
                Some((Up, "AgentConnected"))
            );
        }
        assert_eq!(next_state(Up, Agent::Passing, ago(1), now, LIMIT), None);
        // A lapsed or vanished agent: Alert first.
        assert_eq!(
            next_state(Up, Agent::Failing, ago(61), now, LIMIT),
            Some((Alert, "PingTimeout"))
        );
        assert_eq!(
            next_state(Up, Agent::Absent, ago(61), now, LIMIT),
            Some((Alert, "PingTimeout"))
        );
        // Down only once unseen for ping.interval x ping.timeout.
        assert_eq!(
            next_state(Alert, Agent::Failing, ago(149), now, LIMIT),
            None
        );
        assert_eq!(
            next_state(Alert, Agent::Failing, ago(150), now, LIMIT),
            Some((Down, "HostDown"))
        );
        assert_eq!(
            next_state(Alert, Agent::Absent, None, now, LIMIT),
            Some((Down, "HostDown"))
        );
        // Never connected, or already down, or removed: nothing to do.
        assert_eq!(
            next_state(Disconnected, Agent::Absent, None, now, LIMIT),
            None
        );
        assert_eq!(next_state(Down, Agent::Failing, ago(999), now, LIMIT), None);
        assert_eq!(next_state(Removed, Agent::Passing, None, now, LIMIT), None);
    }

    #[test]
    fn the_timeout_is_interval_times_multiplier() {
        assert_eq!(down_after(&Defaults::default()), Duration::from_secs(150));
        let mut d = Defaults::default();
        d.overrides.insert("ping.interval", "2".into());
        d.overrides.insert("ping.timeout", "1.5".into());
        assert_eq!(down_after(&d), Duration::from_secs(3));
    }
}
