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
//! | `CONSUL_HTTP_TOKEN` | the ACL token sent to Consul (`X-Consul-Token`); the local runner hands its stand-in's token to what it starts | unset |
//! | `STRATUS_HOME` | state directory | `$HOME/.stratus` |
//! | `STRATUS_EVENTS_EXCHANGE` | the external CloudStack event exchange | `cloudstack-events` |
//! | `STRATUS_BROKER_WAIT_MS` | the longest any one wait on the broker may take (connecting, a confirm, an ack) | `2000` |
//! | `STRATUS_AMQP_HEARTBEAT` | AMQP heartbeat asked for, in seconds: a silent broker is given up after twice this | `10` |
//! | `STRATUS_SECRET_KEY` | the key secrets are sealed with: `file:PATH` or `kms:BLOB` | `file:$STRATUS_HOME/secret.key` |
//! | `STRATUS_AMQP_CREDENTIALS` | on AWS: `secretsmanager:ARN`, the broker's user and password, put into `STRATUS_AMQP_URL` | unset |
//!
//! On AWS, `CONSUL_HTTP_ADDR`, `CONSUL_HTTP_TOKEN` and `STRATUS_SECRET_KEY` may
//! be `ssm:NAME` references: a process resolves them (and
//! `STRATUS_AMQP_CREDENTIALS`) once at start, with
//! `stratus_secrets::aws_refs::config_from_env`, before this module reads them.

use std::path::PathBuf;

pub const ENV_AMQP_URL: &str = "STRATUS_AMQP_URL";
pub const ENV_AMQP_VHOST: &str = "STRATUS_AMQP_VHOST";
pub const ENV_STORE: &str = "STRATUS_STORE";
pub const ENV_TABLE_PREFIX: &str = "STRATUS_TABLE_PREFIX";
pub const ENV_CONSUL_HTTP_ADDR: &str = "CONSUL_HTTP_ADDR";
pub const ENV_CONSUL_HTTP_TOKEN: &str = "CONSUL_HTTP_TOKEN";
pub const ENV_HOME: &str = "STRATUS_HOME";
pub const ENV_EVENTS_EXCHANGE: &str = "STRATUS_EVENTS_EXCHANGE";
pub const ENV_BROKER_WAIT_MS: &str = "STRATUS_BROKER_WAIT_MS";
pub const ENV_AMQP_HEARTBEAT: &str = "STRATUS_AMQP_HEARTBEAT";

/// The longest any one wait on the broker may take. A healthy broker confirms
/// a persistent publish to a quorum queue in 0.7 ms at the median and 1-4 ms
/// at the 99th percentile here (`stratus-bench confirm-latency`), and a broker
/// that restarts closes its connections at once; so a wait that reaches 2 s
/// (500 times the p99) means a broker that has stalled (paused, partitioned,
/// blocked by a resource alarm), and the caller gives the link up. It keeps an
/// API request that publishes well inside a client's patience and the
/// function's 30 s timeout.
pub const DEFAULT_BROKER_WAIT: std::time::Duration = std::time::Duration::from_millis(2000);
/// The AMQP heartbeat asked for: lapin gives up a connection that has heard
/// nothing for twice this, so a paused broker is noticed within 20 s (the
/// broker's own default of 60 s would take two minutes).
pub const DEFAULT_AMQP_HEARTBEAT_S: u16 = 10;
pub const ENV_SECRET_KEY: &str = "STRATUS_SECRET_KEY";
pub const ENV_AMQP_CREDENTIALS: &str = "STRATUS_AMQP_CREDENTIALS";

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

/// A secret setting (a token): never in `Debug` output, and with no
/// `Display`, so that it cannot reach a log line by accident.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret itself, for the one place that sends it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(<redacted>)")
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

/// Every setting a Stratus process takes from its environment. Its `Debug`
/// hides the broker password.
#[derive(Clone, PartialEq, Eq)]
pub struct Config {
    pub amqp_url: String,
    pub amqp_vhost: String,
    pub store: StoreSelection,
    pub table_prefix: String,
    pub consul_http_addr: Option<String>,
    /// `CONSUL_HTTP_TOKEN`, passed to Consul unchanged.
    pub consul_http_token: Option<Secret>,
    pub home: PathBuf,
    pub events_exchange: String,
    /// See [`DEFAULT_BROKER_WAIT`].
    pub broker_wait: std::time::Duration,
    /// See [`DEFAULT_AMQP_HEARTBEAT_S`].
    pub amqp_heartbeat_s: u16,
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
                &redacted_url(&amqp_url),
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
                &redacted_url(&amqp_url),
                "give the vhost in STRATUS_AMQP_VHOST, not in the URL",
            ));
        }
        let store = match get(ENV_STORE) {
            Some(s) => s.parse()?,
            None => StoreSelection::Sqlite(home.join("stratus.db")),
        };
        let number = |variable: &'static str| -> Result<Option<u64>, ConfigError> {
            get(variable)
                .map(|v| {
                    v.parse::<u64>()
                        .ok()
                        .filter(|n| *n > 0 && *n <= u16::MAX as u64)
                        .ok_or_else(|| {
                            ConfigError::invalid(
                                variable,
                                &v,
                                "expected a whole number from 1 to 65535",
                            )
                        })
                })
                .transpose()
        };
        let broker_wait = number(ENV_BROKER_WAIT_MS)?
            .map(std::time::Duration::from_millis)
            .unwrap_or(DEFAULT_BROKER_WAIT);
        let amqp_heartbeat_s = number(ENV_AMQP_HEARTBEAT)?
            .map(|n| n as u16)
            .unwrap_or(DEFAULT_AMQP_HEARTBEAT_S);
        let secret_key = match get(ENV_SECRET_KEY) {
            Some(s) => SecretKeySource::parse(&s)?,
            None => SecretKeySource::File(home.join("secret.key")),
        };
        Ok(Self {
            broker_wait,
            amqp_heartbeat_s,
            amqp_url,
            amqp_vhost: get(ENV_AMQP_VHOST).unwrap_or_else(|| "/".to_string()),
            store,
            table_prefix: get(ENV_TABLE_PREFIX).unwrap_or_else(|| "stratus_".to_string()),
            consul_http_addr: get(ENV_CONSUL_HTTP_ADDR),
            consul_http_token: get(ENV_CONSUL_HTTP_TOKEN).map(Secret),
            home,
            events_exchange: get(ENV_EVENTS_EXCHANGE)
                .unwrap_or_else(|| crate::names::DEFAULT_EVENTS_EXCHANGE.to_string()),
            secret_key,
        })
    }

    /// The full AMQP URI, with the vhost percent-encoded as AMQP URIs require,
    /// and the heartbeat asked for.
    pub fn amqp_uri(&self) -> String {
        format!(
            "{}/{}?heartbeat={}",
            self.amqp_url,
            percent_encode_vhost(&self.amqp_vhost),
            self.amqp_heartbeat_s
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
            (ENV_BROKER_WAIT_MS, self.broker_wait.as_millis().to_string()),
            (ENV_AMQP_HEARTBEAT, self.amqp_heartbeat_s.to_string()),
            (ENV_SECRET_KEY, self.secret_key.to_env()),
        ];
        if let Some(addr) = &self.consul_http_addr {
            env.push((ENV_CONSUL_HTTP_ADDR, addr.clone()));
        }
        if let Some(token) = &self.consul_http_token {
            env.push((ENV_CONSUL_HTTP_TOKEN, token.expose().to_string()));
        }
        env
    }
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("amqp_url", &redacted_url(&self.amqp_url))
            .field("amqp_vhost", &self.amqp_vhost)
            .field("store", &self.store)
            .field("table_prefix", &self.table_prefix)
            .field("consul_http_addr", &self.consul_http_addr)
            .field("home", &self.home)
            .field("events_exchange", &self.events_exchange)
            .field("broker_wait", &self.broker_wait)
            .field("amqp_heartbeat_s", &self.amqp_heartbeat_s)
            .field("consul_http_token", &self.consul_http_token)
            .field("secret_key", &self.secret_key)
            .finish()
    }
}

/// A broker URL with its password hidden, for messages and logs.
pub fn redacted_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let creds = &url[s + 3..at];
            let user = creds.split(':').next().unwrap_or("");
            format!("{}{}:***{}", &url[..s + 3], user, &url[at..])
        }
        _ => url.to_string(),
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
        assert_eq!(
            c.amqp_uri(),
            "amqp://guest:guest@127.0.0.1:5672/%2F?heartbeat=10"
        );
        assert_eq!(c.broker_wait, DEFAULT_BROKER_WAIT);
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
            ("CONSUL_HTTP_TOKEN", "b1gs3cr3t-token"),
            ("STRATUS_BROKER_WAIT_MS", "750"),
            ("STRATUS_AMQP_HEARTBEAT", "5"),
            ("STRATUS_SECRET_KEY", "kms:AQIDAHh0ZXN0"),
        ])
        .unwrap();
        assert_eq!(
            c.amqp_uri(),
            "amqps://u:p@b.mq.example:5671/test-1?heartbeat=5"
        );
        assert_eq!(c.broker_wait, std::time::Duration::from_millis(750));
        assert_eq!(c.secret_key, SecretKeySource::Kms("AQIDAHh0ZXN0".into()));
        assert_eq!(
            c.store,
            StoreSelection::DynamoDb("http://127.0.0.1:5000".into())
        );
        assert_eq!(c.consul_http_addr.as_deref(), Some("127.0.0.1:8500"));
        assert_eq!(
            c.consul_http_token.as_ref().map(Secret::expose),
            Some("b1gs3cr3t-token")
        );
        // The token is never in the configuration's Debug output (a logged config).
        let debug = format!("{c:?}");
        assert!(
            !debug.contains("b1gs3cr3t") && debug.contains("<redacted>"),
            "{debug}"
        );
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
    fn a_refused_broker_url_hides_its_password() {
        for url in ["http://u:s3cret@h", "amqp://u:s3cret@h:5672/vh"] {
            let e = config(&[("STRATUS_AMQP_URL", url)]).unwrap_err();
            assert!(!e.to_string().contains("s3cret"), "{e}");
            assert!(!format!("{e:?}").contains("s3cret"), "{e:?}");
        }
    }

    #[test]
    fn debug_output_hides_the_broker_password() {
        let c = config(&[("STRATUS_AMQP_URL", "amqp://stratus:s3cret@127.0.0.1:5672")]).unwrap();
        let shown = format!("{c:?}");
        assert!(!shown.contains("s3cret"), "{shown}");
        assert!(
            shown.contains("amqp://stratus:***@127.0.0.1:5672"),
            "{shown}"
        );
    }

    #[test]
    fn bad_values_name_the_variable() {
        let e = config(&[("STRATUS_STORE", "postgres://x")]).unwrap_err();
        assert_eq!(e.variable, "STRATUS_STORE");
        let e = config(&[("STRATUS_AMQP_URL", "http://x")]).unwrap_err();
        assert_eq!(e.variable, "STRATUS_AMQP_URL");
        for bad in ["0", "-1", "soon", "70000"] {
            let e = config(&[("STRATUS_BROKER_WAIT_MS", bad)]).unwrap_err();
            assert_eq!(e.variable, "STRATUS_BROKER_WAIT_MS");
            let e = config(&[("STRATUS_AMQP_HEARTBEAT", bad)]).unwrap_err();
            assert_eq!(e.variable, "STRATUS_AMQP_HEARTBEAT");
        }
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
