//! The environment contract: every Stratus process (function, host agent, local
//! runner) reads its settings from these variables and nowhere else.
//!
//! | variable | meaning | default |
//! |---|---|---|
//! | `STRATUS_AMQP_URL` | broker URL without vhost | `amqp://guest:guest@127.0.0.1:5672` |
//! | `STRATUS_AMQP_VHOST` | broker virtual host | `/` |
//! | `STRATUS_STORE` | `sqlite:PATH` or `dynamodb:URL` | `sqlite:$STRATUS_HOME/stratus.db` |
//! | `STRATUS_TABLE_PREFIX` | prefix of every table name | `stratus_` |
//! | `CONSUL_HTTP_ADDR` | Consul agent address; unset means the local runner's stand-in | unset |
//! | `STRATUS_HOME` | state directory | `$HOME/.stratus` |
//! | `STRATUS_EVENTS_EXCHANGE` | the external CloudStack event exchange | `cloudstack-events` |
//! | `STRATUS_SECRET_KEY` | the key secrets are sealed with: `file:PATH` or `kms:BLOB` | `file:$STRATUS_HOME/secret.key` |

use std::path::PathBuf;

pub const ENV_AMQP_URL: &str = "STRATUS_AMQP_URL";
pub const ENV_AMQP_VHOST: &str = "STRATUS_AMQP_VHOST";
pub const ENV_STORE: &str = "STRATUS_STORE";
pub const ENV_TABLE_PREFIX: &str = "STRATUS_TABLE_PREFIX";
pub const ENV_CONSUL_HTTP_ADDR: &str = "CONSUL_HTTP_ADDR";
pub const ENV_HOME: &str = "STRATUS_HOME";
pub const ENV_EVENTS_EXCHANGE: &str = "STRATUS_EVENTS_EXCHANGE";
pub const ENV_SECRET_KEY: &str = "STRATUS_SECRET_KEY";

pub const DEFAULT_AMQP_URL: &str = "amqp://guest:guest@127.0.0.1:5672";

/// Where the data service keeps its objects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreSelection {
    /// An embedded SQLite file shared by every function process.
    Sqlite(PathBuf),
    /// A DynamoDB endpoint (AWS, or moto's server in tests).
    DynamoDb(String),
}

impl std::str::FromStr for StoreSelection {
    type Err = ConfigError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if let Some(path) = s.strip_prefix("sqlite:") {
            if path.is_empty() {
                return Err(ConfigError::invalid(
                    ENV_STORE,
                    s,
                    "sqlite: needs a file path",
                ));
            }
            Ok(Self::Sqlite(PathBuf::from(path)))
        } else if let Some(url) = s.strip_prefix("dynamodb:") {
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                return Err(ConfigError::invalid(
                    ENV_STORE,
                    s,
                    "dynamodb: needs an http(s) URL",
                ));
            }
            Ok(Self::DynamoDb(url.to_string()))
        } else {
            Err(ConfigError::invalid(
                ENV_STORE,
                s,
                "expected sqlite:PATH or dynamodb:URL",
            ))
        }
    }
}

impl std::fmt::Display for StoreSelection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Sqlite(p) => write!(f, "sqlite:{}", p.display()),
            Self::DynamoDb(u) => write!(f, "dynamodb:{u}"),
        }
    }
}

/// Where the key that seals secrets at rest (users' API secret keys) comes from.
#[derive(Clone, PartialEq, Eq)]
pub enum SecretKeySource {
    /// A 32-byte key in a 0600 file (made on first use).
    File(PathBuf),
    /// A data key encrypted by KMS (its base64 `CiphertextBlob`), decrypted once per process.
    Kms(String),
}

impl std::fmt::Debug for SecretKeySource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::File(p) => write!(f, "File({})", p.display()),
            // The blob reveals nothing without KMS, but it need not be printed either.
            Self::Kms(blob) => write!(f, "Kms({} chars)", blob.len()),
        }
    }
}

impl SecretKeySource {
    fn parse(s: &str) -> Result<Self, ConfigError> {
        if let Some(path) = s.strip_prefix("file:") {
            if path.is_empty() {
                return Err(ConfigError::invalid(
                    ENV_SECRET_KEY,
                    s,
                    "file: needs a path",
                ));
            }
            Ok(Self::File(PathBuf::from(path)))
        } else if let Some(blob) = s.strip_prefix("kms:") {
            if blob.is_empty() {
                return Err(ConfigError::invalid(
                    ENV_SECRET_KEY,
                    "kms:",
                    "kms: needs the data key's CiphertextBlob (base64)",
                ));
            }
            Ok(Self::Kms(blob.to_string()))
        } else {
            // Never echo the value: it might be a key pasted in by mistake.
            Err(ConfigError::invalid(
                ENV_SECRET_KEY,
                "(not shown)",
                "expected file:PATH or kms:CIPHERTEXT_BLOB",
            ))
        }
    }

    /// The value of `STRATUS_SECRET_KEY` that names this source.
    pub fn to_env(&self) -> String {
        match self {
            Self::File(p) => format!("file:{}", p.display()),
            Self::Kms(blob) => format!("kms:{blob}"),
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{variable}={value:?}: {message}")]
pub struct ConfigError {
    pub variable: &'static str,
    pub value: String,
    pub message: String,
}

impl ConfigError {
    fn invalid(variable: &'static str, value: &str, message: &str) -> Self {
        Self {
            variable,
            value: value.to_string(),
            message: message.to_string(),
        }
    }
}

/// Every setting a Stratus process takes from its environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub amqp_url: String,
    pub amqp_vhost: String,
    pub store: StoreSelection,
    pub table_prefix: String,
    pub consul_http_addr: Option<String>,
    pub home: PathBuf,
    pub events_exchange: String,
    pub secret_key: SecretKeySource,
}

impl Config {
    /// Reads the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|k| std::env::var(k).ok())
    }

    /// Reads settings through `lookup`, so tests need not touch the process environment.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let get = |k: &str| lookup(k).filter(|v| !v.is_empty());
        let home = match get(ENV_HOME) {
            Some(h) => PathBuf::from(h),
            None => match get("HOME") {
                Some(h) => PathBuf::from(h).join(".stratus"),
                None => PathBuf::from(".stratus"),
            },
        };
        let amqp_url = get(ENV_AMQP_URL).unwrap_or_else(|| DEFAULT_AMQP_URL.to_string());
        if !(amqp_url.starts_with("amqp://") || amqp_url.starts_with("amqps://")) {
            return Err(ConfigError::invalid(
                ENV_AMQP_URL,
                &amqp_url,
                "expected amqp:// or amqps://",
            ));
        }
        let amqp_url = amqp_url.trim_end_matches('/').to_string();
        if amqp_url
            .split("://")
            .nth(1)
            .is_some_and(|rest| rest.contains('/'))
        {
            return Err(ConfigError::invalid(
                ENV_AMQP_URL,
                &amqp_url,
                "give the vhost in STRATUS_AMQP_VHOST, not in the URL",
            ));
        }
        let store = match get(ENV_STORE) {
            Some(s) => s.parse()?,
            None => StoreSelection::Sqlite(home.join("stratus.db")),
        };
        let secret_key = match get(ENV_SECRET_KEY) {
            Some(s) => SecretKeySource::parse(&s)?,
            None => SecretKeySource::File(home.join("secret.key")),
        };
        Ok(Self {
            amqp_url,
            amqp_vhost: get(ENV_AMQP_VHOST).unwrap_or_else(|| "/".to_string()),
            store,
            table_prefix: get(ENV_TABLE_PREFIX).unwrap_or_else(|| "stratus_".to_string()),
            consul_http_addr: get(ENV_CONSUL_HTTP_ADDR),
            home,
            events_exchange: get(ENV_EVENTS_EXCHANGE)
                .unwrap_or_else(|| crate::names::DEFAULT_EVENTS_EXCHANGE.to_string()),
            secret_key,
        })
    }

    /// The full AMQP URI, with the vhost percent-encoded as AMQP URIs require.
    pub fn amqp_uri(&self) -> String {
        format!(
            "{}/{}",
            self.amqp_url,
            percent_encode_vhost(&self.amqp_vhost)
        )
    }

    /// The variables to hand to a child process so that it reads this same configuration.
    pub fn to_env(&self) -> Vec<(&'static str, String)> {
        let mut env = vec![
            (ENV_AMQP_URL, self.amqp_url.clone()),
            (ENV_AMQP_VHOST, self.amqp_vhost.clone()),
            (ENV_STORE, self.store.to_string()),
            (ENV_TABLE_PREFIX, self.table_prefix.clone()),
            (ENV_HOME, self.home.display().to_string()),
            (ENV_EVENTS_EXCHANGE, self.events_exchange.clone()),
            (ENV_SECRET_KEY, self.secret_key.to_env()),
        ];
        if let Some(addr) = &self.consul_http_addr {
            env.push((ENV_CONSUL_HTTP_ADDR, addr.clone()));
        }
        env
    }
}

fn percent_encode_vhost(vhost: &str) -> String {
    let mut out = String::with_capacity(vhost.len());
    for b in vhost.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn config(vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::from_lookup(|k| map.get(k).cloned())
    }

    #[test]
    fn defaults_follow_home() {
        let c = config(&[("HOME", "/home/u")]).unwrap();
        assert_eq!(c.home, PathBuf::from("/home/u/.stratus"));
        assert_eq!(
            c.store,
            StoreSelection::Sqlite("/home/u/.stratus/stratus.db".into())
        );
        assert_eq!(c.amqp_uri(), "amqp://guest:guest@127.0.0.1:5672/%2F");
        assert_eq!(c.events_exchange, "cloudstack-events");
        assert_eq!(c.consul_http_addr, None);
        assert_eq!(
            c.secret_key,
            SecretKeySource::File("/home/u/.stratus/secret.key".into())
        );
    }

    #[test]
    fn explicit_values_are_read() {
        let c = config(&[
            ("STRATUS_HOME", "/var/lib/stratus"),
            ("STRATUS_AMQP_URL", "amqps://u:p@b.mq.example:5671/"),
            ("STRATUS_AMQP_VHOST", "test-1"),
            ("STRATUS_STORE", "dynamodb:http://127.0.0.1:5000"),
            ("CONSUL_HTTP_ADDR", "127.0.0.1:8500"),
            ("STRATUS_SECRET_KEY", "kms:AQIDAHh0ZXN0"),
        ])
        .unwrap();
        assert_eq!(c.secret_key, SecretKeySource::Kms("AQIDAHh0ZXN0".into()));
        assert_eq!(c.amqp_uri(), "amqps://u:p@b.mq.example:5671/test-1");
        assert_eq!(
            c.store,
            StoreSelection::DynamoDb("http://127.0.0.1:5000".into())
        );
        assert_eq!(c.consul_http_addr.as_deref(), Some("127.0.0.1:8500"));
        let round_trip = config(
            &c.to_env()
                .iter()
                .map(|(k, v)| (*k, v.as_str()))
                .collect::<Vec<_>>(),
        )
        .unwrap();
        assert_eq!(round_trip, c);
    }

    #[test]
    fn bad_values_name_the_variable() {
        let e = config(&[("STRATUS_STORE", "postgres://x")]).unwrap_err();
        assert_eq!(e.variable, "STRATUS_STORE");
        let e = config(&[("STRATUS_AMQP_URL", "http://x")]).unwrap_err();
        assert_eq!(e.variable, "STRATUS_AMQP_URL");
        let e = config(&[("STRATUS_AMQP_URL", "amqp://h:5672/vh")]).unwrap_err();
        assert!(e.message.contains("STRATUS_AMQP_VHOST"));
        // A key pasted in by mistake is refused, and not echoed.
        let e = config(&[("STRATUS_SECRET_KEY", "c2VjcmV0LWtleQ==")]).unwrap_err();
        assert_eq!(e.variable, "STRATUS_SECRET_KEY");
        assert!(!e.to_string().contains("c2VjcmV0"), "{e}");
        let e = config(&[("STRATUS_SECRET_KEY", "file:")]).unwrap_err();
        assert_eq!(e.variable, "STRATUS_SECRET_KEY");
    }
}
