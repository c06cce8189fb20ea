//! Disruptive tests: they stop and start the broker's application, which every
//! other test shares, so `scripts/test` runs this binary serially and last.
//! Test names start with `disruptive_` so that the main run skips them.

use std::process::Command;
use std::time::Duration;

use stratus_contracts::message_types::diag;
use stratus_contracts::names;
use stratus_messaging::Envelope;
use stratus_messaging::broker;
use stratus_tests::{Runner, RunnerOptions, TestEnv, diag_manifest, send};

const WAIT: Duration = Duration::from_secs(60);

fn rabbitmqctl(args: &[&str]) {
    let status = Command::new("rabbitmqctl").args(args).status().unwrap();
    assert!(status.success(), "rabbitmqctl {args:?}");
}

#[tokio::test]
async fn disruptive_the_platform_recovers_from_a_broker_restart() {
    let env = TestEnv::new("restart");
    let runner = Runner::start(
        &env,
        RunnerOptions {
            manifest: diag_manifest(|_| {}),
            topology: None,
            extra_args: vec![],
        },
    );
    let topology = broker::topology(&env.config).unwrap();
    let publisher = env.publisher(topology.clone());
    {
        stratus_tests::assert_echo_flows(&env, &publisher, &runner, "before").await;
        // A message that waits in the queue across the restart: the slow one holds the instance.
        send(
            &publisher,
            &Envelope::new(diag::SLEEP, &diag::Sleep { millis: 300 }),
        )
        .await;
    }
    rabbitmqctl(&["-q", "stop_app"]);
    tokio::time::sleep(Duration::from_secs(2)).await;
    rabbitmqctl(&["-q", "start_app"]);
    rabbitmqctl(&["-q", "await_startup"]);

    let connection = env.connect().await;
    let mut events = env
        .watch(&connection, names::INTERNAL_EVENTS_EXCHANGE, diag::ECHOED)
        .await;
    // The test's own publisher reconnects, and so do the trigger and the function's publisher.
    let after = Envelope::new(
        diag::ECHO,
        &diag::Echo {
            text: "after".into(),
        },
    );
    send(&publisher, &after).await;
    let reply = events
        .next(WAIT)
        .await
        .unwrap_or_else(|| panic!("no echo after the restart; log:\n{}", runner.log()));
    let body: diag::Echoed = Envelope::from_rmq(&reply).unwrap().body().unwrap();
    assert_eq!(body.in_reply_to, after.message_id.to_string());
    let s = runner
        .wait_for("the queue drained", WAIT, |s| {
            s["queue_triggers"][0]["depth"] == 0 && s["functions"][0]["in_flight"] == 0
        })
        .await;
    assert!(
        s["queue_triggers"][0]["reconnects"].as_u64() >= Some(1),
        "{s:#}"
    );
    assert!(
        runner
            .log()
            .contains("queue trigger lost its broker connection")
    );
}
