//! What a request presents, read before anything is looked up: its credential (SPEC §3 check 1)
//! and, for the gateway, whether its target is in the one canonical form keygate forwards
//! (SPEC §10). Pure functions over header values and strings, so they can be fuzzed alone.

use std::borrow::Cow;

use crate::policy::AuthFailure;

/// Where a request's credential came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CredentialSource {
    /// `Authorization: Bearer <key>` (the scheme name in any case, RFC 9110 §11.1).
    Bearer,
    /// `X-API-Key: <key>`.
    ApiKeyHeader,
    /// The deprecated `appid` query parameter, where configured.
    Query,
}

/// The name of the deprecated query parameter that may carry a key.
pub const QUERY_CREDENTIAL: &str = "appid";

/// The token of an `Authorization` value whose scheme is `Bearer` in any case, with the one or
/// more spaces after the scheme skipped (RFC 9110 §11.1, RFC 6750 §2.1). `None` for another
/// scheme or a value without a token.
#[must_use]
pub fn bearer_token(value: &str) -> Option<&str> {
    let (scheme, rest) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let token = rest.trim_matches(' ');
    (!token.is_empty()).then_some(token)
}

/// The request's one credential (check 1), from `Authorization` values, `X-API-Key` values and,
/// when `allow_query` is set, the `appid` parameters of `query`, in that order of precedence.
/// The same key presented in several places is one credential.
///
/// # Errors
/// `missing_api_key` when there is none; `ambiguous_credentials` for two different ones;
/// `invalid_api_key` for an `Authorization` value that is not a Bearer token, or a header value
/// that is not visible ASCII. A blank `X-API-Key` presents nothing.
pub fn credential<'a>(
    authorization: impl IntoIterator<Item = &'a [u8]>,
    api_key: impl IntoIterator<Item = &'a [u8]>,
    query: Option<&'a str>,
    allow_query: bool,
) -> Result<(Cow<'a, str>, CredentialSource), AuthFailure> {
    let mut found: Option<(Cow<'a, str>, CredentialSource)> = None;
    let mut offer = |value: Cow<'a, str>, source| -> Result<(), AuthFailure> {
        match &found {
            Some((existing, _)) if *existing != value => Err(AuthFailure::AmbiguousCredentials),
            Some(_) => Ok(()),
            None => {
                found = Some((value, source));
                Ok(())
            }
        }
    };
    let visible = |v: &'a [u8]| -> Result<&'a str, AuthFailure> {
        if v.iter().all(|b| (0x20..0x7f).contains(b)) {
            std::str::from_utf8(v).map_err(|_| AuthFailure::InvalidKey)
        } else {
            Err(AuthFailure::InvalidKey)
        }
    };
    for v in authorization {
        let token = bearer_token(visible(v)?).ok_or(AuthFailure::InvalidKey)?;
        offer(Cow::Borrowed(token), CredentialSource::Bearer)?;
    }
    for v in api_key {
        // A blank X-API-Key presents nothing.
        let v = visible(v)?.trim();
        if !v.is_empty() {
            offer(Cow::Borrowed(v), CredentialSource::ApiKeyHeader)?;
        }
    }
    if allow_query && let Some(q) = query {
        for (k, v) in form_urlencoded::parse(q.as_bytes()) {
            if k == QUERY_CREDENTIAL {
                offer(v, CredentialSource::Query)?;
            }
        }
    }
    found.ok_or(AuthFailure::MissingKey)
}

/// `query` without the parameters that carry `credential`: every `appid` parameter when
/// `strip_appid` is set, and any parameter whose decoded name or value contains the credential,
/// whatever its name (`token=<key>`, `auth=Bearer%20<key>`, `<key>=1`). Everything else is kept exactly as the client wrote it, in order. SPEC §10:
/// the credential never reaches the upstream.
#[must_use]
pub fn query_without_credential<'a>(query: &'a str, credential: &str, strip_appid: bool) -> Cow<'a, str> {
    let carries = |pair: &str| {
        let Some((name, value)) = form_urlencoded::parse(pair.as_bytes()).next() else { return false };
        (strip_appid && name == QUERY_CREDENTIAL)
            || (!credential.is_empty() && (value.contains(credential) || name.contains(credential)))
    };
    if !query.split('&').any(carries) {
        return Cow::Borrowed(query);
    }
    Cow::Owned(query.split('&').filter(|pair| !carries(pair)).collect::<Vec<_>>().join("&"))
}

/// Why a request target is not in canonical form.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TargetError {
    #[error("The request target must be a path (origin form), not an absolute URL.")]
    AbsoluteForm,
    #[error("The path must start with `/`.")]
    NotAPath,
    #[error("The path contains a dot segment (`.` or `..`, also percent-encoded); send the path it resolves to.")]
    DotSegment,
    #[error("The path contains an encoded `/` or `\\`, or a backslash; send plain `/`-separated segments.")]
    EncodedSeparator,
    #[error("The path contains an empty segment (`//`); send the path without it.")]
    EmptySegment,
    #[error("The path contains an encoded NUL or control character.")]
    ControlCharacter,
    #[error(
        "The path percent-encodes a letter, digit or one of `-._~`; send those characters as they are (RFC 3986 §6.2.2.2)."
    )]
    EncodedUnreserved,
    #[error("The path contains `;` (a path parameter some servers strip before routing); leave it out.")]
    PathParameter,
    #[error("The path percent-encodes bytes that are not UTF-8.")]
    NotUtf8,
}

/// Checks that a request's path is in the one canonical form keygate authorises and forwards
/// (SPEC §10): no dot segments (`.`/`..`, percent-encoded in any case, or after decoding twice),
/// no encoded `/` or `\` and no literal `\`, no empty segment, no encoded control character, no
/// percent-encoded unreserved character (`%72` for `r`: an upstream decoding it would route
/// elsewhere than keygate matched; RFC 3986 §6.2.2.2), no `;` path parameter (servlet containers
/// drop it before routing), no encoded bytes that are not UTF-8 (overlong forms of `.` and `/`).
/// Such a path is refused rather than rewritten, so what keygate authorised is exactly what the
/// upstream serves, however the upstream normalises.
///
/// # Errors
/// The first way `path` is not canonical.
pub fn check_path(path: &str) -> Result<(), TargetError> {
    let Some(rest) = path.strip_prefix('/') else { return Err(TargetError::NotAPath) };
    if rest.is_empty() {
        return Ok(());
    }
    if path.contains('\\') {
        return Err(TargetError::EncodedSeparator);
    }
    if path.contains(';') {
        return Err(TargetError::PathParameter);
    }
    // A trailing `/` is a resource of its own to routing and upstreams alike; only an empty
    // segment inside the path is refused.
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    for segment in rest.split('/') {
        if segment.is_empty() {
            return Err(TargetError::EmptySegment);
        }
        // Decoded up to three times: an upstream that decodes again must not find `..` either.
        let mut current: Cow<'_, str> = Cow::Borrowed(segment);
        for _ in 0..3 {
            let Some(decoded) = percent_decode(&current) else { return Err(TargetError::NotUtf8) };
            let bytes = decoded.as_bytes();
            if bytes.iter().any(|&b| b == b'/' || b == b'\\') {
                return Err(TargetError::EncodedSeparator);
            }
            if bytes.iter().any(|&b| b < 0x20 || b == 0x7f) {
                return Err(TargetError::ControlCharacter);
            }
            // `..;x` is `..` to servlet containers (path parameters), also once decoded.
            let bare = decoded.split(';').next().unwrap_or_default();
            if bare == "." || bare == ".." || decoded == "." || decoded == ".." {
                return Err(TargetError::DotSegment);
            }
            if decoded == current {
                break;
            }
            current = Cow::Owned(decoded.into_owned());
        }
    }
    if encodes_unreserved(path) {
        return Err(TargetError::EncodedUnreserved);
    }
    Ok(())
}

/// Does `path` percent-encode an unreserved character (ALPHA, DIGIT, `-`, `.`, `_`, `~`)?
fn encodes_unreserved(path: &str) -> bool {
    let bytes = path.as_bytes();
    bytes.windows(3).any(|w| {
        w[0] == b'%'
            && matches!((hex(w[1]), hex(w[2])), (Some(h), Some(l))
                if { let c = h << 4 | l; c.is_ascii_alphanumeric() || matches!(c, b'-' | b'.' | b'_' | b'~') })
    })
}

/// Percent-decodes `s` once, bytes that are not UTF-8 replaced: for showing a path (in a log line),
/// never for deciding anything.
#[must_use]
pub fn percent_decode_lossy(s: &str) -> String {
    String::from_utf8_lossy(&decode_bytes(s)).into_owned()
}

/// Percent-decodes `s` once; `None` when the decoded bytes are not UTF-8.
fn percent_decode(s: &str) -> Option<Cow<'_, str>> {
    if !s.contains('%') {
        return Some(Cow::Borrowed(s));
    }
    String::from_utf8(decode_bytes(s)).ok().map(Cow::Owned)
}

fn decode_bytes(s: &str) -> Vec<u8> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let (Some(h), Some(l)) = (bytes.get(i + 1).and_then(|b| hex(*b)), bytes.get(i + 2).and_then(|b| hex(*b)))
        {
            out.push(h << 4 | l);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    out
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cred(
        auth: &[&str],
        api_key: &[&str],
        query: Option<&str>,
        allow: bool,
    ) -> Result<(String, CredentialSource), &'static str> {
        credential(auth.iter().map(|s| s.as_bytes()), api_key.iter().map(|s| s.as_bytes()), query, allow)
            .map(|(c, s)| (c.into_owned(), s))
            .map_err(|e| e.code())
    }

    #[test]
    fn bearer_scheme_is_case_insensitive() {
        for v in ["Bearer k", "bearer k", "BEARER k", "bEaReR k", "Bearer   k", "Bearer k "] {
            assert_eq!(bearer_token(v), Some("k"), "{v}");
        }
        for v in ["Basic k", "Bearer", "Bearer ", "Bearerk", "k", ""] {
            assert_eq!(bearer_token(v), None, "{v}");
        }
    }

    #[test]
    fn credential_sources_and_ambiguity() {
        use CredentialSource::*;
        assert_eq!(cred(&[], &[], None, true), Err("missing_api_key"));
        assert_eq!(cred(&["BEARER k1"], &[], None, false), Ok(("k1".into(), Bearer)));
        assert_eq!(cred(&[], &[" k1 "], None, false), Ok(("k1".into(), ApiKeyHeader)));
        assert_eq!(cred(&["Bearer k1"], &["k1"], Some("appid=k1"), true), Ok(("k1".into(), Bearer)));
        assert_eq!(cred(&["Bearer k1"], &["k2"], None, false), Err("ambiguous_credentials"));
        assert_eq!(cred(&["Bearer k1", "Bearer k2"], &[], None, false), Err("ambiguous_credentials"));
        assert_eq!(cred(&["Bearer k1"], &[], Some("appid=k2"), true), Err("ambiguous_credentials"));
        assert_eq!(cred(&["Bearer k1"], &[], Some("appid=k2"), false), Ok(("k1".into(), Bearer)), "appid ignored");
        assert_eq!(cred(&[], &[], Some("a=1&appid=k%31"), true), Ok(("k1".into(), Query)));
        assert_eq!(cred(&[], &[], Some("appid=k1"), false), Err("missing_api_key"));
        assert_eq!(cred(&["Basic dXNlcg=="], &[], None, false), Err("invalid_api_key"));
        assert_eq!(cred(&[], &["ké"], None, false), Err("invalid_api_key"), "not visible ASCII");
        assert_eq!(cred(&[], &["  "], None, false), Err("missing_api_key"), "blank is absent");
        assert_eq!(cred(&["Bearer k1"], &[""], None, false), Ok(("k1".into(), Bearer)));
    }

    #[test]
    fn credential_is_stripped_from_the_query_in_every_form() {
        let k = "sk_live_abc";
        assert_eq!(query_without_credential("appid=sk_live_abc&page=2", k, true), "page=2");
        assert_eq!(query_without_credential("page=2&appid=other", k, true), "page=2", "every appid, when allowed");
        assert_eq!(query_without_credential("page=2&appid=other", k, false), "page=2&appid=other");
        assert_eq!(query_without_credential("token=sk%5Flive%5Fabc&b=two%20words", k, false), "b=two%20words");
        assert_eq!(query_without_credential("app%69d=x&c=%7E&d=1+2&flag", k, true), "c=%7E&d=1+2&flag");
        assert_eq!(query_without_credential("x=Bearer%20sk_live_abc&y=sk_live_abc%0A&z=1", k, false), "z=1");
        assert_eq!(query_without_credential("sk_live_abc=1&z=1", k, false), "z=1", "in a name too");
        assert!(matches!(query_without_credential("a=1&b=2", k, true), Cow::Borrowed("a=1&b=2")));
    }

    #[test]
    fn canonical_paths_pass() {
        for p in
            ["/", "/v1/calls", "/v1/calls/c-1/recording", "/v1/files/a.b/..c/...", "/v1/x/%20y", "/v1/%C3%A9t%C3%A9"]
        {
            assert_eq!(check_path(p), Ok(()), "{p}");
        }
    }

    #[test]
    fn dot_segments_are_refused_in_every_spelling() {
        for p in [
            "/v1/calls/../recording",
            "/v1/calls/./recording",
            "/v1/calls/..",
            "/v1/calls/%2e%2e/recording",
            "/v1/calls/%2E%2E/recording",
            "/v1/calls/.%2e/recording",
            "/v1/calls/%2e./recording",
            "/v1/calls/%2e/recording",
            "/v1/calls/%252e%252e/recording",
            "/v1/calls/%2e%2e%3b/recording",
        ] {
            assert_eq!(check_path(p), Err(TargetError::DotSegment), "{p}");
        }
    }

    #[test]
    fn encoded_separators_and_odd_shapes_are_refused() {
        for p in ["/v1/calls%2f..%2frecording", "/v1/calls%2F1", "/v1/calls%5c1", "/v1/calls\\1", "/v1/x%252fy"] {
            assert_eq!(check_path(p), Err(TargetError::EncodedSeparator), "{p}");
        }
        assert_eq!(check_path("/v1//calls"), Err(TargetError::EmptySegment));
        assert_eq!(check_path("/v1/calls//"), Err(TargetError::EmptySegment));
        assert_eq!(check_path("/v1/calls/"), Ok(()), "a trailing slash is a path of its own");
        assert_eq!(check_path("/v1/calls%00.json"), Err(TargetError::ControlCharacter));
        assert_eq!(check_path("v1/calls"), Err(TargetError::NotAPath));
        for p in [
            "/v1/calls/%72ecordings",
            "/v1/calls/rec%4Frdings",
            "/v1/calls/%7Ex",
            "/v1/calls/a%2Db",
            "/v1/a%5Fb",
            "/v1/a%2Eb",
        ] {
            assert_eq!(check_path(p), Err(TargetError::EncodedUnreserved), "{p}");
        }
        for p in ["/v1/calls/..;/recording", "/v1/calls/recordings;x", "/v1/calls;jsessionid=1/x"] {
            assert_eq!(check_path(p), Err(TargetError::PathParameter), "{p}");
        }
        for p in ["/v1/calls/%c0%ae%c0%ae/recording", "/v1/calls/%ff"] {
            assert_eq!(check_path(p), Err(TargetError::NotUtf8), "{p}");
        }
        assert_eq!(check_path("*"), Err(TargetError::NotAPath));
    }
}
