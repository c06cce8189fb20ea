//! Structured logs: JSON lines with the current span's fields (request id,
//! job id, message id), so every line of a message's handling names them.

use tracing_subscriber::EnvFilter;

/// Initialises JSON logging to stderr; `RUST_LOG` filters (default `info`).
/// Safe to call more than once.
pub fn init() {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,lapin=warn"));
    let _ = tracing_subscriber::fmt()
        .json()
        .with_env_filter(filter)
        .with_current_span(true)
        .with_span_list(true)
        .with_writer(std::io::stderr)
        .try_init();
}
