//! CloudStack's global settings (`listConfigurations`, `updateConfiguration`):
//! one typed registry, read through [`SettingsSource`]. [`Defaults`] answers
//! each setting's default (tests, tools); the running platform's source is
//! Consul's KV (`stratus_discovery::settings`), under [`KV_PREFIX`].

use std::future::Future;
use std::pin::Pin;

use std::collections::BTreeMap;

/// A setting's value type, as `listConfigurations` names it (Java's class
/// name, as CloudStack's `Config`/`ConfigKey` declare it), with the bounds
/// its values keep. A number cannot be declared without its bounds, and
/// [`Setting::validate`] checks every setting against its own: no setting
/// escapes the check by being left out of a list.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Kind {
    /// `true` or `false`, exactly (CloudStack compares case-sensitively).
    Boolean,
    /// Java's `Integer`: 32 bits (`Integer.parseInt`).
    Integer(Whole),
    /// Java's `Long`: 64 bits (`Long.parseLong`).
    Long(Whole),
    /// Java's `Float`, finite: 32 bits (`Float.parseFloat`).
    Float(Real),
    /// Any text; with options, one of them (ignoring case, as CloudStack's
    /// `validateRangeOther`).
    String(&'static [&'static str]),
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Boolean => "Boolean",
            Kind::Integer(_) => "Integer",
            Kind::Long(_) => "Long",
            Kind::Float(_) => "Float",
            Kind::String(_) => "String",
        }
    }
}

/// The bounds of an integer setting, in the two forms CloudStack declares
/// them (`ConfigurationManagerImpl.validateConfigurationValue`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Whole {
    /// Above 0, up to the type's largest value (beyond it the value does
    /// not parse): the settings CloudStack lists in
    /// `configValuesForValidation`, refused with "Please enter a positive
    /// value for the configuration parameter:<name>".
    Positive,
    /// From the first to the second, both included: a `Config.java` range
    /// `"min-max"` (`validateIfIntValueIsInRange`), refused with "The
    /// provided value is not valid for this configuration. Please enter an
    /// integer in the range: [min-max]".
    Range(i64, i64),
}

/// The bounds of a float setting (never NaN or infinite: those do not
/// parse here, see [`Setting::validate`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Real {
    /// Above 0, up to the largest finite float: CloudStack's
    /// `overprovisioningFactorsForValidation`, refused with "<name> should
    /// be greater than 0".
    AboveZero,
    /// From the first to the second, both included: the form of CloudStack's
    /// `weightBasedParametersForValidation` (0 to 1), refused with "Please
    /// enter a value between <min> and <max> for the configuration
    /// parameter: <name>".
    Between(f32, f32),
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

#[derive(Debug, Clone, PartialEq)]
pub struct Setting {
    pub name: &'static str,
    pub kind: Kind,
    pub default: &'static str,
    pub scope: Scope,
    pub category: &'static str,
    /// Takes effect without a restart.
    pub dynamic: bool,
    pub description: &'static str,
}

/// Every setting Stratus honours, with CloudStack's names, defaults, types
/// and bounds. Where CloudStack declares no bound, the one chosen here says
/// so and why.
pub const REGISTRY: &[Setting] = &[
    Setting {
        name: "default.page.size",
        // CloudStack's `Config.DefaultPageSize` is a `Long` with no range.
        // Chosen: 1 to 2^31-1. A page of no rows serves nothing, and a
        // client's `pagesize` (Java's `Integer` in `BaseListCmd`) can never
        // ask for more than 2^31-1 rows.
        kind: Kind::Long(Whole::Range(1, i32::MAX as i64)),
        default: "500",
        scope: Scope::Global,
        category: "Advanced",
        // Dynamic here (CloudStack needs a restart): every function re-reads it.
        dynamic: true,
        description: "Default page size for API list* commands",
    },
    Setting {
        name: "api.key.access",
        kind: Kind::Boolean,
        default: "true",
        scope: Scope::Domain,
        category: "Advanced",
        dynamic: true,
        description: "Whether API key access is allowed (per user and account first, then the domain)",
    },
    Setting {
        name: "enforce.post.requests.and.timestamps",
        kind: Kind::Boolean,
        default: "false",
        scope: Scope::Global,
        category: "Secure",
        dynamic: false,
        description: "Enforce signature version 3 (with expires) on every API request",
    },
    Setting {
        name: "api.sessionkey.check.locations",
        kind: Kind::String(&["CookieAndParameter", "CookieOrParameter", "ParameterOnly"]),
        default: "CookieAndParameter",
        scope: Scope::Global,
        category: "Secure",
        dynamic: true,
        description: "Where the session key is checked: CookieAndParameter, CookieOrParameter or ParameterOnly",
    },
    Setting {
        name: "session.timeout",
        // Not a CloudStack global setting (its session timeout is the
        // management server's `session.timeout` property). Chosen: 60 s to
        // one day. Under a minute a session ends between two clicks; a
        // session idle for more than a day is one nobody uses, and lasting
        // access is what API keys are for.
        kind: Kind::Integer(Whole::Range(60, 86_400)),
        default: "1800",
        scope: Scope::Global,
        category: "Advanced",
        dynamic: true,
        description: "Seconds of inactivity after which a login session ends",
    },
    Setting {
        name: "cpu.overprovisioning.factor",
        // CloudStack: above 0 (`overprovisioningFactorsForValidation`), no
        // upper bound; none chosen either: a factor only multiplies
        // capacities (f64 arithmetic, saturating casts), so any finite
        // value is safe.
        kind: Kind::Float(Real::AboveZero),
        default: "1.0",
        scope: Scope::Cluster,
        category: "Advanced",
        dynamic: true,
        description: "Used for CPU overprovisioning calculation; available CPU will be (actualCpuCapacity * cpu.overprovisioning.factor)",
    },
    Setting {
        name: "mem.overprovisioning.factor",
        // As cpu.overprovisioning.factor.
        kind: Kind::Float(Real::AboveZero),
        default: "1.0",
        scope: Scope::Cluster,
        category: "Advanced",
        dynamic: true,
        description: "Used for memory overprovisioning calculation",
    },
    Setting {
        name: "ping.interval",
        // CloudStack: in `configValuesForValidation`, so above 0, up to
        // Integer's largest (ManagementServiceConfiguration.PingInterval).
        kind: Kind::Integer(Whole::Positive),
        default: "60",
        scope: Scope::Global,
        category: "Advanced",
        // Dynamic here: agents and the fabric monitor watch it.
        dynamic: true,
        description: "Interval to send application level pings to make sure the connection is still working",
    },
    Setting {
        name: "ping.timeout",
        // CloudStack declares no bound at all (a `ConfigKey<Float>` in
        // ManagementServiceConfiguration, in none of the validation sets):
        // it takes 0, -1, NaN and Infinity. Chosen: 1 to 100. A host is
        // Down after ping.interval x ping.timeout; below 1 it would be Down
        // before its next ping is even due, and past 100 missed pings the
        // wait is no longer a timeout. The ceiling also keeps that product
        // (ping.interval up to 2^31-1 s) within what a duration holds.
        kind: Kind::Float(Real::Between(1.0, 100.0)),
        default: "2.5",
        scope: Scope::Global,
        category: "Advanced",
        dynamic: true,
        description: "Multiplier to ping.interval before announcing an agent has timed out",
    },
    Setting {
        name: "expunge.delay",
        // CloudStack's `Config.ExpungeDelay`: an Integer, default 86400 s;
        // in `configValuesForValidation`, so above 0.
        kind: Kind::Integer(Whole::Positive),
        default: "86400",
        scope: Scope::Global,
        category: "Advanced",
        // Dynamic here: the orchestrator's sweep reads it every pass.
        dynamic: true,
        description: "Determines how long (in seconds) to wait before actually expunging destroyed vm. The default value = the default value of expunge.interval",
    },
    Setting {
        name: "saga.step.timeout",
        // Stratus's own: how long a saga waits for one step's result before
        // it fails the step and undoes the saga. Longer than a message's
        // retry budget (1 + 5 + 30 + 120 s of delay tiers).
        kind: Kind::Integer(Whole::Range(1, 86400)),
        default: "300",
        scope: Scope::Global,
        category: "Advanced",
        dynamic: true,
        description: "Seconds a VM job waits for one step (a component's or a host agent's answer) before it fails the job and undoes what the job did",
    },
    Setting {
        name: "incorrect.login.attempts.allowed",
        // CloudStack's `Config.IncorrectLoginAttemptsAllowed`: an Integer,
        // in `configValuesForValidation`, so above 0 (its description's
        // "<=0" cannot be set through updateConfiguration either).
        kind: Kind::Integer(Whole::Positive),
        default: "5",
        scope: Scope::Global,
        category: "Advanced",
        // Dynamic here (CloudStack reads it once, at start): every login reads it.
        dynamic: true,
        description: "Incorrect login attempts allowed before the user is disabled (when value > 0). If value <=0 users are not disabled after failed login attempts",
    },
    Setting {
        name: "api.throttling.enabled",
        // The rate-limit plugin's `Config.ApiLimitEnabled`.
        kind: Kind::Boolean,
        default: "false",
        scope: Scope::Global,
        category: "Advanced",
        // Dynamic here (a ConfigKey with isDynamic in recent CloudStack).
        dynamic: true,
        description: "Enable/disable Api rate limit",
    },
    Setting {
        name: "api.throttling.interval",
        // `Config.ApiLimitInterval`, an Integer with no bound in CloudStack.
        // Chosen: above 0. The window is this many seconds from an account's
        // first call; 0 would be Ehcache's "never expires" there (a limit
        // for life), and a negative window means nothing.
        kind: Kind::Integer(Whole::Positive),
        default: "1",
        scope: Scope::Global,
        category: "Advanced",
        dynamic: true,
        description: "Time interval (in seconds) to reset API count",
    },
    Setting {
        name: "api.throttling.max",
        // `Config.ApiLimitMax`, an Integer with no bound in CloudStack.
        // Chosen: above 0. At 0 or below every call of every account but
        // the root admin's would be refused: a lockout, not a rate.
        kind: Kind::Integer(Whole::Positive),
        default: "25",
        scope: Scope::Global,
        category: "Advanced",
        dynamic: true,
        description: "Max allowed number of APIs within fixed interval",
    },
    Setting {
        name: "api.throttling.cachesize",
        // `Config.ApiLimitCacheSize`, an Integer with no bound in CloudStack,
        // where it sizes each management server's Ehcache of counters
        // (beyond it, accounts' counters are evicted and start again).
        // Here the counters live in the data service, shared by every API
        // instance, one row per account, so nothing is evicted: the setting
        // is accepted and listed, as CloudStack's tools set it, and bounds
        // nothing. Chosen bound: above 0, as a size.
        kind: Kind::Integer(Whole::Positive),
        default: "50000",
        scope: Scope::Global,
        category: "Advanced",
        dynamic: true,
        description: "Account based API count cache size",
    },
];

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

/// What `updateConfiguration` stores for a given `value`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// This value (trimmed).
    Set(String),
    /// No value: the setting's default applies again. CloudStack writes
    /// `null`, which a string setting accepts and reads as its default.
    Default,
}

/// Java's `String.trim()`: every character up to U+0020 at either end, and
/// nothing else (so a no-break space stays, and fails to parse, as in Java).
fn java_trim(value: &str) -> &str {
    value.trim_matches(|c: char| c <= ' ')
}

impl Setting {
    /// Checks a present `value` against the setting's type and bounds.
    pub fn validate(&self, value: &str) -> Result<(), Invalid> {
        self.check(Some(java_trim(value)))
    }

    /// What `updateConfiguration` makes of the `value` it was given, as
    /// CloudStack's `ConfigurationManagerImpl.updateConfiguration(UpdateCfgCmd)`
    /// does: trimmed; empty (or `null`) is no value, which is `null` globally
    /// and an empty string for a zone, cluster, account or domain; then
    /// `validateConfigurationValue` checks it. So an empty value is refused
    /// by every number (neither `null` nor "" parses) and by a boolean, and
    /// puts a string setting back to its default.
    pub fn change(&self, given: &str, scoped: bool) -> Result<Change, Invalid> {
        let trimmed = java_trim(given);
        let value = match trimmed {
            "" | "null" if scoped => Some(""),
            "" | "null" => None,
            v => Some(v),
        };
        self.check(value)?;
        Ok(value.map_or(Change::Default, |v| Change::Set(v.to_string())))
    }

    /// `validateConfigurationValue`'s checks, in its order, with its texts;
    /// `None` is Java's `null`.
    fn check(&self, value: Option<&str>) -> Result<(), Invalid> {
        let name = self.name;
        let bad = |text: String| Err(Invalid::Value(text));
        let unparsed = |java: &str| {
            bad(format!(
                "There was error in trying to parse value: {}. Please enter a valid {java} value for parameter {name}",
                value.unwrap_or("null")
            ))
        };
        match self.kind {
            Kind::Boolean => {
                if value != Some("true") && value != Some("false") {
                    return bad("Please enter either 'true' or 'false'.".into());
                }
            }
            Kind::Integer(bounds) => {
                let Some(n) = value.and_then(|v| v.parse::<i32>().ok()) else {
                    return unparsed("integer");
                };
                return self.within(i64::from(n), bounds, i64::from(i32::MAX));
            }
            Kind::Long(bounds) => {
                let Some(n) = value.and_then(|v| v.parse::<i64>().ok()) else {
                    return unparsed("long");
                };
                return self.within(n, bounds, i64::MAX);
            }
            Kind::Float(bounds) => {
                // Java's Float.parseFloat also takes "NaN", "Infinity", an
                // overflow to Infinity, hex floats and a trailing f or d;
                // here a float is a finite decimal number, so none of those
                // parse: no bound can hold NaN, and every reader parses
                // what is stored.
                let Some(f) = value
                    .and_then(|v| v.parse::<f32>().ok())
                    .filter(|f| f.is_finite())
                else {
                    return unparsed("float");
                };
                match bounds {
                    Real::AboveZero if f <= 0.0 => {
                        return bad(format!("{name} should be greater than 0"));
                    }
                    Real::Between(min, max) if !(min..=max).contains(&f) => {
                        return bad(format!(
                            "Please enter a value between {min} and {max} for the configuration parameter: {name}"
                        ));
                    }
                    _ => {}
                }
            }
            Kind::String(options) => {
                // No value is a string setting's default: always fine.
                if let Some(v) = value
                    && !options.is_empty()
                    && !options.iter().any(|o| o.eq_ignore_ascii_case(v))
                {
                    return bad(format!(
                        "The provided value is not a valid value for this configuration (Options are: [{}]).",
                        options.join(",")
                    ));
                }
            }
        }
        Ok(())
    }

    /// An integer `n` (already within its type, whose largest is `top`)
    /// against its bounds.
    fn within(&self, n: i64, bounds: Whole, top: i64) -> Result<(), Invalid> {
        let (min, max) = match bounds {
            Whole::Positive => (1, top),
            Whole::Range(min, max) => (min, max),
        };
        if (min..=max).contains(&n) {
            return Ok(());
        }
        Err(Invalid::Value(match bounds {
            Whole::Positive => format!(
                "Please enter a positive value for the configuration parameter:{}",
                self.name
            ),
            Whole::Range(min, max) => format!(
                "The provided value is not valid for this configuration. Please enter an integer in the range: [{min}-{max}]"
            ),
        }))
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

    /// An integer setting's value; its default when what is stored is not
    /// valid (written around `updateConfiguration`, straight into the KV).
    fn integer(&self, setting: &'static Setting) -> i64 {
        checked(setting, &self.value(setting))
    }

    /// A float setting's value; its default when what is stored is not valid.
    fn float(&self, setting: &'static Setting) -> f64 {
        checked(setting, &self.value(setting))
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

/// `value` if it passes the setting's checks, else the default: readers
/// never see a value `updateConfiguration` would refuse.
fn checked<T: std::str::FromStr + Default>(setting: &Setting, value: &str) -> T {
    let valid = setting.validate(value).ok().map(|()| java_trim(value));
    valid
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| setting.default.parse().unwrap_or_default())
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
    pub fn expunge_delay() -> &'static Setting {
        get("expunge.delay")
    }
    pub fn saga_step_timeout() -> &'static Setting {
        get("saga.step.timeout")
    }
    pub fn ping_timeout() -> &'static Setting {
        get("ping.timeout")
    }
    pub fn incorrect_login_attempts_allowed() -> &'static Setting {
        get("incorrect.login.attempts.allowed")
    }
    pub fn api_throttling_enabled() -> &'static Setting {
        get("api.throttling.enabled")
    }
    pub fn api_throttling_interval() -> &'static Setting {
        get("api.throttling.interval")
    }
    pub fn api_throttling_max() -> &'static Setting {
        get("api.throttling.max")
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
        names::incorrect_login_attempts_allowed();
        names::api_throttling_enabled();
        names::api_throttling_interval();
        names::api_throttling_max();
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
            Err(Invalid::Value("There was error in trying to parse value: many. Please enter a valid long value for parameter default.page.size".into()))
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

    /// CloudStack's texts, spelled out once more here: a change to them in
    /// the code is caught.
    fn unparsed(s: &Setting, shown: &str) -> String {
        let java = match s.kind {
            Kind::Integer(_) => "integer",
            Kind::Long(_) => "long",
            Kind::Float(_) => "float",
            _ => unreachable!("{} is not a number", s.name),
        };
        format!(
            "There was error in trying to parse value: {shown}. Please enter a valid {java} value for parameter {}",
            s.name
        )
    }

    fn out_of_bounds(s: &Setting) -> String {
        match s.kind {
            Kind::Integer(Whole::Positive) | Kind::Long(Whole::Positive) => format!(
                "Please enter a positive value for the configuration parameter:{}",
                s.name
            ),
            Kind::Integer(Whole::Range(min, max)) | Kind::Long(Whole::Range(min, max)) => format!(
                "The provided value is not valid for this configuration. Please enter an integer in the range: [{min}-{max}]"
            ),
            Kind::Float(Real::AboveZero) => format!("{} should be greater than 0", s.name),
            Kind::Float(Real::Between(min, max)) => format!(
                "Please enter a value between {min} and {max} for the configuration parameter: {}",
                s.name
            ),
            Kind::Boolean => "Please enter either 'true' or 'false'.".into(),
            Kind::String(options) => format!(
                "The provided value is not a valid value for this configuration (Options are: [{}]).",
                options.join(",")
            ),
        }
    }

    /// Not a number of any kind, or not written as Java and Rust both read one.
    const NOT_NUMBERS: &[&str] = &[
        "",
        " ",
        " \t ",
        "abc",
        "true",
        "NaN",
        "nan",
        "-NaN",
        "inf",
        "-inf",
        "Infinity",
        "-Infinity",
        "1,5",
        "1 0",
        "1.5.1",
        "0x10",
        "0x1p3",
        "2.5f",
        "2.5d",
        "--1",
        "+",
        "-",
        ".",
        "e5",
        "1e",
        "\u{a0}5",
        "５",
        "1_000",
    ];

    /// For every setting: values refused, each with the text CloudStack
    /// answers, and values accepted.
    fn generated(s: &Setting) -> (Vec<(String, String)>, Vec<String>) {
        let mut bad: Vec<(String, String)> = Vec::new();
        let mut good: Vec<String> = vec![s.default.to_string()];
        let nines = "9".repeat(40);
        let not_parsed = |bad: &mut Vec<(String, String)>, v: &str| {
            bad.push((v.to_string(), unparsed(s, java_trim(v))));
        };
        match s.kind {
            Kind::Integer(bounds) | Kind::Long(bounds) => {
                let (type_min, type_max) = match s.kind {
                    Kind::Integer(_) => (i64::from(i32::MIN), i64::from(i32::MAX)),
                    _ => (i64::MIN, i64::MAX),
                };
                for v in NOT_NUMBERS.iter().chain(&["1.5", "1.0", "1e3", "5e0"]) {
                    not_parsed(&mut bad, v);
                }
                // Overflow, both ways: not a value of the type at all.
                for v in [
                    "99999999999999999999".to_string(),
                    "-99999999999999999999".to_string(),
                    (i128::from(type_max) + 1).to_string(),
                    (i128::from(type_min) - 1).to_string(),
                    nines.clone(),
                ] {
                    not_parsed(&mut bad, &v);
                }
                let (lo, hi) = match bounds {
                    Whole::Positive => (1, type_max),
                    Whole::Range(min, max) => (min, max),
                };
                assert!(type_min < lo && lo <= hi && hi <= type_max, "{}", s.name);
                // Below: the one under the least, 0 and negatives, the type's least.
                let mut below = vec![lo - 1, type_min, type_min + 1];
                below.extend([0, -1].into_iter().filter(|n| *n < lo));
                // Above: past the most (the type's most ends in overflow, above).
                let mut above = vec![];
                if hi < type_max {
                    above.extend([hi + 1, type_max]);
                }
                for n in below.into_iter().chain(above) {
                    bad.push((n.to_string(), out_of_bounds(s)));
                }
                good.extend(
                    [lo, hi, lo + (hi - lo) / 2]
                        .iter()
                        .map(i64::to_string)
                        .chain([format!(" {lo} "), format!("+{hi}"), format!("\t{hi}\n")]),
                );
            }
            Kind::Float(bounds) => {
                for v in NOT_NUMBERS {
                    not_parsed(&mut bad, v);
                }
                // Past the largest float: Java reads Infinity, refused here.
                for v in ["1e39", "-1e39", &nines, &format!("-{nines}")] {
                    not_parsed(&mut bad, v);
                }
                let mut below: Vec<String> =
                    ["0", "-0", "0.0", "-0.0", "-1", "-0.000001", "-3.4e38"]
                        .map(String::from)
                        .to_vec();
                let mut above = vec![];
                match bounds {
                    Real::AboveZero => {
                        good.extend(
                            ["1e-30", "0.5", "1", "+4.0", ".5", " 2.5 ", "3.4e38"]
                                .map(String::from),
                        );
                        // No bound above: the number of the task is a factor like any other.
                        good.push("99999999999999999999".into());
                    }
                    Real::Between(min, max) => {
                        assert!(0.0 < min && min < max, "{}", s.name);
                        let under = format!("{}", min - min / 1000.0);
                        let over = format!("{}", max + max / 1000.0);
                        below.extend(["1e-30".to_string(), under]);
                        above.extend([over, "99999999999999999999".into(), "3.4e38".into()]);
                        good.extend([
                            min.to_string(),
                            max.to_string(),
                            ((min + max) / 2.0).to_string(),
                            format!(" {min} "),
                            format!("+{max}"),
                        ]);
                    }
                }
                for v in below.into_iter().chain(above) {
                    bad.push((v, out_of_bounds(s)));
                }
            }
            Kind::Boolean => {
                for v in [
                    "",
                    " ",
                    "null",
                    "True",
                    "FALSE",
                    "yes",
                    "no",
                    "1",
                    "0",
                    "-1",
                    "t",
                    "NaN",
                    "true false",
                    "\u{a0}true",
                    "99999999999999999999",
                ] {
                    bad.push((v.to_string(), out_of_bounds(s)));
                }
                good.extend(["true", "false", " true ", "false\t"].map(String::from));
            }
            Kind::String(options) => {
                if !options.is_empty() {
                    for v in [
                        "",
                        " ",
                        "Nowhere",
                        "null",
                        "true",
                        "0",
                        "NaN",
                        "99999999999999999999",
                        &options.join(","),
                        &format!("{}x", options[0]),
                        &options[0][1..],
                        &format!("{} {}", options[0], options[0]),
                    ] {
                        bad.push((v.to_string(), out_of_bounds(s)));
                    }
                    for o in options {
                        good.extend([o.to_string(), o.to_uppercase(), format!(" {o} ")]);
                    }
                } else {
                    good.extend(["", "anything", "99999999999999999999"].map(String::from));
                }
            }
        }
        (bad, good)
    }

    #[test]
    fn every_setting_refuses_generated_bad_values_with_cloudstacks_texts() {
        let mut checked = 0;
        for s in REGISTRY {
            let (bad, good) = generated(s);
            // Only a free string has nothing to refuse.
            let free = s.kind == Kind::String(&[]);
            assert!(
                free || bad.len() >= 10,
                "{}: {} bad values",
                s.name,
                bad.len()
            );
            for (value, text) in &bad {
                assert_eq!(
                    s.validate(value),
                    Err(Invalid::Value(text.clone())),
                    "{} = {value:?}",
                    s.name
                );
                // Through updateConfiguration's path too, globally and for a
                // scope (except where empty means no value: below).
                let trimmed = java_trim(value);
                if !trimmed.is_empty() && trimmed != "null" {
                    for scoped in [false, true] {
                        assert_eq!(
                            s.change(value, scoped),
                            Err(Invalid::Value(text.clone())),
                            "{} = {value:?}",
                            s.name
                        );
                    }
                }
                // A stored bad value is never read: the default serves.
                let mut d = Defaults::default();
                d.overrides.insert(s.name, value.clone());
                assert_eq!(d.integer(s), Defaults::default().integer(s), "{}", s.name);
                assert_eq!(
                    d.float(s).to_bits(),
                    Defaults::default().float(s).to_bits(),
                    "{}",
                    s.name
                );
                checked += 1;
            }
            for value in &good {
                assert_eq!(s.validate(value), Ok(()), "{} = {value:?}", s.name);
                assert_eq!(
                    s.change(value, false),
                    Ok(Change::Set(java_trim(value).to_string())),
                    "{} = {value:?}",
                    s.name
                );
                let mut d = Defaults::default();
                d.overrides.insert(s.name, value.clone());
                match s.kind {
                    Kind::Integer(_) | Kind::Long(_) => {
                        assert_eq!(d.integer(s), java_trim(value).parse::<i64>().unwrap())
                    }
                    Kind::Float(_) => {
                        assert_eq!(d.float(s), java_trim(value).parse::<f64>().unwrap())
                    }
                    _ => {}
                }
            }
        }
        assert!(checked >= 20 * REGISTRY.len(), "{checked} bad values");
    }

    /// `value=` (or blanks, or "null"): CloudStack's `updateConfiguration`
    /// makes it `null` globally and "" for a scope, then validates that.
    #[test]
    fn an_empty_value_is_refused_by_numbers_and_booleans_and_resets_a_string() {
        for s in REGISTRY {
            for given in ["", "   ", "null", " null\t"] {
                let global = s.change(given, false);
                let scoped = s.change(given, true);
                match s.kind {
                    Kind::Integer(_) | Kind::Long(_) | Kind::Float(_) => {
                        assert_eq!(
                            global,
                            Err(Invalid::Value(unparsed(s, "null"))),
                            "{}",
                            s.name
                        );
                        assert_eq!(scoped, Err(Invalid::Value(unparsed(s, ""))), "{}", s.name);
                    }
                    Kind::Boolean => {
                        assert_eq!(global, Err(Invalid::Value(out_of_bounds(s))), "{}", s.name);
                        assert_eq!(scoped, Err(Invalid::Value(out_of_bounds(s))), "{}", s.name);
                    }
                    Kind::String(options) => {
                        assert_eq!(global, Ok(Change::Default), "{}", s.name);
                        if options.is_empty() {
                            assert_eq!(scoped, Ok(Change::Set(String::new())), "{}", s.name);
                        } else {
                            assert_eq!(scoped, Err(Invalid::Value(out_of_bounds(s))), "{}", s.name);
                        }
                    }
                }
            }
        }
        // The cases, literally.
        let timeout = names::ping_timeout();
        for v in ["0", "-1"] {
            assert_eq!(
                timeout.change(v, false),
                Err(Invalid::Value(
                    "Please enter a value between 1 and 100 for the configuration parameter: ping.timeout".into()
                ))
            );
        }
        assert_eq!(
            timeout.change("NaN", false),
            Err(Invalid::Value(
                "There was error in trying to parse value: NaN. Please enter a valid float value for parameter ping.timeout".into()
            ))
        );
        assert_eq!(
            names::ping_interval().change("0", false),
            Err(Invalid::Value(
                "Please enter a positive value for the configuration parameter:ping.interval"
                    .into()
            ))
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
