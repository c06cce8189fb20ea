//! The Amazon MQ for RabbitMQ event source mapping, emulated with no Stratus
//! logic added: pollers (one per unit of concurrency) consume the queue with a
//! prefetch of the batch size, gather a batch (batch size, batching window,
//! 6 MB), invoke the function with an `aws:rmq` event rendered as AWS renders
//! it, ack the whole batch on success (one multiple-ack), and on failure return
//! every message (`basic.reject` with requeue, per message, so that quorum
//! delivery limits count it on every RabbitMQ version) and back off before
//! taking the next batch. A lost connection is re-made with backoff; the broker
//! requeues whatever was unacked.
//!
//! No wait on the broker is unbounded: connecting, opening the channel, the
//! consume, every ack and reject, and the close each get the configured broker
//! wait (`STRATUS_BROKER_WAIT_MS`), and while a poller waits for messages it
//! watches its connection and channel, so a connection that dies without a
//! word (a broker restart while a batch was in flight, a paused broker whose
//! heartbeats stopped) sends the poller back to a fresh connection and
//! consumer. The status counts a poller only while it has a consumer.
//!
//! Scaling, as Lambda scales its pollers with the backlog: one poller runs at
//! first; each second the queue's depth is read, and another poller starts
//! (up to the trigger's concurrency) while the backlog exceeds a batch per
//! running poller; after ten seconds of an empty queue the extra pollers stop
//! between batches. Instances follow the invocations in flight (see `pool`).

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::time::Duration;

use futures::{FutureExt, StreamExt};
use lapin::message::Delivery;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicQosOptions, BasicRejectOptions, QueueDeclareOptions,
};
use lapin::types::FieldTable;
use serde::Serialize;
use stratus_contracts::config::Config;
use stratus_messaging::broker::{self, within};
use stratus_messaging::rmq_event::{self, RmqEvent};
use tokio::sync::watch;

use crate::backoff::Backoff;
use crate::pool::{ACCOUNT_ID, MAX_RESPONSE_BYTES, Pool, REGION};

/// The broker ARN the local runner reports as `eventSourceArn`.
pub fn broker_arn() -> String {
    format!(
        "arn:aws:mq:{REGION}:{ACCOUNT_ID}:broker:stratus-local:b-00000000-0000-4000-8000-000000000000"
    )
}

#[derive(Debug, Clone)]
pub struct QueueTriggerSpec {
    pub function: String,
    pub queue: String,
    pub batch_size: u32,
    pub batching_window: Duration,
    pub concurrency: u32,
}

#[derive(Default)]
pub struct TriggerCounters {
    pub batches: AtomicU64,
    pub failed_batches: AtomicU64,
    pub messages: AtomicU64,
    pub reconnects: AtomicU64,
}

#[derive(Debug, Serialize)]
pub struct TriggerStatus {
    pub function: String,
    pub queue: String,
    pub depth: Option<u32>,
    pub consumers: Option<u32>,
    /// Pollers consuming now (with a consumer on the broker), how many are
    /// wanted for the backlog, and the most the trigger may run.
    pub pollers: u32,
    pub wanted: u32,
    pub max_pollers: u32,
    pub batches: u64,
    pub failed_batches: u64,
    pub messages: u64,
    pub reconnects: u64,
}

pub struct QueueTrigger {
    pub spec: QueueTriggerSpec,
    config: Config,
    pool: Arc<Pool>,
    pub counters: TriggerCounters,
    /// How many pollers should run; poller `slot` runs while `slot < target`.
    target: watch::Sender<u32>,
    /// A channel kept for reading the queue's depth.
    counts: tokio::sync::Mutex<Option<(lapin::Connection, lapin::Channel)>>,
    /// What each poller is doing (a [`PollerState`] per slot).
    states: Vec<AtomicU8>,
}

/// What one poller is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
enum PollerState {
    /// Not wanted (scaled down).
    Stopped = 0,
    Connecting = 1,
    /// Its consumer is on the broker.
    Consuming = 2,
    /// Waiting before it connects again.
    BackingOff = 3,
}

/// How often a waiting poller checks that its connection and channel live.
const LINK_CHECK: Duration = Duration::from_millis(250);

/// Seconds of an empty queue before extra pollers stop.
const SCALE_DOWN_AFTER: u32 = 10;

impl QueueTrigger {
    pub fn new(spec: QueueTriggerSpec, config: Config, pool: Arc<Pool>) -> Arc<Self> {
        Arc::new(Self {
            config,
            pool,
            counters: TriggerCounters::default(),
            target: watch::channel(1).0,
            counts: tokio::sync::Mutex::new(None),
            states: (0..spec.concurrency)
                .map(|_| AtomicU8::new(PollerState::Stopped as u8))
                .collect(),
            spec,
        })
    }

    fn set_state(&self, slot: u32, state: PollerState) {
        self.states[slot as usize].store(state as u8, Ordering::Relaxed);
    }

    fn consuming(&self) -> u32 {
        self.states
            .iter()
            .filter(|s| s.load(Ordering::Relaxed) == PollerState::Consuming as u8)
            .count() as u32
    }

    pub fn start(self: &Arc<Self>) {
        for slot in 0..self.spec.concurrency {
            let trigger = self.clone();
            tokio::spawn(async move { trigger.poll(slot).await });
        }
        if self.spec.concurrency > 1 {
            let trigger = self.clone();
            tokio::spawn(async move { trigger.scale().await });
        }
    }

    /// Sets the number of pollers from the queue's depth.
    async fn scale(self: Arc<Self>) {
        let mut empty_for = 0;
        loop {
            tokio::time::sleep(Duration::from_secs(1)).await;
            let Some((depth, _)) = self.queue_counts().await else {
                continue;
            };
            let running = *self.target.borrow();
            empty_for = if depth == 0 { empty_for + 1 } else { 0 };
            let wanted =
                if depth > running * self.spec.batch_size && running < self.spec.concurrency {
                    running + 1
                } else if empty_for >= SCALE_DOWN_AFTER && running > 1 {
                    empty_for = 0;
                    running - 1
                } else {
                    running
                };
            if wanted != running {
                tracing::info!(function = %self.spec.function, queue = %self.spec.queue, depth, pollers = wanted, "scaling pollers");
                self.target.send_replace(wanted);
            }
        }
    }

    async fn poll(self: Arc<Self>, slot: u32) {
        // At most 5 s between tries: a broker back from a restart is consumed again within seconds.
        let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(5));
        let mut target = self.target.subscribe();
        loop {
            self.set_state(slot, PollerState::Stopped);
            // Wait until this poller is wanted.
            while *target.borrow_and_update() <= slot {
                if target.changed().await.is_err() {
                    return;
                }
            }
            self.set_state(slot, PollerState::Connecting);
            let Some(error) = self.consume(slot, &mut backoff).await else {
                tracing::info!(function = %self.spec.function, queue = %self.spec.queue, slot, "poller stopped (scaled down)");
                continue;
            };
            self.set_state(slot, PollerState::BackingOff);
            self.counters.reconnects.fetch_add(1, Ordering::Relaxed);
            let wait = backoff.next_delay();
            tracing::warn!(function = %self.spec.function, queue = %self.spec.queue, slot, error = %error, retry_in_ms = wait.as_millis() as u64, "queue trigger lost its broker connection");
            tokio::time::sleep(wait).await;
        }
    }

    /// Consumes until the connection fails (returns why) or the poller is scaled down (None).
    async fn consume(&self, slot: u32, backoff: &mut Backoff) -> Option<anyhow::Error> {
        let connection = match broker::connect(
            &self.config,
            &format!("stratus-local trigger {} #{slot}", self.spec.function),
        )
        .await
        {
            Ok(c) => c,
            Err(e) => return Some(e.into()),
        };
        let result = self.consume_on(&connection, slot, backoff).await;
        broker::close(&connection, self.config.broker_wait, "poller stopping").await;
        result.err()
    }

    async fn consume_on(
        &self,
        connection: &lapin::Connection,
        slot: u32,
        backoff: &mut Backoff,
    ) -> anyhow::Result<()> {
        let wait = self.config.broker_wait;
        let channel = within(wait, "opening a channel", connection.create_channel()).await?;
        let prefetch = self.spec.batch_size.min(u16::MAX as u32) as u16;
        within(
            wait,
            "basic.qos",
            channel.basic_qos(prefetch, BasicQosOptions::default()),
        )
        .await?;
        let tag = format!("stratus-local.{}.{slot}", self.spec.function);
        let mut consumer = within(
            wait,
            "basic.consume",
            channel.basic_consume(
                self.spec.queue.as_str().into(),
                tag.as_str().into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            ),
        )
        .await?;
        self.set_state(slot, PollerState::Consuming);
        tracing::info!(function = %self.spec.function, queue = %self.spec.queue, slot, "queue trigger polling");
        backoff.reset();
        let mut failures = Backoff::new(Duration::from_millis(100), Duration::from_secs(10));
        let mut carried: Option<Delivery> = None;
        let mut wanted = self.target.subscribe();
        let mut check = tokio::time::interval(LINK_CHECK);
        loop {
            let first = match carried.take() {
                Some(d) => d,
                None => tokio::select! {
                    next = consumer.next() => match next {
                        Some(d) => d?,
                        None => anyhow::bail!("the broker cancelled the consumer"),
                    },
                    _ = wanted.wait_for(|t| *t <= slot) => return Ok(()),
                    _ = check.tick() => {
                        if !(connection.status().connected() && channel.status().connected()) {
                            anyhow::bail!(
                                "the {} closed without a word",
                                if connection.status().connected() { "channel" } else { "connection" }
                            );
                        }
                        continue;
                    }
                },
            };
            let (batch, carry) = self.gather(first, &mut consumer).await?;
            carried = carry;
            if self.invoke_batch(batch).await? {
                failures.reset();
            } else {
                tokio::time::sleep(failures.next_delay()).await;
            }
        }
    }

    /// Gathers a batch after `first`: up to the batch size, within the batching
    /// window (0: only what is already here), under 6 MB. A message that would
    /// pass 6 MB is carried to the next batch.
    async fn gather(
        &self,
        first: Delivery,
        consumer: &mut lapin::Consumer,
    ) -> anyhow::Result<(Vec<Delivery>, Option<Delivery>)> {
        let mut size = first.data.len();
        let mut batch = vec![first];
        let deadline = tokio::time::Instant::now() + self.spec.batching_window;
        while batch.len() < self.spec.batch_size as usize {
            let next = if self.spec.batching_window.is_zero() {
                match consumer.next().now_or_never() {
                    Some(n) => n,
                    None => break,
                }
            } else {
                match tokio::time::timeout_at(deadline, consumer.next()).await {
                    Ok(n) => n,
                    Err(_) => break,
                }
            };
            let Some(delivery) = next else { break };
            let delivery = delivery?;
            if size + delivery.data.len() > MAX_RESPONSE_BYTES {
                return Ok((batch, Some(delivery)));
            }
            size += delivery.data.len();
            batch.push(delivery);
        }
        Ok((batch, None))
    }

    /// Invokes the function with one batch and settles it. Returns whether the batch succeeded.
    async fn invoke_batch(&self, batch: Vec<Delivery>) -> anyhow::Result<bool> {
        let vhost = &self.config.amqp_vhost;
        // A single message over the payload limit: AWS drops it; the broker's
        // dead-letter exchange takes it here instead, so nothing is lost.
        if batch.len() == 1 && batch[0].data.len() > MAX_RESPONSE_BYTES {
            tracing::error!(function = %self.spec.function, queue = %self.spec.queue, bytes = batch[0].data.len(), "message over 6 MB; rejected to the dead-letter exchange");
            settle(
                self.config.broker_wait,
                "basic.reject",
                batch[0].reject(BasicRejectOptions { requeue: false }),
            )
            .await?;
            return Ok(true);
        }
        let messages = batch
            .iter()
            .map(|d| rmq_event::render_message(&d.properties, &d.data, d.redelivered))
            .collect();
        let event = RmqEvent {
            event_source: Some(rmq_event::EVENT_SOURCE.to_string()),
            event_source_arn: Some(broker_arn()),
            messages_by_queue: [(RmqEvent::key(&self.spec.queue, vhost), messages)]
                .into_iter()
                .collect(),
        };
        let payload = serde_json::to_vec(&event)?;
        let outcome = self.pool.invoke(payload.into()).await;
        self.counters.batches.fetch_add(1, Ordering::Relaxed);
        self.counters
            .messages
            .fetch_add(batch.len() as u64, Ordering::Relaxed);
        if outcome.is_success() {
            let last = batch.last().expect("a batch has a message");
            settle(
                self.config.broker_wait,
                "basic.ack",
                last.ack(BasicAckOptions { multiple: true }),
            )
            .await?;
            Ok(true)
        } else {
            self.counters.failed_batches.fetch_add(1, Ordering::Relaxed);
            if let crate::pool::Outcome::Error(body) = &outcome {
                tracing::warn!(function = %self.spec.function, queue = %self.spec.queue, messages = batch.len(), error = %String::from_utf8_lossy(body), "batch failed; returning it to the queue");
            }
            for d in &batch {
                settle(
                    self.config.broker_wait,
                    "basic.reject",
                    d.reject(BasicRejectOptions { requeue: true }),
                )
                .await?;
            }
            Ok(false)
        }
    }

    pub async fn status(&self) -> TriggerStatus {
        let (depth, consumers) = match self.queue_counts().await {
            Some((d, c)) => (Some(d), Some(c)),
            None => (None, None),
        };
        let c = &self.counters;
        TriggerStatus {
            function: self.spec.function.clone(),
            queue: self.spec.queue.clone(),
            depth,
            consumers,
            pollers: self.consuming(),
            wanted: *self.target.borrow(),
            max_pollers: self.spec.concurrency,
            batches: c.batches.load(Ordering::Relaxed),
            failed_batches: c.failed_batches.load(Ordering::Relaxed),
            messages: c.messages.load(Ordering::Relaxed),
            reconnects: c.reconnects.load(Ordering::Relaxed),
        }
    }

    /// Ready messages and consumers of the queue (a passive declare on a kept channel).
    async fn queue_counts(&self) -> Option<(u32, u32)> {
        let mut kept = self.counts.lock().await;
        let wait = self.config.broker_wait;
        if !kept
            .as_ref()
            .is_some_and(|(c, ch)| c.status().connected() && ch.status().connected())
        {
            let connection = broker::connect(
                &self.config,
                &format!("stratus-local depth {}", self.spec.queue),
            )
            .await
            .ok()?;
            let channel = within(wait, "opening a channel", connection.create_channel())
                .await
                .ok()?;
            *kept = Some((connection, channel));
        }
        let (_, channel) = kept.as_ref()?;
        let declare = channel.queue_declare(
            self.spec.queue.as_str().into(),
            QueueDeclareOptions {
                passive: true,
                ..Default::default()
            },
            FieldTable::default(),
        );
        match within(wait, "a passive queue.declare", declare).await {
            Ok(q) => Some((q.message_count(), q.consumer_count())),
            Err(_) => {
                *kept = None;
                None
            }
        }
    }
}

/// Settles deliveries within the broker wait. An acker whose channel already
/// died answers `false`: that batch is the broker's to redeliver, and the
/// poller must reconnect, so that is an error here too.
async fn settle(
    wait: Duration,
    what: &'static str,
    answer: impl std::future::Future<Output = lapin::Result<bool>>,
) -> anyhow::Result<()> {
    if within(wait, what, answer).await? {
        Ok(())
    } else {
        anyhow::bail!("{what}: the channel closed first; the broker redelivers the batch")
    }
}
