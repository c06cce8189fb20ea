//! Contracts shared by every Stratus component.
//!
//! - [`config`]: the environment every process reads, as one typed struct.
//! - [`names`]: exchanges, queues, routing keys and message types, one pattern.
//! - [`manifest`]: the functions and supervised processes to run (`infra/manifest.json`).
//! - [`topology`]: exchanges, queues and bindings (`infra/topology.json`).
//! - [`message_types`]: the registry of every message type on the broker.

pub mod config;
pub mod manifest;
pub mod message_types;
pub mod names;
pub mod settings;
pub mod simulator;
pub mod topology;

/// A JSON document failed to load: the file and, where serde knows it, the field.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("{file}: cannot read: {source}")]
    Read {
        file: String,
        source: std::io::Error,
    },
    #[error("{file}: line {line}, column {column}: {message}")]
    Parse {
        file: String,
        line: usize,
        column: usize,
        message: String,
    },
    #[error("{file}: {field}: {message}")]
    Invalid {
        file: String,
        field: String,
        message: String,
    },
}

pub(crate) fn load_json<T: serde::de::DeserializeOwned>(
    path: &std::path::Path,
) -> Result<T, LoadError> {
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| LoadError::Read {
        file: file.clone(),
        source,
    })?;
    parse_json(&file, &text)
}

pub(crate) fn parse_json<T: serde::de::DeserializeOwned>(
    file: &str,
    text: &str,
) -> Result<T, LoadError> {
    serde_json::from_str(text).map_err(|e| LoadError::Parse {
        file: file.to_string(),
        line: e.line(),
        column: e.column(),
        message: e.to_string(),
    })
}
