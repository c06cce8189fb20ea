//! End to end: a message whose publisher died after the commit is republished
//! by the outbox relay (a scheduled function under the runner), with its own id.

use std::time::Duration;

use stratus_contracts::message_types::diag;
use stratus_contracts::names;
use stratus_messaging::{Envelope, outbox};
use stratus_model::samples::{Fixture, Sample};
use stratus_model::{Account, AccountState};
use stratus_store::{Store, Transaction};
use stratus_tests::{Runner, RunnerOptions, TestEnv};

#[tokio::test]
async fn the_relay_republishes_what_a_dead_publisher_left() {
    let env = TestEnv::new("outbox");
    let store = Store::open(&env.config.store, &env.config.table_prefix)
        .await
        .unwrap();
    // A state change and its message, committed together; nobody publishes it.
    let f = Fixture::default();
    let account = store.create(&Account::sample(&f)).await.unwrap();
    let mut disabled = account.clone();
    disabled.value.state = AccountState::Disabled;
    let message = Envelope::new(
        diag::ECHO,
        &diag::Echo {
            text: "from the outbox".into(),
        },
    )
    .with_job_id("job-7");
    let row = outbox::to_outbox(names::COMMANDS_EXCHANGE, diag::ECHO, &message);
    let mut tx = Transaction::new();
    tx.update(&disabled).enqueue(&row);
    store.transact(tx).await.unwrap();

    let connection = env.connect().await;
    let runner = Runner::start(
        &env,
        RunnerOptions {
            manifest: serde_json::json!({ "functions": [{
                "name": "outbox-relay",
                "binary": "stratus-fn-outbox-relay",
                "max_instances": 1,
                "environment": { "STRATUS_OUTBOX_GRACE_MS": "0" },
                "triggers": [{ "type": "schedule", "expression": "rate(1 second)" }]
            }]}),
            topology: None,
            extra_args: vec![],
        },
    );
    let mut commands = env
        .watch(&connection, names::COMMANDS_EXCHANGE, "diag.*")
        .await;
    let got = commands
        .next(Duration::from_secs(30))
        .await
        .unwrap_or_else(|| panic!("nothing republished; log:\n{}", runner.log()));
    let got = Envelope::from_rmq(&got).unwrap();
    assert_eq!(got.message_id, message.message_id);
    assert_eq!(got.job_id.as_deref(), Some("job-7"));
    assert_eq!(got.body, message.body);
    // The row is gone once confirmed, so the next runs publish nothing more.
    runner
        .wait_for("two relay runs", Duration::from_secs(30), |s| {
            s["functions"][0]["invocations"].as_u64() >= Some(3)
        })
        .await;
    assert!(store.get(row.id).await.unwrap().is_none());
    commands.expect_none(Duration::from_secs(2)).await;
    assert!(runner.log().contains("republishing from the outbox"));
}

#[tokio::test]
async fn the_runner_creates_the_dynamodb_table_at_start_up() {
    let Ok(endpoint) = std::env::var("STRATUS_TEST_DYNAMODB") else {
        panic!("STRATUS_TEST_DYNAMODB is not set: run scripts/test, which starts moto's server");
    };
    let mut env = TestEnv::new("ddbtable");
    env.config.store = stratus_contracts::config::StoreSelection::DynamoDb(endpoint.clone());
    env.config.table_prefix = format!("t{}_", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    let _runner = Runner::start(
        &env,
        RunnerOptions {
            manifest: stratus_tests::diag_manifest(|_| {}),
            topology: None,
            extra_args: vec![],
        },
    );
    let store = Store::open(&env.config.store, &env.config.table_prefix)
        .await
        .unwrap();
    let f = Fixture::default();
    let account = store
        .create(&Account::sample(&f))
        .await
        .expect("the runner created the table");
    assert_eq!(
        store.get(account.value.id).await.unwrap().unwrap().version,
        1
    );
}

/// A row whose message routes nowhere (a host agent's queue that does not
/// exist) is parked with its reason, not republished forever, and its row goes.
#[tokio::test]
async fn an_unroutable_outbox_row_is_parked_with_its_reason() {
    let env = TestEnv::new("outbox-unroutable");
    let store = Store::open(&env.config.store, &env.config.table_prefix)
        .await
        .unwrap();
    let topology = stratus_contracts::topology::Topology::parse(
        "builtin",
        stratus_messaging::broker::BUILTIN_TOPOLOGY,
    )
    .unwrap();
    let connection = env.connect().await;
    stratus_messaging::broker::declare_topology(&connection, &topology)
        .await
        .unwrap();
    let mut parked = env.watch(&connection, names::PARKING_EXCHANGE, "").await;
    let message = Envelope::new(diag::NOOP, &diag::Noop {}).with_job_id("job-9");
    let key = names::instance_routing_key("agent.start-vm", "no-such-host");
    let row = outbox::to_outbox(names::COMMANDS_EXCHANGE, &key, &message);
    let mut tx = Transaction::new();
    tx.enqueue(&row);
    store.transact(tx).await.unwrap();
    let publisher = env.publisher(topology);
    let sent = outbox::publish_committed(&store, &publisher, std::slice::from_ref(&row)).await;
    assert_eq!((sent.published, sent.parked, sent.failed), (0, 1, 0));
    let got = parked
        .next(Duration::from_secs(10))
        .await
        .expect("the unroutable message was not parked");
    let reason = stratus_tests::parked_reason(&got);
    assert!(reason.contains("unroutable"), "{reason}");
    let got = Envelope::from_rmq(&got).unwrap();
    assert_eq!(
        (got.message_id, got.job_id.as_deref()),
        (message.message_id, Some("job-9"))
    );
    assert!(store.get(row.id).await.unwrap().is_none());
}
