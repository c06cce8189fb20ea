//! `listConfigurations` and `updateConfiguration`: CloudStack's settings,
//! globally or for one zone, cluster, account or domain, read from and
//! written to the settings source (Consul's KV on the platform).

use futures::FutureExt;
use serde_json::{Value, json};
use stratus_cloudstack::envelope;
use stratus_cloudstack::{ApiError, Params};
use stratus_contracts::settings::{self, Change, Invalid, Scope, ScopeId, Setting};
use stratus_model::{Account, Cluster, Domain, Zone};

use super::{eq_param, named};
use crate::Ctx;
use crate::registry::{Command, Kind, ROOT, list_params, param, required};

pub fn commands() -> Vec<Command> {
    let scopes = || {
        [
            param(
                "zoneid",
                Kind::Uuid,
                "the ID of the Zone to update the parameter value for corresponding zone",
            ),
            param(
                "clusterid",
                Kind::Uuid,
                "the ID of the Cluster to update the parameter value for corresponding cluster",
            ),
            param(
                "accountid",
                Kind::Uuid,
                "the ID of the Account to update the parameter value for corresponding account",
            ),
            param(
                "domainid",
                Kind::Uuid,
                "the ID of the Domain to update the parameter value for corresponding domain",
            ),
        ]
    };
    let mut list = list_params(&[
        param("name", Kind::String, "lists configuration by name"),
        param("category", Kind::String, "lists configurations by category"),
    ]);
    list.extend(scopes());
    let mut update = vec![
        required("name", Kind::String, "the name of the configuration"),
        param("value", Kind::String, "the value of the configuration"),
    ];
    update.extend(scopes());
    let sample = configuration(&settings::REGISTRY[0], "500", None);
    vec![
        Command::sync(
            "listConfigurations",
            "Lists all configurations.",
            ROOT,
            list,
            "configuration",
            sample.clone(),
            |c, p| list_configurations(c, p).boxed(),
        ),
        Command::sync(
            "updateConfiguration",
            "Updates a configuration.",
            ROOT,
            update,
            "configuration",
            sample,
            |c, p| update_configuration(c, p).boxed(),
        ),
    ]
}

fn configuration(s: &Setting, value: &str, at: Option<&ScopeId>) -> Value {
    json!({
        "name": s.name,
        "value": value,
        "defaultvalue": s.default,
        "category": s.category,
        "scope": at.map_or(s.scope, |a| a.scope).name(),
        "isdynamic": s.dynamic,
        "description": s.description,
        "type": s.kind.name(),
    })
}

/// The one zone, cluster, account or domain the request names, checked to
/// exist; 431 when more than one is given.
async fn scope_of(ctx: &Ctx, p: &Params) -> Result<Option<ScopeId>, ApiError> {
    let given: Vec<&str> = ["zoneid", "clusterid", "accountid", "domainid"]
        .into_iter()
        .filter(|n| p.has(n))
        .collect();
    if given.len() > 1 {
        return Err(ApiError::invalid_parameter(
            "cannot handle multiple IDs, provide only one ID corresponding to the scope",
        ));
    }
    let Some(which) = given.first() else {
        return Ok(None);
    };
    let (scope, id) = match *which {
        "zoneid" => (
            Scope::Zone,
            named::<Zone>(ctx, p, which).await?.value.id.to_string(),
        ),
        "clusterid" => (
            Scope::Cluster,
            named::<Cluster>(ctx, p, which).await?.value.id.to_string(),
        ),
        "accountid" => (
            Scope::Account,
            named::<Account>(ctx, p, which).await?.value.id.to_string(),
        ),
        _ => (
            Scope::Domain,
            named::<Domain>(ctx, p, which).await?.value.id.to_string(),
        ),
    };
    Ok(Some(ScopeId { scope, id }))
}

async fn list_configurations(ctx: &Ctx, p: &Params) -> Result<Value, ApiError> {
    let at = scope_of(ctx, p).await?;
    let keyword = p.get("keyword").map(str::to_lowercase);
    let items: Vec<Value> = settings::REGISTRY
        .iter()
        .filter(|s| eq_param(p, "name", s.name) && eq_param(p, "category", s.category))
        .filter(|s| keyword.as_ref().is_none_or(|k| s.name.contains(k.as_str())))
        // For a zone, cluster, account or domain: the settings of that scope.
        .filter(|s| at.as_ref().is_none_or(|a| s.scope == a.scope))
        .map(|s| match &at {
            Some(a) => configuration(s, &ctx.settings.value_in(s, a), Some(a)),
            None => configuration(s, &ctx.settings.value(s), None),
        })
        .collect();
    let n = items.len() as u64;
    Ok(envelope::list("configuration", n, items))
}

/// CloudStack's order of checks: the name, then (with a value) the scope
/// ids, the scope, the value; nothing is written unless all pass. A value
/// given empty is not a missing one: as in CloudStack, it is checked as no
/// value (refused by numbers and booleans; a string goes back to its default).
async fn update_configuration(ctx: &Ctx, p: &Params) -> Result<Value, ApiError> {
    let name = p.get("name").unwrap_or_default();
    let setting = settings::find(name).ok_or_else(|| {
        ApiError::invalid_parameter(Invalid::Unknown(name.to_string()).to_string())
    })?;
    let at = scope_of(ctx, p).await?;
    if !p.has("value") {
        // No value at all: the current one, unchanged.
        let current = match &at {
            Some(a) => ctx.settings.value_in(setting, a),
            None => ctx.settings.value(setting),
        };
        return Ok(json!({ "configuration": configuration(setting, &current, at.as_ref()) }));
    }
    // `get` answers nothing for an empty value; it was given all the same.
    let given = p.get("value").unwrap_or_default();
    if let Some(a) = &at
        && !setting.allows(a.scope)
    {
        return Err(ApiError::invalid_parameter(
            Invalid::Scope(setting.name.to_string()).to_string(),
        ));
    }
    let change = setting
        .change(given, at.is_some())
        .map_err(|e| ApiError::invalid_parameter(e.to_string()))?;
    let value = match &change {
        Change::Set(v) => v.as_str(),
        Change::Default => setting.default,
    };
    ctx.settings
        .update(setting, at.as_ref(), value)
        .await
        .map_err(|e| {
            ApiError::internal(format!(
                "Unable to update configuration parameter {name}: {e}"
            ))
        })?;
    tracing::info!(setting = setting.name, value, scope = ?at, "configuration updated");
    Ok(json!({ "configuration": configuration(setting, value, at.as_ref()) }))
}
