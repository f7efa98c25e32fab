//! `POST /v1/verify`: for services that check keys themselves (SPEC §9).
//!
//! Always 200 when the caller may verify: the verdict is in the body (`valid`, `code`), with the
//! key's public facts when the key exists. It runs exactly the checks a request through keygate
//! would (2–11: the verified key's own and its account's rate limits are spent, and a spent one
//! answers `rate_limited`) and records the key's use. An allowlisted key verified without an `ip` is
//! refused (`ip_not_allowed`): an unknown address is in no allowlist; a tenant-scoped key verified
//! without a `tenant_id` is `tenant_not_allowed` (fail closed). The failed-attempts
//! throttle guards the caller's own credential, not the keys it asks about.
//!
//! The caller's own rate limits are not spent: verify traffic is the platform's whole traffic,
//! and what it stands for is the verified key's requests. The request-log record of a call about
//! a known key is a use of that key (its account, its `/usage`), with the verifying key noted in
//! `via_key_id`; a call about an unknown key is recorded as the caller's.

use std::net::IpAddr;

use axum::extract::{Request, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use keygate_domain::policy;
use keygate_domain::{AccountId, Environment, KeyId, Scope, TenantId};
use keygate_engine::Error;
use keygate_engine::auth::Caller;
use keygate_engine::services::Validator;
use keygate_http::caller;
use keygate_http::context::{Verified, note_verified};
use keygate_http::error::{ApiError, Problem};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use utoipa::ToSchema;

use crate::auth::{KeysVerify, RequiredScope as _, Unmetered};
use crate::extract::{Body, parse_required_json, read_body};
use crate::state::AppState;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VerifyRequest {
    /// The key to check.
    #[schema(example = "sk_live_3kTMd9pQ7vXz1bN4cR8wY2hJ6fL0sA5eQ9xZ2a")]
    pub key: String,
    /// The permission the request needs.
    #[schema(example = "calls:write", pattern = "^[a-z0-9_]{1,64}:([a-z0-9_]{1,64}|\\*)$")]
    pub scope: Option<String>,
    /// The tenant the request acts for.
    #[schema(pattern = "^ten_[0-7][0-9A-HJKMNP-TV-Z]{25}$")]
    pub tenant_id: Option<String>,
    /// The end client's IP, for allowlists.
    #[schema(example = "203.0.113.7", schema_with = keygate_engine::services::fields::ip_schema)]
    pub ip: Option<String>,
}

// Borrowed from the cached key: answering copies nothing.
/// Public facts of a verified key.
#[derive(Debug, Serialize, ToSchema)]
pub struct VerifiedKey<'a> {
    #[schema(value_type = String)]
    pub id: KeyId,
    #[schema(value_type = String)]
    pub account_id: AccountId,
    pub name: &'a str,
    #[schema(value_type = Option<Vec<String>>)]
    pub scopes: Option<&'a [Scope]>,
    #[schema(value_type = Option<Vec<String>>)]
    pub tenant_ids: Option<&'a [TenantId]>,
    #[schema(value_type = String)]
    pub environment: Environment,
    #[schema(value_type = Object)]
    pub metadata: &'a Map<String, Value>,
}

/// The tightest limit of the verified key that applied (or the one that refused).
#[derive(Debug, Serialize, ToSchema)]
pub struct RateLimitInfo {
    pub limit: u32,
    pub remaining: u32,
    /// Seconds until the limit is full again.
    pub reset: u64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct VerifyResponse<'a> {
    pub valid: bool,
    /// `valid`, or the code of the first failing check.
    #[schema(example = "valid")]
    pub code: &'static str,
    pub key: Option<VerifiedKey<'a>>,
    pub ratelimit: Option<RateLimitInfo>,
}

/// The path of this endpoint, as the router matches it.
pub const PATH: &str = "/v1/verify";

/// Verify a key on behalf of another service.
#[utoipa::path(post, path = "/v1/verify", tag = "Verify", request_body = VerifyRequest,
    responses((status = 200, body = VerifyResponse),
        (status = 403, body = Problem, content_type = "application/problem+json", description = "The caller lacks keys:verify")),
    security(("bearer" = [])))]
pub async fn verify(
    State(state): State<AppState>,
    caller: Unmetered<KeysVerify>,
    Body(req): Body<VerifyRequest>,
) -> Result<Response, ApiError> {
    answer(&state, &caller, req).await
}

/// Serves `POST /v1/verify` from `peer` without the router, as the router's extractors would:
/// authentication and `keys:verify` first, then the body (within the API's limit, JSON). The
/// front end dispatches the endpoint here because it is a data-plane call (every request of a
/// service that checks keys itself): the router's route table, layers and extractors are a
/// fifth of what the call costs (docs/benchmarks.md). Run it in
/// [`RequestContext::serve`](keygate_http::context::RequestContext::serve) with the route
/// [`PATH`].
pub async fn serve(state: &AppState, req: Request, peer: IpAddr) -> Response {
    let (parts, body) = req.into_parts();
    let answered = async {
        let caller = caller::authenticate_from(peer, &parts, &state.engine).await?;
        caller.require(KeysVerify::scope())?;
        let bytes = read_body(&parts.headers, body, state.max_body_bytes).await?;
        answer(state, &caller, parse_required_json(&bytes)?).await
    };
    answered.await.unwrap_or_else(IntoResponse::into_response)
}

/// The verdict on `req`, asked by `caller` (who may verify).
async fn answer(state: &AppState, caller: &Caller, req: VerifyRequest) -> Result<Response, ApiError> {
    let mut v = Validator::default();
    let scope = req.scope.as_deref().and_then(|s| s.parse::<Scope>().map_err(|e| v.error("scope", e.to_string())).ok());
    let tenant_id = req
        .tenant_id
        .as_deref()
        .and_then(|s| s.parse::<TenantId>().map_err(|e| v.error("tenant_id", e.to_string())).ok());
    let ip = req.ip.as_deref().and_then(|s| {
        let parsed = keygate_engine::services::fields::is_ip(s).then(|| s.parse::<IpAddr>().ok()).flatten();
        parsed.or_else(|| {
            v.error("ip", "must be an IPv4 or IPv6 address, like 203.0.113.7 or 2001:db8::1");
            None
        })
    });
    v.finish()?;

    let evaluation = state.auth.evaluate(&req.key, ip).await?;
    let mut outcome = evaluation.outcome;
    let mut ratelimit_info = None;
    let mut rate_limited = false;
    if let (Some(credential), Ok(())) = (&evaluation.credential, &outcome) {
        let (key, account) = (&credential.key, &credential.account);
        if let Some(scope) = &scope {
            outcome = policy::check_scope(&**credential, account, scope);
        }
        if outcome.is_ok() {
            outcome = match tenant_id {
                Some(tenant_id) => {
                    let tenant = state.keygate.store.get_tenant(account.id, tenant_id).await?;
                    policy::check_tenant(&**credential, tenant.as_ref())
                }
                // Fail closed, as the gateway does: a tenant-scoped key acts only for a tenant
                // the request names (SPEC §9).
                None if key.tenant_ids().is_some() => Err(policy::AuthFailure::TenantNotAllowed),
                None => Ok(()),
            };
        }
        if outcome.is_ok() {
            match state.spend_key(key, account, None).await? {
                Ok(status) => ratelimit_info = status,
                Err(refused) => {
                    ratelimit_info = Some(refused);
                    rate_limited = true;
                }
            }
            if !rate_limited {
                state.auth.record_usage(credential, ip.unwrap_or(caller.client_ip));
            }
        }
    }
    let key = evaluation.credential.as_ref().map(|c| {
        let k = &c.key;
        VerifiedKey {
            id: k.id,
            account_id: c.account.id,
            name: &k.name,
            scopes: k.scopes.as_deref(),
            tenant_ids: k.tenant_ids(),
            environment: k.environment,
            metadata: k.metadata(),
        }
    });
    let code = match outcome {
        Err(failure) => failure.code(),
        Ok(()) if rate_limited => "rate_limited",
        Ok(()) => "valid",
    };
    if let Some(c) = &evaluation.credential {
        note_verified(Verified {
            account: c.account.id,
            key: c.key.id,
            tenant: tenant_id.filter(|_| code == "valid"),
            ip: ip.map(keygate_domain::ip::canonical),
            outcome: if code == "valid" { "ok" } else { code },
        });
    }
    let ratelimit =
        ratelimit_info.map(|s| RateLimitInfo { limit: s.limit, remaining: s.remaining, reset: s.reset_after });
    let response = VerifyResponse { valid: code == "valid", code, key, ratelimit };
    // Serialized here, while the borrowed key is alive.
    let body = serde_json::to_vec(&response).map_err(|e| ApiError::from(Error::Internal(e.to_string())))?;
    Ok(([(header::CONTENT_TYPE, "application/json")], body).into_response())
}
