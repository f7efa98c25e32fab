//! The extractors that authenticate, so that what a route needs is visible in its handler's
//! signature: [`Authenticated`] (checks 1–8 and 11), [`Scoped<S>`] (1–9 and 11, the scope named by
//! a marker type such as [`ApiKeysWrite`]) and [`Unmetered<S>`] (1–9, for verify). The checks
//! themselves are the engine's (SPEC §3).

use std::marker::PhantomData;
use std::ops::Deref;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use keygate_domain::Scope;
use keygate_engine::auth::Caller;
use keygate_http::{ApiError, caller};

use crate::state::AppState;

/// An authenticated caller on a route that needs no particular scope: checks 1–8 and 11.
/// (A foreign type: wrapped in [`Authenticated`].)
pub struct Authenticated(pub Caller);

impl Deref for Authenticated {
    type Target = Caller;

    fn deref(&self) -> &Caller {
        &self.0
    }
}

impl FromRequestParts<AppState> for Authenticated {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let caller = caller::authenticate(parts, state).await?;
        caller::spend(state, &caller, None).await?;
        Ok(Self(caller))
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
        let caller = caller::authenticate(parts, state).await?;
        caller.require(S::scope())?;
        caller::spend(state, &caller, None).await?;
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
        let caller = caller::authenticate(parts, state).await?;
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
    UsersRead = "users:read",
    UsersWrite = "users:write",
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
            UsersRead::scope(),
            UsersWrite::scope(),
        ] {
            assert!(scope.as_str().contains(':'));
        }
    }
}
