//! `login` and `logout`, and requests that ride a session instead of a
//! signature. A session lives in the data service (functions keep nothing
//! between invocations), found by the `JSESSIONID` cookie; its `sessionkey`
//! is checked where `api.sessionkey.check.locations` says.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{Duration, Utc};
use serde_json::{Value, json};
use stratus_cloudstack::{ApiError, ErrorCode, RawParams};
use stratus_contracts::settings::names;
use stratus_model::*;
use stratus_store::Versioned;
use subtle::ConstantTimeEq;

use crate::{Api, Caller, Request, role_of, store_error};

const JSESSIONID: &str = "JSESSIONID";
const SESSIONKEY: &str = "sessionkey";

fn random_token(bytes: usize) -> String {
    let v: Vec<u8> = (0..bytes).map(|_| rand::random::<u8>()).collect();
    URL_SAFE_NO_PAD.encode(v)
}

/// A cookie's value from the request's `Cookie` values.
pub fn cookie<'a>(req: &'a Request, name: &str) -> Option<&'a str> {
    req.cookies
        .iter()
        .flat_map(|c| c.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

fn failed_login() -> ApiError {
    ApiError::new(
        ErrorCode::AccountError,
        "failed to authenticate user, check if username/password are correct",
    )
}

/// The domain a login names: `domainId`, or a `domain` path (`/`, `/child/`), else ROOT.
async fn login_domain(api: &Api, raw: &RawParams) -> Result<Option<Domain>, ApiError> {
    let id = match (raw.get("domainid"), raw.get("domain")) {
        (Some(id), _) => match id.parse::<Id<Domain>>() {
            Ok(id) => id,
            Err(_) => return Ok(None),
        },
        (None, Some(path)) => {
            let trimmed = path.trim_matches('/');
            Domain::id_for(&if trimmed.is_empty() {
                "ROOT".to_string()
            } else {
                format!("ROOT/{trimmed}")
            })
        }
        (None, None) => Domain::id_for("ROOT"),
    };
    Ok(api
        .store
        .get::<Domain>(id)
        .await
        .map_err(store_error)?
        .map(|d| d.value))
}

impl Api {
    /// `login`: POST only; username and password checked against the stored
    /// PBKDF2 hash (with the same work when the user does not exist); a new
    /// session, its cookies, and CloudStack's `loginresponse`.
    pub(crate) async fn login(
        &self,
        req: &Request,
        raw: &RawParams,
    ) -> Result<(Value, Vec<String>), ApiError> {
        if !req.method.eq_ignore_ascii_case("POST") {
            return Err(ApiError::new(
                ErrorCode::MethodNotAllowed,
                "Please use HTTP POST to authenticate using this API",
            ));
        }
        let (Some(username), Some(password)) = (raw.get("username"), raw.get("password")) else {
            return Err(ApiError::missing_parameter(
                "login",
                if raw.get("username").is_none() {
                    "username"
                } else {
                    "password"
                },
            ));
        };
        let domain = login_domain(self, raw).await?;
        let user = match &domain {
            Some(d) => self
                .store
                .get::<User>(User::id_for(d.id, username))
                .await
                .map_err(store_error)?,
            None => None,
        };
        let Some(user) = user else {
            password::verify_nobody(password);
            return Err(failed_login());
        };
        let account = self
            .store
            .get::<Account>(user.value.account_id)
            .await
            .map_err(store_error)?
            .ok_or_else(failed_login)?
            .value;
        if !password::verify(password, &user.value.password_hash) {
            self.count_failed_login(user, &account).await;
            return Err(failed_login());
        }
        if user.value.state != AccountState::Enabled || account.state != AccountState::Enabled {
            return Err(ApiError::new(
                ErrorCode::AccountError,
                format!(
                    "User {username} (or their account) in domain {} is disabled/locked. Please contact the administrator.",
                    domain.map(|d| d.name).unwrap_or_default()
                ),
            ));
        }
        let user = self.reset_login_attempts(user, &account).await;
        let jsessionid = random_token(24);
        let now = Utc::now();
        let session = Session {
            id: Session::id_for(&jsessionid),
            user_id: user.id,
            account_id: account.id,
            session_key: random_token(20),
            created: now,
            last_access: now,
        };
        self.store.create(&session).await.map_err(store_error)?;
        let (account_type, _) = stratus_cloudstack::views::account_type(account.account_type);
        let answer = json!({
            "timeout": self.settings.integer(names::session_timeout()),
            "sessionkey": session.session_key,
            "userid": user.id.to_string(),
            "domainid": account.domain_id.to_string(),
            "username": user.username,
            "account": account.name,
            "firstname": user.firstname,
            "lastname": user.lastname,
            "type": account_type.to_string(),
            "timezone": "UTC",
            "timezoneoffset": "0.0",
            "registered": "false",
            "is2faenabled": "false",
            "is2faverified": "false",
            "passwordchangerequired": false,
        });
        let cookies = vec![
            format!("{JSESSIONID}={jsessionid}; Path=/client; HttpOnly"),
            format!(
                "{SESSIONKEY}={}; Path=/client; HttpOnly; SameSite=Lax",
                session.session_key
            ),
        ];
        tracing::info!(user = %user.id, "logged in");
        Ok((answer, cookies))
    }

    /// A wrong password for an enabled user, as CloudStack's
    /// `AccountManagerImpl.updateLoginAttemptsWhenIncorrectLoginAttemptsEnabled`
    /// counts it: one more failed attempt on the user; the attempt that
    /// reaches `incorrect.login.attempts.allowed` disables the user (the
    /// count stays at the limit). Root admins' accounts are internal and
    /// never counted, nor is a user already disabled or locked. A conditional
    /// write of the user, re-read and retried on a conflict, so racing
    /// logins on any API instance each count. A store failure is logged
    /// and the login still fails, as in CloudStack.
    async fn count_failed_login(&self, mut user: Versioned<User>, account: &Account) {
        let allowed = self
            .settings
            .integer(names::incorrect_login_attempts_allowed());
        if account.account_type == AccountType::Admin || allowed <= 0 {
            return;
        }
        let allowed = u32::try_from(allowed).unwrap_or(u32::MAX);
        for _ in 0..16 {
            if user.value.state != AccountState::Enabled {
                tracing::info!(user = %user.value.id, "login of a disabled/locked user");
                return;
            }
            let made = user.value.login_attempts.saturating_add(1);
            let mut counted = user.clone();
            let disabled = made >= allowed;
            counted.value.login_attempts = made.min(allowed);
            if disabled {
                counted.value.state = AccountState::Disabled;
            }
            match self.store.update(&counted).await {
                Ok(_) if disabled => {
                    tracing::warn!(user = %user.value.id, "user has been disabled due to multiple failed login attempts");
                    return;
                }
                Ok(_) => {
                    tracing::warn!(user = %user.value.id, remaining = allowed - made, "login attempt failed");
                    return;
                }
                Err(e) if e.is_conflict() => match self.store.get::<User>(user.value.id).await {
                    Ok(Some(again)) => user = again,
                    _ => return,
                },
                Err(e) => {
                    tracing::error!(user = %user.value.id, error = %e, "failed to update login attempts");
                    return;
                }
            }
        }
        tracing::error!(user = %user.value.id, "failed to update login attempts: the user kept changing");
    }

    /// A successful login sets the failed attempts back to zero, as
    /// CloudStack does for every login of a non-internal account (written
    /// only when there is something to reset).
    async fn reset_login_attempts(&self, mut user: Versioned<User>, account: &Account) -> User {
        if account.account_type == AccountType::Admin {
            return user.value;
        }
        for _ in 0..16 {
            if user.value.login_attempts == 0 || user.value.state != AccountState::Enabled {
                return user.value;
            }
            let mut reset = user.clone();
            reset.value.login_attempts = 0;
            match self.store.update(&reset).await {
                Ok(done) => return done.value,
                Err(e) if e.is_conflict() => match self.store.get::<User>(user.value.id).await {
                    Ok(Some(again)) => user = again,
                    _ => break,
                },
                Err(e) => {
                    tracing::error!(user = %user.value.id, error = %e, "failed to reset login attempts");
                    break;
                }
            }
        }
        user.value
    }

    /// `logout`: ends the session and expires its cookies.
    pub(crate) async fn logout(
        &self,
        req: &Request,
        raw: &RawParams,
    ) -> Result<(Value, Vec<String>), ApiError> {
        let (_, session) = self.session_caller(req, raw).await?;
        self.store.delete(&session).await.map_err(store_error)?;
        let expired = |name: &str| {
            format!("{name}=; Path=/client; Max-Age=0; Expires=Thu, 01 Jan 1970 00:00:00 GMT")
        };
        Ok((
            json!({ "description": "success" }),
            vec![expired(JSESSIONID), expired(SESSIONKEY)],
        ))
    }

    /// The caller of a session request: the session named by `JSESSIONID`,
    /// not idle longer than `session.timeout`, whose `sessionkey` matches
    /// where the setting says; its user and account enabled.
    pub(crate) async fn session_caller(
        &self,
        req: &Request,
        raw: &RawParams,
    ) -> Result<(Caller, stratus_store::Versioned<Session>), ApiError> {
        let jsessionid = cookie(req, JSESSIONID).ok_or_else(ApiError::bad_session)?;
        let mut session = self
            .store
            .get::<Session>(Session::id_for(jsessionid))
            .await
            .map_err(store_error)?
            .ok_or_else(ApiError::bad_session)?;
        let now = Utc::now();
        let timeout = Duration::seconds(self.settings.integer(names::session_timeout()));
        if now - session.value.last_access > timeout {
            let _ = self.store.delete(&session).await;
            return Err(ApiError::bad_session());
        }
        let expected = session.value.session_key.as_bytes();
        let matches = |v: Option<&str>| v.is_some_and(|v| bool::from(v.as_bytes().ct_eq(expected)));
        let (in_cookie, in_param) = (
            matches(cookie(req, SESSIONKEY)),
            matches(raw.get(SESSIONKEY)),
        );
        let ok = match self
            .settings
            .value(names::sessionkey_check_locations())
            .as_str()
        {
            "ParameterOnly" => in_param,
            "CookieOrParameter" => in_cookie || in_param,
            _ => in_cookie && in_param,
        };
        if !ok {
            return Err(ApiError::bad_session());
        }
        let user = self
            .store
            .get::<User>(session.value.user_id)
            .await
            .map_err(store_error)?;
        let account = self
            .store
            .get::<Account>(session.value.account_id)
            .await
            .map_err(store_error)?;
        let (Some(user), Some(account)) = (user, account) else {
            return Err(ApiError::bad_session());
        };
        let (user, account) = (user.value, account.value);
        if user.state != AccountState::Enabled || account.state != AccountState::Enabled {
            return Err(ApiError::bad_session());
        }
        // Refreshed at most once a minute, so that a busy session is not a write per request.
        if now - session.value.last_access > Duration::minutes(1) {
            let mut touched = session.clone();
            touched.value.last_access = now;
            if let Ok(s) = self.store.update(&touched).await {
                session = s;
            }
        }
        let role = role_of(account.account_type);
        Ok((
            Caller {
                user,
                account,
                role,
            },
            session,
        ))
    }
}
