//! The one mapping from what went wrong to what a client reads: an HTTP status and an RFC 9457
//! `application/problem+json` document with a stable `code` and the request id.
//!
//! Policy: the engine returns [`keygate_engine::Error`], which says what went wrong; the HTTP
//! front ends (the API and the gateway) add what only HTTP has — a body too large, no route, no
//! such method, an upstream down or slow — in [`ApiError`], and [`ApiError::into_response`] is the
//! only place that picks a status and writes a problem. The CLI prints the same documents
//! ([`ApiError::problem`]). A 500 or 503 tells the client nothing but the request id: the cause
//! goes to the log, never into the body. Nothing here may format a secret.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use keygate_domain::AuthFailure;
use keygate_engine::error::{Error, Exceeds, FieldError};
use keygate_store::StoreError;
use serde::Serialize;
use serde_json::{Map, Value, json};
use utoipa::ToSchema;

use crate::headers::write_ratelimit;

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

/// An engine error, or a refusal only HTTP has.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// What the engine refused or failed at.
    #[error(transparent)]
    Engine(#[from] Error),
    #[error("the request body is larger than {0} bytes")]
    PayloadTooLarge(usize),
    #[error("no route matches")]
    RouteNotFound,
    #[error("method not allowed")]
    MethodNotAllowed,
    /// The upstream could not be reached (or dropped the connection).
    #[error("upstream unavailable")]
    UpstreamUnavailable,
    /// The upstream did not answer in time.
    #[error("upstream timeout")]
    UpstreamTimeout,
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        Self::Engine(e.into())
    }
}

impl From<AuthFailure> for ApiError {
    fn from(f: AuthFailure) -> Self {
        Self::Engine(f.into())
    }
}

impl ApiError {
    /// 400 `invalid_request` saying `message`.
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::Engine(Error::InvalidRequest(message.into()))
    }

    /// The HTTP status: 401 for a missing or unusable key, 403 for what the key may not do, 422
    /// for invalid fields, 429 for limits, 503 when a dependency is down (SPEC §3, §7).
    #[must_use]
    pub fn status(&self) -> StatusCode {
        let e = match self {
            Self::Engine(e) => e,
            Self::PayloadTooLarge(_) => return StatusCode::PAYLOAD_TOO_LARGE,
            Self::RouteNotFound => return StatusCode::NOT_FOUND,
            Self::MethodNotAllowed => return StatusCode::METHOD_NOT_ALLOWED,
            Self::UpstreamUnavailable => return StatusCode::BAD_GATEWAY,
            Self::UpstreamTimeout => return StatusCode::GATEWAY_TIMEOUT,
        };
        match e {
            Error::Auth(f) => match f {
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
            Error::Escalation { .. } => StatusCode::FORBIDDEN,
            Error::InvalidCredentials => StatusCode::UNAUTHORIZED,
            Error::Validation(_) | Error::IdempotencyKeyReused => StatusCode::UNPROCESSABLE_ENTITY,
            Error::InvalidRequest(_) => StatusCode::BAD_REQUEST,
            Error::TooManyFailedAttempts { .. } | Error::RateLimited(_) => StatusCode::TOO_MANY_REQUESTS,
            Error::NotFound(_) => StatusCode::NOT_FOUND,
            Error::Conflict(_) | Error::IdempotencyInProgress => StatusCode::CONFLICT,
            Error::Unavailable(_) | Error::LimiterUnavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Error::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The stable machine-readable code.
    #[must_use]
    pub fn code(&self) -> &'static str {
        match self {
            Self::Engine(e) => e.code(),
            Self::PayloadTooLarge(_) => "payload_too_large",
            Self::RouteNotFound => "route_not_found",
            Self::MethodNotAllowed => "method_not_allowed",
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
    pub fn detail(&self) -> String {
        let e = match self {
            Self::Engine(e) => e,
            Self::PayloadTooLarge(limit) => {
                return format!("The request body is larger than the limit of {limit} bytes.");
            }
            Self::RouteNotFound => return "No route matches this method and path.".into(),
            Self::MethodNotAllowed => return "This path does not accept this method.".into(),
            Self::UpstreamUnavailable => return "The upstream API could not be reached.".into(),
            Self::UpstreamTimeout => return "The upstream API did not answer in time.".into(),
        };
        match e {
            Error::Auth(f) => f.to_string(),
            Error::Escalation { exceeds: Exceeds::Scopes, required_scope } => match required_scope.as_deref() {
                Some("*") | None => {
                    "A key with restricted scopes cannot create or change an unrestricted key or an owner.".into()
                }
                Some(s) => format!("This key lacks {s}, so it cannot give it to another key or to a user."),
            },
            Error::Escalation { exceeds: Exceeds::TenantIds, .. } => {
                "A key can only create or change keys within its own tenant scope.".into()
            }
            Error::Escalation { exceeds: Exceeds::RateLimit, .. } => {
                "A key cannot create or change a key with a higher rate limit than its own, nor users unless its \
                 rate limit is the configured maximum (a user may make keys up to it)."
                    .into()
            }
            Error::Escalation { exceeds: Exceeds::ExpiresAt, .. } => {
                "A key that expires can only create or change keys that expire no later than it does (set \
                 expires_at at or before its own), and no users, who do not expire."
                    .into()
            }
            Error::Escalation { exceeds: Exceeds::AllowedIps, .. } => {
                "A key with an IP allowlist can only create or change keys whose every allowed_ips entry lies \
                 inside its own allowlist, and no users, who sign in from anywhere."
                    .into()
            }
            Error::Escalation { exceeds: Exceeds::Role, .. } => {
                "An admin manages developers and viewers only; only an owner can create, change or delete an \
                 admin or an owner."
                    .into()
            }
            Error::Escalation { exceeds: Exceeds::Environment, .. } => {
                "A test key can only create or change test keys; tenants, users and account settings guard live \
                 traffic."
                    .into()
            }
            Error::Validation(errors) => match errors.as_slice() {
                [one] => format!("{}: {}", one.field, one.message),
                _ => format!("{} fields are not valid.", errors.len()),
            },
            Error::InvalidRequest(m) | Error::Conflict(m) => m.clone(),
            Error::InvalidCredentials => "The email or password is not right.".into(),
            Error::NotFound(what) => format!("No such {what}."),
            Error::IdempotencyInProgress => {
                "A request with this Idempotency-Key is still being processed; retry shortly.".into()
            }
            Error::IdempotencyKeyReused => {
                "This Idempotency-Key was already used with a different request (method, path, query or body).".into()
            }
            Error::TooManyFailedAttempts { retry_after } => {
                format!("Too many failed authentication attempts from this IP address; retry in {retry_after} s.")
            }
            Error::RateLimited(s) => format!(
                "The {} limit of {} requests per minute is used up; retry in {} s.",
                s.scope.as_str(),
                s.limit,
                s.retry_after.unwrap_or(1)
            ),
            Error::Unavailable(_) | Error::LimiterUnavailable(_) => {
                "The service is temporarily unavailable; retry later.".into()
            }
            Error::Internal(_) => "Something went wrong on our side. Quote the request_id when reporting it.".into(),
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
            Self::Engine(Error::Auth(AuthFailure::InsufficientScope { required })) => {
                body.insert("required_scope".into(), json!(required));
            }
            Self::Engine(Error::Escalation { exceeds, required_scope }) => {
                body.insert("exceeds".into(), json!(exceeds.field()));
                if let Some(s) = required_scope {
                    body.insert("required_scope".into(), json!(s));
                }
            }
            Self::Engine(Error::Validation(errors)) => {
                body.insert("errors".into(), json!(errors));
            }
            Self::Engine(Error::RateLimited(s)) => {
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
            Self::Engine(Error::Internal(_)) => tracing::error!(error = %self, "internal error"),
            Self::Engine(Error::Unavailable(source)) => tracing::error!(error = %source, "store unavailable"),
            Self::Engine(Error::LimiterUnavailable(e)) => tracing::error!(error = %e, "rate limiter unavailable"),
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
            Self::Engine(Error::Unavailable(_) | Error::LimiterUnavailable(_)) => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            }
            Self::Engine(Error::TooManyFailedAttempts { retry_after }) => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from(*retry_after));
            }
            Self::Engine(Error::RateLimited(status)) => write_ratelimit(headers, status),
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
        assert_eq!(ApiError::from(AuthFailure::InvalidKey).title(), "Invalid API key");
        assert_eq!(ApiError::from(AuthFailure::IpNotAllowed).title(), "IP not allowed");
        assert_eq!(ApiError::from(Error::NotFound("key")).title(), "Not found");
    }

    #[test]
    fn internal_errors_say_nothing() {
        let p = ApiError::from(Error::Internal("db password is hunter2".into())).problem();
        assert!(!serde_json::to_string(&p).unwrap_or_default().contains("hunter2"));
    }
}
