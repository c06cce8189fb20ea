//! `stratus-fn-outbox-relay`: the outbox relay under `lambda_runtime`, run by a
//! schedule (every second locally).

use std::sync::Arc;
use std::time::Duration;

use lambda_runtime::{LambdaEvent, service_fn};
use serde_json::Value;
use stratus_messaging::publisher::Publisher;
use stratus_messaging::{broker, schedule};
use stratus_store::Store;
use tracing::Instrument;

// One event at a time, as Lambda hands them over: a current-thread runtime
// saves a cross-thread wake-up per I/O (measured in `stratus-bench api`).
#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_runtime::Error> {
    stratus_messaging::logging::init();
    let config = stratus_secrets::aws_refs::config_from_env().await?;
    let grace = std::env::var(stratus_fn_outbox_relay::ENV_GRACE_MS)
        .ok()
        .and_then(|v| v.parse().ok())
        .map(Duration::from_millis)
        .unwrap_or(stratus_fn_outbox_relay::DEFAULT_GRACE);
    let store = Arc::new(Store::open(&config.store, &config.table_prefix).await?);
    let topology = Arc::new(broker::topology(&config)?);
    let publisher = Arc::new(Publisher::new(config, topology, "stratus-fn-outbox-relay"));
    lambda_runtime::run(service_fn(move |event: LambdaEvent<Value>| {
        let (store, publisher) = (store.clone(), publisher.clone());
        let span = tracing::info_span!("relay", request_id = %event.context.request_id);
        async move {
            let deadline = schedule::deadline(event.context.deadline);
            schedule::ticks(&event.payload, deadline, || {
                stratus_fn_outbox_relay::relay(&store, &publisher, grace)
            })
            .await
            .answer()
        }
        .instrument(span)
    }))
    .await
}
