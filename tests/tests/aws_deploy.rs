//! What the AWS deployment relies on, run here for real: the bootstrap
//! function declares the broker topology on an empty broker, makes the secret
//! key's data key (KMS, kept encrypted in SSM) and writes the root admin's keys
//! to Secrets Manager; a function reads its broker credentials, Consul address
//! and secret key through `secretsmanager:`/`ssm:` references; a scheduled
//! function repeats its tick within one invocation (the sub-minute schedules).
//! SSM, Secrets Manager and KMS are moto's server (STRATUS_TEST_DYNAMODB, the
//! same server the DynamoDB tests use), reached by the real AWS SDK over HTTP.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use serde_json::{Value, json};
use stratus_messaging::broker;
use stratus_tests::{TestEnv, bin_dir, root};

fn moto() -> String {
    std::env::var("STRATUS_TEST_DYNAMODB").unwrap_or_else(|_| {
        panic!("STRATUS_TEST_DYNAMODB is not set: run the suite with scripts/test (it starts moto's server)")
    })
}

async fn sdk(endpoint: &str) -> aws_config::SdkConfig {
    aws_config::defaults(aws_config::BehaviorVersion::latest())
        .endpoint_url(endpoint)
        .region(aws_config::Region::new("us-east-1"))
        .credentials_provider(aws_sdk_ssm::config::Credentials::new(
            "testing", "testing", None, None, "moto",
        ))
        .load()
        .await
}

/// The repository's manifest with `environment` added to some functions,
/// written beside the test's state (zone files are not read: events carry
/// no `zone_file`).
fn manifest_with(env: &TestEnv, extra: &BTreeMap<&str, Value>) -> std::path::PathBuf {
    let mut m: Value =
        serde_json::from_slice(&std::fs::read(root().join("infra/manifest.json")).unwrap())
            .unwrap();
    for f in m["functions"].as_array_mut().unwrap() {
        if let Some(e) = extra.get(f["name"].as_str().unwrap()) {
            f["environment"] = e.clone();
        }
    }
    let path = env.home.join("manifest.json");
    std::fs::write(&path, serde_json::to_vec_pretty(&m).unwrap()).unwrap();
    path
}

fn invoke(env: &TestEnv, manifest: &Path, function: &str, event: &Value) -> (bool, Value, String) {
    let file = env.home.join(format!("event-{function}.json"));
    std::fs::write(&file, event.to_string()).unwrap();
    let out = Command::new(bin_dir().join("stratus-local"))
        .args(["invoke", function, "--manifest"])
        .arg(manifest)
        .arg("--event")
        .arg(&file)
        .envs(env.config.to_env())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    let answer = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    (out.status.success(), answer, stderr)
}

#[tokio::test]
async fn bootstrap_on_aws_declares_the_topology_and_keeps_secrets_in_ssm_and_secrets_manager() {
    let env = TestEnv::new("aws-bootstrap");
    let endpoint = moto();
    let aws = sdk(&endpoint).await;
    let (ssm, sm, kms) = (
        aws_sdk_ssm::Client::new(&aws),
        aws_sdk_secretsmanager::Client::new(&aws),
        aws_sdk_kms::Client::new(&aws),
    );
    let key = kms
        .create_key()
        .send()
        .await
        .unwrap()
        .key_metadata
        .unwrap()
        .key_id;
    let prefix = format!("/{}", env.vhost);
    let secret = |name: &str, value: Option<&str>| {
        let mut call = sm.create_secret().name(format!("{}-{name}", env.vhost));
        if let Some(v) = value {
            call = call.secret_string(v);
        }
        async move { call.send().await.unwrap().arn.unwrap() }
    };
    let broker_secret = secret("broker", Some(r#"{"username":"guest","password":"guest"}"#)).await;
    let admin_secret = secret("admin-keys", None).await;
    // A wrong Consul address would do: these functions read it, none calls it.
    ssm.put_parameter()
        .name(format!("{prefix}/consul/address"))
        .value("127.0.0.1:1")
        .r#type(aws_sdk_ssm::types::ParameterType::SecureString)
        .send()
        .await
        .unwrap();
    let common = json!({
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_REGION": "us-east-1",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "STRATUS_AMQP_URL": "amqp://127.0.0.1:5672",
        "STRATUS_AMQP_CREDENTIALS": format!("secretsmanager:{broker_secret}"),
        "STRATUS_SECRET_KEY": format!("ssm:{prefix}/secret-key"),
    });
    let mut bootstrap = common.clone();
    bootstrap["STRATUS_KMS_KEY_ID"] = json!(key);
    bootstrap["STRATUS_ADMIN_KEYS_SECRET"] = json!(admin_secret);
    let mut diag = common.clone();
    diag["CONSUL_HTTP_ADDR"] = json!(format!("ssm:{prefix}/consul/address"));
    let manifest = manifest_with(
        &env,
        &BTreeMap::from([("bootstrap", bootstrap), ("diag", diag)]),
    );

    // A new broker is empty: the vhost has no queue before the bootstrap.
    let connection = env.connect().await;
    assert!(
        !env.queue_exists(&connection, "stratus.fn.orchestrator")
            .await
    );
    let event = json!({"declare_topology": true, "endpoint": "https://api.example/client/api"});
    let (ok, first, stderr) = invoke(&env, &manifest, "bootstrap", &event);
    assert!(ok, "bootstrap failed: {first} {stderr}");
    println!("bootstrap answered {first}");
    let topology =
        stratus_contracts::topology::Topology::parse("builtin", broker::BUILTIN_TOPOLOGY).unwrap();
    for q in &topology.queues {
        assert!(
            env.queue_exists(&connection, &q.name).await,
            "queue {} was not declared",
            q.name
        );
    }
    println!("{} queues declared by the bootstrap", topology.queues.len());
    broker::close(&connection, env.config.broker_wait, "checked").await;

    // The data key: made once, kept only KMS-encrypted, and KMS opens it
    // (with the secret box's encryption context).
    let parameter = |name: String| {
        let ssm = ssm.clone();
        async move {
            ssm.get_parameter()
                .name(name)
                .send()
                .await
                .unwrap()
                .parameter
                .unwrap()
                .value
                .unwrap()
        }
    };
    let blob = parameter(format!("{prefix}/secret-key")).await;
    assert!(blob.starts_with("kms:"), "{blob}");
    let data_key = stratus_secrets::KmsDataKey {
        ciphertext: blob["kms:".len()..].to_string(),
    };
    let plain = kms
        .decrypt()
        .ciphertext_blob(aws_sdk_kms::primitives::Blob::new(data_key.blob().unwrap()))
        .encryption_context("purpose", "stratus-secret-key")
        .send()
        .await
        .unwrap();
    assert_eq!(plain.plaintext.unwrap().as_ref().len(), 32);

    // The admin's keys: in the secret, and never in the answer (Terraform
    // keeps an invocation's answer in its state).
    let read_keys = || async {
        let v = sm
            .get_secret_value()
            .secret_id(&admin_secret)
            .send()
            .await
            .unwrap();
        serde_json::from_str::<Value>(&v.secret_string.unwrap()).unwrap()
    };
    let keys = read_keys().await;
    let secretkey = keys["secretkey"].as_str().unwrap().to_string();
    assert_eq!(keys["username"], "admin");
    assert_eq!(keys["endpoint"], "https://api.example/client/api");
    assert!(secretkey.len() > 20 && keys["apikey"].as_str().unwrap().len() > 20);
    assert!(!first.to_string().contains(&secretkey), "{first}");
    assert!(!stderr.contains(&secretkey), "the secret key is in the log");
    assert!(
        first["keys"].as_str().unwrap().contains(&admin_secret),
        "{first}"
    );
    assert!(
        first.get("ini").is_none(),
        "no cloudstack.ini on AWS: {first}"
    );

    // Again: nothing new is made, the same keys are written, and the key's
    // parameter is unchanged.
    let (ok, again, stderr) = invoke(&env, &manifest, "bootstrap", &event);
    assert!(ok, "second bootstrap failed: {again} {stderr}");
    assert_eq!(again["created"], 0, "{again}");
    assert_eq!(parameter(format!("{prefix}/secret-key")).await, blob);
    assert_eq!(read_keys().await["secretkey"], secretkey.as_str());

    // Another function reads its broker credentials from the secret and its
    // Consul address from SSM, and handles a message.
    let noop: Value =
        serde_json::from_slice(&std::fs::read(root().join("events/rmq/diag.noop.json")).unwrap())
            .unwrap();
    let (ok, answer, stderr) = invoke(&env, &manifest, "diag", &noop);
    assert!(ok, "diag failed: {answer} {stderr}");
    assert_eq!(answer, json!({"handled": 1, "retried": 0, "parked": 0}));

    // A reference to what does not exist stops the function at start, naming
    // the variable and the reference, not a value.
    let mut broken = common.clone();
    broken["CONSUL_HTTP_TOKEN"] = json!(format!("ssm:{prefix}/no-such-token"));
    let manifest = manifest_with(&env, &BTreeMap::from([("diag", broken)]));
    let (ok, answer, stderr) = invoke(&env, &manifest, "diag", &noop);
    assert!(!ok, "{answer}");
    let said = format!("{answer} {stderr}");
    assert!(
        said.contains(&format!(
            "CONSUL_HTTP_TOKEN=ssm:{prefix}/no-such-token: no such parameter"
        )),
        "{said}"
    );
}

#[tokio::test]
async fn a_scheduled_function_repeats_its_tick_within_one_invocation() {
    let env = TestEnv::new("aws-repeat");
    let manifest = root().join("infra/manifest.json");
    // What the EventBridge rule of terraform/schedules.tf sends for a
    // `rate(N seconds)` schedule, with a short period and window.
    let event = json!({
        "id": "00000000-0000-4000-8000-0000000000c2",
        "time": "2026-12-03T00:00:00Z",
        "source": "aws.events",
        "detail-type": "Scheduled Event",
        "detail": {"stratus_repeat": {"every_ms": 200, "for_ms": 1000}},
    });
    let started = std::time::Instant::now();
    let (ok, answer, stderr) = invoke(&env, &manifest, "outbox-relay", &event);
    assert!(ok, "{answer} {stderr}");
    println!("relay answered {answer} in {:?}", started.elapsed());
    assert_eq!(answer["ticks"], 5, "{answer}");
    assert_eq!(answer["failed_ticks"], 0, "{answer}");
    // The plain scheduled event (the local runner's) is one tick, as before.
    let plain: Value =
        serde_json::from_slice(&std::fs::read(root().join("events/schedule/rate.json")).unwrap())
            .unwrap();
    let (ok, answer, stderr) = invoke(&env, &manifest, "outbox-relay", &plain);
    assert!(ok, "{answer} {stderr}");
    assert!(answer.get("ticks").is_none(), "{answer}");
}
