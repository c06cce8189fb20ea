//! `stratus-fn-api`: the API function under `lambda_http` (API Gateway HTTP
//! API v2 events: the raw query string, base64 bodies, cookies).

use std::sync::Arc;

use lambda_http::{Body, Error, Request, RequestExt, Response, service_fn};
use stratus_contracts::settings::{Defaults, SettingsSource};
use stratus_discovery::settings::ConsulSettings;
use stratus_fn_api::Api;
use stratus_messaging::publisher::Publisher;
use stratus_store::Store;
use tracing::Instrument;

/// How stale the API's settings may be before an invocation re-reads them.
const SETTINGS_MAX_AGE: std::time::Duration = std::time::Duration::from_secs(3);

// One event at a time, as Lambda hands them over: a current-thread runtime
// saves a cross-thread wake-up per I/O (measured in `stratus-bench api`).
#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    stratus_messaging::logging::init();
    let config = stratus_secrets::aws_refs::config_from_env().await?;
    let store = Arc::new(Store::open(&config.store, &config.table_prefix).await?);
    // The key that opens users' secret keys, once per process (cold start).
    let secrets = Arc::new(store.secret_box(&config.secret_key).await?);
    let topology = Arc::new(stratus_messaging::broker::topology(&config)?);
    let consul = stratus_discovery::Client::from_config(&config);
    let publisher = Arc::new(Publisher::new(config, topology, "stratus-fn-api"));
    // Settings from Consul's KV, re-read when older than a few seconds (at the
    // start of an invocation: a frozen function runs no background watch).
    let settings: Arc<dyn SettingsSource> = match consul.clone() {
        Some(consul) => ConsulSettings::new(consul, SETTINGS_MAX_AGE),
        None => {
            tracing::warn!(
                "CONSUL_HTTP_ADDR is not set: the API serves default settings and refuses updateConfiguration"
            );
            Arc::new(Defaults::default())
        }
    };
    let api = Arc::new(Api::new(store, Some(publisher), settings, secrets).with_consul(consul));
    lambda_http::run(service_fn(move |req: Request| {
        let api = api.clone();
        async move {
            let request = stratus_fn_api::Request {
                method: req.method().to_string(),
                raw_query: req.uri().query().unwrap_or_default().to_string(),
                content_type: req
                    .headers()
                    .get("content-type")
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string),
                body: req.body().to_vec(),
                cookies: req
                    .headers()
                    .get_all("cookie")
                    .iter()
                    .filter_map(|v| v.to_str().ok())
                    .map(str::to_string)
                    .collect(),
                request_id: req
                    .lambda_context_ref()
                    .map(|c| c.request_id.clone())
                    .unwrap_or_default(),
            };
            let span = tracing::info_span!("api", request_id = %request.request_id);
            let answer = api.handle(&request).instrument(span).await;
            let mut response = Response::builder()
                .status(answer.status)
                .header("content-type", answer.content_type);
            if let Some(d) = answer.description {
                // Header values cannot hold control characters; the text is in the body too.
                let d: String = d.chars().filter(|c| !c.is_control()).collect();
                response = response.header("x-description", d);
            }
            for c in &answer.set_cookies {
                response = response.header("set-cookie", c);
            }
            Ok::<_, Error>(response.body(Body::Text(answer.body))?)
        }
    }))
    .await
}
