//! The diagnostics function's handlers. Each is free of transport: it takes a
//! typed message and returns the messages it wants published.

use std::time::Duration;

use stratus_contracts::message_types::diag;
use stratus_messaging::{Effects, Envelope, HandlerError, Handlers, emit};

pub fn handlers() -> Handlers {
    Handlers::new()
        .on(diag::NOOP, |_env: Envelope, _: diag::Noop| async {
            Ok(Effects::new())
        })
        .on(diag::ECHO, echo)
        .on(diag::FAIL, fail)
        .on(
            diag::SLEEP,
            |_env: Envelope, body: diag::Sleep| async move {
                tokio::time::sleep(Duration::from_millis(body.millis)).await;
                Ok(Effects::new())
            },
        )
        .on(diag::EXIT, |_env: Envelope, body: diag::Exit| async move {
            tracing::warn!(code = body.code, "exiting as asked");
            std::process::exit(body.code)
        })
}

/// Which trigger an event came from, by its shape.
#[derive(Debug, PartialEq, Eq)]
pub enum Trigger {
    Queue,
    Http,
    Schedule,
    Unknown,
}

/// The fields that tell the trigger kinds apart; the rest of the event is skipped.
#[derive(serde::Deserialize)]
struct Shape {
    #[serde(rename = "eventSource")]
    event_source: Option<String>,
    version: Option<String>,
    #[serde(rename = "routeKey")]
    route_key: Option<serde::de::IgnoredAny>,
    source: Option<String>,
    #[serde(rename = "detail-type")]
    detail_type: Option<String>,
}

pub fn trigger_of(event: &str) -> Trigger {
    let Ok(shape) = serde_json::from_str::<Shape>(event) else {
        return Trigger::Unknown;
    };
    if shape.event_source.as_deref() == Some("aws:rmq") {
        Trigger::Queue
    } else if shape.version.as_deref() == Some("2.0") && shape.route_key.is_some() {
        Trigger::Http
    } else if shape.source.as_deref() == Some("aws.events")
        && shape.detail_type.as_deref() == Some("Scheduled Event")
    {
        Trigger::Schedule
    } else {
        Trigger::Unknown
    }
}

/// Answers an API Gateway v2 request with what the function received, and
/// sets a cookie, so that a test sees both directions of the gateway.
pub fn http_answer(event: &serde_json::Value) -> serde_json::Value {
    let seen = serde_json::json!({
        "method": event["requestContext"]["http"]["method"],
        "rawPath": event["rawPath"],
        "rawQueryString": event["rawQueryString"],
        "cookies": event.get("cookies").cloned().unwrap_or_else(|| serde_json::json!([])),
        "body": event.get("body").cloned().unwrap_or(serde_json::Value::Null),
        "isBase64Encoded": event["isBase64Encoded"],
    });
    serde_json::json!({
        "statusCode": 200,
        "headers": { "content-type": "application/json" },
        "cookies": ["diag=seen; Path=/; HttpOnly"],
        "body": seen.to_string(),
    })
}

async fn echo(env: Envelope, body: diag::Echo) -> Result<Effects, HandlerError> {
    let reply = diag::Echoed {
        text: body.text,
        in_reply_to: env.message_id.to_string(),
    };
    Ok(vec![emit(&env, "echoed", diag::ECHOED, &reply)])
}

async fn fail(env: Envelope, body: diag::Fail) -> Result<Effects, HandlerError> {
    match body.failure {
        diag::Failure::Permanent => {
            Err(HandlerError::Permanent("asked to fail permanently".into()))
        }
        diag::Failure::Transient => match body.until_attempt {
            Some(n) if env.attempt >= n => Ok(Effects::new()),
            _ => Err(HandlerError::Transient(format!(
                "asked to fail (attempt {})",
                env.attempt
            ))),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn transient_failure_stops_at_its_attempt() {
        let h = handlers();
        let mut env = Envelope::new(
            diag::FAIL,
            &diag::Fail {
                failure: diag::Failure::Transient,
                until_attempt: Some(3),
            },
        );
        assert!(matches!(
            h.call(env.clone()).await,
            Err(HandlerError::Transient(_))
        ));
        env.attempt = 3;
        assert_eq!(h.call(env).await.unwrap().len(), 0);
        let env = Envelope::new(
            diag::FAIL,
            &diag::Fail {
                failure: diag::Failure::Permanent,
                until_attempt: None,
            },
        );
        assert!(matches!(h.call(env).await, Err(HandlerError::Permanent(_))));
    }

    #[test]
    fn trigger_kinds_are_told_apart() {
        let sample = |p: &str| {
            std::fs::read_to_string(format!("{}/../../events/{p}", env!("CARGO_MANIFEST_DIR")))
                .unwrap()
        };
        assert_eq!(trigger_of(&sample("rmq/diag.echo.json")), Trigger::Queue);
        assert_eq!(
            trigger_of(&sample("http/client-api-get.json")),
            Trigger::Http
        );
        assert_eq!(trigger_of(&sample("schedule/rate.json")), Trigger::Schedule);
        assert_eq!(trigger_of("{\"what\":1}"), Trigger::Unknown);
        assert_eq!(trigger_of("[]"), Trigger::Unknown);
    }

    #[tokio::test]
    async fn echo_answers_with_a_derived_event() {
        let env = Envelope::new(
            diag::ECHO,
            &diag::Echo {
                text: "ping".into(),
            },
        );
        let out = handlers().call(env.clone()).await.unwrap();
        let reply: diag::Echoed = serde_json_body(&out[0].body);
        assert_eq!(reply.text, "ping");
        assert_eq!(reply.in_reply_to, env.message_id.to_string());
    }

    fn serde_json_body<T: serde::de::DeserializeOwned>(b: &[u8]) -> T {
        serde_json::from_slice(b).unwrap()
    }
}
