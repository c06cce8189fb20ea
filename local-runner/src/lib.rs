//! The Stratus local runner as a library: the command line in `main.rs` and
//! the tests use it; it links no function code.

pub mod backoff;
pub mod consul;
pub mod gateway;
pub mod mq_trigger;
pub mod package;
pub mod pool;
pub mod runner;
pub mod runtime_api;
pub mod schedule;
pub mod secrets;
pub mod status;
pub mod supervisor;
