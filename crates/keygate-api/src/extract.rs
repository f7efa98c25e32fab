//! Request extractors that fail with problem documents instead of axum's plain-text rejections.
//!
//! [`Body`]: bad JSON is 400 `invalid_request`; JSON of the wrong shape is 422
//! `validation_failed` naming the field (`scopes[1]`); an oversized body is 413. [`Query`]:
//! unknown or malformed parameters are 422 naming the parameter (`appid`, the deprecated
//! credential parameter, is not a parameter of any endpoint and is skipped).

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::HeaderMap;
use axum::http::request::Parts;
use http_body_util::BodyExt as _;
use keygate_engine::Error;
use keygate_http::ApiError;
use serde::de::DeserializeOwned;

use crate::state::AppState;

/// A JSON request body.
pub struct Body<T>(pub T);

/// A JSON body that may be absent (an empty body means `T::default()`).
pub struct OptionalBody<T>(pub T);

/// Is this `Content-Type` JSON (`application/json`, or `application/<anything>+json`, any
/// parameters)?
fn is_json(content_type: &str) -> bool {
    let essence = content_type.split(';').next().unwrap_or_default().trim().to_ascii_lowercase();
    essence == "application/json" || (essence.starts_with("application/") && essence.ends_with("+json"))
}

/// The request body, within the configured size limit. A body sent with a `Content-Type` other
/// than JSON is refused rather than guessed at (a body without one is read as JSON).
///
/// # Errors
/// As [`read_body`].
pub async fn body_bytes(req: Request, state: &AppState) -> Result<Bytes, ApiError> {
    let (parts, body) = req.into_parts();
    read_body(&parts.headers, body, state.max_body_bytes).await
}

/// `body`, at most `max` bytes of it, sent with `headers`; a body declared as something other
/// than JSON is refused rather than guessed at (one without a `Content-Type` is read as JSON).
///
/// # Errors
/// 413 `payload_too_large` beyond `max`; 400 `invalid_request` when it cannot be read or is
/// declared as something other than JSON.
pub async fn read_body(headers: &HeaderMap, body: axum::body::Body, max: usize) -> Result<Bytes, ApiError> {
    let bytes = match http_body_util::Limited::new(body, max).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(e) if e.downcast_ref::<http_body_util::LengthLimitError>().is_some() => {
            return Err(ApiError::PayloadTooLarge(max));
        }
        Err(e) => return Err(ApiError::invalid(format!("The request body could not be read: {e}"))),
    };
    if let Some(declared) = headers.get(axum::http::header::CONTENT_TYPE).map(|v| v.to_str().unwrap_or("?"))
        && !is_json(declared)
        && !bytes.iter().all(u8::is_ascii_whitespace)
    {
        return Err(ApiError::invalid(format!(
            "The body is declared as `{declared}`; send JSON with `Content-Type: application/json` \
             (curl: --json '{{…}}', or -H 'Content-Type: application/json')."
        )));
    }
    Ok(bytes)
}

/// A JSON body that must be present ([`Body`]'s rule), parsed as `T`.
///
/// # Errors
/// 400 `invalid_request` for an empty body or broken JSON; 422 as [`parse_json`].
pub fn parse_required_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::invalid("This endpoint needs a JSON body."));
    }
    parse_json(bytes)
}

/// Parses `bytes` as `T`, with errors naming the offending field.
///
/// # Errors
/// 400 for syntax, 422 for shape.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    // A body that parses is valid JSON of the right shape (serde_json checks for trailing
    // characters too): the common case takes one pass. Only a failure is parsed again, for the
    // error a client can act on.
    if let Ok(parsed) = serde_json::from_slice(bytes) {
        return Ok(parsed);
    }
    // Syntax first, over the whole body: `{"name": 5` is broken JSON (400) even though a typed
    // parse would stop earlier at the wrong type. `IgnoredAny` checks without building anything.
    if let Err(e) = serde_json::from_slice::<serde::de::IgnoredAny>(bytes) {
        return Err(ApiError::invalid(format!("The request body is not valid JSON: {e}")));
    }
    let de = &mut serde_json::Deserializer::from_slice(bytes);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        let field = if path == "." { unknown_field(&inner.to_string()).unwrap_or_default() } else { path };
        ApiError::from(Error::field(field, clean_serde_message(&inner.to_string())))
    })
}

/// `bytes` as `T`; an empty body (or a JSON `null`) is `T::default()`.
///
/// # Errors
/// As [`parse_json`].
pub fn parse_json_or_default<T: DeserializeOwned + Default>(bytes: &[u8]) -> Result<T, ApiError> {
    let trimmed = bytes.trim_ascii();
    if trimmed.is_empty() || trimmed == b"null" { Ok(T::default()) } else { parse_json(bytes) }
}

/// serde names an unknown or missing field only in its message: "unknown field `x`, expected …".
fn unknown_field(msg: &str) -> Option<String> {
    let start = msg.find('`')? + 1;
    let len = msg[start..].find('`')?;
    Some(msg[start..start + len].to_owned())
}

/// serde_json appends " at line 1 column 12"; the field path already says where. A time that does
/// not parse gets the form it must have.
fn clean_serde_message(msg: &str) -> String {
    let msg = msg.find(" at line ").map_or(msg, |i| &msg[..i]);
    let msg = &without_echoed_value(msg);
    let chrono = [
        "input contains invalid characters",
        "premature end of input",
        "input is out of range",
        "input is not enough for unique date and time",
        "trailing input",
    ];
    if chrono.iter().any(|m| msg.contains(m)) {
        format!("{msg}: expected an RFC 3339 time, like 2027-01-01T00:00:00Z")
    } else {
        msg.to_owned()
    }
}

/// serde's `invalid type: string "…", expected …` and `invalid value: integer `…`, expected …`
/// repeat the value sent, which may be a secret (a key or a password in the wrong field, or of the
/// wrong type): the value goes, the kinds stay (`invalid type: string, expected a sequence`).
fn without_echoed_value(msg: &str) -> String {
    for head in ["invalid type: ", "invalid value: "] {
        let Some(rest) = msg.strip_prefix(head) else { continue };
        let Some(start) = rest.find(['`', '"']) else { continue };
        let kind = rest[..start].trim_end();
        let end = if rest[start..].starts_with('`') {
            rest[start + 1..].find('`').map(|i| start + i + 2)
        } else {
            rest.rfind("\", expected").map(|i| i + 1)
        };
        return match end {
            Some(end) => format!("{head}{kind}{}", &rest[end..]),
            None => format!("{head}{kind}"),
        };
    }
    msg.to_owned()
}

impl<T: DeserializeOwned> FromRequest<AppState> for Body<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        let bytes = body_bytes(req, state).await?;
        parse_required_json(&bytes).map(Body)
    }
}

impl<T: DeserializeOwned + Default> FromRequest<AppState> for OptionalBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        let bytes = body_bytes(req, state).await?;
        parse_json_or_default(&bytes).map(OptionalBody)
    }
}

/// A path parameter. A malformed one names nothing that exists: 404.
pub struct Path<T>(pub T);

impl<T: DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for Path<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|p| Path(p.0))
            .map_err(|_| ApiError::from(Error::NotFound("object")))
    }
}

/// Query parameters.
pub struct Query<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for Query<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let q = parts.uri.query().unwrap_or_default();
        // `appid` is the (deprecated) credential parameter, never a filter.
        let pairs: Vec<(String, String)> = form_urlencoded::parse(q.as_bytes())
            .filter(|(k, _)| k != "appid")
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
        let encoded = form_urlencoded::Serializer::new(String::new()).extend_pairs(&pairs).finish();
        let de = serde_urlencoded::Deserializer::new(form_urlencoded::parse(encoded.as_bytes()));
        serde_path_to_error::deserialize(de).map(Query).map_err(|e| {
            let path = e.path().to_string();
            let msg = e.into_inner().to_string();
            let field = if path == "." { unknown_field(&msg).unwrap_or_default() } else { path };
            ApiError::from(Error::field(field, msg))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[expect(dead_code, reason = "only deserialized")]
    struct Body {
        name: String,
        scopes: Option<Vec<String>>,
    }

    fn err(body: &str) -> (u16, String, String) {
        match parse_json::<Body>(body.as_bytes()) {
            Ok(_) => (200, String::new(), String::new()),
            Err(e) => {
                let p = e.problem();
                let field = p.get("errors").and_then(|e| e[0]["field"].as_str()).unwrap_or_default().to_owned();
                (e.status().as_u16(), e.code().to_owned(), field)
            }
        }
    }

    #[test]
    fn json_content_types() {
        for ct in
            ["application/json", "application/json; charset=utf-8", "Application/JSON", "application/merge-patch+json"]
        {
            assert!(is_json(ct), "{ct}");
        }
        for ct in ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x", "json", "?"] {
            assert!(!is_json(ct), "{ct}");
        }
    }

    #[test]
    fn names_the_field() {
        assert_eq!(err(r#"{"name": 5}"#), (422, "validation_failed".into(), "name".into()));
        assert_eq!(err(r#"{"name": "x", "scopes": ["a", 3]}"#), (422, "validation_failed".into(), "scopes[1]".into()));
        assert_eq!(err(r#"{"name": "x", "nmae": 1}"#), (422, "validation_failed".into(), "nmae".into()));
        assert_eq!(err(r#"{}"#), (422, "validation_failed".into(), "name".into()));
        assert_eq!(err(r#"{"name": "#).1, "invalid_request");
        assert_eq!(err(r#"{"name": 5"#).1, "invalid_request", "broken JSON wins over a wrong type");
        assert_eq!(err("nope").1, "invalid_request");
        assert_eq!(err(r#"{"name": "x"}"#).0, 200);
    }

    #[test]
    fn values_sent_are_not_repeated_in_messages() {
        for (serde, cleaned) in [
            ("invalid type: integer `12345678901234`, expected a string", "invalid type: integer, expected a string"),
            ("invalid type: floating point `1.5`, expected u32", "invalid type: floating point, expected u32"),
            (
                "invalid type: string \"sk_live_abc\\\"def\", expected a sequence",
                "invalid type: string, expected a sequence",
            ),
            ("invalid value: string \"x\"", "invalid value: string"),
            ("invalid type: map, expected a string", "invalid type: map, expected a string"),
            ("missing field `name`", "missing field `name`"),
        ] {
            assert_eq!(without_echoed_value(serde), cleaned, "{serde}");
        }
    }
}
