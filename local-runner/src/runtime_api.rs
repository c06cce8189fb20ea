//! The Lambda Runtime API (2018-06-01), one server for every instance: each
//! instance gets `AWS_LAMBDA_RUNTIME_API=http://HOST:PORT/fn/<function>/<instance>`
//! and the runtime client prefixes that path to every call. Also serves the
//! Invoke API (`POST /2015-03-31/functions/<name>/invocations`) and the runner's
//! status (`GET /local/status`).

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::json;

use crate::mq_trigger::QueueTrigger;
use crate::pool::{MAX_RESPONSE_BYTES, Outcome, Pool};
use crate::supervisor::Supervisor;

pub struct RuntimeApi {
    pub pools: BTreeMap<String, Arc<Pool>>,
    pub triggers: Vec<Arc<QueueTrigger>>,
    pub supervisor: Arc<Supervisor>,
}

pub fn router(api: Arc<RuntimeApi>) -> Router {
    let rt = "/fn/{function}/{instance}/2018-06-01/runtime";
    Router::new()
        .route(&format!("{rt}/invocation/next"), get(next))
        .route(&format!("{rt}/invocation/{{request_id}}/response"), post(response))
        .route(&format!("{rt}/invocation/{{request_id}}/error"), post(error))
        .route(&format!("{rt}/init/error"), post(init_error))
        .route("/2015-03-31/functions/{function}/invocations", post(invoke))
        .route("/local/status", get(status))
        .layer(DefaultBodyLimit::max(MAX_RESPONSE_BYTES + 1024 * 1024))
        .with_state(api)
}

fn lambda_error(status: StatusCode, error_type: &str, message: &str) -> Response {
    (status, axum::Json(json!({ "errorType": error_type, "errorMessage": message }))).into_response()
}

fn pool_of<'a>(api: &'a RuntimeApi, function: &str) -> Result<&'a Arc<Pool>, Response> {
    api.pools
        .get(function)
        .ok_or_else(|| lambda_error(StatusCode::NOT_FOUND, "ResourceNotFoundException", &format!("Function not found: {function}")))
}

async fn next(State(api): State<Arc<RuntimeApi>>, Path((function, instance)): Path<(String, u64)>) -> Response {
    let pool = match pool_of(&api, &function) {
        Ok(p) => p,
        Err(r) => return r,
    };
    let Some(inbox) = pool.next_requested(instance).await else {
        return lambda_error(StatusCode::FORBIDDEN, "InvalidInstance", &format!("instance {instance} of {function} is not running"));
    };
    // Long-poll until an invocation arrives: no 204 keep-alives, as on Lambda.
    let Some(invocation) = inbox.lock().await.recv().await else {
        return lambda_error(StatusCode::GONE, "Shutdown", "the runner is stopping");
    };
    let mut headers = HeaderMap::new();
    let mut set = |name: &'static str, value: String| {
        if let Ok(v) = HeaderValue::from_str(&value) {
            headers.insert(name, v);
        }
    };
    set("lambda-runtime-aws-request-id", invocation.request_id);
    set("lambda-runtime-deadline-ms", invocation.deadline_ms.to_string());
    set("lambda-runtime-invoked-function-arn", pool.spec.arn());
    set("lambda-runtime-trace-id", invocation.trace_id);
    set("content-type", "application/json".into());
    (StatusCode::OK, headers, invocation.payload).into_response()
}

async fn finish(api: &RuntimeApi, function: &str, instance: u64, request_id: &str, outcome: Outcome) -> Response {
    let pool = match pool_of(api, function) {
        Ok(p) => p,
        Err(r) => return r,
    };
    if pool.complete(instance, request_id, outcome).await {
        (StatusCode::ACCEPTED, axum::Json(json!({ "status": "OK" }))).into_response()
    } else {
        lambda_error(StatusCode::BAD_REQUEST, "InvalidRequestID", &format!("{request_id} is not the invocation instance {instance} is running"))
    }
}

async fn response(
    State(api): State<Arc<RuntimeApi>>,
    Path((function, instance, request_id)): Path<(String, u64, String)>,
    body: Bytes,
) -> Response {
    let outcome = if body.len() > MAX_RESPONSE_BYTES {
        let message = format!("Response payload size ({} bytes) exceeded maximum allowed payload size ({MAX_RESPONSE_BYTES} bytes).", body.len());
        let _ = finish(&api, &function, instance, &request_id, Outcome::Error(Bytes::from(
            json!({"errorType": "Function.ResponseSizeTooLarge", "errorMessage": message}).to_string(),
        ))).await;
        return lambda_error(StatusCode::PAYLOAD_TOO_LARGE, "RequestEntityTooLarge", &message);
    } else {
        Outcome::Success(body)
    };
    finish(&api, &function, instance, &request_id, outcome).await
}

async fn error(
    State(api): State<Arc<RuntimeApi>>,
    Path((function, instance, request_id)): Path<(String, u64, String)>,
    body: Bytes,
) -> Response {
    finish(&api, &function, instance, &request_id, Outcome::Error(body)).await
}

async fn init_error(State(api): State<Arc<RuntimeApi>>, Path((function, instance)): Path<(String, u64)>, body: Bytes) -> Response {
    match pool_of(&api, &function) {
        Ok(pool) => {
            pool.init_error(instance, &body).await;
            (StatusCode::ACCEPTED, axum::Json(json!({ "status": "OK" }))).into_response()
        }
        Err(r) => r,
    }
}

/// The Lambda Invoke API, RequestResponse only: 200 with the payload, and
/// `X-Amz-Function-Error: Unhandled` when the function failed.
async fn invoke(State(api): State<Arc<RuntimeApi>>, Path(function): Path<String>, body: Bytes) -> Response {
    let pool = match pool_of(&api, &function) {
        Ok(p) => p.clone(),
        Err(r) => return r,
    };
    match pool.invoke(body).await {
        Outcome::Success(payload) => (StatusCode::OK, payload).into_response(),
        Outcome::Error(payload) => {
            let mut headers = HeaderMap::new();
            headers.insert("x-amz-function-error", HeaderValue::from_static("Unhandled"));
            (StatusCode::OK, headers, payload).into_response()
        }
    }
}

async fn status(State(api): State<Arc<RuntimeApi>>) -> Response {
    let pools: Vec<Arc<Pool>> = api.pools.values().cloned().collect();
    axum::Json(crate::status::collect(&pools, &api.triggers, &api.supervisor).await).into_response()
}
