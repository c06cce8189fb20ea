//! The host agent, one per hypervisor host:
//!
//! - [`heartbeat`]: registers the host in Consul and keeps its TTL check passing;
//! - [`agent`]: consumes the host's queue `stratus.agent.<host>`, runs each
//!   saga step's command on the host's [`driver::Driver`], in order per VM,
//!   and answers with `agent.step-result` and `agent.vm-report` events;
//! - [`driver`]: the interface to the host's hypervisor;
//! - [`sim`]: the simulator driver (CloudStack's simulator), kept apart from
//!   the production path.

pub mod agent;
pub mod driver;
pub mod heartbeat;
pub mod sim;

pub use agent::Agent;
pub use driver::{Driver, DriverError};
pub use heartbeat::Heartbeat;
