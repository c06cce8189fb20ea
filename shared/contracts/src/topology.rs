//! The broker topology, read from `infra/topology.json`: exchanges, queues with
//! every argument stated, bindings, delay tiers, and per-instance queue templates.
//! The messaging crate declares it; Terraform reads the same file.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::{LoadError, names};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Topology {
    pub exchanges: Vec<Exchange>,
    /// Arguments every durable Stratus queue gets unless it overrides them.
    pub queue_defaults: QueueArguments,
    pub retry: Retry,
    pub queues: Vec<Queue>,
    /// Queues made per instance at run time (`{instance}` is replaced).
    #[serde(default)]
    pub instance_queues: Vec<Queue>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Exchange {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: ExchangeKind,
    /// Publishes to this exchange are `mandatory`: an unroutable message is an error.
    pub mandatory: bool,
    /// Set for the external event exchange, whose name the environment may override.
    #[serde(default)]
    pub role: Option<ExchangeRole>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ExchangeKind {
    Topic,
    Direct,
    Fanout,
}

impl ExchangeKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Topic => "topic",
            Self::Direct => "direct",
            Self::Fanout => "fanout",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ExchangeRole {
    ExternalEvents,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum QueueType {
    Quorum,
    Classic,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueueArguments {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue_type: Option<QueueType>,
    /// Deliveries after which the broker dead-letters a message (quorum queues).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delivery_limit: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dead_letter_exchange: Option<String>,
    /// `at-least-once` (needs `overflow: reject-publish`) or `at-most-once`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dead_letter_strategy: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub overflow: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message_ttl_ms: Option<u64>,
}

impl QueueArguments {
    /// These arguments, with gaps filled from `defaults`.
    pub fn over(&self, defaults: &QueueArguments) -> QueueArguments {
        QueueArguments {
            queue_type: self.queue_type.or(defaults.queue_type),
            delivery_limit: self.delivery_limit.or(defaults.delivery_limit),
            dead_letter_exchange: self
                .dead_letter_exchange
                .clone()
                .or_else(|| defaults.dead_letter_exchange.clone()),
            dead_letter_strategy: self
                .dead_letter_strategy
                .clone()
                .or_else(|| defaults.dead_letter_strategy.clone()),
            overflow: self.overflow.clone().or_else(|| defaults.overflow.clone()),
            message_ttl_ms: self.message_ttl_ms.or(defaults.message_ttl_ms),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Retry {
    /// Attempts in all, the first included; then the message is parked.
    pub max_attempts: u32,
    /// Delay tiers in order: attempt n+1 waits in tier min(n, last).
    pub tiers: Vec<DelayTier>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DelayTier {
    pub name: String,
    pub delay_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Queue {
    pub name: String,
    #[serde(default)]
    pub arguments: QueueArguments,
    #[serde(default)]
    pub bindings: Vec<Binding>,
    /// Work queues take delayed retries back through the requeue exchange.
    #[serde(default = "yes")]
    pub retries: bool,
}

fn yes() -> bool {
    true
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Binding {
    pub exchange: String,
    pub key: String,
}

impl Topology {
    pub fn load(path: &Path) -> Result<Self, LoadError> {
        let t: Topology = crate::load_json(path)?;
        t.validate(&path.display().to_string())?;
        Ok(t)
    }

    pub fn parse(file: &str, text: &str) -> Result<Self, LoadError> {
        let t: Topology = crate::parse_json(file, text)?;
        t.validate(file)?;
        Ok(t)
    }

    fn validate(&self, file: &str) -> Result<(), LoadError> {
        let invalid = |field: String, message: &str| LoadError::Invalid {
            file: file.to_string(),
            field,
            message: message.to_string(),
        };
        if self.retry.max_attempts == 0 {
            return Err(invalid("retry.max_attempts".into(), "must be at least 1"));
        }
        if self.retry.tiers.is_empty() {
            return Err(invalid(
                "retry.tiers".into(),
                "needs at least one delay tier",
            ));
        }
        let exchanges: Vec<&str> = self.exchanges.iter().map(|e| e.name.as_str()).collect();
        for (i, q) in self.queues.iter().chain(&self.instance_queues).enumerate() {
            if q.name.is_empty() {
                return Err(invalid(format!("queues[{i}].name"), "must not be empty"));
            }
            for (j, b) in q.bindings.iter().enumerate() {
                if !exchanges.contains(&b.exchange.as_str()) {
                    return Err(invalid(
                        format!("queue {:?} bindings[{j}].exchange", q.name),
                        &format!("no exchange named {:?} is declared", b.exchange),
                    ));
                }
            }
        }
        for required in [
            names::COMMANDS_EXCHANGE,
            names::INTERNAL_EVENTS_EXCHANGE,
            names::REQUEUE_EXCHANGE,
            names::PARKING_EXCHANGE,
        ] {
            if !exchanges.contains(&required) {
                return Err(invalid(
                    "exchanges".into(),
                    &format!("must declare {required:?}"),
                ));
            }
        }
        Ok(())
    }

    /// The delay before attempt `next_attempt` (2 = the first retry), and its tier.
    pub fn tier_for(&self, next_attempt: u32) -> &DelayTier {
        let index = (next_attempt.saturating_sub(2) as usize).min(self.retry.tiers.len() - 1);
        &self.retry.tiers[index]
    }

    /// Whether publishes to `exchange` are mandatory. Unknown exchanges are treated as mandatory.
    pub fn is_mandatory(&self, exchange: &str) -> bool {
        self.exchanges
            .iter()
            .find(|e| e.name == exchange)
            .is_none_or(|e| e.mandatory)
    }

    /// The per-instance queue made from template `template` for `instance_id`.
    pub fn instance_queue(&self, template: &str, instance_id: &str) -> Option<Queue> {
        let t = self.instance_queues.iter().find(|q| q.name == template)?;
        let fill = |s: &str| s.replace("{instance}", instance_id);
        Some(Queue {
            name: fill(&t.name),
            arguments: t.arguments.clone(),
            bindings: t
                .bindings
                .iter()
                .map(|b| Binding {
                    exchange: b.exchange.clone(),
                    key: fill(&b.key),
                })
                .collect(),
            retries: t.retries,
        })
    }

    /// The topology with the external event exchange renamed as configured.
    pub fn with_external_events_exchange(mut self, name: &str) -> Self {
        for e in &mut self.exchanges {
            if e.role == Some(ExchangeRole::ExternalEvents) {
                e.name = name.to_string();
            }
        }
        self
    }

    /// The arguments a queue is declared with, defaults filled in.
    pub fn arguments_of(&self, queue: &Queue) -> QueueArguments {
        queue.arguments.over(&self.queue_defaults)
    }

    /// A summary for documents and logs: queue name to its bindings.
    pub fn bindings(&self) -> BTreeMap<String, Vec<String>> {
        self.queues
            .iter()
            .map(|q| {
                (
                    q.name.clone(),
                    q.bindings
                        .iter()
                        .map(|b| format!("{} {}", b.exchange, b.key))
                        .collect(),
                )
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn repo_topology() -> Topology {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../infra/topology.json");
        Topology::load(&path).unwrap()
    }

    #[test]
    fn repository_topology_loads() {
        let t = repo_topology();
        assert!(t.is_mandatory(names::COMMANDS_EXCHANGE));
        assert!(t.is_mandatory(names::INTERNAL_EVENTS_EXCHANGE));
        assert!(!t.is_mandatory(names::DEFAULT_EVENTS_EXCHANGE));
        let renamed = t.clone().with_external_events_exchange("my-events");
        assert!(!renamed.is_mandatory("my-events"));
        let agent = t.instance_queue("stratus.agent.{instance}", "h1").unwrap();
        assert_eq!(agent.name, "stratus.agent.h1");
        assert!(agent.bindings.iter().any(|b| b.key.ends_with(".h1")));
    }

    #[test]
    fn tiers_grow_then_stay_at_the_last() {
        let t = repo_topology();
        let last = t.retry.tiers.last().unwrap().clone();
        assert_eq!(t.tier_for(2), &t.retry.tiers[0]);
        assert_eq!(t.tier_for(100), &last);
    }

    #[test]
    fn unknown_exchange_in_binding_names_the_field() {
        let text = r#"{"exchanges":[],"queue_defaults":{},"retry":{"max_attempts":3,"tiers":[{"name":"1s","delay_ms":1000}]},
            "queues":[{"name":"q","bindings":[{"exchange":"nope","key":"k"}]}]}"#;
        let e = Topology::parse("t.json", text).unwrap_err().to_string();
        assert!(
            e.contains("t.json") && e.contains("bindings[0].exchange") && e.contains("nope"),
            "{e}"
        );
    }

    #[test]
    fn unknown_field_is_reported_with_its_position() {
        let text = r#"{"exchanges":[],"queue_defaults":{},"retry":{"max_attempts":3,"tiers":[]},"queues":[],"surprise":1}"#;
        let e = Topology::parse("t.json", text).unwrap_err().to_string();
        assert!(e.contains("surprise") && e.contains("line 1"), "{e}");
    }
}
