//! `stratus-fn-diag`: the diagnostics function under `lambda_runtime`. It
//! answers the three trigger kinds: `aws:rmq` batches go through the function
//! harness; an API Gateway v2 request is answered with what the function saw
//! (a check of the gateway); a scheduled event is acknowledged.

use lambda_runtime::{LambdaEvent, service_fn};
use serde_json::Value;
use serde_json::value::RawValue;

// One event at a time, as Lambda hands them over: a current-thread runtime
// saves a cross-thread wake-up per I/O (measured in `stratus-bench api`).
#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_runtime::Error> {
    stratus_messaging::logging::init();
    let harness = stratus_messaging::function::harness("diag", stratus_fn_diag::handlers()).await?;
    // The event arrives raw and is decoded once, into the type its trigger sends.
    lambda_runtime::run(service_fn(move |event: LambdaEvent<Box<RawValue>>| {
        let harness = harness.clone();
        async move {
            let request_id = event.context.request_id.clone();
            let raw = event.payload.get();
            match stratus_fn_diag::trigger_of(raw) {
                stratus_fn_diag::Trigger::Queue => {
                    let batch = serde_json::from_str(raw)?;
                    Ok(serde_json::to_value(
                        harness.handle_event(&batch, &request_id).await?,
                    )?)
                }
                stratus_fn_diag::Trigger::Http => {
                    Ok(stratus_fn_diag::http_answer(&serde_json::from_str(raw)?))
                }
                stratus_fn_diag::Trigger::Schedule => {
                    let event: Value = serde_json::from_str(raw)?;
                    tracing::info!(request_id, time = %event["time"], "scheduled tick");
                    Ok(serde_json::json!({ "tick": event["time"] }))
                }
                stratus_fn_diag::Trigger::Unknown => {
                    Err::<Value, lambda_runtime::Error>("unrecognised event shape".into())
                }
            }
        }
    }))
    .await
}
