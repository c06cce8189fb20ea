//! CloudStack's API rate limit (the rate-limit plugin's
//! `ApiRateLimitServiceImpl`), with its settings and text: while
//! `api.throttling.enabled`, each account may make `api.throttling.max`
//! calls per window of `api.throttling.interval` seconds, the window
//! beginning at the account's first call after the last one ended; every
//! call counts, refused ones too; past the limit a call is answered 429
//! (`API_LIMIT_EXCEED`) with the time left in the window. The root admin's
//! account is not limited. The counters live in the data service
//! ([`stratus_store::Store::hit`], one atomic write per call), so every API
//! instance shares them, where CloudStack keeps one Ehcache per
//! management server.

use std::time::Duration;

use chrono::Utc;
use stratus_cloudstack::{ApiError, ErrorCode};
use stratus_contracts::settings::names;

use crate::registry::Role;
use crate::{Api, Caller, store_error};

/// The key of an account's window in the data service.
pub fn window_key(caller: &Caller) -> String {
    format!("api-limit#{}", caller.account.id)
}

/// Counts the call against its account's window; 429 past the limit.
pub(crate) async fn check(api: &Api, caller: &Caller) -> Result<(), ApiError> {
    let settings = &api.settings;
    if caller.role == Role::RootAdmin || !settings.boolean(names::api_throttling_enabled()) {
        return Ok(());
    }
    let interval = settings.integer(names::api_throttling_interval()).max(1) as u64;
    let max = settings.integer(names::api_throttling_max()).max(0) as u64;
    let now = Utc::now();
    let hits = api
        .store
        .hit(&window_key(caller), now, Duration::from_secs(interval))
        .await
        .map_err(store_error)?;
    if hits.count <= max {
        return Ok(());
    }
    let left = (hits.ends - now).num_milliseconds().max(0);
    tracing::warn!(account = %caller.account.id, count = hits.count, "account api limit reached");
    Err(ApiError::new(
        ErrorCode::ApiLimitExceeded,
        format!(
            "The given user has reached his/her account api limit, please retry after [{left}] ms."
        ),
    ))
}
