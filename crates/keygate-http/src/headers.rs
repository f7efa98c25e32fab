//! Headers keygate writes or removes, whichever front end answers: rate-limit fields and the
//! hop-by-hop headers that never cross a proxy (RFC 9110 §7.6.1).

use axum::http::header::{self, HeaderMap, HeaderName, HeaderValue};
use keygate_engine::ratelimit::RateLimitStatus;

// Names as constants: a `&str` name is parsed and checked on every lookup.
/// Where a key may be presented instead of `Authorization` (SPEC §3, check 1).
pub const X_API_KEY: HeaderName = HeaderName::from_static("x-api-key");
/// The client chain a trusted proxy reports; keygate writes it when it forwards.
pub const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
/// The first of the rate-limit fields [`write_ratelimit`] writes: a response that has it
/// already carries a limit's fields.
pub const X_RATELIMIT_LIMIT: HeaderName = HeaderName::from_static("x-ratelimit-limit");

/// Writes `status` as GitHub's `X-RateLimit-*` and the IETF `RateLimit-Policy` / `RateLimit`
/// fields (draft-ietf-httpapi-ratelimit-headers), plus `Retry-After` on a refusal.
pub fn write_ratelimit(headers: &mut HeaderMap, status: &RateLimitStatus) {
    const REMAINING: HeaderName = HeaderName::from_static("x-ratelimit-remaining");
    const RESET: HeaderName = HeaderName::from_static("x-ratelimit-reset");
    const POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");
    const RATELIMIT: HeaderName = HeaderName::from_static("ratelimit");
    let scope = status.scope.as_str();
    headers.insert(X_RATELIMIT_LIMIT, HeaderValue::from(status.limit));
    headers.insert(REMAINING, HeaderValue::from(status.remaining));
    headers.insert(RESET, HeaderValue::from(status.reset_at));
    // `"scope";q=N;w=60` and `"scope";r=N;t=N`, written without the formatting machinery: this
    // runs on every limited response.
    let mut number = itoa::Buffer::new();
    let mut field = String::with_capacity(48);
    for part in ["\"", scope, "\";q=", number.format(status.limit), ";w=60"] {
        field.push_str(part);
    }
    if let Ok(v) = HeaderValue::from_str(&field) {
        headers.insert(POLICY, v);
    }
    field.clear();
    for part in ["\"", scope, "\";r=", number.format(status.remaining), ";t="] {
        field.push_str(part);
    }
    field.push_str(number.format(status.reset_after));
    if let Ok(v) = HeaderValue::from_str(&field) {
        headers.insert(RATELIMIT, v);
    }
    if let Some(retry) = status.retry_after {
        headers.insert(header::RETRY_AFTER, HeaderValue::from(retry));
    }
}

/// Whether a cookie is one of keygate's own: the dashboard's session and sign-in form cookies
/// (`keygate_session`, `keygate_sign_in`, with or without a `__Host-`/`__Secure-` prefix; see
/// `keygate-dashboard`'s `session.rs`).
#[must_use]
pub fn is_keygate_cookie(name: &str) -> bool {
    let name = name.trim();
    let name = name.strip_prefix("__Host-").or_else(|| name.strip_prefix("__Secure-")).unwrap_or(name);
    name == "keygate_session" || name == "keygate_sign_in"
}

/// Removes keygate's own cookies from the `Cookie` headers of a request about to be forwarded:
/// over https the session cookie is `__Host-` and so `Path=/`, and a browser sends it along to
/// the gateway's routes; the upstream must never see a dashboard session. Other cookies pass as
/// sent. Costs one scan of each `Cookie` header when none of keygate's is there.
pub fn strip_keygate_cookies(headers: &mut HeaderMap) {
    if !headers.get_all(header::COOKIE).iter().any(|v| v.as_bytes().windows(8).any(|w| w == b"keygate_")) {
        return;
    }
    let kept: Vec<HeaderValue> = headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| {
            let text = String::from_utf8_lossy(v.as_bytes());
            let others: Vec<&str> = text
                .split(';')
                .filter(|pair| !is_keygate_cookie(pair.split('=').next().unwrap_or("")))
                .map(str::trim)
                .filter(|pair| !pair.is_empty())
                .collect();
            (!others.is_empty()).then(|| HeaderValue::from_str(&others.join("; ")).ok()).flatten()
        })
        .collect();
    headers.remove(header::COOKIE);
    for value in kept {
        headers.append(header::COOKIE, value);
    }
}

#[cfg(test)]
mod cookie_tests {
    use super::*;

    #[test]
    fn keygates_cookies_never_leave_and_others_pass() {
        let mut headers = HeaderMap::new();
        headers.append(header::COOKIE, HeaderValue::from_static("theme=dark; __Host-keygate_session=abc; cart=3"));
        headers.append(header::COOKIE, HeaderValue::from_static("keygate_sign_in=def"));
        headers.append(header::COOKIE, HeaderValue::from_static("__Secure-keygate_session=x;keygate_session=y"));
        strip_keygate_cookies(&mut headers);
        let left: Vec<&str> = headers.get_all(header::COOKIE).iter().filter_map(|v| v.to_str().ok()).collect();
        assert_eq!(left, ["theme=dark; cart=3"]);
        let mut untouched = HeaderMap::new();
        untouched.append(header::COOKIE, HeaderValue::from_static("my_keygate_session_id=1"));
        strip_keygate_cookies(&mut untouched);
        assert_eq!(untouched.get(header::COOKIE).and_then(|v| v.to_str().ok()), Some("my_keygate_session_id=1"));
    }
}

const HOP_BY_HOP_COUNT: usize = 9;

/// Hop-by-hop headers (RFC 9110 §7.6.1, plus the non-standard `Proxy-Connection`), never
/// forwarded in either direction. Header names are constants: parsed once, not per request.
const HOP_BY_HOP: [HeaderName; HOP_BY_HOP_COUNT] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    HeaderName::from_static("proxy-connection"),
];
/// Whether `name` is one of the fixed hop-by-hop headers.
#[must_use]
pub fn is_hop_by_hop(name: &HeaderName) -> bool {
    HOP_BY_HOP.contains(name)
}

/// Removes the hop-by-hop headers: the fixed ones, and every header `Connection` names.
///
/// One pass over the names (no hashing) finds which fixed ones are there — most messages carry
/// none, a keep-alive response `Connection` alone — and only those are removed, instead of a
/// removal (a hash and a probe) for each of the nine.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let mut present = [false; HOP_BY_HOP_COUNT];
    for name in headers.keys() {
        if let Some(i) = HOP_BY_HOP.iter().position(|h| h == name) {
            present[i] = true;
        }
    }
    if !present.contains(&true) {
        return;
    }
    let listed: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        // `keep-alive`, what nearly every upstream's `Connection` says, is removed below as one
        // of the fixed names: not parsed into a header name here on every response.
        .filter(|name| !name.eq_ignore_ascii_case("keep-alive"))
        .filter_map(|name| HeaderName::from_bytes(name.as_bytes()).ok())
        .filter(|name| !is_hop_by_hop(name))
        .collect();
    for name in listed {
        headers.remove(name);
    }
    for (name, present) in HOP_BY_HOP.iter().zip(present) {
        if present {
            headers.remove(name);
        }
    }
}

#[cfg(test)]
mod tests {
    use keygate_engine::ratelimit::LimitScope;

    use super::*;

    const T0: u64 = 1_800_000_000;

    #[test]
    fn headers() {
        let s = RateLimitStatus {
            scope: LimitScope::Key,
            limit: 100,
            remaining: 57,
            reset_after: 26,
            reset_at: T0 + 26,
            retry_after: None,
        };
        let mut h = HeaderMap::new();
        write_ratelimit(&mut h, &s);
        assert_eq!(h["x-ratelimit-limit"], "100");
        assert_eq!(h["x-ratelimit-remaining"], "57");
        assert_eq!(h["x-ratelimit-reset"], (T0 + 26).to_string().as_str());
        assert_eq!(h["ratelimit-policy"], "\"key\";q=100;w=60");
        assert_eq!(h["ratelimit"], "\"key\";r=57;t=26");
        assert!(h.get("retry-after").is_none());
    }

    #[test]
    fn hop_by_hop_headers_go() {
        let mut h = HeaderMap::new();
        h.insert(header::CONNECTION, HeaderValue::from_static("keep-alive, x-private"));
        h.insert("x-private", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert("x-kept", HeaderValue::from_static("1"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key("x-kept"));

        let mut h = HeaderMap::new();
        h.insert(header::CONNECTION, HeaderValue::from_static("Keep-Alive , X-Other"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert("x-other", HeaderValue::from_static("1"));
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h.keys().collect::<Vec<_>>(), [header::CONTENT_TYPE]);
    }
}
