//! The envelope every Stratus message travels in: identity, causality and
//! tracing in AMQP properties and headers, a JSON body.
//!
//! | field | AMQP | notes |
//! |---|---|---|
//! | message id | `message_id` property | UUIDv4 for a new message; UUIDv5 of (causation id, step) for a derived one |
//! | type | `type` property | a registered message type, also the routing key |
//! | correlation id | `correlation_id` property | shared by every message of one flow |
//! | causation id | `x-causation-id` header | the message this one follows from |
//! | job id | `x-job-id` header | the CloudStack async job, where there is one |
//! | trace context | `traceparent` header | W3C trace context |
//! | attempt | `x-attempt` header | 1 for the first delivery attempt, raised by each delayed retry |
//! | creation time | `timestamp` property (seconds) and `x-created-at-ms` header | |

use chrono::{DateTime, TimeZone, Utc};
use lapin::BasicProperties;
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use serde::Serialize;
use serde::de::DeserializeOwned;
use uuid::Uuid;

use crate::rmq_event::{self, RmqMessage};

pub const HEADER_CAUSATION_ID: &str = "x-causation-id";
pub const HEADER_JOB_ID: &str = "x-job-id";
pub const HEADER_TRACEPARENT: &str = "traceparent";
pub const HEADER_ATTEMPT: &str = "x-attempt";
pub const HEADER_CREATED_AT_MS: &str = "x-created-at-ms";
/// Added by quorum queues on redelivery.
pub const HEADER_DELIVERY_COUNT: &str = "x-delivery-count";

/// The namespace of derived message ids (UUIDv5).
const DERIVED_ID_NAMESPACE: Uuid = Uuid::from_u128(0x6b1d_5f0e_4c2a_4e0b_9f3e_51a7_c0de_0001);

#[derive(Debug, Clone, PartialEq)]
pub struct Envelope {
    pub message_id: Uuid,
    pub message_type: String,
    pub correlation_id: String,
    pub causation_id: Option<Uuid>,
    pub job_id: Option<String>,
    pub traceparent: String,
    pub attempt: u32,
    pub created_at: DateTime<Utc>,
    /// The JSON body, as bytes.
    pub body: Vec<u8>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("no message id")]
    MissingMessageId,
    #[error("message id {0:?} is not a UUID")]
    BadMessageId(String),
    #[error("no message type")]
    MissingType,
    #[error("body is not valid base64: {0}")]
    BadBase64(String),
    #[error("header {0} is malformed")]
    BadHeader(&'static str),
    #[error("body does not decode as {message_type}: {error}")]
    BadBody { message_type: String, error: String },
}

impl Envelope {
    /// A new message that starts a flow.
    pub fn new<T: Serialize>(message_type: &str, body: &T) -> Self {
        let message_id = Uuid::new_v4();
        Self {
            message_id,
            message_type: message_type.to_string(),
            correlation_id: message_id.to_string(),
            causation_id: None,
            job_id: None,
            traceparent: new_traceparent(),
            attempt: 1,
            created_at: now_millis(),
            body: serde_json::to_vec(body).expect("message bodies serialise"),
        }
    }

    pub fn with_job_id(mut self, job_id: impl Into<String>) -> Self {
        self.job_id = Some(job_id.into());
        self
    }

    pub fn with_correlation_id(mut self, correlation_id: impl Into<String>) -> Self {
        self.correlation_id = correlation_id.into();
        self
    }

    /// A message that follows from this one at `step`. Its id depends only on
    /// this message's id and the step, so a handler that runs again publishes
    /// the same ids, and consumers can recognise the repeat.
    pub fn derive<T: Serialize>(&self, step: &str, message_type: &str, body: &T) -> Self {
        let message_id = derived_id(self.message_id, step);
        Self {
            message_id,
            message_type: message_type.to_string(),
            correlation_id: self.correlation_id.clone(),
            causation_id: Some(self.message_id),
            job_id: self.job_id.clone(),
            traceparent: child_traceparent(&self.traceparent, message_id),
            attempt: 1,
            created_at: now_millis(),
            body: serde_json::to_vec(body).expect("message bodies serialise"),
        }
    }

    /// Decodes the body as `T`.
    pub fn body<T: DeserializeOwned>(&self) -> Result<T, DecodeError> {
        serde_json::from_slice(&self.body).map_err(|e| DecodeError::BadBody {
            message_type: self.message_type.clone(),
            error: e.to_string(),
        })
    }

    /// The trace id part of `traceparent`, for logs.
    pub fn trace_id(&self) -> &str {
        self.traceparent.split('-').nth(1).unwrap_or("")
    }

    /// AMQP properties carrying this envelope (persistent, JSON).
    pub fn to_properties(&self) -> BasicProperties {
        let mut headers = FieldTable::default();
        if let Some(c) = self.causation_id {
            headers.insert(HEADER_CAUSATION_ID.into(), long_string(&c.to_string()));
        }
        if let Some(j) = &self.job_id {
            headers.insert(HEADER_JOB_ID.into(), long_string(j));
        }
        headers.insert(HEADER_TRACEPARENT.into(), long_string(&self.traceparent));
        headers.insert(
            HEADER_ATTEMPT.into(),
            AMQPValue::LongInt(self.attempt as i32),
        );
        headers.insert(
            HEADER_CREATED_AT_MS.into(),
            AMQPValue::LongLongInt(self.created_at.timestamp_millis()),
        );
        BasicProperties::default()
            .with_message_id(ShortString::from(self.message_id.to_string()))
            .with_type(ShortString::from(self.message_type.clone()))
            .with_correlation_id(ShortString::from(self.correlation_id.clone()))
            .with_timestamp(self.created_at.timestamp().max(0) as u64)
            .with_content_type("application/json".into())
            .with_delivery_mode(2)
            .with_app_id("stratus".into())
            .with_headers(headers)
    }

    /// Reads an envelope from a message of an `aws:rmq` event.
    pub fn from_rmq(message: &RmqMessage) -> Result<Self, DecodeError> {
        let p = &message.basic_properties;
        let id = p
            .message_id
            .as_deref()
            .ok_or(DecodeError::MissingMessageId)?;
        let message_id =
            Uuid::parse_str(id).map_err(|_| DecodeError::BadMessageId(id.to_string()))?;
        let message_type = p
            .type_
            .clone()
            .filter(|t| !t.is_empty())
            .ok_or(DecodeError::MissingType)?;
        let body = message
            .body()
            .map_err(|e| DecodeError::BadBase64(e.to_string()))?;
        let header_str = |name: &'static str| -> Result<Option<String>, DecodeError> {
            match p.header(name) {
                None | Some(rmq_event::HeaderValue::Json(serde_json::Value::Null)) => Ok(None),
                Some(v) => rmq_event::header_string(v)
                    .map(Some)
                    .ok_or(DecodeError::BadHeader(name)),
            }
        };
        let causation_id = match header_str(HEADER_CAUSATION_ID)? {
            None => None,
            Some(c) => {
                Some(Uuid::parse_str(&c).map_err(|_| DecodeError::BadHeader(HEADER_CAUSATION_ID))?)
            }
        };
        let attempt = match p.header(HEADER_ATTEMPT) {
            None => 1,
            Some(v) => v
                .as_u64()
                .filter(|a| (1..=u32::MAX as u64).contains(a))
                .ok_or(DecodeError::BadHeader(HEADER_ATTEMPT))? as u32,
        };
        let created_at = p
            .header(HEADER_CREATED_AT_MS)
            .and_then(|v| v.as_i64())
            .and_then(|ms| Utc.timestamp_millis_opt(ms).single())
            .or_else(|| {
                p.timestamp
                    .as_deref()
                    .and_then(rmq_event::parse_java_timestamp)
            })
            .unwrap_or_else(now_millis);
        Ok(Self {
            message_id,
            message_type,
            correlation_id: p
                .correlation_id
                .clone()
                .unwrap_or_else(|| message_id.to_string()),
            causation_id,
            job_id: header_str(HEADER_JOB_ID)?,
            traceparent: header_str(HEADER_TRACEPARENT)?
                .filter(|t| is_valid_traceparent(t))
                .unwrap_or_else(|| child_traceparent(&new_traceparent(), message_id)),
            attempt,
            created_at,
            body,
        })
    }
}

pub fn derived_id(causation: Uuid, step: &str) -> Uuid {
    Uuid::new_v5(
        &DERIVED_ID_NAMESPACE,
        format!("{causation}/{step}").as_bytes(),
    )
}

fn long_string(s: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(s.as_bytes().to_vec()))
}

fn now_millis() -> DateTime<Utc> {
    Utc.timestamp_millis_opt(Utc::now().timestamp_millis())
        .single()
        .expect("now is a valid time")
}

fn new_traceparent() -> String {
    let trace: u128 = rand::random::<u128>() | 1;
    let span: u64 = rand::random::<u64>() | 1;
    format!("00-{trace:032x}-{span:016x}-01")
}

/// The same trace, with a span id that depends only on the message id.
fn child_traceparent(parent: &str, message_id: Uuid) -> String {
    let trace = parent
        .split('-')
        .nth(1)
        .unwrap_or("00000000000000000000000000000001");
    let span = u64::from_be_bytes(message_id.as_bytes()[8..16].try_into().expect("8 bytes")) | 1;
    format!("00-{trace}-{span:016x}-01")
}

fn is_valid_traceparent(t: &str) -> bool {
    let parts: Vec<&str> = t.split('-').collect();
    parts.len() == 4
        && parts[0].len() == 2
        && parts[1].len() == 32
        && parts[2].len() == 16
        && parts[3].len() == 2
        && parts.iter().all(|p| {
            p.chars()
                .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
        })
        && parts[1] != "00000000000000000000000000000000"
        && parts[2] != "0000000000000000"
}

#[cfg(test)]
mod tests {
    use super::*;
    use stratus_contracts::message_types::diag;

    #[test]
    fn derived_ids_are_deterministic() {
        let parent =
            Envelope::new(diag::ECHO, &diag::Echo { text: "hi".into() }).with_job_id("job-1");
        let a = parent.derive(
            "reply",
            diag::ECHOED,
            &diag::Echoed {
                text: "hi".into(),
                in_reply_to: String::new(),
            },
        );
        let b = parent.derive(
            "reply",
            diag::ECHOED,
            &diag::Echoed {
                text: "hi".into(),
                in_reply_to: String::new(),
            },
        );
        let c = parent.derive(
            "other",
            diag::ECHOED,
            &diag::Echoed {
                text: "hi".into(),
                in_reply_to: String::new(),
            },
        );
        assert_eq!(a.message_id, b.message_id);
        assert_eq!(a.traceparent, b.traceparent);
        assert_ne!(a.message_id, c.message_id);
        assert_eq!(a.causation_id, Some(parent.message_id));
        assert_eq!(a.correlation_id, parent.correlation_id);
        assert_eq!(a.job_id.as_deref(), Some("job-1"));
        assert_eq!(a.trace_id(), parent.trace_id());
        assert!(is_valid_traceparent(&a.traceparent), "{}", a.traceparent);
    }

    #[test]
    fn envelope_survives_amqp_and_the_aws_rendering() {
        let original = Envelope::new(
            diag::ECHO,
            &diag::Echo {
                text: "grüße".into(),
            },
        )
        .with_job_id("7c1e7d3a-0000-4000-8000-000000000001")
        .derive(
            "step-1",
            diag::ECHO,
            &diag::Echo {
                text: "grüße".into(),
            },
        );
        let mut original = original;
        original.attempt = 3;
        let props = original.to_properties();
        let rendered = rmq_event::render_message(&props, &original.body, true);
        let back = Envelope::from_rmq(&rendered).unwrap();
        assert_eq!(back, original);
        assert_eq!(back.body::<diag::Echo>().unwrap().text, "grüße");
    }

    #[test]
    fn missing_identity_is_a_decode_error() {
        let env = Envelope::new(diag::NOOP, &diag::Noop {});
        let props = env.to_properties().with_message_id("not-a-uuid".into());
        let m = rmq_event::render_message(&props, &env.body, false);
        assert_eq!(
            Envelope::from_rmq(&m),
            Err(DecodeError::BadMessageId("not-a-uuid".into()))
        );
        let m = rmq_event::render_message(&BasicProperties::default(), b"{}", false);
        assert_eq!(Envelope::from_rmq(&m), Err(DecodeError::MissingMessageId));
    }
}
