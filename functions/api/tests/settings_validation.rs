//! `updateConfiguration` in process: every setting's bad values, an empty
//! `value=` among them, answered 431 with CloudStack's texts, and nothing
//! written; the settings source here is in memory and counts its writes.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use serde_json::Value;
use stratus_contracts::settings::{
    Pending, REGISTRY, ScopeId, Setting, SettingsSource, find, kv_key,
};
use stratus_fn_api::Api;
use stratus_model::samples::{Fixture, Sample};
use stratus_model::*;

mod common;
use common::Who;

/// Settings kept in memory under their KV keys, as Consul would keep them.
#[derive(Default)]
struct Memory {
    values: Mutex<BTreeMap<String, String>>,
    writes: AtomicUsize,
}

impl Memory {
    fn stored(&self, name: &str, at: Option<&ScopeId>) -> Option<String> {
        self.values.lock().unwrap().get(&kv_key(name, at)).cloned()
    }
}

impl SettingsSource for Memory {
    fn value(&self, setting: &'static Setting) -> String {
        self.stored(setting.name, None)
            .unwrap_or_else(|| setting.default.to_string())
    }

    fn value_in(&self, setting: &'static Setting, at: &ScopeId) -> String {
        self.stored(setting.name, Some(at))
            .unwrap_or_else(|| self.value(setting))
    }

    fn update<'a>(
        &'a self,
        setting: &'static Setting,
        at: Option<&'a ScopeId>,
        value: &'a str,
    ) -> Pending<'a, Result<(), String>> {
        self.writes.fetch_add(1, Ordering::SeqCst);
        self.values
            .lock()
            .unwrap()
            .insert(kv_key(setting.name, at), value.to_string());
        Box::pin(async { Ok(()) })
    }
}

/// A valid value other than the default for each setting, stored before
/// each case, so that "unchanged" and "back to the default" differ.
fn seeded(name: &str) -> &'static str {
    match name {
        "default.page.size" => "250",
        "api.sessionkey.check.locations" => "ParameterOnly",
        "session.timeout" => "900",
        "cpu.overprovisioning.factor" => "2.0",
        "mem.overprovisioning.factor" => "1.5",
        "ping.interval" => "30",
        "ping.timeout" => "3.5",
        // Booleans keep their defaults: the admin's keys must keep working.
        other => find(other).unwrap().default,
    }
}

struct World {
    api: Api,
    memory: Arc<Memory>,
    admin: Who,
    cluster: String,
    domain: String,
}

async fn world() -> World {
    let store = common::store();
    let root = common::domain(&store, "ROOT", None).await;
    let admin = common::person(&store, &root, "admin", AccountType::Admin).await;
    common::zone(&store).await;
    let cluster = Cluster::sample(&Fixture::default());
    store.create(&cluster).await.unwrap();
    let memory = Arc::new(Memory::default());
    World {
        api: Api::new(store, None, memory.clone(), common::secrets()),
        memory,
        admin,
        cluster: cluster.id.to_string(),
        domain: root.id.to_string(),
    }
}

impl World {
    async fn call(&self, params: &[(&str, &str)]) -> (u16, Value) {
        let (status, v) = common::call(&self.api, &self.admin, params).await;
        (status, v["updateconfigurationresponse"].clone())
    }

    /// Every setting back to its seeded value (globally, and for the
    /// cluster and the domain where it has that scope); the write count.
    fn seed(&self) -> usize {
        let mut values = self.memory.values.lock().unwrap();
        values.clear();
        for s in REGISTRY {
            values.insert(kv_key(s.name, None), seeded(s.name).into());
            for at in self.scopes(s) {
                values.insert(kv_key(s.name, Some(&at)), seeded(s.name).into());
            }
        }
        self.memory.writes.load(Ordering::SeqCst)
    }

    fn scopes(&self, s: &Setting) -> Vec<ScopeId> {
        let cluster = ScopeId {
            scope: stratus_contracts::settings::Scope::Cluster,
            id: self.cluster.clone(),
        };
        let domain = ScopeId {
            scope: stratus_contracts::settings::Scope::Domain,
            id: self.domain.clone(),
        };
        [cluster, domain]
            .into_iter()
            .filter(|a| a.scope == s.scope)
            .collect()
    }

    /// `updateConfiguration` of `name` to `value` (for one scope, if given)
    /// is refused with 431 and `text`, and nothing is written.
    async fn refused(&self, name: &str, value: &str, scope: Option<&ScopeId>, text: &str) {
        let writes = self.seed();
        let param = scope.map(|a| match a.scope {
            stratus_contracts::settings::Scope::Cluster => ("clusterid", a.id.as_str()),
            _ => ("domainid", a.id.as_str()),
        });
        let mut params = vec![
            ("command", "updateConfiguration"),
            ("name", name),
            ("value", value),
        ];
        params.extend(param);
        let (status, body) = self.call(&params).await;
        assert_eq!(
            (status, body["errortext"].as_str().unwrap_or_default()),
            (431, text),
            "{name} = {value:?} at {scope:?}: {body}"
        );
        assert_eq!(body["errorcode"], 431);
        assert_eq!(
            self.memory.writes.load(Ordering::SeqCst),
            writes,
            "{name} = {value:?}: written"
        );
        assert_eq!(
            self.memory.stored(name, scope).as_deref(),
            Some(seeded(name)),
            "{name} = {value:?}: the stored value changed"
        );
    }
}

/// The cases and an empty `value=` for every number, with
/// CloudStack's texts, spelled out.
#[tokio::test]
async fn bad_values_get_cloudstacks_431_and_change_nothing() {
    let w = world().await;
    let between =
        "Please enter a value between 1 and 100 for the configuration parameter: ping.timeout";
    let float = |name: &str, v: &str| {
        format!(
            "There was error in trying to parse value: {v}. Please enter a valid float value for parameter {name}"
        )
    };
    let integer = |name: &str, v: &str| {
        format!(
            "There was error in trying to parse value: {v}. Please enter a valid integer value for parameter {name}"
        )
    };
    let long = |name: &str, v: &str| {
        format!(
            "There was error in trying to parse value: {v}. Please enter a valid long value for parameter {name}"
        )
    };
    // ping.timeout took 0 and -1, and refused NaN with a factor's text.
    for v in ["0", "-1", "0.5", "100.5", "99999999999999999999", "-0"] {
        w.refused("ping.timeout", v, None, between).await;
    }
    for v in ["NaN", "Infinity", "-Infinity", "1e39", "2.5f", "abc", "1 0"] {
        w.refused("ping.timeout", v, None, &float("ping.timeout", v))
            .await;
    }
    // An empty value is no value: `null` globally, which no number parses.
    for v in ["", "   ", "null"] {
        w.refused("ping.timeout", v, None, &float("ping.timeout", "null"))
            .await;
        w.refused("ping.interval", v, None, &integer("ping.interval", "null"))
            .await;
        w.refused(
            "session.timeout",
            v,
            None,
            &integer("session.timeout", "null"),
        )
        .await;
        w.refused(
            "default.page.size",
            v,
            None,
            &long("default.page.size", "null"),
        )
        .await;
        for name in ["api.key.access", "enforce.post.requests.and.timestamps"] {
            w.refused(name, v, None, "Please enter either 'true' or 'false'.")
                .await;
        }
    }
    let positive = "Please enter a positive value for the configuration parameter:ping.interval";
    for v in ["0", "-1", "-2147483648"] {
        w.refused("ping.interval", v, None, positive).await;
    }
    for v in ["99999999999999999999", "2147483648", "1.5", "NaN"] {
        w.refused("ping.interval", v, None, &integer("ping.interval", v))
            .await;
    }
    let pages = "The provided value is not valid for this configuration. Please enter an integer in the range: [1-2147483647]";
    for v in ["0", "-1", "2147483648"] {
        w.refused("default.page.size", v, None, pages).await;
    }
    w.refused(
        "default.page.size",
        "99999999999999999999",
        None,
        &long("default.page.size", "99999999999999999999"),
    )
    .await;
    let sessions = "The provided value is not valid for this configuration. Please enter an integer in the range: [60-86400]";
    for v in ["59", "0", "-1", "86401"] {
        w.refused("session.timeout", v, None, sessions).await;
    }
    // Cluster factors: above 0; for a cluster, an empty value is "".
    let cluster = ScopeId {
        scope: stratus_contracts::settings::Scope::Cluster,
        id: w.cluster.clone(),
    };
    for name in ["cpu.overprovisioning.factor", "mem.overprovisioning.factor"] {
        let above = format!("{name} should be greater than 0");
        for at in [None, Some(&cluster)] {
            for v in ["0", "-1", "-0.5"] {
                w.refused(name, v, at, &above).await;
            }
            for v in ["NaN", "Infinity", "1e39"] {
                w.refused(name, v, at, &float(name, v)).await;
            }
        }
        w.refused(name, "", None, &float(name, "null")).await;
        for v in ["", "  ", "null"] {
            w.refused(name, v, Some(&cluster), &float(name, "")).await;
        }
    }
    let domain = ScopeId {
        scope: stratus_contracts::settings::Scope::Domain,
        id: w.domain.clone(),
    };
    for v in ["", "yes", "True"] {
        w.refused(
            "api.key.access",
            v,
            Some(&domain),
            "Please enter either 'true' or 'false'.",
        )
        .await;
    }
    w.refused(
        "api.sessionkey.check.locations",
        "Nowhere",
        None,
        "The provided value is not a valid value for this configuration (Options are: [CookieAndParameter,CookieOrParameter,ParameterOnly]).",
    )
    .await;
}

/// Values no number takes: negatives (no numeric setting here takes one),
/// NaN, infinities, floats past the largest, and no value at all.
const NEVER_A_NUMBER: &[&str] = &[
    "-1",
    "NaN",
    "nan",
    "Infinity",
    "-Infinity",
    "inf",
    "1e39",
    "",
    "  ",
    "null",
];
const NEVER_A_BOOLEAN: &[&str] = &["", "  ", "null", "True", "FALSE", "1", "0", "yes"];

/// Every setting in the registry, with values generated for no type in
/// particular: each is refused with the registry's text, or accepted, and
/// only an accepted one is written. What no number (or boolean) may take,
/// the registry must refuse.
#[tokio::test]
async fn every_setting_answers_generated_values_as_its_registry_entry_says() {
    let w = world().await;
    let nines = "9".repeat(40);
    let values = [
        "0",
        "-1",
        "1",
        "2",
        "59",
        "60",
        "100",
        "101",
        "0.5",
        "1.5",
        "-0",
        "NaN",
        "nan",
        "inf",
        "Infinity",
        "-Infinity",
        "1e39",
        "abc",
        "1 0",
        "1,5",
        "0x10",
        "2.5f",
        "true",
        "false",
        "True",
        "FALSE",
        "yes",
        "ParameterOnly",
        "Nowhere",
        "2147483647",
        "2147483648",
        "-2147483649",
        "99999999999999999999",
        &nines,
        "",
        "  ",
        "null",
    ];
    let mut refusals = 0;
    for s in REGISTRY {
        let never = match s.kind.name() {
            "Integer" | "Long" | "Float" => NEVER_A_NUMBER,
            "Boolean" => NEVER_A_BOOLEAN,
            _ => &[],
        };
        for v in values {
            // Blank is no value: CloudStack's `null`, globally.
            let blank = matches!(v.trim(), "" | "null");
            let verdict = s.validate(if blank { "null" } else { v });
            if never.contains(&v) {
                assert!(verdict.is_err(), "{} takes {v:?}", s.name);
            }
            match verdict {
                Err(_) if blank && s.kind.name() == "String" => {
                    // A string setting given no value: its default again.
                    let writes = w.seed();
                    let (status, body) = w
                        .call(&[
                            ("command", "updateConfiguration"),
                            ("name", s.name),
                            ("value", v),
                        ])
                        .await;
                    assert_eq!(status, 200, "{} = {v:?}: {body}", s.name);
                    assert_eq!(body["configuration"]["value"], s.default);
                    assert_eq!(w.memory.writes.load(Ordering::SeqCst), writes + 1);
                    assert_eq!(w.memory.stored(s.name, None).as_deref(), Some(s.default));
                }
                Err(e) => {
                    w.refused(s.name, v, None, &e.to_string()).await;
                    refusals += 1;
                }
                Ok(()) => {
                    let writes = w.seed();
                    let (status, body) = w
                        .call(&[
                            ("command", "updateConfiguration"),
                            ("name", s.name),
                            ("value", v),
                        ])
                        .await;
                    assert_eq!(status, 200, "{} = {v:?}: {body}", s.name);
                    assert_eq!(body["configuration"]["value"], v, "{}", s.name);
                    assert_eq!(w.memory.writes.load(Ordering::SeqCst), writes + 1);
                    assert_eq!(w.memory.stored(s.name, None).as_deref(), Some(v));
                }
            }
        }
    }
    assert!(refusals > 200, "{refusals} refusals");
}

/// Without `value` the answer is the current value and nothing is written
/// (CloudStack returns the configuration as it is); an empty `value=` of a
/// string setting is CloudStack's `null`: the default again, not a no-op.
#[tokio::test]
async fn no_value_changes_nothing_and_an_empty_string_value_restores_the_default() {
    let w = world().await;
    let writes = w.seed();
    let (status, body) = w
        .call(&[("command", "updateConfiguration"), ("name", "ping.timeout")])
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["configuration"]["value"], "3.5");
    assert_eq!(w.memory.writes.load(Ordering::SeqCst), writes);

    let name = "api.sessionkey.check.locations";
    for v in ["", "  ", "null"] {
        let writes = w.seed();
        let (status, body) = w
            .call(&[
                ("command", "updateConfiguration"),
                ("name", name),
                ("value", v),
            ])
            .await;
        assert_eq!(status, 200, "{v:?}: {body}");
        assert_eq!(body["configuration"]["value"], "CookieAndParameter");
        assert_eq!(w.memory.writes.load(Ordering::SeqCst), writes + 1);
        assert_eq!(
            w.memory.stored(name, None).as_deref(),
            Some("CookieAndParameter")
        );
    }
    // A padded value is stored trimmed, as CloudStack stores it.
    w.seed();
    let (status, body) = w
        .call(&[
            ("command", "updateConfiguration"),
            ("name", "ping.timeout"),
            ("value", " 1.5 "),
        ])
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        w.memory.stored("ping.timeout", None).as_deref(),
        Some("1.5")
    );
}
