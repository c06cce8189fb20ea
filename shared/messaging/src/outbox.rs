//! Envelopes in the data service's outbox: a message that follows from a state
//! change is written as an [`OutboxMessage`] in the same transaction, published
//! right after the commit, and republished by the relay if that publish never
//! happened, always with its own message id.

use chrono::{TimeZone, Utc};
use stratus_model::{Id, OutboxMessage};
use uuid::Uuid;

use crate::envelope::Envelope;
use crate::publisher::Outgoing;

/// The outbox row for `envelope`, to go to `exchange` with `routing_key`.
pub fn to_outbox(exchange: &str, routing_key: &str, envelope: &Envelope) -> OutboxMessage {
    OutboxMessage {
        id: Id::from_uuid(envelope.message_id),
        exchange: exchange.to_string(),
        routing_key: routing_key.to_string(),
        message_type: envelope.message_type.clone(),
        correlation_id: envelope.correlation_id.clone(),
        causation_id: envelope.causation_id,
        job_id: envelope.job_id.clone(),
        traceparent: envelope.traceparent.clone(),
        attempt: envelope.attempt,
        created: envelope.created_at,
        body: String::from_utf8_lossy(&envelope.body).into_owned(),
    }
}

/// The envelope an outbox row carries.
pub fn envelope_of(m: &OutboxMessage) -> Envelope {
    Envelope {
        message_id: m.id.uuid(),
        message_type: m.message_type.clone(),
        correlation_id: m.correlation_id.clone(),
        causation_id: m.causation_id,
        job_id: m.job_id.clone(),
        traceparent: m.traceparent.clone(),
        attempt: m.attempt,
        created_at: Utc
            .timestamp_millis_opt(m.created.timestamp_millis())
            .single()
            .unwrap_or(m.created),
        body: m.body.clone().into_bytes(),
    }
}

/// The message to publish for an outbox row.
pub fn outgoing(m: &OutboxMessage) -> Outgoing {
    Outgoing::envelope(&m.exchange, &m.routing_key, &envelope_of(m))
}

/// How a round of outbox publishing went.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Sent {
    pub published: usize,
    pub failed: usize,
    /// Unroutable: sent to the parking exchange with their reason instead.
    pub parked: usize,
}

/// Publishes outbox rows (committed before this is called), each confirmed,
/// and removes each row once the broker has it. A row that fails to publish,
/// or whose removal fails, stays for the relay, which sends it again with
/// the same message id; consumers are idempotent on it. A row whose message
/// routes nowhere is parked with its reason instead (it never would route).
pub async fn publish_committed(
    store: &stratus_store::Store,
    publisher: &crate::publisher::Publisher,
    rows: &[OutboxMessage],
) -> Sent {
    let mut sent = Sent::default();
    for row in rows {
        let job_id = row.job_id.as_deref().unwrap_or("");
        match publisher.publish(outgoing(row)).await {
            Ok(()) => match store.outbox_sent(row.id).await {
                Ok(()) => sent.published += 1,
                Err(e) => {
                    sent.failed += 1;
                    tracing::warn!(message_id = %row.id, job_id, error = %e, "published; the outbox row stays and will be sent again");
                }
            },
            // Routes nowhere (e.g. a host's queue that does not exist): it
            // never will by itself. Parked with its reason instead, so that
            // its job's saga hears of it at once, and the row goes.
            Err(e) if e.is_permanent() => {
                let reason = format!("unroutable from the outbox: {e}");
                let mut parked = outgoing(row);
                parked.properties = crate::harness::with_parking_headers(
                    parked.properties,
                    &format!("outbox:{}", row.routing_key),
                    &reason,
                );
                parked.exchange = stratus_contracts::names::PARKING_EXCHANGE.to_string();
                parked.routing_key = String::new();
                match publisher.publish(parked).await {
                    Ok(()) => {
                        sent.parked += 1;
                        tracing::error!(message_id = %row.id, job_id, reason = %reason, "parked from the outbox");
                        if let Err(e) = store.outbox_sent(row.id).await {
                            tracing::warn!(message_id = %row.id, error = %e, "parked; the outbox row stays and will be tried again");
                        }
                    }
                    Err(e) => {
                        sent.failed += 1;
                        tracing::error!(message_id = %row.id, job_id, error = %e, "unroutable and not parked; the outbox row stays for the relay");
                    }
                }
            }
            Err(e) => {
                sent.failed += 1;
                tracing::error!(message_id = %row.id, job_id, error = %e, "not published; the outbox row stays for the relay");
            }
        }
    }
    sent
}

/// The message id of an outbox row.
pub fn message_id(m: &OutboxMessage) -> Uuid {
    m.id.uuid()
}

#[cfg(test)]
mod tests {
    use super::*;
    use stratus_contracts::message_types::diag;

    #[test]
    fn an_envelope_survives_the_outbox() {
        let env = Envelope::new(diag::ECHO, &diag::Echo { text: "x".into() }).with_job_id("j");
        let row = to_outbox("stratus.commands", diag::ECHO, &env);
        assert_eq!(envelope_of(&row), env);
        let out = outgoing(&row);
        assert_eq!(
            out.properties.message_id().as_ref().map(|s| s.to_string()),
            Some(env.message_id.to_string())
        );
        assert_eq!(out.routing_key, diag::ECHO);
    }
}
