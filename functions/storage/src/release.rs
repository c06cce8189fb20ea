//! release-volumes: removes the VM's volumes and gives their pool capacity
//! back, one transaction per pool (the volumes deleted at the versions read,
//! the pool lowered by their sizes at its version read). A run that finds a
//! volume gone finds it released: repeats and releases of nothing are no-ops.

use std::collections::BTreeMap;

use stratus_contracts::message_types::storage::ReleaseVolumes;
use stratus_messaging::step::StepError;
use stratus_model::*;
use stratus_store::{Store, Transaction, Versioned};
use uuid::Uuid;

use crate::{MAX_CONFLICTS, data_volume_id, root_volume_id, transient};

/// Releases the VM's root and data volumes.
pub async fn release_volumes(store: &Store, input: &ReleaseVolumes) -> Result<(), StepError> {
    // allocate-volumes refuses a VM id that is not a UUID: nothing to release.
    let Ok(vm) = input.vm_id.parse::<Uuid>() else {
        tracing::info!("not a UUID: no volumes were allocated for it");
        return Ok(());
    };
    let mut conflicts = 0;
    loop {
        let mut by_pool: BTreeMap<Option<Id<StoragePool>>, Vec<Versioned<Volume>>> =
            BTreeMap::new();
        for id in [root_volume_id(vm), data_volume_id(vm)] {
            if let Some(v) = store.get(id).await.map_err(transient)? {
                by_pool.entry(v.value.pool_id).or_default().push(v);
            }
        }
        let Some((pool_id, volumes)) = by_pool.into_iter().next() else {
            tracing::info!("no volumes left");
            return Ok(());
        };
        let size: u64 = volumes.iter().map(|v| v.value.size).sum();
        let mut tx = Transaction::new();
        for v in &volumes {
            tx.delete(v);
        }
        let pool = match pool_id {
            Some(id) => store.get(id).await.map_err(transient)?,
            None => None,
        };
        let lowered = pool.map(|mut p| {
            if p.value.disk_size_allocated < size {
                tracing::warn!(
                    pool_id = %p.value.id,
                    allocated = p.value.disk_size_allocated,
                    size,
                    "the pool accounts for less than the volumes it holds; lowering to 0"
                );
            }
            p.value.disk_size_allocated = p.value.disk_size_allocated.saturating_sub(size);
            tx.update(&p);
            p
        });
        match store.transact(tx).await {
            Ok(()) => {
                tracing::info!(
                    pool_id = ?pool_id.map(|p| p.to_string()),
                    volumes = volumes.len(),
                    size,
                    allocated = lowered.map(|p| p.value.disk_size_allocated),
                    "volumes released"
                );
            }
            Err(e) if e.is_conflict() => {
                // A twin release removed them, or an allocation moved the
                // pool on: read again.
                conflicts += 1;
                tracing::debug!(conflicts, error = %e, "changed meanwhile; reading again");
                if conflicts >= MAX_CONFLICTS {
                    return Err(StepError::transient(format!(
                        "volumes or their pool kept changing: {conflicts} conflicts"
                    )));
                }
            }
            Err(e) => return Err(transient(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::allocate_volumes;
    use crate::sizes::GIB;
    use crate::test_support::World;

    #[tokio::test]
    async fn releasing_twice_gives_the_capacity_back_exactly_once() {
        let w = World::new().await;
        // Another VM's volumes stay on the pool throughout.
        let other = w.request("keep");
        allocate_volumes(&w.store, &other).await.unwrap();
        let mut input = w.request("db-1");
        input.disk_offering_id = Some(w.custom.to_string());
        input.size_gb = Some(10);
        allocate_volumes(&w.store, &input).await.unwrap();
        assert_eq!(w.allocated(w.pool).await, 14 * GIB);

        let release = ReleaseVolumes {
            vm_id: input.vm_id.clone(),
        };
        release_volumes(&w.store, &release).await.unwrap();
        assert_eq!(w.allocated(w.pool).await, 2 * GIB);
        release_volumes(&w.store, &release).await.unwrap();
        assert_eq!(w.allocated(w.pool).await, 2 * GIB);
        let vm: Uuid = input.vm_id.parse().unwrap();
        assert!(w.store.get(root_volume_id(vm)).await.unwrap().is_none());
        assert!(w.store.get(data_volume_id(vm)).await.unwrap().is_none());
        assert_eq!(w.volume_count().await, 1);
    }

    #[tokio::test]
    async fn releasing_what_was_never_allocated_succeeds() {
        let w = World::new().await;
        let input = w.request("never");
        release_volumes(
            &w.store,
            &ReleaseVolumes {
                vm_id: input.vm_id.clone(),
            },
        )
        .await
        .unwrap();
        release_volumes(
            &w.store,
            &ReleaseVolumes {
                vm_id: "not-a-uuid".into(),
            },
        )
        .await
        .unwrap();
        assert_eq!(w.allocated(w.pool).await, 0);
    }

    #[tokio::test]
    async fn volumes_on_two_pools_each_give_back_to_their_own() {
        let w = World::new().await;
        let second = w
            .add_pool(StorageScope::Zone, None, 50 * GIB, 0, StoragePoolState::Up)
            .await;
        let input = w.request("web-1");
        allocate_volumes(&w.store, &input).await.unwrap();
        let vm: Uuid = input.vm_id.parse().unwrap();
        // A data volume on another pool (as a later attach could place it).
        let root = w
            .store
            .get(root_volume_id(vm))
            .await
            .unwrap()
            .unwrap()
            .value;
        w.store
            .create(&Volume {
                id: data_volume_id(vm),
                name: "DATA-web-1".into(),
                pool_id: Some(second),
                volume_type: VolumeType::Datadisk,
                size: 3 * GIB,
                device_id: Some(1),
                ..root
            })
            .await
            .unwrap();
        let mut p = w.store.get::<StoragePool>(second).await.unwrap().unwrap();
        p.value.disk_size_allocated = 3 * GIB;
        w.store.update(&p).await.unwrap();

        release_volumes(&w.store, &ReleaseVolumes { vm_id: input.vm_id })
            .await
            .unwrap();
        assert_eq!(w.allocated(w.pool).await, 0);
        assert_eq!(w.allocated(second).await, 0);
        assert_eq!(w.volume_count().await, 0);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_releases_give_back_once() {
        let w = World::new().await;
        let keep = w.request("keep");
        allocate_volumes(&w.store, &keep).await.unwrap();
        let input = w.request("web-1");
        allocate_volumes(&w.store, &input).await.unwrap();
        let release = ReleaseVolumes {
            vm_id: input.vm_id.clone(),
        };
        let (a, b) = tokio::join!(
            release_volumes(&w.store, &release),
            release_volumes(&w.store, &release)
        );
        a.unwrap();
        b.unwrap();
        assert_eq!(w.allocated(w.pool).await, 2 * GIB);
    }
}
