//! Authentication: from a presented credential to a [`Caller`], running SPEC §3 checks 1–8.
//!
//! Order matters and is the contract: credential present (1), well-formed with a good checksum
//! (2, no store access), known (3, same answer as 2), then the pure policy checks 4–8. Scope (9)
//! is [`Caller::require`], tenant (10) `policy::check_tenant` where a request names a tenant,
//! limits (11) [`Caller::spend`]. Reading the credential and the client's address out of an HTTP
//! request is the front ends' part (`keygate-http`).
//!
//! Before any of it, an IP that has failed too often is refused (429
//! `too_many_failed_attempts`) without touching the store. Known keys come from the credential
//! cache ([`crate::cache`]), which revocations evict before they are acknowledged.

use std::borrow::Cow;
use std::net::IpAddr;
use std::sync::Arc;

use ipnet::IpNet;
use keygate_domain::key::{KeyFormat, KeyHasher};
use keygate_domain::model::{Account, Actor};
use keygate_domain::policy::{self, AuthFailure, RequestFacts};
use keygate_domain::{AccountId, KeyId, Scope, TenantId, time};
use keygate_store::Store;

use crate::cache::{Cache, CachedKey, Credential};
use crate::error::Error;
use crate::idempotency::Binding;
use crate::principal::Principal;
use crate::ratelimit::RateLimiter;
use crate::settings::Settings;
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
        limiter: Arc<dyn RateLimiter>,
    ) -> Self {
        Self {
            key_format: settings.key_format.clone(),
            hasher,
            cache,
            store,
            throttle: FailureThrottle::new(settings.max_failed_attempts_per_minute, limiter),
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

    /// Whether `peer` is one of the configured trusted proxies, whose `X-Forwarded-*` headers
    /// are believed (the client's IP, and for the dashboard whether the browser used https).
    #[must_use]
    pub fn is_trusted_proxy(&self, peer: IpAddr) -> bool {
        let peer = keygate_domain::ip::canonical(peer);
        self.trusted_proxies.iter().any(|net| net.contains(&peer))
    }

    /// The client's IP per SPEC §3: the peer, or the right-most untrusted `X-Forwarded-For` hop
    /// when the peer is a trusted proxy.
    #[must_use]
    /// `forwarded_for` yields the `X-Forwarded-For` header values in order; it is called only
    /// when proxies are trusted at all.
    pub fn client_ip<'a, I: Iterator<Item = &'a str>>(
        &self,
        peer: IpAddr,
        forwarded_for: impl FnOnce() -> I,
    ) -> IpAddr {
        if self.trusted_proxies.is_empty() {
            return keygate_domain::ip::canonical(peer);
        }
        let hops: Vec<&str> = forwarded_for().collect();
        keygate_domain::ip::client_ip(peer, &hops, &self.trusted_proxies)
    }

    /// The one credential of a request (check 1), or why there is none.
    ///
    /// # Errors
    /// `missing_api_key`, or `ambiguous_credentials` when two different credentials are present.
    /// `authorization` and `api_key` yield the raw values of every `Authorization` and
    /// `X-API-Key` header; `query` is the request's query string.
    pub fn credential<'a>(
        &self,
        authorization: impl Iterator<Item = &'a [u8]>,
        api_key: impl Iterator<Item = &'a [u8]>,
        query: Option<&'a str>,
    ) -> Result<(Cow<'a, str>, CredentialSource), Error> {
        Ok(keygate_domain::request::credential(authorization, api_key, query, self.allow_query_key)?)
    }

    /// Checks 2–8 for a presented key, with no side effects but filling the cache.
    ///
    /// # Errors
    /// Only when the store cannot answer a cache miss.
    pub async fn evaluate(&self, presented: &str, client_ip: Option<IpAddr>) -> Result<Evaluation, Error> {
        self.evaluate_guarded(presented, client_ip, async || Ok(())).await
    }

    /// Checks 2–8, calling `before_store` before anything the credential cache cannot answer
    /// (a malformed key, or a cache miss for a hash no lookup has vouched for): the failed-attempt
    /// throttle goes there, so a valid key held in memory, or evicted from it, is never
    /// throttled (SPEC §3).
    async fn evaluate_guarded(
        &self,
        presented: &str,
        client_ip: Option<IpAddr>,
        before_store: impl AsyncFnOnce() -> Result<(), Error>,
    ) -> Result<Evaluation, Error> {
        let Ok((plaintext, _env)) = self.key_format.parse(presented) else {
            before_store().await?;
            return Ok(Evaluation { credential: None, outcome: Err(AuthFailure::InvalidKey) });
        };
        let hash = self.hasher.hash(&plaintext);
        let found = match self.cache.remembered(&hash) {
            Some(Some(credential)) => Some(credential),
            Some(None) => {
                before_store().await?;
                None
            }
            None => {
                // A hash a lookup already found a key for is no guess: it goes to the store even
                // from a throttled address, so an evicted valid key is not locked out.
                if !self.cache.vouched(&hash) {
                    before_store().await?;
                }
                self.cache.load(&hash, &*self.store).await?
            }
        };
        let Some(credential) = found else {
            return Ok(Evaluation { credential: None, outcome: Err(AuthFailure::InvalidKey) });
        };
        let facts = RequestFacts { now: time::now(), client_ip: client_ip.map(keygate_domain::ip::canonical) };
        let outcome = policy::check_key(&*credential, &credential.account, facts);
        Ok(Evaluation { credential: Some(credential), outcome })
    }

    /// Authenticates a request's own credential: checks 2–8, the failed-attempt throttle before
    /// anything memory cannot answer, failure accounting and usage recording.
    ///
    /// # Errors
    /// 429 for a throttled IP whose key is not a known one in memory, else the first failing
    /// check; with the key when it is a known one (checks 4–8 refused it).
    pub async fn authenticate(&self, presented: &str, client_ip: IpAddr) -> Result<Credential, Refused> {
        let counted_as = self.rate_key(client_ip);
        let throttle = async || match self.throttle.blocked(counted_as).await {
            Some(retry_after) => Err(Error::TooManyFailedAttempts { retry_after }),
            None => Ok(()),
        };
        let Evaluation { credential, outcome } = self
            .evaluate_guarded(presented, Some(client_ip), throttle)
            .await
            .map_err(|error| Refused { error, key: None })?;
        match (credential, outcome) {
            (Some(credential), Ok(())) => {
                self.record_usage(&credential, client_ip);
                Ok(credential)
            }
            (credential, Err(failure)) => {
                if matches!(failure, AuthFailure::InvalidKey | AuthFailure::Revoked | AuthFailure::Expired) {
                    self.throttle.record_failure(counted_as).await;
                }
                let key = credential.map(|c| (c.account.id, c.key.id));
                Err(Refused { error: failure.into(), key })
            }
            (None, Ok(())) => Err(Refused { error: AuthFailure::InvalidKey.into(), key: None }),
        }
    }

    /// Records a use of a key verified on behalf of another service.
    pub fn record_usage(&self, credential: &Credential, ip: IpAddr) {
        let ip = keygate_domain::ip::canonical(ip);
        if credential.note_use(time::unix_seconds(), ip) {
            self.usage.record(credential.key.id, ip);
        }
    }
}

/// A credential [`Authenticator::authenticate`] refused: why, and which key it is when the key is
/// a known one (revoked, expired, its account suspended, or the client's IP not allowed): such
/// a refused use still counts in that key's usage and request log (SPEC §8), so a partner sees
/// what a leaked key was tried for after it was revoked.
#[derive(Debug)]
pub struct Refused {
    pub error: Error,
    pub key: Option<(AccountId, KeyId)>,
}

impl From<Refused> for Error {
    fn from(refused: Refused) -> Self {
        refused.error
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
    pub fn key(&self) -> &CachedKey {
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
    pub fn require(&self, scope: &Scope) -> Result<&Self, Error> {
        policy::check_scope(&*self.credential, self.account(), scope)?;
        Ok(self)
    }

    /// What an idempotency claim made by this caller is bound to (SPEC §6): its account and key.
    #[must_use]
    pub fn idempotency_binding(&self) -> Binding {
        Binding { account: self.account().id, principal: self.key().id.to_string(), tenant: None }
    }

    /// Who is acting, with the bounds a no-escalation check compares against.
    #[must_use]
    pub fn principal(&self) -> Principal {
        let key = self.key();
        Principal {
            account: self.account().clone(),
            actor: Actor::ApiKey(key.id),
            scopes: key.scopes.as_deref().map(<[Scope]>::to_vec),
            tenant_ids: key.tenant_ids().map(<[TenantId]>::to_vec),
            max_rate_limit: Some(key.rate_limit_per_minute),
            expires_at: key.expires_at,
            allowed_ips: key.allowed_ips().map(<[IpNet]>::to_vec),
            environment: Some(key.environment),
            role: None,
            ip: Some(self.client_ip),
            user_agent: self.user_agent.clone(),
            request_id: self.request_id.clone(),
        }
    }
}
