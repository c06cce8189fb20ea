//! `stratus-fn-compute` under `lambda_runtime`, triggered by its queue
//! (`stratus.fn.compute`: the compute saga steps and the agents' VM reports).

use std::sync::Arc;
use std::time::Duration;

use stratus_contracts::settings::{Defaults, SettingsSource};
use stratus_discovery::settings::ConsulSettings;
use stratus_store::Store;

/// How stale the overprovisioning factors may be before an invocation re-reads them.
const SETTINGS_MAX_AGE: Duration = Duration::from_secs(3);

// One event at a time, as Lambda hands them over.
#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_runtime::Error> {
    stratus_messaging::logging::init();
    let config = stratus_secrets::aws_refs::config_from_env().await?;
    let store = Arc::new(Store::open(&config.store, &config.table_prefix).await?);
    let consul = stratus_discovery::Client::from_config(&config);
    // Settings from Consul's KV, re-read at the start of a placement when
    // older than a few seconds; without Consul, the defaults (as the API).
    let settings: Arc<dyn SettingsSource> = match &consul {
        Some(consul) => ConsulSettings::new(consul.clone(), SETTINGS_MAX_AGE),
        None => {
            tracing::warn!(
                "CONSUL_HTTP_ADDR is not set: placement uses the default overprovisioning factors and the host states alone"
            );
            Arc::new(Defaults::default())
        }
    };
    let handlers = stratus_fn_compute::handlers(store, settings, consul);
    stratus_messaging::function::run("compute", handlers).await
}
