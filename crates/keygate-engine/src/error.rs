//! What can go wrong in the engine: one [`Error`] enum for authentication, limits, idempotency
//! and every use case.
//!
//! Policy: the domain and the store return their own `thiserror` enums; the engine returns
//! [`Error`], which says what went wrong and carries the stable error `code` of SPEC §3 and §8
//! (the CLI prints it too), never which HTTP status to send: `keygate-http` maps each variant to a
//! status and an RFC 9457 problem document, in one place. `Display` is for logs; nothing here may
//! format a secret.

use keygate_domain::AuthFailure;
use keygate_store::StoreError;
use serde::Serialize;
use utoipa::ToSchema;

use crate::ratelimit::RateLimitStatus;

/// One field that failed validation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct FieldError {
    /// The field's path in the request: `name`, `scopes[2]`, `metadata.crm`.
    pub field: String,
    pub message: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self { field: field.into(), message: message.into() }
    }
}

/// Which bound a no-escalation refusal was about (SPEC §4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exceeds {
    Scopes,
    TenantIds,
    RateLimit,
    ExpiresAt,
    AllowedIps,
    Environment,
    /// A signed-in user acting on a user of its own role or above (SPEC §8).
    Role,
}

impl Exceeds {
    /// The request field the bound is about: `scopes`, `tenant_ids`, `rate_limit_per_minute`,
    /// `expires_at`, `allowed_ips`, `environment` or `role`.
    #[must_use]
    pub fn field(self) -> &'static str {
        match self {
            Self::Scopes => "scopes",
            Self::TenantIds => "tenant_ids",
            Self::RateLimit => "rate_limit_per_minute",
            Self::ExpiresAt => "expires_at",
            Self::AllowedIps => "allowed_ips",
            Self::Environment => "environment",
            Self::Role => "role",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// One of the SPEC §3 authentication/authorization checks failed.
    #[error("{0}")]
    Auth(#[from] AuthFailure),
    /// The principal tried to give a key more than it holds itself (SPEC §4).
    #[error("escalation beyond the principal's own {}", .exceeds.field())]
    Escalation { exceeds: Exceeds, required_scope: Option<String> },
    /// Fields of the input are not valid; every one is listed.
    #[error("validation failed")]
    Validation(Vec<FieldError>),
    /// The request as a whole cannot be understood (the message says why, for the client).
    #[error("{0}")]
    InvalidRequest(String),
    /// A rate limit refused the request (check 11).
    #[error("rate limited by the {0}")]
    RateLimited(RateLimitStatus),
    /// A dashboard sign-in with an unknown email or a wrong password: one answer for both.
    #[error("invalid credentials")]
    InvalidCredentials,
    /// Too many failed authentications from this IP; retry after that many seconds.
    #[error("too many failed attempts")]
    TooManyFailedAttempts { retry_after: u64 },
    /// The object does not exist for this principal (also: it belongs to another account).
    #[error("no such {0}")]
    NotFound(&'static str),
    /// The change conflicts with the data (the message says how, for the client).
    #[error("{0}")]
    Conflict(String),
    /// Another request with this Idempotency-Key is still executing (SPEC §6).
    #[error("idempotency key in use")]
    IdempotencyInProgress,
    /// This Idempotency-Key was used with a different request (SPEC §6).
    #[error("idempotency key reused")]
    IdempotencyKeyReused,
    /// The shared rate limiter could not decide (cluster mode: Redis unreachable).
    #[error("rate limiter unavailable: {0}")]
    LimiterUnavailable(String),
    /// The store could not be reached.
    #[error("store unavailable")]
    Unavailable(#[source] StoreError),
    /// A bug or corrupt data. The message is logged, never shown to a client.
    #[error("internal error: {0}")]
    Internal(String),
}

impl Error {
    /// A single-field validation error.
    pub fn field(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Validation(vec![FieldError::new(field, message)])
    }

    /// The stable machine-readable code (SPEC §3, §8): `invalid_api_key`, `validation_failed`, …
    #[must_use]
    pub fn code(&self) -> &'static str {
        match self {
            Self::Auth(f) => f.code(),
            Self::Escalation { .. } => "insufficient_scope",
            Self::Validation(_) => "validation_failed",
            Self::InvalidRequest(_) => "invalid_request",
            Self::InvalidCredentials => "invalid_credentials",
            Self::TooManyFailedAttempts { .. } => "too_many_failed_attempts",
            Self::RateLimited(_) => "rate_limited",
            Self::NotFound(_) => "not_found",
            Self::Conflict(_) => "conflict",
            Self::IdempotencyInProgress => "idempotency_in_progress",
            Self::IdempotencyKeyReused => "idempotency_key_reused",
            Self::Unavailable(_) | Self::LimiterUnavailable(_) => "service_unavailable",
            Self::Internal(_) => "internal",
        }
    }
}

impl From<StoreError> for Error {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Conflict("tenant_external_id") => {
                Self::Conflict("This account already has a tenant with that external_id.".into())
            }
            StoreError::Conflict("operator_exists") => Self::Conflict("The operator account already exists.".into()),
            StoreError::Conflict("user_email") => {
                Self::Conflict("This account already has a user with that email.".into())
            }
            StoreError::Conflict("last_owner") => {
                Self::Conflict("An account keeps at least one owner: make another user owner first.".into())
            }
            StoreError::Conflict("user_changed") => {
                Self::Conflict("The user changed while this request ran; read it again and retry.".into())
            }
            StoreError::Conflict(rule) => Self::Conflict(format!("The change conflicts with existing data ({rule}).")),
            // OWASP API4: per-account caps, counted and enforced in the write transaction.
            StoreError::LimitReached { what: "users", max } => Self::Conflict(format!(
                "This account holds {max} users, the most it may have. Delete users it no longer needs, or ask \
                 the operator to raise limits.max_users_per_account."
            )),
            StoreError::LimitReached { what: "tenants", max } => Self::Conflict(format!(
                "This account holds {max} tenants, the most it may have. Ask the operator to raise \
                 limits.max_tenants_per_account."
            )),
            StoreError::LimitReached { max, .. } => Self::Conflict(format!(
                "This account holds {max} API keys, the most it may have. Delete keys it no longer needs \
                 (revoked and expired keys count until deleted), or ask the operator to raise \
                 limits.max_keys_per_account."
            )),
            StoreError::InvalidText(_) => {
                Self::InvalidRequest("Text may not contain the NUL character (U+0000).".into())
            }
            e @ StoreError::Unavailable(_) => Self::Unavailable(e),
            e @ (StoreError::Corrupt(_) | StoreError::Migrate(_)) => Self::Internal(e.to_string()),
        }
    }
}
