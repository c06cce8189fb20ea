//! The function harness: runs typed, transport-free handlers over the
//! messages of an `aws:rmq` batch, and decides retry and parking inside the
//! invocation, so the same rules hold on AWS and under the local runner.
//!
//! For each message:
//! - it decodes the envelope; a message that does not decode, whose type has no
//!   handler, whose body does not decode, whose attempts are spent, or whose
//!   delivery count is over its queue's limit is **parked** with its reason;
//! - a handler's [`HandlerError::Transient`] republishes the message (confirmed)
//!   to the next delay tier, which returns it only to the queue it came from;
//!   [`HandlerError::Permanent`] parks it;
//! - a handler's result messages are published (confirmed) before the message
//!   counts as handled; an unroutable result parks the message.
//!
//! The invocation then succeeds. It fails (and the trigger redelivers the whole
//! batch) only when the broker could not take a retry, a parked copy or a result.
//! Messages of one batch run concurrently, bounded, in order per job id.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use futures::StreamExt;
use lapin::BasicProperties;
use lapin::types::{AMQPValue, FieldTable, LongString};
use serde::Serialize;
use serde::de::DeserializeOwned;
use stratus_contracts::names;
use tracing::Instrument;

use crate::envelope::{self, Envelope, HEADER_DELIVERY_COUNT};
use crate::publisher::{Outgoing, PublishError, Publisher};
use crate::rmq_event::{RmqEvent, RmqMessage};

/// How a handler failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HandlerError {
    /// Worth another attempt later (a dependency was down, a conflict).
    #[error("transient: {0}")]
    Transient(String),
    /// Will fail the same way every time (invalid request, broken invariant).
    #[error("permanent: {0}")]
    Permanent(String),
}

/// What a handler asks to have published once it has succeeded.
pub type Effects = Vec<Outgoing>;

type HandlerFuture = Pin<Box<dyn Future<Output = Result<Effects, HandlerError>> + Send>>;
type Handler = Arc<dyn Fn(Envelope) -> Result<HandlerFuture, envelope::DecodeError> + Send + Sync>;

/// The handlers of one function, by message type.
#[derive(Default, Clone)]
pub struct Handlers {
    map: HashMap<String, Handler>,
}

impl Handlers {
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers `handler` for `message_type`, whose body decodes as `T`.
    pub fn on<T, F, Fut>(mut self, message_type: &str, handler: F) -> Self
    where
        T: DeserializeOwned + Send + 'static,
        F: Fn(Envelope, T) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Effects, HandlerError>> + Send + 'static,
    {
        let handler = Arc::new(handler);
        let erased: Handler = Arc::new(move |env: Envelope| {
            let body: T = env.body()?;
            let handler = handler.clone();
            Ok(Box::pin(async move { handler(env, body).await }) as HandlerFuture)
        });
        self.map.insert(message_type.to_string(), erased);
        self
    }

    pub fn message_types(&self) -> impl Iterator<Item = &str> {
        self.map.keys().map(String::as_str)
    }

    /// Runs the handler for one envelope, outside any transport (tests use this).
    pub async fn call(&self, env: Envelope) -> Result<Effects, HandlerError> {
        let handler = self.map.get(&env.message_type).ok_or_else(|| {
            HandlerError::Permanent(format!(
                "no handler for message type {:?}",
                env.message_type
            ))
        })?;
        handler(env)
            .map_err(|e| HandlerError::Permanent(e.to_string()))?
            .await
    }
}

/// A result message for the exchange its type belongs to.
pub fn emit<T: Serialize>(cause: &Envelope, step: &str, message_type: &str, body: &T) -> Outgoing {
    let kind = stratus_contracts::message_types::lookup(message_type).map(|t| t.kind);
    let exchange = kind
        .map(|k| k.exchange())
        .unwrap_or(names::COMMANDS_EXCHANGE);
    Outgoing::envelope(
        exchange,
        message_type,
        &cause.derive(step, message_type, body),
    )
}

/// What became of one message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "outcome", rename_all = "kebab-case")]
pub enum Outcome {
    Handled,
    Retried { attempt: u32, tier: String },
    Parked { reason: String },
}

/// The invocation's answer: how many messages went each way.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct BatchReport {
    pub handled: usize,
    pub retried: usize,
    pub parked: usize,
}

#[derive(Debug, thiserror::Error)]
#[error(
    "the broker did not take {failed} of {total} messages' results, retries or parked copies: {first}"
)]
pub struct BatchError {
    pub failed: usize,
    pub total: usize,
    pub first: PublishError,
}

pub struct Harness {
    handlers: Handlers,
    publisher: Publisher,
    /// Message groups (by job id) handled at once.
    concurrency: usize,
}

struct Item<'a> {
    queue: &'a str,
    message: &'a RmqMessage,
}

impl Harness {
    pub fn new(handlers: Handlers, publisher: Publisher) -> Self {
        Self {
            handlers,
            publisher,
            concurrency: 16,
        }
    }

    pub fn with_concurrency(mut self, concurrency: usize) -> Self {
        self.concurrency = concurrency.max(1);
        self
    }

    /// Handles one `aws:rmq` batch.
    pub async fn handle_event(
        &self,
        event: &RmqEvent,
        request_id: &str,
    ) -> Result<BatchReport, BatchError> {
        // Group by job id (or, without one, by message), keeping arrival order.
        let mut groups: Vec<Vec<Item<'_>>> = Vec::new();
        let mut index: HashMap<String, usize> = HashMap::new();
        for (key, messages) in &event.messages_by_queue {
            let (queue, _vhost) = RmqEvent::split_key(key);
            for (i, message) in messages.iter().enumerate() {
                let p = &message.basic_properties;
                let group = p
                    .header(envelope::HEADER_JOB_ID)
                    .and_then(crate::rmq_event::header_string)
                    .unwrap_or_else(|| format!("{key}#{i}"));
                let slot = *index.entry(group).or_insert_with(|| {
                    groups.push(Vec::new());
                    groups.len() - 1
                });
                groups[slot].push(Item { queue, message });
            }
        }
        let total = event.message_count();
        let results: Vec<Vec<Result<Outcome, PublishError>>> = futures::stream::iter(groups)
            .map(|group| async move {
                let mut out = Vec::with_capacity(group.len());
                for item in group {
                    out.push(
                        self.handle_message(item.queue, item.message, request_id)
                            .await,
                    );
                }
                out
            })
            .buffer_unordered(self.concurrency)
            .collect()
            .await;
        let mut report = BatchReport::default();
        let mut failures = Vec::new();
        for r in results.into_iter().flatten() {
            match r {
                Ok(Outcome::Handled) => report.handled += 1,
                Ok(Outcome::Retried { .. }) => report.retried += 1,
                Ok(Outcome::Parked { .. }) => report.parked += 1,
                Err(e) => failures.push(e),
            }
        }
        if let Some(first) = failures.into_iter().next() {
            let failed = total - report.handled - report.retried - report.parked;
            return Err(BatchError {
                failed,
                total,
                first,
            });
        }
        Ok(report)
    }

    async fn handle_message(
        &self,
        queue: &str,
        message: &RmqMessage,
        request_id: &str,
    ) -> Result<Outcome, PublishError> {
        let env = match Envelope::from_rmq(message) {
            Ok(env) => env,
            Err(e) => {
                let span = tracing::info_span!("message", request_id, queue, message_id = ?message.basic_properties.message_id);
                let reason = format!("undecodable: {e}");
                return self
                    .park_raw(queue, message, &reason)
                    .instrument(span)
                    .await;
            }
        };
        let span = tracing::info_span!(
            "message",
            request_id,
            job_id = env.job_id.as_deref().unwrap_or(""),
            message_id = %env.message_id,
            message_type = %env.message_type,
            correlation_id = %env.correlation_id,
            trace_id = env.trace_id(),
            attempt = env.attempt,
        );
        self.handle_envelope(queue, message, env)
            .instrument(span)
            .await
    }

    async fn handle_envelope(
        &self,
        queue: &str,
        message: &RmqMessage,
        env: Envelope,
    ) -> Result<Outcome, PublishError> {
        let topology = self.publisher.topology();
        if let Some(count) = message
            .basic_properties
            .header(HEADER_DELIVERY_COUNT)
            .and_then(|v| v.as_u64())
        {
            let limit = topology
                .queues
                .iter()
                .find(|q| q.name == queue)
                .and_then(|q| topology.arguments_of(q).delivery_limit)
                .or(topology.queue_defaults.delivery_limit);
            if let Some(limit) = limit.filter(|l| count > *l as u64) {
                return self
                    .park(
                        queue,
                        &env,
                        &format!("delivery count {count} is over the queue's limit of {limit}"),
                    )
                    .await;
            }
        }
        let max_attempts = topology.retry.max_attempts;
        if env.attempt > max_attempts {
            return self
                .park(
                    queue,
                    &env,
                    &format!(
                        "attempt {} is over the limit of {max_attempts}",
                        env.attempt
                    ),
                )
                .await;
        }
        if !self.handlers.map.contains_key(&env.message_type) {
            return self
                .park(
                    queue,
                    &env,
                    &format!("unknown message type {:?}", env.message_type),
                )
                .await;
        }
        tracing::debug!("handler entered");
        match self.handlers.call(env.clone()).await {
            Ok(effects) => match self.publisher.publish_all(&effects).await {
                Ok(()) => {
                    tracing::debug!(published = effects.len(), "handled");
                    Ok(Outcome::Handled)
                }
                Err(e) if e.is_permanent() => self.park(queue, &env, &format!("result {e}")).await,
                Err(e) => Err(e),
            },
            Err(HandlerError::Permanent(reason)) => self.park(queue, &env, &reason).await,
            Err(HandlerError::Transient(reason)) if env.attempt >= max_attempts => {
                self.park(
                    queue,
                    &env,
                    &format!("attempts exhausted ({max_attempts}); last error: {reason}"),
                )
                .await
            }
            Err(HandlerError::Transient(reason)) => {
                let next = env.attempt + 1;
                let tier = topology.tier_for(next).clone();
                let mut retry = env.clone();
                retry.attempt = next;
                let out = Outgoing::envelope(&names::delay_exchange(&tier.name), queue, &retry);
                self.publisher.publish(out).await?;
                tracing::warn!(reason = %reason, next_attempt = next, tier = %tier.name, "transient failure; retry scheduled");
                Ok(Outcome::Retried {
                    attempt: next,
                    tier: tier.name,
                })
            }
        }
    }

    async fn park(
        &self,
        queue: &str,
        env: &Envelope,
        reason: &str,
    ) -> Result<Outcome, PublishError> {
        let props = with_parking_headers(env.to_properties(), queue, reason);
        self.publish_parked(props, env.body.clone(), reason).await
    }

    async fn park_raw(
        &self,
        queue: &str,
        message: &RmqMessage,
        reason: &str,
    ) -> Result<Outcome, PublishError> {
        let props = with_parking_headers(properties_from_rmq(message), queue, reason);
        let body = message
            .body()
            .unwrap_or_else(|_| message.data.clone().unwrap_or_default().into_bytes());
        self.publish_parked(props, body, reason).await
    }

    async fn publish_parked(
        &self,
        properties: BasicProperties,
        body: Vec<u8>,
        reason: &str,
    ) -> Result<Outcome, PublishError> {
        let out = Outgoing {
            exchange: names::PARKING_EXCHANGE.to_string(),
            routing_key: String::new(),
            properties,
            body,
        };
        self.publisher.publish(out).await?;
        tracing::error!(reason, "message parked");
        Ok(Outcome::Parked {
            reason: reason.to_string(),
        })
    }
}

/// `props` with the parking headers: why, and from which queue.
pub fn with_parking_headers(props: BasicProperties, queue: &str, reason: &str) -> BasicProperties {
    let mut headers = props.headers().clone().unwrap_or_default();
    headers.insert(
        names::HEADER_PARKED_REASON.into(),
        AMQPValue::LongString(LongString::from(reason.as_bytes().to_vec())),
    );
    headers.insert(
        names::HEADER_PARKED_FROM.into(),
        AMQPValue::LongString(LongString::from(queue.as_bytes().to_vec())),
    );
    props.with_headers(headers).with_delivery_mode(2)
}

/// AMQP properties rebuilt from the AWS rendering, as far as they survive it.
pub fn properties_from_rmq(message: &RmqMessage) -> BasicProperties {
    let p = &message.basic_properties;
    let mut props = BasicProperties::default();
    if let Some(v) = &p.content_type {
        props = props.with_content_type(v.as_str().into());
    }
    if let Some(v) = &p.message_id {
        props = props.with_message_id(v.as_str().into());
    }
    if let Some(v) = &p.type_ {
        props = props.with_type(v.as_str().into());
    }
    if let Some(v) = &p.correlation_id {
        props = props.with_correlation_id(v.as_str().into());
    }
    if let Some(h) = &p.headers {
        let mut table = FieldTable::default();
        for (k, v) in h {
            let value = match v {
                crate::rmq_event::HeaderValue::Bytes(b) => {
                    AMQPValue::LongString(LongString::from(b.clone()))
                }
                crate::rmq_event::HeaderValue::Json(v) => json_to_amqp(v),
            };
            table.insert(k.as_str().into(), value);
        }
        props = props.with_headers(table);
    }
    props
}

fn json_to_amqp(v: &serde_json::Value) -> AMQPValue {
    use serde_json::Value;
    match v {
        Value::Null => AMQPValue::Void,
        Value::Bool(b) => AMQPValue::Boolean(*b),
        Value::Number(n) => match n.as_i64() {
            Some(i) => AMQPValue::LongLongInt(i),
            None => AMQPValue::Double(n.as_f64().unwrap_or_default()),
        },
        Value::String(s) => AMQPValue::LongString(LongString::from(s.as_bytes().to_vec())),
        Value::Array(a) => {
            AMQPValue::FieldArray(a.iter().map(json_to_amqp).collect::<Vec<_>>().into())
        }
        Value::Object(o) => match o
            .get("bytes")
            .and_then(|_| serde_json::from_value::<crate::rmq_event::HeaderValue>(v.clone()).ok())
        {
            Some(crate::rmq_event::HeaderValue::Bytes(b)) => {
                AMQPValue::LongString(LongString::from(b))
            }
            _ => {
                let mut t = FieldTable::default();
                for (k, v) in o {
                    t.insert(k.as_str().into(), json_to_amqp(v));
                }
                AMQPValue::FieldTable(t)
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use stratus_contracts::message_types::diag;

    #[tokio::test]
    async fn handlers_run_without_transport() {
        let handlers =
            Handlers::new().on(diag::ECHO, |env: Envelope, body: diag::Echo| async move {
                Ok(vec![emit(
                    &env,
                    "reply",
                    diag::ECHOED,
                    &diag::Echoed {
                        text: body.text,
                        in_reply_to: env.message_id.to_string(),
                    },
                )])
            });
        let env = Envelope::new(diag::ECHO, &diag::Echo { text: "hi".into() });
        let out = handlers.call(env.clone()).await.unwrap();
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].exchange, names::INTERNAL_EVENTS_EXCHANGE);
        assert_eq!(out[0].routing_key, diag::ECHOED);
        let again = handlers.call(env.clone()).await.unwrap();
        assert_eq!(
            out[0].properties.message_id(),
            again[0].properties.message_id()
        );

        let mut bad = env.clone();
        bad.body = b"{\"txt\":1}".to_vec();
        assert!(
            matches!(handlers.call(bad).await, Err(HandlerError::Permanent(m)) if m.contains("diag.echo"))
        );
        let unknown = Envelope::new(diag::NOOP, &diag::Noop {});
        assert!(matches!(
            handlers.call(unknown).await,
            Err(HandlerError::Permanent(_))
        ));
    }

    #[tokio::test]
    async fn a_batch_runs_concurrently_but_in_order_per_job() {
        use std::sync::Mutex;
        use std::time::Duration;
        let log: Arc<Mutex<Vec<(String, u64)>>> = Arc::default();
        let running = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let most = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let handlers = Handlers::new().on(diag::SLEEP, {
            let (log, running, most) = (log.clone(), running.clone(), most.clone());
            move |env: Envelope, body: diag::Sleep| {
                let (log, running, most) = (log.clone(), running.clone(), most.clone());
                async move {
                    let now = running.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
                    most.fetch_max(now, std::sync::atomic::Ordering::SeqCst);
                    // Later messages of a job sleep less: without ordering they would finish first.
                    tokio::time::sleep(Duration::from_millis(body.millis)).await;
                    log.lock()
                        .unwrap()
                        .push((env.job_id.clone().unwrap(), body.millis));
                    running.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
                    Ok(Effects::new())
                }
            }
        });
        let config = stratus_contracts::config::Config::from_lookup(|_| None).unwrap();
        let topology = crate::broker::topology(&config).unwrap();
        let harness = Harness::new(handlers, Publisher::new(config, Arc::new(topology), "test"))
            .with_concurrency(4);
        let mut messages = Vec::new();
        for step in 0..3u64 {
            for job in ["a", "b", "c", "d"] {
                let env = Envelope::new(
                    diag::SLEEP,
                    &diag::Sleep {
                        millis: 30 - step * 10,
                    },
                )
                .with_job_id(job);
                messages.push(crate::rmq_event::render_message(
                    &env.to_properties(),
                    &env.body,
                    false,
                ));
            }
        }
        let event = RmqEvent {
            messages_by_queue: [("stratus.fn.diag::/".to_string(), messages)]
                .into_iter()
                .collect(),
            ..Default::default()
        };
        let report = harness.handle_event(&event, "req-1").await.unwrap();
        assert_eq!(
            report,
            BatchReport {
                handled: 12,
                retried: 0,
                parked: 0
            }
        );
        assert!(
            most.load(std::sync::atomic::Ordering::SeqCst) > 1,
            "jobs ran one at a time"
        );
        let log = log.lock().unwrap();
        for job in ["a", "b", "c", "d"] {
            let order: Vec<u64> = log
                .iter()
                .filter(|(j, _)| j == job)
                .map(|(_, m)| *m)
                .collect();
            assert_eq!(order, vec![30, 20, 10], "job {job} ran out of order");
        }
    }

    #[test]
    fn parked_copies_keep_identity_and_gain_a_reason() {
        let env = Envelope::new(diag::NOOP, &diag::Noop {}).with_job_id("j1");
        let m = crate::rmq_event::render_message(&env.to_properties(), &env.body, false);
        let props = with_parking_headers(properties_from_rmq(&m), "stratus.fn.diag", "because");
        let back = crate::rmq_event::render_message(&props, &env.body, false);
        let decoded = Envelope::from_rmq(&back).unwrap();
        assert_eq!(decoded.message_id, env.message_id);
        assert_eq!(decoded.job_id.as_deref(), Some("j1"));
        let reason = back
            .basic_properties
            .header(names::HEADER_PARKED_REASON)
            .and_then(crate::rmq_event::header_string);
        assert_eq!(reason.as_deref(), Some("because"));
    }
}
