//! From an HTTP request to the engine's [`Caller`]: the client's address, the one credential, and
//! SPEC §3 checks 1–8; then check 11 with the limit that applied noted for the response headers.

use std::borrow::Cow;
use std::net::{IpAddr, SocketAddr};

use axum::extract::ConnectInfo;
use axum::http::request::Parts;
use axum::http::{Extensions, HeaderMap, HeaderValue, header};
use keygate_domain::gcra::Quota;
use keygate_domain::request::CredentialSource;
use keygate_engine::Engine;
use keygate_engine::auth::{Authenticator, Caller};
use keygate_engine::ratelimit::LimitKey;

use crate::context::{note_caller, note_ratelimit};
use crate::error::{ApiError, current_request_id};
use crate::headers::{X_API_KEY, X_FORWARDED_FOR};

/// Checks 1–8 for a request: the client IP per SPEC §3 (the peer, or the right-most untrusted
/// `X-Forwarded-For` hop behind a trusted proxy), the one credential of `Authorization`,
/// `X-API-Key` or (where allowed) `appid`, then the key. Notes the caller for the request's log
/// line, usage count and request-log record, also when a known key is refused.
///
/// # Errors
/// The first failing check; 429 `too_many_failed_attempts` for a throttled address.
pub async fn authenticate(parts: &Parts, engine: &Engine) -> Result<Caller, ApiError> {
    authenticate_from(peer(&parts.extensions), parts, engine).await
}

/// The connection's peer address, from axum's `ConnectInfo` (loopback where the router was
/// called without one, as in-process tests do).
#[must_use]
pub fn peer(extensions: &Extensions) -> IpAddr {
    extensions.get::<ConnectInfo<SocketAddr>>().map_or(IpAddr::from([127, 0, 0, 1]), |c| c.0.ip())
}

/// As [`authenticate`], for a request that came from `peer`.
///
/// # Errors
/// As [`authenticate`].
pub async fn authenticate_from(peer: IpAddr, parts: &Parts, engine: &Engine) -> Result<Caller, ApiError> {
    let auth = &engine.auth;
    let headers = &parts.headers;
    let client_ip = client_ip(auth, peer, headers);
    let (presented, source) = credential(auth, headers, parts.uri.query())?;
    let authenticated = auth.authenticate(&presented, client_ip).await;
    // A known key refused by checks 4–8 is still the caller of record: the refusal counts in its
    // usage and request log.
    let known = match &authenticated {
        Ok(credential) => Some((credential.account.id, credential.key.id)),
        Err(refused) => refused.key,
    };
    if let Some((account, key)) = known {
        note_caller(account, key, client_ip, source == CredentialSource::Query);
    }
    let credential = authenticated.map_err(|refused| ApiError::from(refused.error))?;
    Ok(Caller {
        credential,
        client_ip,
        user_agent: headers
            .get(header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .map(|s| s.chars().take(512).collect()),
        request_id: current_request_id(),
        source,
    })
}

/// The client's IP: `peer`, or what `X-Forwarded-For` says when `peer` is a trusted proxy
/// ([`Authenticator::client_ip`]).
#[must_use]
pub fn client_ip(auth: &Authenticator, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
    auth.client_ip(peer, || headers.get_all(X_FORWARDED_FOR).iter().filter_map(|v| v.to_str().ok()))
}

/// The one credential of a request (check 1): from `Authorization`, `X-API-Key` or, where
/// allowed, the `appid` parameter of `query`.
///
/// # Errors
/// `missing_api_key`, or `ambiguous_credentials` when two different credentials are present.
pub fn credential<'a>(
    auth: &Authenticator,
    headers: &'a HeaderMap,
    query: Option<&'a str>,
) -> Result<(Cow<'a, str>, CredentialSource), ApiError> {
    Ok(auth.credential(
        headers.get_all(header::AUTHORIZATION).iter().map(HeaderValue::as_bytes),
        headers.get_all(X_API_KEY).iter().map(HeaderValue::as_bytes),
        query,
    )?)
}

/// Check 11 ([`Engine::spend`]), noting the tightest limit for the response's headers.
///
/// # Errors
/// 429 `rate_limited` naming the limit that refused; 503 when the limiter cannot decide.
pub async fn spend(engine: &Engine, caller: &Caller, route_ip: Option<(LimitKey, Quota)>) -> Result<(), ApiError> {
    if let Some(status) = engine.spend(caller, route_ip).await? {
        note_ratelimit(status);
    }
    Ok(())
}
