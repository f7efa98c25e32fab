//! The one error type at the edge.
//!
//! Policy: library code (domain, store) returns its own `thiserror` enums; use cases and
//! handlers return [`ApiError`], and [`ApiError::into_response`] is the only place that picks an
//! HTTP status and an error `code`. Every error is an RFC 9457 `application/problem+json` body
//! carrying the request id. A 500 or 503 tells the client nothing but that id: the cause goes to
//! the log, never into the body. Nothing here may format a secret.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use keygate_domain::AuthFailure;
use keygate_store::StoreError;
use serde::Serialize;
use serde_json::{Map, Value, json};
use utoipa::ToSchema;

tokio::task_local! {
    /// The current request's id, set by the request-id middleware around every request so that
    /// errors can name it without threading it through every call.
    pub static REQUEST_ID: String;
}

/// The current request id, if called within a request.
#[must_use]
pub fn current_request_id() -> Option<String> {
    REQUEST_ID.try_with(Clone::clone).ok()
}

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

/// Which bound a no-escalation refusal was about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exceeds {
    Scopes,
    TenantIds,
    RateLimit,
    ExpiresAt,
    AllowedIps,
    Environment,
}

impl Exceeds {
    fn field(self) -> &'static str {
        match self {
            Self::Scopes => "scopes",
            Self::TenantIds => "tenant_ids",
            Self::RateLimit => "rate_limit_per_minute",
            Self::ExpiresAt => "expires_at",
            Self::AllowedIps => "allowed_ips",
            Self::Environment => "environment",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// One of the SPEC §3 authentication/authorization checks failed.
    #[error("{0}")]
    Auth(#[from] AuthFailure),
    /// The caller tried to give a key more than it holds itself.
    #[error("escalation beyond the caller's own {}", .exceeds.field())]
    Escalation { exceeds: Exceeds, required_scope: Option<String> },
    #[error("validation failed")]
    Validation(Vec<FieldError>),
    #[error("{0}")]
    InvalidRequest(String),
    /// A rate limit refused the request (check 11).
    #[error("rate limited by the {0}")]
    RateLimited(crate::ratelimit::RateLimitStatus),
    /// Too many failed authentications from this IP; retry after that many seconds.
    #[error("too many failed attempts")]
    TooManyFailedAttempts { retry_after: u64 },
    /// The object does not exist for this caller (also: it belongs to another account).
    #[error("no such {0}")]
    NotFound(&'static str),
    #[error("{0}")]
    Conflict(String),
    #[error("the request body is larger than {0} bytes")]
    PayloadTooLarge(usize),
    #[error("no route matches")]
    RouteNotFound,
    #[error("method not allowed")]
    MethodNotAllowed,
    /// Another request with this Idempotency-Key is still executing.
    #[error("idempotency key in use")]
    IdempotencyInProgress,
    /// This Idempotency-Key was used with a different request.
    #[error("idempotency key reused")]
    IdempotencyKeyReused,
    /// The upstream could not be reached (or dropped the connection).
    #[error("upstream unavailable")]
    UpstreamUnavailable,
    /// The upstream did not answer in time.
    #[error("upstream timeout")]
    UpstreamTimeout,
    /// The shared rate limiter could not decide (cluster mode: Redis unreachable).
    #[error("rate limiter unavailable: {0}")]
    LimiterUnavailable(String),
    /// The store could not be reached.
    #[error("store unavailable")]
    Unavailable(#[source] StoreError),
    /// A bug or corrupt data. The message is logged, never sent.
    #[error("internal error: {0}")]
    Internal(String),
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Conflict("tenant_external_id") => {
                Self::Conflict("This account already has a tenant with that external_id.".into())
            }
            StoreError::Conflict("operator_exists") => Self::Conflict("The operator account already exists.".into()),
            StoreError::Conflict(rule) => Self::Conflict(format!("The change conflicts with existing data ({rule}).")),
            // OWASP API4: per-account caps, counted and enforced in the write transaction.
            StoreError::LimitReached { what: "tenants", max } => Self::Conflict(format!(
                "This account holds {max} tenants, the most it may have. Ask the operator to raise \
                 limits.max_tenants_per_account."
            )),
            StoreError::LimitReached { max, .. } => Self::Conflict(format!(
                "This account holds {max} API keys, the most it may have. Delete keys it no longer needs \
                 (revoked and expired keys count until deleted), or ask the operator to raise \
                 limits.max_keys_per_account."
            )),
            e @ StoreError::Unavailable(_) => Self::Unavailable(e),
            e @ (StoreError::Corrupt(_) | StoreError::Migrate(_)) => Self::Internal(e.to_string()),
        }
    }
}

impl ApiError {
    /// A single-field validation error.
    pub fn field(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Validation(vec![FieldError::new(field, message)])
    }

    #[must_use]
    pub fn status(&self) -> StatusCode {
        match self {
            Self::Auth(f) => match f {
                AuthFailure::MissingKey | AuthFailure::InvalidKey | AuthFailure::Revoked | AuthFailure::Expired => {
                    StatusCode::UNAUTHORIZED
                }
                AuthFailure::AmbiguousCredentials => StatusCode::BAD_REQUEST,
                AuthFailure::AccountSuspended
                | AuthFailure::IpNotAllowed
                | AuthFailure::InsufficientScope { .. }
                | AuthFailure::TenantNotAllowed
                | AuthFailure::TenantSuspended => StatusCode::FORBIDDEN,
            },
            Self::Escalation { .. } => StatusCode::FORBIDDEN,
            Self::Validation(_) => StatusCode::UNPROCESSABLE_ENTITY,
            Self::InvalidRequest(_) => StatusCode::BAD_REQUEST,
            Self::TooManyFailedAttempts { .. } | Self::RateLimited(_) => StatusCode::TOO_MANY_REQUESTS,
            Self::NotFound(_) | Self::RouteNotFound => StatusCode::NOT_FOUND,
            Self::Conflict(_) | Self::IdempotencyInProgress => StatusCode::CONFLICT,
            Self::IdempotencyKeyReused => StatusCode::UNPROCESSABLE_ENTITY,
            Self::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::Unavailable(_) | Self::LimiterUnavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            Self::UpstreamUnavailable => StatusCode::BAD_GATEWAY,
            Self::UpstreamTimeout => StatusCode::GATEWAY_TIMEOUT,
        }
    }

    /// The stable machine-readable code.
    #[must_use]
    pub fn code(&self) -> &'static str {
        match self {
            Self::Auth(f) => f.code(),
            Self::Escalation { .. } => "insufficient_scope",
            Self::Validation(_) => "validation_failed",
            Self::InvalidRequest(_) => "invalid_request",
            Self::TooManyFailedAttempts { .. } => "too_many_failed_attempts",
            Self::RateLimited(_) => "rate_limited",
            Self::NotFound(_) => "not_found",
            Self::Conflict(_) => "conflict",
            Self::IdempotencyInProgress => "idempotency_in_progress",
            Self::IdempotencyKeyReused => "idempotency_key_reused",
            Self::PayloadTooLarge(_) => "payload_too_large",
            Self::RouteNotFound => "route_not_found",
            Self::MethodNotAllowed => "method_not_allowed",
            Self::Unavailable(_) | Self::LimiterUnavailable(_) => "service_unavailable",
            Self::Internal(_) => "internal",
            Self::UpstreamUnavailable => "upstream_unavailable",
            Self::UpstreamTimeout => "upstream_timeout",
        }
    }

    fn title(&self) -> String {
        let code = self.code();
        let mut t = code.replace('_', " ");
        if let Some(first) = t.get_mut(..1) {
            first.make_ascii_uppercase();
        }
        t.replace("api key", "API key").replace("Ip not", "IP not")
    }

    /// The human sentence for the client. Never contains internals.
    fn detail(&self) -> String {
        match self {
            Self::Auth(f) => f.to_string(),
            Self::Escalation { exceeds: Exceeds::Scopes, required_scope } => match required_scope.as_deref() {
                Some("*") | None => "A key with restricted scopes cannot create or change an unrestricted key.".into(),
                Some(s) => format!("This key lacks {s}, so it cannot give it to another key."),
            },
            Self::Escalation { exceeds: Exceeds::TenantIds, .. } => {
                "A key can only create or change keys within its own tenant scope.".into()
            }
            Self::Escalation { exceeds: Exceeds::RateLimit, .. } => {
                "A key cannot create or change a key with a higher rate limit than its own.".into()
            }
            Self::Escalation { exceeds: Exceeds::ExpiresAt, .. } => {
                "A key that expires can only create or change keys that expire no later than it does; \
                 set expires_at at or before its own."
                    .into()
            }
            Self::Escalation { exceeds: Exceeds::AllowedIps, .. } => {
                "A key with an IP allowlist can only create or change keys whose every allowed_ips entry \
                 lies inside its own allowlist."
                    .into()
            }
            Self::Escalation { exceeds: Exceeds::Environment, .. } => {
                "A test key can only create or change test keys.".into()
            }
            Self::Validation(errors) => match errors.as_slice() {
                [one] => format!("{}: {}", one.field, one.message),
                _ => format!("{} fields are not valid.", errors.len()),
            },
            Self::InvalidRequest(m) | Self::Conflict(m) => m.clone(),
            Self::NotFound(what) => format!("No such {what}."),
            Self::IdempotencyInProgress => {
                "A request with this Idempotency-Key is still being processed; retry shortly.".into()
            }
            Self::IdempotencyKeyReused => {
                "This Idempotency-Key was already used with a different request (method, path, query or body).".into()
            }
            Self::TooManyFailedAttempts { retry_after } => {
                format!("Too many failed authentication attempts from this IP address; retry in {retry_after} s.")
            }
            Self::RateLimited(s) => format!(
                "The {} limit of {} requests per minute is used up; retry in {} s.",
                s.scope.as_str(),
                s.limit,
                s.retry_after.unwrap_or(1)
            ),
            Self::PayloadTooLarge(limit) => format!("The request body is larger than the limit of {limit} bytes."),
            Self::RouteNotFound => "No route matches this method and path.".into(),
            Self::MethodNotAllowed => "This path does not accept this method.".into(),
            Self::Unavailable(_) | Self::LimiterUnavailable(_) => {
                "The service is temporarily unavailable; retry later.".into()
            }
            Self::Internal(_) => "Something went wrong on our side. Quote the request_id when reporting it.".into(),
            Self::UpstreamUnavailable => "The upstream API could not be reached.".into(),
            Self::UpstreamTimeout => "The upstream API did not answer in time.".into(),
        }
    }

    /// The problem document (without `request_id`, which the response adds).
    #[must_use]
    pub fn problem(&self) -> Map<String, Value> {
        let code = self.code();
        let mut body = Map::new();
        body.insert("type".into(), json!(format!("https://keygate.dev/problems/{code}")));
        body.insert("title".into(), json!(self.title()));
        body.insert("status".into(), json!(self.status().as_u16()));
        body.insert("detail".into(), json!(self.detail()));
        body.insert("code".into(), json!(code));
        match self {
            Self::Auth(AuthFailure::InsufficientScope { required }) => {
                body.insert("required_scope".into(), json!(required));
            }
            Self::Escalation { exceeds, required_scope } => {
                body.insert("exceeds".into(), json!(exceeds.field()));
                if let Some(s) = required_scope {
                    body.insert("required_scope".into(), json!(s));
                }
            }
            Self::Validation(errors) => {
                body.insert("errors".into(), json!(errors));
            }
            Self::RateLimited(s) => {
                body.insert("limit_scope".into(), json!(s.scope.as_str()));
                body.insert("limit".into(), json!(s.limit));
                body.insert("retry_after".into(), json!(s.retry_after.unwrap_or(1)));
            }
            _ => {}
        }
        body
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        match &self {
            Self::Internal(_) => tracing::error!(error = %self, "internal error"),
            Self::Unavailable(source) => tracing::error!(error = %source, "store unavailable"),
            Self::LimiterUnavailable(e) => tracing::error!(error = %e, "rate limiter unavailable"),
            _ => {}
        }
        let mut body = self.problem();
        if let Some(id) = current_request_id() {
            body.insert("request_id".into(), json!(id));
        }
        let bytes = serde_json::to_vec(&body).unwrap_or_default();
        let mut response = (status, bytes).into_response();
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/problem+json"));
        if status == StatusCode::UNAUTHORIZED {
            headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer realm=\"keygate\""));
        }
        match &self {
            Self::Unavailable(_) | Self::LimiterUnavailable(_) => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            }
            Self::TooManyFailedAttempts { retry_after } => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from(*retry_after));
            }
            Self::RateLimited(status) => status.write_headers(headers),
            // Refused before the body was read: the rest of it is still on the wire, so this
            // connection cannot carry another request. Saying so keeps a client from reusing it
            // (and seeing its next request fail as an incomplete message).
            Self::PayloadTooLarge(_) => {
                headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
            }
            _ => {}
        }
        response.extensions_mut().insert(ErrorCode(self.code()));
        response
    }
}

/// The error code of a response, for the request log.
#[derive(Debug, Clone, Copy)]
pub struct ErrorCode(pub &'static str);

/// The problem document's schema, for OpenAPI.
#[derive(Serialize, ToSchema)]
#[schema(title = "Problem", example = json!({
    "type": "https://keygate.dev/problems/insufficient_scope", "title": "Insufficient scope",
    "status": 403, "detail": "This key lacks calls:write.", "code": "insufficient_scope",
    "request_id": "req_01JABCDEFGHJKMNPQRSTVWXYZ0", "required_scope": "calls:write"}))]
pub struct Problem {
    #[serde(rename = "type")]
    pub type_: String,
    pub title: String,
    pub status: u16,
    pub detail: String,
    /// Stable machine-readable error code.
    pub code: String,
    pub request_id: String,
    /// On `insufficient_scope`: the scope that was needed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub required_scope: Option<String>,
    /// On `validation_failed`: one entry per invalid field.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub errors: Option<Vec<FieldError>>,
    /// On `rate_limited`: which limit refused (`key`, `account` or `ip`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limit_scope: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn titles_read_well() {
        assert_eq!(ApiError::Auth(AuthFailure::InvalidKey).title(), "Invalid API key");
        assert_eq!(ApiError::Auth(AuthFailure::IpNotAllowed).title(), "IP not allowed");
        assert_eq!(ApiError::NotFound("key").title(), "Not found");
    }

    #[test]
    fn internal_errors_say_nothing() {
        let p = ApiError::Internal("db password is hunter2".into()).problem();
        assert!(!serde_json::to_string(&p).unwrap_or_default().contains("hunter2"));
    }
}
