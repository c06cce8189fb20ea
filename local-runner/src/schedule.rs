//! EventBridge schedules: `rate(...)` rules that invoke their function
//! asynchronously with a Scheduled Event, as EventBridge does.

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;

use crate::pool::{ACCOUNT_ID, Pool, REGION};

/// The event EventBridge sends for a scheduled rule.
pub fn scheduled_event(rule: &str) -> serde_json::Value {
    json!({
        "version": "0",
        "id": uuid::Uuid::new_v4().to_string(),
        "detail-type": "Scheduled Event",
        "source": "aws.events",
        "account": ACCOUNT_ID,
        "time": chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string(),
        "region": REGION,
        "resources": [format!("arn:aws:events:{REGION}:{ACCOUNT_ID}:rule/{rule}")],
        "detail": {}
    })
}

pub fn start(function: String, expression: String, every: Duration, pool: Arc<Pool>) {
    let rule = format!("{function}-schedule");
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        tracing::info!(function = %function, expression = %expression, "schedule started");
        loop {
            ticks.tick().await;
            let event = scheduled_event(&rule);
            let pool = pool.clone();
            let function = function.clone();
            // Asynchronous invocation: the schedule does not wait for the function.
            tokio::spawn(async move {
                let outcome = pool
                    .invoke(serde_json::to_vec(&event).expect("JSON").into())
                    .await;
                if let crate::pool::Outcome::Error(body) = outcome {
                    tracing::warn!(function = %function, error = %String::from_utf8_lossy(&body), "scheduled invocation failed");
                }
            });
        }
    });
}
