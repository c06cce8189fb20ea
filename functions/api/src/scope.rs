//! The one scope check. Every uuid parameter of a command says, in the
//! registry, what it names ([`Names`]); before any handler runs, `dispatch`
//! finds where each named object stands and refuses one outside the caller's
//! scope: a user's scope is its own account, a domain admin's its domain and
//! the domains below, a root admin's everything. A read answers as if the
//! object were not there (a list's empty `{}`), anything else 531, as
//! CloudStack answers. No handler checks scope itself.

use futures::FutureExt;
use futures::future::BoxFuture;
use serde_json::{Value, json};
use stratus_cloudstack::{ApiError, Params};
use stratus_model::*;
use uuid::Uuid;

use crate::registry::{Command, Kind, Role};
use crate::{Caller, Ctx, store_error};

/// Where an object stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Place {
    /// Everyone's (zones, the fabric, offerings, public templates): only the
    /// role check guards the commands on it.
    Everywhere,
    /// A domain itself.
    Domain(Id<Domain>),
    /// One account's.
    Account(Id<Account>),
}

/// Where the object with this id stands; `None` when there is no such
/// object (the handler then answers its not-found 431).
pub type Locate = for<'a> fn(&'a Ctx, Uuid) -> BoxFuture<'a, Result<Option<Place>, ApiError>>;

/// How a command answers when a parameter names an object outside the caller's scope.
#[derive(Clone, Copy)]
pub enum Outside {
    /// As if the object were not there: a read's empty list, `{}`.
    Unseen,
    /// 531 with this text, of the caller and the id as given (nothing of the object's).
    Denied(fn(&Caller, &str) -> String),
}

/// What a uuid parameter names.
#[derive(Clone, Copy)]
pub struct Names {
    /// The store's kind of the object named (`vm`, `asyncjob`, ...), or
    /// `resource` for an object of any owned kind.
    pub kind: &'static str,
    pub locate: Locate,
    pub outside: Outside,
}

impl std::fmt::Debug for Names {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let outside = match self.outside {
            Outside::Unseen => "unseen",
            Outside::Denied(_) => "denied",
        };
        write!(f, "Names({}, {outside})", self.kind)
    }
}

impl Names {
    /// An object everyone may name (a zone, a host, an offering).
    pub fn public(kind: &'static str) -> Names {
        Names {
            kind,
            locate: everywhere,
            outside: Outside::Unseen,
        }
    }

    /// An object one account owns (its store key `account`): a VM, a job, a
    /// user, an account itself.
    pub fn owned<T: Object>(outside: Outside) -> Names {
        Names {
            kind: T::KIND,
            locate: by_owner::<T>,
            outside,
        }
    }

    /// A domain.
    pub fn domain(outside: Outside) -> Names {
        Names {
            kind: Domain::KIND,
            locate: domain,
            outside,
        }
    }

    /// A template: everyone's when public, else its owner's.
    pub fn template(outside: Outside) -> Names {
        Names {
            kind: Template::KIND,
            locate: template,
            outside,
        }
    }

    /// An object of any kind an account owns (an event's resource).
    pub fn resource(outside: Outside) -> Names {
        Names {
            kind: "resource",
            locate: resource,
            outside,
        }
    }
}

/// An owned object a read names: out of scope, the list is empty.
pub fn read<T: Object>() -> Names {
    Names::owned::<T>(Outside::Unseen)
}

/// An owned object a command acts on: out of scope, 531.
pub fn act_on<T: Object>() -> Names {
    Names::owned::<T>(Outside::Denied(not_permitted))
}

/// A domain a command works within: out of scope, 531 (CloudStack's
/// `checkAccess(caller, domain)`, for every `domainid`).
pub fn within_domain() -> Names {
    Names::domain(Outside::Denied(outside_domain))
}

/// CloudStack's text (`DomainChecker`) for an account's object the caller may not operate on.
pub fn not_permitted(_caller: &Caller, _id: &str) -> String {
    "Caller does not have permission to operate with provided resource.".into()
}

/// CloudStack's text (`DomainChecker.checkAccess(caller, domain)`) for a domain outside the caller's.
pub fn outside_domain(caller: &Caller, id: &str) -> String {
    format!(
        "Account {} does not have permission to operate within domain id={id}",
        caller.account.name
    )
}

/// CloudStack's texts for `queryAsyncJobResult` of another's job
/// (`ApiResponseHelper.queryJobResult`): its own for a user, `checkAccess`'s
/// for a domain admin.
pub fn unseen_job(caller: &Caller, id: &str) -> String {
    match caller.role {
        Role::User => format!(
            "Account {} is not authorized to see job id={id}",
            caller.account.name
        ),
        _ => not_permitted(caller, id),
    }
}

/// The check `dispatch` runs for every command before its handler: `None`
/// when every object the parameters name is within the caller's scope (or
/// does not exist), else the answer for the first that is not: an empty
/// list for a read, a 531 otherwise.
pub async fn check(ctx: &Ctx, cmd: &Command, p: &Params) -> Result<Option<Value>, ApiError> {
    if ctx.caller.role == Role::RootAdmin {
        return Ok(None);
    }
    for param in &cmd.params {
        let (Some(names), Some(raw)) = (param.names, p.get(param.name)) else {
            continue;
        };
        // A list of ids (e.g. `networkids`) names each of them.
        let ids: Vec<&str> = match param.kind {
            Kind::List => raw.split(',').map(str::trim).collect(),
            _ => vec![raw],
        };
        let mut outside = None;
        for raw in ids {
            // A malformed id was answered by the parameter check (or is the handler's 431).
            let Ok(id) = raw.parse::<Uuid>() else {
                continue;
            };
            let Some(place) = (names.locate)(ctx, id).await? else {
                continue;
            };
            if !holds(ctx, place).await? {
                outside = Some(id);
                break;
            }
        }
        let Some(id) = outside else {
            continue;
        };
        tracing::info!(
            command = cmd.name,
            param = param.name,
            caller = %ctx.caller.account.id,
            "an object outside the caller's scope"
        );
        return match names.outside {
            Outside::Unseen => Ok(Some(json!({}))),
            Outside::Denied(text) => Err(ApiError::permission_denied(text(
                &ctx.caller,
                &id.to_string(),
            ))),
        };
    }
    Ok(None)
}

/// Whether `place` is within the caller's scope.
pub async fn holds(ctx: &Ctx, place: Place) -> Result<bool, ApiError> {
    let me = &ctx.caller.account;
    match (ctx.caller.role, place) {
        (Role::RootAdmin, _) | (_, Place::Everywhere) => Ok(true),
        (_, Place::Account(a)) if a == me.id => Ok(true),
        (Role::User, Place::Account(_)) => Ok(false),
        (Role::User, Place::Domain(d)) => Ok(d == me.domain_id),
        (Role::DomainAdmin, Place::Domain(d)) => below_own(ctx, d).await,
        (Role::DomainAdmin, Place::Account(a)) => {
            match ctx.store.get::<Account>(a).await.map_err(store_error)? {
                Some(owner) => below_own(ctx, owner.value.domain_id).await,
                None => Ok(false),
            }
        }
    }
}

/// Whether domain `d` is the caller's or below it.
async fn below_own(ctx: &Ctx, d: Id<Domain>) -> Result<bool, ApiError> {
    let own = ctx.caller.account.domain_id;
    if d == own {
        return Ok(true);
    }
    let get = |id| async move {
        ctx.store
            .get::<Domain>(id)
            .await
            .map(|v| v.map(|v| v.value))
            .map_err(store_error)
    };
    match (get(d).await?, get(own).await?) {
        (Some(theirs), Some(mine)) => Ok(contains(&mine, &theirs)),
        _ => Ok(false),
    }
}

/// Whether `d` is `top` or a domain below it.
pub fn contains(top: &Domain, d: &Domain) -> bool {
    d.id == top.id
        || d.path
            .to_lowercase()
            .starts_with(&format!("{}/", top.path.to_lowercase()))
}

fn everywhere(_ctx: &Ctx, _id: Uuid) -> BoxFuture<'_, Result<Option<Place>, ApiError>> {
    async { Ok(Some(Place::Everywhere)) }.boxed()
}

async fn find<T: Object>(ctx: &Ctx, id: Uuid) -> Result<Option<T>, ApiError> {
    Ok(ctx
        .store
        .get::<T>(Id::from_uuid(id))
        .await
        .map_err(store_error)?
        .map(|v| v.value))
}

/// The owner an object's `account` key names.
async fn owner_of<T: Object>(ctx: &Ctx, id: Uuid) -> Result<Option<Place>, ApiError> {
    find::<T>(ctx, id)
        .await?
        .map(|o| {
            o.keys()
                .account
                .map(|a| Place::Account(Id::from_uuid(a)))
                .ok_or_else(|| ApiError::internal(format!("{} {id} has no owner", T::KIND)))
        })
        .transpose()
}

fn by_owner<T: Object>(ctx: &Ctx, id: Uuid) -> BoxFuture<'_, Result<Option<Place>, ApiError>> {
    owner_of::<T>(ctx, id).boxed()
}

fn domain(ctx: &Ctx, id: Uuid) -> BoxFuture<'_, Result<Option<Place>, ApiError>> {
    async move { Ok(find::<Domain>(ctx, id).await?.map(|d| Place::Domain(d.id))) }.boxed()
}

async fn template_place(ctx: &Ctx, id: Uuid) -> Result<Option<Place>, ApiError> {
    Ok(find::<Template>(ctx, id).await?.map(|t| {
        if t.is_public {
            Place::Everywhere
        } else {
            Place::Account(t.account_id)
        }
    }))
}

fn template(ctx: &Ctx, id: Uuid) -> BoxFuture<'_, Result<Option<Place>, ApiError>> {
    template_place(ctx, id).boxed()
}

fn resource(ctx: &Ctx, id: Uuid) -> BoxFuture<'_, Result<Option<Place>, ApiError>> {
    async move {
        let owned: [Locate; 10] = [
            by_owner::<Vm>,
            by_owner::<Volume>,
            by_owner::<Snapshot>,
            by_owner::<Network>,
            by_owner::<IpAddress>,
            by_owner::<SecurityGroup>,
            by_owner::<SshKeyPair>,
            by_owner::<Account>,
            by_owner::<User>,
            template,
        ];
        for locate in owned {
            if let Some(place) = locate(ctx, id).await? {
                return Ok(Some(place));
            }
        }
        domain(ctx, id).await
    }
    .boxed()
}
