//! Domains, accounts, users and their API keys.

use chrono::Utc;
use futures::FutureExt;
use serde_json::{Value, json};
use stratus_cloudstack::{ApiError, Params};
use stratus_model::samples::{Fixture, Sample};
use stratus_model::*;
use stratus_store::{Index, StoreError, Transaction};

use super::{all, eq_param, get, named, owners, page_in_memory, walk, within};
use crate::registry::{ADMINS, ALL, Command, Kind, Role, list_of, param, required};
use crate::scope::{self, Names, Outside};
use crate::{Ctx, store_error};
use stratus_cloudstack::views;

fn sample_user() -> Value {
    let f = Fixture::default();
    views::user(
        &User::sample(&f),
        &Account::sample(&f),
        &Domain::sample(&f),
        Some("key"),
    )
}

pub fn commands() -> Vec<Command> {
    let f = Fixture::default();
    let account_view = views::account(&Account::sample(&f), &Domain::sample(&f), vec![]);
    let domain_view = views::domain(&Domain::sample(&f), false);
    let keys_view = json!({"apikey": "", "secretkey": ""});
    vec![
        Command::sync(
            "createDomain",
            "Creates a domain",
            ADMINS,
            vec![
                required("name", Kind::String, "creates domain with this name"),
                param(
                    "parentdomainid",
                    Kind::Uuid,
                    "assigns new domain a parent domain by domain ID of the parent.  If no parent domain is specied, the ROOT domain is assumed.",
                )
                .naming(scope::within_domain()),
            ],
            "domain",
            domain_view.clone(),
            |c, p| create_domain(c, p).boxed(),
        ),
        Command::sync(
            "listDomains",
            "Lists domains and provides detailed information for listed domains",
            ADMINS,
            list_of(
                Names::domain(Outside::Unseen),
                &[
                    param("name", Kind::String, "List domain by domain name."),
                    param("level", Kind::Integer, "List domains by domain level."),
                    param(
                        "listall",
                        Kind::Boolean,
                        "If set to false, list only resources belonging to the command's caller; if set to true - list resources that the caller is authorized to see. Default value is false",
                    ),
                ],
            ),
            "domain",
            domain_view,
            |c, p| list_domains(c, p).boxed(),
        ),
        Command::sync(
            "createAccount",
            "Creates an account",
            ADMINS,
            vec![
                required("username", Kind::String, "Unique username."),
                required(
                    "password",
                    Kind::String,
                    "Clear text password (Default hashed to SHA256SALT).",
                ),
                required("email", Kind::String, "email"),
                required("firstname", Kind::String, "firstname"),
                required("lastname", Kind::String, "lastname"),
                param(
                    "accounttype",
                    Kind::Integer,
                    "Type of the account.  Specify 0 for user, 1 for root admin, and 2 for domain admin",
                ),
                param(
                    "account",
                    Kind::String,
                    "Name of the account to be created. The user will be added to this newly created account. If no account is specified, the username will be used as the account name.",
                ),
                param(
                    "domainid",
                    Kind::Uuid,
                    "Creates the user under the specified domain.",
                )
                .naming(scope::within_domain()),
            ],
            "account",
            account_view.clone(),
            |c, p| create_account(c, p).boxed(),
        ),
        Command::sync(
            "listAccounts",
            "Lists accounts and provides detailed account information for listed accounts",
            ALL,
            list_of(
                scope::read::<Account>(),
                &[
                    param("name", Kind::String, "list account by account name"),
                    param(
                        "domainid",
                        Kind::Uuid,
                        "list only resources belonging to the domain specified",
                    )
                    .naming(scope::within_domain()),
                    param(
                        "accounttype",
                        Kind::Integer,
                        "list accounts by account type",
                    ),
                    param("state", Kind::String, "list accounts by state"),
                    param(
                        "listall",
                        Kind::Boolean,
                        "If set to false, list only resources belonging to the command's caller",
                    ),
                ],
            ),
            "account",
            account_view.clone(),
            |c, p| list_accounts(c, p).boxed(),
        ),
        Command::sync(
            "listUsers",
            "Lists user accounts",
            ALL,
            list_of(
                scope::read::<User>(),
                &[
                    param("username", Kind::String, "List user by the username"),
                    param(
                        "account",
                        Kind::String,
                        "list resources by account. Must be used with the domainId parameter.",
                    ),
                    param(
                        "domainid",
                        Kind::Uuid,
                        "list only resources belonging to the domain specified",
                    )
                    .naming(scope::within_domain()),
                    param(
                        "state",
                        Kind::String,
                        "List users by state of the user account.",
                    ),
                    param(
                        "listall",
                        Kind::Boolean,
                        "If set to false, list only resources belonging to the command's caller",
                    ),
                ],
            ),
            "user",
            sample_user(),
            |c, p| list_users(c, p).boxed(),
        ),
        Command::sync(
            "registerUserKeys",
            "This command allows a user to register for the developer API, returning a secret key and an API key. This request is made through the integration API port, so it is a privileged command and must be made on behalf of a user. It is up to the implementer just how the username and password are entered, and then how that translates to an integration API request. Both secret key and API key should be returned to the user",
            ALL,
            vec![required("id", Kind::Uuid, "User id").naming(scope::act_on::<User>())],
            "userkeys",
            keys_view.clone(),
            |c, p| register_user_keys(c, p).boxed(),
        ),
        Command::sync(
            "getUserKeys",
            "This command allows the user to query the seceret and API keys for the account",
            ALL,
            vec![
                required("id", Kind::Uuid, "ID of the user whose keys are required")
                    .naming(scope::act_on::<User>()),
            ],
            "userkeys",
            keys_view,
            |c, p| get_user_keys(c, p).boxed(),
        ),
        Command::sync(
            "enableAccount",
            "Enables an account",
            ADMINS,
            vec![
                param("id", Kind::Uuid, "Account id").naming(scope::act_on::<Account>()),
                param("account", Kind::String, "Enables specified account."),
                param(
                    "domainid",
                    Kind::Uuid,
                    "Enables specified account in this domain.",
                )
                .naming(scope::within_domain()),
            ],
            "account",
            account_view.clone(),
            |c, p| enable_account(c, p).boxed(),
        ),
        Command::sync(
            "enableUser",
            "Enables a user account",
            ADMINS,
            vec![
                required("id", Kind::Uuid, "Enables user by user ID.")
                    .naming(scope::act_on::<User>()),
            ],
            "user",
            sample_user(),
            |c, p| enable_user(c, p).boxed(),
        ),
        Command {
            is_async: true,
            ..Command::sync(
                "disableAccount",
                "Disables an account",
                ADMINS,
                vec![
                    required(
                        "lock",
                        Kind::Boolean,
                        "If true, only lock the account; else disable the account",
                    ),
                    param("id", Kind::Uuid, "Account id").naming(scope::act_on::<Account>()),
                    param("account", Kind::String, "Disables specified account."),
                    param(
                        "domainid",
                        Kind::Uuid,
                        "Disables specified account in this domain.",
                    )
                    .naming(scope::within_domain()),
                ],
                "account",
                account_view,
                |c, p| disable_account(c, p).boxed(),
            )
        },
    ]
}

/// CloudStack's command class for disableAccount, shown as the job's `cmd`.
const DISABLE_ACCOUNT_CMD: &str =
    "org.apache.cloudstack.api.command.admin.account.DisableAccountCmd";

async fn disable_account(ctx: &Ctx, p: &Params) -> Result<Value, ApiError> {
    let account = account_param(ctx, p).await?.value;
    if account.id == ctx.caller.account.id {
        return Err(ApiError::invalid_parameter(
            "Can not disable caller's own account",
        ));
    }
    let body = stratus_contracts::message_types::account::Disable {
        account_id: account.id.to_string(),
        lock: super::flag(p, "lock"),
    };
    crate::jobs::submit(
        ctx,
        DISABLE_ACCOUNT_CMD,
        crate::jobs::Instance {
            kind: "Account",
            id: account.id.uuid(),
        },
        stratus_contracts::message_types::account::DISABLE,
        &body,
    )
    .await
}

async fn create_domain(ctx: &Ctx, p: &Params) -> Result<Value, ApiError> {
    let name = p.get("name").unwrap_or_default();
    if name.contains('/') {
        return Err(ApiError::invalid_parameter(
            "Domain name can't contain a '/'",
        ));
    }
    // A parent named by id passed the scope check; the default, ROOT, is
    // checked here, as CloudStack's `checkAccess(caller, parent)` does.
    let parent = match p.get("parentdomainid") {
        Some(_) => named::<Domain>(ctx, p, "parentdomainid").await?.value,
        None => {
            let root = get::<Domain>(ctx, Domain::id_for("ROOT")).await?;
            if !scope::holds(ctx, scope::Place::Domain(root.id)).await? {
                return Err(ApiError::permission_denied(scope::outside_domain(
                    &ctx.caller,
                    &root.id.to_string(),
                )));
            }
            root
        }
    };
    let path = format!("{}/{name}", parent.path);
    let domain = Domain {
        id: Domain::id_for(&path),
        name: name.to_string(),
        parent_id: Some(parent.id),
        path,
        created: Utc::now(),
    };
    match ctx.store.create(&domain).await {
        Ok(_) => Ok(json!({ "domain": views::domain(&domain, false) })),
        Err(StoreError::Conflict { .. }) => Err(ApiError::invalid_parameter(format!(
            "Domain with name {name} already exists for the parent id={}",
            parent.id
        ))),
        Err(e) => Err(store_error(e)),
    }
}

async fn list_domains(ctx: &Ctx, p: &Params) -> Result<Value, ApiError> {
    let own = get::<Domain>(ctx, ctx.caller.account.domain_id).await?;
    let domains = all::<Domain>(ctx).await?;
    let listall = super::flag(p, "listall");
    let level: Option<usize> = match p.get("level") {
        Some(l) => Some(
            l.parse()
                .map_err(|_| ApiError::invalid_value(ctx.command, "level", l))?,
        ),
        None => None,
    };
    let id = super::id_param::<Domain>(ctx, p, "id")?;
    if let Some(id) = id
        && !domains.iter().any(|d| d.id == id)
    {
        return Err(ApiError::entity_not_found(
            ctx.command,
            "id",
            &id.to_string(),
        ));
    }
    let keyword = p.get("keyword").map(str::to_lowercase);
    let visible: Vec<Value> = domains
        .iter()
        .filter(|d| {
            if listall || id.is_some() {
                within(d, &own, ctx)
            } else {
                d.id == own.id
            }
        })
        .filter(|d| id.is_none_or(|i| d.id == i))
        .filter(|d| eq_param(p, "name", &d.name))
        .filter(|d| level.is_none_or(|l| d.path.matches('/').count() == l))
        .filter(|d| {
            keyword
                .as_ref()
                .is_none_or(|k| d.name.to_lowercase().contains(k.as_str()))
        })
        .map(|d| views::domain(d, domains.iter().any(|c| c.parent_id == Some(d.id))))
        .collect();
    page_in_memory(ctx, p, "domain", visible)
}

fn account_type_param(ctx: &Ctx, p: &Params) -> Result<AccountType, ApiError> {
    match p.get("accounttype") {
        None | Some("0") => Ok(AccountType::User),
        Some("1") => Ok(AccountType::Admin),
        Some("2") => Ok(AccountType::DomainAdmin),
        Some(other) => Err(ApiError::invalid_value(ctx.command, "accounttype", other)),
    }
}

async fn create_account(ctx: &Ctx, p: &Params) -> Result<Value, ApiError> {
    let account_type = account_type_param(ctx, p)?;
    if account_type == AccountType::Admin && ctx.caller.role != Role::RootAdmin {
        return Err(ApiError::permission_denied(
            "Only root admins can create root admin accounts",
        ));
    }
    // A domain named by id passed the scope check; the default is the caller's own.
    let domain = match p.get("domainid") {
        Some(_) => named::<Domain>(ctx, p, "domainid").await?.value,
        None => get::<Domain>(ctx, ctx.caller.account.domain_id).await?,
    };
    let username = p.get("username").unwrap_or_default();
    let name = p.get("account").unwrap_or(username);
    let now = Utc::now();
    let account = Account {
        id: Account::id_for(domain.id, name),
        name: name.to_string(),
        domain_id: domain.id,
        account_type,
        state: AccountState::Enabled,
        created: now,
    };
    let user = User {
        id: User::id_for(domain.id, username),
        account_id: account.id,
        username: username.to_string(),
        password_hash: password::hash(p.get("password").unwrap_or_default()),
        firstname: p.get("firstname").unwrap_or_default().to_string(),
        lastname: p.get("lastname").unwrap_or_default().to_string(),
        email: p.get("email").unwrap_or_default().to_string(),
        state: AccountState::Enabled,
        created: now,
        login_attempts: 0,
    };
    // Both ids follow from their names: the transaction's not-exists
    // conditions are the uniqueness check, race-free.
    let mut tx = Transaction::new();
    tx.create(&account).create(&user);
    match ctx.store.transact(tx).await {
        Ok(()) => {}
        Err(StoreError::Conflict { kind, .. }) if kind == User::KIND => {
            return Err(ApiError::invalid_parameter(format!(
                "The user {username} already exists in domain {}",
                domain.path
            )));
        }
        Err(StoreError::Conflict { .. }) => {
            return Err(ApiError::invalid_parameter(format!(
                "The account {name} already exists in domain {}",
                domain.path
            )));
        }
        Err(e) => return Err(store_error(e)),
    }
    let users = vec![views::user(&user, &account, &domain, None)];
    Ok(json!({ "account": views::account(&account, &domain, users) }))
}

async fn account_view(ctx: &Ctx, a: &Account) -> Result<Value, ApiError> {
    let domain = get::<Domain>(ctx, a.domain_id).await?;
    let users = user_views(ctx, a, &domain, |_| true).await?;
    Ok(views::account(a, &domain, users))
}

/// The views of `a`'s users that `keep` accepts, each with its API key.
async fn user_views(
    ctx: &Ctx,
    a: &Account,
    domain: &Domain,
    keep: impl Fn(&User) -> bool,
) -> Result<Vec<Value>, ApiError> {
    let keys = api_keys_of(ctx, a.id).await?;
    let users = walk::<User>(ctx, &Index::Account(a.id.uuid())).await?;
    Ok(users
        .iter()
        .filter(|u| keep(u))
        .map(|u| {
            let key = keys
                .iter()
                .find(|k| k.user_id == u.id)
                .map(|k| k.api_key.as_str());
            views::user(u, a, domain, key)
        })
        .collect())
}

async fn api_keys_of(ctx: &Ctx, account: Id<Account>) -> Result<Vec<ApiKey>, ApiError> {
    walk(ctx, &Index::Account(account.uuid())).await
}

async fn list_accounts(ctx: &Ctx, p: &Params) -> Result<Value, ApiError> {
    let accounts = visible_accounts(ctx, p).await?;
    let account_type = p
        .get("accounttype")
        .map(|_| account_type_param(ctx, p))
        .transpose()?;
    let mut items = Vec::new();
    for a in accounts.iter().filter(|a| {
        eq_param(p, "name", &a.name)
            && eq_param(p, "state", &state_name(&a.state))
            && account_type.is_none_or(|t| a.account_type == t)
    }) {
        items.push(account_view(ctx, a).await?);
    }
    page_in_memory(ctx, p, "account", items)
}

/// The accounts a list may show: by `id`, else as [`owners`] decides
/// (`name` with `domainid` picks one by name, as CloudStack's `account` does).
/// An `id` or `domainid` outside the caller's scope never gets here.
async fn visible_accounts(ctx: &Ctx, p: &Params) -> Result<Vec<Account>, ApiError> {
    if p.get("id").is_some() {
        return Ok(vec![named::<Account>(ctx, p, "id").await?.value]);
    }
    let who = owners(ctx, p).await?;
    let domain = super::id_param::<Domain>(ctx, p, "domainid")?;
    // An admin naming a domain sees its accounts (the domain is in its scope).
    let by_domain = domain.is_some() && ctx.caller.role != Role::User;
    Ok(all::<Account>(ctx)
        .await?
        .into_iter()
        .filter(|a| who.holds(a.id) || by_domain)
        .filter(|a| domain.is_none_or(|d| a.domain_id == d))
        .collect())
}

async fn list_users(ctx: &Ctx, p: &Params) -> Result<Value, ApiError> {
    let accounts = if p.get("id").is_some() {
        let u = named::<User>(ctx, p, "id").await?.value;
        vec![get::<Account>(ctx, u.account_id).await?]
    } else {
        visible_accounts(ctx, p).await?
    };
    let wanted = super::id_param::<User>(ctx, p, "id")?;
    let mut items = Vec::new();
    for a in &accounts {
        let domain = get::<Domain>(ctx, a.domain_id).await?;
        items.extend(
            user_views(ctx, a, &domain, |u| {
                wanted.is_none_or(|w| u.id == w)
                    && eq_param(p, "username", &u.username)
                    && eq_param(p, "state", &state_name(&u.state))
            })
            .await?,
        );
    }
    page_in_memory(ctx, p, "user", items)
}

async fn register_user_keys(ctx: &Ctx, p: &Params) -> Result<Value, ApiError> {
    let user = named::<User>(ctx, p, "id").await?.value;
    let old: Vec<ApiKey> = api_keys_of(ctx, user.account_id)
        .await?
        .into_iter()
        .filter(|k| k.user_id == user.id)
        .collect();
    let (key, secret) = ApiKey::generate(user.id, user.account_id, Utc::now(), &ctx.secrets);
    // The new pair replaces the old ones, in one transaction.
    let mut tx = Transaction::new();
    tx.create(&key);
    for k in &old {
        let current = ctx.store.get::<ApiKey>(k.id).await.map_err(store_error)?;
        if let Some(current) = current {
            tx.delete(&current);
        }
    }
    ctx.store.transact(tx).await.map_err(store_error)?;
    Ok(json!({ "userkeys": { "apikey": key.api_key, "secretkey": secret.expose() } }))
}

async fn get_user_keys(ctx: &Ctx, p: &Params) -> Result<Value, ApiError> {
    let user = named::<User>(ctx, p, "id").await?.value;
    let key = api_keys_of(ctx, user.account_id)
        .await?
        .into_iter()
        .find(|k| k.user_id == user.id);
    Ok(match key {
        Some(k) => {
            let secret = k.secret(&ctx.secrets).map_err(|e| {
                tracing::error!(apikey = %k.id, error = %e, "an API key's secret does not open");
                ApiError::internal(
                    "Internal error executing command: the secret key cannot be read",
                )
            })?;
            json!({ "userkeys": { "apikey": k.api_key, "secretkey": secret.expose() } })
        }
        None => json!({ "userkeys": {} }),
    })
}

/// The account `id` names, or `account` + `domainid` (431 if neither); the
/// scope check has refused either outside the caller's scope.
pub async fn account_param(
    ctx: &Ctx,
    p: &Params,
) -> Result<stratus_store::Versioned<Account>, ApiError> {
    let account = if p.get("id").is_some() {
        named::<Account>(ctx, p, "id").await?
    } else {
        let (Some(name), Some(_)) = (p.get("account"), p.get("domainid")) else {
            return Err(ApiError::invalid_parameter(
                "Either accountId or (account name and domainId) must be specified",
            ));
        };
        account_by_name(ctx, p, name).await?
    };
    Ok(account)
}

/// Account `name` in the domain `domainid` names (which passed the scope check).
pub async fn account_by_name(
    ctx: &Ctx,
    p: &Params,
    name: &str,
) -> Result<stratus_store::Versioned<Account>, ApiError> {
    let domain = named::<Domain>(ctx, p, "domainid").await?.value;
    ctx.store
        .get::<Account>(Account::id_for(domain.id, name))
        .await
        .map_err(store_error)?
        .ok_or_else(|| {
            ApiError::invalid_parameter(format!(
                "Unable to find account by name {name} in domain {}",
                domain.id
            ))
        })
}

async fn enable_account(ctx: &Ctx, p: &Params) -> Result<Value, ApiError> {
    let mut account = account_param(ctx, p).await?;
    if account.value.state != AccountState::Enabled {
        account.value.state = AccountState::Enabled;
        account = ctx.store.update(&account).await.map_err(store_error)?;
    }
    Ok(json!({ "account": account_view(ctx, &account.value).await? }))
}

/// `enableUser`, as CloudStack's `AccountManagerImpl.enableUser`: the user
/// enabled, its account enabled too ("make sure the account is enabled
/// too"), and its failed login attempts back to zero, in one transaction
/// (retried on a conflict); the user as `listUsers` shows it.
async fn enable_user(ctx: &Ctx, p: &Params) -> Result<Value, ApiError> {
    let id = named::<User>(ctx, p, "id").await?.value.id;
    for _ in 0..16 {
        let user = ctx
            .store
            .get::<User>(id)
            .await
            .map_err(store_error)?
            .ok_or_else(|| ApiError::entity_not_found(ctx.command, "id", &id.to_string()))?;
        let account = ctx
            .store
            .get::<Account>(user.value.account_id)
            .await
            .map_err(store_error)?
            .ok_or_else(|| {
                ApiError::invalid_parameter(format!(
                    "unable to find user account {}",
                    user.value.account_id
                ))
            })?;
        let mut tx = Transaction::new();
        if user.value.state != AccountState::Enabled || user.value.login_attempts != 0 {
            let mut enabled = user.clone();
            enabled.value.state = AccountState::Enabled;
            enabled.value.login_attempts = 0;
            tx.update(&enabled);
        }
        if account.value.state != AccountState::Enabled {
            let mut enabled = account.clone();
            enabled.value.state = AccountState::Enabled;
            tx.update(&enabled);
        }
        if !tx.is_empty() {
            match ctx.store.transact(tx).await {
                Ok(()) => {}
                Err(e) if e.is_conflict() => continue,
                Err(e) => return Err(store_error(e)),
            }
        }
        let account = get::<Account>(ctx, user.value.account_id).await?;
        let domain = get::<Domain>(ctx, account.domain_id).await?;
        let view = user_views(ctx, &account, &domain, |u| u.id == id)
            .await?
            .pop()
            .ok_or_else(|| ApiError::internal("Failed to enable user"))?;
        return Ok(json!({ "user": view }));
    }
    Err(ApiError::internal(format!("Unable to enable user {id}")))
}
