//! Storage: VM volumes on primary storage pools with the pools' capacity
//! accounted (saga steps allocate-volumes and release-volumes).
//!
//! A VM's volumes have ids derived from its id ([`root_volume_id`],
//! [`data_volume_id`]), so a repeated step finds what it made, and its
//! release finds what to remove without being told. A pool's
//! `disk_size_allocated` changes only in the transaction that writes or
//! deletes the volumes it accounts for, as a versioned update of the pool:
//! two deploys racing for one pool cannot both take its last room.

use std::sync::Arc;

use serde_json::Value;
use stratus_contracts::message_types::saga::Step;
use stratus_contracts::message_types::storage;
use stratus_messaging::step::{self, StepError};
use stratus_messaging::{Envelope, Handlers};
use stratus_model::{Id, Volume};
use stratus_store::{Store, StoreError};
use tracing::Instrument;
use uuid::Uuid;

mod allocate;
mod release;
pub mod sizes;
#[cfg(test)]
mod test_support;

pub use allocate::allocate_volumes;
pub use release::release_volumes;

/// The consumer name in handled-message records.
pub const CONSUMER: &str = "storage";

/// The namespace of the ids of VMs' volumes.
pub const VOLUME_NAMESPACE: Uuid = Uuid::from_u128(0x5704_a6e0_3c1b_4d7e_9f28_0000_0000_0b01);

/// CloudStack's `storage.overprovisioning.factor`: a pool takes volumes up
/// to its size times this. CloudStack's default is 2 (for the pool types
/// that overprovision, NFS among them); Stratus's settings registry does not
/// hold the setting yet, so pools are not overprovisioned.
pub const STORAGE_OVERPROVISIONING_FACTOR: f64 = 1.0;

/// Store conflicts a step goes through (re-reading each time) before it
/// gives up for now and the message is retried later.
pub const MAX_CONFLICTS: u32 = 50;

/// The VM's root volume: `vm/<vm_id>/root`.
pub fn root_volume_id(vm_id: Uuid) -> Id<Volume> {
    Id::derived(VOLUME_NAMESPACE, &format!("vm/{vm_id}/root"))
}

/// The VM's data volume (from `diskofferingid`): `vm/<vm_id>/data`.
pub fn data_volume_id(vm_id: Uuid) -> Id<Volume> {
    Id::derived(VOLUME_NAMESPACE, &format!("vm/{vm_id}/data"))
}

/// A store failure in a step: worth another attempt later.
fn transient(e: StoreError) -> StepError {
    StepError::transient(e)
}

pub fn handlers(store: Arc<Store>) -> Handlers {
    let release_store = store.clone();
    Handlers::new()
        .on(
            storage::ALLOCATE_VOLUMES,
            move |env: Envelope, step: Step<storage::AllocateVolumes>| {
                let store = store.clone();
                let span = tracing::info_span!(
                    "allocate_volumes",
                    vm_id = %step.input.vm_id,
                    saga_id = %step.saga.saga_id,
                    job_id = env.job_id.as_deref().unwrap_or(""),
                    undo = step.saga.undo,
                );
                async move {
                    let result = allocate_volumes(&store, &step.input).await;
                    step::reply(&env, storage::STEP_RESULT, step.saga, result)
                }
                .instrument(span)
            },
        )
        .on(
            storage::RELEASE_VOLUMES,
            move |env: Envelope, step: Step<storage::ReleaseVolumes>| {
                let store = release_store.clone();
                let span = tracing::info_span!(
                    "release_volumes",
                    vm_id = %step.input.vm_id,
                    saga_id = %step.saga.saga_id,
                    job_id = env.job_id.as_deref().unwrap_or(""),
                    undo = step.saga.undo,
                );
                async move {
                    let result = release_volumes(&store, &step.input)
                        .await
                        .map(|()| Value::Object(Default::default()));
                    step::reply(&env, storage::STEP_RESULT, step.saga, result)
                }
                .instrument(span)
            },
        )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::World;
    use stratus_contracts::message_types::saga::{Outcome, StepRef, StepResult};
    use stratus_messaging::HandlerError;
    use stratus_model::StoragePool;

    fn step_ref(undo: bool) -> StepRef {
        StepRef {
            saga_id: "4c6b1f0e-2d3a-4b5c-8d7e-9f0a1b2c3d4e".into(),
            step: "allocate-volumes".into(),
            undo,
        }
    }

    fn result(effects: &[stratus_messaging::publisher::Outgoing]) -> StepResult {
        assert_eq!(effects.len(), 1);
        serde_json::from_slice(&effects[0].body).unwrap()
    }

    #[tokio::test]
    async fn the_handlers_answer_with_storage_step_results() {
        let w = World::new().await;
        let handlers = handlers(w.store.clone());
        let input = w.request("web-1");
        let allocate = Envelope::new(
            storage::ALLOCATE_VOLUMES,
            &Step {
                saga: step_ref(false),
                input: input.clone(),
            },
        )
        .with_job_id("0d9c8b7a-6f5e-4d3c-2b1a-0f9e8d7c6b5a");
        let effects = handlers.call(allocate).await.unwrap();
        assert_eq!(effects[0].routing_key, storage::STEP_RESULT);
        let answer = result(&effects);
        assert_eq!(answer.saga, step_ref(false));
        let Outcome::Done { output } = answer.outcome else {
            panic!("{:?}", answer.outcome)
        };
        let done: storage::VolumesAllocated = serde_json::from_value(output).unwrap();
        assert_eq!(done.volumes.len(), 1);
        assert_eq!(done.volumes[0].name, "ROOT-web-1");

        let release = Envelope::new(
            storage::RELEASE_VOLUMES,
            &Step {
                saga: step_ref(true),
                input: storage::ReleaseVolumes {
                    vm_id: input.vm_id.clone(),
                },
            },
        );
        let answer = result(&handlers.call(release).await.unwrap());
        assert_eq!(
            answer.outcome,
            Outcome::Done {
                output: serde_json::json!({})
            }
        );
        let pool = w.store.get::<StoragePool>(w.pool).await.unwrap().unwrap();
        assert_eq!(pool.value.disk_size_allocated, 0);
    }

    #[tokio::test]
    async fn a_refusal_is_a_failed_outcome_with_cloudstacks_code() {
        let w = World::new().await;
        let handlers = handlers(w.store.clone());
        let mut input = w.request("web-1");
        input.root_disk_size_gb = Some(0);
        let env = Envelope::new(
            storage::ALLOCATE_VOLUMES,
            &Step {
                saga: step_ref(false),
                input,
            },
        );
        let answer = result(&handlers.call(env).await.unwrap());
        assert_eq!(
            answer.outcome,
            Outcome::Failed {
                code: 431,
                text: "Root disk size should be a positive number.".into()
            }
        );
    }

    #[tokio::test]
    async fn a_body_that_is_not_a_step_is_parked() {
        let w = World::new().await;
        let env = Envelope::new(storage::RELEASE_VOLUMES, &serde_json::json!({"vm_id": "x"}));
        let e = handlers(w.store.clone()).call(env).await.unwrap_err();
        assert!(matches!(e, HandlerError::Permanent(_)), "{e}");
    }

    #[test]
    fn the_sample_bodies_are_steps() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../events/rmq/bodies/");
        let read = |name: &str| std::fs::read(format!("{dir}{name}.json")).unwrap();
        let allocate: Step<storage::AllocateVolumes> =
            serde_json::from_slice(&read(storage::ALLOCATE_VOLUMES)).unwrap();
        assert!(!allocate.saga.undo);
        let release: Step<storage::ReleaseVolumes> =
            serde_json::from_slice(&read(storage::RELEASE_VOLUMES)).unwrap();
        assert_eq!(release.input.vm_id, allocate.input.vm_id);
    }
}
