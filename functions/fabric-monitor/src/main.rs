//! `stratus-fn-fabric-monitor`: fabric monitoring under `lambda_runtime`,
//! run by a schedule (every second locally).

use std::sync::Arc;
use std::time::Duration;

use lambda_runtime::{LambdaEvent, service_fn};
use serde_json::Value;
use stratus_discovery::settings::ConsulSettings;
use stratus_fn_fabric_monitor::Monitor;
use stratus_messaging::schedule;
use stratus_store::Store;
use tracing::Instrument;

// One event at a time, as Lambda hands them over.
#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_runtime::Error> {
    stratus_messaging::logging::init();
    let config = stratus_secrets::aws_refs::config_from_env().await?;
    let consul = stratus_discovery::Client::from_config(&config)
        .ok_or("CONSUL_HTTP_ADDR is not set: fabric monitoring needs Consul")?;
    let store = Arc::new(Store::open(&config.store, &config.table_prefix).await?);
    let settings = ConsulSettings::new(consul.clone(), Duration::from_secs(3));
    let holder = format!(
        "{}/{}",
        std::env::var("AWS_LAMBDA_LOG_STREAM_NAME").unwrap_or_default(),
        std::process::id()
    );
    let monitor = Arc::new(Monitor::new(store, consul, settings, holder));
    lambda_runtime::run(service_fn(move |event: LambdaEvent<Value>| {
        let monitor = monitor.clone();
        let span = tracing::info_span!("fabric-monitor", request_id = %event.context.request_id);
        async move {
            let deadline = schedule::deadline(event.context.deadline);
            schedule::ticks(&event.payload, deadline, || {
                monitor.tick(chrono::Utc::now())
            })
            .await
            .answer()
        }
        .instrument(span)
    }))
    .await
}
