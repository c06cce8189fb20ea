//! The Lambda Runtime API (2018-06-01), one server for every instance: each
//! instance gets `AWS_LAMBDA_RUNTIME_API=http://HOST:PORT/fn/<function>/<instance>/<secret>`
//! and the runtime client prefixes that path to every call; a call without
//! the instance's secret is refused (403). Also serves the Invoke API
//! (`POST /2015-03-31/functions/<name>/invocations`) and the runner's status
//! (`GET /local/status`), both for the runner's token only
//! (`Authorization: Bearer`). See `secrets` for the boundary.

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
    /// The runner's token, asked of the Invoke API's and the status's callers.
    pub token: String,
}

pub fn router(api: Arc<RuntimeApi>) -> Router {
    let rt = "/fn/{function}/{instance}/{secret}/2018-06-01/runtime";
    Router::new()
        .route(&format!("{rt}/invocation/next"), get(next))
        .route(
            &format!("{rt}/invocation/{{request_id}}/response"),
            post(response),
        )
        .route(
            &format!("{rt}/invocation/{{request_id}}/error"),
            post(error),
        )
        .route(&format!("{rt}/init/error"), post(init_error))
        .route("/2015-03-31/functions/{function}/invocations", post(invoke))
        .route("/local/status", get(status))
        // Anything else (a runtime path without an instance's secret, say) is
        // refused as API Gateway refuses a path it does not serve.
        .fallback(|| async {
            denied(
                "MissingAuthenticationTokenException",
                "Missing Authentication Token",
            )
        })
        .layer(DefaultBodyLimit::max(MAX_RESPONSE_BYTES + 1024 * 1024))
        .with_state(api)
}

fn lambda_error(status: StatusCode, error_type: &str, message: &str) -> Response {
    (
        status,
        axum::Json(json!({ "errorType": error_type, "errorMessage": message })),
    )
        .into_response()
}

/// A 403 as AWS's APIs give it: the error type in `x-amzn-ErrorType`.
fn denied(error_type: &'static str, message: &str) -> Response {
    let mut r = (
        StatusCode::FORBIDDEN,
        axum::Json(json!({ "Type": "User", "message": message })),
    )
        .into_response();
    r.headers_mut()
        .insert("x-amzn-errortype", HeaderValue::from_static(error_type));
    r
}

/// The refusal of a caller of the Invoke API or the status without the
/// runner's token; None for the runner's user.
fn refusal(api: &RuntimeApi, headers: &HeaderMap) -> Option<Response> {
    match crate::secrets::bearer(headers) {
        None => Some(denied(
            "MissingAuthenticationTokenException",
            "Missing Authentication Token: send the runner's token (\"token\" in $STRATUS_HOME/local-runner.json) as Authorization: Bearer",
        )),
        Some(t) if crate::secrets::same(t.as_bytes(), api.token.as_bytes()) => None,
        Some(_) => Some(denied(
            "UnrecognizedClientException",
            "The security token included in the request is invalid.",
        )),
    }
}

fn pool_of<'a>(api: &'a RuntimeApi, function: &str) -> Result<&'a Arc<Pool>, Response> {
    api.pools.get(function).ok_or_else(|| {
        lambda_error(
            StatusCode::NOT_FOUND,
            "ResourceNotFoundException",
            &format!("Function not found: {function}"),
        )
    })
}

/// The pool of an instance whose secret the caller gave; 403 otherwise (an
/// unknown function or instance included: nothing is told to a caller
/// without a secret).
async fn instance_pool<'a>(
    api: &'a RuntimeApi,
    function: &str,
    instance: u64,
    secret: &str,
) -> Result<&'a Arc<Pool>, Response> {
    match api.pools.get(function) {
        Some(pool) if pool.authorized(instance, secret).await => Ok(pool),
        _ => Err(lambda_error(
            StatusCode::FORBIDDEN,
            "InvalidInstance",
            &format!(
                "instance {instance} of {function} is not running, or this is not its Runtime API"
            ),
        )),
    }
}

async fn next(
    State(api): State<Arc<RuntimeApi>>,
    Path((function, instance, secret)): Path<(String, u64, String)>,
) -> Response {
    let pool = match instance_pool(&api, &function, instance, &secret).await {
        Ok(p) => p,
        Err(r) => return r,
    };
    let Some(inbox) = pool.next_requested(instance).await else {
        return lambda_error(
            StatusCode::FORBIDDEN,
            "InvalidInstance",
            &format!("instance {instance} of {function} is not running"),
        );
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
    set(
        "lambda-runtime-deadline-ms",
        invocation.deadline_ms.to_string(),
    );
    set("lambda-runtime-invoked-function-arn", pool.spec.arn());
    set("lambda-runtime-trace-id", invocation.trace_id);
    set("content-type", "application/json".into());
    (StatusCode::OK, headers, invocation.payload).into_response()
}

async fn finish(pool: &Pool, instance: u64, request_id: &str, outcome: Outcome) -> Response {
    if pool.complete(instance, request_id, outcome).await {
        (StatusCode::ACCEPTED, axum::Json(json!({ "status": "OK" }))).into_response()
    } else {
        lambda_error(
            StatusCode::BAD_REQUEST,
            "InvalidRequestID",
            &format!("{request_id} is not the invocation instance {instance} is running"),
        )
    }
}

async fn response(
    State(api): State<Arc<RuntimeApi>>,
    Path((function, instance, secret, request_id)): Path<(String, u64, String, String)>,
    body: Bytes,
) -> Response {
    let pool = match instance_pool(&api, &function, instance, &secret).await {
        Ok(p) => p,
        Err(r) => return r,
    };
    let outcome = if body.len() > MAX_RESPONSE_BYTES {
        let message = format!(
            "Response payload size ({} bytes) exceeded maximum allowed payload size ({MAX_RESPONSE_BYTES} bytes).",
            body.len()
        );
        let _ = finish(
            pool,
            instance,
            &request_id,
            Outcome::Error(Bytes::from(
                json!({"errorType": "Function.ResponseSizeTooLarge", "errorMessage": message})
                    .to_string(),
            )),
        )
        .await;
        return lambda_error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "RequestEntityTooLarge",
            &message,
        );
    } else {
        Outcome::Success(body)
    };
    finish(pool, instance, &request_id, outcome).await
}

async fn error(
    State(api): State<Arc<RuntimeApi>>,
    Path((function, instance, secret, request_id)): Path<(String, u64, String, String)>,
    body: Bytes,
) -> Response {
    match instance_pool(&api, &function, instance, &secret).await {
        Ok(pool) => finish(pool, instance, &request_id, Outcome::Error(body)).await,
        Err(r) => r,
    }
}

async fn init_error(
    State(api): State<Arc<RuntimeApi>>,
    Path((function, instance, secret)): Path<(String, u64, String)>,
    body: Bytes,
) -> Response {
    match instance_pool(&api, &function, instance, &secret).await {
        Ok(pool) => {
            pool.init_error(instance, &body).await;
            (StatusCode::ACCEPTED, axum::Json(json!({ "status": "OK" }))).into_response()
        }
        Err(r) => r,
    }
}

/// The Lambda Invoke API, RequestResponse only: 200 with the payload, and
/// `X-Amz-Function-Error: Unhandled` when the function failed.
async fn invoke(
    State(api): State<Arc<RuntimeApi>>,
    Path(function): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Some(r) = refusal(&api, &headers) {
        return r;
    }
    let pool = match pool_of(&api, &function) {
        Ok(p) => p.clone(),
        Err(r) => return r,
    };
    match pool.invoke(body).await {
        Outcome::Success(payload) => (StatusCode::OK, payload).into_response(),
        Outcome::Error(payload) => {
            let mut headers = HeaderMap::new();
            headers.insert(
                "x-amz-function-error",
                HeaderValue::from_static("Unhandled"),
            );
            (StatusCode::OK, headers, payload).into_response()
        }
    }
}

async fn status(State(api): State<Arc<RuntimeApi>>, headers: HeaderMap) -> Response {
    if let Some(r) = refusal(&api, &headers) {
        return r;
    }
    let pools: Vec<Arc<Pool>> = api.pools.values().cloned().collect();
    axum::Json(crate::status::collect(&pools, &api.triggers, &api.supervisor).await).into_response()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::pool::FunctionSpec;

    /// A pool whose instances are a shell that never calls the API: the test plays the runtime.
    async fn serve(dir: &std::path::Path) -> (String, Arc<Pool>) {
        serve_script(dir, "exec sleep 60", 0).await
    }

    async fn serve_script(
        dir: &std::path::Path,
        shell: &str,
        min_instances: u32,
    ) -> (String, Arc<Pool>) {
        let script = dir.join("bootstrap");
        std::fs::write(&script, format!("#!/bin/sh\n{shell}\n")).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let spec = FunctionSpec {
            name: "f".into(),
            binary: script,
            environment: vec![],
            timeout: Duration::from_secs(5),
            memory_mb: 128,
            min_instances,
            max_instances: 1,
        };
        let pool = Pool::new(spec, addr.clone(), false, Duration::from_secs(60));
        let api = Arc::new(RuntimeApi {
            pools: [("f".to_string(), pool.clone())].into_iter().collect(),
            triggers: vec![],
            supervisor: Arc::new(Supervisor::default()),
            token: TOKEN.into(),
        });
        tokio::spawn(async move { axum::serve(listener, router(api)).await });
        pool.start().await.unwrap();
        (addr, pool)
    }

    const TOKEN: &str = "the-runners-token";

    /// Instance `instance`'s Runtime API prefix (its secret included), once it runs.
    async fn base_of(pool: &Pool, instance: u64) -> String {
        let url = tokio::time::timeout(Duration::from_secs(15), async {
            loop {
                if let Some(url) = pool.runtime_api_of(instance).await {
                    return url;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await
        .unwrap_or_else(|_| panic!("instance {instance} was not started"));
        format!("{url}/2018-06-01/runtime")
    }

    /// A pre-warmed instance that dies during init fails no later invocation:
    /// nobody was waiting for it, and the pool replaces it.
    #[tokio::test]
    async fn an_init_failure_nobody_waited_for_fails_no_later_invocation() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().to_path_buf();
        let marker = dir.join("failed-once");
        // The first instance exits at once; the ones after it wait to be played.
        let shell = format!(
            "if [ -e {m} ]; then exec sleep 60; else touch {m}; exit 1; fi",
            m = marker.display()
        );
        let (_, pool) = serve_script(&dir, &shell, 1).await;
        wait_for_count(&pool, "the first instance's death during init", |p| {
            p.counters
                .crashes
                .load(std::sync::atomic::Ordering::Relaxed)
        })
        .await;

        // The replacement is instance 2; its runtime is played.
        the_next_invocation_succeeds(&pool, &reqwest::Client::new()).await;
    }

    /// Plays instance `instance`'s runtime up to its first event: its request id.
    async fn take_event(client: &reqwest::Client, pool: &Pool, instance: u64) -> String {
        let base = base_of(pool, instance).await;
        let next = tokio::time::timeout(Duration::from_secs(15), async {
            loop {
                let r = client
                    .get(format!("{base}/invocation/next"))
                    .send()
                    .await
                    .unwrap();
                if r.status() == 200 {
                    return r;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await
        .unwrap_or_else(|_| panic!("instance {instance} got no event"));
        next.headers()["lambda-runtime-aws-request-id"]
            .to_str()
            .unwrap()
            .to_string()
    }

    async fn answer(client: &reqwest::Client, pool: &Pool, instance: u64, request_id: &str) {
        let base = base_of(pool, instance).await;
        let r = client
            .post(format!("{base}/invocation/{request_id}/response"))
            .body("{\"ok\":true}")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 202);
    }

    async fn wait_for_count(pool: &Pool, what: &str, count: impl Fn(&Pool) -> u64) {
        let reached = tokio::time::timeout(Duration::from_secs(15), async {
            while count(pool) == 0 {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
        .await;
        assert!(reached.is_ok(), "{what}: not counted within 15 s");
    }

    /// The invocation after a replaced instance runs on a fresh one and succeeds.
    async fn the_next_invocation_succeeds(pool: &Arc<Pool>, client: &reqwest::Client) {
        let invoking = tokio::spawn({
            let pool = pool.clone();
            async move { pool.invoke(Bytes::from_static(b"{}")).await }
        });
        let request_id = take_event(client, pool, 2).await;
        answer(client, pool, 2, &request_id).await;
        assert_eq!(
            tokio::time::timeout(Duration::from_secs(10), invoking)
                .await
                .expect("the next invocation ended")
                .unwrap(),
            Outcome::Success(Bytes::from_static(b"{\"ok\":true}"))
        );
    }

    /// A caller that goes away mid-invocation (a client that hung up on the
    /// gateway drops its request's future) leaves the deadline in force: the
    /// stuck instance is killed at the timeout and replaced. The deadline used
    /// to live in the caller's future, so it went with it: the instance stayed
    /// busy for good, and every later invocation waited for it.
    #[tokio::test]
    async fn a_caller_that_goes_away_does_not_take_the_deadline_with_it() {
        let dir =
            std::env::temp_dir().join(format!("stratus-rtapi-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        let (_, pool) = serve(&dir).await;
        let client = reqwest::Client::new();
        let caller = tokio::spawn({
            let pool = pool.clone();
            async move { pool.invoke(Bytes::from_static(b"{}")).await }
        });
        // Instance 1 takes the event and never answers; its caller goes away.
        let _request_id = take_event(&client, &pool, 1).await;
        caller.abort();
        wait_for_count(&pool, "the timeout", |p| {
            p.counters
                .timeouts
                .load(std::sync::atomic::Ordering::Relaxed)
        })
        .await;
        let status = pool.status().await;
        assert_eq!(status.in_flight, 0);
        the_next_invocation_succeeds(&pool, &client).await;
        pool.shutdown().await;
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// An instance that answered but never asks for its next event is hung:
    /// it is killed within the timeout and the next invocation gets a fresh one.
    #[tokio::test]
    async fn an_instance_that_answers_and_never_asks_again_is_replaced() {
        let dir =
            std::env::temp_dir().join(format!("stratus-rtapi-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        let (_, pool) = serve(&dir).await;
        let client = reqwest::Client::new();
        let invoking = tokio::spawn({
            let pool = pool.clone();
            async move { pool.invoke(Bytes::from_static(b"{}")).await }
        });
        let request_id = take_event(&client, &pool, 1).await;
        answer(&client, &pool, 1, &request_id).await;
        assert!(invoking.await.unwrap().is_success());
        // Instance 1 does not come back for more.
        wait_for_count(&pool, "the hung instance", |p| {
            p.counters.hung.load(std::sync::atomic::Ordering::Relaxed)
        })
        .await;
        the_next_invocation_succeeds(&pool, &client).await;
        pool.shutdown().await;
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test]
    async fn the_runtime_api_contract() {
        let dir =
            std::env::temp_dir().join(format!("stratus-rtapi-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        let (addr, pool) = serve(&dir).await;
        let client = reqwest::Client::new();

        let invoking = tokio::spawn({
            let pool = pool.clone();
            async move { pool.invoke(Bytes::from_static(b"{\"n\":1}")).await }
        });
        let base = base_of(&pool, 1).await;
        let next = client
            .get(format!("{base}/invocation/next"))
            .send()
            .await
            .unwrap();
        assert_eq!(next.status(), 200);
        let h = next.headers().clone();
        let request_id = h["lambda-runtime-aws-request-id"]
            .to_str()
            .unwrap()
            .to_string();
        let deadline: i64 = h["lambda-runtime-deadline-ms"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        let now = chrono::Utc::now().timestamp_millis();
        assert!(
            (now + 4000..=now + 5000).contains(&deadline),
            "deadline {deadline} vs now {now}"
        );
        assert_eq!(
            h["lambda-runtime-invoked-function-arn"],
            "arn:aws:lambda:us-east-1:123456789012:function:f"
        );
        assert!(
            h["lambda-runtime-trace-id"]
                .to_str()
                .unwrap()
                .starts_with("Root=1-")
        );
        assert!(!h.contains_key("lambda-runtime-client-context"));
        assert_eq!(
            next.bytes().await.unwrap(),
            Bytes::from_static(b"{\"n\":1}")
        );

        let wrong = client
            .post(format!("{base}/invocation/not-this-one/response"))
            .body("{}")
            .send()
            .await
            .unwrap();
        assert_eq!(wrong.status(), 400);
        let ok = client
            .post(format!("{base}/invocation/{request_id}/response"))
            .body("{\"ok\":true}")
            .send()
            .await
            .unwrap();
        assert_eq!(ok.status(), 202);
        assert_eq!(
            invoking.await.unwrap(),
            Outcome::Success(Bytes::from_static(b"{\"ok\":true}"))
        );

        // An error report reaches the invoker as the function's error.
        let invoking = tokio::spawn({
            let pool = pool.clone();
            async move { pool.invoke(Bytes::from_static(b"{}")).await }
        });
        let next = client
            .get(format!("{base}/invocation/next"))
            .send()
            .await
            .unwrap();
        let request_id = next.headers()["lambda-runtime-aws-request-id"]
            .to_str()
            .unwrap()
            .to_string();
        let diag = r#"{"errorType":"MyError","errorMessage":"boom"}"#;
        let r = client
            .post(format!("{base}/invocation/{request_id}/error"))
            .header("lambda-runtime-function-error-type", "unhandled")
            .body(diag)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 202);
        assert_eq!(invoking.await.unwrap(), Outcome::Error(Bytes::from(diag)));

        let r = client
            .post(format!("{base}/init/error"))
            .body(r#"{"errorType":"X","errorMessage":"y"}"#)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 202);
        // Without the instance's secret, with another's, for an instance or
        // a function that does not exist: 403, and nothing told.
        let secret = base
            .split('/')
            .nth(6)
            .expect("http://ADDR/fn/f/1/SECRET/...")
            .to_string();
        assert_eq!(secret.len(), 64);
        for path in [
            "fn/f/1/2018-06-01/runtime/invocation/next".to_string(),
            format!(
                "fn/f/1/{}/2018-06-01/runtime/invocation/next",
                "0".repeat(64)
            ),
            format!("fn/f/99/{secret}/2018-06-01/runtime/invocation/next"),
            format!("fn/nope/1/{secret}/2018-06-01/runtime/invocation/next"),
        ] {
            let r = client
                .get(format!("http://{addr}/{path}"))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 403, "{path}");
        }
        for path in [
            format!("fn/f/1/{}/2018-06-01/runtime/init/error", "0".repeat(64)),
            format!(
                "fn/f/1/{}/2018-06-01/runtime/invocation/x/response",
                &secret[..63]
            ),
        ] {
            let r = client
                .post(format!("http://{addr}/{path}"))
                .body("{}")
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 403, "{path}");
        }
        // The Invoke API and the status: the runner's token only.
        let invoke = format!("http://{addr}/2015-03-31/functions/f/invocations");
        let r = client.post(&invoke).body("{}").send().await.unwrap();
        assert_eq!(r.status(), 403);
        assert_eq!(
            r.headers()["x-amzn-errortype"],
            "MissingAuthenticationTokenException"
        );
        let r = client
            .post(&invoke)
            .bearer_auth("the-runners-tokeN")
            .body("{}")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 403);
        assert_eq!(
            r.headers()["x-amzn-errortype"],
            "UnrecognizedClientException"
        );
        let status = format!("http://{addr}/local/status");
        let r = client.get(&status).send().await.unwrap();
        assert_eq!(r.status(), 403);
        let r = client.get(&status).bearer_auth(TOKEN).send().await.unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(
            pool.counters
                .invocations
                .load(std::sync::atomic::Ordering::Relaxed),
            2
        );
        pool.shutdown().await;
        let _ = std::fs::remove_dir_all(&dir);
    }
}
