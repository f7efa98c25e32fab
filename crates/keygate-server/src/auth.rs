//! Authentication: from a request's headers to a [`Caller`], running SPEC §3 checks 1–8.
//!
//! Order matters and is the contract: credential present (1), well-formed with a good checksum
//! (2, no store access), known (3, same answer as 2), then the pure policy checks 4–8. Scope (9)
//! is stated per handler through [`Scoped`]; tenant (10) where a request names a tenant.
//!
//! Before any of it, an IP that has failed too often is refused (429
//! `too_many_failed_attempts`) without touching the store. Known keys come from the credential
//! cache ([`crate::cache`]), which revocations evict before they are acknowledged.

use std::borrow::Cow;
use std::marker::PhantomData;
use std::net::{IpAddr, SocketAddr};
use std::ops::Deref;
use std::sync::Arc;

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;
use axum::http::{HeaderMap, header};
use ipnet::IpNet;
use keygate_domain::gcra::Quota;
use keygate_domain::key::{KeyFormat, KeyHasher};
use keygate_domain::model::{Account, Actor, ApiKey};
use keygate_domain::policy::{self, AuthFailure, RequestFacts};
use keygate_domain::{Scope, time};
use keygate_store::Store;

use crate::cache::{Cache, Credential};
use crate::config::Settings;
use crate::error::{ApiError, current_request_id};
use crate::ratelimit::{self, LimitKey};
use crate::services::Principal;
use crate::state::AppState;
use crate::throttle::FailureThrottle;
use crate::usage::UsageRecorder;

/// Checks credentials: format, cache/store, policy.
pub struct Authenticator {
    key_format: KeyFormat,
    hasher: KeyHasher,
    cache: Arc<Cache>,
    /// The undecorated store, read on cache misses.
    store: Arc<dyn Store>,
    throttle: FailureThrottle,
    usage: Arc<UsageRecorder>,
    trusted_proxies: Vec<IpNet>,
    allow_query_key: bool,
    client_ipv6_prefix: u8,
}

pub use keygate_domain::request::CredentialSource;

/// The result of evaluating a presented key: the key if it is known, and the first failing
/// check of 2–8 if any.
pub struct Evaluation {
    pub credential: Option<Credential>,
    pub outcome: Result<(), AuthFailure>,
}

impl Authenticator {
    #[must_use]
    pub fn new(
        settings: &Settings,
        hasher: KeyHasher,
        cache: Arc<Cache>,
        store: Arc<dyn Store>,
        usage: Arc<UsageRecorder>,
    ) -> Self {
        Self {
            key_format: settings.key_format.clone(),
            hasher,
            cache,
            store,
            throttle: FailureThrottle::new(settings.max_failed_attempts_per_minute),
            usage,
            trusted_proxies: settings.trusted_proxies.clone(),
            allow_query_key: settings.allow_query_key,
            client_ipv6_prefix: settings.client_ipv6_prefix,
        }
    }

    /// Whether the deprecated `appid` query parameter is a credential here.
    #[must_use]
    pub fn allows_query_key(&self) -> bool {
        self.allow_query_key
    }

    /// What `ip` is counted under for per-client-IP limits: itself, or its IPv6 network
    /// (SPEC §3).
    #[must_use]
    pub fn rate_key(&self, ip: IpAddr) -> IpAddr {
        keygate_domain::ip::rate_key(ip, self.client_ipv6_prefix)
    }

    /// The client's IP per SPEC §3: the peer, or the right-most untrusted `X-Forwarded-For` hop
    /// when the peer is a trusted proxy.
    #[must_use]
    pub fn client_ip(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        if self.trusted_proxies.is_empty() {
            return keygate_domain::ip::canonical(peer);
        }
        let hops: Vec<&str> = headers.get_all("x-forwarded-for").iter().filter_map(|v| v.to_str().ok()).collect();
        keygate_domain::ip::client_ip(peer, &hops, &self.trusted_proxies)
    }

    /// The one credential of a request (check 1), or why there is none.
    ///
    /// # Errors
    /// `missing_api_key`, or `ambiguous_credentials` when two different credentials are present.
    pub fn credential<'a>(
        &self,
        headers: &'a HeaderMap,
        query: Option<&'a str>,
    ) -> Result<(Cow<'a, str>, CredentialSource), ApiError> {
        Ok(keygate_domain::request::credential(
            headers.get_all(header::AUTHORIZATION).iter().map(axum::http::HeaderValue::as_bytes),
            headers.get_all("x-api-key").iter().map(axum::http::HeaderValue::as_bytes),
            query,
            self.allow_query_key,
        )?)
    }

    /// Checks 2–8 for a presented key, with no side effects but filling the cache.
    ///
    /// # Errors
    /// Only when the store cannot answer a cache miss.
    pub async fn evaluate(&self, presented: &str, client_ip: Option<IpAddr>) -> Result<Evaluation, ApiError> {
        self.evaluate_guarded(presented, client_ip, || Ok(())).await
    }

    /// Checks 2–8, calling `before_store` before anything the credential cache cannot answer
    /// (a malformed key, or a cache miss for a hash no lookup has vouched for): the failed-attempt
    /// throttle goes there, so a valid key held in memory, or evicted from it, is never
    /// throttled (SPEC §3).
    async fn evaluate_guarded(
        &self,
        presented: &str,
        client_ip: Option<IpAddr>,
        before_store: impl FnOnce() -> Result<(), ApiError>,
    ) -> Result<Evaluation, ApiError> {
        let Ok((plaintext, _env)) = self.key_format.parse(presented) else {
            before_store()?;
            return Ok(Evaluation { credential: None, outcome: Err(AuthFailure::InvalidKey) });
        };
        let hash = self.hasher.hash(&plaintext);
        let found = match self.cache.remembered(&hash) {
            Some(Some(credential)) => Some(credential),
            Some(None) => {
                before_store()?;
                None
            }
            None => {
                // A hash a lookup already found a key for is no guess: it goes to the store even
                // from a throttled address, so an evicted valid key is not locked out.
                if !self.cache.vouched(&hash) {
                    before_store()?;
                }
                self.cache.load(&hash, &*self.store).await?
            }
        };
        let Some(credential) = found else {
            return Ok(Evaluation { credential: None, outcome: Err(AuthFailure::InvalidKey) });
        };
        let facts = RequestFacts { now: time::now(), client_ip: client_ip.map(keygate_domain::ip::canonical) };
        let outcome = policy::check_key(&credential.key, &credential.account, facts);
        Ok(Evaluation { credential: Some(credential), outcome })
    }

    /// Authenticates a request's own credential: checks 2–8, the failed-attempt throttle before
    /// anything memory cannot answer, failure accounting and usage recording.
    ///
    /// # Errors
    /// 429 for a throttled IP whose key is not a known one in memory, else the first failing
    /// check.
    pub async fn authenticate(&self, presented: &str, client_ip: IpAddr) -> Result<Credential, ApiError> {
        let counted_as = self.rate_key(client_ip);
        let throttle = || match self.throttle.blocked(counted_as) {
            Some(retry_after) => Err(ApiError::TooManyFailedAttempts { retry_after }),
            None => Ok(()),
        };
        let Evaluation { credential, outcome } = self.evaluate_guarded(presented, Some(client_ip), throttle).await?;
        match (credential, outcome) {
            (Some(credential), Ok(())) => {
                self.record_usage(&credential, client_ip);
                Ok(credential)
            }
            (_, Err(failure)) => {
                if matches!(failure, AuthFailure::InvalidKey | AuthFailure::Revoked | AuthFailure::Expired) {
                    self.throttle.record_failure(counted_as);
                }
                Err(failure.into())
            }
            (None, Ok(())) => Err(AuthFailure::InvalidKey.into()),
        }
    }

    /// Records a use of a key verified on behalf of another service.
    pub fn record_usage(&self, credential: &Credential, ip: IpAddr) {
        let ip = keygate_domain::ip::canonical(ip);
        if credential.note_use(time::now().timestamp(), ip) {
            self.usage.record(credential.key.id, ip);
        }
    }
}

/// An authenticated request: the key, its account, and the request's facts for audit records.
#[derive(Clone)]
pub struct Caller {
    pub credential: Credential,
    pub client_ip: IpAddr,
    pub user_agent: Option<String>,
    pub request_id: Option<String>,
    pub source: CredentialSource,
}

impl Caller {
    #[must_use]
    pub fn key(&self) -> &ApiKey {
        &self.credential.key
    }

    #[must_use]
    pub fn account(&self) -> &Account {
        &self.credential.account
    }

    /// Check 9: the key holds `scope`.
    ///
    /// # Errors
    /// `insufficient_scope` naming the scope.
    pub fn require(&self, scope: &Scope) -> Result<&Self, ApiError> {
        policy::check_scope(self.key(), self.account(), scope)?;
        Ok(self)
    }

    /// What an idempotency claim made by this caller is bound to (SPEC §6): its account and key.
    #[must_use]
    pub fn idempotency_binding(&self) -> crate::idempotency::Binding {
        crate::idempotency::Binding { account: self.account().id, principal: self.key().id.to_string(), tenant: None }
    }

    /// Who is acting, with the bounds a no-escalation check compares against.
    #[must_use]
    pub fn principal(&self) -> Principal {
        let key = self.key();
        Principal {
            account: self.account().clone(),
            actor: Actor::ApiKey(key.id),
            scopes: key.scopes.clone(),
            tenant_ids: key.tenant_ids.clone(),
            max_rate_limit: Some(key.rate_limit_per_minute),
            expires_at: key.expires_at,
            allowed_ips: key.allowed_ips.clone(),
            environment: Some(key.environment),
            ip: Some(self.client_ip),
            user_agent: self.user_agent.clone(),
            request_id: self.request_id.clone(),
        }
    }
}

impl Caller {
    /// Checks 1–8 for a request.
    pub(crate) async fn authenticate(parts: &Parts, state: &AppState) -> Result<Self, ApiError> {
        let peer = parts.extensions.get::<ConnectInfo<SocketAddr>>().map_or(IpAddr::from([127, 0, 0, 1]), |c| c.0.ip());
        let auth = &state.auth;
        let client_ip = auth.client_ip(peer, &parts.headers);
        let (presented, source) = auth.credential(&parts.headers, parts.uri.query())?;
        let credential = auth.authenticate(&presented, client_ip).await?;
        crate::middleware::note_caller(
            credential.account.id,
            credential.key.id,
            client_ip,
            source == CredentialSource::Query,
        );
        Ok(Self {
            credential,
            client_ip,
            user_agent: parts
                .headers
                .get(header::USER_AGENT)
                .and_then(|v| v.to_str().ok())
                .map(|s| s.chars().take(512).collect()),
            request_id: current_request_id(),
            source,
        })
    }

    /// Check 11: spends one request of the key's and the account's allowances, and notes the
    /// tightest for the response headers.
    ///
    /// # Errors
    /// 429 `rate_limited` naming the limit that refused.
    pub async fn spend(&self, state: &AppState) -> Result<(), ApiError> {
        self.spend_with(state, None).await
    }

    /// As [`Caller::spend`], with a route's per-IP limit checked between the key's and the
    /// account's.
    ///
    /// # Errors
    /// 429 `rate_limited` naming the limit that refused.
    pub async fn spend_with(&self, state: &AppState, route_ip: Option<(LimitKey, Quota)>) -> Result<(), ApiError> {
        match ratelimit::spend_key(state, self.key(), self.account(), route_ip).await? {
            Ok(status) => {
                if let Some(status) = status {
                    crate::middleware::note_ratelimit(status);
                }
                Ok(())
            }
            Err(refused) => Err(ApiError::RateLimited(refused)),
        }
    }
}

/// An authenticated caller on a route that needs no particular scope: checks 1–8 and 11.
impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let caller = Self::authenticate(parts, state).await?;
        caller.spend(state).await?;
        Ok(caller)
    }
}

/// A scope an endpoint needs (check 9), named by a marker type.
pub trait RequiredScope {
    /// The scope, parsed once.
    fn scope() -> &'static Scope;
}

/// A [`Caller`] whose key holds `S::scope()`: checks 1–9 and 11 run before the body is even
/// read, so a key without the scope learns nothing from validation errors, and a refused request
/// spends no allowance.
pub struct Scoped<S>(pub Caller, PhantomData<S>);

impl<S> Deref for Scoped<S> {
    type Target = Caller;

    fn deref(&self) -> &Caller {
        &self.0
    }
}

impl<S: RequiredScope + Send + Sync> FromRequestParts<AppState> for Scoped<S> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let caller = Caller::authenticate(parts, state).await?;
        caller.require(S::scope())?;
        caller.spend(state).await?;
        Ok(Self(caller, PhantomData))
    }
}

/// A [`Caller`] whose key holds `S::scope()`, checks 1–9 only: no limit of the caller's is spent.
/// For `POST /v1/verify`, whose traffic is the platform's whole traffic: it spends the verified
/// key's limits instead (SPEC §9).
pub struct Unmetered<S>(pub Caller, PhantomData<S>);

impl<S> Deref for Unmetered<S> {
    type Target = Caller;

    fn deref(&self) -> &Caller {
        &self.0
    }
}

impl<S: RequiredScope + Send + Sync> FromRequestParts<AppState> for Unmetered<S> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let caller = Caller::authenticate(parts, state).await?;
        caller.require(S::scope())?;
        Ok(Self(caller, PhantomData))
    }
}

macro_rules! scope_markers {
    ($($name:ident = $scope:literal),* $(,)?) => {
        $(
            #[doc = concat!("Requires `", $scope, "`.")]
            pub struct $name;
            impl RequiredScope for $name {
                fn scope() -> &'static Scope {
                    // A literal; the unit test below parses every one.
                    static SCOPE: std::sync::LazyLock<Scope> =
                        std::sync::LazyLock::new(|| $scope.parse().expect("a valid scope literal"));
                    &SCOPE
                }
            }
        )*
    };
}

scope_markers!(
    ApiKeysRead = "api_keys:read",
    ApiKeysWrite = "api_keys:write",
    TenantsRead = "tenants:read",
    TenantsWrite = "tenants:write",
    AccountRead = "account:read",
    AccountWrite = "account:write",
    AuditRead = "audit:read",
    AccountsRead = "accounts:read",
    AccountsWrite = "accounts:write",
    KeysVerify = "keys:verify",
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_route_scope_literal_parses() {
        for scope in [
            ApiKeysRead::scope(),
            ApiKeysWrite::scope(),
            TenantsRead::scope(),
            TenantsWrite::scope(),
            AccountRead::scope(),
            AccountWrite::scope(),
            AuditRead::scope(),
            AccountsRead::scope(),
            AccountsWrite::scope(),
            KeysVerify::scope(),
        ] {
            assert!(scope.as_str().contains(':'));
        }
    }
}
