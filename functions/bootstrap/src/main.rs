//! `stratus-fn-bootstrap`: the one-off bootstrap under `lambda_runtime`. Its
//! event: `{"endpoint": "<CloudStack API URL>", "zone_file": "<path>"}` or
//! `{"endpoint": ..., "zone": {...}}` (the zone file's contents); without
//! either, the committed `infra/simulator-zone.json`. The local runner invokes
//! it at start-up (a `startup` trigger); on AWS Terraform invokes it after
//! apply, with `"declare_topology": true` (a new broker is empty). On AWS
//! (`STRATUS_ADMIN_KEYS_SECRET` set) it writes the admin's keys to that
//! Secrets Manager secret; otherwise to `cloudstack.ini` (for `cs`, mode 0600)
//! under `STRATUS_HOME` when that is set, and prints them once, at the run
//! that made them, when its standard error is a terminal (the one that ran
//! the first start; never a log file). Its answer carries no secret: an
//! invocation's answer is logged, and anyone who may invoke it is not
//! thereby the admin.

use std::io::IsTerminal;
use std::sync::Arc;

use lambda_runtime::{LambdaEvent, service_fn};
use serde_json::{Value, json};
use stratus_fn_bootstrap::{DEFAULT_ZONE_FILE, ZoneFile, cloudstack_ini, run};
use stratus_secrets::aws_refs;
use stratus_store::Store;

/// On AWS: the Secrets Manager secret the root admin's keys are written to.
const ENV_ADMIN_KEYS_SECRET: &str = "STRATUS_ADMIN_KEYS_SECRET";
use tracing::Instrument;

// One event at a time, as Lambda hands them over: a current-thread runtime
// saves a cross-thread wake-up per I/O (measured in `stratus-bench api`).
#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_runtime::Error> {
    stratus_messaging::logging::init();
    // On AWS the secret key's data key is made on the first run (the other
    // functions only read it), before the configuration that names it is read.
    let env: std::collections::BTreeMap<String, String> = std::env::vars().collect();
    let admin_keys_secret = env.get(ENV_ADMIN_KEYS_SECRET).cloned();
    let aws = if aws_refs::has_references(&env) || admin_keys_secret.is_some() {
        let aws = aws_refs::Aws::load().await;
        if aws.ensure_secret_key(&env).await? {
            tracing::info!("made the secret key's data key (KMS-encrypted, in SSM)");
        }
        Some(Arc::new(aws))
    } else {
        None
    };
    // Resolved with the clients just made, when there are any: one AWS
    // configuration load per cold start.
    let config = match &aws {
        Some(aws) => aws_refs::config_from(env, aws).await?,
        None => aws_refs::config_from_env().await?,
    };
    let topology = Arc::new(stratus_messaging::broker::topology(&config)?);
    // The keys go to Secrets Manager on AWS, to cloudstack.ini (0600) locally.
    let write_ini = admin_keys_secret.is_none() && std::env::var_os("STRATUS_HOME").is_some();
    if write_ini {
        // STRATUS_HOME holds the key file, the store and cloudstack.ini: its owner's only.
        stratus_secrets::private::home(&config.home)
            .map_err(|e| format!("making STRATUS_HOME {} private: {e}", config.home.display()))?;
    }
    let store = Arc::new(Store::open(&config.store, &config.table_prefix).await?);
    // The key that seals users' secret keys (made here on a first start).
    let secrets = Arc::new(store.secret_box(&config.secret_key).await?);
    lambda_runtime::run(service_fn(move |event: LambdaEvent<Value>| {
        let (store, home, secrets) = (store.clone(), config.home.clone(), secrets.clone());
        let (config, topology, aws) = (config.clone(), topology.clone(), aws.clone());
        let admin_keys_secret = admin_keys_secret.clone();
        let span = tracing::info_span!("bootstrap", request_id = %event.context.request_id);
        async move {
            let e = event.payload;
            let spec = if let Some(zone) = e.get("zone") {
                ZoneFile::parse("the event's zone", &zone.to_string())?
            } else if let Some(path) = e.get("zone_file").and_then(Value::as_str) {
                let text = std::fs::read_to_string(path)
                    .map_err(|err| format!("reading the zone file {path}: {err}"))?;
                ZoneFile::parse(path, &text)?
            } else {
                ZoneFile::parse("infra/simulator-zone.json (built in)", DEFAULT_ZONE_FILE)?
            };
            let endpoint = e
                .get("endpoint")
                .and_then(Value::as_str)
                .unwrap_or("http://127.0.0.1:8080/client/api")
                .to_string();
            if e.get("declare_topology").and_then(Value::as_bool) == Some(true) {
                stratus_messaging::broker::declare_all(&config, &topology, "stratus-fn-bootstrap")
                    .await
                    .map_err(|err| format!("declaring the broker topology: {err}"))?;
                tracing::info!(queues = topology.queues.len(), "broker topology declared");
            }
            let outcome = run(&store, &spec, &secrets).await?;
            tracing::info!(created = outcome.created, existing = outcome.existing, zone = %outcome.zone_id, "bootstrap done");
            let mut answer = json!({
                "endpoint": endpoint,
                "admin": spec.admin.username,
                "zoneid": outcome.zone_id,
                "created": outcome.created,
                "existing": outcome.existing,
            });
            if let (Some(arn), Some(aws)) = (&admin_keys_secret, &aws) {
                let keys = json!({
                    "username": spec.admin.username,
                    "apikey": outcome.apikey,
                    "secretkey": outcome.secretkey,
                    "endpoint": endpoint,
                });
                // The API key changes whenever the secret key does.
                let version = format!("{}|{}|{endpoint}", spec.admin.username, outcome.apikey);
                aws.put_secret(arn, &keys.to_string(), &version)
                    .await
                    .map_err(|err| format!("writing the admin's keys to {arn}: {err}"))?;
                answer["keys"] = json!(format!("in the Secrets Manager secret {arn}"));
            } else if write_ini {
                let path = home.join("cloudstack.ini");
                stratus_secrets::private::write(&path, cloudstack_ini(&endpoint, &outcome).as_bytes())
                    .map_err(|err| format!("writing {}: {err}", path.display()))?;
                answer["ini"] = json!(path.display().to_string());
            } else {
                answer["keys"] = json!("not returned: log in as the admin and call getUserKeys");
            }
            if outcome.keys_created && std::io::stderr().is_terminal() {
                show_once(&outcome, answer["ini"].as_str());
            }
            Ok::<Value, lambda_runtime::Error>(answer)
        }
        .instrument(span)
    }))
    .await
}

/// Prints the keys just made to the terminal on standard error (the caller
/// checked that it is one).
fn show_once(outcome: &stratus_fn_bootstrap::Outcome, ini: Option<&str>) {
    let kept = ini.map_or(String::new(), |p| format!(" (kept in {p}, mode 0600)"));
    eprintln!(
        "\nThe root admin's API keys, shown this once{kept}:\n  apikey    = {}\n  secretkey = {}\n",
        outcome.apikey, outcome.secretkey
    );
}
