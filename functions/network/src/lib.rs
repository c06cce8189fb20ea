//! Networking: isolated guest networks, VLANs from the zone's range, addresses
//! and MACs for VM NICs (saga steps allocate-nics and release-nics).
//!
//! - `network.allocate-nics` ([`nics::allocate`]): NIC `i` on the `i`-th
//!   network named, or NIC 0 on the account's default isolated network in the
//!   zone, made on first use ([`default_network`]); each NIC's address and MAC
//!   are claimed with the store's `allocate_ip` under `vm/<vm_id>/nic/<i>`.
//! - `network.release-nics` ([`nics::release`]): gives those back.
//!
//! Both answer with `network.step-result`. Refusals carry CloudStack's codes
//! and texts ([`texts`]); store failures that may pass (conflicts, an
//! unreachable backend) retry the message; data that cannot be used (a
//! malformed CIDR or document) fails the step with 530.

pub mod default_network;
pub mod nics;
pub mod texts;
pub mod zone_config;

#[cfg(test)]
mod tests;

use std::sync::Arc;

use stratus_contracts::message_types::{network, saga};
use stratus_messaging::step::{StepError, reply};
use stratus_messaging::{Effects, Envelope, HandlerError, Handlers};
use stratus_model::{Id, Network, NetworkState, Zone};
use stratus_store::{Store, StoreError};
use tracing::Instrument;

/// The consumer name in handled-message records.
pub const CONSUMER: &str = "network";

/// The networking function's handlers.
pub fn handlers(store: Arc<Store>) -> Handlers {
    let release_store = store.clone();
    Handlers::new()
        .on(
            network::ALLOCATE_NICS,
            move |env: Envelope, step: saga::Step<network::AllocateNics>| {
                let store = store.clone();
                async move { allocate_step(&store, &env, step).await }
            },
        )
        .on(
            network::RELEASE_NICS,
            move |env: Envelope, step: saga::Step<network::ReleaseNics>| {
                let store = release_store.clone();
                async move { release_step(&store, &env, step).await }
            },
        )
}

fn span(env: &Envelope, step: &saga::StepRef, vm_id: &str) -> tracing::Span {
    tracing::info_span!(
        "network-step",
        step = %step.step,
        undo = step.undo,
        saga_id = %step.saga_id,
        vm_id = %vm_id,
        job_id = env.job_id.as_deref().unwrap_or(""),
        message_id = %env.message_id,
    )
}

async fn allocate_step(
    store: &Store,
    env: &Envelope,
    step: saga::Step<network::AllocateNics>,
) -> Result<Effects, HandlerError> {
    let span = span(env, &step.saga, &step.input.vm_id);
    let result = async {
        // The undo of allocate-nics is release-nics: an allocation sent as an
        // undo would claim what the saga is giving back.
        if step.saga.undo {
            return Err(StepError::internal(
                "network.allocate-nics cannot be an undo; release-nics undoes it",
            ));
        }
        nics::allocate(store, &step.input).await
    }
    .instrument(span.clone())
    .await;
    let _entered = span.enter();
    reply(env, network::STEP_RESULT, step.saga, result)
}

async fn release_step(
    store: &Store,
    env: &Envelope,
    step: saga::Step<network::ReleaseNics>,
) -> Result<Effects, HandlerError> {
    let span = span(env, &step.saga, &step.input.vm_id);
    let result = nics::release(store, &step.input)
        .instrument(span.clone())
        .await
        .map(|()| serde_json::json!({}));
    let _entered = span.enter();
    reply(env, network::STEP_RESULT, step.saga, result)
}

/// A store failure as a step's: unusable data fails the step (530), anything
/// else may pass and retries the message.
pub(crate) fn store_error(e: StoreError) -> StepError {
    match e {
        StoreError::Invalid(_) | StoreError::Decode { .. } => StepError::internal(e.to_string()),
        e => StepError::transient(e),
    }
}

/// Whether a VM in `zone` may get a NIC on `network`: the network is in the
/// zone and neither removed (Destroy) nor shut down.
pub(crate) fn check_usable(network: &Network, zone: Id<Zone>) -> Result<(), StepError> {
    match network.state {
        // A removed network: CloudStack no longer finds it.
        NetworkState::Destroy => Err(texts::unknown_network(&network.id.to_string())),
        NetworkState::Shutdown => Err(texts::shut_down(network)),
        _ if network.zone_id != zone => Err(texts::wrong_zone(network, &zone.to_string())),
        _ => Ok(()),
    }
}
