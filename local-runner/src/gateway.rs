//! An API Gateway HTTP API (payload format 2.0) in front of HTTP-triggered
//! functions: requests become the exact v2 event (`rawQueryString` as sent,
//! `cookies`, lower-cased headers joined with commas, base64 bodies where API
//! Gateway base64-encodes them), and the function's answer is mapped back,
//! cookies included, with API Gateway's own answers for failures. Its
//! connections are served by [`serve`] (in `server.rs`), which bounds request
//! heads, times out slow ones, caps connections and answers malformed requests
//! with CloudStack's error envelope.

mod server;

pub use server::{HEADER_READ_TIMEOUT, MAX_CONNECTIONS, MAX_HEAD_BYTES, MAX_HEADERS, serve};

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde_json::{Map, Value, json};

use crate::pool::{ACCOUNT_ID, Outcome, Pool};

/// API Gateway's request payload limit.
const MAX_REQUEST_BYTES: usize = 10 * 1024 * 1024;

pub struct Route {
    pub path: String,
    pub methods: Vec<String>,
    /// The function behind the route (None only when rendering sample events).
    pub pool: Option<Arc<Pool>>,
}

impl Route {
    fn route_key(&self, method: &str) -> String {
        if self.methods.is_empty() {
            format!("ANY {}", self.path)
        } else {
            format!("{method} {}", self.path)
        }
    }

    fn accepts(&self, method: &str, path: &str) -> bool {
        path == self.path && (self.methods.is_empty() || self.methods.iter().any(|m| m == method))
    }
}

pub fn router(routes: Vec<Route>) -> Router {
    Router::new().fallback(handle).with_state(Arc::new(routes))
}

fn gateway_message(status: StatusCode, message: &str) -> Response {
    (status, axum::Json(json!({ "message": message }))).into_response()
}

async fn handle(
    State(routes): State<Arc<Vec<Route>>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    request: Request,
) -> Response {
    let method = request.method().as_str().to_string();
    let path = request.uri().path().to_string();
    let Some(route) = routes.iter().find(|r| r.accepts(&method, &path)) else {
        return gateway_message(StatusCode::NOT_FOUND, "Not Found");
    };
    let (parts, body) = request.into_parts();
    let body = match axum::body::to_bytes(body, MAX_REQUEST_BYTES).await {
        Ok(b) => b,
        Err(_) => {
            return gateway_message(StatusCode::PAYLOAD_TOO_LARGE, "Request Entity Too Large");
        }
    };
    let event = build_event(
        route,
        &method,
        &path,
        parts.uri.query().unwrap_or(""),
        &parts.headers,
        &body,
        peer,
    );
    let payload = serde_json::to_vec(&event).expect("JSON");
    let Some(pool) = &route.pool else {
        return gateway_message(StatusCode::INTERNAL_SERVER_ERROR, "Internal Server Error");
    };
    match pool.invoke(payload.into()).await {
        Outcome::Success(answer) => map_response(&answer),
        Outcome::Error(body) => {
            let timed_out = serde_json::from_slice::<Value>(&body)
                .ok()
                .is_some_and(|v| v["errorType"] == "Sandbox.Timedout");
            if timed_out {
                gateway_message(StatusCode::SERVICE_UNAVAILABLE, "Service Unavailable")
            } else {
                gateway_message(StatusCode::INTERNAL_SERVER_ERROR, "Internal Server Error")
            }
        }
    }
}

/// Whether API Gateway passes a body of this content type as text (otherwise base64).
fn is_text(content_type: Option<&str>) -> bool {
    let Some(ct) = content_type else { return false };
    let ct = ct
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    ct.starts_with("text/")
        || [
            "application/json",
            "application/xml",
            "application/javascript",
        ]
        .contains(&ct.as_str())
        || ct.ends_with("+json")
        || ct.ends_with("+xml")
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3])
                    .ok()
                    .and_then(|h| u8::from_str_radix(h, 16).ok());
                match hex {
                    Some(b) => {
                        out.push(b);
                        i += 3;
                    }
                    None => {
                        out.push(b'%');
                        i += 1;
                    }
                }
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Inserts `value`, joining it to an existing value with a comma, as API Gateway
/// does for repeated headers and query parameters.
fn join_insert(map: &mut Map<String, Value>, key: String, value: &str) {
    match map.get_mut(&key) {
        Some(Value::String(existing)) => {
            existing.push(',');
            existing.push_str(value);
        }
        _ => {
            map.insert(key, Value::String(value.to_string()));
        }
    }
}

pub fn build_event(
    route: &Route,
    method: &str,
    path: &str,
    raw_query: &str,
    headers: &HeaderMap,
    body: &Bytes,
    peer: SocketAddr,
) -> Value {
    let mut header_map: Map<String, Value> = Map::new();
    let mut cookies: Vec<String> = Vec::new();
    for (name, value) in headers {
        let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
        if name == "cookie" {
            cookies.extend(
                value
                    .split(';')
                    .map(|c| c.trim().to_string())
                    .filter(|c| !c.is_empty()),
            );
            continue;
        }
        join_insert(&mut header_map, name.as_str().to_ascii_lowercase(), &value);
    }
    let mut query: Map<String, Value> = Map::new();
    for pair in raw_query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        join_insert(&mut query, percent_decode(k), &percent_decode(v));
    }
    let now = chrono::Utc::now();
    let host = headers
        .get("host")
        .and_then(|h| h.to_str().ok())
        .unwrap_or("127.0.0.1")
        .to_string();
    let route_key = route.route_key(method);
    let mut event = json!({
        "version": "2.0",
        "routeKey": route_key,
        "rawPath": path,
        "rawQueryString": raw_query,
        "headers": header_map,
        "requestContext": {
            "accountId": ACCOUNT_ID,
            "apiId": "stratuslocal",
            "domainName": host,
            "domainPrefix": host.split('.').next().unwrap_or(""),
            "http": {
                "method": method,
                "path": path,
                "protocol": "HTTP/1.1",
                "sourceIp": peer.ip().to_string(),
                "userAgent": headers.get("user-agent").and_then(|h| h.to_str().ok()).unwrap_or(""),
            },
            "requestId": uuid::Uuid::new_v4().to_string(),
            "routeKey": route_key,
            "stage": "$default",
            "time": now.format("%d/%b/%Y:%H:%M:%S %z").to_string(),
            "timeEpoch": now.timestamp_millis(),
        },
        "isBase64Encoded": false,
    });
    if !cookies.is_empty() {
        event["cookies"] = json!(cookies);
    }
    if !query.is_empty() {
        event["queryStringParameters"] = Value::Object(query);
    }
    if !body.is_empty() {
        let content_type = headers.get("content-type").and_then(|h| h.to_str().ok());
        match std::str::from_utf8(body) {
            Ok(text) if is_text(content_type) => event["body"] = json!(text),
            _ => {
                event["body"] = json!(BASE64.encode(body));
                event["isBase64Encoded"] = json!(true);
            }
        }
    }
    event
}

/// Maps a payload format 2.0 answer back to HTTP: a JSON object with
/// `statusCode` is a structured answer; anything else is a 200 JSON body.
pub fn map_response(answer: &[u8]) -> Response {
    let value: Value = match serde_json::from_slice(answer) {
        Ok(v) => v,
        Err(_) => {
            return gateway_message(StatusCode::INTERNAL_SERVER_ERROR, "Internal Server Error");
        }
    };
    let Some(status) = value.get("statusCode").and_then(Value::as_u64) else {
        let mut r = Response::new(Body::from(answer.to_vec()));
        r.headers_mut()
            .insert("content-type", HeaderValue::from_static("application/json"));
        return r;
    };
    let Ok(status) = StatusCode::from_u16(status as u16) else {
        return gateway_message(StatusCode::INTERNAL_SERVER_ERROR, "Internal Server Error");
    };
    let body = match value.get("body") {
        Some(Value::String(s)) if value.get("isBase64Encoded") == Some(&Value::Bool(true)) => {
            match BASE64.decode(s) {
                Ok(b) => b,
                Err(_) => {
                    return gateway_message(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "Internal Server Error",
                    );
                }
            }
        }
        Some(Value::String(s)) => s.clone().into_bytes(),
        Some(other) => other.to_string().into_bytes(),
        None => Vec::new(),
    };
    let mut response = Response::new(Body::from(body));
    *response.status_mut() = status;
    if let Some(Value::Object(headers)) = value.get("headers") {
        for (k, v) in headers {
            let v = match v {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            if let (Ok(name), Ok(value)) = (
                HeaderName::from_bytes(k.as_bytes()),
                HeaderValue::from_str(&v),
            ) {
                response.headers_mut().append(name, value);
            }
        }
    }
    if let Some(Value::Array(cookies)) = value.get("cookies") {
        for c in cookies.iter().filter_map(Value::as_str) {
            if let Ok(v) = HeaderValue::from_str(c) {
                response.headers_mut().append("set-cookie", v);
            }
        }
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode("a%20b+c%2Fd%"), "a b c/d%");
        assert_eq!(percent_decode("%zz"), "%zz");
    }

    #[test]
    fn text_types() {
        assert!(is_text(Some("application/json; charset=utf-8")));
        assert!(!is_text(Some("application/x-www-form-urlencoded")));
        assert!(!is_text(None));
    }

    #[test]
    fn structured_answers_map_back_with_cookies() {
        let r = map_response(br#"{"statusCode":401,"headers":{"content-type":"text/plain"},"cookies":["a=1; Path=/","b=2"],"body":"no"}"#);
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(r.headers().get_all("set-cookie").iter().count(), 2);
        let r = map_response(br#"{"hello":"world"}"#);
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(r.headers()["content-type"], "application/json");
    }
}
