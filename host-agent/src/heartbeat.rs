//! The host agent's heartbeat: it registers its host as an instance of the
//! `stratus-agent` service with a TTL check of `ping.interval` seconds and
//! passes the check three times per interval. When Consul no longer knows the
//! check (a restarted agent without its data, a deregistration) it registers
//! again; while Consul is unreachable it keeps trying, with backoff, and
//! never exits for it. A changed `ping.interval` re-registers with the new TTL.

use std::sync::Arc;
use std::time::Duration;

use stratus_contracts::names::AGENT_SERVICE;
use stratus_contracts::settings::{SettingsSource, names};
use stratus_discovery::{CheckDefinition, Client, ConsulError, ServiceRegistration};

pub struct Heartbeat {
    pub consul: Client,
    pub settings: Arc<dyn SettingsSource>,
    pub host: String,
    pub address: String,
}

impl Heartbeat {
    pub fn service_id(&self) -> String {
        format!("{AGENT_SERVICE}-{}", self.host)
    }

    pub fn check_id(&self) -> String {
        format!("service:{}", self.service_id())
    }

    fn interval(&self) -> Duration {
        Duration::from_secs(self.settings.integer(names::ping_interval()).max(1) as u64)
    }

    async fn register(&self, ttl: Duration) -> Result<(), ConsulError> {
        let mut meta = std::collections::BTreeMap::new();
        meta.insert("host".to_string(), self.host.clone());
        self.consul
            .register_service(&ServiceRegistration {
                id: Some(self.service_id()),
                name: AGENT_SERVICE.into(),
                tags: vec!["host-agent".into()],
                address: self.address.clone(),
                meta,
                check: Some(CheckDefinition {
                    check_id: Some(self.check_id()),
                    name: Some(format!("host {} agent heartbeat", self.host)),
                    ttl: format!("{}s", ttl.as_secs()),
                    status: Some("passing".into()),
                    ..Default::default()
                }),
                ..Default::default()
            })
            .await
    }

    /// Beats until the process ends. It looks at `ping.interval` every
    /// second, so a change re-registers the check's TTL at once rather than
    /// after the current (possibly long) beat.
    pub async fn run(&self) {
        let mut registered: Option<Duration> = None;
        let mut failures: u32 = 0;
        let mut next_beat = tokio::time::Instant::now();
        loop {
            let interval = self.interval();
            let now = tokio::time::Instant::now();
            // A new interval re-registers at once; anything else waits its turn
            // (a failed registration included: that is the backoff).
            let interval_changed = registered.is_some_and(|r| r != interval);
            if now < next_beat && !interval_changed {
                tokio::time::sleep_until(next_beat.min(now + Duration::from_secs(1))).await;
                continue;
            }
            let beat = async {
                if registered != Some(interval) {
                    self.register(interval).await?;
                    tracing::info!(host = %self.host, service = %self.service_id(), ttl_s = interval.as_secs(), "registered with Consul");
                    registered = Some(interval);
                }
                self.consul.check_pass(&self.check_id(), "ping").await
            };
            let pause = match beat.await {
                Ok(()) => {
                    if failures > 0 {
                        tracing::info!(host = %self.host, "Consul reachable again");
                    }
                    failures = 0;
                    interval / 3
                }
                Err(ConsulError::Status { status: 404, .. }) => {
                    tracing::warn!(host = %self.host, "Consul does not know our check; registering again");
                    registered = None;
                    Duration::ZERO
                }
                Err(e) => {
                    failures += 1;
                    // Backoff with jitter up to 10 s, but while Consul is only
                    // unreachable never longer than a beat: a short outage
                    // must not lapse the check.
                    let pause = stratus_discovery::backoff(failures);
                    tracing::warn!(host = %self.host, attempt = failures, error = %e, pause_ms = pause.as_millis() as u64, "heartbeat failed; retrying");
                    if e.is_transient() {
                        pause.min(interval / 3)
                    } else {
                        pause
                    }
                }
            };
            next_beat = tokio::time::Instant::now() + pause.max(Duration::from_millis(100));
        }
    }

    /// Leaves the catalog (on a clean stop).
    pub async fn deregister(&self) {
        if let Err(e) = self.consul.deregister_service(&self.service_id()).await {
            tracing::warn!(host = %self.host, error = %e, "could not deregister");
        }
    }
}
