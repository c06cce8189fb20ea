//! Stratus messaging on RabbitMQ.
//!
//! - [`envelope`]: the message envelope in AMQP properties and headers.
//! - [`rmq_event`]: the `aws:rmq` event, decoded leniently and rendered exactly.
//! - [`broker`]: connecting and declaring the topology.
//! - [`publisher`]: persistent, confirmed, mandatory-aware publishing.
//! - [`harness`]: typed handlers, retry through delay tiers, parking.
//! - [`function`]: the thin `lambda_runtime` entry point of a queue-triggered function.

pub mod broker;
pub mod envelope;
pub mod function;
pub mod harness;
pub mod logging;
pub mod outbox;
pub mod publisher;
pub mod rmq_event;
pub mod schedule;
pub mod step;

pub use envelope::Envelope;
pub use harness::{Effects, HandlerError, Handlers, emit};
