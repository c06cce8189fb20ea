//! The entry point of a queue-triggered function binary: the same handlers
//! run under `lambda_runtime` on AWS and under the local runner.

use std::sync::Arc;

use lambda_runtime::{LambdaEvent, service_fn};

use crate::broker;
use crate::harness::{BatchReport, Handlers, Harness};
use crate::publisher::Publisher;
use crate::rmq_event::RmqEvent;

/// The harness of function `name`, configured from the environment.
pub async fn harness(
    name: &str,
    handlers: Handlers,
) -> Result<Arc<Harness>, lambda_runtime::Error> {
    let config = stratus_secrets::aws_refs::config_from_env().await?;
    let topology = Arc::new(broker::topology(&config)?);
    let publisher = Publisher::new(config, topology, &format!("stratus-fn-{name}"));
    Ok(Arc::new(Harness::new(handlers, publisher)))
}

/// Runs `handlers` as the queue-triggered Lambda function `name` until the runtime stops.
pub async fn run(name: &str, handlers: Handlers) -> Result<(), lambda_runtime::Error> {
    crate::logging::init();
    let harness = harness(name, handlers).await?;
    lambda_runtime::run(service_fn(move |event: LambdaEvent<RmqEvent>| {
        let harness = harness.clone();
        async move {
            let report: BatchReport = harness
                .handle_event(&event.payload, &event.context.request_id)
                .await?;
            Ok::<BatchReport, lambda_runtime::Error>(report)
        }
    }))
    .await
}
