//! Compute: placement of VMs on hosts by CPU, memory, tags and health, with capacity held and released (saga steps), and reconciliation of the host agents' VM reports.

use std::sync::Arc;

use stratus_messaging::Handlers;
use stratus_store::Store;

/// The consumer name in handled-message records.
pub const CONSUMER: &str = "compute";

pub fn handlers(_store: Arc<Store>) -> Handlers {
    Handlers::new()
}
