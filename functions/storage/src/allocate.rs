//! allocate-volumes: the VM's root volume (and data volume) on one primary
//! pool with room, written with the pool's raised allocation in one
//! transaction.

use chrono::Utc;
use stratus_cloudstack::ApiError;
use stratus_contracts::message_types::saga::insufficient_capacity_text;
use stratus_contracts::message_types::storage::{AllocateVolumes, VolumeInfo, VolumesAllocated};
use stratus_messaging::step::StepError;
use stratus_model::*;
use stratus_store::{Index, Store, Transaction, Versioned};
use uuid::Uuid;

use crate::{
    MAX_CONFLICTS, STORAGE_OVERPROVISIONING_FACTOR, data_volume_id, root_volume_id, sizes,
    transient,
};

/// The API command whose parameters the step's ids came from, for
/// CloudStack's "entity does not exist" text.
const COMMAND: &str = "deployVirtualMachine";

/// CloudStack's code for insufficient capacity.
const INSUFFICIENT_CAPACITY: u16 = 533;

/// What the VM needs, checked: the volumes to write, before a pool is chosen.
struct Plan {
    vm_id: Id<Vm>,
    account_id: Id<Account>,
    zone_id: Id<Zone>,
    cluster_id: Option<Id<Cluster>>,
    template_id: Id<Template>,
    root_size: u64,
    /// The data volume's size and offering.
    data: Option<(u64, Id<DiskOffering>)>,
}

impl Plan {
    /// Bytes for every volume (saturating: no pool has room for more).
    fn total(&self) -> u64 {
        self.root_size
            .saturating_add(self.data.map_or(0, |(size, _)| size))
    }
}

/// Allocates the VM's volumes, or answers those a previous run of the step
/// allocated (changing nothing). Failures: 431 for a bad template, size or
/// offering, 533 when no pool has room; a store that keeps conflicting or
/// fails is transient.
pub async fn allocate_volumes(
    store: &Store,
    input: &AllocateVolumes,
) -> Result<VolumesAllocated, StepError> {
    let vm_id: Id<Vm> = input
        .vm_id
        .parse()
        .map_err(|_| StepError::internal(format!("the VM id {:?} is not a UUID", input.vm_id)))?;
    if let Some(done) = existing(store, vm_id.uuid(), &input.template_id).await? {
        tracing::info!("volumes allocated before; answering them");
        return Ok(done);
    }
    let plan = plan(store, input, vm_id).await?;
    let mut conflicts = 0;
    loop {
        let pool = choose_pool(store, &plan).await?.ok_or_else(|| {
            tracing::warn!(needed = plan.total(), "no primary storage pool has room");
            StepError::failed(
                INSUFFICIENT_CAPACITY,
                insufficient_capacity_text(&input.vm_id),
            )
        })?;
        let volumes = volumes(&plan, &input.vm_name, pool.value.id);
        let mut tx = Transaction::new();
        for v in &volumes {
            tx.create(v);
        }
        let mut raised = pool.clone();
        raised.value.disk_size_allocated = pool.value.disk_size_allocated + plan.total();
        tx.update(&raised);
        match store.transact(tx).await {
            Ok(()) => {
                tracing::info!(
                    pool_id = %pool.value.id,
                    size = plan.total(),
                    allocated = raised.value.disk_size_allocated,
                    "volumes allocated"
                );
                return Ok(VolumesAllocated {
                    volumes: volumes
                        .iter()
                        .map(|v| info(v, &plan.template_id.to_string()))
                        .collect(),
                });
            }
            Err(e) if e.is_conflict() => {
                // Either another allocation moved the pool on (choose again
                // from fresh reads), or a twin of this step wrote the volumes.
                if let Some(done) = existing(store, vm_id.uuid(), &input.template_id).await? {
                    tracing::info!("a concurrent run of the step allocated the volumes");
                    return Ok(done);
                }
                conflicts += 1;
                tracing::debug!(conflicts, error = %e, "pool changed meanwhile; choosing again");
                if conflicts >= MAX_CONFLICTS {
                    return Err(StepError::transient(format!(
                        "primary storage pools kept changing: {conflicts} conflicts"
                    )));
                }
            }
            Err(e) => return Err(transient(e)),
        }
    }
}

/// The volumes a previous run wrote, if the root volume exists.
async fn existing(
    store: &Store,
    vm: Uuid,
    template_id: &str,
) -> Result<Option<VolumesAllocated>, StepError> {
    let Some(root) = store.get(root_volume_id(vm)).await.map_err(transient)? else {
        return Ok(None);
    };
    let data = store.get(data_volume_id(vm)).await.map_err(transient)?;
    // The volume row keeps no template: the step's own is the one it was made from.
    let volumes = std::iter::once(root)
        .chain(data)
        .map(|v| info(&v.value, template_id))
        .collect();
    Ok(Some(VolumesAllocated { volumes }))
}

/// Checks the request against the zone, template and disk offering, and
/// sizes the volumes.
async fn plan(store: &Store, input: &AllocateVolumes, vm_id: Id<Vm>) -> Result<Plan, StepError> {
    let account_id: Id<Account> = input.account_id.parse().map_err(|_| {
        StepError::internal(format!(
            "the account id {:?} is not a UUID",
            input.account_id
        ))
    })?;
    let not_found = |param: &str, value: &str| {
        let e = ApiError::entity_not_found(COMMAND, param, value);
        StepError::failed(e.code.code(), e.text)
    };
    let zone_id: Id<Zone> = input
        .zone_id
        .parse()
        .map_err(|_| not_found("zoneid", &input.zone_id))?;
    if store.get(zone_id).await.map_err(transient)?.is_none() {
        return Err(not_found("zoneid", &input.zone_id));
    }
    let cluster_id = match &input.cluster_id {
        None => None,
        Some(c) => Some(c.parse::<Id<Cluster>>().map_err(|_| {
            StepError::internal(format!("the placement's cluster id {c:?} is not a UUID"))
        })?),
    };

    let template = match input.template_id.parse::<Id<Template>>() {
        Ok(id) => store.get(id).await.map_err(transient)?,
        Err(_) => None,
    }
    .ok_or_else(|| not_found("templateid", &input.template_id))?
    .value;
    // CloudStack's refusal of a template the zone does not hold (its
    // template_zone_ref row): here, one for another zone or not ready yet.
    if !template.is_ready || template.zone_id.is_some_and(|z| z != zone_id) {
        return Err(StepError::failed(
            431,
            format!(
                "The template {} is not available for use",
                input.template_id
            ),
        ));
    }
    let root_size = sizes::root_size(&template, input.root_disk_size_gb)?;

    let data = match &input.disk_offering_id {
        None => None,
        Some(id) => {
            let offering = match id.parse::<Id<DiskOffering>>() {
                Ok(id) => store.get(id).await.map_err(transient)?,
                Err(_) => None,
            }
            .ok_or_else(|| not_found("diskofferingid", id))?
            .value;
            Some((sizes::data_size(&offering, input.size_gb)?, offering.id))
        }
    };
    Ok(Plan {
        vm_id,
        account_id,
        zone_id,
        cluster_id,
        template_id: template.id,
        root_size,
        data,
    })
}

/// How many bytes a pool may hold: its size, overprovisioned.
fn capacity(pool: &StoragePool) -> u64 {
    // A float product, as CloudStack's; `as` saturates.
    (pool.disk_size_total as f64 * STORAGE_OVERPROVISIONING_FACTOR).floor() as u64
}

/// Whether the VM may use the pool at all: Up, in the zone, and zone-wide
/// or in the VM's cluster (any pool of the zone when it is not placed yet).
fn usable(pool: &StoragePool, plan: &Plan) -> bool {
    pool.state == StoragePoolState::Up
        && pool.zone_id == plan.zone_id
        && match plan.cluster_id {
            None => true,
            Some(cluster) => {
                pool.scope == StorageScope::Zone
                    || (pool.scope == StorageScope::Cluster && pool.cluster_id == Some(cluster))
            }
        }
}

/// The usable pool with room for every volume, the one with the most free
/// space (the first by id among equals), read at its current version.
async fn choose_pool(
    store: &Store,
    plan: &Plan,
) -> Result<Option<Versioned<StoragePool>>, StepError> {
    let listed = store
        .walk::<StoragePool>(&Index::Zone(plan.zone_id.uuid()))
        .await
        .map_err(transient)?;
    let mut best: Option<(u64, Versioned<StoragePool>)> = None;
    for candidate in listed.into_iter().filter(|p| usable(&p.value, plan)) {
        // A listing may lag (DynamoDB's indexes): decide on the pool's own read.
        let Some(pool) = store.get(candidate.value.id).await.map_err(transient)? else {
            continue;
        };
        if !usable(&pool.value, plan) {
            continue;
        }
        let free = capacity(&pool.value).saturating_sub(pool.value.disk_size_allocated);
        if free >= plan.total() && best.as_ref().is_none_or(|(most, _)| free > *most) {
            best = Some((free, pool));
        }
    }
    Ok(best.map(|(_, pool)| pool))
}

/// The volume rows, named as CloudStack names them with the VM's name for
/// its internal number.
fn volumes(plan: &Plan, vm_name: &str, pool: Id<StoragePool>) -> Vec<Volume> {
    let created = Utc::now();
    let volume = |id, name, volume_type, size, device_id, disk_offering_id| Volume {
        id,
        name,
        account_id: plan.account_id,
        zone_id: plan.zone_id,
        vm_id: Some(plan.vm_id),
        pool_id: Some(pool),
        disk_offering_id,
        volume_type,
        state: VolumeState::Allocated,
        size,
        device_id: Some(device_id),
        created,
    };
    let vm = plan.vm_id.uuid();
    let mut out = vec![volume(
        root_volume_id(vm),
        format!("ROOT-{vm_name}"),
        VolumeType::Root,
        plan.root_size,
        0,
        None,
    )];
    if let Some((size, offering)) = plan.data {
        out.push(volume(
            data_volume_id(vm),
            format!("DATA-{vm_name}"),
            VolumeType::Datadisk,
            size,
            1,
            Some(offering),
        ));
    }
    out
}

/// What the step answers for a volume; `template_id` goes on the root volume.
fn info(v: &Volume, template_id: &str) -> VolumeInfo {
    VolumeInfo {
        volume_id: v.id.to_string(),
        name: v.name.clone(),
        volume_type: state_name(&v.volume_type),
        size: v.size,
        pool_id: v.pool_id.map(|p| p.to_string()).unwrap_or_default(),
        device_id: v.device_id.unwrap_or_default(),
        template_id: (v.volume_type == VolumeType::Root).then(|| template_id.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sizes::GIB;
    use crate::test_support::World;

    fn failure(r: Result<VolumesAllocated, StepError>) -> (u16, String) {
        match r {
            Err(StepError::Failed { code, text }) => (code, text),
            other => panic!("expected a failure, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn the_root_volume_takes_the_templates_size() {
        let w = World::new().await;
        let input = w.request("web-1");
        let done = allocate_volumes(&w.store, &input).await.unwrap();
        let vm: Uuid = input.vm_id.parse().unwrap();
        assert_eq!(
            done.volumes,
            vec![VolumeInfo {
                volume_id: root_volume_id(vm).to_string(),
                name: "ROOT-web-1".into(),
                volume_type: "ROOT".into(),
                size: 2 * GIB,
                pool_id: w.pool.to_string(),
                device_id: 0,
                template_id: Some(w.template.to_string()),
            }]
        );
        let row = w
            .store
            .get(root_volume_id(vm))
            .await
            .unwrap()
            .unwrap()
            .value;
        assert_eq!(row.state, VolumeState::Allocated);
        assert_eq!(row.vm_id, Some(vm.to_string().parse().unwrap()));
        assert_eq!(row.pool_id, Some(w.pool));
        assert_eq!((row.account_id, row.zone_id), (w.f.account, w.f.zone));
        assert_eq!(row.disk_offering_id, None);
        assert_eq!(w.allocated(w.pool).await, 2 * GIB);
    }

    #[tokio::test]
    async fn rootdisksize_is_honoured_and_refused_below_the_template() {
        let w = World::new().await;
        let mut input = w.request("web-1");
        input.root_disk_size_gb = Some(20);
        let done = allocate_volumes(&w.store, &input).await.unwrap();
        assert_eq!(done.volumes[0].size, 20 * GIB);
        assert_eq!(w.allocated(w.pool).await, 20 * GIB);

        let mut small = w.request("web-2");
        small.root_disk_size_gb = Some(1);
        assert_eq!(
            failure(allocate_volumes(&w.store, &small).await),
            (
                431,
                "Unsupported: rootdisksize override (1 GB) is smaller than template size 2147483648 (2.00 GB)".into()
            )
        );
        assert_eq!(w.volume_count().await, 1);
        assert_eq!(w.allocated(w.pool).await, 20 * GIB);
    }

    #[tokio::test]
    async fn a_data_volume_comes_from_a_fixed_offering() {
        let w = World::new().await;
        let mut input = w.request("db-1");
        input.disk_offering_id = Some(w.fixed.to_string());
        let done = allocate_volumes(&w.store, &input).await.unwrap();
        let vm: Uuid = input.vm_id.parse().unwrap();
        let data = &done.volumes[1];
        assert_eq!(
            data,
            &VolumeInfo {
                volume_id: data_volume_id(vm).to_string(),
                name: "DATA-db-1".into(),
                volume_type: "DATADISK".into(),
                size: 5 * GIB,
                pool_id: w.pool.to_string(),
                device_id: 1,
                template_id: None,
            }
        );
        let row = w
            .store
            .get(data_volume_id(vm))
            .await
            .unwrap()
            .unwrap()
            .value;
        assert_eq!(row.disk_offering_id, Some(w.fixed));
        assert_eq!(row.volume_type, VolumeType::Datadisk);
        assert_eq!(w.allocated(w.pool).await, 7 * GIB);

        let mut sized = w.request("db-2");
        sized.disk_offering_id = Some(w.fixed.to_string());
        sized.size_gb = Some(8);
        assert_eq!(
            failure(allocate_volumes(&w.store, &sized).await),
            (431, "This disk offering does not allow custom size".into())
        );
    }

    #[tokio::test]
    async fn a_custom_offering_takes_the_size_given_and_requires_one() {
        let w = World::new().await;
        let mut input = w.request("db-1");
        input.disk_offering_id = Some(w.custom.to_string());
        input.size_gb = Some(30);
        let done = allocate_volumes(&w.store, &input).await.unwrap();
        assert_eq!(done.volumes[1].size, 30 * GIB);
        assert_eq!(w.allocated(w.pool).await, 32 * GIB);

        let mut no_size = w.request("db-2");
        no_size.disk_offering_id = Some(w.custom.to_string());
        assert_eq!(
            failure(allocate_volumes(&w.store, &no_size).await),
            (
                431,
                "This disk offering requires a custom size specified".into()
            )
        );
        assert_eq!(w.volume_count().await, 2);
    }

    #[tokio::test]
    async fn unknown_or_unusable_templates_and_offerings_are_refused() {
        let w = World::new().await;
        let missing = Id::<DiskOffering>::new().to_string();
        let mut input = w.request("web-1");
        input.disk_offering_id = Some(missing.clone());
        let (code, text) = failure(allocate_volumes(&w.store, &input).await);
        assert_eq!(code, 431);
        assert!(
            text.contains(&format!("Invalid parameter diskofferingid value={missing}"))
                && text.contains("entity does not exist"),
            "{text}"
        );

        let mut input = w.request("web-1");
        input.template_id = "not-a-uuid".into();
        let (code, text) = failure(allocate_volumes(&w.store, &input).await);
        assert_eq!(code, 431);
        assert!(text.contains("templateid value=not-a-uuid"), "{text}");

        let mut downloading = w.store.get::<Template>(w.template).await.unwrap().unwrap();
        downloading.value.is_ready = false;
        w.store.update(&downloading).await.unwrap();
        let input = w.request("web-1");
        assert_eq!(
            failure(allocate_volumes(&w.store, &input).await),
            (
                431,
                format!("The template {} is not available for use", w.template)
            )
        );
        assert_eq!(w.volume_count().await, 0);
        assert_eq!(w.allocated(w.pool).await, 0);
    }

    #[tokio::test]
    async fn the_pool_is_in_the_vms_cluster_or_zone_wide_with_the_most_room() {
        let w = World::new().await;
        let elsewhere = Id::<Cluster>::new();
        // The largest pool, but in another cluster.
        let other_cluster = w
            .add_pool(
                StorageScope::Cluster,
                Some(elsewhere),
                1000 * GIB,
                0,
                StoragePoolState::Up,
            )
            .await;
        // Large, but down.
        let down = w
            .add_pool(
                StorageScope::Zone,
                None,
                900 * GIB,
                0,
                StoragePoolState::Maintenance,
            )
            .await;
        // Zone-wide: 150 GiB free, more than the cluster's pool (100 GiB).
        let zone_wide = w
            .add_pool(
                StorageScope::Zone,
                None,
                200 * GIB,
                50 * GIB,
                StoragePoolState::Up,
            )
            .await;

        let mut input = w.request("web-1");
        input.cluster_id = Some(w.f.cluster.to_string());
        let done = allocate_volumes(&w.store, &input).await.unwrap();
        assert_eq!(done.volumes[0].pool_id, zone_wide.to_string());
        assert_eq!(w.allocated(zone_wide).await, 52 * GIB);

        // 2 + 146 GiB fills the zone-wide pool's 148 GiB left exactly: both
        // volumes go there, together.
        let mut big = w.request("db-1");
        big.cluster_id = Some(w.f.cluster.to_string());
        big.disk_offering_id = Some(w.custom.to_string());
        big.size_gb = Some(146);
        let done = allocate_volumes(&w.store, &big).await.unwrap();
        assert_eq!(done.volumes[0].pool_id, zone_wide.to_string());
        assert_eq!(done.volumes[1].pool_id, zone_wide.to_string());
        assert_eq!(w.allocated(zone_wide).await, 200 * GIB);

        // Now only the cluster's pool has room for 2 + 90 GiB, both volumes there.
        let mut next = w.request("db-2");
        next.cluster_id = Some(w.f.cluster.to_string());
        next.disk_offering_id = Some(w.custom.to_string());
        next.size_gb = Some(90);
        let done = allocate_volumes(&w.store, &next).await.unwrap();
        assert!(done.volumes.iter().all(|v| v.pool_id == w.pool.to_string()));
        assert_eq!(w.allocated(w.pool).await, 92 * GIB);

        // Unplaced (no cluster): any Up pool in the zone, the other cluster's
        // 1000 GiB pool the roomiest.
        let anywhere = w.request("web-2");
        let done = allocate_volumes(&w.store, &anywhere).await.unwrap();
        assert_eq!(done.volumes[0].pool_id, other_cluster.to_string());
        assert_eq!(w.allocated(down).await, 0);
    }

    #[tokio::test]
    async fn no_pool_with_room_fails_533_and_writes_nothing() {
        let w = World::new().await;
        let mut input = w.request("db-1");
        input.disk_offering_id = Some(w.custom.to_string());
        input.size_gb = Some(99); // 2 + 99 GiB > 100 GiB
        assert_eq!(
            failure(allocate_volumes(&w.store, &input).await),
            (533, insufficient_capacity_text(&input.vm_id))
        );
        assert_eq!(w.volume_count().await, 0);
        assert_eq!(w.allocated(w.pool).await, 0);
        // Exactly full is room enough.
        input.size_gb = Some(98);
        allocate_volumes(&w.store, &input).await.unwrap();
        assert_eq!(w.allocated(w.pool).await, 100 * GIB);
    }

    #[tokio::test]
    async fn the_same_step_twice_allocates_once() {
        let w = World::new().await;
        let mut input = w.request("db-1");
        input.disk_offering_id = Some(w.fixed.to_string());
        let first = allocate_volumes(&w.store, &input).await.unwrap();
        let pool_version = w
            .store
            .get::<StoragePool>(w.pool)
            .await
            .unwrap()
            .unwrap()
            .version;
        let second = allocate_volumes(&w.store, &input).await.unwrap();
        assert_eq!(first, second);
        assert_eq!(w.allocated(w.pool).await, 7 * GIB);
        assert_eq!(
            w.store
                .get::<StoragePool>(w.pool)
                .await
                .unwrap()
                .unwrap()
                .version,
            pool_version
        );
        assert_eq!(w.volume_count().await, 2);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_allocations_on_one_pool_both_count() {
        let w = World::new().await;
        let twice = |name: &str| {
            let mut input = w.request(name);
            input.disk_offering_id = Some(w.custom.to_string());
            input.size_gb = Some(10);
            input
        };
        let (a, b) = (twice("a"), twice("b"));
        // The same step's twin runs alongside too: it must not count twice.
        let (ra, rb, ra2) = tokio::join!(
            allocate_volumes(&w.store, &a),
            allocate_volumes(&w.store, &b),
            allocate_volumes(&w.store, &a),
        );
        assert_eq!(ra.unwrap(), ra2.unwrap());
        rb.unwrap();
        assert_eq!(w.allocated(w.pool).await, 2 * 12 * GIB);
        assert_eq!(w.volume_count().await, 4);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_allocations_never_overfill_a_pool() {
        let w = World::new().await;
        // 100 GiB, and each VM takes 2 + 40: only two fit.
        let inputs: Vec<_> = (0..4)
            .map(|i| {
                let mut input = w.request(&format!("vm-{i}"));
                input.disk_offering_id = Some(w.custom.to_string());
                input.size_gb = Some(40);
                input
            })
            .collect();
        let (r0, r1, r2, r3) = tokio::join!(
            allocate_volumes(&w.store, &inputs[0]),
            allocate_volumes(&w.store, &inputs[1]),
            allocate_volumes(&w.store, &inputs[2]),
            allocate_volumes(&w.store, &inputs[3]),
        );
        let results = [r0, r1, r2, r3];
        let ok = results.iter().filter(|r| r.is_ok()).count();
        assert_eq!(ok, 2);
        for r in results.into_iter().filter(|r| r.is_err()) {
            assert_eq!(failure(r).0, 533);
        }
        assert_eq!(w.allocated(w.pool).await, 84 * GIB);
        assert_eq!(w.volume_count().await, 4);
    }
}
