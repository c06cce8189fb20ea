//! `stratus-fn-storage` under `lambda_runtime`, triggered by its queue
//! (`stratus.fn.storage`).

use std::sync::Arc;

use stratus_store::Store;

// One event at a time, as Lambda hands them over.
#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_runtime::Error> {
    let config = stratus_secrets::aws_refs::config_from_env().await?;
    let store = Arc::new(Store::open(&config.store, &config.table_prefix).await?);
    stratus_messaging::function::run("storage", stratus_fn_storage::handlers(store)).await
}
