//! The sample events under `events/`, generated from readable sources so that
//! no base64 is edited by hand: `events/rmq/bodies/<type>.json` becomes
//! `events/rmq/<type>.json`, the exact `aws:rmq` event the MQ trigger delivers
//! for that message type; the HTTP and schedule samples are rendered by the
//! runner's own gateway and scheduler. Fixed ids and times keep them stable.
//! `cargo run -p stratus-tests --bin gen-events` rewrites them; a test fails
//! when a file differs from what the generator makes.

use std::path::PathBuf;

use axum::http::{HeaderMap, HeaderValue};
use chrono::TimeZone;
use serde_json::Value;
use stratus_contracts::message_types::{self, Kind, REGISTRY};
use stratus_contracts::names;
use stratus_contracts::topology::Topology;
use stratus_messaging::Envelope;
use stratus_messaging::broker::BUILTIN_TOPOLOGY;
use stratus_messaging::rmq_event::{self, RmqEvent};

use crate::root;

/// Whether a topic binding `pattern` matches `key` (`*` one word, `#` any number).
pub fn topic_matches(pattern: &str, key: &str) -> bool {
    fn go(p: &[&str], k: &[&str]) -> bool {
        match (p.first(), k.first()) {
            (None, None) => true,
            (Some(&"#"), _) => go(&p[1..], k) || (!k.is_empty() && go(p, &k[1..])),
            (Some(&"*"), Some(_)) => go(&p[1..], &k[1..]),
            (Some(a), Some(b)) if a == b => go(&p[1..], &k[1..]),
            _ => false,
        }
    }
    let p: Vec<&str> = pattern.split('.').collect();
    let k: Vec<&str> = key.split('.').collect();
    go(&p, &k)
}

/// The queue a message of this type lands in under the repository topology.
fn queue_for(topology: &Topology, message_type: &str, kind: Kind) -> String {
    topology
        .queues
        .iter()
        .find(|q| {
            q.bindings
                .iter()
                .any(|b| b.exchange == kind.exchange() && topic_matches(&b.key, message_type))
        })
        .map(|q| q.name.clone())
        .unwrap_or_else(|| {
            names::function_queue(message_type.split('.').next().unwrap_or("unknown"))
        })
}

fn fixed_time() -> chrono::DateTime<chrono::Utc> {
    chrono::Utc.with_ymd_and_hms(2026, 1, 2, 3, 4, 5).unwrap()
}

/// The `aws:rmq` event carrying one message of `message_type` with `body`.
pub fn rmq_sample(message_type: &str, body: &Value) -> Value {
    let topology = Topology::parse("builtin", BUILTIN_TOPOLOGY).unwrap();
    let kind = message_types::lookup(message_type)
        .map(|t| t.kind)
        .unwrap_or(Kind::Command);
    let cause = uuid::Uuid::from_u128(0x0000_0000_0000_4000_8000_0000_0000_0001);
    let mut env = Envelope::new(message_type, body);
    env.message_id = stratus_messaging::envelope::derived_id(cause, message_type);
    env.correlation_id = cause.to_string();
    env.causation_id = Some(cause);
    env.job_id = Some("00000000-0000-4000-8000-00000000000a".into());
    env.traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".into();
    env.created_at = fixed_time();
    let queue = queue_for(&topology, message_type, kind);
    let message = rmq_event::render_message(&env.to_properties(), &env.body, false);
    let event = RmqEvent {
        event_source: Some(rmq_event::EVENT_SOURCE.into()),
        event_source_arn: Some(stratus_local::mq_trigger::broker_arn()),
        messages_by_queue: [(RmqEvent::key(&queue, "/"), vec![message])]
            .into_iter()
            .collect(),
    };
    serde_json::to_value(event).unwrap()
}

fn http_sample(method: &str, query: &str, content_type: Option<&str>, body: &str) -> Value {
    let route = stratus_local::gateway::Route {
        path: "/client/api".into(),
        methods: vec!["GET".into(), "POST".into()],
        pool: None,
    };
    let mut headers = HeaderMap::new();
    headers.insert("host", HeaderValue::from_static("127.0.0.1:8080"));
    headers.insert(
        "user-agent",
        HeaderValue::from_static("python-requests/2.32.3"),
    );
    headers.insert(
        "cookie",
        HeaderValue::from_static("JSESSIONID=3F1E0F1A; sessionkey=abc"),
    );
    if let Some(ct) = content_type {
        headers.insert("content-type", HeaderValue::from_str(ct).unwrap());
    }
    let peer = "127.0.0.1:50000".parse().unwrap();
    let mut event = stratus_local::gateway::build_event(
        &route,
        method,
        "/client/api",
        query,
        &headers,
        &body.as_bytes().to_vec().into(),
        peer,
    );
    let t = fixed_time();
    event["requestContext"]["requestId"] = Value::from("00000000-0000-4000-8000-0000000000b1");
    event["requestContext"]["time"] = Value::from(t.format("%d/%b/%Y:%H:%M:%S %z").to_string());
    event["requestContext"]["timeEpoch"] = Value::from(t.timestamp_millis());
    event
}

fn schedule_sample() -> Value {
    let mut event = stratus_local::schedule::scheduled_event("outbox-relay-schedule");
    event["id"] = Value::from("00000000-0000-4000-8000-0000000000c1");
    event["time"] = Value::from(fixed_time().format("%Y-%m-%dT%H:%M:%SZ").to_string());
    event
}

/// Every generated sample: its path under the repository and its content.
pub fn generate() -> Vec<(PathBuf, String)> {
    let dir = root().join("events");
    let mut out = Vec::new();
    let pretty = |v: &Value| serde_json::to_string_pretty(v).unwrap() + "\n";
    for t in REGISTRY {
        let source = dir.join("rmq/bodies").join(format!("{}.json", t.name));
        let body: Value = serde_json::from_slice(
            &std::fs::read(&source)
                .unwrap_or_else(|_| panic!("no sample body {}", source.display())),
        )
        .unwrap();
        out.push((
            dir.join(format!("rmq/{}.json", t.name)),
            pretty(&rmq_sample(t.name, &body)),
        ));
    }
    out.push((
        dir.join("http/client-api-get.json"),
        pretty(&http_sample(
            "GET",
            "command=listZones&response=json&apiKey=KEY&signature=abc%3D",
            None,
            "",
        )),
    ));
    out.push((
        dir.join("http/client-api-post-form.json"),
        pretty(&http_sample(
            "POST",
            "",
            Some("application/x-www-form-urlencoded"),
            "command=login&username=admin&password=password&response=json",
        )),
    ));
    out.push((dir.join("schedule/rate.json"), pretty(&schedule_sample())));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_matching() {
        assert!(topic_matches("diag.*", "diag.echo"));
        assert!(!topic_matches("diag.*", "diag.echo.x"));
        assert!(topic_matches("agent.#", "agent.start-vm.h1"));
        assert!(topic_matches("#", "a"));
        assert!(!topic_matches("agent.*.h1", "agent.start-vm.h2"));
    }
}
