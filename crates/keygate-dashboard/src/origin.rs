//! Where a state-changing request came from (OWASP's origin verification, the first of the
//! dashboard's two CSRF defences; the second is the form's token, [`crate::form`]).

use axum::extract::Request;
use axum::http::{Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::render;

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
}
