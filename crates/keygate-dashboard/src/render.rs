//! Rendering: what every page shows around its content ([`Chrome`]), pages as responses, and the
//! engine's errors as sentences a partner reads (with the API's stable `code` beside them).

use askama::Template;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use keygate_domain::time::Timestamp;
use keygate_engine::Error;
use keygate_engine::error::Exceeds;
use keygate_http::ApiError;

/// The frame of every signed-in page: who is signed in, where, the navigation their role may
/// use, and the CSRF token its forms carry.
pub struct Chrome {
    pub email: String,
    pub role: String,
    pub account_name: String,
    pub operator: bool,
    pub csrf: String,
    /// The navigation entry of this page: `api-keys`, `tenants`, `audit`, `users`, `settings`,
    /// `sessions`, `accounts`.
    pub active: &'static str,
    /// Users is in the navigation of owners and admins (SPEC §12); the page itself reads for
    /// any role holding `users:read`.
    pub can_manage_users: bool,
}

/// A time as the dashboard shows it (`2026-11-30 14:05 UTC`), or "Never".
#[must_use]
pub fn when(t: Option<Timestamp>) -> String {
    t.map_or_else(|| "Never".to_owned(), |t| t.format("%Y-%m-%d %H:%M UTC").to_string())
}

/// A page as a response: HTML, or a plain 500 when a template fails (it never should: they are
/// checked at compile time).
pub fn page(status: StatusCode, template: &impl Template) -> Response {
    match template.render() {
        Ok(html) => (status, Html(html)).into_response(),
        Err(e) => {
            tracing::error!(error = %e, "a dashboard template failed to render");
            (StatusCode::INTERNAL_SERVER_ERROR, "The page could not be rendered.").into_response()
        }
    }
}

/// `response` with the stable `code` of the problem it shows, for the request's log line and
/// metrics (a page that shows no problem keeps `ok`).
#[must_use]
pub fn coded(mut response: Response, code: Option<&'static str>) -> Response {
    if let Some(code) = code {
        response.extensions_mut().insert(keygate_http::error::ErrorCode(code));
    }
    response
}

/// A 303 to `location` (a path of the dashboard), as after every successful form POST.
pub fn see_other(location: &str) -> Response {
    let mut response = StatusCode::SEE_OTHER.into_response();
    if let Ok(value) = HeaderValue::from_str(location) {
        response.headers_mut().insert(header::LOCATION, value);
    }
    response
}

/// A page that says why something was refused.
#[derive(Template)]
#[template(path = "refusal.html")]
pub struct Refusal {
    pub status: u16,
    pub code: String,
    pub message: String,
}

/// A refusal page with `status`, the stable `code` and a sentence. The code also goes to the
/// request's log line and metrics, as a problem document's does.
pub fn refusal(status: StatusCode, code: &'static str, message: &str) -> Response {
    let mut response =
        page(status, &Refusal { status: status.as_u16(), code: code.to_owned(), message: message.to_owned() });
    response.extensions_mut().insert(keygate_http::error::ErrorCode(code));
    response
}

/// Turns any refusal that is not a page — axum's own rejections of a query, a path or a body
/// (400, 413, 415, 422 in plain text) — into a refusal page with a stable `code`, so every
/// answer of the dashboard reads the same way.
pub async fn refusals_as_pages(request: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let response = next.run(request).await;
    let status = response.status();
    let is_page = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|t| t.starts_with("text/html"));
    if !(status.is_client_error() || status.is_server_error()) || is_page {
        return response;
    }
    let (code, message) = match status {
        StatusCode::PAYLOAD_TOO_LARGE => ("payload_too_large", "The form is larger than keygate accepts."),
        StatusCode::NOT_FOUND => ("route_not_found", "There is no such page in the dashboard."),
        StatusCode::METHOD_NOT_ALLOWED => ("method_not_allowed", "This page does not accept that kind of request."),
        s if s.is_server_error() => ("internal_error", "Something went wrong on our side; try again."),
        _ => ("invalid_request", "The address or the form could not be read (a repeated or malformed field?)."),
    };
    refusal(status, code, message)
}

/// The answer to a form sent again after it created `what` (a key's or an account's id): its
/// plaintext was shown once, and is not shown again.
pub fn already_created(what: &str) -> Response {
    refusal(
        StatusCode::CONFLICT,
        "form_already_submitted",
        &format!(
            "This form was sent before, and {what} was created then. What it showed once is not shown again: \
             roll a key that was not copied, or make a new sign-in link."
        ),
    )
}

/// Unknown dashboard paths.
pub async fn not_found() -> Response {
    refusal(StatusCode::NOT_FOUND, "route_not_found", "There is no such page in the dashboard.")
}

/// A dashboard path asked with a method it does not take.
pub async fn method_not_allowed() -> Response {
    refusal(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", "This page does not accept that kind of request.")
}

/// What went wrong, for a page: the status and stable code the API would answer, a sentence
/// worded for a signed-in person, and the fields at fault.
pub struct Problem {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub fields: Vec<(String, String)>,
}

impl Problem {
    #[must_use]
    pub fn from_error(err: Error) -> Self {
        let api = ApiError::from(err);
        let ApiError::Engine(e) = &api else {
            return Self { status: api.status(), code: api.code(), message: api.detail(), fields: Vec::new() };
        };
        let fields = match e {
            Error::Validation(errors) => errors.iter().map(|e| (e.field.clone(), e.message.clone())).collect(),
            _ => Vec::new(),
        };
        let message = match e {
            Error::Validation(_) => "Some fields need attention.".to_owned(),
            Error::Auth(keygate_domain::policy::AuthFailure::InsufficientScope { required }) => {
                format!("Your role does not allow this (it needs {required}).")
            }
            Error::Escalation { exceeds: Exceeds::Scopes, required_scope } => match required_scope.as_deref() {
                Some("*") | None => "Only an owner can make unrestricted keys or owners.".to_owned(),
                Some(s) => format!("Your role does not hold {s}, so you cannot give it."),
            },
            Error::Escalation { exceeds: Exceeds::Role, .. } => {
                "An admin manages developers and viewers; only an owner can add, change or remove an admin or an owner."
                    .to_owned()
            }
            Error::Escalation { exceeds, .. } => {
                format!("You cannot give more than you hold yourself ({}).", exceeds.field())
            }
            _ => api.detail(),
        };
        Self { status: api.status(), code: api.code(), message, fields }
    }

    /// The problem as a whole page.
    #[must_use]
    pub fn into_page(self) -> Response {
        let mut message = self.message;
        for (field, m) in &self.fields {
            message.push_str(&format!(" {field}: {m}."));
        }
        refusal(self.status, self.code, &message)
    }
}

/// Engine errors become a refusal page.
pub struct PageError(pub Problem);

impl From<Error> for PageError {
    fn from(err: Error) -> Self {
        Self(Problem::from_error(err))
    }
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        self.0.into_page()
    }
}
