//! `stratus-fn-orchestrator`: the orchestration engine under `lambda_runtime`.
//! Three triggers invoke it: its work queue (`stratus.fn.orchestrator`: job
//! commands and step results), the parked-jobs queue, and a schedule (the
//! sweep of step deadlines and due expunges). The event says which.

use std::sync::Arc;
use std::time::Duration;

use lambda_runtime::{LambdaEvent, service_fn};
use serde_json::Value;
use stratus_contracts::settings::{Defaults, SettingsSource};
use stratus_discovery::settings::ConsulSettings;
use stratus_fn_orchestrator::{Engine, handlers, parked, sweep};
use stratus_messaging::rmq_event::RmqEvent;
use stratus_messaging::{broker, publisher::Publisher, schedule};
use stratus_store::Store;
use tracing::Instrument;

/// The queue whose messages are parked copies, not work.
const PARKED_JOBS_QUEUE: &str = "stratus.orchestrator.parked-jobs";

// One event at a time, as Lambda hands them over.
#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_runtime::Error> {
    stratus_messaging::logging::init();
    let config = stratus_secrets::aws_refs::config_from_env().await?;
    let store = Arc::new(Store::open(&config.store, &config.table_prefix).await?);
    let settings: Arc<dyn SettingsSource> = match stratus_discovery::Client::from_config(&config) {
        Some(consul) => ConsulSettings::new(consul, Duration::from_secs(3)),
        None => Arc::new(Defaults::default()),
    };
    let topology = Arc::new(broker::topology(&config)?);
    let publisher = Arc::new(Publisher::new(
        config.clone(),
        topology,
        "stratus-fn-orchestrator",
    ));
    let engine = Arc::new(Engine {
        store,
        publisher: Some(publisher),
        settings,
        faults: Arc::new(stratus_fn_orchestrator::saga::NoFaults),
    });
    let harness =
        stratus_messaging::function::harness("orchestrator", handlers(engine.clone())).await?;
    lambda_runtime::run(service_fn(move |event: LambdaEvent<Value>| {
        let (engine, harness) = (engine.clone(), harness.clone());
        let request_id = event.context.request_id.clone();
        let span = tracing::info_span!("orchestrator", request_id = %request_id);
        async move {
            // Settings from Consul, re-read when older than a few seconds
            // (saga.step.timeout, expunge.delay): a frozen function runs no watch.
            engine.settings.refresh().await;
            let payload = event.payload;
            if payload["eventSource"] == "aws:rmq" {
                let rmq: RmqEvent = serde_json::from_value(payload)?;
                let parked = rmq
                    .messages_by_queue
                    .keys()
                    .all(|k| RmqEvent::split_key(k).0 == PARKED_JOBS_QUEUE);
                if parked && !rmq.messages_by_queue.is_empty() {
                    let n = parked::handle(&engine, &rmq).await?;
                    return Ok::<Value, lambda_runtime::Error>(
                        serde_json::json!({ "parked_of_jobs": n }),
                    );
                }
                let report = harness.handle_event(&rmq, &request_id).await?;
                return Ok(serde_json::to_value(report)?);
            }
            // The schedule's event.
            let deadline = schedule::deadline(event.context.deadline);
            schedule::ticks(&payload, deadline, || async {
                engine.settings.refresh().await;
                sweep::sweep(&engine, chrono::Utc::now()).await
            })
            .await
            .answer()
        }
        .instrument(span)
    }))
    .await
}
