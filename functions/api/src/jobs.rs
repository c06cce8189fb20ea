//! Async jobs: a command's job and its command message are written in one
//! transaction (the message through the outbox), the message is published
//! right after the commit, and the caller gets `jobid` at once. If the
//! publish never happens (the function dies, the broker is away), the outbox
//! relay sends the same message later: the job still ends.

use chrono::Utc;
use serde::Serialize;
use serde_json::{Value, json};
use stratus_cloudstack::ApiError;
use stratus_contracts::names::COMMANDS_EXCHANGE;
use stratus_messaging::{Envelope, outbox};
use stratus_model::{AsyncJob, Id, JobStatus};
use stratus_store::Transaction;
use uuid::Uuid;

use crate::{Ctx, store_error};

/// Set in tests: the process exits after the job's commit and before its
/// publish, as a crash there would (the outbox relay must finish the job).
pub const FAULT_EXIT_BEFORE_PUBLISH: &str = "STRATUS_FAULT_EXIT_BEFORE_PUBLISH";

/// What a job acts on, as `jobinstancetype` / `jobinstanceid` show it.
pub struct Instance {
    pub kind: &'static str,
    pub id: Uuid,
}

/// Records a job for `command_class` (CloudStack's command class name, shown
/// as `cmd`) and sends `message_type` with `body` to carry it out.
pub async fn submit<B: Serialize>(
    ctx: &Ctx,
    command_class: &str,
    instance: Instance,
    message_type: &str,
    body: &B,
) -> Result<Value, ApiError> {
    let job = AsyncJob {
        id: Id::new(),
        account_id: ctx.caller.account.id,
        user_id: ctx.caller.user.id,
        command: command_class.to_string(),
        instance_type: Some(instance.kind.to_string()),
        instance_id: Some(instance.id),
        status: JobStatus::Pending,
        result_code: 0,
        result_type: None,
        result: None,
        created: Utc::now(),
        completed: None,
    };
    let envelope = Envelope::new(message_type, body).with_job_id(job.id.to_string());
    let row = outbox::to_outbox(COMMANDS_EXCHANGE, message_type, &envelope);
    let mut tx = Transaction::new();
    tx.create(&job).enqueue(&row);
    ctx.store.transact(tx).await.map_err(store_error)?;
    tracing::info!(job_id = %job.id, message_id = %envelope.message_id, message_type, "job recorded");
    if std::env::var_os(FAULT_EXIT_BEFORE_PUBLISH).is_some() {
        tracing::warn!(job_id = %job.id, "exiting before the publish, as {FAULT_EXIT_BEFORE_PUBLISH} asks");
        std::process::exit(17);
    }
    match &ctx.publisher {
        Some(p) => {
            outbox::publish_committed(&ctx.store, p, std::slice::from_ref(&row)).await;
        }
        None => {
            tracing::warn!(job_id = %job.id, "no broker configured; the outbox relay will send the job's message")
        }
    }
    Ok(json!({ "jobid": job.id.to_string() }))
}
