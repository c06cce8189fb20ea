//! The API function: CloudStack's API at `/client/api`. A request is parsed
//! from its raw query string and form body (what the signature covers),
//! authenticated, checked against the command registry (role, required
//! parameters, types, lengths) and, for every object a parameter names by
//! id, against the caller's scope ([`scope`]), and answered in CloudStack's
//! envelope. The handler knows nothing of the transport: `main.rs` runs it
//! under `lambda_http`, tests call [`Api::handle`] directly.

pub mod commands;
pub mod jobs;
pub mod registry;
pub mod scope;
mod sessions;
pub mod throttle;

use std::sync::Arc;

use chrono::Utc;
use stratus_cloudstack::envelope::{self, Format, Response, response_key};
use stratus_cloudstack::{ApiError, Params, RawParams, signature};
use stratus_contracts::settings::{SettingsSource, names};
use stratus_messaging::publisher::Publisher;
use stratus_model::{Account, AccountState, AccountType, ApiKey, SecretBox, User};
use stratus_store::Store;

use registry::{Command, Kind, Registry, Role};

/// One HTTP request, as the gateway hands it over.
#[derive(Debug, Clone, Default)]
pub struct Request {
    pub method: String,
    /// The query string exactly as sent, undecoded.
    pub raw_query: String,
    /// The body, already base64-decoded when the gateway had encoded it.
    pub body: Vec<u8>,
    pub content_type: Option<String>,
    /// `Cookie` header values (`name=value; name=value`).
    pub cookies: Vec<String>,
    pub request_id: String,
}

/// Who is calling.
#[derive(Debug, Clone)]
pub struct Caller {
    pub user: User,
    pub account: Account,
    pub role: Role,
}

/// What a command's handler sees.
pub struct Ctx {
    pub store: Arc<Store>,
    /// Where job messages go; without one they wait in the outbox for the relay.
    pub publisher: Option<Arc<Publisher>>,
    pub settings: Arc<dyn SettingsSource>,
    /// Seals and opens users' secret keys.
    pub secrets: Arc<SecretBox>,
    pub caller: Caller,
    pub command: &'static str,
    pub registry: Arc<Registry>,
    /// Consul, where the API keeps what is not data (the simulator's mocks).
    pub consul: Option<stratus_discovery::Client>,
}

pub struct Api {
    pub store: Arc<Store>,
    pub publisher: Option<Arc<Publisher>>,
    pub settings: Arc<dyn SettingsSource>,
    pub secrets: Arc<SecretBox>,
    pub registry: Arc<Registry>,
    pub consul: Option<stratus_discovery::Client>,
}

impl Api {
    pub fn new(
        store: Arc<Store>,
        publisher: Option<Arc<Publisher>>,
        settings: Arc<dyn SettingsSource>,
        secrets: Arc<SecretBox>,
    ) -> Self {
        Api {
            store,
            publisher,
            settings,
            secrets,
            registry: Arc::new(commands::registry()),
            consul: None,
        }
    }

    /// The API with Consul (for what it keeps there besides settings).
    pub fn with_consul(mut self, consul: Option<stratus_discovery::Client>) -> Self {
        self.consul = consul;
        self
    }

    /// Answers one request; every failure is a CloudStack error envelope.
    pub async fn handle(&self, req: &Request) -> Response {
        self.settings.refresh().await;
        let is_form = req.method.eq_ignore_ascii_case("POST")
            && req
                .content_type
                .as_deref()
                .is_none_or(|c| c.starts_with("application/x-www-form-urlencoded"));
        let raw = RawParams::parse(&req.raw_query, is_form.then_some(req.body.as_slice()));
        let format = Format::from_param(raw.get("response"));
        let Some(command) = raw.get("command").map(str::to_string) else {
            return envelope::error(format, "errorresponse", &ApiError::no_command());
        };
        let key = response_key(&command);
        let answer = match command.to_lowercase().as_str() {
            "login" => self
                .login(req, &raw)
                .await
                .map(|(inner, cookies)| (key.clone(), inner, cookies)),
            "logout" => self
                .logout(req, &raw)
                .await
                .map(|(inner, cookies)| (key.clone(), inner, cookies)),
            _ => self
                .dispatch(req, &raw, &command)
                .await
                .map(|(key, inner)| (key, inner, vec![])),
        };
        match answer {
            Ok((key, inner, cookies)) => {
                let mut r = envelope::ok(format, &key, inner);
                r.set_cookies = cookies;
                r
            }
            Err(e) => {
                let key = if e.code.code() == 432 {
                    "errorresponse".to_string()
                } else {
                    key
                };
                tracing::info!(command, code = e.code.code(), text = %e.text, "request refused");
                envelope::error(format, &key, &e)
            }
        }
    }

    async fn dispatch(
        &self,
        req: &Request,
        raw: &RawParams,
        command: &str,
    ) -> Result<(String, serde_json::Value), ApiError> {
        // A signed request carries its apiKey; anything else must ride a session.
        let caller = if raw.get("apikey").is_some() {
            self.authenticate(req, raw).await?
        } else {
            self.session_caller(req, raw).await?.0
        };
        let params = Params::from_raw(raw)?;
        let cmd = self
            .registry
            .find(command)
            .ok_or_else(|| ApiError::unknown_command(command))?;
        // The rate limit counts every call of a known command, as CloudStack's checkers.
        throttle::check(self, &caller).await?;
        if !cmd.roles.contains(&caller.role) {
            return Err(ApiError::not_available(command));
        }
        check_params(cmd, &params)?;
        let ctx = Ctx {
            store: self.store.clone(),
            publisher: self.publisher.clone(),
            settings: self.settings.clone(),
            secrets: self.secrets.clone(),
            caller,
            command: cmd.name,
            registry: self.registry.clone(),
            consul: self.consul.clone(),
        };
        // The one scope check, for every object named by id, before any handler.
        if let Some(answer) = scope::check(&ctx, cmd, &params).await? {
            return Ok((response_key(cmd.name), answer));
        }
        let inner = (cmd.handler)(&ctx, &params).await?;
        Ok((response_key(cmd.name), inner))
    }

    /// An apiKey/signature request: the key names a user; user and account
    /// are enabled; API-key access is allowed; the signature verifies and,
    /// for v3, has not expired. Every failure is the same 401.
    async fn authenticate(&self, req: &Request, raw: &RawParams) -> Result<Caller, ApiError> {
        let api_key = raw.get("apikey").ok_or_else(ApiError::unverified)?;
        let key = self
            .store
            .get::<ApiKey>(ApiKey::id_for(api_key))
            .await
            .map_err(store_error)?
            .filter(|k| k.value.api_key == api_key)
            .ok_or_else(ApiError::unverified)?
            .value;
        let user = self
            .store
            .get::<User>(key.user_id)
            .await
            .map_err(store_error)?;
        let account = self
            .store
            .get::<Account>(key.account_id)
            .await
            .map_err(store_error)?;
        let (Some(user), Some(account)) = (user, account) else {
            return Err(ApiError::unverified());
        };
        let (user, account) = (user.value, account.value);
        if user.state != AccountState::Enabled
            || account.state != AccountState::Enabled
            || !self.settings.boolean(names::api_key_access())
        {
            return Err(ApiError::unverified());
        }
        let secret = key.secret(&self.secrets).map_err(|e| {
            // The operator's problem (a wrong key file, a store not yet sealed), not the caller's.
            tracing::error!(apikey = %key.id, error = %e, "an API key's secret does not open");
            ApiError::unverified()
        })?;
        if !signature::verify(raw, secret.expose()) {
            return Err(ApiError::unverified());
        }
        // With enforce.post.requests.and.timestamps: POST only, v3 only, expires within 15 minutes.
        let enforce = self.settings.boolean(names::enforce_post_and_timestamps());
        if enforce && !req.method.eq_ignore_ascii_case("POST") {
            return Err(ApiError::unverified());
        }
        signature::check_expiry(raw, Utc::now(), enforce)?;
        let role = role_of(account.account_type);
        Ok(Caller {
            user,
            account,
            role,
        })
    }
}

/// Required parameters present; values of the declared type and length.
fn check_params(cmd: &Command, params: &Params) -> Result<(), ApiError> {
    for p in &cmd.params {
        let value = params.get(p.name);
        let Some(value) = value else {
            if p.required && params.map(p.name).is_empty() {
                return Err(ApiError::missing_parameter(cmd.name, p.name));
            }
            continue;
        };
        if value.chars().count() > p.length as usize {
            return Err(ApiError::invalid_parameter(format!(
                "The value of parameter {} is longer than {} characters",
                p.name, p.length
            )));
        }
        let fits = match p.kind {
            Kind::Uuid => value.parse::<uuid::Uuid>().is_ok(),
            Kind::Integer => value.parse::<i32>().is_ok(),
            Kind::Long => value.parse::<i64>().is_ok(),
            Kind::Boolean => matches!(value.to_ascii_lowercase().as_str(), "true" | "false"),
            _ => true,
        };
        if !fits {
            return Err(match p.kind {
                // A malformed UUID reads as one that names nothing, as in CloudStack.
                Kind::Uuid => ApiError::entity_not_found(cmd.name, p.name, value),
                _ => ApiError::invalid_value(cmd.name, p.name, value),
            });
        }
    }
    Ok(())
}

/// A store failure: never the caller's fault, never a panic.
pub fn store_error(e: stratus_store::StoreError) -> ApiError {
    tracing::error!(error = %e, "data service failure");
    ApiError::internal(format!("Internal error executing command: {e}"))
}

pub(crate) fn role_of(t: AccountType) -> Role {
    match t {
        AccountType::Admin => Role::RootAdmin,
        AccountType::DomainAdmin => Role::DomainAdmin,
        AccountType::User => Role::User,
    }
}
