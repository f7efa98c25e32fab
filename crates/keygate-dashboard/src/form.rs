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
