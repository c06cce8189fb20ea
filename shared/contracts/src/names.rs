//! One naming pattern for everything on the broker.
//!
//! | thing | pattern | example |
//! |---|---|---|
//! | message type | `<component>.<name>`, lowercase kebab words | `diag.echo`, `compute.vm-started` |
//! | routing key of a command or event | its message type | `diag.echo` |
//! | routing key of a command for one instance | `<message type>.<instance id>` | `agent.start-vm.6f1c…` |
//! | a function's work queue | `stratus.fn.<function>` | `stratus.fn.diag` |
//! | a per-instance queue | `stratus.<component>.<instance id>` | `stratus.agent.6f1c…` |
//! | delay tier (exchange and queue) | `stratus.delay.<tier>` | `stratus.delay.5s` |
//! | exchanges | `stratus.commands`, `stratus.events`, `stratus.requeue`, `stratus.parking`, and `cloudstack-events` (configurable) | |
//! | parking queue | `stratus.parked` | |

/// Commands travel here (topic, published `mandatory`).
pub const COMMANDS_EXCHANGE: &str = "stratus.commands";
/// Internal events such as step results (topic, published `mandatory`).
pub const INTERNAL_EVENTS_EXCHANGE: &str = "stratus.events";
/// The external CloudStack event bus; integrators bind their own queues (topic, not mandatory).
pub const DEFAULT_EVENTS_EXCHANGE: &str = "cloudstack-events";
/// Delay tiers dead-letter here; every work queue is bound with its own name as key,
/// so that a delayed message returns only to the queue it came from.
pub const REQUEUE_EXCHANGE: &str = "stratus.requeue";
/// Parked messages (permanent failures, delivery limit exceeded) land here.
pub const PARKING_EXCHANGE: &str = "stratus.parking";
pub const PARKED_QUEUE: &str = "stratus.parked";

/// Headers Stratus sets on a parked message.
pub const HEADER_PARKED_REASON: &str = "x-stratus-parked-reason";
pub const HEADER_PARKED_FROM: &str = "x-stratus-parked-from";
/// Header carrying the queue a delayed retry must return to (also its routing key).
pub const HEADER_RETURN_TO: &str = "x-stratus-return-to";

pub fn function_queue(function: &str) -> String {
    format!("stratus.fn.{function}")
}

pub fn instance_queue(component: &str, instance_id: &str) -> String {
    format!("stratus.{component}.{instance_id}")
}

pub fn delay_exchange(tier: &str) -> String {
    format!("stratus.delay.{tier}")
}

pub fn delay_queue(tier: &str) -> String {
    format!("stratus.delay.{tier}")
}

/// The routing key of a command addressed to one instance (e.g. one host's agent).
pub fn instance_routing_key(message_type: &str, instance_id: &str) -> String {
    format!("{message_type}.{instance_id}")
}

/// Whether `name` follows the `<component>.<name>` pattern of message types.
pub fn is_valid_message_type(name: &str) -> bool {
    let mut parts = name.split('.');
    let (Some(component), Some(rest), None) = (parts.next(), parts.next(), parts.next()) else {
        return false;
    };
    is_kebab_word(component) && is_kebab_word(rest)
}

fn is_kebab_word(s: &str) -> bool {
    !s.is_empty()
        && s.starts_with(|c: char| c.is_ascii_lowercase())
        && !s.ends_with('-')
        && !s.contains("--")
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}

/// The Consul service every host agent registers (one instance per host,
/// `Meta.host` = the host's name).
pub const AGENT_SERVICE: &str = "stratus-agent";
/// The Consul KV key whose session lock makes one fabric monitor the sweeper.
pub const FABRIC_MONITOR_LOCK: &str = "stratus/locks/fabric-monitor";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_type_pattern() {
        assert!(is_valid_message_type("diag.echo"));
        assert!(is_valid_message_type("compute.vm-started"));
        for bad in [
            "diag",
            "Diag.echo",
            "diag.echo.x",
            "diag.",
            ".echo",
            "diag.echo-",
            "diag.a--b",
            "diag.1x",
        ] {
            assert!(!is_valid_message_type(bad), "{bad}");
        }
    }

    #[test]
    fn queue_names() {
        assert_eq!(function_queue("diag"), "stratus.fn.diag");
        assert_eq!(instance_queue("agent", "h1"), "stratus.agent.h1");
        assert_eq!(
            instance_routing_key("agent.start-vm", "h1"),
            "agent.start-vm.h1"
        );
        assert_eq!(delay_queue("5s"), "stratus.delay.5s");
    }
}
