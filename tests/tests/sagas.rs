//! The generic saga tests, as omicron's saga test helpers do them
//! (`actions_succeed_idempotently`, `action_failure_can_unwind`,
//! `action_failure_can_unwind_idempotently`), generated from the VM sagas'
//! plans (`stratus_fn_orchestrator::vm::plan`) and run by the in-process
//! executor ([`stratus_tests::inproc`]) over the real store, the real
//! orchestrator, network, compute and storage handlers and simulated hosts.
//!
//! Saga kinds: deploy (startvm=true), deploy (startvm=false), deploy with a
//! data disk, destroy (expunge=false), destroy (expunge=true), expunge. For
//! every step of every kind's plan, three cases:
//!
//! 1. **idempotent**: every message is delivered twice in a row; the
//!    messages of the step under test (its command and its result, or for a
//!    local step the message that runs it) twice at once, as two consumers
//!    would, and once more after the saga ended (a late redelivery). The
//!    saga succeeds with exactly one effect.
//! 2. **unwinds**: the step fails (a remote step after its component really
//!    ran it: its `Done` result becomes `Failed{530, "injected"}`; a local
//!    step through the orchestrator's `Faults` hook). The job fails with the
//!    injected error and the clean slate holds: every Reservation,
//!    IpAddress, Nic, Volume, Network and VlanClaim row, every host's
//!    allocated CPU and memory, every pool's allocated size and every
//!    simulated host's VMs and volumes are as before the saga; a deploy's
//!    VM row is absent or `Error` with no host and no NICs.
//! 3. **unwinds idempotently**: as 2, with every undo command and undo
//!    result delivered twice at once.
//!
//! Destroy and expunge are forward-only sagas: only their first step
//! (`mark`) has an undo. For them a failure past `mark` is checked for the
//! job failing with the injected error, every step up to the failed one
//! undone (none `undo-failed`) and the VM back in its state or stopped (or,
//! once `mark-expunging` ran, `Expunging`, for the sweep to expunge it
//! again); what stays changed is printed as a note. A failure at `mark`
//! must leave the clean slate.
//!
//! Beyond the three properties: a late redelivery of an action command
//! after its saga unwound must be undone again (the engine resends the
//! undo on a late success); the checks themselves are checked by
//! sabotaging the flow; twenty deploys and their destroys interleaved in
//! one shuffled pump return every counter to the snapshot.
//!
//! Each case runs in its own world (fresh store and simulated hosts). The
//! account's default network (and its VLAN claim) is made by the first
//! deploy and stays; each world first deploys and expunges one VM so that
//! the network exists, and the snapshots are taken after that: Network and
//! VlanClaim rows are part of the clean slate.

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use stratus_contracts::message_types::vm::Deploy;
use stratus_fn_orchestrator::saga::{Run, saga_id_for_job};
use stratus_fn_orchestrator::vm;
use stratus_model::*;
use stratus_tests::inproc::{
    Delivery, INJECTED, INJECTED_CODE, Msg, MsgKind, Policy, PumpReport, Slate, World,
};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    DeployStarted,
    DeployStopped,
    DeployDataDisk,
    Destroy,
    DestroyExpunge,
    Expunge,
}

const KINDS: [Kind; 6] = [
    Kind::DeployStarted,
    Kind::DeployStopped,
    Kind::DeployDataDisk,
    Kind::Destroy,
    Kind::DestroyExpunge,
    Kind::Expunge,
];

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::DeployStarted => "deploy startvm=true",
            Kind::DeployStopped => "deploy startvm=false",
            Kind::DeployDataDisk => "deploy with a data disk",
            Kind::Destroy => "destroy expunge=false",
            Kind::DestroyExpunge => "destroy expunge=true",
            Kind::Expunge => "expunge",
        }
    }

    fn tag(self) -> &'static str {
        match self {
            Kind::DeployStarted => "dep",
            Kind::DeployStopped => "depstop",
            Kind::DeployDataDisk => "depdata",
            Kind::Destroy => "destroy",
            Kind::DestroyExpunge => "destroyx",
            Kind::Expunge => "expunge",
        }
    }

    fn saga_kind(self) -> &'static str {
        match self {
            Kind::DeployStarted | Kind::DeployStopped | Kind::DeployDataDisk => vm::DEPLOY,
            Kind::Destroy | Kind::DestroyExpunge => vm::DESTROY,
            Kind::Expunge => vm::EXPUNGE,
        }
    }

    fn is_deploy(self) -> bool {
        self.saga_kind() == vm::DEPLOY
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Property {
    Idempotent,
    Unwinds,
    UnwindsIdempotently,
}

const PROPERTIES: [Property; 3] = [
    Property::Idempotent,
    Property::Unwinds,
    Property::UnwindsIdempotently,
];

impl Property {
    fn name(self) -> &'static str {
        match self {
            Property::Idempotent => "actions succeed idempotently",
            Property::Unwinds => "action failure can unwind",
            Property::UnwindsIdempotently => "action failure can unwind idempotently",
        }
    }
}

#[derive(Clone, Debug)]
struct Case {
    kind: Kind,
    plan: Vec<&'static str>,
    index: usize,
    property: Property,
}

impl Case {
    fn step(&self) -> &'static str {
        self.plan[self.index]
    }

    fn def(&self) -> &'static stratus_fn_orchestrator::saga::StepDef {
        vm::definition(self.kind.saga_kind(), self.step()).expect("a step of the kind")
    }

    fn remote(&self) -> bool {
        self.def().action != Run::Local
    }

    fn label(&self) -> String {
        format!(
            "[{}] step {}/{} {} ({}): {}",
            self.kind.name(),
            self.index + 1,
            self.plan.len(),
            self.step(),
            if self.remote() { "remote" } else { "local" },
            self.property.name()
        )
    }

    /// The message that makes the orchestrator run a local step: the result
    /// of the nearest remote step before it, or the job's command.
    fn trigger(&self) -> Option<&'static str> {
        self.plan[..self.index].iter().rev().copied().find(|s| {
            vm::definition(self.kind.saga_kind(), s).is_some_and(|d| d.action != Run::Local)
        })
    }
}

/// A world where the saga of a kind is about to run.
struct Prepared {
    w: World,
    /// After the warm-up (the default network exists), before any VM.
    base: Slate,
    /// Just before the saga under test.
    before: Slate,
    vm_id: Id<Vm>,
    vm_before: Option<Vm>,
    request: Option<Deploy>,
    plan: Vec<&'static str>,
}

/// A fresh world, warmed up (the account's default network made by a
/// deploy that was then expunged), with the VM the saga of `kind` works on.
async fn prepare(kind: Kind, tag: &str) -> Prepared {
    let mut w = World::new(tag).await;
    let warm = w.deploy_request("warm-up", true, false);
    let warm_id = w.deploy_ok(&warm).await;
    w.destroy_ok(warm_id, true).await;
    let base = w.slate().await;
    assert_eq!(
        (base.count("network"), base.count("vlanclaim")),
        (1, 1),
        "the warm-up made the account's default network"
    );
    let (vm_id, request, plan) = match kind {
        Kind::DeployStarted | Kind::DeployStopped | Kind::DeployDataDisk => {
            let r = w.deploy_request(
                "vm-under-test",
                kind != Kind::DeployStopped,
                kind == Kind::DeployDataDisk,
            );
            let plan = w.deploy_plan(&r).await;
            (r.vm_id.parse().expect("vm id"), Some(r), plan)
        }
        Kind::Destroy | Kind::DestroyExpunge | Kind::Expunge => {
            let r = w.deploy_request("vm-under-test", true, false);
            let id = w.deploy_ok(&r).await;
            if kind == Kind::Expunge {
                w.destroy_ok(id, false).await;
            }
            let v = w.vm(id).await.expect("the VM");
            let plan = w
                .remove_plan(&v, kind != Kind::Destroy, kind == Kind::Expunge)
                .await;
            (id, None, plan)
        }
    };
    let before = w.slate().await;
    let vm_before = w.vm(vm_id).await;
    Prepared {
        w,
        base,
        before,
        vm_id,
        vm_before,
        request,
        plan,
    }
}

async fn submit(kind: Kind, p: &Prepared) -> Id<AsyncJob> {
    match kind {
        Kind::DeployStarted | Kind::DeployStopped | Kind::DeployDataDisk => {
            p.w.submit_deploy(p.request.as_ref().expect("request"))
                .await
        }
        Kind::Destroy => p.w.submit_destroy(p.vm_id, false).await,
        Kind::DestroyExpunge => p.w.submit_destroy(p.vm_id, true).await,
        Kind::Expunge => p.w.submit_expunge(p.vm_id).await,
    }
}

/// The cases of `kind`, generated from its plan.
async fn generate(kind: Kind) -> Vec<Case> {
    let p = prepare(kind, &format!("plan-{}", kind.tag())).await;
    let mut cases = Vec::new();
    for index in 0..p.plan.len() {
        for property in PROPERTIES {
            cases.push(Case {
                kind,
                plan: p.plan.clone(),
                index,
                property,
            });
        }
    }
    cases
}

/// What a passing case saw.
struct Passed {
    summary: String,
    notes: Vec<String>,
}

/// A deliberate break of the flow, for the test that checks the checks.
#[derive(Clone, Copy, Debug)]
enum Sabotage {
    None,
    /// This step's undo command is answered `Done` without running.
    FakeUndo(&'static str),
    /// This step's action command is answered `Done` without running.
    FakeAction(&'static str),
    /// The second copy of this step's command works on another VM (a
    /// component keyed by the message, not the VM).
    SecondCopyOtherVm(&'static str),
    /// The failure is never injected.
    NoInjection,
}

async fn run_case(case: &Case) -> Result<Passed, Vec<String>> {
    run_sabotaged(case, Sabotage::None).await
}

fn sabotage(policy: Policy, saga: Id<Saga>, how: Sabotage) -> Policy {
    match how {
        Sabotage::None | Sabotage::NoInjection => policy,
        Sabotage::FakeUndo(step) => policy.fake_done(move |m| m.is_step(saga, step, true)),
        Sabotage::FakeAction(step) => policy.fake_done(move |m| m.is_step(saga, step, false)),
        Sabotage::SecondCopyOtherVm(step) => policy.mutate(move |m, copy| {
            if copy != 1 || m.kind != MsgKind::Command || !m.is_step(saga, step, false) {
                return None;
            }
            let mut body: serde_json::Value = serde_json::from_slice(&m.env.body).ok()?;
            body["input"]["vm_id"] = Id::<Vm>::new().to_string().into();
            let mut env = m.env.clone();
            env.body = serde_json::to_vec(&body).ok()?;
            Some(env)
        }),
    }
}

/// Fails the case's step: a remote one at its result, a local one through
/// the orchestrator's `Faults` hook.
fn inject(policy: &mut Policy, p: &Prepared, case: &Case, saga: Id<Saga>) {
    if case.remote() {
        let taken = std::mem::replace(policy, Policy::once());
        *policy = taken.fail_result_of(saga, case.step());
    } else {
        p.w.faults.fail_local(saga, case.step());
    }
}

async fn run_sabotaged(case: &Case, how: Sabotage) -> Result<Passed, Vec<String>> {
    let tag = format!("{}-{}-{:?}", case.kind.tag(), case.index, case.property);
    let mut p = prepare(case.kind, &tag).await;
    if p.plan != case.plan {
        return Err(vec![format!(
            "the plan is {:?} now, the case was generated from {:?}",
            p.plan, case.plan
        )]);
    }
    let job = submit(case.kind, &p).await;
    let saga = saga_id_for_job(job);
    let step = case.step();
    let (report, mut problems, notes) = match case.property {
        Property::Idempotent => {
            let trigger = case.trigger();
            let remote = case.remote();
            let late: Arc<Mutex<Vec<Msg>>> = Arc::default();
            let seen: Arc<Mutex<HashSet<uuid::Uuid>>> = Arc::default();
            let (l, s) = (late.clone(), seen.clone());
            let mut policy = Policy::with(move |m: &Msg| {
                let focus = if remote {
                    matches!(m.kind, MsgKind::Command | MsgKind::Result)
                        && m.is_step(saga, step, false)
                } else {
                    match trigger {
                        None => m.kind == MsgKind::Start,
                        Some(t) => m.kind == MsgKind::Result && m.is_step(saga, t, false),
                    }
                };
                if focus {
                    if s.lock().unwrap().insert(m.env.message_id) {
                        l.lock().unwrap().push(m.clone());
                    }
                    Delivery::TWICE_AT_ONCE
                } else {
                    Delivery::TWICE
                }
            });
            policy = sabotage(policy, saga, how);
            let report =
                p.w.pump_then_redeliver(&mut policy, || late.lock().unwrap().clone())
                    .await;
            let mut problems = Vec::new();
            let replayed = late.lock().unwrap().len();
            if replayed == 0 {
                problems.push("no message of the step under test was seen".into());
            }
            problems.extend(check_success(case, &p, job, &report).await);
            (report, problems, vec![])
        }
        Property::Unwinds | Property::UnwindsIdempotently => {
            let mut policy = if case.property == Property::UnwindsIdempotently {
                Policy::with(|m: &Msg| {
                    if m.is_undo() && matches!(m.kind, MsgKind::Command | MsgKind::Result) {
                        Delivery::TWICE_AT_ONCE
                    } else {
                        Delivery::ONCE
                    }
                })
            } else {
                Policy::once()
            };
            if !matches!(how, Sabotage::NoInjection) {
                inject(&mut policy, &p, case, saga);
            }
            policy = sabotage(policy, saga, how);
            let report = p.w.pump(&mut policy).await;
            let (problems, notes) = check_failure(case, &mut p, job, &report).await;
            (report, problems, notes)
        }
    };
    if !report.permanent.is_empty() {
        problems.push(format!(
            "handlers refused messages for good: {:?}",
            report.permanent
        ));
    }
    if report.unanswered > 0 {
        problems.push(format!("{} commands were not answered", report.unanswered));
    }
    let summary = format!(
        "{} deliveries ({} at once, {} undo commands), {} transient, {} injected result(s), {} injected local fault(s)",
        report.deliveries,
        report.concurrent,
        report.undo_commands,
        report.transient,
        report.injected,
        p.w.faults.hits()
    );
    if problems.is_empty() {
        Ok(Passed { summary, notes })
    } else {
        problems.push(summary);
        Err(problems)
    }
}

/// The common checks of a saga that must have succeeded, then the kind's
/// effect, exactly once.
async fn check_success(
    case: &Case,
    p: &Prepared,
    job: Id<AsyncJob>,
    _r: &PumpReport,
) -> Vec<String> {
    let mut bad = Vec::new();
    let j = p.w.job(job).await;
    if j.status != JobStatus::Succeeded {
        bad.push(format!("job {:?}: {:?}", j.status, j.result));
        return bad;
    }
    match p.w.saga_of(job).await {
        None => bad.push("no saga".into()),
        Some(s) => {
            let names: Vec<&str> = s.steps.iter().map(|x| x.name.as_str()).collect();
            if names != case.plan {
                bad.push(format!(
                    "the saga ran {names:?}, the plan is {:?}",
                    case.plan
                ));
            }
            if s.status != SagaStatus::Done || s.steps.iter().any(|x| x.state != StepState::Done) {
                bad.push(format!(
                    "saga {:?}, steps {:?}",
                    s.status,
                    s.steps.iter().map(|x| x.state).collect::<Vec<_>>()
                ));
            }
        }
    }
    let fp = match case.kind {
        Kind::DeployStarted => Some(Footprint {
            state: VmState::Running,
            running: true,
            volumes: 1,
            volume_state: VolumeState::Ready,
            on_host: true,
        }),
        Kind::DeployStopped => Some(Footprint {
            state: VmState::Stopped,
            running: false,
            volumes: 1,
            volume_state: VolumeState::Allocated,
            on_host: false,
        }),
        Kind::DeployDataDisk => Some(Footprint {
            state: VmState::Running,
            running: true,
            volumes: 2,
            volume_state: VolumeState::Ready,
            on_host: true,
        }),
        Kind::Destroy => Some(Footprint {
            state: VmState::Destroyed,
            running: false,
            volumes: 1,
            volume_state: VolumeState::Ready,
            on_host: true,
        }),
        Kind::DestroyExpunge | Kind::Expunge => None,
    };
    match fp {
        Some(fp) => bad.extend(footprint(&p.w, &p.base, p.vm_id, &fp).await),
        None => {
            if let Some(v) = p.w.vm(p.vm_id).await {
                bad.push(format!("the VM row is still there, {:?}", v.state));
            }
            let d = p.base.diff(&p.w.slate().await);
            if !d.is_empty() {
                bad.push(format!("not back to the slate before the VM: {d:#?}"));
            }
        }
    }
    if case.kind.is_deploy()
        && j.result
            .as_ref()
            .and_then(|r| r["virtualmachine"]["id"].as_str())
            != Some(p.vm_id.to_string().as_str())
    {
        bad.push(format!("the job's result names another VM: {:?}", j.result));
    }
    bad
}

/// One VM's effect.
struct Footprint {
    state: VmState,
    /// Placed and running: a reservation, the host's counters, a VM on the
    /// simulated host.
    running: bool,
    volumes: usize,
    volume_state: VolumeState,
    /// Its volumes are on its (last) host's simulator.
    on_host: bool,
}

/// Checks that the world holds `base` plus exactly one VM's `fp`: one
/// reservation, one NIC with one address, its volumes once, and the
/// simulator's VM and volumes once, on its host.
async fn footprint(w: &World, base: &Slate, vm_id: Id<Vm>, fp: &Footprint) -> Vec<String> {
    let mut bad = Vec::new();
    let now = w.slate().await;
    let Some(v) = w.vm(vm_id).await else {
        return vec!["the VM row is missing".into()];
    };
    if v.state != fp.state {
        bad.push(format!("the VM is {:?}, not {:?}", v.state, fp.state));
    }
    if v.host_id.is_some() != fp.running {
        bad.push(format!("the VM's host is {:?}", v.host_id));
    }
    let delta = |kind: &str| now.count(kind) as i64 - base.count(kind) as i64;
    // Capacity: one reservation, on the VM's host, and its counters.
    let key = format!("vm/{vm_id}/host");
    let held: Vec<Reservation> = w
        .all::<Reservation>()
        .await
        .into_iter()
        .filter(|r| r.key == key)
        .collect();
    if held.len() != usize::from(fp.running) || delta("reservation") != i64::from(fp.running) {
        bad.push(format!(
            "{} reservations for the VM, {} more in all",
            held.len(),
            delta("reservation")
        ));
    }
    if fp.running && held.first().map(|r| r.host_id) != v.host_id {
        bad.push("the reservation is on another host than the VM".into());
    }
    let o = &w.fabric.offering;
    let (cpu, mem) = (
        u64::from(o.cpu_number) * u64::from(o.cpu_speed),
        u64::from(o.memory) * 1024 * 1024,
    );
    let host_name = |id: Option<Id<Host>>| {
        id.and_then(|h| w.fabric.hosts.iter().find(|x| x.id == h))
            .map(|h| h.name.clone())
    };
    let running_on = host_name(v.host_id);
    for (h, (c0, m0)) in &base.hosts {
        let (c1, m1) = now.hosts[h];
        let expect = if running_on.as_deref() == Some(h.as_str()) {
            (c0 + cpu, m0 + mem)
        } else {
            (*c0, *m0)
        };
        if (c1, m1) != expect {
            bad.push(format!(
                "host {h} holds ({c1} MHz, {m1} bytes), expected {expect:?}"
            ));
        }
    }
    // One NIC, one address, as the VM row shows them.
    let nics: Vec<Nic> = w
        .all::<Nic>()
        .await
        .into_iter()
        .filter(|n| n.vm_id == vm_id)
        .collect();
    let nic_ids: HashSet<Id<Nic>> = nics.iter().map(|n| n.id).collect();
    let ips = w
        .all::<IpAddress>()
        .await
        .into_iter()
        .filter(|i| i.nic_id.is_some_and(|n| nic_ids.contains(&n)))
        .count();
    if nics.len() != 1 || ips != 1 || delta("nic") != 1 || delta("ipaddress") != 1 {
        bad.push(format!(
            "{} NICs and {} addresses for the VM; {} more NICs and {} more addresses in all",
            nics.len(),
            ips,
            delta("nic"),
            delta("ipaddress")
        ));
    }
    if v.nics.iter().map(|n| n.id).collect::<HashSet<_>>() != nic_ids {
        bad.push("the VM row's NICs are not its NIC rows".into());
    }
    // Its volumes, once, and the pool's count of them.
    let vols: Vec<Volume> = w
        .all::<Volume>()
        .await
        .into_iter()
        .filter(|x| x.vm_id == Some(vm_id))
        .collect();
    if vols.len() != fp.volumes || delta("volume") != fp.volumes as i64 {
        bad.push(format!(
            "{} volumes for the VM, {} more in all; expected {}",
            vols.len(),
            delta("volume"),
            fp.volumes
        ));
    }
    if let Some(x) = vols.iter().find(|x| x.state != fp.volume_state) {
        bad.push(format!(
            "volume {} is {:?}, not {:?}",
            x.name, x.state, fp.volume_state
        ));
    }
    let size: u64 = vols.iter().map(|x| x.size).sum();
    let pool0: u64 = base.pools.values().sum();
    let pool1: u64 = now.pools.values().sum();
    if pool1 != pool0 + size {
        bad.push(format!(
            "the pools hold {pool1} bytes; {pool0} before plus {size} expected"
        ));
    }
    // The simulated hosts: the VM once, on its host; its volumes once, on its (last) host.
    let vm_key = vm_id.to_string();
    let sim_vms: Vec<&String> = now
        .sim
        .iter()
        .filter(|(_, s)| s.vms.contains_key(&vm_key))
        .map(|(h, _)| h)
        .collect();
    let expect_vm: Vec<String> = if fp.running {
        running_on.iter().cloned().collect()
    } else {
        vec![]
    };
    if sim_vms.iter().map(|h| h.to_string()).collect::<Vec<_>>() != expect_vm {
        bad.push(format!("the simulated hosts running the VM: {sim_vms:?}"));
    }
    let total = |s: &Slate, f: fn(&stratus_agent::sim::SimState) -> usize| {
        s.sim.values().map(f).sum::<usize>() as i64
    };
    let vms_delta = total(&now, |s| s.vms.len()) - total(base, |s| s.vms.len());
    if vms_delta != i64::from(fp.running) {
        bad.push(format!("{vms_delta} more VMs on the simulated hosts"));
    }
    let last = host_name(v.host_id.or(v.last_host_id));
    let mut sim_vols: Vec<(String, String)> = now
        .sim
        .iter()
        .flat_map(|(h, s)| {
            s.volumes
                .values()
                .filter(|x| x.vm_id == vm_key)
                .map(move |x| (h.clone(), x.id.clone()))
        })
        .collect();
    sim_vols.sort();
    let mut expect_vols: Vec<(String, String)> = if fp.on_host {
        vols.iter()
            .map(|x| (last.clone().unwrap_or_default(), x.id.to_string()))
            .collect()
    } else {
        vec![]
    };
    expect_vols.sort();
    if sim_vols != expect_vols {
        bad.push(format!(
            "the VM's volumes on the simulated hosts: {sim_vols:?}, expected {expect_vols:?}"
        ));
    }
    let vols_delta = total(&now, |s| s.volumes.len()) - total(base, |s| s.volumes.len());
    if vols_delta != expect_vols.len() as i64 {
        bad.push(format!("{vols_delta} more volumes on the simulated hosts"));
    }
    for kind in ["network", "vlanclaim"] {
        let a: BTreeMap<_, _> = base.rows.iter().filter(|(k, _)| k.0 == kind).collect();
        let b: BTreeMap<_, _> = now.rows.iter().filter(|(k, _)| k.0 == kind).collect();
        if a != b {
            bad.push(format!("{kind} rows changed"));
        }
    }
    bad
}

/// The checks of a saga that must have failed at the step under test and
/// unwound. Returns the problems and, for forward-only sagas, notes on
/// what stays changed.
async fn check_failure(
    case: &Case,
    p: &mut Prepared,
    job: Id<AsyncJob>,
    report: &PumpReport,
) -> (Vec<String>, Vec<String>) {
    let mut bad = Vec::new();
    let mut notes = Vec::new();
    let injected = report.injected + p.w.faults.hits();
    if injected == 0 {
        bad.push("the failure was never injected".into());
    }
    let j = p.w.job(job).await;
    let result = j.result.clone().unwrap_or_default();
    if j.status != JobStatus::Failed
        || j.result_code != u32::from(INJECTED_CODE)
        || result["errortext"] != INJECTED
        || result["errorcode"] != INJECTED_CODE
    {
        bad.push(format!(
            "job {:?} (jobstatus {}), result code {}, result {result}; expected failed with {INJECTED_CODE} {INJECTED:?}",
            j.status, j.status as u8, j.result_code
        ));
    }
    match p.w.saga_of(job).await {
        None => bad.push("no saga".into()),
        Some(s) => {
            if s.status != SagaStatus::Failed {
                bad.push(format!("the saga is {:?}", s.status));
            }
            for (i, st) in s.steps.iter().enumerate() {
                let expect = if i <= case.index {
                    StepState::Undone
                } else {
                    StepState::Pending
                };
                if st.state != expect {
                    bad.push(format!(
                        "step {} is {:?}, expected {:?} (error {:?})",
                        st.name, st.state, expect, st.error
                    ));
                }
            }
            if s.steps[case.index].error.as_deref() != Some(INJECTED) {
                bad.push(format!(
                    "the failed step's error is {:?}",
                    s.steps[case.index].error
                ));
            }
        }
    }
    if case.property == Property::UnwindsIdempotently {
        let remote_undos = case.plan[..=case.index]
            .iter()
            .filter(|s| {
                vm::definition(case.kind.saga_kind(), s)
                    .and_then(|d| d.undo)
                    .is_some_and(|u| u != Run::Local)
            })
            .count();
        if report.undo_commands != 2 * remote_undos {
            bad.push(format!(
                "{} undo command deliveries; {remote_undos} remote undos twice expected",
                report.undo_commands
            ));
        }
    }
    let now = p.w.slate().await;
    let diff = p.before.diff(&now);
    let vm_now = p.w.vm(p.vm_id).await;
    if case.kind.is_deploy() {
        if !diff.is_empty() {
            bad.push(format!("the clean slate does not hold: {diff:#?}"));
        }
        if let Some(v) = &vm_now
            && (v.state != VmState::Error || v.host_id.is_some() || !v.nics.is_empty())
        {
            bad.push(format!(
                "the VM row is {:?} on host {:?} with {} NICs; absent or Error with no host and no NICs expected",
                v.state,
                v.host_id,
                v.nics.len()
            ));
        }
    } else {
        let before = p.vm_before.as_ref().expect("the VM before");
        match &vm_now {
            None => bad.push("the VM row is gone although its saga failed".into()),
            Some(v) => {
                if case.step() == "mark" {
                    if !diff.is_empty() {
                        bad.push(format!("mark failed and the slate changed: {diff:#?}"));
                    }
                    if v.state != before.state || v.host_id != before.host_id {
                        bad.push(format!(
                            "mark failed and the VM is {:?} on {:?}, was {:?} on {:?}",
                            v.state, v.host_id, before.state, before.host_id
                        ));
                    }
                } else {
                    // Past mark-expunging (when the plan has it) the VM stays
                    // Expunging, for the sweep to expunge it again.
                    let expunging = case
                        .plan
                        .iter()
                        .position(|s| *s == "mark-expunging")
                        .is_some_and(|i| case.index >= i);
                    let ok = v.state == before.state
                        || v.state == VmState::Stopped
                        || (expunging && v.state == VmState::Expunging);
                    if !ok {
                        bad.push(format!(
                            "the VM is {:?}; back to {:?} or Stopped{} expected",
                            v.state,
                            before.state,
                            if expunging { " or Expunging" } else { "" }
                        ));
                    }
                    notes.extend(forward_notes(case, p, v, &diff).await);
                }
            }
        }
    }
    (bad, notes)
}

/// What a forward-only saga that failed past its first step left changed,
/// and whether the VM's row agrees with what it holds.
async fn forward_notes(case: &Case, p: &Prepared, v: &Vm, diff: &[String]) -> Vec<String> {
    let mut notes = Vec::new();
    let vm_key = v.id.to_string();
    let on_sim =
        p.w.agents
            .values()
            .any(|a| a.snapshot().vms.contains_key(&vm_key));
    let held =
        p.w.all::<Reservation>()
            .await
            .iter()
            .any(|r| r.key == format!("vm/{vm_key}/host"));
    let vols =
        p.w.all::<Volume>()
            .await
            .iter()
            .filter(|x| x.vm_id == Some(v.id))
            .count();
    let sim_vols =
        p.w.agents
            .values()
            .map(|a| {
                a.snapshot()
                    .volumes
                    .values()
                    .filter(|x| x.vm_id == vm_key)
                    .count()
            })
            .sum::<usize>();
    let nics =
        p.w.all::<Nic>()
            .await
            .iter()
            .filter(|n| n.vm_id == v.id)
            .count();
    let mut odd = Vec::new();
    if v.state == VmState::Running && !on_sim {
        odd.push("Running in the store, not on its host");
    }
    if v.host_id.is_some() != held {
        odd.push("host in the store and capacity held disagree");
    }
    // An Expunging VM is expunged again by the sweep: what it lost is expected.
    if v.state != VmState::Expunging {
        if vols == 0 {
            odd.push("no volume rows left");
        } else if sim_vols == 0 {
            odd.push("volume rows left, none on the host");
        }
        if nics == 0 {
            odd.push("no NIC left");
        }
    }
    notes.push(format!(
        "[{}] failed at {} ({}): VM {:?} (was {:?}), host {}, reservation {}, on its host {}, {} volume rows / {} on the host, {} NICs; {} differences from before{}",
        case.kind.name(),
        case.step(),
        case.property.name(),
        v.state,
        p.vm_before.as_ref().map(|b| b.state),
        v.host_id.is_some(),
        held,
        on_sim,
        vols,
        sim_vols,
        nics,
        diff.len(),
        if odd.is_empty() {
            String::new()
        } else {
            format!("; inconsistent: {}", odd.join(", "))
        }
    ));
    notes
}

async fn run_kind(kind: Kind) {
    let started = Instant::now();
    let cases = generate(kind).await;
    let plan = cases[0].plan.clone();
    println!(
        "{}: plan {:?}: {} generated cases ({} steps x {} properties)",
        kind.name(),
        plan,
        cases.len(),
        plan.len(),
        PROPERTIES.len()
    );
    assert_eq!(cases.len(), plan.len() * PROPERTIES.len());
    let mut failures = Vec::new();
    let mut notes = Vec::new();
    let mut ran = 0;
    for case in &cases {
        let t = Instant::now();
        let outcome = run_case(case).await;
        ran += 1;
        match outcome {
            Ok(passed) => {
                println!(
                    "ok   {} ({} ms; {})",
                    case.label(),
                    t.elapsed().as_millis(),
                    passed.summary
                );
                notes.extend(passed.notes);
            }
            Err(problems) => {
                println!("FAIL {}:", case.label());
                for x in &problems {
                    println!("       {x}");
                }
                failures.push(format!("{}: {}", case.label(), problems.join("; ")));
            }
        }
    }
    if kind.is_deploy() {
        assert!(notes.is_empty());
    } else {
        println!(
            "{}: a forward-only saga (only mark has an undo); past mark a failure leaves:",
            kind.name()
        );
        for n in &notes {
            println!("  note: {n}");
        }
    }
    println!(
        "{}: {} of {} cases passed in {} s",
        kind.name(),
        ran - failures.len(),
        ran,
        started.elapsed().as_secs()
    );
    assert_eq!(ran, plan.len() * PROPERTIES.len());
    assert!(
        failures.is_empty(),
        "{} of {ran} cases failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// The cases are generated from the plans: one per step and property.
#[tokio::test]
async fn cases_are_generated_from_every_step_of_every_kind() {
    let mut total_steps = 0;
    let mut total_cases = 0;
    for kind in KINDS {
        let cases = generate(kind).await;
        let plan = &cases[0].plan;
        println!("{:<24} {} steps: {:?}", kind.name(), plan.len(), plan);
        // Every step is a step of the kind's definition.
        for s in plan {
            assert!(vm::definition(kind.saga_kind(), s).is_some(), "{s}");
        }
        total_steps += plan.len();
        total_cases += cases.len();
    }
    println!(
        "{total_cases} generated cases: {total_steps} steps across {} kinds x {} properties",
        KINDS.len(),
        PROPERTIES.len()
    );
    assert_eq!(total_cases, total_steps * PROPERTIES.len());
}

#[tokio::test]
async fn deploy_started() {
    run_kind(Kind::DeployStarted).await;
}

#[tokio::test]
async fn deploy_stopped() {
    run_kind(Kind::DeployStopped).await;
}

#[tokio::test]
async fn deploy_with_a_data_disk() {
    run_kind(Kind::DeployDataDisk).await;
}

#[tokio::test]
async fn destroy() {
    run_kind(Kind::Destroy).await;
}

#[tokio::test]
async fn destroy_and_expunge() {
    run_kind(Kind::DestroyExpunge).await;
}

#[tokio::test]
async fn expunge() {
    run_kind(Kind::Expunge).await;
}

/// Twenty deploys interleaved in one pump (messages taken in a shuffled
/// order) all succeed, each with its own placement, NIC and volumes; a
/// destroy (expunge) of all of them, interleaved too, returns every
/// counter and row to the snapshot taken before them.
#[tokio::test]
async fn interleaved_deploys_and_destroys_return_every_counter() {
    const N: usize = 20;
    let seed: u64 = std::env::var("STRATUS_SAGA_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random);
    println!("seed {seed} (STRATUS_SAGA_SEED={seed} repeats this order)");
    let mut w = World::new("interleaved").await;
    let warm = w.deploy_request("warm-up", true, false);
    let warm_id = w.deploy_ok(&warm).await;
    w.destroy_ok(warm_id, true).await;
    let base = w.slate().await;

    let t = Instant::now();
    let mut jobs = Vec::new();
    for i in 0..N {
        // Every fourth with a data disk.
        let r = w.deploy_request(&format!("vm-{i}"), true, i % 4 == 0);
        let job = w.submit_deploy(&r).await;
        jobs.push((job, r.vm_id.parse::<Id<Vm>>().unwrap(), i % 4 == 0));
    }
    let report = w.pump(&mut Policy::once().shuffled(seed)).await;
    println!(
        "{N} deploys: {} deliveries, up to {} messages pending at once, {} transient retries, {} ms",
        report.deliveries,
        report.max_pending,
        report.transient,
        t.elapsed().as_millis()
    );
    assert!(report.permanent.is_empty(), "{:?}", report.permanent);
    let mut per_host: BTreeMap<String, usize> = BTreeMap::new();
    let mut addresses = HashSet::new();
    for (job, vm_id, _) in &jobs {
        let j = w.job(*job).await;
        assert_eq!(j.status, JobStatus::Succeeded, "{:?}", j.result);
        let v = w.vm(*vm_id).await.unwrap();
        assert_eq!(v.state, VmState::Running);
        *per_host.entry(v.host_name.clone().unwrap()).or_default() += 1;
        assert_eq!(v.nics.len(), 1);
        assert!(
            addresses.insert(v.nics[0].ip_address.clone()),
            "address given twice"
        );
    }
    let now = w.slate().await;
    let data_disks = jobs.iter().filter(|j| j.2).count();
    let delta = |k: &str| now.count(k) - base.count(k);
    println!(
        "VMs per host {per_host:?}; {} reservations, {} NICs, {} addresses, {} volumes more",
        delta("reservation"),
        delta("nic"),
        delta("ipaddress"),
        delta("volume")
    );
    assert_eq!(delta("reservation"), N);
    assert_eq!(delta("nic"), N);
    assert_eq!(delta("ipaddress"), N);
    assert_eq!(delta("volume"), N + data_disks);
    let o = &w.fabric.offering;
    let cpu: u64 = now.hosts.values().map(|h| h.0).sum::<u64>()
        - base.hosts.values().map(|h| h.0).sum::<u64>();
    assert_eq!(
        cpu,
        N as u64 * u64::from(o.cpu_number) * u64::from(o.cpu_speed)
    );
    let sim_vms: usize = now.sim.values().map(|s| s.vms.len()).sum();
    let sim_vols: usize = now.sim.values().map(|s| s.volumes.len()).sum();
    assert_eq!((sim_vms, sim_vols), (N, N + data_disks));

    let t = Instant::now();
    let mut destroys = Vec::new();
    for (_, vm_id, _) in &jobs {
        destroys.push(w.submit_destroy(*vm_id, true).await);
    }
    let report = w
        .pump(&mut Policy::once().shuffled(seed.wrapping_add(1)))
        .await;
    println!(
        "{N} destroys: {} deliveries, up to {} pending at once, {} transient retries, {} ms",
        report.deliveries,
        report.max_pending,
        report.transient,
        t.elapsed().as_millis()
    );
    assert!(report.permanent.is_empty(), "{:?}", report.permanent);
    for job in destroys {
        let j = w.job(job).await;
        assert_eq!(j.status, JobStatus::Succeeded, "{:?}", j.result);
    }
    for (_, vm_id, _) in &jobs {
        assert!(w.vm(*vm_id).await.is_none());
    }
    let d = base.diff(&w.slate().await);
    println!(
        "{} differences from the snapshot after destroying all",
        d.len()
    );
    assert!(d.is_empty(), "{d:#?}");
}

/// The checks can fail: each sabotage breaks the flow as a buggy component
/// would (an undo that does nothing, an action that is not idempotent, a
/// host that does not act, a failure that never comes), and the case must
/// fail with the problem named.
#[tokio::test]
async fn the_checks_catch_a_broken_flow() {
    let deploy = generate(Kind::DeployStarted).await;
    let destroy = generate(Kind::DestroyExpunge).await;
    let find = |cases: &[Case], step: &str, property: Property| {
        cases
            .iter()
            .find(|c| c.step() == step && c.property == property)
            .expect("a generated case")
            .clone()
    };
    let trials = vec![
        (
            "release-capacity answers Done and releases nothing",
            find(&deploy, "allocate-volumes", Property::Unwinds),
            Sabotage::FakeUndo("reserve-capacity"),
            "clean slate does not hold",
        ),
        (
            "destroy-volumes (undo of create-volumes) answers Done and destroys nothing",
            find(&deploy, "start-vm", Property::UnwindsIdempotently),
            Sabotage::FakeUndo("create-volumes"),
            "clean slate does not hold",
        ),
        (
            "a redelivered reserve-capacity holds capacity again",
            find(&deploy, "reserve-capacity", Property::Idempotent),
            Sabotage::SecondCopyOtherVm("reserve-capacity"),
            "reservations for the VM",
        ),
        (
            "a redelivered allocate-nics allocates again",
            find(&deploy, "allocate-nics", Property::Idempotent),
            Sabotage::SecondCopyOtherVm("allocate-nics"),
            "NICs and",
        ),
        (
            "a redelivered allocate-volumes allocates again",
            find(&deploy, "allocate-volumes", Property::Idempotent),
            Sabotage::SecondCopyOtherVm("allocate-volumes"),
            "volumes for the VM",
        ),
        (
            "the host answers destroy-volumes Done and keeps them",
            find(&destroy, "destroy-volumes", Property::Idempotent),
            Sabotage::FakeAction("destroy-volumes"),
            "not back to the slate",
        ),
        (
            "the failure never comes",
            find(&deploy, "finish", Property::Unwinds),
            Sabotage::NoInjection,
            "never injected",
        ),
    ];
    let mut missed = Vec::new();
    for (what, case, how, expected) in &trials {
        match run_sabotaged(case, *how).await {
            Ok(passed) => {
                println!(
                    "MISSED {what}: {} passed ({})",
                    case.label(),
                    passed.summary
                );
                missed.push(*what);
            }
            Err(problems) => {
                let named = problems.iter().any(|p| p.contains(expected));
                println!(
                    "{} {what}: {} failed with {} problem(s), first: {}",
                    if named { "caught" } else { "MISNAMED" },
                    case.label(),
                    problems.len(),
                    problems[0].lines().next().unwrap_or_default()
                );
                if !named {
                    missed.push(*what);
                }
            }
        }
    }
    println!(
        "{} of {} sabotages caught",
        trials.len() - missed.len(),
        trials.len()
    );
    assert!(missed.is_empty(), "not caught: {missed:?}");
}

/// A destroy that fails after its stop-vm step ran leaves the VM Stopped
/// (Expunging once mark-expunging ran), with no host, no capacity held and
/// not on the simulated host, as `unmark`'s doc says ("once it stopped it
/// is `Stopped`").
#[tokio::test]
async fn a_destroy_failing_after_its_stop_leaves_the_vm_stopped() {
    let mut wrong = Vec::new();
    let mut ran = 0;
    for kind in [Kind::Destroy, Kind::DestroyExpunge] {
        let cases = generate(kind).await;
        for case in cases.iter().filter(|c| {
            c.property == Property::Unwinds
                && c.plan
                    .iter()
                    .position(|s| *s == "stop-vm")
                    .is_some_and(|i| c.index > i)
        }) {
            ran += 1;
            let mut p = prepare(kind, &format!("stopped-{}-{}", kind.tag(), case.index)).await;
            let job = submit(kind, &p).await;
            let saga = saga_id_for_job(job);
            let mut policy = Policy::once();
            if case.remote() {
                policy = policy.fail_result_of(saga, case.step());
            } else {
                p.w.faults.fail_local(saga, case.step());
            }
            let report = p.w.pump(&mut policy).await;
            assert!(report.permanent.is_empty(), "{:?}", report.permanent);
            assert_eq!(p.w.job(job).await.status, JobStatus::Failed);
            let v = p.w.vm(p.vm_id).await.expect("the VM row");
            let on_host =
                p.w.agents
                    .values()
                    .any(|a| a.snapshot().vms.contains_key(&p.vm_id.to_string()));
            let held =
                p.w.all::<Reservation>()
                    .await
                    .iter()
                    .any(|r| r.key == format!("vm/{}/host", p.vm_id));
            let line = format!(
                "{}: VM {:?}, host {:?}, capacity held {held}, on its host {on_host}",
                case.label(),
                v.state,
                v.host_id.map(|_| "set")
            );
            println!("{line}");
            let expected = if case
                .plan
                .iter()
                .position(|s| *s == "mark-expunging")
                .is_some_and(|i| case.index >= i)
            {
                VmState::Expunging
            } else {
                VmState::Stopped
            };
            if v.state != expected || v.host_id.is_some() || held || on_host {
                wrong.push(line);
            }
        }
    }
    println!(
        "{} of {ran} failed destroys left the VM Stopped",
        ran - wrong.len()
    );
    assert!(wrong.is_empty(), "{wrong:#?}");
}

/// Fails the deploy at the case's step, then redelivers the action
/// commands of `late_steps` (each seen once during the saga) after the
/// unwinding ended, as a broker does when an ack was lost; the clean slate
/// must still hold.
async fn unwind_then_redeliver(
    case: &Case,
    late_steps: &[&'static str],
) -> Result<String, Vec<String>> {
    let tag = format!(
        "late-{}-{}-{}",
        case.kind.tag(),
        case.index,
        late_steps.len()
    );
    let mut p = prepare(case.kind, &tag).await;
    let job = submit(case.kind, &p).await;
    let saga = saga_id_for_job(job);
    let late: Arc<Mutex<Vec<Msg>>> = Arc::default();
    let l = late.clone();
    let wanted: Vec<&'static str> = late_steps.to_vec();
    let mut policy = Policy::with(move |m: &Msg| {
        if m.kind == MsgKind::Command
            && wanted.iter().any(|s| m.is_step(saga, s, false))
            && !l
                .lock()
                .unwrap()
                .iter()
                .any(|x: &Msg| x.env.message_id == m.env.message_id)
        {
            l.lock().unwrap().push(m.clone());
        }
        Delivery::ONCE
    });
    inject(&mut policy, &p, case, saga);
    let report =
        p.w.pump_then_redeliver(&mut policy, || late.lock().unwrap().clone())
            .await;
    let (mut problems, _) = check_failure(case, &mut p, job, &report).await;
    let redelivered = late.lock().unwrap().len();
    if redelivered != late_steps.len() {
        problems.push(format!(
            "{redelivered} commands redelivered, {} wanted",
            late_steps.len()
        ));
    }
    if !report.permanent.is_empty() {
        problems.push(format!("parked: {:?}", report.permanent));
    }
    let log =
        p.w.saga_of(job)
            .await
            .map(|s| s.step_log)
            .unwrap_or_default();
    let redone = log.iter().filter(|e| e["redo_undo"] == true).count();
    let summary = format!(
        "{redelivered} late command(s) {late_steps:?}, {redone} undone again, {} deliveries",
        report.deliveries
    );
    if problems.is_empty() {
        Ok(summary)
    } else {
        problems.push(summary);
        Err(problems)
    }
}

fn remote_steps_before(case: &Case) -> Vec<&'static str> {
    case.plan[..case.index]
        .iter()
        .copied()
        .filter(|s| {
            vm::definition(case.kind.saga_kind(), s).is_some_and(|d| d.action != Run::Local)
        })
        .collect()
}

/// After a deploy unwound, a late redelivery of one of its completed
/// actions redoes the action; the engine sends its undo again on the late
/// success, and the clean slate holds. Every failing step, every earlier
/// remote action.
#[tokio::test]
async fn a_late_action_after_the_unwinding_is_undone_again() {
    let mut failures = Vec::new();
    let mut ran = 0;
    for kind in [
        Kind::DeployStarted,
        Kind::DeployStopped,
        Kind::DeployDataDisk,
    ] {
        let cases: Vec<Case> = generate(kind)
            .await
            .into_iter()
            .filter(|c| c.property == Property::Unwinds)
            .collect();
        for case in &cases {
            for e in remote_steps_before(case) {
                ran += 1;
                match unwind_then_redeliver(case, &[e]).await {
                    Ok(s) => println!("ok   {}, then {e} late: {s}", case.label()),
                    Err(problems) => {
                        println!("FAIL {}, then {e} late: {problems:#?}", case.label());
                        failures.push(format!("{} then {e}", case.label()));
                    }
                }
            }
        }
    }
    println!(
        "{} of {ran} late redeliveries were undone again",
        ran - failures.len()
    );
    assert!(ran > 0);
    assert!(failures.is_empty(), "{failures:#?}");
}

/// As above, every completed action of a deploy that failed at its last
/// step redelivered late together (an agent whose acks were lost gets
/// create-volumes and start-vm again): each redone action is undone again
/// and the clean slate holds.
#[tokio::test]
async fn late_actions_together_after_the_unwinding_are_undone_again() {
    let mut failures = Vec::new();
    let mut ran = 0;
    for kind in [
        Kind::DeployStarted,
        Kind::DeployStopped,
        Kind::DeployDataDisk,
    ] {
        let cases = generate(kind).await;
        let case = cases
            .iter()
            .find(|c| c.step() == "finish" && c.property == Property::Unwinds)
            .expect("the finish case");
        let late = remote_steps_before(case);
        ran += 1;
        match unwind_then_redeliver(case, &late).await {
            Ok(s) => println!("ok   {}: {s}", case.label()),
            Err(problems) => {
                println!("FAIL {}: {problems:#?}", case.label());
                failures.push(case.label());
            }
        }
    }
    println!("{} of {ran} passed", ran - failures.len());
    assert!(failures.is_empty(), "{failures:#?}");
}
