//! The agent's work: it consumes its host's queue (`stratus.agent.<host>`,
//! declared from the topology's instance-queue template), runs each saga
//! step's command on the host's [`Driver`] and answers the orchestrator.
//!
//! - **Order per VM.** Each VM has one task that takes its commands in the
//!   order they arrived (an mpsc per `vm_id`, as propolis's state driver
//!   takes a VM's requests), so a stop sent while a start is still running
//!   waits for it; different VMs run at once. An idle VM's task ends after a
//!   minute and is made again by its next command.
//! - **Answer, then ack.** A command's `agent.step-result` (and, when a start
//!   or stop succeeded, an `agent.vm-report` for that VM) is published with
//!   confirms, and only then is the delivery acked. When the agent or its
//!   connection dies in between, the broker redelivers the command and the
//!   driver's idempotence makes running it twice safe; the answer's message
//!   id derives from the command's, so it is the same answer both times.
//! - **No answer.** A command the host does not answer (a simulated fault) is
//!   acked with nothing published, logged at warn: the saga's step timeout
//!   ends the job, as CloudStack's agent that threw.
//! - **Undecodable.** A delivery that is not an envelope, or not a host
//!   agent command, or whose body does not decode, is logged and rejected
//!   without requeue: the queue dead-letters it to the parking exchange.
//! - **Broker.** Every wait on the broker is bounded by the configured broker
//!   wait. When the connection or channel dies (a broker restart), the agent
//!   reconnects with backoff (at most 5 s between tries) and consumes again;
//!   it never exits for it.
//! - **Full report.** After its first successful consume the agent publishes
//!   an `agent.vm-report` with `full: true` listing every VM the host holds,
//!   for the compute function to reconcile.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use lapin::message::Delivery;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicNackOptions, BasicQosOptions, BasicRejectOptions,
};
use lapin::types::FieldTable;
use lapin::{Acker, BasicProperties, Connection};
use serde_json::{Value, json};
use stratus_contracts::config::Config;
use stratus_contracts::message_types::Placement;
use stratus_contracts::message_types::agent::{self, PowerState, VmPower, VmReport};
use stratus_contracts::message_types::saga::{Step, StepRef};
use stratus_contracts::names;
use stratus_contracts::topology::{Queue, Topology};
use stratus_messaging::broker::{self, within};
use stratus_messaging::envelope::{DecodeError, Envelope};
use stratus_messaging::publisher::{Outgoing, PublishError, Publisher};
use stratus_messaging::step::{self, StepError};
use stratus_messaging::{emit, rmq_event};
use tokio::sync::mpsc;
use tracing::Instrument;

use crate::driver::{Driver, DriverError};

/// The topology's template of an agent's queue.
pub const QUEUE_TEMPLATE: &str = "stratus.agent.{instance}";
/// Deliveries the broker may hand the agent before it acks any.
pub const PREFETCH: u16 = 32;
/// A VM's task ends after this long without a command.
const IDLE: Duration = Duration::from_secs(60);
/// How often a consumer waiting for deliveries looks at its connection, so a
/// link that died without a word is noticed.
const LINK_CHECK: Duration = Duration::from_secs(1);
/// Publishes of one answer before its command goes back to the queue (a few
/// seconds of backoff, each publish bounded by the broker wait; after a broker
/// restart the dropped channel has handed the command back anyway).
const PUBLISH_TRIES: u32 = 5;

/// A host agent command, decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    CreateVolumes(Step<agent::CreateVolumes>),
    DestroyVolumes(Step<agent::DestroyVolumes>),
    StartVm(Step<agent::StartVm>),
    StopVm(Step<agent::StopVm>),
}

impl Command {
    /// The command an envelope carries, by its message type.
    pub fn decode(env: &Envelope) -> Result<Self, String> {
        let body = |e: DecodeError| e.to_string();
        Ok(match env.message_type.as_str() {
            agent::CREATE_VOLUMES => Command::CreateVolumes(env.body().map_err(body)?),
            agent::DESTROY_VOLUMES => Command::DestroyVolumes(env.body().map_err(body)?),
            agent::START_VM => Command::StartVm(env.body().map_err(body)?),
            agent::STOP_VM => Command::StopVm(env.body().map_err(body)?),
            other => return Err(format!("{other:?} is not a host agent command")),
        })
    }

    pub fn vm_id(&self) -> &str {
        match self {
            Command::CreateVolumes(s) => &s.input.vm_id,
            Command::DestroyVolumes(s) => &s.input.vm_id,
            Command::StartVm(s) => &s.input.vm_id,
            Command::StopVm(s) => &s.input.vm_id,
        }
    }

    pub fn saga(&self) -> &StepRef {
        match self {
            Command::CreateVolumes(s) => &s.saga,
            Command::DestroyVolumes(s) => &s.saga,
            Command::StartVm(s) => &s.saga,
            Command::StopVm(s) => &s.saga,
        }
    }

    pub fn placement(&self) -> &Placement {
        match self {
            Command::CreateVolumes(s) => &s.input.placement,
            Command::DestroyVolumes(s) => &s.input.placement,
            Command::StartVm(s) => &s.input.placement,
            Command::StopVm(s) => &s.input.placement,
        }
    }
}

/// The envelope of a delivery, read by the same rules as a function's
/// (through the `aws:rmq` rendering the harness decodes), so an agent and a
/// function agree on what a message says.
pub fn envelope_of(properties: &BasicProperties, body: &[u8]) -> Result<Envelope, DecodeError> {
    Envelope::from_rmq(&rmq_event::render_message(properties, body, false))
}

/// A delivery's envelope and command, or why it is unusable.
pub fn decode(properties: &BasicProperties, body: &[u8]) -> Result<(Envelope, Command), String> {
    let env = envelope_of(properties, body).map_err(|e| format!("undecodable envelope: {e}"))?;
    let command = Command::decode(&env)?;
    Ok((env, command))
}

/// Doubling pauses with jitter over their upper half, up to a ceiling.
pub struct Backoff {
    first: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    pub fn new(first: Duration, max: Duration) -> Self {
        Self {
            first,
            max,
            next: first,
        }
    }

    pub fn next_delay(&mut self) -> Duration {
        let ceiling = self.next;
        self.next = (self.next * 2).min(self.max);
        let half = ceiling / 2;
        half + half.mul_f64(rand::random::<f64>())
    }

    pub fn reset(&mut self) {
        self.next = self.first;
    }
}

/// One command on its way through its VM's task.
struct Job {
    env: Envelope,
    command: Command,
    acker: Acker,
}

/// What a command did: its step output and, for a start or stop, the VM's
/// new power state.
pub type Done = (Value, Option<VmPower>);

/// Runs `command` on `host`'s driver and makes its answer: the step result
/// (and, for a start or stop that succeeded, the VM's report); None when the
/// host does not answer (a simulated fault). Transport-free: the consumer
/// publishes what this returns, and the in-process saga tests deliver it.
pub async fn answer<D: Driver>(
    driver: &D,
    host: &str,
    env: &Envelope,
    command: &Command,
) -> Option<Result<Vec<Outgoing>, stratus_messaging::HandlerError>> {
    let saga = command.saga().clone();
    Some(match execute(driver, host, command).await {
        Err(DriverError::NoAnswer(reason)) => {
            tracing::warn!(reason = %reason, "the host did not answer: no step result is sent; the saga's step timeout ends the job");
            return None;
        }
        Ok((output, power)) => {
            let answer = step::reply(env, agent::STEP_RESULT, saga, Ok::<_, StepError>(output));
            answer.map(|mut out| {
                if let Some(power) = power {
                    let report = VmReport {
                        host_name: host.to_string(),
                        full: false,
                        vms: vec![power],
                    };
                    out.push(emit(env, "vm-report", agent::VM_REPORT, &report));
                }
                out
            })
        }
        Err(DriverError::Failed { code, text }) => step::reply(
            env,
            agent::STEP_RESULT,
            saga,
            Err::<Value, _>(StepError::Failed { code, text }),
        ),
    })
}

/// Runs a command on `host`'s driver.
pub async fn execute<D: Driver>(
    driver: &D,
    host: &str,
    command: &Command,
) -> Result<Done, DriverError> {
    let placement = command.placement();
    if placement.host_name != host {
        return Err(DriverError::internal(format!(
            "the command is for host {}, and this is the agent of host {}",
            placement.host_name, host
        )));
    }
    match command {
        Command::CreateVolumes(s) => {
            for volume in &s.input.volumes {
                driver
                    .create_volume(placement, &s.input.vm_id, volume)
                    .await?;
            }
            Ok((json!({}), None))
        }
        Command::DestroyVolumes(s) => {
            // Destroying a VM's disks ends the VM on this host: were it
            // still (or again) running, as when a start that came late is
            // undone after its disks' undo, it is stopped first.
            driver.stop_vm(placement, &s.input.vm_id).await?;
            for volume_id in &s.input.volume_ids {
                driver
                    .destroy_volume(placement, &s.input.vm_id, volume_id)
                    .await?;
            }
            Ok((json!({}), None))
        }
        Command::StartVm(s) => {
            driver.start_vm(&s.input).await?;
            Ok((
                json!({ "power_state": PowerState::PowerOn }),
                Some(VmPower {
                    vm_id: s.input.vm_id.clone(),
                    power_state: PowerState::PowerOn,
                }),
            ))
        }
        Command::StopVm(s) => {
            driver.stop_vm(placement, &s.input.vm_id).await?;
            Ok((
                json!({}),
                Some(VmPower {
                    vm_id: s.input.vm_id.clone(),
                    power_state: PowerState::PowerOff,
                }),
            ))
        }
    }
}

pub struct Agent<D: Driver> {
    config: Config,
    topology: Arc<Topology>,
    queue: Queue,
    host: String,
    driver: Arc<D>,
    publisher: Publisher,
    /// The task of each VM with commands in flight.
    vms: Mutex<HashMap<String, mpsc::UnboundedSender<Job>>>,
    /// Whether the full report of this process is on its way.
    reported: AtomicBool,
}

impl<D: Driver> Agent<D> {
    pub fn new(config: Config, host: &str, driver: D) -> anyhow::Result<Arc<Self>> {
        let topology = Arc::new(broker::topology(&config)?);
        let queue = topology
            .instance_queue(QUEUE_TEMPLATE, host)
            .ok_or_else(|| anyhow::anyhow!("the topology has no {QUEUE_TEMPLATE} queue"))?;
        let publisher = Publisher::new(
            config.clone(),
            topology.clone(),
            &format!("stratus-agent {host}"),
        );
        Ok(Arc::new(Self {
            config,
            topology,
            queue,
            host: host.to_string(),
            driver: Arc::new(driver),
            publisher,
            vms: Mutex::new(HashMap::new()),
            reported: AtomicBool::new(false),
        }))
    }

    pub fn queue_name(&self) -> &str {
        &self.queue.name
    }

    /// Consumes the host's queue until the process ends, reconnecting after
    /// every broker failure.
    pub async fn run(self: Arc<Self>) {
        // At most 5 s between tries: a broker back from a restart is consumed again within seconds.
        let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(5));
        loop {
            let error = self.session(&mut backoff).await;
            let pause = backoff.next_delay();
            tracing::warn!(host = %self.host, queue = %self.queue.name, error = %error, retry_in_ms = pause.as_millis() as u64, "agent is not consuming its queue (broker link lost or refused); reconnecting");
            tokio::time::sleep(pause).await;
        }
    }

    /// One connection's life: returns why it ended.
    async fn session(self: &Arc<Self>, backoff: &mut Backoff) -> anyhow::Error {
        let connection =
            match broker::connect(&self.config, &format!("stratus-agent {}", self.host)).await {
                Ok(c) => c,
                Err(e) => return e.into(),
            };
        let error = match self.consume_on(&connection, backoff).await {
            Ok(()) => anyhow::anyhow!("the consumer ended"),
            Err(e) => e,
        };
        broker::close(&connection, self.config.broker_wait, "agent reconnecting").await;
        error
    }

    async fn consume_on(
        self: &Arc<Self>,
        connection: &Connection,
        backoff: &mut Backoff,
    ) -> anyhow::Result<()> {
        let wait = self.config.broker_wait;
        within(
            wait,
            "declaring the agent's queue",
            broker::declare_queue(connection, &self.topology, &self.queue),
        )
        .await?;
        let channel = within(wait, "opening a channel", connection.create_channel()).await?;
        within(
            wait,
            "basic.qos",
            channel.basic_qos(PREFETCH, BasicQosOptions::default()),
        )
        .await?;
        let tag = format!("stratus-agent.{}", self.host);
        let mut consumer = within(
            wait,
            "basic.consume",
            channel.basic_consume(
                self.queue.name.as_str().into(),
                tag.as_str().into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            ),
        )
        .await?;
        backoff.reset();
        tracing::info!(host = %self.host, queue = %self.queue.name, prefetch = PREFETCH, "agent consuming");
        if !self.reported.swap(true, Ordering::SeqCst) {
            tokio::spawn(self.clone().report_all());
        }
        let mut check = tokio::time::interval(LINK_CHECK);
        loop {
            tokio::select! {
                next = consumer.next() => match next {
                    Some(Ok(delivery)) => self.dispatch(delivery).await,
                    Some(Err(e)) => return Err(e.into()),
                    None => anyhow::bail!("the broker cancelled the consumer"),
                },
                _ = check.tick() => {
                    if !(connection.status().connected() && channel.status().connected()) {
                        anyhow::bail!(
                            "the {} closed without a word",
                            if connection.status().connected() { "channel" } else { "connection" }
                        );
                    }
                }
            }
        }
    }

    /// Hands a delivery to its VM's task, or rejects it when it is unusable.
    async fn dispatch(self: &Arc<Self>, delivery: Delivery) {
        let (env, command) = match decode(&delivery.properties, &delivery.data) {
            Ok(decoded) => decoded,
            Err(reason) => {
                let p = &delivery.properties;
                tracing::error!(
                    host = %self.host,
                    message_id = p.message_id().as_ref().map(|s| s.as_str()).unwrap_or(""),
                    message_type = p.kind().as_ref().map(|s| s.as_str()).unwrap_or(""),
                    reason = %reason,
                    "unusable command; rejected to the parking queue"
                );
                self.settle(
                    "basic.reject",
                    delivery.acker.reject(BasicRejectOptions { requeue: false }),
                )
                .await;
                return;
            }
        };
        self.enqueue(Job {
            env,
            command,
            acker: delivery.acker,
        });
    }

    fn enqueue(self: &Arc<Self>, mut job: Job) {
        let vm_id = job.command.vm_id().to_string();
        let mut vms = self.vms.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(tx) = vms.get(&vm_id) {
            match tx.send(job) {
                Ok(()) => return,
                // The task ended without leaving the map (it panicked): make another.
                Err(mpsc::error::SendError(returned)) => job = returned,
            }
        }
        let (tx, rx) = mpsc::unbounded_channel();
        // The receiver is alive: it is right here.
        let _ = tx.send(job);
        vms.insert(vm_id.clone(), tx);
        tokio::spawn(self.clone().drive_vm(vm_id, rx));
    }

    /// A VM's task: its commands one after another, in arrival order.
    async fn drive_vm(self: Arc<Self>, vm_id: String, mut rx: mpsc::UnboundedReceiver<Job>) {
        loop {
            let job = match tokio::time::timeout(IDLE, rx.recv()).await {
                Ok(Some(job)) => job,
                Ok(None) => return,
                Err(_) => {
                    // Leave the map under its lock, unless a command came in meanwhile.
                    let mut vms = self.vms.lock().unwrap_or_else(|p| p.into_inner());
                    match rx.try_recv() {
                        Ok(job) => job,
                        Err(_) => {
                            vms.remove(&vm_id);
                            return;
                        }
                    }
                }
            };
            let saga = job.command.saga();
            let span = tracing::info_span!(
                "command",
                host = %self.host,
                vm_id = %vm_id,
                saga_id = %saga.saga_id,
                step = %saga.step,
                undo = saga.undo,
                job_id = job.env.job_id.as_deref().unwrap_or(""),
                message_id = %job.env.message_id,
                message_type = %job.env.message_type,
                attempt = job.env.attempt,
            );
            self.run_job(job).instrument(span).await;
        }
    }

    async fn run_job(&self, job: Job) {
        let Job {
            env,
            command,
            acker,
        } = job;
        let outgoing = match answer(&*self.driver, &self.host, &env, &command).await {
            None => {
                self.settle("basic.ack", acker.ack(BasicAckOptions::default()))
                    .await;
                return;
            }
            Some(out) => out,
        };
        let outgoing = match outgoing {
            Ok(out) => out,
            Err(e) => {
                // step::reply refuses only a transient error, which no driver outcome maps to.
                tracing::error!(error = %e, "no answer could be made; the command goes back to the queue");
                self.requeue(&acker).await;
                return;
            }
        };
        // A failed publish is tried again here rather than returned to the
        // queue at once: the VM's later commands wait behind it, so the
        // order of its commands holds.
        let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(5));
        for attempt in 1..=PUBLISH_TRIES {
            match self.publisher.publish_all(&outgoing).await {
                Ok(()) => {
                    tracing::info!(published = outgoing.len(), "command answered");
                    self.settle("basic.ack", acker.ack(BasicAckOptions::default()))
                        .await;
                    return;
                }
                Err(e @ PublishError::Unroutable { .. }) => {
                    tracing::error!(error = %e, "the answer routes nowhere; the command is rejected to the parking queue");
                    self.settle(
                        "basic.reject",
                        acker.reject(BasicRejectOptions { requeue: false }),
                    )
                    .await;
                    return;
                }
                Err(e) if attempt < PUBLISH_TRIES => {
                    let pause = backoff.next_delay();
                    tracing::warn!(error = %e, attempt, retry_in_ms = pause.as_millis() as u64, "the answer could not be published; trying again");
                    tokio::time::sleep(pause).await;
                }
                Err(e) => {
                    tracing::warn!(error = %e, attempt, "the answer could not be published; the command goes back to the queue");
                }
            }
        }
        self.requeue(&acker).await;
    }

    /// Publishes the full report of every VM the host holds, trying again
    /// (with backoff) until the broker takes it.
    async fn report_all(self: Arc<Self>) {
        let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(5));
        loop {
            let vms = match self.driver.list_vms().await {
                Ok(vms) => vms,
                Err(e) => {
                    let pause = backoff.next_delay();
                    tracing::warn!(host = %self.host, error = %e, retry_in_ms = pause.as_millis() as u64, "cannot list the host's VMs for the full report");
                    tokio::time::sleep(pause).await;
                    continue;
                }
            };
            let count = vms.len();
            let report = VmReport {
                host_name: self.host.clone(),
                full: true,
                vms,
            };
            let env = Envelope::new(agent::VM_REPORT, &report);
            let out = Outgoing::envelope(names::INTERNAL_EVENTS_EXCHANGE, agent::VM_REPORT, &env);
            match self.publisher.publish(out).await {
                Ok(()) => {
                    tracing::info!(host = %self.host, vms = count, message_id = %env.message_id, "full VM report sent");
                    return;
                }
                Err(e) if e.is_permanent() => {
                    tracing::error!(host = %self.host, error = %e, "the full VM report routes nowhere (is the compute function's queue declared?)");
                    return;
                }
                Err(e) => {
                    let pause = backoff.next_delay();
                    tracing::warn!(host = %self.host, error = %e, retry_in_ms = pause.as_millis() as u64, "the full VM report could not be published; trying again");
                    tokio::time::sleep(pause).await;
                }
            }
        }
    }

    async fn requeue(&self, acker: &Acker) {
        self.settle(
            "basic.nack",
            acker.nack(BasicNackOptions {
                requeue: true,
                ..Default::default()
            }),
        )
        .await;
    }

    /// Acks, nacks or rejects within the broker wait. A channel that died
    /// first leaves the delivery to the broker, which redelivers it.
    async fn settle(
        &self,
        what: &'static str,
        answer: impl std::future::Future<Output = lapin::Result<bool>>,
    ) {
        match within(self.config.broker_wait, what, answer).await {
            Ok(true) => {}
            Ok(false) => {
                tracing::warn!(
                    what,
                    "the channel closed first; the broker redelivers the command"
                )
            }
            Err(e) => {
                tracing::warn!(what, error = %e, "could not settle the delivery; the broker redelivers the command")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use stratus_contracts::message_types::saga;

    fn placement() -> Placement {
        Placement {
            zone_id: "z".into(),
            pod_id: "p".into(),
            cluster_id: "c".into(),
            host_id: "h".into(),
            host_name: "SimHost-1".into(),
        }
    }

    fn stop_step() -> Step<agent::StopVm> {
        Step {
            saga: saga::StepRef {
                saga_id: "s1".into(),
                step: "start-vm".into(),
                undo: true,
            },
            input: agent::StopVm {
                vm_id: "vm-1".into(),
                placement: placement(),
            },
        }
    }

    #[test]
    fn commands_decode_by_message_type() {
        let env = Envelope::new(agent::STOP_VM, &stop_step()).with_job_id("j1");
        let (back, command) = decode(&env.to_properties(), &env.body).unwrap();
        assert_eq!(back.message_id, env.message_id);
        assert_eq!(back.job_id.as_deref(), Some("j1"));
        assert_eq!(command, Command::StopVm(stop_step()));
        assert_eq!(command.vm_id(), "vm-1");
        assert!(command.saga().undo);
        assert_eq!(command.placement().host_name, "SimHost-1");
    }

    #[test]
    fn the_sample_bodies_are_commands_this_agent_takes() {
        let bodies = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../events/rmq/bodies");
        for message_type in [
            agent::CREATE_VOLUMES,
            agent::DESTROY_VOLUMES,
            agent::START_VM,
            agent::STOP_VM,
        ] {
            let body = std::fs::read(bodies.join(format!("{message_type}.json"))).unwrap();
            let mut env = Envelope::new(message_type, &json!({}));
            env.body = body;
            let command = Command::decode(&env).unwrap_or_else(|e| panic!("{message_type}: {e}"));
            assert_eq!(command.placement().host_name, "SimHost-c0-h0");
        }
    }

    #[test]
    fn unusable_deliveries_say_why() {
        // A body of another command's shape.
        let env = Envelope::new(agent::START_VM, &stop_step());
        let why = decode(&env.to_properties(), &env.body).unwrap_err();
        assert!(why.contains("agent.start-vm"), "{why}");
        // Not an agent command.
        let env = Envelope::new("diag.noop", &json!({}));
        let why = decode(&env.to_properties(), &env.body).unwrap_err();
        assert!(why.contains("not a host agent command"), "{why}");
        // No envelope at all.
        let why = decode(&BasicProperties::default(), b"{}").unwrap_err();
        assert!(why.contains("undecodable envelope"), "{why}");
    }

    #[test]
    fn backoff_doubles_to_its_ceiling_and_resets() {
        let mut b = Backoff::new(Duration::from_millis(200), Duration::from_secs(5));
        let mut last = Duration::ZERO;
        for _ in 0..10 {
            last = b.next_delay();
            assert!(last <= Duration::from_secs(5));
        }
        assert!(last >= Duration::from_millis(2500));
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(200));
    }
}
