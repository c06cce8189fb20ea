//! Messaging against real RabbitMQ: topology, confirms, mandatory publishes.

use std::time::Duration;

use stratus_contracts::message_types::diag;
use stratus_contracts::names;
use stratus_messaging::Envelope;
use stratus_messaging::broker;
use stratus_messaging::publisher::{Outgoing, PublishError};
use stratus_tests::TestEnv;

/// A test's own vhost with the topology declared, and a publisher on it.
async fn declared(
    name: &str,
) -> (
    TestEnv,
    lapin::Connection,
    stratus_messaging::publisher::Publisher,
) {
    let env = TestEnv::new(name);
    let connection = env.connect().await;
    let topology = broker::topology(&env.config).unwrap();
    broker::declare_topology(&connection, &topology)
        .await
        .unwrap();
    let publisher = env.publisher(topology);
    (env, connection, publisher)
}

#[tokio::test]
async fn topology_declaration_is_idempotent_and_queues_take_commands() {
    let env = TestEnv::new("topology");
    let connection = env.connect().await;
    let topology = broker::topology(&env.config).unwrap();
    broker::declare_topology(&connection, &topology)
        .await
        .unwrap();
    broker::declare_topology(&connection, &topology)
        .await
        .unwrap();
    let publisher = env.publisher(topology.clone());
    let msg = Envelope::new(diag::NOOP, &diag::Noop {});
    publisher
        .publish(Outgoing::envelope(
            names::COMMANDS_EXCHANGE,
            diag::NOOP,
            &msg,
        ))
        .await
        .unwrap();
    assert_eq!(env.depth(&connection, "stratus.fn.diag").await, 1);
    // An instance queue from its template.
    let q = topology
        .instance_queue("stratus.agent.{instance}", "host-1")
        .unwrap();
    broker::declare_queue(&connection, &topology, &q)
        .await
        .unwrap();
    let cmd = Envelope::new("agent.start-vm", &serde_json::json!({}));
    publisher
        .publish(Outgoing::envelope(
            names::COMMANDS_EXCHANGE,
            &names::instance_routing_key("agent.start-vm", "host-1"),
            &cmd,
        ))
        .await
        .unwrap();
    assert_eq!(env.depth(&connection, "stratus.agent.host-1").await, 1);
}

#[tokio::test]
async fn a_queue_redeclared_with_other_arguments_is_named_in_the_error() {
    let env = TestEnv::new("redeclare");
    let connection = env.connect().await;
    let mut topology = broker::topology(&env.config).unwrap();
    broker::declare_topology(&connection, &topology)
        .await
        .unwrap();
    topology.queue_defaults.delivery_limit = Some(7);
    let e = broker::declare_topology(&connection, &topology)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("stratus.delay.1s") || e.contains("stratus.fn.diag"),
        "{e}"
    );
    assert!(e.contains("rabbitmqctl delete_queue"), "{e}");
}

#[tokio::test]
async fn unroutable_commands_are_errors_but_external_events_are_not() {
    let (env, connection, publisher) = declared("unroutable").await;
    let msg = Envelope::new("nobody.listens", &serde_json::json!({}));
    let e = publisher
        .publish(Outgoing::envelope(
            names::COMMANDS_EXCHANGE,
            "nobody.listens",
            &msg,
        ))
        .await
        .unwrap_err();
    assert!(
        matches!(
            e,
            PublishError::Unroutable {
                reply_code: 312,
                ..
            }
        ),
        "{e}"
    );
    assert!(e.is_permanent());
    let e = publisher
        .publish(Outgoing::envelope(
            names::INTERNAL_EVENTS_EXCHANGE,
            "nobody.listens",
            &msg,
        ))
        .await
        .unwrap_err();
    assert!(matches!(e, PublishError::Unroutable { .. }), "{e}");
    // The external CloudStack event bus is not mandatory: integrators bind if they want.
    publisher
        .publish(Outgoing::envelope(
            names::DEFAULT_EVENTS_EXCHANGE,
            "nobody.listens",
            &msg,
        ))
        .await
        .unwrap();
    // The publisher is still usable after a return.
    let mut watch = env
        .watch(&connection, names::INTERNAL_EVENTS_EXCHANGE, "diag.*")
        .await;
    let ok = Envelope::new(
        diag::ECHOED,
        &diag::Echoed {
            text: "x".into(),
            in_reply_to: "y".into(),
        },
    );
    publisher
        .publish(Outgoing::envelope(
            names::INTERNAL_EVENTS_EXCHANGE,
            diag::ECHOED,
            &ok,
        ))
        .await
        .unwrap();
    let got = watch
        .next(Duration::from_secs(5))
        .await
        .expect("the event arrives");
    assert_eq!(
        got.basic_properties.message_id,
        Some(ok.message_id.to_string())
    );
    assert_eq!(got.basic_properties.delivery_mode, Some(2));
}

#[tokio::test]
async fn a_window_of_confirms_covers_many_publishes() {
    let (env, connection, publisher) = declared("window").await;
    let batch: Vec<Outgoing> = (0..600)
        .map(|_| {
            Outgoing::envelope(
                names::COMMANDS_EXCHANGE,
                diag::NOOP,
                &Envelope::new(diag::NOOP, &diag::Noop {}),
            )
        })
        .collect();
    publisher.publish_all(&batch).await.unwrap();
    assert_eq!(env.depth(&connection, "stratus.fn.diag").await, 600);
}
