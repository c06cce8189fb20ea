//! The simulator's run-time behaviour, as CloudStack's `configureSimulator`
//! sets it: per agent command (by CloudStack's command class name), a delay,
//! a failure or a fault, for a count of uses, scoped to a zone, pod, cluster
//! or host. The API writes mocks to Consul's KV under [`MOCK_PREFIX`]; the
//! simulator driver of every host agent reads them before each command and
//! takes a use of a counted mock with a check-and-set.

use serde::{Deserialize, Serialize};

use crate::message_types::agent;

/// Where mocks live in Consul's KV, one key per mock (`<prefix><id>`).
pub const MOCK_PREFIX: &str = "stratus/simulator/mocks/";

/// What a mocked command answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MockResult {
    /// Runs as usual (after the delay).
    Pass,
    /// Answers failure: "Simulated failure" (CloudStack's `result:fail`).
    Fail,
    /// Never answers (CloudStack's `result:fault` throws in the agent).
    Fault,
}

/// One mock. Scope ids are UUIDs as strings; none set: every host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mock {
    pub id: String,
    /// CloudStack's command class name, e.g. `StartCommand`.
    pub name: String,
    /// The value as given, e.g. `wait:1000|result:fail`.
    pub value: String,
    pub wait_ms: u64,
    pub result: MockResult,
    /// Uses left; None: every use.
    pub count: Option<u32>,
    #[serde(default)]
    pub zone_id: Option<String>,
    #[serde(default)]
    pub pod_id: Option<String>,
    #[serde(default)]
    pub cluster_id: Option<String>,
    #[serde(default)]
    pub host_id: Option<String>,
}

/// The command class names a mock may name, each with the agent command it
/// acts on.
pub const COMMANDS: &[(&str, &str)] = &[
    ("CreateCommand", agent::CREATE_VOLUMES),
    ("DestroyCommand", agent::DESTROY_VOLUMES),
    ("StartCommand", agent::START_VM),
    ("StopCommand", agent::STOP_VM),
];

/// The agent message type a command class name acts on, if the simulator knows it.
pub fn command_name_known(name: &str) -> Option<&'static str> {
    COMMANDS.iter().find(|(n, _)| *n == name).map(|(_, t)| *t)
}

/// The CloudStack command class name of an agent message type.
pub fn command_name(message_type: &str) -> Option<&'static str> {
    COMMANDS
        .iter()
        .find(|(_, t)| *t == message_type)
        .map(|(n, _)| *n)
}

/// Parses `configureSimulator`'s `value`: `key:value` pairs split by `|` or
/// `;` (the code splits on `|`, its docs say `;`). Keys: `wait` (ms),
/// `result` (`fail` or `fault`; anything else passes), `enabled:false`
/// (the mock does nothing: a pass with no delay), `timeout` (accepted, as
/// CloudStack does, and unused).
pub fn parse_value(value: &str) -> Result<(u64, MockResult), String> {
    let mut wait = 0;
    let mut result = MockResult::Pass;
    let mut enabled = true;
    for pair in value
        .split(['|', ';'])
        .map(str::trim)
        .filter(|p| !p.is_empty())
    {
        let (k, v) = pair
            .split_once(':')
            .ok_or_else(|| format!("{pair:?} is not key:value"))?;
        match k.trim().to_ascii_lowercase().as_str() {
            "wait" => {
                wait = v
                    .trim()
                    .parse()
                    .map_err(|_| format!("wait:{v} is not a number of milliseconds"))?
            }
            "result" => {
                result = match v.trim().to_ascii_lowercase().as_str() {
                    "fail" => MockResult::Fail,
                    "fault" => MockResult::Fault,
                    _ => MockResult::Pass,
                }
            }
            "enabled" => enabled = !v.trim().eq_ignore_ascii_case("false"),
            "timeout" => {}
            other => return Err(format!("unknown key {other:?}")),
        }
    }
    if !enabled {
        return Ok((0, MockResult::Pass));
    }
    Ok((wait, result))
}

impl Mock {
    /// How specific the scope is: host 4, cluster 3, pod 2, zone 1, none 0.
    pub fn specificity(&self) -> u8 {
        if self.host_id.is_some() {
            4
        } else if self.cluster_id.is_some() {
            3
        } else if self.pod_id.is_some() {
            2
        } else if self.zone_id.is_some() {
            1
        } else {
            0
        }
    }

    /// Whether this mock applies to `command` on the host at `placement`.
    pub fn applies(&self, message_type: &str, placement: &crate::message_types::Placement) -> bool {
        let same = |want: &Option<String>, have: &str| want.as_deref().is_none_or(|w| w == have);
        command_name(message_type) == Some(self.name.as_str())
            && self.count != Some(0)
            && same(&self.zone_id, &placement.zone_id)
            && same(&self.pod_id, &placement.pod_id)
            && same(&self.cluster_id, &placement.cluster_id)
            && same(&self.host_id, &placement.host_id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_parse_as_cloudstack_writes_them() {
        assert_eq!(parse_value("wait:1000").unwrap(), (1000, MockResult::Pass));
        assert_eq!(
            parse_value("wait:5|result:fail").unwrap(),
            (5, MockResult::Fail)
        );
        assert_eq!(
            parse_value("result:fault;").unwrap(),
            (0, MockResult::Fault)
        );
        assert_eq!(
            parse_value("result:fail|enabled:false").unwrap(),
            (0, MockResult::Pass)
        );
        assert!(parse_value("wait:soon").is_err());
        assert!(parse_value("colour:red").is_err());
    }

    #[test]
    fn the_most_specific_scope_is_the_hosts() {
        let p = crate::message_types::Placement {
            zone_id: "z".into(),
            pod_id: "p".into(),
            cluster_id: "c".into(),
            host_id: "h".into(),
            host_name: "SimHost".into(),
        };
        let mut m = Mock {
            id: "1".into(),
            name: "StartCommand".into(),
            value: "result:fail".into(),
            wait_ms: 0,
            result: MockResult::Fail,
            count: Some(1),
            zone_id: Some("z".into()),
            pod_id: None,
            cluster_id: None,
            host_id: None,
        };
        assert!(m.applies(agent::START_VM, &p));
        assert!(!m.applies(agent::STOP_VM, &p));
        assert_eq!(m.specificity(), 1);
        m.host_id = Some("other".into());
        assert!(!m.applies(agent::START_VM, &p));
        m.host_id = Some("h".into());
        m.count = Some(0);
        assert!(!m.applies(agent::START_VM, &p));
    }
}
