//! The registry of every message type that travels on the broker, and the
//! bodies of the types this crate owns. Every type has a sample wire event
//! under `events/` (a test checks this).

use serde::{Deserialize, Serialize};

use crate::names;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    /// Asks one component to do something; published to the commands exchange.
    Command,
    /// Says that something happened; published to the internal events exchange.
    Event,
}

impl Kind {
    /// The exchange a message of this kind is published to.
    pub fn exchange(self) -> &'static str {
        match self {
            Kind::Command => names::COMMANDS_EXCHANGE,
            Kind::Event => names::INTERNAL_EVENTS_EXCHANGE,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MessageType {
    pub name: &'static str,
    pub kind: Kind,
    pub description: &'static str,
}

/// Every message type. Add a type here, give it a body below or in its
/// owner's module, and add its sample under `events/rmq/`.
pub const REGISTRY: &[MessageType] = &[
    MessageType {
        name: diag::NOOP,
        kind: Kind::Command,
        description: "Does nothing and succeeds; measures the platform's own cost.",
    },
    MessageType {
        name: diag::ECHO,
        kind: Kind::Command,
        description: "Publishes a diag.echoed event carrying the same text.",
    },
    MessageType {
        name: diag::ECHOED,
        kind: Kind::Event,
        description: "The answer to diag.echo.",
    },
    MessageType {
        name: diag::FAIL,
        kind: Kind::Command,
        description: "Fails transiently until an attempt number, or permanently.",
    },
    MessageType {
        name: diag::SLEEP,
        kind: Kind::Command,
        description: "Sleeps for a while; exercises invocation timeouts.",
    },
    MessageType {
        name: diag::EXIT,
        kind: Kind::Command,
        description: "Ends the function's process at once; exercises crash recovery.",
    },
    MessageType {
        name: account::DISABLE,
        kind: Kind::Command,
        description: "Disables or locks an account (disableAccount's job); the orchestrator carries it out and ends the job.",
    },
];

pub fn lookup(name: &str) -> Option<&'static MessageType> {
    REGISTRY.iter().find(|t| t.name == name)
}

/// The diagnostics function's messages: a smoke test for a deployment, and the
/// function the platform's own tests and benchmark drive.
pub mod diag {
    use super::*;

    pub const NOOP: &str = "diag.noop";
    pub const ECHO: &str = "diag.echo";
    pub const ECHOED: &str = "diag.echoed";
    pub const FAIL: &str = "diag.fail";
    pub const SLEEP: &str = "diag.sleep";
    pub const EXIT: &str = "diag.exit";

    #[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Noop {}

    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Echo {
        pub text: String,
    }

    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Echoed {
        pub text: String,
        /// The message id of the `diag.echo` this answers.
        pub in_reply_to: String,
    }

    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    #[serde(rename_all = "kebab-case")]
    pub enum Failure {
        /// Retried through the delay tiers.
        Transient,
        /// Parked at once.
        Permanent,
    }

    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Fail {
        pub failure: Failure,
        /// A transient failure stops once the message's attempt reaches this number
        /// (absent: it never stops, and the attempts run out).
        #[serde(default)]
        pub until_attempt: Option<u32>,
    }

    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Sleep {
        pub millis: u64,
    }

    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Exit {
        pub code: i32,
    }
}

/// Accounts: commands the API sends for account jobs.
pub mod account {
    use super::*;

    pub const DISABLE: &str = "account.disable";

    /// disableAccount: the job's id travels in the envelope's `job_id`.
    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Disable {
        pub account_id: String,
        /// true: lock (users cannot log in); false: disable.
        pub lock: bool,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_names_are_valid_and_unique() {
        let mut seen = std::collections::HashSet::new();
        for t in REGISTRY {
            assert!(names::is_valid_message_type(t.name), "{}", t.name);
            assert!(seen.insert(t.name), "duplicate {}", t.name);
        }
        assert_eq!(lookup("diag.echo").unwrap().kind, Kind::Command);
        assert_eq!(
            lookup("diag.echoed").unwrap().kind.exchange(),
            "stratus.events"
        );
        assert!(lookup("diag.nope").is_none());
    }
}
