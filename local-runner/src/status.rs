//! What `stratus-local status` shows: functions, instances, queue depths,
//! invocations and errors, and supervised processes.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::mq_trigger::{QueueTrigger, TriggerStatus};
use crate::pool::{Pool, PoolStatus};
use crate::supervisor::{ProcessStatus, Supervisor};

#[derive(Debug, Serialize)]
pub struct Status {
    pub functions: Vec<PoolStatus>,
    pub queue_triggers: Vec<TriggerStatus>,
    pub processes: Vec<ProcessStatus>,
}

pub async fn collect(
    pools: &[Arc<Pool>],
    triggers: &[Arc<QueueTrigger>],
    supervisor: &Supervisor,
) -> Status {
    let mut functions = Vec::new();
    for p in pools {
        functions.push(p.status().await);
    }
    let mut queue_triggers = Vec::new();
    for t in triggers {
        queue_triggers.push(t.status().await);
    }
    Status {
        functions,
        queue_triggers,
        processes: supervisor.status().await,
    }
}

/// Where a running runner can be found: `$STRATUS_HOME/local-runner.json`.
#[derive(Serialize, Deserialize)]
pub struct RunnerAddress {
    pub pid: u32,
    pub runtime_api: String,
    pub gateway: Option<String>,
    /// The Consul stand-in's address, when the runner serves one.
    #[serde(default)]
    pub consul: Option<String>,
    /// The token the Invoke API and the status ask for (`Authorization:
    /// Bearer`); this file is 0600 for it.
    #[serde(default)]
    pub token: Option<String>,
}

/// Renders the status as a table for people.
pub fn render(status: &serde_json::Value) -> String {
    let mut out = String::new();
    let s = |v: &serde_json::Value| match v {
        serde_json::Value::Null => "-".to_string(),
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    out.push_str("FUNCTION              INSTANCES  IN-FLIGHT  WAITING  INVOCATIONS  ERRORS  TIMEOUTS  HUNG  THROTTLED  CRASHES  COLD-STARTS\n");
    for f in status["functions"].as_array().into_iter().flatten() {
        let instances = f["instances"].as_array().map(|a| a.len()).unwrap_or(0);
        let frozen = f["instances"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|i| i["frozen"] == true)
            .count();
        out.push_str(&format!(
            "{:<21} {:>9}  {:>9}  {:>7}  {:>11}  {:>6}  {:>8}  {:>4}  {:>9}  {:>7}  {:>11}{}\n",
            s(&f["function"]),
            instances,
            s(&f["in_flight"]),
            s(&f["waiting"]),
            s(&f["invocations"]),
            s(&f["errors"]),
            s(&f["timeouts"]),
            s(&f["hung"]),
            s(&f["throttles"]),
            s(&f["crashes"]),
            s(&f["cold_starts"]),
            if frozen > 0 {
                format!("  ({frozen} frozen)")
            } else {
                String::new()
            }
        ));
    }
    // POLLERS: consuming (a consumer on the broker) / wanted for the backlog, and the maximum.
    out.push_str("\nQUEUE                          FUNCTION         DEPTH  CONSUMERS  POLLERS  BATCHES  FAILED  MESSAGES  RECONNECTS\n");
    for t in status["queue_triggers"].as_array().into_iter().flatten() {
        out.push_str(&format!(
            "{:<30} {:<15} {:>6}  {:>9}  {:>7}  {:>7}  {:>6}  {:>8}  {:>10}\n",
            s(&t["queue"]),
            s(&t["function"]),
            s(&t["depth"]),
            s(&t["consumers"]),
            format!(
                "{}/{} ({})",
                s(&t["pollers"]),
                s(&t["wanted"]),
                s(&t["max_pollers"])
            ),
            s(&t["batches"]),
            s(&t["failed_batches"]),
            s(&t["messages"]),
            s(&t["reconnects"])
        ));
    }
    let processes = status["processes"].as_array().cloned().unwrap_or_default();
    if !processes.is_empty() {
        out.push_str("\nPROCESS               INSTANCE  PID      RESTARTS\n");
        for p in &processes {
            out.push_str(&format!(
                "{:<21} {:>8}  {:<7}  {:>8}\n",
                s(&p["name"]),
                s(&p["instance"]),
                s(&p["pid"]),
                s(&p["restarts"])
            ));
        }
    }
    out
}
