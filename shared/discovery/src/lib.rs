//! Consul, as Stratus uses it: service discovery, configuration in KV, locks.
//!
//! [`Client`] is a thin typed client over Consul's HTTP API (`/v1`). rs-consul
//! does not cover agent service registration or TTL check-pass (see
//! `../shared/reference/lambda-rabbitmq-consul.md` §4), so this is our own,
//! over the one HTTP stack the workspace already uses (reqwest). What is
//! here so far: KV (get, list, put with `cas`/`acquire`/`release`/`flags`,
//! delete), agent service registration with TTL checks and check
//! pass/warn/fail, `catalog/services`, `health/service` (`?passing`), all
//! with blocking queries (`index`, `wait`, `X-Consul-Index`, an HTTP timeout
//! longer than `wait` plus Consul's jitter), the `X-Consul-Token` header,
//! and sessions (create with TTL, lock-delay and behaviour; renew, destroy,
//! info) with the locks they hold (`lock_acquire`, `lock_release`).

pub mod client;
pub mod contract;
pub mod settings;

pub use client::{
    AgentService, Behavior, CheckDefinition, Client, ConsulError, HealthCheck, KvPair, PutOptions,
    QueryOptions, Response, ServiceEntry, ServiceRegistration, SessionInfo, SessionOptions,
    backoff,
};
