//! The saga engine. A saga is data: an ordered list of named steps (the
//! [`Saga`] record), each an action with its undo, where an action is a
//! local store change or a command to a component or a host agent.
//!
//! The executor is message-driven and keeps no state of its own between
//! messages, so any orchestrator instance continues any saga:
//!
//! - a remote step's command goes out through the outbox, in the same
//!   transaction that records the step as running (and its deadline);
//! - the component's `<component>.step-result` event advances the saga with a
//!   compare-and-set of the saga record (its version), together with the next
//!   step's outbox row, local changes and, at the end, the job's result;
//! - a result for a step the saga no longer waits on is logged on the saga
//!   and otherwise ignored, except a late success of a step that was already
//!   undone: its undo is sent again, since the action ran after its undo;
//! - on failure the completed steps are undone in reverse, and the step in
//!   flight too: it may have run, and every undo is safe when its action
//!   never ran;
//! - a step that does not answer by its deadline (`saga.step.timeout`) is
//!   failed by the sweep ([`Engine::expire`]), which starts the undo; an undo
//!   that fails or times out is marked `undo-failed` with an alert, and the
//!   unwinding goes on, so that every job ends.
//!
//! The job ends in the transaction that ends the saga: succeeded with the
//! last step's output, or failed with the failing step's error once every
//! undo has run.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use stratus_contracts::message_types::saga::{Outcome, Step, StepRef, StepResult};
use stratus_contracts::names::COMMANDS_EXCHANGE;
use stratus_contracts::settings::{SettingsSource, names};
use stratus_messaging::publisher::Publisher;
use stratus_messaging::{Envelope, HandlerError, outbox};
use stratus_model::*;
use stratus_store::{Store, StoreError, Transaction, Versioned};
use uuid::Uuid;

use crate::vm;

/// Why a step failed: CloudStack's error code and text, as the job fails.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub code: u16,
    pub text: String,
}

impl Failure {
    pub fn new(code: u16, text: impl Into<String>) -> Self {
        Self {
            code,
            text: text.into(),
        }
    }
    pub fn internal(text: impl Into<String>) -> Self {
        Self::new(530, text)
    }
    pub fn param(text: impl Into<String>) -> Self {
        Self::new(431, text)
    }
    pub fn json(&self) -> Value {
        json!({ "errorcode": self.code, "errortext": self.text })
    }
}

/// How a step's action or undo could not run: it failed, or the store
/// was unavailable (the message is retried).
#[derive(Debug)]
pub enum StepError {
    Failed(Failure),
    Store(StoreError),
}

impl From<StoreError> for StepError {
    fn from(e: StoreError) -> Self {
        StepError::Store(e)
    }
}

impl From<Failure> for StepError {
    fn from(f: Failure) -> Self {
        StepError::Failed(f)
    }
}

fn transient(e: StoreError) -> HandlerError {
    HandlerError::Transient(e.to_string())
}

/// Where a step's action or undo runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Run {
    /// A store change in the saga's own transaction.
    Local,
    /// A command to a component's queue (routing key: the message type).
    Command(&'static str),
    /// A command to the placed host's agent (routing key: `<type>.<host>`).
    Agent(&'static str),
}

/// One step of a saga kind.
#[derive(Debug, Clone, Copy)]
pub struct StepDef {
    pub name: &'static str,
    pub action: Run,
    /// None: nothing to undo (or the step is past the point of no return).
    pub undo: Option<Run>,
}

/// A command a remote step sends.
pub struct Command {
    pub message_type: &'static str,
    pub routing_key: String,
    pub input: Value,
}

/// What a step needs to know to run.
pub struct StepCtx<'a> {
    pub store: &'a Store,
    pub saga: &'a Saga,
    pub now: DateTime<Utc>,
}

impl StepCtx<'_> {
    /// The output of an earlier step that is done.
    pub fn output(&self, step: &str) -> Option<&Value> {
        self.saga
            .steps
            .iter()
            .find(|s| s.name == step && s.state != StepState::Pending)
            .and_then(|s| s.output.as_ref())
    }

    pub fn state(&self, step: &str) -> Option<StepState> {
        self.saga
            .steps
            .iter()
            .find(|s| s.name == step)
            .map(|s| s.state)
    }
}

/// The saga id of a job's saga.
pub fn saga_id_for_job(job: Id<AsyncJob>) -> Id<Saga> {
    const NS: Uuid = Uuid::from_u128(0x2f6b_8d10_4c3e_4a71_9e0d_0000_0000_5a9a);
    Id::derived(NS, &format!("job/{job}"))
}

/// Asked before each local step (or undo) runs; a failure it gives fails
/// the step as the step's own failure would, with nothing written. The
/// engine runs with [`NoFaults`]; the generic saga tests fail each local
/// step in turn through it (remote steps they fail at the component's
/// answer).
pub trait Faults: Send + Sync {
    fn before_local(&self, saga: &Saga, step: &str, undo: bool) -> Option<Failure>;
}

/// No injected faults: what every deployment runs.
pub struct NoFaults;

impl Faults for NoFaults {
    fn before_local(&self, _: &Saga, _: &str, _: bool) -> Option<Failure> {
        None
    }
}

/// The orchestration engine's state between messages: none but its handles.
pub struct Engine {
    pub store: Arc<Store>,
    pub publisher: Option<Arc<Publisher>>,
    pub settings: Arc<dyn SettingsSource>,
    pub faults: Arc<dyn Faults>,
}

/// One handling's changes, committed together.
struct Work {
    saga: Versioned<Saga>,
    job: Option<Versioned<AsyncJob>>,
    tx: Transaction,
    outbox: Vec<OutboxMessage>,
    /// The message this handling answers (ids of what it sends derive from it).
    cause: Envelope,
    now: DateTime<Utc>,
}

impl Engine {
    fn step_timeout(&self) -> chrono::Duration {
        chrono::Duration::seconds(self.settings.integer(names::saga_step_timeout()).max(1))
    }

    /// Starts a saga of `kind` for `job` (or continues it, when a
    /// redelivered start finds it already made).
    pub async fn start(
        &self,
        id: Id<Saga>,
        kind: &str,
        parameters: Value,
        job: Option<Versioned<AsyncJob>>,
        cause: &Envelope,
    ) -> Result<(), HandlerError> {
        if let Some(existing) = self.store.get(id).await.map_err(transient)? {
            return self.resume(existing, cause).await;
        }
        let now = Utc::now();
        let plan = vm::plan(kind, &parameters).map_err(|f| {
            HandlerError::Permanent(format!("saga {kind} cannot be planned: {}", f.text))
        });
        let saga = Saga {
            id,
            kind: kind.to_string(),
            parameters,
            status: SagaStatus::Running,
            step_log: vec![],
            job_id: job.as_ref().map(|j| j.value.id),
            created: now,
            steps: plan?
                .into_iter()
                .map(|name| SagaStep {
                    name: name.to_string(),
                    state: StepState::Pending,
                    started: None,
                    ended: None,
                    undo_started: None,
                    undo_ended: None,
                    deadline: None,
                    output: None,
                    error: None,
                })
                .collect(),
            cursor: 0,
            error: None,
            ended: None,
        };
        tracing::info!(saga_id = %id, kind, job_id = ?saga.job_id, steps = saga.steps.len(), "saga started");
        let work = Work {
            saga: Versioned {
                value: saga,
                version: 0,
            },
            job,
            tx: Transaction::new(),
            outbox: vec![],
            cause: cause.clone(),
            now,
        };
        self.drive_and_commit(work).await
    }

    /// Continues the saga with this id (a redelivered start finds it made).
    pub async fn resume_by_id(&self, id: Id<Saga>, cause: &Envelope) -> Result<(), HandlerError> {
        match self.store.get(id).await.map_err(transient)? {
            Some(saga) => self.resume(saga, cause).await,
            None => Err(HandlerError::Transient(format!(
                "saga {id} is not there yet"
            ))),
        }
    }

    /// Drives a saga that may have nothing to do (a redelivered start).
    async fn resume(&self, saga: Versioned<Saga>, cause: &Envelope) -> Result<(), HandlerError> {
        if matches!(saga.value.status, SagaStatus::Done | SagaStatus::Failed) {
            return Ok(());
        }
        let work = self.work(saga, cause, Utc::now()).await?;
        self.drive_and_commit(work).await
    }

    /// One handling of `saga` answering `cause`, with its job read.
    async fn work(
        &self,
        saga: Versioned<Saga>,
        cause: &Envelope,
        now: DateTime<Utc>,
    ) -> Result<Work, HandlerError> {
        let job = self.job_of(&saga.value).await?;
        Ok(Work {
            saga,
            job,
            tx: Transaction::new(),
            outbox: vec![],
            cause: cause.clone(),
            now,
        })
    }

    async fn job_of(&self, saga: &Saga) -> Result<Option<Versioned<AsyncJob>>, HandlerError> {
        match saga.job_id {
            Some(id) => self.store.get(id).await.map_err(transient),
            None => Ok(None),
        }
    }

    /// A component's answer to a step.
    pub async fn on_result(&self, env: &Envelope, result: StepResult) -> Result<(), HandlerError> {
        let Ok(id) = result.saga.saga_id.parse::<Id<Saga>>() else {
            return Err(HandlerError::Permanent(format!(
                "step result names saga {:?}, not a saga id",
                result.saga.saga_id
            )));
        };
        let Some(saga) = self.store.get(id).await.map_err(transient)? else {
            return Err(HandlerError::Permanent(format!(
                "step result for saga {id}, which does not exist"
            )));
        };
        let mut work = self.work(saga, env, Utc::now()).await?;
        let awaited = {
            let s = &work.saga.value;
            let index = s.steps.iter().position(|x| x.name == result.saga.step);
            match index {
                Some(i) if i == s.cursor => {
                    let st = s.steps[i].state;
                    (s.status == SagaStatus::Running
                        && !result.saga.undo
                        && st == StepState::Running)
                        || (s.status == SagaStatus::Unwinding
                            && result.saga.undo
                            && st == StepState::Undoing)
                }
                _ => false,
            }
        };
        if !awaited {
            return self.unawaited(work, env, result).await;
        }
        let outcome = match result.outcome {
            Outcome::Done { output } => Ok(output),
            Outcome::Failed { code, text } => Err(Failure::new(code, text)),
        };
        if result.saga.undo {
            self.undo_ended(&mut work, outcome);
        } else {
            self.action_ended(&mut work, outcome);
        }
        self.drive_and_commit(work).await
    }

    /// A result the saga does not wait on: logged once. A success of an
    /// action whose step was already undone (it ran after its undo) gets
    /// its undo again, as does one of a finished deploy whose VM is gone.
    async fn unawaited(
        &self,
        mut work: Work,
        env: &Envelope,
        result: StepResult,
    ) -> Result<(), HandlerError> {
        let saga = &work.saga.value;
        let message = env.message_id.to_string();
        if saga
            .step_log
            .iter()
            .any(|e| e["message_id"].as_str() == Some(message.as_str()))
        {
            return Ok(());
        }
        let step = saga.steps.iter().find(|s| s.name == result.saga.step);
        let step_state = step.map(|s| s.state);
        let late_success = !result.saga.undo
            && matches!(result.outcome, Outcome::Done { .. })
            && step.is_some_and(|s| {
                matches!(
                    s.state,
                    StepState::Undoing | StepState::Undone | StepState::UndoFailed
                )
            });
        // A copy of an action that came after its saga ended and its VM was
        // removed since (its command republished from the outbox): what it
        // made again belongs to nothing, so it is undone too.
        let orphaned = !late_success
            && !result.saga.undo
            && matches!(result.outcome, Outcome::Done { .. })
            && step_state == Some(StepState::Done)
            && saga.status == SagaStatus::Done
            && match vm::vm_of(saga) {
                Some(id) => self
                    .store
                    .get(id)
                    .await
                    .map_err(transient)?
                    .is_none_or(|v| v.value.state == VmState::Expunging),
                None => false,
            };
        let late_success = late_success || orphaned;
        let saga = &work.saga.value;
        tracing::info!(saga_id = %saga.id, step = %result.saga.step, undo = result.saga.undo, late_success, orphaned, "result for a step the saga does not wait on: recorded and ignored");
        let entry = json!({
            "at": date(work.now),
            "ignored_result": result.saga.step,
            "undo": result.saga.undo,
            "message_id": message,
            "redo_undo": late_success,
        });
        work.saga.value.step_log.push(entry);
        // An undo sent again (for a late success) that failed: what the
        // action holds stays held. Nobody waits on it, so an alert says so.
        if let (true, Outcome::Failed { text, .. }) = (result.saga.undo, &result.outcome)
            && step_state != Some(StepState::Undoing)
        {
            let saga = &work.saga.value;
            work.tx.create(&Alert {
                id: Id::new(),
                alert_type: 8,
                name: "ALERT.USERVM".into(),
                subject: format!(
                    "A repeated undo of step {} of saga {} ({}) failed: {text}; what it held may be left",
                    result.saga.step, saga.id, saga.kind
                ),
                zone_id: vm::zone_of(&saga.parameters)
                    .unwrap_or_else(|| Id::from_uuid(Uuid::nil())),
                pod_id: None,
                sent: work.now,
            });
        }
        if late_success {
            let def = vm::definition(&work.saga.value.kind, &result.saga.step)
                .ok_or_else(|| HandlerError::Permanent("unknown step".into()))?;
            if let Some(run) = def.undo {
                match self.remote(&mut work, *def, true, run).await {
                    Ok(()) | Err(StepError::Failed(_)) => {}
                    Err(StepError::Store(e)) => return Err(transient(e)),
                }
            }
        }
        self.commit(work).await
    }

    /// Fails the step in flight of every saga past its deadline.
    pub async fn expire(
        &self,
        saga: Versioned<Saga>,
        now: DateTime<Utc>,
    ) -> Result<bool, HandlerError> {
        let s = &saga.value;
        let Some(step) = s.steps.get(s.cursor) else {
            return Ok(false);
        };
        if step.deadline.is_none_or(|d| d > now)
            || !matches!(step.state, StepState::Running | StepState::Undoing)
        {
            return Ok(false);
        }
        let undo = step.state == StepState::Undoing;
        let text = format!(
            "{} of step {} timed out after {} s",
            if undo { "the undo" } else { "the action" },
            step.name,
            self.step_timeout().num_seconds()
        );
        tracing::warn!(saga_id = %s.id, step = %step.name, undo, "step timed out");
        let cause = Envelope::new("saga.timeout", &json!({ "saga_id": s.id.to_string() }));
        let mut work = self.work(saga, &cause, now).await?;
        work.saga
            .value
            .step_log
            .push(json!({ "at": date(now), "timeout": text }));
        if undo {
            self.undo_ended(&mut work, Err(Failure::internal(text)));
        } else {
            self.action_ended(&mut work, Err(Failure::internal(text)));
        }
        self.drive_and_commit(work).await?;
        Ok(true)
    }

    /// A parked message of this saga: the step it carries failed for good.
    /// Only a command or result of the action or undo in flight fails it;
    /// each parked message counts once (its id is logged on the saga).
    pub async fn parked(
        &self,
        saga: Versioned<Saga>,
        step: Option<&StepRef>,
        reason: &str,
        cause: &Envelope,
    ) -> Result<(), HandlerError> {
        let s = &saga.value;
        let message = cause.message_id.to_string();
        let seen = s
            .step_log
            .iter()
            .any(|e| e["parked_message_id"].as_str() == Some(message.as_str()));
        if seen || matches!(s.status, SagaStatus::Done | SagaStatus::Failed) {
            return Ok(());
        }
        // A parked start (the job's own command) of a saga that exists: the
        // saga carries on; nothing of it was parked.
        let Some(step) = step else {
            return Ok(());
        };
        let current = s.steps.get(s.cursor);
        let in_flight = current.is_some_and(|c| {
            c.name == step.step
                && match c.state {
                    StepState::Running => !step.undo && s.status == SagaStatus::Running,
                    StepState::Undoing => step.undo && s.status == SagaStatus::Unwinding,
                    _ => false,
                }
        });
        let mut work = self.work(saga, cause, Utc::now()).await?;
        work.saga.value.step_log.push(json!({
            "at": date(work.now),
            "parked": reason,
            "parked_message_id": message,
            "step": step.step,
            "undo": step.undo,
            "failed_the_step": in_flight,
        }));
        if in_flight {
            let text = format!("a message of this job was parked: {reason}");
            if step.undo {
                self.undo_ended(&mut work, Err(Failure::internal(text)));
            } else {
                self.action_ended(&mut work, Err(Failure::internal(text)));
            }
        }
        self.drive_and_commit(work).await
    }

    fn action_ended(&self, work: &mut Work, outcome: Result<Value, Failure>) {
        let now = work.now;
        let saga = &mut work.saga.value;
        let step = &mut saga.steps[saga.cursor];
        step.ended = Some(now);
        step.deadline = None;
        match outcome {
            Ok(output) => {
                step.state = StepState::Done;
                step.output = Some(output);
                saga.cursor += 1;
            }
            Err(f) => {
                tracing::warn!(saga_id = %saga.id, step = %step.name, code = f.code, text = %f.text, "step failed; undoing the saga");
                step.state = StepState::Failed;
                step.error = Some(f.text.clone());
                saga.error = Some(f.json());
                saga.status = SagaStatus::Unwinding;
            }
        }
    }

    fn undo_ended(&self, work: &mut Work, outcome: Result<Value, Failure>) {
        let now = work.now;
        let saga = &mut work.saga.value;
        let step = &mut saga.steps[saga.cursor];
        step.undo_ended = Some(now);
        step.deadline = None;
        match outcome {
            Ok(_) => step.state = StepState::Undone,
            Err(f) => {
                tracing::error!(saga_id = %saga.id, step = %step.name, text = %f.text, "undo failed; left for an operator");
                step.state = StepState::UndoFailed;
                step.error = Some(f.text.clone());
                work.tx.create(&Alert {
                    id: Id::new(),
                    // CloudStack's ALERT_TYPE_USERVM.
                    alert_type: 8,
                    name: "ALERT.USERVM".into(),
                    subject: format!(
                        "Undo of step {} of saga {} ({}) failed: {}; what it held may be left",
                        step.name, saga.id, saga.kind, f.text
                    ),
                    zone_id: vm::zone_of(&saga.parameters)
                        .unwrap_or_else(|| Id::from_uuid(Uuid::nil())),
                    pod_id: None,
                    sent: now,
                });
            }
        }
    }

    /// Runs local steps and sends remote ones until the saga waits or ends.
    async fn drive(&self, work: &mut Work) -> Result<(), StepError> {
        loop {
            let status = work.saga.value.status;
            let cursor = work.saga.value.cursor;
            match status {
                SagaStatus::Done | SagaStatus::Failed => return Ok(()),
                SagaStatus::Running => {
                    if cursor >= work.saga.value.steps.len() {
                        self.end(work, true);
                        return Ok(());
                    }
                    let name = work.saga.value.steps[cursor].name.clone();
                    let def = self.def(&work.saga.value.kind, &name)?;
                    match work.saga.value.steps[cursor].state {
                        StepState::Pending => {
                            work.saga.value.steps[cursor].started = Some(work.now);
                            match def.action {
                                Run::Local => {
                                    let outcome = self.local(work, def, false).await;
                                    match outcome {
                                        Ok(v) => self.action_ended(work, Ok(v)),
                                        Err(StepError::Failed(f)) => {
                                            self.action_ended(work, Err(f))
                                        }
                                        Err(e) => return Err(e),
                                    }
                                }
                                run => match self.remote(work, def, false, run).await {
                                    Ok(()) => {
                                        let st = &mut work.saga.value.steps[cursor];
                                        st.state = StepState::Running;
                                        st.deadline = Some(work.now + self.step_timeout());
                                        return Ok(());
                                    }
                                    Err(StepError::Failed(f)) => self.action_ended(work, Err(f)),
                                    Err(e) => return Err(e),
                                },
                            }
                        }
                        StepState::Done => work.saga.value.cursor += 1,
                        _ => return Ok(()), // waiting for its result
                    }
                }
                SagaStatus::Unwinding => {
                    let name = work.saga.value.steps[cursor].name.clone();
                    let def = self.def(&work.saga.value.kind, &name)?;
                    match work.saga.value.steps[cursor].state {
                        // Done, or in flight (it may have run), or failed
                        // (it may have done part): undo it.
                        // A local step that failed wrote nothing: nothing to undo.
                        StepState::Failed if def.action == Run::Local => {
                            let st = &mut work.saga.value.steps[cursor];
                            st.state = StepState::Undone;
                            st.undo_started = Some(work.now);
                            st.undo_ended = Some(work.now);
                        }
                        StepState::Done | StepState::Running | StepState::Failed => {
                            work.saga.value.steps[cursor].undo_started = Some(work.now);
                            match def.undo {
                                None => {
                                    work.saga.value.steps[cursor].state = StepState::Undone;
                                    work.saga.value.steps[cursor].undo_ended = Some(work.now);
                                }
                                Some(Run::Local) => {
                                    let outcome = self.local(work, def, true).await;
                                    match outcome {
                                        Ok(v) => self.undo_ended(work, Ok(v)),
                                        Err(StepError::Failed(f)) => self.undo_ended(work, Err(f)),
                                        Err(e) => return Err(e),
                                    }
                                }
                                Some(run) => match self.remote(work, def, true, run).await {
                                    Ok(()) => {
                                        let st = &mut work.saga.value.steps[cursor];
                                        st.state = StepState::Undoing;
                                        st.deadline = Some(work.now + self.step_timeout());
                                        return Ok(());
                                    }
                                    Err(StepError::Failed(f)) => self.undo_ended(work, Err(f)),
                                    Err(e) => return Err(e),
                                },
                            }
                        }
                        StepState::Undoing => return Ok(()),
                        StepState::Pending | StepState::Undone | StepState::UndoFailed => {
                            if cursor == 0 {
                                self.end(work, false);
                                return Ok(());
                            }
                            work.saga.value.cursor -= 1;
                        }
                    }
                }
            }
        }
    }

    fn def(&self, kind: &str, step: &str) -> Result<StepDef, StepError> {
        vm::definition(kind, step).copied().ok_or_else(|| {
            StepError::Failed(Failure::internal(format!(
                "saga kind {kind} has no step {step}"
            )))
        })
    }

    async fn local(&self, work: &mut Work, def: StepDef, undo: bool) -> Result<Value, StepError> {
        if let Some(f) = self.faults.before_local(&work.saga.value, def.name, undo) {
            return Err(StepError::Failed(f));
        }
        let mut local = Transaction::new();
        let cx = StepCtx {
            store: &self.store,
            saga: &work.saga.value,
            now: work.now,
        };
        let output = vm::local(&cx, def.name, undo, &mut local).await?;
        work.tx.extend(local);
        Ok(output)
    }

    /// Puts a step's command (or its undo's) in the outbox.
    async fn remote(
        &self,
        work: &mut Work,
        def: StepDef,
        undo: bool,
        run: Run,
    ) -> Result<(), StepError> {
        let cx = StepCtx {
            store: &self.store,
            saga: &work.saga.value,
            now: work.now,
        };
        let command = vm::command(&cx, def.name, undo, run).await?;
        let body = Step {
            saga: StepRef {
                saga_id: work.saga.value.id.to_string(),
                step: def.name.to_string(),
                undo,
            },
            input: command.input,
        };
        let direction = if undo { "undo" } else { "do" };
        let mut env = work.cause.derive(
            &format!("{}/{}/{}", work.saga.value.id, def.name, direction),
            command.message_type,
            &body,
        );
        if let Some(job) = work.saga.value.job_id {
            env.job_id = Some(job.to_string());
        }
        tracing::info!(saga_id = %work.saga.value.id, step = def.name, undo, message_type = command.message_type, routing_key = %command.routing_key, message_id = %env.message_id, job_id = ?env.job_id, "step command sent");
        work.outbox.push(outbox::to_outbox(
            COMMANDS_EXCHANGE,
            &command.routing_key,
            &env,
        ));
        Ok(())
    }

    /// Ends the saga and its job.
    fn end(&self, work: &mut Work, succeeded: bool) {
        let now = work.now;
        let saga = &mut work.saga.value;
        saga.ended = Some(now);
        saga.status = if succeeded {
            SagaStatus::Done
        } else {
            SagaStatus::Failed
        };
        let took_ms = (now - saga.created).num_milliseconds();
        tracing::info!(saga_id = %saga.id, kind = %saga.kind, succeeded, took_ms, job_id = ?saga.job_id, "saga ended");
        if let Some(job) = &work.job
            && job.value.status == JobStatus::Pending
        {
            let mut done = job.clone();
            done.value.completed = Some(now);
            done.value.result_type = Some("object".into());
            if succeeded {
                done.value.status = JobStatus::Succeeded;
                done.value.result_code = 0;
                done.value.result = saga.steps.last().and_then(|s| s.output.clone());
            } else {
                let error = saga
                    .error
                    .clone()
                    .unwrap_or_else(|| Failure::internal("the job failed").json());
                done.value.status = JobStatus::Failed;
                done.value.result_code = error["errorcode"].as_u64().unwrap_or(530) as u32;
                done.value.result = Some(error);
            }
            work.tx.update(&done);
        }
    }

    async fn drive_and_commit(&self, mut work: Work) -> Result<(), HandlerError> {
        match self.drive(&mut work).await {
            Ok(()) => {}
            Err(StepError::Store(e)) => return Err(transient(e)),
            Err(StepError::Failed(f)) => return Err(HandlerError::Permanent(f.text)),
        }
        self.commit(work).await
    }

    async fn commit(&self, work: Work) -> Result<(), HandlerError> {
        let Work {
            saga,
            mut tx,
            outbox,
            ..
        } = work;
        if saga.version == 0 {
            tx.create(&saga.value);
        } else {
            tx.update(&saga);
        }
        for row in &outbox {
            tx.enqueue(row);
        }
        match self.store.transact(tx).await {
            Ok(()) => {}
            // Another instance moved the saga (or a row it touches)
            // meanwhile: read again and retry.
            Err(e) => return Err(transient(e)),
        }
        if let Some(p) = &self.publisher {
            outbox::publish_committed(&self.store, p, &outbox).await;
        }
        Ok(())
    }
}

/// A time as the saga log writes it.
fn date(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}
