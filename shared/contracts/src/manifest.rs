//! The function manifest, read from `infra/manifest.json` (JSON so that Terraform's
//! `jsondecode` reads the same file): the functions, their triggers and limits, and
//! the long-running processes (host agents) the service framework supervises.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::LoadError;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    #[serde(default)]
    pub functions: Vec<Function>,
    #[serde(default)]
    pub processes: Vec<Process>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Function {
    pub name: String,
    /// The executable's file name (Lambda's `bootstrap` on AWS).
    pub binary: String,
    pub triggers: Vec<Trigger>,
    /// Lambda's function timeout, 1 to 900 seconds.
    #[serde(default = "default_timeout")]
    pub timeout_seconds: u32,
    /// Lambda's memory size, 128 to 10240 MB.
    #[serde(default = "default_memory")]
    pub memory_mb: u32,
    #[serde(default)]
    pub environment: BTreeMap<String, String>,
    /// Instances kept warm (provisioned concurrency); 0 starts them on demand.
    #[serde(default)]
    pub min_instances: u32,
    /// The most instances at once (reserved concurrency).
    #[serde(default = "default_max_instances")]
    pub max_instances: u32,
    /// The platform resources the function reaches. On AWS its IAM role
    /// grants exactly these (terraform/modules/function); the local runner
    /// gives every function the whole configuration.
    #[serde(default)]
    pub uses: Vec<Use>,
}

/// A platform resource a function reaches, and so may be granted on AWS.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Use {
    /// The data service's DynamoDB table and its indexes.
    Table,
    /// The broker: its credentials (a Secrets Manager secret), to publish or declare.
    Broker,
    /// Consul: its address and ACL token (SSM parameters).
    Consul,
    /// The key that seals secrets at rest: its KMS-encrypted data key (an SSM parameter), decrypted by KMS.
    SecretKey,
    /// Makes that data key once, when it is missing (KMS GenerateDataKeyWithoutPlaintext, SSM PutParameter).
    SecretKeyCreate,
    /// Writes the root admin's API keys to their Secrets Manager secret.
    AdminKeys,
}

fn default_timeout() -> u32 {
    30
}
fn default_memory() -> u32 {
    128
}
fn default_max_instances() -> u32 {
    10
}
fn default_batch_size() -> u32 {
    100
}
fn default_batching_window_ms() -> u32 {
    500
}
fn default_concurrency() -> u32 {
    1
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase", deny_unknown_fields)]
pub enum Trigger {
    /// Amazon MQ for RabbitMQ event source mapping.
    Queue {
        queue: String,
        /// Messages per invocation, 1 to 10,000 (AWS default 100).
        #[serde(default = "default_batch_size")]
        batch_size: u32,
        /// How long to gather a batch, 0 to 300,000 ms (AWS default 500 ms for MQ).
        #[serde(default = "default_batching_window_ms")]
        batching_window_ms: u32,
        /// Concurrent pollers for this trigger (AWS default 1 for RabbitMQ).
        #[serde(default = "default_concurrency")]
        concurrency: u32,
    },
    /// API Gateway HTTP API (payload format 2.0) route.
    Http {
        route: String,
        #[serde(default)]
        methods: Vec<String>,
    },
    /// EventBridge schedule: `rate(N second|seconds|minute|minutes|hour|hours)`.
    Schedule { expression: String },
    /// Invoked once, synchronously, when the platform starts, before it
    /// reports ready (bootstrap). The event is `event` plus `endpoint`, the
    /// CloudStack API's URL; a string under a key ending in `_file` is a path
    /// relative to the manifest's directory. A failure stops the start. On
    /// AWS Terraform invokes it once after apply (`aws_lambda_invocation.startup`,
    /// terraform/functions.tf), with `zone_file` replaced by the zone itself.
    Startup {
        #[serde(default)]
        event: serde_json::Map<String, serde_json::Value>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Process {
    pub name: String,
    pub binary: String,
    #[serde(default)]
    pub args: Vec<String>,
    #[serde(default)]
    pub environment: BTreeMap<String, String>,
    #[serde(default = "one")]
    pub min_instances: u32,
    #[serde(default = "one")]
    pub max_instances: u32,
}

fn one() -> u32 {
    1
}

impl Manifest {
    pub fn load(path: &Path) -> Result<Self, LoadError> {
        let m: Manifest = crate::load_json(path)?;
        m.validate(&path.display().to_string())?;
        Ok(m)
    }

    pub fn parse(file: &str, text: &str) -> Result<Self, LoadError> {
        let m: Manifest = crate::parse_json(file, text)?;
        m.validate(file)?;
        Ok(m)
    }

    pub fn function(&self, name: &str) -> Option<&Function> {
        self.functions.iter().find(|f| f.name == name)
    }

    fn validate(&self, file: &str) -> Result<(), LoadError> {
        let invalid = |field: String, message: String| LoadError::Invalid {
            file: file.to_string(),
            field,
            message,
        };
        let mut names = std::collections::HashSet::new();
        for (i, f) in self.functions.iter().enumerate() {
            let at = |field: &str| format!("functions[{i}] ({}).{field}", f.name);
            if f.name.is_empty()
                || !f
                    .name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            {
                return Err(invalid(
                    format!("functions[{i}].name"),
                    format!("{:?} is not a valid function name", f.name),
                ));
            }
            if !names.insert(f.name.clone()) {
                return Err(invalid(at("name"), "is used twice".into()));
            }
            if f.binary.is_empty() {
                return Err(invalid(at("binary"), "must not be empty".into()));
            }
            if !(1..=900).contains(&f.timeout_seconds) {
                return Err(invalid(
                    at("timeout_seconds"),
                    format!("{} is outside 1..=900", f.timeout_seconds),
                ));
            }
            if !(128..=10240).contains(&f.memory_mb) {
                return Err(invalid(
                    at("memory_mb"),
                    format!("{} is outside 128..=10240", f.memory_mb),
                ));
            }
            if f.max_instances == 0 || f.min_instances > f.max_instances {
                return Err(invalid(
                    at("max_instances"),
                    format!(
                        "needs 1 <= max_instances and min_instances <= max_instances (min {}, max {})",
                        f.min_instances, f.max_instances
                    ),
                ));
            }
            if f.triggers.is_empty() {
                return Err(invalid(at("triggers"), "needs at least one trigger".into()));
            }
            let distinct: std::collections::HashSet<_> = f.uses.iter().collect();
            if distinct.len() != f.uses.len() {
                return Err(invalid(at("uses"), "names a resource twice".into()));
            }
            for (j, t) in f.triggers.iter().enumerate() {
                let at = |field: &str| format!("functions[{i}] ({}).triggers[{j}].{field}", f.name);
                match t {
                    Trigger::Queue {
                        queue,
                        batch_size,
                        batching_window_ms,
                        concurrency,
                    } => {
                        if queue.is_empty() {
                            return Err(invalid(at("queue"), "must not be empty".into()));
                        }
                        if !(1..=10_000).contains(batch_size) {
                            return Err(invalid(
                                at("batch_size"),
                                format!("{batch_size} is outside 1..=10000"),
                            ));
                        }
                        if *batching_window_ms > 300_000 {
                            return Err(invalid(
                                at("batching_window_ms"),
                                format!("{batching_window_ms} is over 300000"),
                            ));
                        }
                        if *concurrency == 0 {
                            return Err(invalid(at("concurrency"), "must be at least 1".into()));
                        }
                    }
                    Trigger::Http { route, methods } => {
                        if !route.starts_with('/') {
                            return Err(invalid(
                                at("route"),
                                format!("{route:?} must start with /"),
                            ));
                        }
                        for m in methods {
                            if !["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"]
                                .contains(&m.as_str())
                            {
                                return Err(invalid(
                                    at("methods"),
                                    format!("{m:?} is not an HTTP method"),
                                ));
                            }
                        }
                    }
                    Trigger::Schedule { expression } => {
                        if let Err(e) = parse_rate(expression) {
                            return Err(invalid(at("expression"), e));
                        }
                    }
                    Trigger::Startup { event } => {
                        if event.contains_key("endpoint") {
                            return Err(invalid(
                                at("event.endpoint"),
                                "is set by the platform (the CloudStack API's URL)".into(),
                            ));
                        }
                    }
                }
            }
        }
        for (i, p) in self.processes.iter().enumerate() {
            let at = |field: &str| format!("processes[{i}] ({}).{field}", p.name);
            if p.name.is_empty() {
                return Err(invalid(
                    format!("processes[{i}].name"),
                    "must not be empty".into(),
                ));
            }
            if p.binary.is_empty() {
                return Err(invalid(at("binary"), "must not be empty".into()));
            }
            if p.max_instances == 0 || p.min_instances > p.max_instances {
                return Err(invalid(
                    at("max_instances"),
                    "needs 1 <= max_instances and min_instances <= max_instances".into(),
                ));
            }
        }
        Ok(())
    }
}

/// Parses an EventBridge `rate(N unit)` expression.
pub fn parse_rate(expression: &str) -> Result<std::time::Duration, String> {
    let inner = expression
        .strip_prefix("rate(")
        .and_then(|s| s.strip_suffix(')'))
        .ok_or_else(|| format!("{expression:?} is not rate(N unit)"))?;
    let (n, unit) = inner
        .trim()
        .split_once(' ')
        .ok_or_else(|| format!("{expression:?} is not rate(N unit)"))?;
    let n: u64 = n
        .parse()
        .map_err(|_| format!("{expression:?}: {n:?} is not a positive whole number"))?;
    if n == 0 {
        return Err(format!("{expression:?}: the rate must be at least 1"));
    }
    let seconds = match (unit.trim(), n) {
        // On AWS a schedule in seconds runs as a one-minute rule whose
        // invocation repeats the tick every N s (terraform/manifest.tf), so N
        // must divide the minute.
        ("seconds", _) if n >= 60 || 60 % n != 0 => {
            return Err(format!(
                "{expression:?}: a rate in seconds must divide a minute (1, 2, 3, 4, 5, 6, 10, 12, 15, 20 or 30); write a longer one in minutes"
            ));
        }
        ("second", 1) | ("seconds", 2..) => 1,
        ("minute", 1) | ("minutes", 2..) => 60,
        ("hour", 1) | ("hours", 2..) => 3600,
        ("day", 1) | ("days", 2..) => 86_400,
        _ => {
            return Err(format!(
                "{expression:?}: unit must be second(s), minute(s), hour(s) or day(s), singular only for 1"
            ));
        }
    };
    Ok(std::time::Duration::from_secs(n * seconds))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repository_manifest_loads() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../infra/manifest.json");
        let m = Manifest::load(&path).unwrap();
        assert!(m.function("diag").is_some());
    }

    #[test]
    fn defaults_are_those_of_aws() {
        let m = Manifest::parse("m.json", r#"{"functions":[{"name":"f","binary":"b","triggers":[{"type":"queue","queue":"q"}]}]}"#).unwrap();
        let f = &m.functions[0];
        assert_eq!(f.timeout_seconds, 30);
        assert_eq!(
            f.triggers[0],
            Trigger::Queue {
                queue: "q".into(),
                batch_size: 100,
                batching_window_ms: 500,
                concurrency: 1
            }
        );
    }

    #[test]
    fn errors_name_the_file_and_field() {
        let cases = [
            (
                r#"{"functions":[{"name":"f","binary":"b","timeout_seconds":901,"triggers":[{"type":"queue","queue":"q"}]}]}"#,
                "functions[0] (f).timeout_seconds",
            ),
            (
                r#"{"functions":[{"name":"f","binary":"b","triggers":[{"type":"queue","queue":"q","batch_size":0}]}]}"#,
                "triggers[0].batch_size",
            ),
            (
                r#"{"functions":[{"name":"f","binary":"b","triggers":[{"type":"schedule","expression":"rate(1 minutes)"}]}]}"#,
                "triggers[0].expression",
            ),
            (
                r#"{"functions":[{"name":"f","binary":"b","triggers":[{"type":"http","route":"x"}]}]}"#,
                "triggers[0].route",
            ),
            (
                r#"{"functions":[{"name":"f","binary":"b","triggers":[]}]}"#,
                "(f).triggers",
            ),
            (
                r#"{"functions":[{"name":"f","binary":"b","triggers":[{"type":"carrier-pigeon"}]}]}"#,
                "line 1",
            ),
            (
                r#"{"functions":[{"name":"f","binary":"b","tiemout_seconds":3,"triggers":[]}]}"#,
                "tiemout_seconds",
            ),
        ];
        for (text, needle) in cases {
            let e = Manifest::parse("infra/m.json", text)
                .unwrap_err()
                .to_string();
            assert!(
                e.starts_with("infra/m.json") && e.contains(needle),
                "{e} lacks {needle}"
            );
        }
    }

    #[test]
    fn rates() {
        assert_eq!(parse_rate("rate(1 second)").unwrap().as_secs(), 1);
        assert_eq!(parse_rate("rate(5 minutes)").unwrap().as_secs(), 300);
        assert!(parse_rate("rate(0 seconds)").is_err());
        assert_eq!(parse_rate("rate(30 seconds)").unwrap().as_secs(), 30);
        for bad in ["rate(7 seconds)", "rate(60 seconds)", "rate(120 seconds)"] {
            assert!(
                parse_rate(bad).unwrap_err().contains("divide a minute"),
                "{bad}"
            );
        }
        assert!(parse_rate("cron(0 * * * ? *)").is_err());
    }
}
