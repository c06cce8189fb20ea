//! Parked messages of jobs. The parking exchange copies every parked message
//! to the orchestrator's `stratus.orchestrator.parked-jobs` queue as well as
//! to `stratus.parked` (kept for operators). A parked message that belongs
//! to a saga fails the step it carries, so the saga undoes what it did and
//! its job ends (530, with the reason); one that carries only a job id fails
//! that job if it is still pending. Nothing here parks: a store that is away
//! fails the invocation, and the trigger delivers the batch again (each
//! message counts once: the saga logs its id); a message that cannot be
//! applied at all is logged and skipped.

use serde_json::Value;
use stratus_contracts::message_types::saga::StepRef;
use stratus_contracts::names::HEADER_PARKED_REASON;
use stratus_messaging::rmq_event::{self, RmqEvent};
use stratus_messaging::{Envelope, HandlerError};
use stratus_model::*;

use crate::saga::{Engine, Failure, saga_id_for_job};

/// Handles every message of a batch from the parked-jobs queue; returns how
/// many belonged to a job.
pub async fn handle(engine: &Engine, event: &RmqEvent) -> Result<usize, HandlerError> {
    let mut of_jobs = 0;
    for messages in event.messages_by_queue.values() {
        for message in messages {
            let env = match Envelope::from_rmq(message) {
                Ok(e) => e,
                Err(e) => {
                    tracing::warn!(error = %e, "a parked message does not decode; it stays in stratus.parked");
                    continue;
                }
            };
            let reason = message
                .basic_properties
                .header(HEADER_PARKED_REASON)
                .and_then(rmq_event::header_string)
                .unwrap_or_else(|| "parked".into());
            match one(engine, &env, &reason).await {
                Ok(true) => of_jobs += 1,
                Ok(false) => {}
                // Tried again with the batch (the store was away, a conflict).
                Err(e @ HandlerError::Transient(_)) => return Err(e),
                // It will fail the same way every time: logged, and left in
                // stratus.parked for an operator; the other messages go on.
                Err(e) => {
                    tracing::error!(message_id = %env.message_id, job_id = ?env.job_id, error = %e, "a parked message of a job could not be applied; it stays in stratus.parked")
                }
            }
        }
    }
    Ok(of_jobs)
}

async fn one(engine: &Engine, env: &Envelope, reason: &str) -> Result<bool, HandlerError> {
    let transient = |e: stratus_store::StoreError| HandlerError::Transient(e.to_string());
    let body: Value = serde_json::from_slice(&env.body).unwrap_or(Value::Null);
    let step: Option<StepRef> = serde_json::from_value(body["saga"].clone()).ok();
    let saga_id: Option<Id<Saga>> = match &step {
        Some(s) => s.saga_id.parse().ok(),
        None => env
            .job_id
            .as_deref()
            .and_then(|j| j.parse::<Id<AsyncJob>>().ok())
            .map(saga_id_for_job),
    };
    let saga = match saga_id {
        Some(id) => engine.store.get(id).await.map_err(transient)?,
        None => None,
    };
    tracing::warn!(message_id = %env.message_id, message_type = %env.message_type, job_id = ?env.job_id, saga_id = ?saga_id, reason, "a job's message was parked");
    if let Some(saga) = saga {
        engine.parked(saga, step.as_ref(), reason, env).await?;
        return Ok(true);
    }
    // No saga (yet): fail the job itself if it still waits.
    let Some(job_id) = env
        .job_id
        .as_deref()
        .and_then(|j| j.parse::<Id<AsyncJob>>().ok())
    else {
        return Ok(false);
    };
    let Some(job) = engine.store.get(job_id).await.map_err(transient)? else {
        return Ok(false);
    };
    if job.value.status == JobStatus::Pending {
        let f = Failure::internal(format!("a message of this job was parked: {reason}"));
        crate::fail_job(&engine.store, &job, f).await?;
    }
    Ok(true)
}
