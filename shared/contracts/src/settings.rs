//! CloudStack's global settings (`listConfigurations`, `updateConfiguration`):
//! one typed registry, read through [`SettingsSource`]. The first source is
//! [`Defaults`] (each setting's default); the Consul issue adds the KV store.

use std::collections::BTreeMap;

/// A setting's value type, as `listConfigurations` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Boolean,
    Integer,
    String,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Boolean => "Boolean",
            Kind::Integer => "Integer",
            Kind::String => "String",
        }
    }
}

/// Where a setting may be overridden.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    Global,
    Zone,
    Account,
    Domain,
}

impl Scope {
    pub fn name(self) -> &'static str {
        match self {
            Scope::Global => "global",
            Scope::Zone => "zone",
            Scope::Account => "account",
            Scope::Domain => "domain",
        }
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
        dynamic: false,
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
];

pub fn find(name: &str) -> Option<&'static Setting> {
    REGISTRY.iter().find(|s| s.name == name)
}

/// Why a value is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Invalid {
    #[error("Invalid config parameter name {0}")]
    Unknown(String),
    #[error("Please enter a valid value for {name}: {why}")]
    Value { name: String, why: String },
}

impl Setting {
    /// Checks `value` against the setting's type and bounds.
    pub fn validate(&self, value: &str) -> Result<(), Invalid> {
        let bad = |why: &str| Invalid::Value {
            name: self.name.to_string(),
            why: why.to_string(),
        };
        match self.kind {
            Kind::Boolean if !matches!(value.to_ascii_lowercase().as_str(), "true" | "false") => {
                Err(bad("true or false"))
            }
            Kind::String if !self.one_of.is_empty() && !self.one_of.contains(&value) => {
                Err(bad(&format!("one of {}", self.one_of.join(", "))))
            }
            Kind::Integer => {
                let n: i64 = value.parse().map_err(|_| bad("an integer"))?;
                match self.min {
                    Some(min) if n < min => Err(bad(&format!("at least {min}"))),
                    _ => Ok(()),
                }
            }
            _ => Ok(()),
        }
    }
}

/// Where setting values come from.
pub trait SettingsSource: Send + Sync {
    /// The value of a registered setting: an override if one is set, else its default.
    fn value(&self, setting: &'static Setting) -> String;

    fn integer(&self, setting: &'static Setting) -> i64 {
        self.value(setting)
            .parse()
            .unwrap_or_else(|_| setting.default.parse().unwrap_or_default())
    }

    fn boolean(&self, setting: &'static Setting) -> bool {
        self.value(setting).eq_ignore_ascii_case("true")
    }
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
    }

    #[test]
    fn overrides_win_over_defaults() {
        let mut d = Defaults::default();
        assert_eq!(d.integer(names::default_page_size()), 500);
        d.overrides.insert("default.page.size", "50".into());
        assert_eq!(d.integer(names::default_page_size()), 50);
    }
}
