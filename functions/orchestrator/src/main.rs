//! `stratus-fn-orchestrator`: the orchestration engine under `lambda_runtime`,
//! triggered by its queue (`stratus.fn.orchestrator`).

use std::sync::Arc;

use stratus_contracts::config::Config;
use stratus_store::Store;

// One event at a time, as Lambda hands them over: a current-thread runtime
// saves a cross-thread wake-up per I/O (measured in `stratus-bench api`).
#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_runtime::Error> {
    let config = Config::from_env()?;
    let store = Arc::new(Store::open(&config.store, &config.table_prefix).await?);
    stratus_messaging::function::run("orchestrator", stratus_fn_orchestrator::handlers(store)).await
}
