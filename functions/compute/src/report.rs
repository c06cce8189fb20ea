//! Reconciling the store with a host agent's VM report (`agent.vm-report`),
//! as CloudStack's VM power-state sync does
//! (`VirtualMachinePowerStateSyncImpl`, and `VirtualMachineManagerImpl`'s
//! `handlePowerOffReportWithNoPendingJobsOnVM`):
//!
//! - A VM the store has `Running` on the host that a full report lacks
//!   (CloudStack's `PowerReportMissing`), or that a report says is
//!   `PowerOff`, was stopped behind the platform's back: it becomes
//!   `Stopped` (power off, no host, the host as its last host), its capacity
//!   is given back, and an alert of CloudStack's type `ALERT_TYPE_SYNC` (27)
//!   says so, with CloudStack's subject "VM state sync alert" and its text.
//!   CloudStack records no event for this (its usage event is not an
//!   `Event` row), so neither does Stratus.
//! - A VM the host reports that the store does not know, knows on another
//!   host (or on none), or knows as `Destroyed`, raises a user VM alert
//!   (`ALERT_TYPE_USERVM`, 8) naming the VM and the host, when the host says
//!   it runs or lists it in full. (CloudStack only logs "Unable to find
//!   matched VM in CloudStack DB"; an operator here gets an alert.) A
//!   `PowerOff` change for such a VM is the late echo of its stop.
//! - Other VMs the store has on the host take the reported power state.
//! - VMs in a transitional state (`Starting`, `Stopping`, `Expunging`,
//!   `Migrating`) are never touched: a saga is working on them (CloudStack
//!   likewise leaves VMs with pending work jobs alone).
//!
//! The effects and the record that the message was handled are written in
//! one transaction (a report that stops more VMs than a DynamoDB transaction
//! holds is written in several, the record with the last), conditional on
//! the versions read: a saga that moved a VM meanwhile makes the round read
//! again. Alerts have ids derived from the message and the VM, so a
//! redelivered report raises nothing twice.

use std::collections::{BTreeMap, HashSet};

use chrono::{DateTime, Utc};
use stratus_contracts::message_types::agent::{self, VmReport};
use stratus_messaging::{Effects, Envelope, HandlerError};
use stratus_model::{Alert, Host, Id, PowerState, Reservation, Vm, VmState};
use stratus_store::{Index, Store, StoreError, Transaction, Versioned};
use uuid::Uuid;

use crate::{CONSUMER, capacity_key};

/// CloudStack's `AlertType.ALERT_TYPE_USERVM`.
pub const ALERT_USERVM: (u16, &str) = (8, "ALERT.USERVM");
/// CloudStack's `AlertType.ALERT_TYPE_SYNC`.
pub const ALERT_SYNC: (u16, &str) = (27, "ALERT.TYPE.SYNC");
/// CloudStack's `VirtualMachineManagerImpl.VM_SYNC_ALERT_SUBJECT`.
pub const VM_SYNC_ALERT_SUBJECT: &str = "VM state sync alert";

/// Alerts raised for a report have ids derived from (message, VM) in this namespace.
const ALERT_NAMESPACE: Uuid = Uuid::from_u128(0xc0a1_e7a5_3b2d_4c6e_9f10_0000_0000_5c01);

/// Rounds of read-and-write when sagas keep moving the host's VMs.
const MAX_ROUNDS: u32 = 5;

/// Writes per transaction, well inside DynamoDB's 100 items with the index
/// counters each write brings.
const MAX_WRITES: usize = 60;

fn transient(e: StoreError) -> HandlerError {
    HandlerError::Transient(format!("the data service: {e}"))
}

fn model_power(p: agent::PowerState) -> PowerState {
    match p {
        agent::PowerState::PowerOn => PowerState::PowerOn,
        agent::PowerState::PowerOff => PowerState::PowerOff,
    }
}

/// A VM stopped behind the platform's back: its new value, the reservation
/// to give back, and the sync alert.
struct Stop {
    vm: Versioned<Vm>,
    reservation: Option<Versioned<Reservation>>,
    alert: Alert,
}

enum Change {
    Stop(Box<Stop>),
    /// Only the power state changes.
    Power(Box<Versioned<Vm>>),
    Alert(Alert),
}

impl Change {
    fn writes(&self) -> usize {
        match self {
            Change::Stop(s) => 2 + usize::from(s.reservation.is_some()),
            Change::Power(_) | Change::Alert(_) => 1,
        }
    }
}

/// What one round found to do.
#[derive(Default)]
struct Plan {
    changes: Vec<Change>,
    stopped: usize,
    alerts: usize,
}

fn alert_id(message_id: Uuid, vm_id: &str) -> Id<Alert> {
    Id::derived(ALERT_NAMESPACE, &format!("{message_id}/{vm_id}"))
}

/// Handles one `agent.vm-report`; a duplicate is a success with no effect.
pub async fn reconcile(
    store: &Store,
    env: &Envelope,
    report: &VmReport,
) -> Result<Effects, HandlerError> {
    let message_id = env.message_id;
    if store
        .was_handled(CONSUMER, message_id)
        .await
        .map_err(transient)?
    {
        tracing::info!(%message_id, host = %report.host_name, "VM report handled before");
        return Ok(Effects::new());
    }
    let host = store
        .walk::<Host>(&Index::All)
        .await
        .map_err(transient)?
        .into_iter()
        .map(|h| h.value)
        .find(|h| h.name == report.host_name)
        // Its agent may report before the host is stored: try again later.
        .ok_or_else(|| {
            HandlerError::Transient(format!("no host is named {:?}", report.host_name))
        })?;
    for round in 1..=MAX_ROUNDS {
        let plan = plan(store, message_id, env.created_at, &host, report, Utc::now())
            .await
            .map_err(transient)?;
        if plan.changes.is_empty() {
            tracing::debug!(%message_id, host = %host.name, full = report.full, vms = report.vms.len(), "VM report: nothing to change");
            return Ok(Effects::new());
        }
        let (stopped, alerts) = (plan.stopped, plan.alerts);
        match apply(store, message_id, plan.changes).await {
            Ok(()) => {
                tracing::info!(%message_id, host = %host.name, full = report.full, vms = report.vms.len(), stopped, alerts, "VM report reconciled");
                return Ok(Effects::new());
            }
            Err(e) if e.is_duplicate() => {
                tracing::info!(%message_id, host = %host.name, "VM report handled meanwhile");
                return Ok(Effects::new());
            }
            Err(e) if e.is_conflict() => {
                tracing::debug!(%message_id, host = %host.name, round, error = %e, "a VM or the host moved meanwhile; reading again");
            }
            Err(e) => return Err(transient(e)),
        }
    }
    Err(HandlerError::Transient(format!(
        "host {}'s VMs kept changing over {MAX_ROUNDS} rounds",
        host.name
    )))
}

/// Reads what the report means for the store now.
async fn plan(
    store: &Store,
    message_id: Uuid,
    made: DateTime<Utc>,
    host: &Host,
    report: &VmReport,
    now: DateTime<Utc>,
) -> Result<Plan, StoreError> {
    // A report tells what the host held when it was made: a VM whose state
    // changed after that (a start that finished meanwhile) is not judged by it.
    let newer = |v: &Vm| v.state_changed.is_some_and(|t| t > made);
    // The last word on a VM wins.
    let reported: BTreeMap<&str, agent::PowerState> = report
        .vms
        .iter()
        .map(|v| (v.vm_id.as_str(), v.power_state))
        .collect();
    let mut plan = Plan::default();
    let mut decided: HashSet<Id<Vm>> = HashSet::new();

    if report.full {
        for listed in store.walk::<Vm>(&Index::Host(host.id.uuid())).await? {
            // A fresh read: an index may lag behind its objects.
            let Some(vm) = store.get::<Vm>(listed.value.id).await? else {
                continue;
            };
            if vm.value.host_id != Some(host.id)
                || vm.value.state != VmState::Running
                || newer(&vm.value)
            {
                continue;
            }
            let power = reported.get(vm.value.id.to_string().as_str()).copied();
            if power != Some(agent::PowerState::PowerOn) {
                decided.insert(vm.value.id);
                push_stop(store, &mut plan, message_id, host, vm, power, now).await?;
            }
        }
    }

    for (&vm_id, &power) in &reported {
        let id = vm_id.parse::<Id<Vm>>().ok();
        if id.is_some_and(|id| decided.contains(&id)) {
            continue;
        }
        let found = match id {
            Some(id) => store.get::<Vm>(id).await?,
            None => None,
        };
        let Some(mut vm) = found else {
            let subject = format!(
                "VM {vm_id} reported {power:?} by host {} (id:{}) is unknown",
                host.name, host.id
            );
            push_alert(
                store,
                &mut plan,
                message_id,
                host,
                vm_id,
                ALERT_USERVM,
                subject,
                now,
            )
            .await?;
            continue;
        };
        let v = &vm.value;
        if newer(v) {
            tracing::debug!(vm_id, "VM changed after the report was made: left as it is");
            continue;
        }
        if matches!(
            v.state,
            VmState::Starting | VmState::Stopping | VmState::Expunging | VmState::Migrating
        ) {
            tracing::debug!(vm_id, state = ?v.state, "VM in transition: left to its saga");
            continue;
        }
        if v.state == VmState::Destroyed || v.host_id != Some(host.id) {
            if power == agent::PowerState::PowerOn || report.full {
                let known = match (v.state, v.host_id) {
                    (VmState::Destroyed, _) => "Destroyed".to_string(),
                    (state, Some(other)) => format!("{state:?} on host {other}"),
                    (state, None) => format!("{state:?} on no host"),
                };
                let subject = format!(
                    "VM {} ({vm_id}) reported {power:?} by host {} (id:{}) is {known}",
                    v.name, host.name, host.id
                );
                push_alert(
                    store,
                    &mut plan,
                    message_id,
                    host,
                    vm_id,
                    ALERT_USERVM,
                    subject,
                    now,
                )
                .await?;
            }
            continue;
        }
        if v.state == VmState::Running && power == agent::PowerState::PowerOff {
            push_stop(store, &mut plan, message_id, host, vm, Some(power), now).await?;
            continue;
        }
        if v.power_state != model_power(power) {
            vm.value.power_state = model_power(power);
            plan.changes.push(Change::Power(Box::new(vm)));
        }
    }
    Ok(plan)
}

/// Adds the stop of a Running VM to the plan, unless this message stopped
/// it before (its alert exists: the VM running again is a later start).
async fn push_stop(
    store: &Store,
    plan: &mut Plan,
    message_id: Uuid,
    host: &Host,
    mut vm: Versioned<Vm>,
    power: Option<agent::PowerState>,
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    let vm_id = vm.value.id.to_string();
    let id = alert_id(message_id, &vm_id);
    if store.get::<Alert>(id).await?.is_some() {
        return Ok(());
    }
    let reservation = store
        .get::<Reservation>(Reservation::id_for(&capacity_key(&vm_id)))
        .await?;
    let from = vm.value.state;
    tracing::info!(vm_id, host = %host.name, reported = ?power, "VM stopped out of band: syncing it to Stopped");
    let alert = Alert {
        id,
        alert_type: ALERT_SYNC.0,
        name: ALERT_SYNC.1.into(),
        // CloudStack's subject, then the text it sends with it (the VM's
        // name and, for its instance name, the id).
        subject: format!(
            "{VM_SYNC_ALERT_SUBJECT}: VM {}({vm_id}) state is sync-ed ({from:?} -> Stopped) from out-of-context transition.",
            vm.value.name
        ),
        zone_id: host.zone_id,
        pod_id: Some(host.pod_id),
        sent: now,
    };
    let v = &mut vm.value;
    v.state = VmState::Stopped;
    v.power_state = PowerState::PowerOff;
    v.last_host_id = Some(host.id);
    v.host_id = None;
    v.host_name = None;
    v.state_changed = Some(now);
    plan.stopped += 1;
    plan.changes.push(Change::Stop(Box::new(Stop {
        vm,
        reservation,
        alert,
    })));
    Ok(())
}

/// Adds an alert about a VM the host should not hold, unless this message raised it before.
#[allow(clippy::too_many_arguments)]
async fn push_alert(
    store: &Store,
    plan: &mut Plan,
    message_id: Uuid,
    host: &Host,
    vm_id: &str,
    (alert_type, name): (u16, &str),
    subject: String,
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    let id = alert_id(message_id, vm_id);
    if store.get::<Alert>(id).await?.is_some() {
        return Ok(());
    }
    tracing::warn!(vm_id, host = %host.name, "{subject}");
    plan.alerts += 1;
    plan.changes.push(Change::Alert(Alert {
        id,
        alert_type,
        name: name.into(),
        subject,
        zone_id: host.zone_id,
        pod_id: Some(host.pod_id),
        sent: now,
    }));
    Ok(())
}

/// Writes the changes, the handled record with the last transaction.
async fn apply(store: &Store, message_id: Uuid, changes: Vec<Change>) -> Result<(), StoreError> {
    let mut chunks: Vec<Vec<Change>> = vec![Vec::new()];
    let mut writes = 0;
    for change in changes {
        let n = change.writes();
        if writes + n > MAX_WRITES && !chunks.last().is_some_and(Vec::is_empty) {
            chunks.push(Vec::new());
            writes = 0;
        }
        writes += n;
        if let Some(last) = chunks.last_mut() {
            last.push(change);
        }
    }
    let count = chunks.len();
    for (i, chunk) in chunks.into_iter().enumerate() {
        let mut tx = Transaction::new();
        // What each host gets back, written once per host.
        let mut give_back: BTreeMap<Id<Host>, (u64, u64)> = BTreeMap::new();
        for change in &chunk {
            match change {
                Change::Stop(s) => {
                    tx.update(&s.vm);
                    if let Some(r) = &s.reservation {
                        tx.delete(r);
                        let back = give_back.entry(r.value.host_id).or_default();
                        back.0 += r.value.cpu;
                        back.1 += r.value.memory;
                    }
                    tx.create(&s.alert);
                }
                Change::Power(vm) => {
                    tx.update(vm.as_ref());
                }
                Change::Alert(a) => {
                    tx.create(a);
                }
            }
        }
        for (host_id, (cpu, memory)) in give_back {
            if let Some(mut h) = store.get::<Host>(host_id).await? {
                h.value.cpu_allocated = h.value.cpu_allocated.saturating_sub(cpu);
                h.value.memory_allocated = h.value.memory_allocated.saturating_sub(memory);
                tx.update(&h);
            }
        }
        if i + 1 == count {
            tx.mark_handled(CONSUMER, message_id);
        }
        store.transact(tx).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::*;
    use stratus_contracts::message_types::agent::VmPower;
    use stratus_model::samples::Sample;

    async fn vm(w: &World, host: &Host, state: VmState) -> Vm {
        let mut f = w.fixture.clone();
        f.host = host.id;
        let vm = Vm {
            state,
            host_name: Some(host.name.clone()),
            ..Vm::sample(&f)
        };
        let vm = w.store.create(&vm).await.unwrap().value;
        // Its capacity, as its deploy held it.
        w.store
            .reserve_capacity(
                &capacity_key(&vm.id.to_string()),
                host.id,
                500,
                1024 << 20,
                1.0,
                1.0,
            )
            .await
            .unwrap();
        vm
    }

    fn report(host: &Host, full: bool, vms: &[(&Vm, agent::PowerState)]) -> Envelope {
        Envelope::new(
            agent::VM_REPORT,
            &VmReport {
                host_name: host.name.clone(),
                full,
                vms: vms
                    .iter()
                    .map(|(v, p)| VmPower {
                        vm_id: v.id.to_string(),
                        power_state: *p,
                    })
                    .collect(),
            },
        )
    }

    async fn deliver(w: &World, env: &Envelope) {
        let body: VmReport = env.body().unwrap();
        assert!(reconcile(&w.store, env, &body).await.unwrap().is_empty());
    }

    async fn get(w: &World, vm: &Vm) -> Vm {
        w.store.get::<Vm>(vm.id).await.unwrap().unwrap().value
    }

    async fn alerts(w: &World) -> Vec<Alert> {
        w.store
            .walk::<Alert>(&Index::All)
            .await
            .unwrap()
            .into_iter()
            .map(|a| a.value)
            .collect()
    }

    async fn allocated(w: &World, h: &Host) -> (u64, u64) {
        let h = w.store.get::<Host>(h.id).await.unwrap().unwrap().value;
        (h.cpu_allocated, h.memory_allocated)
    }

    #[tokio::test]
    async fn a_report_made_before_a_vm_started_does_not_stop_it() {
        let w = World::new().await;
        let host = w.host("h1", |_| {}).await;
        // The report is made; then a deploy finishes on the host.
        let env = report(&host, true, &[]);
        let started = vm(&w, &host, VmState::Running).await;
        let mut v = w.store.get::<Vm>(started.id).await.unwrap().unwrap();
        v.value.state_changed = Some(env.created_at + chrono::Duration::milliseconds(5));
        w.store.update(&v).await.unwrap();
        deliver(&w, &env).await;
        assert_eq!(get(&w, &started).await.state, VmState::Running);
        // A report made after the start does judge it.
        let later = report(&host, true, &[]);
        let mut later = later;
        later.created_at = env.created_at + chrono::Duration::seconds(1);
        deliver(&w, &later).await;
        assert_eq!(get(&w, &started).await.state, VmState::Stopped);
    }

    #[tokio::test]
    async fn a_running_vm_missing_from_a_full_report_is_stopped_once() {
        let w = World::new().await;
        let host = w.host("h1", |_| {}).await;
        let gone = vm(&w, &host, VmState::Running).await;
        let kept = vm(&w, &host, VmState::Running).await;
        assert_eq!(allocated(&w, &host).await, (1000, 2048 << 20));
        let env = report(&host, true, &[(&kept, agent::PowerState::PowerOn)]);
        deliver(&w, &env).await;
        deliver(&w, &env).await;

        let v = get(&w, &gone).await;
        assert_eq!(v.state, VmState::Stopped);
        assert_eq!(v.power_state, PowerState::PowerOff);
        assert_eq!((v.host_id, v.last_host_id), (None, Some(host.id)));
        assert!(v.host_name.is_none());
        assert!(v.state_changed.is_some());
        assert_eq!(get(&w, &kept).await.state, VmState::Running);
        // Exactly the gone VM's capacity came back.
        assert_eq!(allocated(&w, &host).await, (500, 1024 << 20));
        let key = capacity_key(&gone.id.to_string());
        assert!(
            w.store
                .get::<Reservation>(Reservation::id_for(&key))
                .await
                .unwrap()
                .is_none()
        );
        let a = alerts(&w).await;
        assert_eq!(a.len(), 1, "{a:?}");
        assert_eq!(
            (a[0].alert_type, a[0].name.as_str()),
            (27, "ALERT.TYPE.SYNC")
        );
        assert_eq!(
            a[0].subject,
            format!(
                "VM state sync alert: VM {}({}) state is sync-ed (Running -> Stopped) from out-of-context transition.",
                gone.name, gone.id
            )
        );
        assert_eq!(
            (a[0].zone_id, a[0].pod_id),
            (host.zone_id, Some(host.pod_id))
        );
        assert!(w.store.was_handled(CONSUMER, env.message_id).await.unwrap());
        // The same report under another message id changes nothing more.
        deliver(
            &w,
            &report(&host, true, &[(&kept, agent::PowerState::PowerOn)]),
        )
        .await;
        assert_eq!(alerts(&w).await.len(), 1);
        assert_eq!(allocated(&w, &host).await, (500, 1024 << 20));
    }

    #[tokio::test]
    async fn a_power_off_change_stops_a_running_vm_and_sets_power_states() {
        let w = World::new().await;
        let host = w.host("h1", |_| {}).await;
        let off = vm(&w, &host, VmState::Running).await;
        let mut stale = vm(&w, &host, VmState::Running).await;
        stale.power_state = PowerState::PowerUnknown;
        let v = w.store.get::<Vm>(stale.id).await.unwrap().unwrap();
        w.store
            .update(&Versioned {
                value: stale.clone(),
                version: v.version,
            })
            .await
            .unwrap();
        let untouched = vm(&w, &host, VmState::Running).await;
        deliver(
            &w,
            &report(
                &host,
                false,
                &[
                    (&off, agent::PowerState::PowerOff),
                    (&stale, agent::PowerState::PowerOn),
                ],
            ),
        )
        .await;
        assert_eq!(get(&w, &off).await.state, VmState::Stopped);
        let s = get(&w, &stale).await;
        assert_eq!(
            (s.state, s.power_state),
            (VmState::Running, PowerState::PowerOn)
        );
        // A partial report says nothing of the VMs it does not list.
        assert_eq!(get(&w, &untouched).await.state, VmState::Running);
        assert_eq!(allocated(&w, &host).await, (1000, 2048 << 20));
        assert_eq!(alerts(&w).await.len(), 1);
    }

    #[tokio::test]
    async fn an_unknown_vm_raises_a_user_vm_alert_once() {
        let w = World::new().await;
        let host = w.host("h1", |_| {}).await;
        let stranger = Vm::sample(&w.fixture); // never stored
        let env = report(&host, false, &[(&stranger, agent::PowerState::PowerOn)]);
        deliver(&w, &env).await;
        deliver(&w, &env).await;
        let a = alerts(&w).await;
        assert_eq!(a.len(), 1, "{a:?}");
        assert_eq!((a[0].alert_type, a[0].name.as_str()), (8, "ALERT.USERVM"));
        assert!(
            a[0].subject.contains(&stranger.id.to_string()),
            "{}",
            a[0].subject
        );
        assert!(a[0].subject.contains("h1"), "{}", a[0].subject);
        assert!(
            a[0].subject.contains(&host.id.to_string()),
            "{}",
            a[0].subject
        );
    }

    #[tokio::test]
    async fn a_vm_known_elsewhere_or_destroyed_raises_an_alert_when_it_runs() {
        let w = World::new().await;
        let h1 = w.host("h1", |_| {}).await;
        let h2 = w.host("h2", |_| {}).await;
        let elsewhere = vm(&w, &h2, VmState::Running).await;
        let destroyed = {
            let mut v = Vm::sample(&w.fixture);
            v.state = VmState::Destroyed;
            v.host_id = None;
            w.store.create(&v).await.unwrap().value
        };
        // The late echo of a stop: nothing to say.
        deliver(
            &w,
            &report(&h1, false, &[(&destroyed, agent::PowerState::PowerOff)]),
        )
        .await;
        assert!(alerts(&w).await.is_empty());
        deliver(
            &w,
            &report(
                &h1,
                false,
                &[
                    (&elsewhere, agent::PowerState::PowerOn),
                    (&destroyed, agent::PowerState::PowerOn),
                ],
            ),
        )
        .await;
        let a = alerts(&w).await;
        assert_eq!(a.len(), 2, "{a:?}");
        assert!(a.iter().all(|a| a.alert_type == 8));
        assert!(
            a.iter()
                .any(|a| a.subject.contains(&format!("Running on host {}", h2.id)))
        );
        assert!(a.iter().any(|a| a.subject.ends_with("is Destroyed")));
        // Neither VM changed.
        assert_eq!(get(&w, &elsewhere).await.host_id, Some(h2.id));
        assert_eq!(allocated(&w, &h2).await, (500, 1024 << 20));
    }

    #[tokio::test]
    async fn a_vm_in_transition_is_left_alone() {
        let w = World::new().await;
        let host = w.host("h1", |_| {}).await;
        let starting = vm(&w, &host, VmState::Starting).await;
        let stopping = vm(&w, &host, VmState::Stopping).await;
        let before = allocated(&w, &host).await;
        deliver(&w, &report(&host, true, &[])).await;
        deliver(
            &w,
            &report(
                &host,
                false,
                &[
                    (&starting, agent::PowerState::PowerOff),
                    (&stopping, agent::PowerState::PowerOff),
                ],
            ),
        )
        .await;
        for v in [&starting, &stopping] {
            let now = w.store.get::<Vm>(v.id).await.unwrap().unwrap();
            assert_eq!((&now.value, now.version), (v, 1));
        }
        assert_eq!(allocated(&w, &host).await, before);
        assert!(alerts(&w).await.is_empty());
    }

    #[tokio::test]
    async fn a_full_report_stopping_many_vms_is_written_in_several_transactions() {
        let w = World::new().await;
        let host = w.host("h1", |_| {}).await;
        let mut vms = Vec::new();
        for _ in 0..45 {
            vms.push(vm(&w, &host, VmState::Running).await);
        }
        let env = report(&host, true, &[]);
        deliver(&w, &env).await;
        deliver(&w, &env).await;
        for v in &vms {
            assert_eq!(get(&w, v).await.state, VmState::Stopped);
        }
        assert_eq!(allocated(&w, &host).await, (0, 0));
        assert_eq!(alerts(&w).await.len(), 45);
        assert_eq!(w.store.count::<Reservation>(&Index::All).await.unwrap(), 0);
    }

    #[tokio::test]
    async fn a_report_from_an_unknown_host_is_retried() {
        let w = World::new().await;
        let host = Host::sample(&w.fixture); // never stored
        let env = report(&host, true, &[]);
        let body: VmReport = env.body().unwrap();
        let e = reconcile(&w.store, &env, &body).await.unwrap_err();
        assert!(matches!(e, HandlerError::Transient(_)), "{e}");
    }
}
