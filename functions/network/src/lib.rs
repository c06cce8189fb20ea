//! Networking: isolated guest networks, VLANs from the zone's range, addresses and MACs for VM NICs (saga steps allocate-nics and release-nics).

use std::sync::Arc;

use stratus_messaging::Handlers;
use stratus_store::Store;

/// The consumer name in handled-message records.
pub const CONSUMER: &str = "network";

pub fn handlers(_store: Arc<Store>) -> Handlers {
    Handlers::new()
}
