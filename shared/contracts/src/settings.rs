//! CloudStack's global settings (`listConfigurations`, `updateConfiguration`):
//! one typed registry, read through [`SettingsSource`]. [`Defaults`] answers
//! each setting's default (tests, tools); the running platform's source is
//! Consul's KV (`stratus_discovery::settings`), under [`KV_PREFIX`].

use std::future::Future;
use std::pin::Pin;

use std::collections::BTreeMap;

/// A setting's value type, as `listConfigurations` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Boolean,
    Integer,
    Float,
    String,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Boolean => "Boolean",
            Kind::Integer => "Integer",
            Kind::Float => "Float",
            Kind::String => "String",
        }
    }
}

/// Where a setting may be overridden.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    Global,
    Zone,
    Cluster,
    Account,
    Domain,
}

impl Scope {
    pub fn name(self) -> &'static str {
        match self {
            Scope::Global => "global",
            Scope::Zone => "zone",
            Scope::Cluster => "cluster",
            Scope::Account => "account",
            Scope::Domain => "domain",
        }
    }
}

/// Where settings live in Consul's KV: `<prefix>global/<name>` and
/// `<prefix><scope>/<id>/<name>` for a zone's, cluster's, account's or domain's value.
pub const KV_PREFIX: &str = "stratus/config/";

/// A value set for one zone, cluster, account or domain (by its id).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScopeId {
    pub scope: Scope,
    pub id: String,
}

/// The KV key of a setting's value, globally or for one scope.
pub fn kv_key(setting: &str, at: Option<&ScopeId>) -> String {
    match at {
        None => format!("{KV_PREFIX}global/{setting}"),
        Some(s) => format!("{KV_PREFIX}{}/{}/{setting}", s.scope.name(), s.id),
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Setting {
    pub name: &'static str,
    pub kind: Kind,
    pub default: &'static str,
    pub scope: Scope,
    pub category: &'static str,
    /// Takes effect without a restart.
    pub dynamic: bool,
    pub description: &'static str,
    /// The smallest value an integer setting takes.
    pub min: Option<i64>,
    /// The values a string setting may take (empty: any).
    pub one_of: &'static [&'static str],
}

/// Every setting Stratus honours, with CloudStack's names and defaults.
pub const REGISTRY: &[Setting] = &[
    Setting {
        name: "default.page.size",
        kind: Kind::Integer,
        default: "500",
        scope: Scope::Global,
        category: "Advanced",
        // Dynamic here (CloudStack needs a restart): every function re-reads it.
        dynamic: true,
        description: "Default page size for API list* commands",
        min: Some(1),
        one_of: &[],
    },
    Setting {
        name: "api.key.access",
        kind: Kind::Boolean,
        default: "true",
        scope: Scope::Domain,
        category: "Advanced",
        dynamic: true,
        description: "Whether API key access is allowed (per user and account first, then the domain)",
        min: None,
        one_of: &[],
    },
    Setting {
        name: "enforce.post.requests.and.timestamps",
        kind: Kind::Boolean,
        default: "false",
        scope: Scope::Global,
        category: "Secure",
        dynamic: false,
        description: "Enforce signature version 3 (with expires) on every API request",
        min: None,
        one_of: &[],
    },
    Setting {
        name: "api.sessionkey.check.locations",
        kind: Kind::String,
        default: "CookieAndParameter",
        scope: Scope::Global,
        category: "Secure",
        dynamic: true,
        description: "Where the session key is checked: CookieAndParameter, CookieOrParameter or ParameterOnly",
        min: None,
        one_of: &["CookieAndParameter", "CookieOrParameter", "ParameterOnly"],
    },
    Setting {
        name: "session.timeout",
        kind: Kind::Integer,
        default: "1800",
        scope: Scope::Global,
        category: "Advanced",
        dynamic: true,
        description: "Seconds of inactivity after which a login session ends",
        min: Some(60),
        one_of: &[],
    },
    Setting {
        name: "cpu.overprovisioning.factor",
        kind: Kind::Float,
        default: "1.0",
        scope: Scope::Cluster,
        category: "Advanced",
        dynamic: true,
        description: "Used for CPU overprovisioning calculation; available CPU will be (actualCpuCapacity * cpu.overprovisioning.factor)",
        min: None,
        one_of: &[],
    },
    Setting {
        name: "mem.overprovisioning.factor",
        kind: Kind::Float,
        default: "1.0",
        scope: Scope::Cluster,
        category: "Advanced",
        dynamic: true,
        description: "Used for memory overprovisioning calculation",
        min: None,
        one_of: &[],
    },
    Setting {
        name: "ping.interval",
        kind: Kind::Integer,
        default: "60",
        scope: Scope::Global,
        category: "Advanced",
        // Dynamic here: agents and the fabric monitor watch it.
        dynamic: true,
        description: "Interval to send application level pings to make sure the connection is still working",
        min: Some(1),
        one_of: &[],
    },
    Setting {
        name: "ping.timeout",
        kind: Kind::Float,
        default: "2.5",
        scope: Scope::Global,
        category: "Advanced",
        dynamic: true,
        description: "Multiplier to ping.interval before announcing an agent has timed out",
        min: None,
        one_of: &[],
    },
];

/// The overprovisioning factors: floats that must be greater than 0.
const OVERPROVISIONING: &[&str] = &["cpu.overprovisioning.factor", "mem.overprovisioning.factor"];

pub fn find(name: &str) -> Option<&'static Setting> {
    REGISTRY.iter().find(|s| s.name == name)
}

/// Why `updateConfiguration` refuses a change: CloudStack's texts
/// (`ConfigurationManagerImpl`), each answered with 431.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Invalid {
    #[error("Config parameter with name {0} doesn't exist")]
    Unknown(String),
    #[error("Invalid scope id provided for the parameter {0}")]
    Scope(String),
    #[error("{0}")]
    Value(String),
}

impl Setting {
    /// Checks `value` against the setting's type and bounds.
    pub fn validate(&self, value: &str) -> Result<(), Invalid> {
        let name = self.name;
        let value = value.trim();
        let bad = |text: String| Err(Invalid::Value(text));
        match self.kind {
            Kind::Boolean => {
                if value != "true" && value != "false" {
                    return bad("Please enter either 'true' or 'false'.".into());
                }
            }
            Kind::Integer => {
                let Ok(n) = value.parse::<i32>() else {
                    return bad(format!(
                        "There was error in trying to parse value: {value}. Please enter a valid integer value for parameter {name}"
                    ));
                };
                if let Some(min) = self.min
                    && i64::from(n) < min
                {
                    return bad(if min == 1 {
                        format!(
                            "Please enter a positive value for the configuration parameter:{name}"
                        )
                    } else {
                        format!(
                            "The provided value is not valid for this configuration. Please enter an integer in the range: [{min}-{}]",
                            i32::MAX
                        )
                    });
                }
            }
            Kind::Float => {
                let Ok(f) = value.parse::<f32>() else {
                    return bad(format!(
                        "There was error in trying to parse value: {value}. Please enter a valid float value for parameter {name}"
                    ));
                };
                if !f.is_finite() || (OVERPROVISIONING.contains(&name) && f <= 0.0) {
                    return bad(format!("{name} should be greater than 0"));
                }
            }
            Kind::String => {
                if !self.one_of.is_empty()
                    && !self.one_of.iter().any(|o| o.eq_ignore_ascii_case(value))
                {
                    return bad(format!(
                        "The provided value is not a valid value for this configuration (Options are: [{}]).",
                        self.one_of.join(",")
                    ));
                }
            }
        }
        Ok(())
    }

    /// Whether a value may be set for this scope (global always may).
    pub fn allows(&self, scope: Scope) -> bool {
        scope == Scope::Global || scope == self.scope
    }
}

/// A boxed future, for the async half of [`SettingsSource`].
pub type Pending<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Where setting values come from.
pub trait SettingsSource: Send + Sync {
    /// The global value of a registered setting: an override if one is set, else its default.
    fn value(&self, setting: &'static Setting) -> String;

    /// The value for one zone, cluster, account or domain: its own if set, else the global one.
    fn value_in(&self, setting: &'static Setting, _at: &ScopeId) -> String {
        self.value(setting)
    }

    fn integer(&self, setting: &'static Setting) -> i64 {
        self.value(setting)
            .parse()
            .unwrap_or_else(|_| setting.default.parse().unwrap_or_default())
    }

    fn float(&self, setting: &'static Setting) -> f64 {
        self.value(setting)
            .parse()
            .unwrap_or_else(|_| setting.default.parse().unwrap_or_default())
    }

    fn boolean(&self, setting: &'static Setting) -> bool {
        self.value(setting).eq_ignore_ascii_case("true")
    }

    /// Re-reads the values when what is cached is older than the source
    /// allows (functions call this at the start of each invocation).
    fn refresh(&self) -> Pending<'_, ()> {
        Box::pin(async {})
    }

    /// Stores a new value (already validated), globally or for one scope.
    fn update<'a>(
        &'a self,
        setting: &'static Setting,
        at: Option<&'a ScopeId>,
        value: &'a str,
    ) -> Pending<'a, Result<(), String>>;
}

/// Defaults only, and fixed overrides (for tests and one-off tools).
#[derive(Debug, Clone, Default)]
pub struct Defaults {
    pub overrides: BTreeMap<&'static str, String>,
}

impl SettingsSource for Defaults {
    fn value(&self, setting: &'static Setting) -> String {
        self.overrides
            .get(setting.name)
            .cloned()
            .unwrap_or_else(|| setting.default.to_string())
    }

    fn update<'a>(
        &'a self,
        setting: &'static Setting,
        _at: Option<&'a ScopeId>,
        _value: &'a str,
    ) -> Pending<'a, Result<(), String>> {
        let name = setting.name;
        Box::pin(async move {
            Err(format!(
                "{name} cannot be changed: this process reads the defaults only (no Consul)"
            ))
        })
    }
}

/// Typed handles to the settings the code reads.
pub mod names {
    use super::{Setting, find};

    fn get(name: &str) -> &'static Setting {
        find(name).expect("registered setting")
    }
    pub fn default_page_size() -> &'static Setting {
        get("default.page.size")
    }
    pub fn api_key_access() -> &'static Setting {
        get("api.key.access")
    }
    pub fn enforce_post_and_timestamps() -> &'static Setting {
        get("enforce.post.requests.and.timestamps")
    }
    pub fn session_timeout() -> &'static Setting {
        get("session.timeout")
    }
    pub fn sessionkey_check_locations() -> &'static Setting {
        get("api.sessionkey.check.locations")
    }
    pub fn cpu_overprovisioning() -> &'static Setting {
        get("cpu.overprovisioning.factor")
    }
    pub fn mem_overprovisioning() -> &'static Setting {
        get("mem.overprovisioning.factor")
    }
    pub fn ping_interval() -> &'static Setting {
        get("ping.interval")
    }
    pub fn ping_timeout() -> &'static Setting {
        get("ping.timeout")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_default_is_valid_and_names_are_unique() {
        let mut names = std::collections::HashSet::new();
        for s in REGISTRY {
            assert!(names.insert(s.name), "{} twice", s.name);
            s.validate(s.default).unwrap();
        }
        names::default_page_size();
        names::api_key_access();
        names::enforce_post_and_timestamps();
        names::session_timeout();
        names::sessionkey_check_locations();
        names::cpu_overprovisioning();
        names::mem_overprovisioning();
        names::ping_interval();
        names::ping_timeout();
    }

    #[test]
    fn values_are_checked_against_their_type() {
        let page = names::default_page_size();
        assert!(page.validate("100").is_ok());
        assert!(page.validate("0").is_err());
        assert!(page.validate("many").is_err());
        assert!(names::api_key_access().validate("maybe").is_err());
        let locations = names::sessionkey_check_locations();
        assert!(locations.validate("ParameterOnly").is_ok());
        assert!(locations.validate("Nowhere").is_err());
        let factor = names::cpu_overprovisioning();
        assert!(factor.validate("2.5").is_ok());
        assert_eq!(
            factor.validate("0"),
            Err(Invalid::Value(
                "cpu.overprovisioning.factor should be greater than 0".into()
            ))
        );
        assert_eq!(
            page.validate("many"),
            Err(Invalid::Value("There was error in trying to parse value: many. Please enter a valid integer value for parameter default.page.size".into()))
        );
        assert!(factor.allows(Scope::Cluster) && factor.allows(Scope::Global));
        assert!(!page.allows(Scope::Cluster));
        assert_eq!(
            kv_key("ping.interval", None),
            "stratus/config/global/ping.interval"
        );
        assert_eq!(
            kv_key(
                "cpu.overprovisioning.factor",
                Some(&ScopeId {
                    scope: Scope::Cluster,
                    id: "c1".into()
                })
            ),
            "stratus/config/cluster/c1/cpu.overprovisioning.factor"
        );
    }

    #[test]
    fn overrides_win_over_defaults() {
        let mut d = Defaults::default();
        assert_eq!(d.integer(names::default_page_size()), 500);
        d.overrides.insert("default.page.size", "50".into());
        assert_eq!(d.integer(names::default_page_size()), 50);
    }
}
