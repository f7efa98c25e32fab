//! Authentication: from a request's headers to a [`Caller`], running SPEC §3 checks 1–8.
//!
//! Order matters and is the contract: credential present (1), well-formed with a good checksum
//! (2, no store access), known (3, same answer as 2), then the pure policy checks 4–8. Scope (9)
//! and tenant (10) depend on the endpoint, so handlers ask for them through [`Caller`].

use std::marker::PhantomData;
use std::net::{IpAddr, SocketAddr};
use std::ops::Deref;
use std::sync::Arc;

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;
use axum::http::{HeaderMap, header};
use ipnet::IpNet;
use keygate_domain::model::{Account, Actor, ApiKey};
use keygate_domain::policy::{self, AuthFailure, RequestFacts};
use keygate_domain::{Scope, time};

use crate::config::Settings;
use crate::error::{ApiError, current_request_id};
use crate::services::Principal;
use crate::state::{AppState, Keygate};

/// Checks credentials against the store.
pub struct Authenticator {
    keygate: Arc<Keygate>,
    trusted_proxies: Vec<IpNet>,
    allow_query_key: bool,
}

/// Where the credential came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CredentialSource {
    Bearer,
    ApiKeyHeader,
    /// The deprecated `appid` query parameter.
    Query,
}

impl Authenticator {
    #[must_use]
    pub fn new(keygate: Arc<Keygate>, settings: &Settings) -> Self {
        Self { keygate, trusted_proxies: settings.trusted_proxies.clone(), allow_query_key: settings.allow_query_key }
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
    ) -> Result<(std::borrow::Cow<'a, str>, CredentialSource), ApiError> {
        let mut found: Option<(std::borrow::Cow<'a, str>, CredentialSource)> = None;
        let mut offer = |value: std::borrow::Cow<'a, str>, source| -> Result<(), ApiError> {
            match &found {
                Some((existing, _)) if *existing != value => Err(AuthFailure::AmbiguousCredentials.into()),
                Some(_) => Ok(()),
                None => {
                    found = Some((value, source));
                    Ok(())
                }
            }
        };
        for v in headers.get_all(header::AUTHORIZATION) {
            let v = v.to_str().map_err(|_| AuthFailure::InvalidKey)?;
            let token =
                v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")).ok_or(AuthFailure::InvalidKey)?;
            offer(std::borrow::Cow::Borrowed(token.trim()), CredentialSource::Bearer)?;
        }
        for v in headers.get_all("x-api-key") {
            let v = v.to_str().map_err(|_| AuthFailure::InvalidKey)?;
            offer(std::borrow::Cow::Borrowed(v.trim()), CredentialSource::ApiKeyHeader)?;
        }
        if self.allow_query_key
            && let Some(q) = query
        {
            for (k, v) in form_urlencoded::parse(q.as_bytes()) {
                if k == "appid" {
                    offer(v, CredentialSource::Query)?;
                }
            }
        }
        found.ok_or_else(|| AuthFailure::MissingKey.into())
    }

    /// Checks 2–8 for a presented credential.
    ///
    /// # Errors
    /// The first failing check; `service_unavailable` when the store cannot answer.
    pub async fn verify(&self, presented: &str, client_ip: IpAddr) -> Result<(ApiKey, Account), ApiError> {
        let (plaintext, _env) =
            self.keygate.key_format.parse(presented).map_err(|_| ApiError::Auth(AuthFailure::InvalidKey))?;
        let hash = self.keygate.hasher.hash(&plaintext);
        let (key, account) =
            self.keygate.store.find_key_by_hash(&hash).await?.ok_or(ApiError::Auth(AuthFailure::InvalidKey))?;
        policy::check_key(&key, &account, RequestFacts { now: time::now(), client_ip })?;
        Ok((key, account))
    }
}

/// An authenticated request: the key, its account, and the request's facts for audit records.
#[derive(Debug, Clone)]
pub struct Caller {
    pub key: Arc<ApiKey>,
    pub account: Arc<Account>,
    pub client_ip: IpAddr,
    pub user_agent: Option<String>,
    pub request_id: Option<String>,
    pub source: CredentialSource,
}

impl Caller {
    /// Check 9: the key holds `scope`.
    ///
    /// # Errors
    /// `insufficient_scope` naming the scope.
    pub fn require(&self, scope: &str) -> Result<&Self, ApiError> {
        let required: Scope = scope.parse().map_err(|_| ApiError::Internal(format!("bad scope literal {scope}")))?;
        policy::check_scope(&self.key, &self.account, &required)?;
        Ok(self)
    }

    /// Who is acting, with the bounds a no-escalation check compares against.
    #[must_use]
    pub fn principal(&self) -> Principal {
        Principal {
            account: (*self.account).clone(),
            actor: Actor::ApiKey(self.key.id),
            scopes: self.key.scopes.clone(),
            tenant_ids: self.key.tenant_ids.clone(),
            max_rate_limit: Some(self.key.rate_limit_per_minute),
            ip: Some(self.client_ip),
            user_agent: self.user_agent.clone(),
            request_id: self.request_id.clone(),
        }
    }
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let peer = parts.extensions.get::<ConnectInfo<SocketAddr>>().map_or(IpAddr::from([127, 0, 0, 1]), |c| c.0.ip());
        let auth = &state.auth;
        let client_ip = auth.client_ip(peer, &parts.headers);
        let (presented, source) = auth.credential(&parts.headers, parts.uri.query())?;
        let (key, account) = auth.verify(&presented, client_ip).await?;
        crate::middleware::note_caller(account.id, key.id, client_ip, source == CredentialSource::Query);
        Ok(Self {
            key: Arc::new(key),
            account: Arc::new(account),
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
}

/// A scope an endpoint needs (check 9), named by a marker type.
pub trait RequiredScope {
    const SCOPE: &'static str;
}

/// A [`Caller`] whose key holds `S::SCOPE`: checks 1–9 run before the body is even read, so a
/// key without the scope learns nothing from validation errors.
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
        let caller = Caller::from_request_parts(parts, state).await?;
        caller.require(S::SCOPE)?;
        Ok(Self(caller, PhantomData))
    }
}

macro_rules! scope_markers {
    ($($name:ident = $scope:literal),* $(,)?) => {
        $(
            #[doc = concat!("Requires `", $scope, "`.")]
            pub struct $name;
            impl RequiredScope for $name {
                const SCOPE: &'static str = $scope;
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
