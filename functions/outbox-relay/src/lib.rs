//! The outbox relay's handler: republish the outbox rows older than the grace
//! period (their publisher died between commit and publish), confirmed, then
//! remove them. The same message ids go out, so consumers see a repeat, never
//! a new message; a row that fails to publish stays for the next run.

use std::time::Duration;

use serde::Serialize;
use stratus_messaging::outbox;
use stratus_messaging::publisher::Publisher;
use stratus_store::{Store, StoreError};

/// Rows younger than this are left to the publisher that wrote them.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(5);
/// The environment variable that overrides the grace period (milliseconds).
pub const ENV_GRACE_MS: &str = "STRATUS_OUTBOX_GRACE_MS";
/// Rows per run.
pub const BATCH: usize = 500;

#[derive(Debug, Default, PartialEq, Eq, Serialize)]
pub struct Report {
    pub republished: usize,
    pub failed: usize,
}

/// One run of the relay.
pub async fn relay(
    store: &Store,
    publisher: &Publisher,
    grace: Duration,
) -> Result<Report, StoreError> {
    let pending = store.outbox_pending(grace, BATCH).await?;
    for row in &pending {
        tracing::info!(message_id = %row.id, job_id = row.job_id.as_deref().unwrap_or(""), message_type = %row.message_type, "republishing from the outbox");
    }
    let sent = outbox::publish_committed(store, publisher, &pending).await;
    Ok(Report {
        republished: sent.published,
        failed: sent.failed,
    })
}
