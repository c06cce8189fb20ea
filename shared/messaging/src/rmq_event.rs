//! The Amazon MQ for RabbitMQ event (`aws:rmq`), as our own type with every
//! field optional: real events carry `"priority": null` and other nulls that
//! `aws_lambda_events`' non-optional fields reject (which would retry the batch
//! forever). Also renders AMQP deliveries exactly as AWS does, for the local
//! runner: all keys present, `null` where unset, string headers as Java byte
//! arrays `{"bytes":[...]}` (signed, as Java bytes are), the timestamp as a
//! Java medium date string in UTC.

use std::collections::BTreeMap;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use chrono::{DateTime, NaiveDateTime, TimeZone, Utc};
use lapin::BasicProperties;
use lapin::types::{AMQPValue, FieldTable};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

pub const EVENT_SOURCE: &str = "aws:rmq";

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RmqEvent {
    pub event_source: Option<String>,
    pub event_source_arn: Option<String>,
    /// Keyed `"<queue>::<vhost>"`.
    #[serde(rename = "rmqMessagesByQueue", default)]
    pub messages_by_queue: BTreeMap<String, Vec<RmqMessage>>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RmqMessage {
    #[serde(default)]
    pub basic_properties: RmqBasicProperties,
    #[serde(default)]
    pub redelivered: bool,
    /// The body, base64.
    pub data: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RmqBasicProperties {
    pub content_type: Option<String>,
    pub content_encoding: Option<String>,
    pub headers: Option<BTreeMap<String, HeaderValue>>,
    pub delivery_mode: Option<u8>,
    pub priority: Option<u8>,
    pub correlation_id: Option<String>,
    pub reply_to: Option<String>,
    pub expiration: Option<String>,
    pub message_id: Option<String>,
    /// A Java medium date, e.g. `"Jan 1, 1970, 12:33:41 AM"`.
    pub timestamp: Option<String>,
    #[serde(rename = "type")]
    pub type_: Option<String>,
    pub user_id: Option<String>,
    pub app_id: Option<String>,
    pub cluster_id: Option<String>,
    pub body_size: Option<u64>,
}

impl RmqBasicProperties {
    pub fn header(&self, name: &str) -> Option<&HeaderValue> {
        self.headers.as_ref()?.get(name)
    }
}

/// A header value as AWS renders it: AMQP strings and byte arrays as Java byte
/// arrays `{"bytes":[...]}` (decoded here straight to bytes, without a JSON tree
/// per byte), everything else as plain JSON.
#[derive(Debug, Clone, PartialEq)]
pub enum HeaderValue {
    Bytes(Vec<u8>),
    Json(Value),
}

impl HeaderValue {
    pub fn as_u64(&self) -> Option<u64> {
        match self {
            HeaderValue::Json(v) => v.as_u64(),
            HeaderValue::Bytes(_) => None,
        }
    }

    pub fn as_i64(&self) -> Option<i64> {
        match self {
            HeaderValue::Json(v) => v.as_i64(),
            HeaderValue::Bytes(_) => None,
        }
    }

    /// The value as JSON, byte arrays in AWS's `{"bytes":[...]}` form.
    pub fn to_json(&self) -> Value {
        match self {
            HeaderValue::Bytes(b) => java_bytes(b),
            HeaderValue::Json(v) => v.clone(),
        }
    }
}

impl Serialize for HeaderValue {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        match self {
            HeaderValue::Bytes(b) => {
                struct Signed<'a>(&'a [u8]);
                impl Serialize for Signed<'_> {
                    fn serialize<S: serde::Serializer>(
                        &self,
                        serializer: S,
                    ) -> Result<S::Ok, S::Error> {
                        serializer.collect_seq(self.0.iter().map(|b| *b as i8))
                    }
                }
                let mut map = serializer.serialize_map(Some(1))?;
                map.serialize_entry("bytes", &Signed(b))?;
                map.end()
            }
            HeaderValue::Json(v) => v.serialize(serializer),
        }
    }
}

impl<'de> Deserialize<'de> for HeaderValue {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = HeaderValue;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an AMQP header value")
            }
            fn visit_bool<E>(self, v: bool) -> Result<HeaderValue, E> {
                Ok(HeaderValue::Json(Value::Bool(v)))
            }
            fn visit_i64<E>(self, v: i64) -> Result<HeaderValue, E> {
                Ok(HeaderValue::Json(Value::from(v)))
            }
            fn visit_u64<E>(self, v: u64) -> Result<HeaderValue, E> {
                Ok(HeaderValue::Json(Value::from(v)))
            }
            fn visit_f64<E>(self, v: f64) -> Result<HeaderValue, E> {
                Ok(HeaderValue::Json(Value::from(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<HeaderValue, E> {
                Ok(HeaderValue::Json(Value::from(v)))
            }
            fn visit_string<E>(self, v: String) -> Result<HeaderValue, E> {
                Ok(HeaderValue::Json(Value::from(v)))
            }
            fn visit_unit<E>(self) -> Result<HeaderValue, E> {
                Ok(HeaderValue::Json(Value::Null))
            }
            fn visit_none<E>(self) -> Result<HeaderValue, E> {
                Ok(HeaderValue::Json(Value::Null))
            }
            fn visit_some<D: serde::Deserializer<'de>>(
                self,
                d: D,
            ) -> Result<HeaderValue, D::Error> {
                HeaderValue::deserialize(d)
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<HeaderValue, A::Error> {
                let mut items = Vec::new();
                while let Some(v) = seq.next_element::<Value>()? {
                    items.push(v);
                }
                Ok(HeaderValue::Json(Value::Array(items)))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<HeaderValue, A::Error> {
                let mut bytes: Option<Result<Vec<u8>, Value>> = None;
                let mut rest = Map::new();
                while let Some(key) = map.next_key::<String>()? {
                    if key == "bytes" && bytes.is_none() {
                        bytes = Some(map.next_value::<JavaBytes>()?.0);
                    } else {
                        rest.insert(key, map.next_value::<Value>()?);
                    }
                }
                match bytes {
                    Some(Ok(b)) if rest.is_empty() => Ok(HeaderValue::Bytes(b)),
                    Some(b) => {
                        rest.insert(
                            "bytes".into(),
                            b.map(|b| java_bytes(&b)["bytes"].take())
                                .unwrap_or_else(|v| v),
                        );
                        Ok(HeaderValue::Json(Value::Object(rest)))
                    }
                    None => Ok(HeaderValue::Json(Value::Object(rest))),
                }
            }
        }
        deserializer.deserialize_any(V)
    }
}

/// A Java byte array: bytes when every element is a byte (signed or not), else the JSON as it came.
struct JavaBytes(Result<Vec<u8>, Value>);

impl<'de> Deserialize<'de> for JavaBytes {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let v = Value::deserialize(deserializer)?;
        let bytes = v.as_array().and_then(|a| {
            a.iter()
                .map(|b| {
                    b.as_i64()
                        .filter(|b| (-128..=255).contains(b))
                        .map(|b| b as u8)
                })
                .collect::<Option<Vec<u8>>>()
        });
        Ok(JavaBytes(bytes.ok_or(v)))
    }
}

impl RmqMessage {
    /// The decoded body (empty when `data` is absent).
    pub fn body(&self) -> Result<Vec<u8>, base64::DecodeError> {
        match &self.data {
            None => Ok(Vec::new()),
            Some(d) => BASE64.decode(d),
        }
    }
}

impl RmqEvent {
    /// Splits a `"<queue>::<vhost>"` key.
    pub fn split_key(key: &str) -> (&str, &str) {
        key.rsplit_once("::").unwrap_or((key, "/"))
    }

    pub fn key(queue: &str, vhost: &str) -> String {
        format!("{queue}::{vhost}")
    }

    pub fn message_count(&self) -> usize {
        self.messages_by_queue.values().map(Vec::len).sum()
    }
}

/// A header value as a string: AWS sends AMQP strings as `{"bytes":[...]}`
/// (Java bytes, so possibly negative); plain JSON strings are accepted too.
pub fn header_string(value: &HeaderValue) -> Option<String> {
    match value {
        HeaderValue::Bytes(b) => String::from_utf8(b.clone()).ok(),
        HeaderValue::Json(v) => json_string(v),
    }
}

fn json_string(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Object(o) => {
            let bytes = o.get("bytes")?.as_array()?;
            let bytes: Option<Vec<u8>> = bytes
                .iter()
                .map(|b| {
                    b.as_i64()
                        .filter(|b| (-128..=255).contains(b))
                        .map(|b| b as u8)
                })
                .collect();
            String::from_utf8(bytes?).ok()
        }
        _ => None,
    }
}

/// Formats a time as AWS renders the `timestamp` property (Java's medium date, UTC),
/// e.g. `Jan 1, 1970, 12:33:41 AM`.
pub fn format_java_timestamp(t: DateTime<Utc>) -> String {
    use chrono::{Datelike, Timelike};
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let (pm, hour) = t.hour12();
    format!(
        "{} {}, {}, {}:{:02}:{:02} {}",
        MONTHS[t.month0() as usize],
        t.day(),
        t.year(),
        hour,
        t.minute(),
        t.second(),
        if pm { "PM" } else { "AM" }
    )
}

/// Parses a `timestamp` property as AWS renders it.
pub fn parse_java_timestamp(s: &str) -> Option<DateTime<Utc>> {
    // Newer JDKs put a narrow no-break space before AM/PM.
    let s = s.replace('\u{202f}', " ");
    NaiveDateTime::parse_from_str(&s, "%b %d, %Y, %I:%M:%S %p")
        .ok()
        .map(|n| Utc.from_utc_datetime(&n))
}

/// Renders an AMQP value as AWS's poller does (Java's Gson view of the AMQP table).
pub fn amqp_to_json(value: &AMQPValue) -> Value {
    match value {
        AMQPValue::Boolean(b) => json!(b),
        AMQPValue::ShortShortInt(v) => json!(v),
        AMQPValue::ShortShortUInt(v) => json!(v),
        AMQPValue::ShortInt(v) => json!(v),
        AMQPValue::ShortUInt(v) => json!(v),
        AMQPValue::LongInt(v) => json!(v),
        AMQPValue::LongUInt(v) => json!(v),
        AMQPValue::LongLongInt(v) => json!(v),
        AMQPValue::Float(v) => json!(v),
        AMQPValue::Double(v) => json!(v),
        AMQPValue::DecimalValue(d) => json!(d.value as f64 / 10f64.powi(d.scale as i32)),
        AMQPValue::ShortString(s) => java_bytes(s.as_str().as_bytes()),
        AMQPValue::LongString(s) => java_bytes(s.as_bytes()),
        AMQPValue::ByteArray(b) => java_bytes(b.as_slice()),
        AMQPValue::FieldArray(a) => Value::Array(a.as_slice().iter().map(amqp_to_json).collect()),
        AMQPValue::Timestamp(t) => Utc
            .timestamp_opt(*t as i64, 0)
            .single()
            .map(|t| json!(format_java_timestamp(t)))
            .unwrap_or(Value::Null),
        AMQPValue::FieldTable(t) => Value::Object(table_to_json(t)),
        AMQPValue::Void => Value::Null,
    }
}

fn java_bytes(bytes: &[u8]) -> Value {
    json!({ "bytes": bytes.iter().map(|b| *b as i8).collect::<Vec<i8>>() })
}

pub fn table_to_json(table: &FieldTable) -> Map<String, Value> {
    table
        .inner()
        .iter()
        .map(|(k, v)| (k.to_string(), amqp_to_json(v)))
        .collect()
}

/// A message's headers as AWS renders them.
pub fn headers_of(table: &FieldTable) -> BTreeMap<String, HeaderValue> {
    table
        .inner()
        .iter()
        .map(|(k, v)| {
            let h = match v {
                AMQPValue::ShortString(s) => HeaderValue::Bytes(s.as_str().as_bytes().to_vec()),
                AMQPValue::LongString(s) => HeaderValue::Bytes(s.as_bytes().to_vec()),
                AMQPValue::ByteArray(b) => HeaderValue::Bytes(b.as_slice().to_vec()),
                other => HeaderValue::Json(amqp_to_json(other)),
            };
            (k.to_string(), h)
        })
        .collect()
}

/// Renders one delivery as a message of an `aws:rmq` event.
pub fn render_message(props: &BasicProperties, body: &[u8], redelivered: bool) -> RmqMessage {
    let s = |v: &Option<lapin::types::ShortString>| v.as_ref().map(|s| s.to_string());
    RmqMessage {
        basic_properties: RmqBasicProperties {
            content_type: s(props.content_type()),
            content_encoding: s(props.content_encoding()),
            headers: props.headers().as_ref().map(headers_of),
            delivery_mode: *props.delivery_mode(),
            priority: *props.priority(),
            correlation_id: s(props.correlation_id()),
            reply_to: s(props.reply_to()),
            expiration: s(props.expiration()),
            message_id: s(props.message_id()),
            timestamp: props
                .timestamp()
                .and_then(|t| Utc.timestamp_opt(t as i64, 0).single())
                .map(format_java_timestamp),
            type_: s(props.kind()),
            user_id: s(props.user_id()),
            app_id: s(props.app_id()),
            cluster_id: s(props.cluster_id()),
            body_size: Some(body.len() as u64),
        },
        redelivered,
        data: Some(BASE64.encode(body)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn upstream_fixture() -> String {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../events/upstream/example-rabbitmq-event.json"
        );
        std::fs::read_to_string(path).unwrap()
    }

    #[test]
    fn decodes_the_upstream_fixture_unchanged() {
        let event: RmqEvent = serde_json::from_str(&upstream_fixture()).unwrap();
        assert_eq!(event.event_source.as_deref(), Some(EVENT_SOURCE));
        let messages = &event.messages_by_queue["test::/"];
        assert_eq!(RmqEvent::split_key("test::/"), ("test", "/"));
        let m = &messages[0];
        let p = &m.basic_properties;
        assert_eq!(
            header_string(p.header("header1").unwrap()).as_deref(),
            Some("value1")
        );
        assert_eq!(p.header("numberInHeader").unwrap().as_i64(), Some(10));
        assert_eq!(p.priority, Some(34));
        assert_eq!(
            p.timestamp
                .as_deref()
                .and_then(parse_java_timestamp)
                .unwrap()
                .timestamp(),
            2021
        );
        assert_eq!(
            m.body().unwrap(),
            br#"{"timeout":0,"data":"CZrmf0Gw8Ov4bqLQxD4E"}"#
        );
        // The upstream crate's own type reads the same fixture.
        let theirs: aws_lambda_events::rabbitmq::RabbitMqEvent =
            serde_json::from_str(&upstream_fixture()).unwrap();
        assert_eq!(theirs.messages_by_queue["test::/"][0].data, m.data);
    }

    #[test]
    fn header_values_decode_leniently() {
        let text = r#"{"a":{"bytes":[104,-61,-87]},"b":7,"c":{"bytes":[1,"x"]},"d":{"bytes":[1],"more":true},"e":[{"reason":{"bytes":[114]}}],"f":null}"#;
        let h: BTreeMap<String, HeaderValue> = serde_json::from_str(text).unwrap();
        assert_eq!(h["a"], HeaderValue::Bytes(vec![104, 0xc3, 0xa9]));
        assert_eq!(header_string(&h["a"]).as_deref(), Some("hé"));
        assert_eq!(h["b"].as_u64(), Some(7));
        assert_eq!(h["c"], HeaderValue::Json(json!({"bytes": [1, "x"]})));
        assert_eq!(
            h["d"],
            HeaderValue::Json(json!({"bytes": [1], "more": true}))
        );
        assert_eq!(h["e"].to_json(), json!([{"reason": {"bytes": [114]}}]));
        assert_eq!(h["f"], HeaderValue::Json(Value::Null));
        let back: BTreeMap<String, HeaderValue> =
            serde_json::from_str(&serde_json::to_string(&h).unwrap()).unwrap();
        assert_eq!(back, h);
    }

    #[test]
    fn java_timestamps() {
        let t = Utc.with_ymd_and_hms(2026, 11, 5, 13, 4, 9).unwrap();
        assert_eq!(format_java_timestamp(t), "Nov 5, 2026, 1:04:09 PM");
        assert_eq!(parse_java_timestamp("Nov 5, 2026, 1:04:09 PM"), Some(t));
        assert_eq!(
            format_java_timestamp(Utc.timestamp_opt(0, 0).unwrap()),
            "Jan 1, 1970, 12:00:00 AM"
        );
    }

    #[test]
    fn null_priority_and_missing_fields_decode() {
        let text = r#"{"eventSource":"aws:rmq","rmqMessagesByQueue":{"q::/":[{"basicProperties":{"priority":null,"deliveryMode":null,"bodySize":null,"headers":null},"data":null}]}}"#;
        let event: RmqEvent = serde_json::from_str(text).unwrap();
        let m = &event.messages_by_queue["q::/"][0];
        assert_eq!(m.basic_properties.priority, None);
        assert!(!m.redelivered);
        assert_eq!(m.body().unwrap(), b"");
    }

    #[test]
    fn rendering_has_every_key_and_java_shapes() {
        let mut headers = FieldTable::default();
        headers.insert("s".into(), AMQPValue::LongString("é".into()));
        headers.insert("n".into(), AMQPValue::LongLongInt(7));
        let props = BasicProperties::default()
            .with_headers(headers)
            .with_timestamp(2021)
            .with_delivery_mode(2);
        let m = render_message(&props, b"hello", true);
        let v = serde_json::to_value(&m).unwrap();
        let p = &v["basicProperties"];
        for key in [
            "contentType",
            "contentEncoding",
            "headers",
            "deliveryMode",
            "priority",
            "correlationId",
            "replyTo",
            "expiration",
            "messageId",
            "timestamp",
            "type",
            "userId",
            "appId",
            "clusterId",
            "bodySize",
        ] {
            assert!(p.as_object().unwrap().contains_key(key), "{key} missing");
        }
        assert_eq!(p["priority"], Value::Null);
        assert_eq!(p["headers"]["s"], json!({"bytes": [-61, -87]}));
        assert_eq!(
            header_string(m.basic_properties.header("s").unwrap()).as_deref(),
            Some("é")
        );
        assert_eq!(p["timestamp"], json!("Jan 1, 1970, 12:33:41 AM"));
        assert_eq!(p["bodySize"], json!(5));
        assert_eq!(v["redelivered"], json!(true));
        assert_eq!(v["data"], json!("aGVsbG8="));
    }
}
