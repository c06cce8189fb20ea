//! An in-process executor of the VM sagas, for the generic saga tests
//! (`tests/tests/sagas.rs`): the real orchestrator, network, compute and
//! storage handlers and one simulated host agent per host, over one SQLite
//! store, with no broker. Messages go round by hand:
//!
//! - the orchestrator (no publisher) leaves its commands in the outbox; the
//!   pump takes every pending row (and removes it, as the publisher does
//!   once the broker has it);
//! - a component's handler returns its results as effects, turned back into
//!   envelopes through the `aws:rmq` rendering, as the broker would carry them;
//! - a host agent's command runs through [`stratus_agent::agent::answer`] on
//!   its host's simulator driver (state in a temporary directory).
//!
//! Routing is by message type: `vm.*` and `*.step-result` to the
//! orchestrator, `network.*` / `compute.*` / `storage.*` to those functions,
//! `agent.vm-report` to compute, the other `agent.*` commands to the agent of
//! the host the command names.
//!
//! A [`Policy`] says how each message is delivered (once, twice in a row,
//! twice at once), in which order (first in first out, or shuffled with a
//! seed), and which step's result is turned into a failure. Local steps are
//! failed through the orchestrator's [`Faults`] hook ([`InjectedFaults`]).

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::Utc;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;
use serde_json::Value;
use stratus_agent::agent::{Command, answer};
use stratus_agent::sim::{Mocks, SimDriver, SimState};
use stratus_contracts::message_types::saga::{Outcome, StepRef, StepResult};
use stratus_contracts::message_types::vm as vm_msg;
use stratus_contracts::names::COMMANDS_EXCHANGE;
use stratus_contracts::settings::{Defaults, SettingsSource};
use stratus_fn_orchestrator::saga::{Failure, Faults, saga_id_for_job};
use stratus_fn_orchestrator::{Engine, vm};
use stratus_messaging::publisher::Outgoing;
use stratus_messaging::{Envelope, HandlerError, Handlers, outbox, rmq_event};
use stratus_model::*;
use stratus_store::sqlite::SqliteStore;
use stratus_store::{Backend, Index, Store, Transaction};
use uuid::Uuid;

/// The simulated zone the executor loads (the one bootstrap loads).
pub const ZONE_FILE: &str = include_str!("../../infra/simulator-zone.json");

/// The text and code of an injected failure.
pub const INJECTED: &str = "injected";
pub const INJECTED_CODE: u16 = 530;

/// Deliveries one pump makes at most: a saga that never ends fails the test.
const MAX_DELIVERIES: usize = 200_000;
/// Transient failures one message goes through before the pump gives up on it.
const MAX_TRANSIENT: usize = 100;

/// A directory removed when dropped.
pub struct TempHome(pub PathBuf);

impl TempHome {
    pub fn new(tag: &str) -> Self {
        let dir = std::env::temp_dir().join(format!(
            "stratus-inproc-{tag}-{}-{:016x}",
            std::process::id(),
            rand::random::<u64>()
        ));
        std::fs::create_dir_all(&dir).expect("temporary directory");
        Self(dir)
    }
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempHome {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Where a message goes.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Dest {
    Orchestrator,
    Network,
    Compute,
    Storage,
    Agent(String),
}

impl Dest {
    pub fn name(&self) -> String {
        match self {
            Dest::Orchestrator => "orchestrator".into(),
            Dest::Network => "network".into(),
            Dest::Compute => "compute".into(),
            Dest::Storage => "storage".into(),
            Dest::Agent(h) => format!("agent {h}"),
        }
    }
}

/// What a message is in the saga protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MsgKind {
    /// A job's command (`vm.deploy`, `vm.destroy`, `vm.expunge`).
    Start,
    /// A step's command (or its undo's) to a component or an agent.
    Command,
    /// A `<component>.step-result`.
    Result,
    /// An `agent.vm-report`.
    Report,
}

/// A message on its way.
#[derive(Debug, Clone)]
pub struct Msg {
    pub env: Envelope,
    pub dest: Dest,
    pub kind: MsgKind,
    /// The saga step it belongs to (commands and results).
    pub step: Option<StepRef>,
    /// Delivered again after a transient failure (once, as the retry tier would).
    retry: bool,
}

impl Msg {
    /// Routes an envelope by its message type.
    pub fn route(env: Envelope) -> Result<Msg, String> {
        let t = env.message_type.clone();
        let body: Value = serde_json::from_slice(&env.body).unwrap_or(Value::Null);
        let step: Option<StepRef> = serde_json::from_value(body["saga"].clone()).ok();
        let (dest, kind) = if t.starts_with("vm.") {
            (Dest::Orchestrator, MsgKind::Start)
        } else if t.ends_with(".step-result") {
            (Dest::Orchestrator, MsgKind::Result)
        } else if t == "agent.vm-report" {
            (Dest::Compute, MsgKind::Report)
        } else if t.starts_with("agent.") {
            let command = Command::decode(&env)?;
            (
                Dest::Agent(command.placement().host_name.clone()),
                MsgKind::Command,
            )
        } else if t.starts_with("network.") {
            (Dest::Network, MsgKind::Command)
        } else if t.starts_with("compute.") {
            (Dest::Compute, MsgKind::Command)
        } else if t.starts_with("storage.") {
            (Dest::Storage, MsgKind::Command)
        } else {
            return Err(format!("no route for message type {t:?}"));
        };
        Ok(Msg {
            env,
            dest,
            kind,
            step,
            retry: false,
        })
    }

    /// Whether this is the action (not the undo) or the undo of `saga`'s `step`.
    pub fn is_step(&self, saga: Id<Saga>, step: &str, undo: bool) -> bool {
        self.step
            .as_ref()
            .is_some_and(|s| s.saga_id == saga.to_string() && s.step == step && s.undo == undo)
    }

    pub fn is_undo(&self) -> bool {
        self.step.as_ref().is_some_and(|s| s.undo)
    }
}

/// How one message is delivered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Delivery {
    pub copies: usize,
    /// The copies run at once (as two consumers would), not one after the
    /// other. Never for a host agent, which runs a VM's commands in order.
    pub concurrent: bool,
}

impl Delivery {
    pub const ONCE: Delivery = Delivery {
        copies: 1,
        concurrent: false,
    };
    pub const TWICE: Delivery = Delivery {
        copies: 2,
        concurrent: false,
    };
    pub const TWICE_AT_ONCE: Delivery = Delivery {
        copies: 2,
        concurrent: true,
    };
}

type DeliverFn = Box<dyn FnMut(&Msg) -> Delivery + Send>;
type FakeFn = Box<dyn FnMut(&Msg) -> bool + Send>;
type MutateFn = Box<dyn FnMut(&Msg, usize) -> Option<Envelope> + Send>;

/// How a pump delivers messages.
pub struct Policy {
    deliver: DeliverFn,
    rng: Option<StdRng>,
    /// (saga, step): a `Done` result of this step's action becomes
    /// `Failed { 530, "injected" }` (the component did run).
    fail_result: Option<(Id<Saga>, String)>,
    /// Sabotage, for the tests that check the checks: commands answered
    /// `Done` without running (a component whose step does nothing).
    fake_done: Option<FakeFn>,
    /// Sabotage: copy `i` of a message replaced by another envelope (a
    /// component that is not idempotent on a redelivery).
    mutate: Option<MutateFn>,
}

impl Policy {
    /// Every message once, first in first out.
    pub fn once() -> Self {
        Self::with(|_| Delivery::ONCE)
    }

    pub fn with(deliver: impl FnMut(&Msg) -> Delivery + Send + 'static) -> Self {
        Self {
            deliver: Box::new(deliver),
            rng: None,
            fail_result: None,
            fake_done: None,
            mutate: None,
        }
    }

    /// Sabotage: the commands `which` picks are answered `Done` without
    /// running.
    pub fn fake_done(mut self, which: impl FnMut(&Msg) -> bool + Send + 'static) -> Self {
        self.fake_done = Some(Box::new(which));
        self
    }

    /// Sabotage: `how(msg, copy)` may replace a copy of a message.
    pub fn mutate(
        mut self,
        how: impl FnMut(&Msg, usize) -> Option<Envelope> + Send + 'static,
    ) -> Self {
        self.mutate = Some(Box::new(how));
        self
    }

    /// Takes the next message at random among those pending.
    pub fn shuffled(mut self, seed: u64) -> Self {
        self.rng = Some(StdRng::seed_from_u64(seed));
        self
    }

    /// Fails `saga`'s `step` at its result (the component ran it).
    pub fn fail_result_of(mut self, saga: Id<Saga>, step: &str) -> Self {
        self.fail_result = Some((saga, step.to_string()));
        self
    }
}

/// What a pump did.
#[derive(Debug, Default, Clone)]
pub struct PumpReport {
    /// Handler calls (every copy counts).
    pub deliveries: usize,
    pub by_dest: BTreeMap<String, usize>,
    /// Deliveries of undo commands.
    pub undo_commands: usize,
    /// Deliveries that ran at once with their twin.
    pub concurrent: usize,
    pub transient: usize,
    /// Handler errors that would park the message (and transients given up).
    pub permanent: Vec<String>,
    /// Commands a host did not answer.
    pub unanswered: usize,
    /// Results turned into failures.
    pub injected: usize,
    pub max_pending: usize,
}

impl PumpReport {
    fn add(&mut self, other: &PumpReport) {
        self.deliveries += other.deliveries;
        for (k, v) in &other.by_dest {
            *self.by_dest.entry(k.clone()).or_default() += v;
        }
        self.undo_commands += other.undo_commands;
        self.concurrent += other.concurrent;
        self.transient += other.transient;
        self.permanent.extend(other.permanent.iter().cloned());
        self.unanswered += other.unanswered;
        self.injected += other.injected;
        self.max_pending = self.max_pending.max(other.max_pending);
    }
}

/// Fails one local step (its action) of one saga through the orchestrator's hook.
#[derive(Default)]
pub struct InjectedFaults {
    target: Mutex<Option<(Id<Saga>, String)>>,
    pub hits: AtomicUsize,
}

impl InjectedFaults {
    pub fn fail_local(&self, saga: Id<Saga>, step: &str) {
        *self.target.lock().unwrap() = Some((saga, step.to_string()));
    }
    pub fn clear(&self) {
        *self.target.lock().unwrap() = None;
    }
    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

impl Faults for InjectedFaults {
    fn before_local(&self, saga: &Saga, step: &str, undo: bool) -> Option<Failure> {
        let target = self.target.lock().unwrap();
        match &*target {
            Some((id, s)) if !undo && *id == saga.id && s == step => {
                self.hits.fetch_add(1, Ordering::SeqCst);
                Some(Failure::new(INJECTED_CODE, INJECTED))
            }
            _ => None,
        }
    }
}

/// The zone's objects, as loaded.
#[derive(Debug, Clone)]
pub struct Fabric {
    pub zone: Zone,
    pub pod: Id<Pod>,
    pub clusters: Vec<Id<Cluster>>,
    pub hosts: Vec<Host>,
    pub pool: Id<StoragePool>,
    pub offering: ServiceOffering,
    pub disk_fixed: DiskOffering,
    pub disk_custom: DiskOffering,
    pub template: Template,
    pub domain: Id<Domain>,
    pub account: Account,
    pub user: Id<User>,
}

/// What the tests compare: every row of what sagas allocate, the hosts' and
/// pools' counters, and what every simulated host holds.
#[derive(Debug, Clone, PartialEq)]
pub struct Slate {
    /// (kind, id) -> the row's document: Reservation, IpAddress, Nic, Volume,
    /// Network, VlanClaim.
    pub rows: BTreeMap<(&'static str, Uuid), Value>,
    /// Host name -> (cpu_allocated, memory_allocated).
    pub hosts: BTreeMap<String, (u64, u64)>,
    /// Pool name -> disk_size_allocated.
    pub pools: BTreeMap<String, u64>,
    /// Host name -> its simulator's VMs and volumes.
    pub sim: BTreeMap<String, SimState>,
}

impl Slate {
    /// How `now` differs from this slate, one line per difference.
    pub fn diff(&self, now: &Slate) -> Vec<String> {
        let mut out = Vec::new();
        for (k, v) in &self.rows {
            match now.rows.get(k) {
                None => out.push(format!("{} {} is gone", k.0, k.1)),
                Some(w) if w != v => out.push(format!("{} {} changed: {v} -> {w}", k.0, k.1)),
                _ => {}
            }
        }
        for (k, w) in &now.rows {
            if !self.rows.contains_key(k) {
                out.push(format!("{} {} is new: {w}", k.0, k.1));
            }
        }
        for (h, c) in &self.hosts {
            let n = now.hosts.get(h).copied().unwrap_or_default();
            if n != *c {
                out.push(format!(
                    "host {h} (cpu_allocated, memory_allocated) {c:?} -> {n:?}"
                ));
            }
        }
        for (p, c) in &self.pools {
            let n = now.pools.get(p).copied().unwrap_or_default();
            if n != *c {
                out.push(format!("pool {p} disk_size_allocated {c} -> {n}"));
            }
        }
        for (h, s) in &self.sim {
            let n = now.sim.get(h).cloned().unwrap_or_default();
            let vms: BTreeSet<_> = s.vms.keys().collect();
            let nvms: BTreeSet<_> = n.vms.keys().collect();
            if vms != nvms {
                out.push(format!("simulator {h} VMs {vms:?} -> {nvms:?}"));
            }
            let vols: BTreeSet<_> = s.volumes.keys().collect();
            let nvols: BTreeSet<_> = n.volumes.keys().collect();
            if vols != nvols {
                out.push(format!("simulator {h} volumes {vols:?} -> {nvols:?}"));
            }
            if vms == nvms && vols == nvols && *s != n {
                out.push(format!("simulator {h} state changed"));
            }
        }
        out
    }

    pub fn count(&self, kind: &str) -> usize {
        self.rows.keys().filter(|k| k.0 == kind).count()
    }
}

/// The store, the functions' handlers and the simulated hosts.
pub struct World {
    pub home: TempHome,
    pub store: Arc<Store>,
    pub fabric: Fabric,
    pub faults: Arc<InjectedFaults>,
    pub settings: Arc<dyn SettingsSource>,
    orchestrator: Handlers,
    network: Handlers,
    compute: Handlers,
    storage: Handlers,
    pub agents: BTreeMap<String, SimDriver>,
    pending: VecDeque<Msg>,
}

impl World {
    /// A fresh store loaded with the simulated zone, its hosts Up and
    /// Enabled, and an agent (simulator) per host.
    pub async fn new(tag: &str) -> World {
        let home = TempHome::new(tag);
        let store = Arc::new(Store::new(Backend::Sqlite(
            SqliteStore::open(&home.path().join("store.db"), "t_").expect("sqlite store"),
        )));
        let fabric = load_zone(&store).await;
        let settings: Arc<dyn SettingsSource> = Arc::new(Defaults::default());
        let faults = Arc::new(InjectedFaults::default());
        let engine = Arc::new(Engine {
            store: store.clone(),
            publisher: None,
            settings: settings.clone(),
            faults: faults.clone(),
        });
        let mut agents = BTreeMap::new();
        for h in &fabric.hosts {
            let driver = SimDriver::open(&home.path().join("agents-home"), &h.name, Mocks::none())
                .expect("simulator driver");
            agents.insert(h.name.clone(), driver);
        }
        World {
            orchestrator: stratus_fn_orchestrator::handlers(engine),
            network: stratus_fn_network::handlers(store.clone()),
            compute: stratus_fn_compute::handlers(store.clone(), settings.clone(), None),
            storage: stratus_fn_storage::handlers(store.clone()),
            home,
            store,
            fabric,
            faults,
            settings,
            agents,
            pending: VecDeque::new(),
        }
    }

    /// A deployVirtualMachine request as the API makes it, in the account.
    pub fn deploy_request(&self, name: &str, start: bool, data_disk: bool) -> vm_msg::Deploy {
        let f = &self.fabric;
        vm_msg::Deploy {
            vm_id: Id::<Vm>::new().to_string(),
            name: name.to_string(),
            display_name: name.to_string(),
            account_id: f.account.id.to_string(),
            domain_id: f.domain.to_string(),
            zone_id: f.zone.id.to_string(),
            service_offering_id: f.offering.id.to_string(),
            template_id: f.template.id.to_string(),
            start,
            network_ids: vec![],
            ip_address: None,
            keypairs: vec![],
            user_data: None,
            host_id: None,
            root_disk_size_gb: None,
            disk_offering_id: data_disk.then(|| f.disk_fixed.id.to_string()),
            size_gb: None,
        }
    }

    /// Records a Pending job and its command in the outbox, in one
    /// transaction, as the API does; the next pump delivers it.
    pub async fn submit<T: Serialize>(
        &self,
        class: &str,
        message_type: &str,
        instance: Uuid,
        body: &T,
    ) -> Id<AsyncJob> {
        let job = AsyncJob {
            id: Id::new(),
            account_id: self.fabric.account.id,
            user_id: self.fabric.user,
            command: class.to_string(),
            instance_type: Some("VirtualMachine".into()),
            instance_id: Some(instance),
            status: JobStatus::Pending,
            result_code: 0,
            result_type: None,
            result: None,
            created: Utc::now(),
            completed: None,
        };
        let env = Envelope::new(message_type, body).with_job_id(job.id.to_string());
        let row = outbox::to_outbox(COMMANDS_EXCHANGE, message_type, &env);
        let mut tx = Transaction::new();
        tx.create(&job).enqueue(&row);
        self.store.transact(tx).await.expect("job and its command");
        job.id
    }

    pub async fn submit_deploy(&self, request: &vm_msg::Deploy) -> Id<AsyncJob> {
        self.submit(
            "org.apache.cloudstack.api.command.user.vm.DeployVMCmd",
            vm_msg::DEPLOY,
            request.vm_id.parse().expect("vm id"),
            request,
        )
        .await
    }

    pub async fn submit_destroy(&self, vm_id: Id<Vm>, expunge: bool) -> Id<AsyncJob> {
        self.submit(
            "org.apache.cloudstack.api.command.admin.vm.DestroyVMCmdByAdmin",
            vm_msg::DESTROY,
            vm_id.uuid(),
            &vm_msg::Destroy {
                vm_id: vm_id.to_string(),
                expunge,
            },
        )
        .await
    }

    pub async fn submit_expunge(&self, vm_id: Id<Vm>) -> Id<AsyncJob> {
        self.submit(
            "org.apache.cloudstack.api.command.admin.vm.ExpungeVMCmd",
            vm_msg::EXPUNGE,
            vm_id.uuid(),
            &vm_msg::Expunge {
                vm_id: vm_id.to_string(),
            },
        )
        .await
    }

    /// Queues a message for the next pump (a late redelivery).
    pub fn redeliver(&mut self, msg: Msg) {
        self.pending.push_back(msg);
    }

    /// Delivers messages until none is pending and the outbox is empty.
    pub async fn pump(&mut self, policy: &mut Policy) -> PumpReport {
        let mut report = PumpReport::default();
        let mut transients: HashMap<(Uuid, Dest), usize> = HashMap::new();
        loop {
            self.drain_outbox(&mut report).await;
            report.max_pending = report.max_pending.max(self.pending.len());
            let next = match &mut policy.rng {
                Some(rng) if !self.pending.is_empty() => {
                    let i = rng.random_range(0..self.pending.len());
                    self.pending.remove(i)
                }
                _ => self.pending.pop_front(),
            };
            let Some(msg) = next else { break };
            assert!(
                report.deliveries < MAX_DELIVERIES,
                "the pump made {MAX_DELIVERIES} deliveries and the sagas have not ended"
            );
            let mut d = if msg.retry {
                Delivery::ONCE
            } else {
                (policy.deliver)(&msg)
            };
            if matches!(msg.dest, Dest::Agent(_)) {
                d.concurrent = false;
            }
            let copies = d.copies.max(1);
            report.deliveries += copies;
            *report.by_dest.entry(msg.dest.name()).or_default() += copies;
            if msg.kind == MsgKind::Command && msg.is_undo() {
                report.undo_commands += copies;
            }
            let mut sent: Vec<Msg> = Vec::new();
            for i in 0..copies {
                let replaced = policy.mutate.as_mut().and_then(|f| f(&msg, i));
                match replaced.map(Msg::route) {
                    Some(Ok(m)) => sent.push(m),
                    Some(Err(e)) => report.permanent.push(e),
                    None => sent.push(msg.clone()),
                }
            }
            let fake =
                msg.kind == MsgKind::Command && policy.fake_done.as_mut().is_some_and(|f| f(&msg));
            let outcomes = if fake {
                sent.iter().map(fake_done).collect()
            } else if d.concurrent && copies > 1 {
                report.concurrent += copies;
                futures::future::join_all(sent.iter().map(|m| self.deliver_once(m))).await
            } else {
                let mut v = Vec::new();
                for m in &sent {
                    v.push(self.deliver_once(m).await);
                }
                v
            };
            for outcome in outcomes {
                match outcome {
                    Ok(Some(effects)) => {
                        for out in effects {
                            match self.reenvelope(&out, policy, &mut report) {
                                Ok(m) => self.pending.push_back(m),
                                Err(e) => report.permanent.push(e),
                            }
                        }
                    }
                    Ok(None) => report.unanswered += 1,
                    Err(HandlerError::Transient(e)) => {
                        report.transient += 1;
                        let n = transients
                            .entry((msg.env.message_id, msg.dest.clone()))
                            .or_default();
                        *n += 1;
                        if *n > MAX_TRANSIENT {
                            report.permanent.push(format!(
                                "{} to {}: still transient after {MAX_TRANSIENT} tries: {e}",
                                msg.env.message_type,
                                msg.dest.name()
                            ));
                        } else {
                            let mut again = msg.clone();
                            again.retry = true;
                            self.pending.push_back(again);
                        }
                    }
                    Err(HandlerError::Permanent(e)) => report.permanent.push(format!(
                        "{} ({:?}) to {}: {e}",
                        msg.env.message_type,
                        msg.step,
                        msg.dest.name()
                    )),
                }
            }
        }
        report
    }

    /// Pumps, then delivers `late` again (as a broker redelivering after the
    /// saga moved on) and pumps once more.
    pub async fn pump_then_redeliver(
        &mut self,
        policy: &mut Policy,
        late: impl Fn() -> Vec<Msg>,
    ) -> PumpReport {
        let mut report = self.pump(policy).await;
        for m in late() {
            self.redeliver(m);
        }
        let second = self.pump(policy).await;
        report.add(&second);
        report
    }

    async fn drain_outbox(&mut self, report: &mut PumpReport) {
        let mut rows = self
            .store
            .outbox_pending(Duration::ZERO, 100_000)
            .await
            .expect("outbox");
        rows.sort_by_key(|r| (r.created, r.id));
        for row in rows {
            let env = outbox::envelope_of(&row);
            match Msg::route(env) {
                Ok(m) => self.pending.push_back(m),
                Err(e) => report.permanent.push(e),
            }
            self.store
                .outbox_sent(row.id)
                .await
                .expect("outbox row removed");
        }
    }

    /// A handler's effect as the next consumer receives it; a `Done` result
    /// of the step the policy fails becomes the injected failure.
    fn reenvelope(
        &self,
        out: &Outgoing,
        policy: &Policy,
        report: &mut PumpReport,
    ) -> Result<Msg, String> {
        let mut env = Envelope::from_rmq(&rmq_event::render_message(
            &out.properties,
            &out.body,
            false,
        ))
        .map_err(|e| format!("an effect does not decode: {e}"))?;
        if let Some((saga, step)) = &policy.fail_result
            && env.message_type.ends_with(".step-result")
            && let Ok(mut result) = serde_json::from_slice::<StepResult>(&env.body)
            && result.saga.saga_id == saga.to_string()
            && result.saga.step == *step
            && !result.saga.undo
            && matches!(result.outcome, Outcome::Done { .. })
        {
            result.outcome = Outcome::Failed {
                code: INJECTED_CODE,
                text: INJECTED.into(),
            };
            env.body = serde_json::to_vec(&result).expect("a step result serialises");
            report.injected += 1;
        }
        Msg::route(env)
    }

    /// One handler call; None: the host did not answer.
    async fn deliver_once(&self, msg: &Msg) -> Result<Option<Vec<Outgoing>>, HandlerError> {
        let env = msg.env.clone();
        match &msg.dest {
            Dest::Orchestrator => self.orchestrator.call(env).await.map(Some),
            Dest::Network => self.network.call(env).await.map(Some),
            Dest::Compute => self.compute.call(env).await.map(Some),
            Dest::Storage => self.storage.call(env).await.map(Some),
            Dest::Agent(host) => {
                let driver = self
                    .agents
                    .get(host)
                    .ok_or_else(|| HandlerError::Permanent(format!("no agent for host {host}")))?;
                let command = Command::decode(&env).map_err(HandlerError::Permanent)?;
                match answer(driver, host, &env, &command).await {
                    None => Ok(None),
                    Some(r) => r.map(Some),
                }
            }
        }
    }

    /// The pending messages (not yet delivered).
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    /// What the tests compare (see [`Slate`]).
    pub async fn slate(&self) -> Slate {
        let mut rows = BTreeMap::new();
        async fn add<T: Object + Serialize>(
            store: &Store,
            rows: &mut BTreeMap<(&'static str, Uuid), Value>,
        ) {
            for v in store.walk::<T>(&Index::All).await.expect("walk") {
                rows.insert(
                    (T::KIND, v.value.id()),
                    serde_json::to_value(&v.value).expect("row"),
                );
            }
        }
        add::<Reservation>(&self.store, &mut rows).await;
        add::<IpAddress>(&self.store, &mut rows).await;
        add::<Nic>(&self.store, &mut rows).await;
        add::<Volume>(&self.store, &mut rows).await;
        add::<Network>(&self.store, &mut rows).await;
        add::<VlanClaim>(&self.store, &mut rows).await;
        let hosts = self
            .store
            .walk::<Host>(&Index::All)
            .await
            .expect("hosts")
            .into_iter()
            .map(|h| {
                (
                    h.value.name.clone(),
                    (h.value.cpu_allocated, h.value.memory_allocated),
                )
            })
            .collect();
        let pools = self
            .store
            .walk::<StoragePool>(&Index::All)
            .await
            .expect("pools")
            .into_iter()
            .map(|p| (p.value.name.clone(), p.value.disk_size_allocated))
            .collect();
        let sim = self
            .agents
            .iter()
            .map(|(h, d)| (h.clone(), d.snapshot()))
            .collect();
        Slate {
            rows,
            hosts,
            pools,
            sim,
        }
    }

    pub async fn job(&self, id: Id<AsyncJob>) -> AsyncJob {
        self.store
            .get(id)
            .await
            .expect("store")
            .expect("the job exists")
            .value
    }

    pub async fn saga_of(&self, job: Id<AsyncJob>) -> Option<Saga> {
        self.store
            .get(saga_id_for_job(job))
            .await
            .expect("store")
            .map(|s| s.value)
    }

    pub async fn vm(&self, id: Id<Vm>) -> Option<Vm> {
        self.store.get(id).await.expect("store").map(|v| v.value)
    }

    pub async fn all<T: Object>(&self) -> Vec<T> {
        self.store
            .walk::<T>(&Index::All)
            .await
            .expect("walk")
            .into_iter()
            .map(|v| v.value)
            .collect()
    }

    /// The saga's plan for this deploy, as the orchestrator makes it.
    pub async fn deploy_plan(&self, request: &vm_msg::Deploy) -> Vec<&'static str> {
        let params = vm::deploy_params(&self.store, request)
            .await
            .expect("deploy parameters");
        vm::plan(
            vm::DEPLOY,
            &serde_json::to_value(params).expect("parameters"),
        )
        .expect("plan")
    }

    /// The saga's plan for removing `vm` as it is now.
    pub async fn remove_plan(
        &self,
        vm: &Vm,
        expunge: bool,
        expunge_only: bool,
    ) -> Vec<&'static str> {
        let params = vm::remove_params(&self.store, vm, expunge, expunge_only)
            .await
            .expect("remove parameters");
        let kind = if expunge_only {
            vm::EXPUNGE
        } else {
            vm::DESTROY
        };
        vm::plan(kind, &serde_json::to_value(params).expect("parameters")).expect("plan")
    }

    /// Deploys with every message once; panics unless the job succeeds.
    pub async fn deploy_ok(&mut self, request: &vm_msg::Deploy) -> Id<Vm> {
        let job = self.submit_deploy(request).await;
        let report = self.pump(&mut Policy::once()).await;
        self.expect_succeeded(job, &report, "deploy").await;
        request.vm_id.parse().expect("vm id")
    }

    pub async fn destroy_ok(&mut self, vm: Id<Vm>, expunge: bool) {
        let job = self.submit_destroy(vm, expunge).await;
        let report = self.pump(&mut Policy::once()).await;
        self.expect_succeeded(job, &report, "destroy").await;
    }

    async fn expect_succeeded(&self, job: Id<AsyncJob>, report: &PumpReport, what: &str) {
        let j = self.job(job).await;
        assert!(
            j.status == JobStatus::Succeeded && report.permanent.is_empty(),
            "{what}: job {:?} {:?}; parked: {:?}",
            j.status,
            j.result,
            report.permanent
        );
    }
}

/// A step command's answer `Done` with an empty output, as its component
/// would send it, without running the step (sabotage).
fn fake_done(msg: &Msg) -> Result<Option<Vec<Outgoing>>, HandlerError> {
    let component = msg
        .env
        .message_type
        .split('.')
        .next()
        .unwrap_or_default()
        .to_string();
    let step = msg
        .step
        .clone()
        .ok_or_else(|| HandlerError::Permanent("a command without its step".into()))?;
    stratus_messaging::step::reply(
        &msg.env,
        &format!("{component}.step-result"),
        step,
        Ok::<_, stratus_messaging::step::StepError>(serde_json::json!({})),
    )
    .map(Some)
}

/// Loads `infra/simulator-zone.json` as bootstrap would, the hosts Up (as
/// the fabric monitor marks them once their agents pass), plus a user
/// account to own the VMs.
async fn load_zone(store: &Store) -> Fabric {
    let spec: Value = serde_json::from_str(ZONE_FILE).expect("zone file");
    let now = Utc::now();
    let s = |v: &Value| v.as_str().expect("a string in the zone file").to_string();
    let n = |v: &Value| v.as_u64().expect("a number in the zone file");
    let z = &spec["zone"];
    let domain = Domain {
        id: Domain::id_for("ROOT"),
        name: "ROOT".into(),
        parent_id: None,
        path: "ROOT".into(),
        created: now,
    };
    let account = Account {
        id: Account::id_for(domain.id, "alice"),
        name: "alice".into(),
        domain_id: domain.id,
        account_type: AccountType::User,
        state: AccountState::Enabled,
        created: now,
    };
    let user = User {
        id: User::id_for(domain.id, "alice"),
        account_id: account.id,
        username: "alice".into(),
        password_hash: String::new(),
        firstname: "Alice".into(),
        lastname: "User".into(),
        email: "alice@stratus.local".into(),
        state: AccountState::Enabled,
        created: now,
        login_attempts: 0,
    };
    let zone = Zone {
        id: Id::new(),
        name: s(&z["name"]),
        network_type: NetworkType::Advanced,
        allocation_state: AllocationState::Enabled,
        dns1: s(&z["dns1"]),
        internal_dns1: s(&z["internal_dns1"]),
        guest_cidr_address: z["guest_cidr_address"].as_str().map(String::from),
        security_groups_enabled: false,
        local_storage_enabled: false,
        vlan_range: z["vlan"].as_str().map(String::from),
        created: now,
    };
    let mut tx = Transaction::new();
    tx.create(&domain)
        .create(&account)
        .create(&user)
        .create(&zone);
    let p = &z["pods"][0];
    let pod = Pod {
        id: Id::new(),
        name: s(&p["name"]),
        zone_id: zone.id,
        gateway: s(&p["gateway"]),
        netmask: s(&p["netmask"]),
        start_ip: s(&p["start_ip"]),
        end_ip: s(&p["end_ip"]),
        allocation_state: AllocationState::Enabled,
    };
    tx.create(&pod);
    let mut clusters = Vec::new();
    let mut hosts = Vec::new();
    for c in p["clusters"].as_array().expect("clusters") {
        let cluster = Cluster {
            id: Id::new(),
            name: s(&c["name"]),
            zone_id: zone.id,
            pod_id: pod.id,
            hypervisor: s(&c["hypervisor"]),
            cluster_type: "CloudManaged".into(),
            allocation_state: AllocationState::Enabled,
            managed_state: ManagedState::Managed,
            cpu_overprovisioning: None,
            memory_overprovisioning: None,
        };
        tx.create(&cluster);
        clusters.push(cluster.id);
        for h in c["hosts"].as_array().expect("hosts") {
            let host = Host {
                id: Id::new(),
                name: s(&h["name"]),
                zone_id: zone.id,
                pod_id: pod.id,
                cluster_id: cluster.id,
                hypervisor: s(&c["hypervisor"]),
                host_type: "Routing".into(),
                state: HostState::Up,
                resource_state: ResourceState::Enabled,
                ip_address: s(&h["ip_address"]),
                cpu_number: n(&h["cpu_number"]) as u32,
                cpu_speed: n(&h["cpu_speed"]) as u32,
                memory_total: n(&h["memory_mb"]) * 1024 * 1024,
                cpu_allocated: 0,
                memory_allocated: 0,
                last_pinged: Some(now),
                created: now,
                host_tags: vec![],
            };
            tx.create(&host);
            hosts.push(host);
        }
    }
    let ps = &z["primary_storage"][0];
    let pool = StoragePool {
        id: Id::new(),
        name: s(&ps["name"]),
        zone_id: zone.id,
        pod_id: None,
        cluster_id: None,
        scope: StorageScope::Zone,
        pool_type: "NetworkFilesystem".into(),
        url: s(&ps["url"]),
        state: StoragePoolState::Up,
        disk_size_total: n(&ps["capacity_gb"]) * 1024 * 1024 * 1024,
        disk_size_allocated: 0,
    };
    tx.create(&pool);
    let so = &spec["service_offerings"][0];
    let offering = ServiceOffering {
        id: Id::new(),
        name: s(&so["name"]),
        display_text: s(&so["display_text"]),
        cpu_number: n(&so["cpu_number"]) as u32,
        cpu_speed: n(&so["cpu_speed"]) as u32,
        memory: n(&so["memory_mb"]) as u32,
        offer_ha: false,
        storage_type: StorageType::Shared,
        host_tags: None,
        created: now,
    };
    tx.create(&offering);
    let disk = |d: &Value| DiskOffering {
        id: Id::new(),
        name: s(&d["name"]),
        display_text: s(&d["display_text"]),
        disk_size: n(&d["disk_size_gb"]),
        is_customized: n(&d["disk_size_gb"]) == 0,
        storage_type: StorageType::Shared,
        tags: None,
        created: now,
    };
    let disks: Vec<DiskOffering> = spec["disk_offerings"]
        .as_array()
        .expect("disk offerings")
        .iter()
        .map(disk)
        .collect();
    for d in &disks {
        tx.create(d);
    }
    let disk_fixed = disks
        .iter()
        .find(|d| !d.is_customized)
        .expect("a fixed disk offering")
        .clone();
    let disk_custom = disks
        .iter()
        .find(|d| d.is_customized)
        .expect("a custom disk offering")
        .clone();
    let t = &spec["templates"][0];
    let template = Template {
        id: Id::new(),
        name: s(&t["name"]),
        display_text: s(&t["display_text"]),
        account_id: account.id,
        zone_id: None,
        os_type_name: s(&t["os_type_name"]),
        format: s(&t["format"]),
        hypervisor: s(&t["hypervisor"]),
        is_public: true,
        is_featured: true,
        is_ready: true,
        password_enabled: false,
        size: n(&t["size_gb"]) * 1024 * 1024 * 1024,
        created: now,
    };
    tx.create(&template);
    for o in spec["network_offerings"]
        .as_array()
        .expect("network offerings")
    {
        let guest_ip_type = match o["guest_ip_type"].as_str() {
            Some("Isolated") => GuestIpType::Isolated,
            Some("Shared") => GuestIpType::Shared,
            _ => GuestIpType::L2,
        };
        tx.create(&NetworkOffering {
            id: Id::new(),
            name: s(&o["name"]),
            display_text: s(&o["display_text"]),
            guest_ip_type,
            state: AllocationState::Enabled,
            is_default: o["is_default"].as_bool().unwrap_or(false),
            specify_vlan: o["specify_vlan"].as_bool().unwrap_or(false),
            services: o["services"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|x| x.as_str().map(String::from))
                        .collect()
                })
                .unwrap_or_default(),
        });
    }
    store.transact(tx).await.expect("the zone's rows");
    Fabric {
        zone,
        pod: pod.id,
        clusters,
        hosts,
        pool: pool.id,
        offering,
        disk_fixed,
        disk_custom,
        template,
        domain: domain.id,
        account,
        user: user.id,
    }
}
