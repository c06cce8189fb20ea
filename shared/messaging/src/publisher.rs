//! Confirmed, persistent publishing. Every publish waits for the broker's
//! confirm; publishes to a mandatory exchange that no queue takes come back as
//! [`PublishError::Unroutable`], never silently dropped.
//!
//! Every wait is bounded by the configured broker wait (`STRATUS_BROKER_WAIT_MS`):
//! opening the link, and each window of confirms. A link that failed or timed
//! out is given up and a fresh one opened for the next publish, so a broker
//! restart or stall can cost a caller at most a few bounds, never a hang.

use std::sync::Arc;

use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::{BasicProperties, Channel, Confirmation, Connection};
use stratus_contracts::config::Config;
use stratus_contracts::topology::Topology;
use tokio::sync::Mutex;

use crate::broker::{self, BrokerError};
use crate::envelope::Envelope;

/// Publishes awaited together before the next ones go out.
pub const CONFIRM_WINDOW: usize = 256;

#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("unroutable: no queue takes {exchange} {routing_key} ({reply_code} {reply_text})")]
    Unroutable {
        exchange: String,
        routing_key: String,
        reply_code: u16,
        reply_text: String,
    },
    #[error("the broker refused (nack) {exchange} {routing_key}")]
    Nacked {
        exchange: String,
        routing_key: String,
    },
    #[error(transparent)]
    Broker(#[from] BrokerError),
    #[error("broker: {0}")]
    Amqp(#[from] lapin::Error),
}

impl PublishError {
    /// An unroutable message will not route on a retry; the rest may.
    pub fn is_permanent(&self) -> bool {
        matches!(self, PublishError::Unroutable { .. })
    }
}

/// One message to publish.
#[derive(Debug, Clone)]
pub struct Outgoing {
    pub exchange: String,
    pub routing_key: String,
    pub properties: BasicProperties,
    pub body: Vec<u8>,
}

impl Outgoing {
    pub fn envelope(exchange: &str, routing_key: &str, envelope: &Envelope) -> Self {
        Self {
            exchange: exchange.to_string(),
            routing_key: routing_key.to_string(),
            properties: envelope.to_properties(),
            body: envelope.body.clone(),
        }
    }
}

struct Link {
    connection: Connection,
    channel: Channel,
}

impl Link {
    fn usable(&self) -> bool {
        self.connection.status().connected() && self.channel.status().connected()
    }

    /// Gives the link up: its close is sent in the background, bounded, so
    /// that a broker that does not answer holds nobody.
    fn discard(self, wait: std::time::Duration) {
        tokio::spawn(async move { broker::close(&self.connection, wait, "link given up").await });
    }
}

/// A publisher that opens a fresh link when its last one has died or stalled
/// (after a broker restart, or while a Lambda environment was frozen and
/// missed its heartbeats).
pub struct Publisher {
    config: Config,
    topology: Arc<Topology>,
    name: String,
    link: Mutex<Option<Link>>,
}

impl Publisher {
    pub fn new(config: Config, topology: Arc<Topology>, name: &str) -> Self {
        Self {
            config,
            topology,
            name: name.to_string(),
            link: Mutex::new(None),
        }
    }

    pub fn topology(&self) -> &Topology {
        &self.topology
    }

    async fn open(&self) -> Result<Link, BrokerError> {
        let wait = self.config.broker_wait;
        let connection = broker::connect(&self.config, &self.name).await?;
        let channel =
            broker::within(wait, "opening a channel", connection.create_channel()).await?;
        broker::within(
            wait,
            "confirm.select",
            channel.confirm_select(ConfirmSelectOptions::default()),
        )
        .await?;
        Ok(Link {
            connection,
            channel,
        })
    }

    /// Publishes every message and waits for all confirms, in windows of
    /// [`CONFIRM_WINDOW`], each bounded by the broker wait. When the link
    /// fails (a restart leaves it looking alive until it is used), it retries
    /// once on a fresh link; after a timeout it does not (the broker has
    /// stalled, and a second wait would double the caller's).
    pub async fn publish_all(&self, messages: &[Outgoing]) -> Result<(), PublishError> {
        if messages.is_empty() {
            return Ok(());
        }
        let wait = self.config.broker_wait;
        let mut guard = self.link.lock().await;
        for round in 0..2 {
            if !guard.as_ref().is_some_and(Link::usable) {
                if let Some(old) = guard.take() {
                    old.discard(wait);
                }
                *guard = Some(self.open().await?);
            }
            let link = guard.as_ref().expect("link opened above");
            let result = publish_on(&link.channel, &self.topology, messages, wait).await;
            match result {
                Err(e @ (PublishError::Amqp(_) | PublishError::Broker(_))) => {
                    if let Some(old) = guard.take() {
                        old.discard(wait);
                    }
                    if round == 0 && matches!(e, PublishError::Amqp(_)) {
                        tracing::warn!(error = %e, "publish failed; once more on a fresh link");
                        continue;
                    }
                    return Err(e);
                }
                other => return other,
            }
        }
        unreachable!("the second round returns")
    }

    pub async fn publish(&self, message: Outgoing) -> Result<(), PublishError> {
        self.publish_all(std::slice::from_ref(&message)).await
    }

    pub async fn close(&self) {
        if let Some(link) = self.link.lock().await.take() {
            broker::close(&link.connection, self.config.broker_wait, "bye").await;
        }
    }
}

/// Publishes on a channel already in confirm mode.
/// Each window (its publishes and their confirms) is bounded by `wait`.
pub async fn publish_on(
    channel: &Channel,
    topology: &Topology,
    messages: &[Outgoing],
    wait: std::time::Duration,
) -> Result<(), PublishError> {
    for window in messages.chunks(CONFIRM_WINDOW) {
        match tokio::time::timeout(wait, publish_window(channel, topology, window)).await {
            Ok(result) => result?,
            Err(_) => {
                return Err(PublishError::Broker(BrokerError::Timeout {
                    what: "publisher confirms",
                    wait,
                }));
            }
        }
    }
    Ok(())
}

async fn publish_window(
    channel: &Channel,
    topology: &Topology,
    window: &[Outgoing],
) -> Result<(), PublishError> {
    let mut pending = Vec::with_capacity(window.len());
    for m in window {
        let mandatory = topology.is_mandatory(&m.exchange);
        let confirm = channel
            .basic_publish(
                m.exchange.as_str().into(),
                m.routing_key.as_str().into(),
                BasicPublishOptions {
                    mandatory,
                    ..Default::default()
                },
                &m.body,
                m.properties.clone(),
            )
            .await?;
        pending.push((m, confirm));
    }
    for (m, confirm) in pending {
        match confirm.await? {
            Confirmation::Ack(None) => {}
            Confirmation::Ack(Some(returned)) | Confirmation::Nack(Some(returned)) => {
                return Err(PublishError::Unroutable {
                    exchange: m.exchange.clone(),
                    routing_key: m.routing_key.clone(),
                    reply_code: returned.reply_code,
                    reply_text: returned.reply_text.to_string(),
                });
            }
            Confirmation::Nack(None) => {
                return Err(PublishError::Nacked {
                    exchange: m.exchange.clone(),
                    routing_key: m.routing_key.clone(),
                });
            }
            Confirmation::NotRequested => unreachable!("the channel is in confirm mode"),
        }
    }
    Ok(())
}
