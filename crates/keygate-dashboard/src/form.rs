//! Form bodies and cross-site request forgery.
//!
//! Two defences, as OWASP's CSRF cheat sheet pairs them:
//! 1. [`refuse_cross_site`]: a state-changing request (anything but GET/HEAD) whose
//!    `Sec-Fetch-Site` is `cross-site`, or whose `Origin` names another host than `Host`, is
//!    refused with 403 before any handler runs.
//! 2. Every form carries a token ([`CSRF_FIELD`]): the session's HMAC token
//!    ([`keygate_engine::keygate::Keygate::csrf_token`]) once signed in, and a random value
//!    double-submitted in a cookie on the sign-in form. A POST without the right one is refused
//!    with 403 and changes nothing ([`crate::session::Signed::accept_form`]).

use axum::extract::Request;
use axum::http::{Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::render;

/// The hidden field of every form that holds the CSRF token.
pub const CSRF_FIELD: &str = "csrf_token";

/// The hidden field naming one rendering of a form that creates something shown once (a key,
/// an account): see [`submit_once`].
pub const FORM_ID_FIELD: &str = "form_id";

/// A fresh form id: 128 random bits in hex.
///
/// # Errors
/// No randomness.
pub fn new_form_id() -> Result<String, keygate_engine::Error> {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes)
        .map_err(|e| keygate_engine::Error::Internal(format!("no randomness for a form id: {e}")))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// Whether this rendering of a form was submitted before.
pub enum Submission {
    /// The first time: do the work, then complete the ticket with what to remember (or release
    /// it on failure, so the form can be corrected and sent again).
    First(keygate_engine::idempotency::Ticket),
    /// Sent before, and done then: what was remembered (an id). The plaintext it showed is not
    /// shown again.
    Again(String),
}

/// Claims a form's one submission. Without JavaScript, reloading the page a POST answered sends
/// the POST again; for a form that creates a key or an account that would create a second one.
/// The form's id is claimed as an idempotency key (SPEC §6) bound to the user, with nothing of
/// the body in its fingerprint: any second submission of that rendering replays the id of what
/// the first made, never its plaintext. A form without an id (a script's) is not claimed.
///
/// # Errors
/// 409 `idempotency_in_progress` while the first is still running; a store failure.
pub async fn submit_once(
    dashboard: &crate::Dashboard,
    signed: &crate::session::Signed,
    form: &FormData,
    action: &str,
) -> Result<Submission, keygate_engine::Error> {
    use keygate_engine::idempotency::{Binding, Claim, Request as Claimed};
    let id = form.text(FORM_ID_FIELD);
    let request = (id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit()))
        .then(|| Claimed::new(format!("dashboard-form:{id}"), "POST", action, "", b""));
    let binding =
        Binding { account: signed.active.account.id, principal: signed.active.user.id.to_string(), tenant: None };
    Ok(match dashboard.engine.idempotency.claim(&binding, request.as_ref()).await? {
        Claim::Proceed(ticket) => Submission::First(ticket),
        Claim::Replay(record) => Submission::Again(String::from_utf8_lossy(&record).into_owned()),
    })
}

/// A URL-encoded form body: every `(name, value)` pair in order, repeated names kept (checkbox
/// groups, radio groups).
#[derive(Default)]
pub struct FormData {
    pairs: Vec<(String, String)>,
}

/// Never prints values: a form may hold a password.
impl std::fmt::Debug for FormData {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.pairs.iter().map(|(k, _)| k)).finish()
    }
}

impl FormData {
    /// Parses an `application/x-www-form-urlencoded` body.
    #[must_use]
    pub fn parse(body: &[u8]) -> Self {
        Self { pairs: form_urlencoded::parse(body).map(|(k, v)| (k.into_owned(), v.into_owned())).collect() }
    }

    /// The first value of `name`, if any.
    #[must_use]
    pub fn get(&self, name: &str) -> Option<&str> {
        self.pairs.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    /// The first value of `name`, or `""`.
    #[must_use]
    pub fn text(&self, name: &str) -> &str {
        self.get(name).unwrap_or("")
    }

    /// Every value of `name`, in order.
    pub fn all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.pairs.iter().filter(move |(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    /// Every pair, in order.
    pub fn pairs(&self) -> impl Iterator<Item = (&str, &str)> {
        self.pairs.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// The value of a checkbox: present and not `off`.
    #[must_use]
    pub fn checked(&self, name: &str) -> bool {
        self.get(name).is_some_and(|v| v != "off")
    }
}

/// Entries of a list typed one per line or separated by commas, trimmed, empty ones dropped.
#[must_use]
pub fn split_list(text: &str) -> Vec<String> {
    text.split([',', '\n', '\r', ' ', '\t']).map(str::trim).filter(|s| !s.is_empty()).map(str::to_owned).collect()
}

/// Compares two tokens in constant time.
#[must_use]
pub fn same_token(a: &str, b: &str) -> bool {
    a.len() == b.len() && a.bytes().zip(b.bytes()).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Refuses a state-changing request that a browser says came from another site: `Sec-Fetch-Site:
/// cross-site`, or an `Origin` whose host is not this request's `Host`. Requests without either
/// header (old browsers, scripts) fall through to the token check.
pub async fn refuse_cross_site(request: Request, next: Next) -> Response {
    if request.method() != Method::GET && request.method() != Method::HEAD && is_cross_site(&request) {
        return render::refusal(
            StatusCode::FORBIDDEN,
            "csrf_token_invalid",
            "This form was sent from another site, so it was refused. Open the dashboard and try again.",
        )
        .into_response();
    }
    next.run(request).await
}

/// `Sec-Fetch-Site` when the browser sends it (every current one does): only `same-origin` and
/// `none` (the user's own navigation) pass; `same-site` is a sibling host and does not. Without
/// it, the `Origin`, when present, must be this request's host; `null` (a sandboxed frame, a
/// redirect across origins) is not.
fn is_cross_site(request: &Request) -> bool {
    let headers = request.headers();
    if let Some(site) = headers.get("sec-fetch-site") {
        let site = site.as_bytes();
        return !(site.eq_ignore_ascii_case(b"same-origin") || site.eq_ignore_ascii_case(b"none"));
    }
    let Some(origin) = headers.get(header::ORIGIN) else { return false };
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok()).unwrap_or("");
    let origin = origin.to_str().unwrap_or("");
    let origin_host = origin.split_once("://").map_or("", |(_, rest)| rest);
    origin_host.is_empty() || !origin_host.eq_ignore_ascii_case(host)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms_keep_repeated_fields_and_decode_them() {
        let form = FormData::parse(b"scope=sms%3Asend&scope=otp%3Averify&name=CRM+sync&restrict_ips=on");
        assert_eq!(form.all("scope").collect::<Vec<_>>(), ["sms:send", "otp:verify"]);
        assert_eq!(form.text("name"), "CRM sync");
        assert!(form.checked("restrict_ips"));
        assert!(!form.checked("absent"));
        assert_eq!(format!("{form:?}"), r#"["scope", "scope", "name", "restrict_ips"]"#, "names only, never values");
    }

    #[test]
    fn lists_split_on_commas_lines_and_spaces() {
        assert_eq!(split_list(" 10.0.0.0/8,\r\n203.0.113.7  \n\n"), ["10.0.0.0/8", "203.0.113.7"]);
        assert!(split_list(" \n ").is_empty());
    }

    fn post(headers: &[(&str, &str)]) -> Request {
        let mut builder = Request::builder().method(Method::POST).uri("/dashboard/api-keys");
        for (k, v) in headers {
            builder = builder.header(*k, *v);
        }
        builder.body(axum::body::Body::empty()).unwrap_or_default()
    }

    #[test]
    fn the_fetch_metadata_decides_and_origin_is_the_fallback() {
        let host = ("host", "keygate.example.com");
        for ok in [
            post(&[host]),
            post(&[host, ("sec-fetch-site", "same-origin")]),
            post(&[host, ("sec-fetch-site", "none")]),
            // Chromium sends Origin: null with a no-referrer policy; the fetch metadata says same-origin.
            post(&[host, ("sec-fetch-site", "same-origin"), ("origin", "null")]),
            post(&[host, ("origin", "https://keygate.example.com")]),
        ] {
            assert!(!is_cross_site(&ok), "{:?}", ok.headers());
        }
        for refused in [
            post(&[host, ("sec-fetch-site", "cross-site")]),
            post(&[host, ("sec-fetch-site", "same-site")]),
            post(&[host, ("sec-fetch-site", "same-site"), ("origin", "https://keygate.example.com")]),
            post(&[host, ("origin", "https://evil.example")]),
            post(&[host, ("origin", "null")]),
        ] {
            assert!(is_cross_site(&refused), "{:?}", refused.headers());
        }
    }

    #[test]
    fn tokens_compare_whole() {
        assert!(same_token("abc", "abc"));
        assert!(!same_token("abc", "abd"));
        assert!(!same_token("abc", "ab"));
        assert!(!same_token("", "a"));
    }
}
