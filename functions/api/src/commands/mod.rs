//! The registered commands and the list machinery they share.

mod accounts;
mod configuration;
mod reads;
mod vms;

use futures::FutureExt;
use serde_json::{Value, json};
use stratus_cloudstack::envelope::{self, CLOUDSTACK_VERSION};
use stratus_cloudstack::{ApiError, Params};
use stratus_contracts::settings::names;
use stratus_model::samples::{Fixture, Sample};
use stratus_model::{Account, AccountType, Domain, Id, Object, Zone};
use stratus_store::Index;

use crate::registry::{ALL, Command, Field, Kind, Registry, field, list_of, param};
use crate::scope::Names;
use crate::{Ctx, store_error};
use stratus_cloudstack::views;

pub fn registry() -> Registry {
    let mut commands = vec![
        Command::sync(
            "listZones",
            "Lists zones",
            ALL,
            list_of(
                Names::public(Zone::KIND),
                &[
                    param(
                        "available",
                        Kind::Boolean,
                        "true if you want to retrieve all available zones",
                    ),
                    param(
                        "networktype",
                        Kind::String,
                        "the network type of the zone that the virtual machine belongs to",
                    ),
                    param(
                        "showcapacities",
                        Kind::Boolean,
                        "flag to display the capacity of the zones",
                    ),
                ],
            ),
            "zone",
            views::zone(&Zone::sample(&Fixture::default())),
            |ctx, p| list_zones(ctx, p).boxed(),
        ),
        Command {
            name: "listApis",
            description: "lists all available apis on the server, provided by the Api Discovery plugin",
            since: "4.1.0",
            is_async: false,
            roles: ALL,
            params: vec![param("name", Kind::String, "API name")],
            response: api_fields(),
            related: "",
            handler: |ctx, p| list_apis(ctx, p).boxed(),
        },
        Command {
            name: "listCapabilities",
            description: "Lists capabilities",
            since: "",
            is_async: false,
            roles: ALL,
            params: vec![],
            response: capability_fields(),
            related: "",
            handler: |ctx, p| list_capabilities(ctx, p).boxed(),
        },
    ];
    commands.extend(accounts::commands());
    commands.extend(reads::commands());
    commands.extend(configuration::commands());
    commands.extend(vms::commands());
    Registry::new(commands)
}

fn api_fields() -> Vec<Field> {
    vec![
        field("name", "string", "the name of the api command"),
        field("description", "string", "description of the api"),
        field("isasync", "boolean", "true if api is asynchronous"),
        field(
            "since",
            "string",
            "version of CloudStack the api was introduced in",
        ),
        field("related", "string", "comma separated related apis"),
        field("type", "string", "response field type"),
        field("params", "set", "the list params the api accepts"),
        field("response", "set", "api response fields"),
    ]
}

fn capability_fields() -> Vec<Field> {
    vec![
        field("cloudstackversion", "string", "version of the cloud stack"),
        field(
            "securitygroupsenabled",
            "boolean",
            "true if any of the zones has security groups enabled",
        ),
        field(
            "defaultuipagesize",
            "long",
            "default page size in the UI for various views",
        ),
        field(
            "apilimitinterval",
            "integer",
            "time interval (in seconds) to reset api count",
        ),
        field(
            "apilimitmax",
            "integer",
            "Max allowed number of api requests within the specified interval",
        ),
    ]
}

/// `page` and `pagesize` as CloudStack checks them: both or neither (but
/// `pagesize=-1` alone means everything); a page size within
/// `default.page.size`; no page given means the first `default.page.size` rows.
/// `None` means every matching row.
pub fn paging(ctx: &Ctx, p: &Params) -> Result<Option<(u64, usize)>, ApiError> {
    let max = ctx.settings.integer(names::default_page_size()).max(1);
    let page = p.get("page").map(|v| v.parse::<i64>().unwrap_or(0));
    let size = p.get("pagesize").map(|v| v.parse::<i64>().unwrap_or(0));
    match (page, size) {
        (None, Some(-1)) => Ok(None),
        (None, Some(_)) => Err(ApiError::invalid_parameter(
            "\"page\" parameter is required when \"pagesize\" is specified",
        )),
        (_, Some(s)) if s > max => Err(ApiError::invalid_parameter(format!(
            "Page size can't exceed max allowed page size value: {max}"
        ))),
        (_, Some(s)) if s < 1 => Err(ApiError::invalid_parameter(
            "Page size should be greater than zero",
        )),
        (Some(n), _) if n < 1 => Err(ApiError::invalid_parameter(
            "Page number should be greater than zero",
        )),
        (page, size) => Ok(Some((
            page.unwrap_or(1) as u64,
            size.unwrap_or(max) as usize,
        ))),
    }
}

/// A list command over objects of `T` under `index`: by `id` (431 with the
/// not-found text for an id that names nothing; an empty list for one the
/// caller may not see), else a page served by the store's counters and
/// cursors, or, when `filter` narrows beyond the index, a filtered walk.
pub async fn list<T: Object>(
    ctx: &Ctx,
    p: &Params,
    index: Index,
    item_key: &str,
    narrows: bool,
    filter: impl Fn(&T) -> bool,
    view: impl Fn(&T) -> Value,
) -> Result<Value, ApiError> {
    let keyword = p.get("keyword").map(str::to_lowercase);
    let matches = |t: &T| {
        filter(t)
            && keyword.as_ref().is_none_or(|k| {
                serde_json::to_value(t)
                    .ok()
                    .and_then(|v| {
                        v.get("name")
                            .and_then(|n| n.as_str())
                            .map(str::to_lowercase)
                    })
                    .is_some_and(|n| n.contains(k.as_str()))
            })
    };
    if let Some(id) = p.get("id") {
        let uuid: uuid::Uuid = id
            .parse()
            .map_err(|_| ApiError::entity_not_found(ctx.command, "id", id))?;
        let found = ctx
            .store
            .get::<T>(stratus_model::Id::from_uuid(uuid))
            .await
            .map_err(store_error)?
            .ok_or_else(|| ApiError::entity_not_found(ctx.command, "id", id))?;
        let items: Vec<Value> = [found.value]
            .iter()
            .filter(|t| matches(t))
            .map(&view)
            .collect();
        let n = items.len() as u64;
        return Ok(envelope::list(item_key, n, items));
    }
    let paging = paging(ctx, p)?;
    if let (Some((page, size)), false, None) = (paging, narrows, &keyword) {
        let got = ctx
            .store
            .page::<T>(&index, page, size)
            .await
            .map_err(store_error)?;
        let items = got.items.iter().map(|v| view(&v.value)).collect();
        return Ok(envelope::list(item_key, got.count, items));
    }
    // A filter the indexes do not serve: walk the index, keep the matches.
    let all: Vec<T> = walk::<T>(ctx, &index)
        .await?
        .into_iter()
        .filter(|t| matches(t))
        .collect();
    let count = all.len() as u64;
    let items = window(paging, all).iter().map(&view).collect();
    Ok(envelope::list(item_key, count, items))
}

/// The page `paging` asks for out of `items` (all of them for `None`).
pub fn window<T>(paging: Option<(u64, usize)>, items: Vec<T>) -> Vec<T> {
    match paging {
        None => items,
        Some((page, size)) => items
            .into_iter()
            .skip(((page - 1) as usize).saturating_mul(size))
            .take(size)
            .collect(),
    }
}

/// A list already filtered in memory, paged as the request asks.
pub fn page_in_memory(
    ctx: &Ctx,
    p: &Params,
    key: &str,
    items: Vec<Value>,
) -> Result<Value, ApiError> {
    let count = items.len() as u64;
    Ok(envelope::list(key, count, window(paging(ctx, p)?, items)))
}

async fn list_zones(ctx: &Ctx, p: &Params) -> Result<Value, ApiError> {
    let network_type = p.get("networktype").map(str::to_string);
    let narrows = network_type.is_some();
    list::<Zone>(
        ctx,
        p,
        Index::All,
        "zone",
        narrows,
        |z| {
            network_type
                .as_ref()
                .is_none_or(|t| stratus_model::state_name(&z.network_type).eq_ignore_ascii_case(t))
        },
        views::zone,
    )
    .await
}

async fn list_apis(ctx: &Ctx, p: &Params) -> Result<Value, ApiError> {
    let wanted = p.get("name");
    let apis: Vec<Value> = ctx
        .registry
        .all()
        .iter()
        .filter(|c| c.roles.contains(&ctx.caller.role))
        .filter(|c| wanted.is_none_or(|w| c.name.eq_ignore_ascii_case(w)))
        .map(api_view)
        .collect();
    if apis.is_empty()
        && let Some(w) = wanted
    {
        return Err(ApiError::invalid_parameter(format!(
            "The API {w} does not exist or is not available for this account."
        )));
    }
    let n = apis.len() as u64;
    Ok(envelope::list("api", n, apis))
}

fn api_view(c: &Command) -> Value {
    json!({
        "name": c.name,
        "description": c.description,
        "isasync": c.is_async,
        "since": c.since,
        "related": c.related,
        "type": "",
        "params": c.params.iter().map(|p| json!({
            "name": p.name,
            "description": p.description,
            "type": p.kind.name(),
            "length": p.length,
            "required": p.required,
            "since": "",
            "related": "",
        })).collect::<Vec<_>>(),
        "response": c.response.iter().map(|f| json!({
            "name": f.name,
            "description": f.description,
            "type": f.kind,
        })).collect::<Vec<_>>(),
    })
}

async fn list_capabilities(ctx: &Ctx, _p: &Params) -> Result<Value, ApiError> {
    Ok(json!({
        "capability": {
            "cloudstackversion": CLOUDSTACK_VERSION,
            "securitygroupsenabled": false,
            "userpublictemplateenabled": true,
            "allowuserviewdestroyedvm": false,
            "allowuserexpungerecovervm": false,
            "kvmsnapshotenabled": false,
            "dynamicrolesenabled": false,
            "defaultuipagesize": ctx.settings.integer(names::default_page_size()),
            "apilimitinterval": 1,
            "apilimitmax": 0,
        }
    }))
}

/// Whose objects a list shows: the caller's own account unless an admin asks
/// for another (`account` + `domainid`), for one object by `id`, or for all it
/// may see (`listall=true`; a domain admin sees its domain and those below).
pub enum Owners {
    All,
    One(Id<Account>),
    Within(std::collections::HashSet<Id<Account>>),
}

impl Owners {
    pub fn holds(&self, a: Id<Account>) -> bool {
        match self {
            Owners::All => true,
            Owners::One(one) => *one == a,
            Owners::Within(set) => set.contains(&a),
        }
    }

    pub fn index(&self) -> Index {
        match self {
            Owners::One(a) => Index::Account(a.uuid()),
            _ => Index::All,
        }
    }

    /// Whether the index alone does not select exactly these owners.
    pub fn narrows(&self) -> bool {
        matches!(self, Owners::Within(_))
    }
}

pub fn flag(p: &Params, name: &str) -> bool {
    p.get(name).is_some_and(|v| v.eq_ignore_ascii_case("true"))
}

/// The owners a list shows. A `domainid` or `id` outside the caller's scope
/// never gets here: the one scope check ([`crate::scope`]) answered already.
pub async fn owners(ctx: &Ctx, p: &Params) -> Result<Owners, ApiError> {
    use crate::registry::Role;
    let me = ctx.caller.account.id;
    if ctx.caller.role == Role::User {
        return Ok(Owners::One(me));
    }
    if let Some(name) = p.get("account") {
        let domain_id = match id_param::<Domain>(ctx, p, "domainid")? {
            Some(d) => d,
            None => ctx.caller.account.domain_id,
        };
        let domain = ctx
            .store
            .get::<Domain>(domain_id)
            .await
            .map_err(store_error)?
            .ok_or_else(|| {
                ApiError::entity_not_found(ctx.command, "domainid", &domain_id.to_string())
            })?
            .value;
        let id = Account::id_for(domain.id, name);
        if ctx
            .store
            .get::<Account>(id)
            .await
            .map_err(store_error)?
            .is_none()
        {
            return Err(ApiError::invalid_parameter(format!(
                "Unable to find account {name} in domain id={}",
                domain.id
            )));
        }
        return Ok(Owners::One(id));
    }
    // By id, an admin's list shows the object wherever it is in its scope,
    // with or without `listall`, as CloudStack's does.
    if p.has("id") || (flag(p, "listall") && ctx.caller.role == Role::RootAdmin) {
        return Ok(Owners::All);
    }
    if !flag(p, "listall") {
        return Ok(Owners::One(me));
    }
    // A domain admin: every account of its domain and the domains below.
    let own_domain = get::<Domain>(ctx, ctx.caller.account.domain_id).await?;
    let domains = all::<Domain>(ctx).await?;
    let accounts = all::<Account>(ctx).await?;
    Ok(Owners::Within(
        accounts
            .into_iter()
            .filter(|a| {
                domains
                    .iter()
                    .find(|d| d.id == a.domain_id)
                    .is_some_and(|d| within(d, &own_domain, ctx))
            })
            .map(|a| a.id)
            .collect(),
    ))
}

/// Whether `d` is `top` or below it (root admins see every domain).
pub fn within(d: &Domain, top: &Domain, ctx: &Ctx) -> bool {
    ctx.caller.account.account_type == AccountType::Admin || crate::scope::contains(top, d)
}

/// An object that must exist (a 530 if the store lost one we point to).
pub async fn get<T: Object>(ctx: &Ctx, id: Id<T>) -> Result<T, ApiError> {
    ctx.store
        .get::<T>(id)
        .await
        .map_err(store_error)?
        .map(|v| v.value)
        .ok_or_else(|| ApiError::internal(format!("{} {id} is missing", T::KIND)))
}

/// The object a parameter names, or the 431 not-found text.
pub async fn named<T: Object>(
    ctx: &Ctx,
    p: &Params,
    param: &str,
) -> Result<stratus_store::Versioned<T>, ApiError> {
    let raw = p
        .get(param)
        .ok_or_else(|| ApiError::missing_parameter(ctx.command, param))?;
    let id: Id<T> = raw
        .parse()
        .map_err(|_| ApiError::entity_not_found(ctx.command, param, raw))?;
    ctx.store
        .get::<T>(id)
        .await
        .map_err(store_error)?
        .ok_or_else(|| ApiError::entity_not_found(ctx.command, param, raw))
}

/// Every object of `T` under `index`.
pub async fn walk<T: Object>(ctx: &Ctx, index: &Index) -> Result<Vec<T>, ApiError> {
    let all = ctx.store.walk::<T>(index).await.map_err(store_error)?;
    Ok(all.into_iter().map(|v| v.value).collect())
}

/// Every object of a kind (small kinds only: domains, accounts).
pub async fn all<T: Object>(ctx: &Ctx) -> Result<Vec<T>, ApiError> {
    walk(ctx, &Index::All).await
}

/// A parameter that must parse as an id when given (431 with the not-found text otherwise).
pub fn id_param<T>(ctx: &Ctx, p: &Params, name: &str) -> Result<Option<Id<T>>, ApiError> {
    p.get(name)
        .map(|v| {
            v.parse::<Id<T>>()
                .map_err(|_| ApiError::entity_not_found(ctx.command, name, v))
        })
        .transpose()
}

/// Case-insensitive equality of a filter parameter and a value, true when the parameter is absent.
pub fn eq_param(p: &Params, name: &str, value: &str) -> bool {
    p.get(name).is_none_or(|v| v.eq_ignore_ascii_case(value))
}
