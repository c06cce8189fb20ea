//! Compute: placement of VMs on hosts by CPU, memory, tags and health, with
//! capacity held and released (saga steps), and reconciliation of the host
//! agents' VM reports.
//!
//! - [`placement`]: `compute.reserve-capacity` picks a host in the zone that
//!   is Up, Enabled, in an Enabled cluster and pod, whose agent passes its
//!   Consul check now, with the offering's host tags, and holds the VM's CPU
//!   and memory there (key `vm/<vm_id>/host`) within the cluster's
//!   overprovisioning factors; `compute.release-capacity` gives it back.
//!   Both answer with `compute.step-result`.
//! - [`report`]: `agent.vm-report` reconciles the store with what a host
//!   says it holds, as CloudStack's VM power-state sync does.

pub mod placement;
pub mod report;

#[cfg(test)]
mod testing;

use std::sync::Arc;

use stratus_contracts::message_types::{agent, compute, saga};
use stratus_contracts::settings::SettingsSource;
use stratus_messaging::step::reply;
use stratus_messaging::{Envelope, Handlers};
use stratus_store::Store;

/// The consumer name in handled-message records.
pub const CONSUMER: &str = "compute";

/// What the handlers share: the data service, the settings (the cluster
/// overprovisioning factors) and, when configured, Consul (the agents' health).
#[derive(Clone)]
pub struct Compute {
    pub store: Arc<Store>,
    pub settings: Arc<dyn SettingsSource>,
    /// None: no Consul configured; placement then trusts the host state the
    /// fabric monitor wrote.
    pub consul: Option<stratus_discovery::Client>,
}

/// The compute function's handlers.
pub fn handlers(
    store: Arc<Store>,
    settings: Arc<dyn SettingsSource>,
    consul: Option<stratus_discovery::Client>,
) -> Handlers {
    let compute = Compute {
        store,
        settings,
        consul,
    };
    let (reserve, release, report) = (compute.clone(), compute.clone(), compute);
    Handlers::new()
        .on(
            compute::RESERVE_CAPACITY,
            move |env: Envelope, step: saga::Step<compute::ReserveCapacity>| {
                let c = reserve.clone();
                async move {
                    let result = placement::reserve_step(&c, &env, &step).await;
                    reply(&env, compute::STEP_RESULT, step.saga, result)
                }
            },
        )
        .on(
            compute::RELEASE_CAPACITY,
            move |env: Envelope, step: saga::Step<compute::ReleaseCapacity>| {
                let c = release.clone();
                async move {
                    let result = placement::release(&c, &env, &step.saga, &step.input.vm_id).await;
                    reply(&env, compute::STEP_RESULT, step.saga, result)
                }
            },
        )
        .on(
            agent::VM_REPORT,
            move |env: Envelope, body: agent::VmReport| {
                let c = report.clone();
                async move { report::reconcile(&c.store, &env, &body).await }
            },
        )
}

/// The idempotency key of a VM's capacity reservation.
pub fn capacity_key(vm_id: &str) -> String {
    format!("vm/{vm_id}/host")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The sample bodies under `events/rmq/bodies/` decode as the messages
    /// this function takes.
    #[tokio::test]
    async fn the_sample_bodies_decode() {
        let reserve: saga::Step<compute::ReserveCapacity> = serde_json::from_str(include_str!(
            "../../../events/rmq/bodies/compute.reserve-capacity.json"
        ))
        .unwrap();
        assert!(!reserve.saga.undo);
        let release: saga::Step<compute::ReleaseCapacity> = serde_json::from_str(include_str!(
            "../../../events/rmq/bodies/compute.release-capacity.json"
        ))
        .unwrap();
        assert_eq!(release.input.vm_id, reserve.input.vm_id);
        assert!(release.saga.undo);
        let report: agent::VmReport = serde_json::from_str(include_str!(
            "../../../events/rmq/bodies/agent.vm-report.json"
        ))
        .unwrap();
        assert!(report.full);
        let world = testing::World::new().await;
        let handlers = handlers(
            world.store.clone(),
            Arc::new(stratus_contracts::settings::Defaults::default()),
            None,
        );
        let mut types: Vec<&str> = handlers.message_types().collect();
        types.sort();
        assert_eq!(
            types,
            [
                agent::VM_REPORT,
                compute::RELEASE_CAPACITY,
                compute::RESERVE_CAPACITY
            ]
        );
    }
}
