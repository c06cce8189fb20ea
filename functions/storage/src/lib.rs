//! Storage: VM volumes on primary storage pools with the pools' capacity accounted (saga steps allocate-volumes and release-volumes).

use std::sync::Arc;

use stratus_messaging::Handlers;
use stratus_store::Store;

/// The consumer name in handled-message records.
pub const CONSUMER: &str = "storage";

pub fn handlers(_store: Arc<Store>) -> Handlers {
    Handlers::new()
}
