//! Placement: which host a VM runs on, and the CPU and memory it holds there.
//!
//! A host is a candidate when it is in the VM's zone, of type `Routing`,
//! `Up` (the fabric monitor's view of its agent) and `Enabled`, its cluster
//! and pod allocation-state `Enabled`, it carries every host tag of the
//! offering, and, with Consul configured, its agent's check passes now (the
//! fabric monitor's `Up` can be up to a sweep old). With `hostid`, only that
//! host is considered.
//!
//! Room is decided by the store's `reserve_capacity`, atomically, against the
//! host's capacity times its cluster's `cpu.overprovisioning.factor` and
//! `mem.overprovisioning.factor`. Deploys run concurrently, so the pick is
//! spread: candidates are ranked by free memory (after the factors) and one
//! of the best few is taken at random; a host found full meanwhile is dropped
//! and another picked. The reservation's key is `vm/<vm_id>/host`, so a
//! repeated step finds what the first one held and answers the same placement.

use std::collections::{HashMap, HashSet};

use serde_json::{Value, json};
use stratus_contracts::message_types::saga::{self, StepRef};
use stratus_contracts::message_types::{Placement, compute};
use stratus_contracts::names::AGENT_SERVICE;
use stratus_contracts::settings::{Scope, ScopeId, Setting, SettingsSource, names};
use stratus_discovery::QueryOptions;
use stratus_messaging::Envelope;
use stratus_messaging::step::StepError;
use stratus_model::{
    AllocationState, Cluster, Host, HostState, Id, Object, Pod, Reservation, ResourceState, Zone,
};
use stratus_store::{Index, Store, StoreError};

use crate::{Compute, capacity_key};

/// Reservation attempts per placement: each one that finds its host full
/// drops that host. Past this, with hosts left, the step is retried later
/// (the race is fierce enough that fresh reads are worth more than more tries).
pub const MAX_TRIES: usize = 10;

/// How many of the best-ranked hosts a placement picks from at random, so
/// that concurrent deploys do not all race for the one emptiest host.
pub const SPREAD: usize = 3;

/// The host type of hypervisor hosts, the only ones VMs are placed on.
const ROUTING: &str = "Routing";

fn transient(e: StoreError) -> StepError {
    StepError::transient(format!("the data service: {e}"))
}

/// What one VM asks of a host: MHz and bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Demand {
    pub cpu: u64,
    pub memory: u64,
}

impl Demand {
    pub fn of(input: &compute::ReserveCapacity) -> Self {
        Demand {
            cpu: u64::from(input.cpu_number) * u64::from(input.cpu_speed),
            memory: u64::from(input.memory_mb) * 1024 * 1024,
        }
    }
}

/// The offering's host tags (CloudStack's comma-separated `hosttags`).
pub fn parse_tags(tags: Option<&str>) -> Vec<String> {
    tags.unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(str::to_string)
        .collect()
}

/// A cluster's value of an overprovisioning factor: its own or the global
/// one, and the default when what is stored is not a valid factor (written
/// straight into the KV, around `updateConfiguration`'s checks).
pub fn factor(
    settings: &dyn SettingsSource,
    setting: &'static Setting,
    cluster: Id<Cluster>,
) -> f64 {
    let at = ScopeId {
        scope: Scope::Cluster,
        id: cluster.to_string(),
    };
    let value = settings.value_in(setting, &at);
    setting
        .validate(&value)
        .ok()
        .and_then(|()| value.trim().parse::<f64>().ok())
        .filter(|f| f.is_finite() && *f > 0.0)
        .unwrap_or_else(|| setting.default.parse().unwrap_or(1.0))
}

/// Where a VM placed on `host` runs.
pub fn placement_of(host: &Host) -> Placement {
    Placement {
        zone_id: host.zone_id.to_string(),
        pod_id: host.pod_id.to_string(),
        cluster_id: host.cluster_id.to_string(),
        host_id: host.id.to_string(),
        host_name: host.name.clone(),
    }
}

/// The host's own conditions: zone, type, state, resource state, tags.
fn host_usable(h: &Host, zone: Id<Zone>, tags: &[String]) -> bool {
    h.zone_id == zone
        && h.host_type == ROUTING
        && h.state == HostState::Up
        && h.resource_state == ResourceState::Enabled
        && tags.iter().all(|t| h.host_tags.contains(t))
}

/// The hosts whose own conditions hold and whose cluster and pod are Enabled.
async fn eligible(
    store: &Store,
    hosts: Vec<Host>,
    zone: Id<Zone>,
    tags: &[String],
) -> Result<Vec<Host>, StepError> {
    let mut clusters: HashMap<Id<Cluster>, bool> = HashMap::new();
    let mut pods: HashMap<Id<Pod>, bool> = HashMap::new();
    let mut out = Vec::new();
    for h in hosts {
        if !host_usable(&h, zone, tags) {
            continue;
        }
        let cluster_ok = match clusters.get(&h.cluster_id) {
            Some(ok) => *ok,
            None => {
                let ok = store
                    .get::<Cluster>(h.cluster_id)
                    .await
                    .map_err(transient)?
                    .is_some_and(|c| c.value.allocation_state == AllocationState::Enabled);
                clusters.insert(h.cluster_id, ok);
                ok
            }
        };
        let pod_ok = match pods.get(&h.pod_id) {
            Some(ok) => *ok,
            None => {
                let ok = store
                    .get::<Pod>(h.pod_id)
                    .await
                    .map_err(transient)?
                    .is_some_and(|p| p.value.allocation_state == AllocationState::Enabled);
                pods.insert(h.pod_id, ok);
                ok
            }
        };
        if cluster_ok && pod_ok {
            out.push(h);
        }
    }
    Ok(out)
}

/// The names of the hosts whose agent passes every check in Consul now
/// (one `health/service` call; agents name their host in `Meta.host`).
async fn healthy_agents(consul: &stratus_discovery::Client) -> Result<HashSet<String>, StepError> {
    let entries = consul
        .health_service(AGENT_SERVICE, true, &QueryOptions::default())
        .await
        .map_err(|e| {
            if e.is_transient() {
                StepError::transient(e)
            } else {
                StepError::internal(format!("reading the host agents' health: {e}"))
            }
        })?
        .value;
    Ok(entries
        .into_iter()
        .filter(|e| e.checks.iter().all(|c| c.status == "passing"))
        .filter_map(|e| e.service.meta.and_then(|m| m.get("host").cloned()))
        .collect())
}

/// A candidate with its cluster's factors and its free memory after them.
struct Ranked {
    host: Host,
    cpu_factor: f64,
    memory_factor: f64,
    free_memory: u64,
}

/// The candidates that look as if `demand` fits (the store decides), best first.
fn rank(settings: &dyn SettingsSource, hosts: Vec<Host>, demand: Demand) -> Vec<Ranked> {
    let mut ranked: Vec<Ranked> = hosts
        .into_iter()
        .filter_map(|host| {
            let cpu_factor = factor(settings, names::cpu_overprovisioning(), host.cluster_id);
            let memory_factor = factor(settings, names::mem_overprovisioning(), host.cluster_id);
            let cpu_limit =
                (f64::from(host.cpu_number) * f64::from(host.cpu_speed) * cpu_factor) as u64;
            let memory_limit = (host.memory_total as f64 * memory_factor) as u64;
            let free_cpu = cpu_limit.saturating_sub(host.cpu_allocated);
            let free_memory = memory_limit.saturating_sub(host.memory_allocated);
            (demand.cpu <= free_cpu && demand.memory <= free_memory).then_some(Ranked {
                host,
                cpu_factor,
                memory_factor,
                free_memory,
            })
        })
        .collect();
    ranked.sort_by_key(|r| std::cmp::Reverse(r.free_memory));
    ranked
}

/// The host a reservation names (it exists while the reservation does).
async fn holding_host(store: &Store, id: Id<Host>, vm_id: &str) -> Result<Host, StepError> {
    store
        .get::<Host>(id)
        .await
        .map_err(transient)?
        .map(|h| h.value)
        .ok_or_else(|| {
            StepError::internal(format!(
                "VM {vm_id} holds capacity on host {id}, which no longer exists"
            ))
        })
}

/// Holds `demand` on one of the ranked candidates: one of the best
/// [`SPREAD`] at random, dropping each found full meanwhile, at most
/// [`MAX_TRIES`] times. The host it holds on and the tries it took; None
/// when every candidate was full.
async fn hold(
    store: &Store,
    key: &str,
    vm_id: &str,
    mut ranked: Vec<Ranked>,
    demand: Demand,
) -> Result<Option<(Host, usize)>, StepError> {
    let mut tries = 0;
    while !ranked.is_empty() {
        if tries == MAX_TRIES {
            return Err(StepError::transient(format!(
                "VM {vm_id}: {MAX_TRIES} hosts filled up while placing it; {} candidates left",
                ranked.len()
            )));
        }
        tries += 1;
        let pick = rand::random_range(0..ranked.len().min(SPREAD));
        let r = &ranked[pick];
        match store
            .reserve_capacity(
                key,
                r.host.id,
                demand.cpu,
                demand.memory,
                r.cpu_factor,
                r.memory_factor,
            )
            .await
        {
            Ok(held) => {
                // A concurrent copy of this step may have held first, elsewhere:
                // the reservation, not the pick, says where the VM goes.
                let host = if held.value.host_id == r.host.id {
                    r.host.clone()
                } else {
                    holding_host(store, held.value.host_id, vm_id).await?
                };
                return Ok(Some((host, tries)));
            }
            Err(StoreError::Exhausted(why)) => {
                tracing::debug!(vm_id, host = %r.host.name, why, "host full meanwhile; picking another");
                ranked.remove(pick);
            }
            Err(StoreError::NotFound { kind, .. }) if kind == Host::KIND => {
                tracing::debug!(vm_id, host = %r.host.name, "host removed meanwhile; picking another");
                ranked.remove(pick);
            }
            Err(e) => return Err(transient(e)),
        }
    }
    Ok(None)
}

/// `compute.reserve-capacity`: the placement as the step's output. Sent as
/// an undo (which the protocol does not do: the undo is release-capacity),
/// it releases, which is what undoing a reservation means.
pub async fn reserve_step(
    c: &Compute,
    env: &Envelope,
    step: &saga::Step<compute::ReserveCapacity>,
) -> Result<Value, StepError> {
    if step.saga.undo {
        tracing::warn!(vm_id = %step.input.vm_id, saga_id = %step.saga.saga_id, "reserve-capacity sent as an undo: releasing the VM's capacity");
        return release(c, env, &step.saga, &step.input.vm_id).await;
    }
    let placement = reserve(c, env, &step.saga, &step.input).await?;
    serde_json::to_value(placement)
        .map_err(|e| StepError::internal(format!("encoding the placement: {e}")))
}

/// Places the VM and holds its capacity; see the module's documentation.
pub async fn reserve(
    c: &Compute,
    env: &Envelope,
    saga: &StepRef,
    input: &compute::ReserveCapacity,
) -> Result<Placement, StepError> {
    let store = &*c.store;
    let vm_id = input.vm_id.as_str();
    let job_id = env.job_id.as_deref().unwrap_or_default();
    let key = capacity_key(vm_id);
    let demand = Demand::of(input);

    // A repeated step: what the first one held.
    if let Some(held) = store
        .get::<Reservation>(Reservation::id_for(&key))
        .await
        .map_err(transient)?
    {
        let host = holding_host(store, held.value.host_id, vm_id).await?;
        tracing::info!(vm_id, saga_id = %saga.saga_id, job_id, host = %host.name, "capacity already held: the same placement");
        return Ok(placement_of(&host));
    }

    c.settings.refresh().await;
    let zone: Id<Zone> = input.zone_id.parse().map_err(|_| {
        StepError::internal(format!("the zone id {:?} is not a UUID", input.zone_id))
    })?;
    let tags = parse_tags(input.host_tags.as_deref());
    let hosts: Vec<Host> = match &input.host_id {
        Some(given) => {
            let found = match given.parse::<Id<Host>>() {
                Ok(id) => store.get::<Host>(id).await.map_err(transient)?,
                Err(_) => None,
            };
            let Some(host) = found else {
                return Err(StepError::failed(
                    431,
                    format!("Unable to find the host to deploy the VM, host id={given}"),
                ));
            };
            vec![host.value]
        }
        None => store
            .walk::<Host>(&Index::Zone(zone.uuid()))
            .await
            .map_err(transient)?
            .into_iter()
            .map(|h| h.value)
            .collect(),
    };
    let mut candidates = eligible(store, hosts, zone, &tags).await?;
    if !candidates.is_empty()
        && let Some(consul) = &c.consul
    {
        let healthy = healthy_agents(consul).await?;
        candidates.retain(|h| healthy.contains(&h.name));
    }
    let ranked = rank(c.settings.as_ref(), candidates, demand);
    tracing::debug!(vm_id, saga_id = %saga.saga_id, job_id, candidates = ranked.len(), cpu = demand.cpu, memory = demand.memory, "placing");

    if let Some((host, tries)) = hold(store, &key, vm_id, ranked, demand).await? {
        tracing::info!(vm_id, saga_id = %saga.saga_id, job_id, host = %host.name, host_id = %host.id, tries, cpu = demand.cpu, memory = demand.memory, "capacity held");
        return Ok(placement_of(&host));
    }
    tracing::warn!(vm_id, saga_id = %saga.saga_id, job_id, zone_id = %zone, host_id = ?input.host_id, host_tags = ?input.host_tags, cpu = demand.cpu, memory = demand.memory, "no host has room");
    Err(StepError::failed(
        533,
        saga::insufficient_capacity_text(vm_id),
    ))
}

/// `compute.release-capacity`: gives back what the VM holds; safe to repeat
/// and when nothing was held. Output `{}`.
pub async fn release(
    c: &Compute,
    env: &Envelope,
    saga: &StepRef,
    vm_id: &str,
) -> Result<Value, StepError> {
    let retries = c
        .store
        .release_capacity(&capacity_key(vm_id))
        .await
        .map_err(transient)?;
    tracing::info!(vm_id, saga_id = %saga.saga_id, job_id = env.job_id.as_deref().unwrap_or_default(), undo = saga.undo, retries, "capacity released");
    Ok(json!({}))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::*;
    use stratus_contracts::message_types::saga::{Outcome, StepResult};

    const GIB: u64 = 1 << 30;

    fn ask(w: &World, mb: u32) -> compute::ReserveCapacity {
        compute::ReserveCapacity {
            vm_id: uuid::Uuid::new_v4().to_string(),
            zone_id: w.zone.to_string(),
            cpu_number: 1,
            cpu_speed: 500,
            memory_mb: mb,
            host_tags: None,
            host_id: None,
        }
    }

    async fn place(c: &Compute, input: &compute::ReserveCapacity) -> Result<Placement, StepError> {
        let env = Envelope::new(compute::RESERVE_CAPACITY, input);
        reserve(c, &env, &step_ref(false), input).await
    }

    async fn allocated(w: &World, h: &Host) -> (u64, u64) {
        let h = w.store.get::<Host>(h.id).await.unwrap().unwrap().value;
        (h.cpu_allocated, h.memory_allocated)
    }

    fn no_room(vm_id: &str) -> StepError {
        StepError::failed(533, saga::insufficient_capacity_text(vm_id))
    }

    #[tokio::test]
    async fn only_up_enabled_hosts_in_enabled_clusters_and_pods_are_used() {
        let w = World::new().await;
        let good = w.host("good", |_| {}).await;
        w.host("down", |h| h.state = HostState::Down).await;
        w.host("alert", |h| h.state = HostState::Alert).await;
        w.host("disabled", |h| h.resource_state = ResourceState::Disabled)
            .await;
        w.host("maintenance", |h| {
            h.resource_state = ResourceState::Maintenance
        })
        .await;
        w.host("storage", |h| h.host_type = "Storage".into()).await;
        let off_cluster = w.cluster(AllocationState::Disabled, w.pod).await;
        w.host("in-disabled-cluster", |h| h.cluster_id = off_cluster)
            .await;
        let off_pod = w.pod(AllocationState::Disabled).await;
        let cluster_in_off_pod = w.cluster(AllocationState::Enabled, off_pod).await;
        w.host("in-disabled-pod", |h| {
            h.pod_id = off_pod;
            h.cluster_id = cluster_in_off_pod;
        })
        .await;
        let c = w.compute(FixedSettings::default(), None);
        for _ in 0..8 {
            let p = place(&c, &ask(&w, 512)).await.unwrap();
            assert_eq!(p.host_name, "good");
            assert_eq!(p.host_id, good.id.to_string());
            assert_eq!(p.cluster_id, w.cluster.to_string());
            assert_eq!(p.pod_id, w.pod.to_string());
            assert_eq!(p.zone_id, w.zone.to_string());
        }
        assert_eq!(allocated(&w, &good).await, (8 * 500, (8 * 512) << 20));
    }

    #[tokio::test]
    async fn a_host_whose_agent_fails_in_consul_now_is_not_used() {
        let w = World::new().await;
        w.host("h1", |_| {}).await;
        w.host("h2", |_| {}).await;
        let consul = FakeConsul::start(&["h2"]).await;
        let c = w.compute(FixedSettings::default(), Some(consul.client()));
        for _ in 0..6 {
            assert_eq!(place(&c, &ask(&w, 256)).await.unwrap().host_name, "h2");
        }
        // No agent passes: nothing fits.
        let consul = FakeConsul::start(&[]).await;
        let c = w.compute(FixedSettings::default(), Some(consul.client()));
        let input = ask(&w, 256);
        assert_eq!(place(&c, &input).await.unwrap_err(), no_room(&input.vm_id));
    }

    #[tokio::test]
    async fn host_tags_require_every_tag() {
        let w = World::new().await;
        w.host("ssd", |h| h.host_tags = vec!["ssd".into()]).await;
        w.host("ssd-gpu", |h| {
            h.host_tags = vec!["gpu".into(), "ssd".into()]
        })
        .await;
        w.host("plain", |_| {}).await;
        let c = w.compute(FixedSettings::default(), None);
        for _ in 0..5 {
            let mut input = ask(&w, 256);
            input.host_tags = Some(" ssd ,gpu".into());
            assert_eq!(place(&c, &input).await.unwrap().host_name, "ssd-gpu");
        }
        let mut seen = HashSet::new();
        for _ in 0..20 {
            let mut input = ask(&w, 256);
            input.host_tags = Some("ssd".into());
            seen.insert(place(&c, &input).await.unwrap().host_name);
        }
        assert!(!seen.contains("plain"), "{seen:?}");
        let mut input = ask(&w, 256);
        input.host_tags = Some("nvme".into());
        assert_eq!(place(&c, &input).await.unwrap_err(), no_room(&input.vm_id));
    }

    #[tokio::test]
    async fn hostid_places_there_or_fails() {
        let w = World::new().await;
        w.host("big", |h| h.memory_total = 64 * GIB).await;
        let small = w.host("small", |h| h.memory_total = GIB).await;
        let down = w.host("down", |h| h.state = HostState::Down).await;
        let c = w.compute(FixedSettings::default(), None);

        let mut input = ask(&w, 1024);
        input.host_id = Some(small.id.to_string());
        assert_eq!(place(&c, &input).await.unwrap().host_name, "small");
        // Full now.
        let mut input = ask(&w, 1024);
        input.host_id = Some(small.id.to_string());
        assert_eq!(place(&c, &input).await.unwrap_err(), no_room(&input.vm_id));
        // Not usable.
        let mut input = ask(&w, 256);
        input.host_id = Some(down.id.to_string());
        assert_eq!(place(&c, &input).await.unwrap_err(), no_room(&input.vm_id));
        // Unknown, or not an id at all: 431.
        for given in [Id::<Host>::new().to_string(), "nope".to_string()] {
            let mut input = ask(&w, 256);
            input.host_id = Some(given.clone());
            assert_eq!(
                place(&c, &input).await.unwrap_err(),
                StepError::failed(
                    431,
                    format!("Unable to find the host to deploy the VM, host id={given}")
                )
            );
            assert!(!holds(&w, &input.vm_id).await);
        }
    }

    #[tokio::test]
    async fn overprovisioning_factors_are_the_clusters_own() {
        let w = World::new().await;
        let other = w.cluster(AllocationState::Enabled, w.pod).await;
        // 2 x 1000 MHz and 4 GiB each.
        let shape = |h: &mut Host| {
            h.cpu_number = 2;
            h.cpu_speed = 1000;
            h.memory_total = 4 * GIB;
        };
        let a = w.host("a", shape).await;
        let b = w
            .host("b", |h| {
                shape(h);
                h.cluster_id = other;
            })
            .await;
        let mut settings = FixedSettings::default();
        settings.set_in("mem.overprovisioning.factor", w.cluster, "2.0");
        settings.set_in("cpu.overprovisioning.factor", other, "1.5");
        let c = w.compute(settings, None);
        // Memory: 8 x 1 GiB fit on a (factor 2), 4 on b (global 1.0).
        let mut on = HashMap::<String, u32>::new();
        loop {
            let mut input = ask(&w, 1024);
            input.cpu_speed = 100;
            match place(&c, &input).await {
                Ok(p) => *on.entry(p.host_name).or_default() += 1,
                Err(e) => {
                    assert_eq!(e, no_room(&input.vm_id));
                    break;
                }
            }
        }
        assert_eq!((on["a"], on["b"]), (8, 4));
        assert_eq!(allocated(&w, &a).await.1, 8 * GIB);
        assert_eq!(allocated(&w, &b).await.1, 4 * GIB);

        // CPU: 3 x 1000 MHz fit on a host of b's cluster (factor 1.5), 2 on a's.
        let w = World::new().await;
        let other = w.cluster(AllocationState::Enabled, w.pod).await;
        w.host("a", shape).await;
        w.host("b", |h| {
            shape(h);
            h.cluster_id = other;
        })
        .await;
        let mut settings = FixedSettings::default();
        settings.set_in("cpu.overprovisioning.factor", other, "1.5");
        // A value updateConfiguration would refuse counts as the default.
        settings.set_in("cpu.overprovisioning.factor", w.cluster, "-3");
        let c = w.compute(settings, None);
        let mut on = HashMap::<String, u32>::new();
        loop {
            let mut input = ask(&w, 16);
            input.cpu_speed = 1000;
            match place(&c, &input).await {
                Ok(p) => *on.entry(p.host_name).or_default() += 1,
                Err(_) => break,
            }
        }
        assert_eq!((on["a"], on["b"]), (2, 3));
    }

    async fn holds(w: &World, vm_id: &str) -> bool {
        w.store
            .get::<Reservation>(Reservation::id_for(&capacity_key(vm_id)))
            .await
            .unwrap()
            .is_some()
    }

    #[tokio::test]
    async fn the_zone_fills_then_533_and_nothing_is_held() {
        let w = World::new().await;
        let hosts = [
            w.host("h1", |h| h.memory_total = 2 * GIB).await,
            w.host("h2", |h| h.memory_total = 2 * GIB).await,
            w.host("h3", |h| h.memory_total = 2 * GIB).await,
        ];
        let c = w.compute(FixedSettings::default(), None);
        for _ in 0..6 {
            place(&c, &ask(&w, 1024)).await.unwrap();
        }
        let input = ask(&w, 1024);
        assert_eq!(place(&c, &input).await.unwrap_err(), no_room(&input.vm_id));
        assert!(!holds(&w, &input.vm_id).await);
        for h in &hosts {
            assert_eq!(allocated(&w, h).await, (1000, 2 * GIB));
        }
        assert_eq!(w.store.count::<Reservation>(&Index::All).await.unwrap(), 6);
    }

    #[tokio::test]
    async fn the_same_step_twice_holds_once() {
        let w = World::new().await;
        for n in ["h1", "h2", "h3"] {
            w.host(n, |_| {}).await;
        }
        let c = w.compute(FixedSettings::default(), None);
        let input = ask(&w, 2048);
        let first = place(&c, &input).await.unwrap();
        let again = place(&c, &input).await.unwrap();
        assert_eq!(first, again);
        let host: Id<Host> = first.host_id.parse().unwrap();
        let h = w.store.get::<Host>(host).await.unwrap().unwrap().value;
        assert_eq!((h.cpu_allocated, h.memory_allocated), (500, 2 * GIB));
        let all = w.store.walk::<Host>(&Index::All).await.unwrap();
        assert_eq!(
            all.iter().map(|h| h.value.memory_allocated).sum::<u64>(),
            2 * GIB
        );
    }

    #[tokio::test]
    async fn concurrent_reservations_spread_and_never_overfill() {
        let w = World::new().await;
        // Each host holds 5 VMs of 1 GiB.
        let hosts = [
            w.host("h1", |h| h.memory_total = 5 * GIB).await,
            w.host("h2", |h| h.memory_total = 5 * GIB).await,
            w.host("h3", |h| h.memory_total = 5 * GIB).await,
        ];
        let c = w.compute(FixedSettings::default(), None);
        let inputs: Vec<_> = (0..20).map(|_| ask(&w, 1024)).collect();
        let results = futures::future::join_all(inputs.iter().map(|i| place(&c, i))).await;
        let placed: Vec<&Placement> = results.iter().filter_map(|r| r.as_ref().ok()).collect();
        let used: HashSet<&str> = placed.iter().map(|p| p.host_name.as_str()).collect();
        assert!(used.len() > 1, "all on {used:?}");
        assert_eq!(placed.len(), 15);
        for (input, r) in inputs.iter().zip(&results) {
            if let Err(e) = r {
                assert_eq!(*e, no_room(&input.vm_id));
                assert!(!holds(&w, &input.vm_id).await);
            }
        }
        for h in &hosts {
            let (cpu, memory) = allocated(&w, h).await;
            assert!(memory <= 5 * GIB, "{} holds {memory}", h.name);
            let on_it = placed.iter().filter(|p| p.host_name == h.name).count() as u64;
            assert_eq!((cpu, memory), (on_it * 500, on_it * GIB));
        }
    }

    #[tokio::test]
    async fn concurrent_reservations_with_room_everywhere_do_not_pile_on_one_host() {
        let w = World::new().await;
        for n in ["h1", "h2", "h3"] {
            w.host(n, |_| {}).await;
        }
        let c = w.compute(FixedSettings::default(), None);
        let inputs: Vec<_> = (0..20).map(|_| ask(&w, 512)).collect();
        let results = futures::future::join_all(inputs.iter().map(|i| place(&c, i))).await;
        let mut on = HashMap::<String, usize>::new();
        for r in results {
            *on.entry(r.unwrap().host_name).or_default() += 1;
        }
        assert!(on.len() > 1, "all on one host: {on:?}");
        let all = w.store.walk::<Host>(&Index::All).await.unwrap();
        assert_eq!(
            all.iter().map(|h| h.value.memory_allocated).sum::<u64>(),
            (20 * 512) << 20
        );
    }

    #[tokio::test]
    async fn placements_that_read_the_same_stale_ranking_spread_out() {
        // As on DynamoDB or across instances: every placement ranked the
        // hosts when all were empty, before any of the others held.
        let w = World::new().await;
        let mut hosts = Vec::new();
        for n in ["h1", "h2", "h3"] {
            hosts.push(w.host(n, |_| {}).await);
        }
        let settings = FixedSettings::default();
        let demand = Demand {
            cpu: 500,
            memory: GIB,
        };
        let stale = rank(&settings, hosts.clone(), demand);
        let mut on = HashMap::<String, usize>::new();
        for i in 0..30 {
            let vm_id = format!("vm-{i}");
            let ranked = rank(&settings, hosts.clone(), demand);
            let (host, tries) = hold(&w.store, &capacity_key(&vm_id), &vm_id, ranked, demand)
                .await
                .unwrap()
                .unwrap();
            assert_eq!(tries, 1);
            *on.entry(host.name).or_default() += 1;
        }
        // Taking the first of the ranking would put all 30 on one host
        // (by chance: 3 x 3^-30).
        assert!(on.len() > 1, "{on:?}");

        // Hosts found full are dropped, and none left is None.
        for h in &hosts {
            let mut v = w.store.get::<Host>(h.id).await.unwrap().unwrap();
            v.value.memory_allocated = h.memory_total;
            w.store.update(&v).await.unwrap();
        }
        assert!(
            hold(&w.store, &capacity_key("late"), "late", stale, demand)
                .await
                .unwrap()
                .is_none()
        );
        assert!(!holds(&w, "late").await);
    }

    #[tokio::test]
    async fn releasing_twice_gives_back_exactly_once() {
        let w = World::new().await;
        let h = w.host("h1", |_| {}).await;
        let c = w.compute(FixedSettings::default(), None);
        let keep = ask(&w, 1024);
        place(&c, &keep).await.unwrap();
        let before = allocated(&w, &h).await;
        let input = ask(&w, 3000);
        place(&c, &input).await.unwrap();
        assert_eq!(
            allocated(&w, &h).await,
            (before.0 + 500, before.1 + (3000 << 20))
        );
        let env = Envelope::new(compute::RELEASE_CAPACITY, &input);
        for _ in 0..2 {
            let out = release(&c, &env, &step_ref(true), &input.vm_id)
                .await
                .unwrap();
            assert_eq!(out, json!({}));
            assert_eq!(allocated(&w, &h).await, before);
        }
        // Never held: harmless.
        release(&c, &env, &step_ref(true), "never-placed")
            .await
            .unwrap();
        assert_eq!(allocated(&w, &h).await, before);
    }

    #[tokio::test]
    async fn the_handlers_answer_with_step_results() {
        let w = World::new().await;
        let h = w.host("h1", |h| h.memory_total = GIB).await;
        let c = w.compute(FixedSettings::default(), None);
        let handlers = crate::handlers(c.store.clone(), c.settings.clone(), None);
        let call = |message_type: &'static str, body: Value| {
            let handlers = handlers.clone();
            async move {
                let effects = handlers
                    .call(Envelope::new(message_type, &body).with_job_id("job-1"))
                    .await
                    .unwrap();
                assert_eq!(effects.len(), 1);
                assert_eq!(effects[0].exchange, "stratus.events");
                serde_json::from_slice::<StepResult>(&effects[0].body).unwrap()
            }
        };
        let step = |input: Value, undo: bool| json!({"saga": step_ref(undo), "input": input});
        let input = ask(&w, 1024);
        let r = call(compute::RESERVE_CAPACITY, step(json!(input), false)).await;
        assert_eq!(r.saga, step_ref(false));
        let Outcome::Done { output } = r.outcome else {
            panic!("{r:?}")
        };
        let p: Placement = serde_json::from_value(output).unwrap();
        assert_eq!(
            (p.host_id, p.host_name),
            (h.id.to_string(), "h1".to_string())
        );

        let full = ask(&w, 1024);
        let r = call(compute::RESERVE_CAPACITY, step(json!(full), false)).await;
        assert_eq!(
            r.outcome,
            Outcome::Failed {
                code: 533,
                text: saga::insufficient_capacity_text(&full.vm_id)
            }
        );

        let r = call(
            compute::RELEASE_CAPACITY,
            step(json!({"vm_id": input.vm_id}), true),
        )
        .await;
        assert_eq!(r.outcome, Outcome::Done { output: json!({}) });
        assert_eq!(allocated(&w, &h).await, (0, 0));
    }

    #[test]
    fn tags_and_demand_parse() {
        assert_eq!(parse_tags(Some(" a, b ,,c ")), vec!["a", "b", "c"]);
        assert!(parse_tags(None).is_empty());
        assert!(parse_tags(Some(" , ")).is_empty());
        let d = Demand::of(&compute::ReserveCapacity {
            vm_id: "v".into(),
            zone_id: "z".into(),
            cpu_number: 4,
            cpu_speed: u32::MAX,
            memory_mb: u32::MAX,
            host_tags: None,
            host_id: None,
        });
        assert_eq!(d.cpu, 4 * u64::from(u32::MAX));
        assert_eq!(d.memory, u64::from(u32::MAX) << 20);
    }
}
