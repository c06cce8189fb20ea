//! Connecting to RabbitMQ and declaring the topology from `infra/topology.json`.

use lapin::options::{ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::{Channel, Connection, ConnectionProperties, ExchangeKind};
use stratus_contracts::config::Config;
use stratus_contracts::names;
use stratus_contracts::topology::{
    ExchangeKind as Kind, Queue, QueueArguments, QueueType, Topology,
};

/// The topology compiled into every binary, so that a function on Lambda
/// needs no file beside it. `STRATUS_TOPOLOGY` may name another file (tests).
pub const BUILTIN_TOPOLOGY: &str = include_str!("../../../infra/topology.json");
pub const ENV_TOPOLOGY: &str = "STRATUS_TOPOLOGY";

#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    #[error(
        "cannot reach RabbitMQ at {url} (vhost {vhost:?}): {source}. Start it with `rabbitmq-server -detached` (scripts/run-local installs and starts it), or set STRATUS_AMQP_URL"
    )]
    Unreachable {
        url: String,
        vhost: String,
        source: lapin::Error,
    },
    #[error("declaring {what}: {source}")]
    Declare { what: String, source: lapin::Error },
    #[error(transparent)]
    Topology(#[from] stratus_contracts::LoadError),
    #[error(transparent)]
    Amqp(#[from] lapin::Error),
    /// The broker did not answer within the bound (`STRATUS_BROKER_WAIT_MS`):
    /// the link is to be given up, never waited on again.
    #[error("the broker did not answer {what} within {} ms", wait.as_millis())]
    Timeout {
        what: &'static str,
        wait: std::time::Duration,
    },
}

/// Waits at most `wait` for one answer from the broker. Every wait on the
/// broker goes through here, so that a broker that stalls (paused, partitioned,
/// blocked) or a connection that died without a word can hold nothing for
/// longer than the bound.
pub async fn within<T, E: Into<BrokerError>>(
    wait: std::time::Duration,
    what: &'static str,
    answer: impl std::future::Future<Output = Result<T, E>>,
) -> Result<T, BrokerError> {
    match tokio::time::timeout(wait, answer).await {
        Ok(result) => result.map_err(Into::into),
        Err(_) => Err(BrokerError::Timeout { what, wait }),
    }
}

/// The topology this process uses: `STRATUS_TOPOLOGY`'s file, or the built-in one,
/// with the external event exchange named as configured.
pub fn topology(config: &Config) -> Result<Topology, BrokerError> {
    let t = match std::env::var(ENV_TOPOLOGY).ok().filter(|p| !p.is_empty()) {
        Some(path) => Topology::load(std::path::Path::new(&path))?,
        None => Topology::parse("infra/topology.json (built in)", BUILTIN_TOPOLOGY)?,
    };
    Ok(t.with_external_events_exchange(&config.events_exchange))
}

pub use stratus_contracts::config::redacted_url;

/// Closes `connection` politely, waiting at most `wait` for the broker's
/// close-ok: a broker that does not answer holds nobody (the connection,
/// dropped, is closed by lapin or given up by its heartbeat check, and what
/// was unacked on it is the broker's to redeliver).
pub async fn close(connection: &Connection, wait: std::time::Duration, reason: &str) {
    let _ = within(
        wait,
        "closing the connection",
        connection.close(200, reason.into()),
    )
    .await;
}

/// Opens a connection, bounded by the configured broker wait (TCP, TLS and the
/// AMQP handshake together). There is no automatic recovery: whoever holds a
/// connection notices it failing (an error, a timeout, its status) and opens
/// a new one, so that nothing ever waits on a connection that is recovering.
pub async fn connect(config: &Config, connection_name: &str) -> Result<Connection, BrokerError> {
    let props = ConnectionProperties::default().with_connection_name(connection_name.into());
    let unreachable = |source| BrokerError::Unreachable {
        url: redacted_url(&config.amqp_url),
        vhost: config.amqp_vhost.clone(),
        source,
    };
    within(config.broker_wait, "the connection handshake", async {
        Connection::connect(&config.amqp_uri(), props)
            .await
            .map_err(unreachable)
    })
    .await
}

/// The queue arguments, every one stated, so that RabbitMQ 3.10 and 4.x behave alike.
pub fn queue_arguments(args: &QueueArguments) -> FieldTable {
    let mut t = FieldTable::default();
    let s = |v: &str| AMQPValue::LongString(LongString::from(v.as_bytes().to_vec()));
    let quorum = args.queue_type != Some(QueueType::Classic);
    t.insert(
        "x-queue-type".into(),
        s(if quorum { "quorum" } else { "classic" }),
    );
    // An empty name means "no dead-letter exchange" (it would otherwise name the default exchange).
    let dlx = args
        .dead_letter_exchange
        .as_deref()
        .filter(|d| !d.is_empty());
    if let Some(dlx) = dlx {
        t.insert("x-dead-letter-exchange".into(), s(dlx));
    }
    if let Some(ttl) = args.message_ttl_ms {
        t.insert("x-message-ttl".into(), AMQPValue::LongLongInt(ttl as i64));
    }
    if let Some(overflow) = &args.overflow {
        t.insert("x-overflow".into(), s(overflow));
    }
    if quorum {
        if let Some(limit) = args.delivery_limit {
            t.insert("x-delivery-limit".into(), AMQPValue::LongInt(limit as i32));
        }
        if let (Some(strategy), Some(_)) = (&args.dead_letter_strategy, dlx) {
            t.insert("x-dead-letter-strategy".into(), s(strategy));
        }
    }
    t
}

fn exchange_kind(k: Kind) -> ExchangeKind {
    match k {
        Kind::Topic => ExchangeKind::Topic,
        Kind::Direct => ExchangeKind::Direct,
        Kind::Fanout => ExchangeKind::Fanout,
    }
}

/// Connects, declares the whole topology (bounded: ten broker waits), and
/// closes: what the local runner does at start and the bootstrap function
/// does on AWS, where a new broker is empty.
pub async fn declare_all(
    config: &Config,
    topology: &Topology,
    connection_name: &str,
) -> Result<(), BrokerError> {
    let connection = connect(config, connection_name).await?;
    let declared = within(
        config.broker_wait * 10,
        "the topology's declarations",
        declare_topology(&connection, topology),
    )
    .await;
    close(&connection, config.broker_wait, "declared").await;
    declared
}

/// Declares every exchange, delay tier, queue and binding. Safe to repeat.
/// A queue that exists with other arguments is reported by name (the broker
/// closes the channel, so each declaration here uses a fresh one).
pub async fn declare_topology(
    connection: &Connection,
    topology: &Topology,
) -> Result<(), BrokerError> {
    let channel = connection.create_channel().await?;
    for e in &topology.exchanges {
        let opts = ExchangeDeclareOptions {
            durable: true,
            ..Default::default()
        };
        channel
            .exchange_declare(
                e.name.as_str().into(),
                exchange_kind(e.kind),
                opts,
                FieldTable::default(),
            )
            .await
            .map_err(|source| BrokerError::Declare {
                what: format!("exchange {}", e.name),
                source,
            })?;
    }
    for tier in &topology.retry.tiers {
        let exchange = names::delay_exchange(&tier.name);
        let opts = ExchangeDeclareOptions {
            durable: true,
            ..Default::default()
        };
        channel
            .exchange_declare(
                exchange.as_str().into(),
                ExchangeKind::Fanout,
                opts,
                FieldTable::default(),
            )
            .await
            .map_err(|source| BrokerError::Declare {
                what: format!("exchange {exchange}"),
                source,
            })?;
        let args = QueueArguments {
            message_ttl_ms: Some(tier.delay_ms),
            dead_letter_exchange: Some(names::REQUEUE_EXCHANGE.to_string()),
            ..Default::default()
        }
        .over(&topology.queue_defaults);
        let queue = Queue {
            name: names::delay_queue(&tier.name),
            arguments: args,
            bindings: vec![stratus_contracts::topology::Binding {
                exchange,
                key: String::new(),
            }],
            retries: false,
        };
        declare_queue(connection, topology, &queue).await?;
    }
    for q in &topology.queues {
        declare_queue(connection, topology, q).await?;
    }
    Ok(())
}

/// Declares one queue with its bindings (and its requeue binding for retries).
pub async fn declare_queue(
    connection: &Connection,
    topology: &Topology,
    queue: &Queue,
) -> Result<(), BrokerError> {
    let channel: Channel = connection.create_channel().await?;
    let args = topology.arguments_of(queue);
    let opts = QueueDeclareOptions {
        durable: true,
        ..Default::default()
    };
    channel
        .queue_declare(queue.name.as_str().into(), opts, queue_arguments(&args))
        .await
        .map_err(|source| BrokerError::Declare {
            what: format!(
                "queue {} (if it exists with other arguments, delete it with `rabbitmqctl delete_queue {}` or use another vhost)",
                queue.name, queue.name
            ),
            source,
        })?;
    let mut bindings: Vec<(String, String)> = queue
        .bindings
        .iter()
        .map(|b| (b.exchange.clone(), b.key.clone()))
        .collect();
    if queue.retries {
        bindings.push((names::REQUEUE_EXCHANGE.to_string(), queue.name.clone()));
    }
    for (exchange, key) in bindings {
        channel
            .queue_bind(
                queue.name.as_str().into(),
                exchange.as_str().into(),
                key.as_str().into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(|source| BrokerError::Declare {
                what: format!("binding {} to {exchange} ({key})", queue.name),
                source,
            })?;
    }
    let _ = channel.close(200, "declared".into()).await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_topology_parses() {
        let t = Topology::parse("builtin", BUILTIN_TOPOLOGY).unwrap();
        assert!(!t.queues.is_empty());
    }

    #[test]
    fn passwords_are_hidden() {
        assert_eq!(
            redacted_url("amqp://guest:secret@127.0.0.1:5672"),
            "amqp://guest:***@127.0.0.1:5672"
        );
        assert_eq!(redacted_url("amqp://127.0.0.1"), "amqp://127.0.0.1");
    }

    #[test]
    fn quorum_arguments_are_explicit() {
        let t = Topology::parse("builtin", BUILTIN_TOPOLOGY).unwrap();
        let q = t
            .queues
            .iter()
            .find(|q| q.name == "stratus.fn.diag")
            .unwrap();
        let table = queue_arguments(&t.arguments_of(q));
        for key in [
            "x-queue-type",
            "x-delivery-limit",
            "x-dead-letter-exchange",
            "x-dead-letter-strategy",
            "x-overflow",
        ] {
            assert!(table.contains_key(key), "{key}");
        }
        let classic = queue_arguments(&QueueArguments {
            queue_type: Some(QueueType::Classic),
            delivery_limit: Some(3),
            ..Default::default()
        });
        assert!(!classic.contains_key("x-delivery-limit"));
    }
}
