//! `Idempotency-Key` over HTTP (SPEC §6): the header, the request's fingerprint, and responses
//! kept for replay and answered again, byte for byte. The claim logic and the sealed records are
//! the engine's ([`keygate_engine::idempotency`]); what is HTTP's is here, shared by the API's own
//! endpoints and the gateway's forwarded POSTs.
//!
//! A response is kept whatever its status, 5xx included, so a retry never executes twice — on
//! keygate's own endpoints a 4xx releases the claim instead ([`Ticket::finish`]), since keygate
//! only answers one when it refused before executing. A response body over
//! [`MAX_STORED_RESPONSE_BYTES`] is not buffered whole: the client gets it streamed, and retries
//! get 409 `conflict` saying the request completed.

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use keygate_engine::idempotency::{self, Binding, valid_key};
use keygate_engine::{Engine, Error};

use crate::error::ApiError;
use crate::headers::is_hop_by_hop;

/// The request's `Idempotency-Key`, if it sent one.
///
/// # Errors
/// 400 `invalid_request` for a value that is not 1–255 printable ASCII characters.
pub fn key_header(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    match headers.get("idempotency-key") {
        None => Ok(None),
        Some(v) => match v.to_str() {
            Ok(s) if valid_key(s) => Ok(Some(s.to_owned())),
            _ => Err(ApiError::invalid("Idempotency-Key must be 1–255 printable ASCII characters.")),
        },
    }
}

/// What a request with `key` claims: the key and the request's fingerprint (method, path, query,
/// SHA-256 of the body).
#[must_use]
pub fn request(key: Option<String>, method: &Method, uri: &Uri, body: &[u8]) -> Option<idempotency::Request> {
    key.map(|key| idempotency::Request::new(key, method.as_str(), uri.path(), uri.query().unwrap_or_default(), body))
}

/// What the handler does next.
pub enum Claim {
    /// Answer this stored response; execute nothing.
    Replay(Response),
    /// Execute, then pass the response to the [`Ticket`].
    Proceed(Ticket),
}

/// Claims `request`'s key for `binding` (call after parsing the body: a body refused as invalid
/// never claims).
///
/// # Errors
/// 409 `idempotency_in_progress`, 422 `idempotency_key_reused` (also for the same request from
/// another principal or for another tenant), or a store failure.
pub async fn claim(
    engine: &Engine,
    binding: &Binding,
    request: Option<&idempotency::Request>,
) -> Result<Claim, ApiError> {
    match engine.idempotency.claim(binding, request).await? {
        idempotency::Claim::Replay(record) => {
            let stored = StoredResponse::decode(&record)
                .ok_or_else(|| Error::Internal("a stored idempotent response is malformed".into()))?;
            Ok(Claim::Replay(stored.into_response()))
        }
        idempotency::Claim::Proceed(ticket) => Ok(Claim::Proceed(Ticket(ticket))),
    }
}

/// A claimed (or unclaimed, without the header) execution.
pub struct Ticket(idempotency::Ticket);

impl Ticket {
    /// For keygate's own endpoints, where a 4xx is always a refusal before executing: releases
    /// the claim after a 4xx, stores anything else.
    pub async fn finish(self, engine: &Engine, response: Response) -> Response {
        if response.status().is_client_error() {
            self.release(engine).await;
            response
        } else {
            self.complete(engine, response).await
        }
    }

    /// Gives the claim up: nothing executed, a retry runs normally.
    pub async fn release(self, engine: &Engine) {
        self.0.release(&engine.idempotency).await;
    }

    /// Stores `response` for replays, whatever its status, and returns it.
    ///
    /// A body larger than [`MAX_STORED_RESPONSE_BYTES`] is not kept: the client still gets all of
    /// it (the part read so far, then the rest, streamed), and retries get 409 `conflict` saying
    /// the request completed. Never a second execution, never an unbounded buffer.
    pub async fn complete(self, engine: &Engine, response: Response) -> Response {
        if !self.0.is_claimed() {
            return response;
        }
        let (parts, body) = response.into_parts();
        let (response, stored) = match read_capped(body, MAX_STORED_RESPONSE_BYTES).await {
            Read::Whole(bytes) => {
                let stored = StoredResponse::new(parts.status, &parts.headers, bytes.clone());
                (Response::from_parts(parts, Body::from(bytes)), stored)
            }
            Read::TooLarge(rest) => {
                let note = ApiError::from(Error::Conflict(format!(
                    "The request with this Idempotency-Key completed with status {}, but its response was \
                     larger than {MAX_STORED_RESPONSE_BYTES} bytes and was not kept for replay. It will not \
                     be executed again.",
                    parts.status.as_u16()
                )));
                (Response::from_parts(parts, rest), StoredResponse::problem(&note))
            }
            // The body broke off (an upstream dropped the connection midway). The outcome is
            // still final and must be stored, or retries would wait on a claim forever: store
            // what the client gets, a 502.
            Read::Broken => {
                let stored = StoredResponse::problem(&ApiError::UpstreamUnavailable);
                (ApiError::UpstreamUnavailable.into_response(), stored)
            }
        };
        self.0.complete(&engine.idempotency, &stored.encode()).await;
        response
    }
}

/// The largest response body kept for replays (10 MiB).
pub const MAX_STORED_RESPONSE_BYTES: usize = 10 * 1024 * 1024;

/// A response body, read up to a limit.
enum Read {
    Whole(Bytes),
    /// Over the limit: the whole body still, what was read followed by the rest.
    TooLarge(Body),
    /// The body failed midway.
    Broken,
}

async fn read_capped(body: Body, limit: usize) -> Read {
    use http_body_util::BodyExt;
    let mut body = body;
    let mut read = Vec::new();
    while let Some(frame) = body.frame().await {
        let Ok(frame) = frame else { return Read::Broken };
        // Trailers are not kept (nothing keygate forwards sends them).
        let Ok(data) = frame.into_data() else { continue };
        if read.len() + data.len() > limit {
            read.extend_from_slice(&data);
            return Read::TooLarge(Body::new(Prefixed { prefix: Some(read.into()), rest: body }));
        }
        read.extend_from_slice(&data);
    }
    Read::Whole(read.into())
}

/// `prefix`, then whatever `rest` still yields.
struct Prefixed {
    prefix: Option<Bytes>,
    rest: Body,
}

impl hyper::body::Body for Prefixed {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, axum::Error>>> {
        if let Some(prefix) = self.prefix.take() {
            return std::task::Poll::Ready(Some(Ok(hyper::body::Frame::data(prefix))));
        }
        std::pin::Pin::new(&mut self.rest).poll_frame(cx)
    }
}

/// What is kept of a response: its status, its headers and its body, byte for byte.
///
/// Headers that describe one transmission rather than the response are not kept: `Date` and
/// `Content-Length` (set afresh when replayed), `X-Request-Id` (the retry has its own) and
/// hop-by-hop headers (the gateway strips them before a response gets here).
struct StoredResponse {
    status: u16,
    headers: Vec<(HeaderName, HeaderValue)>,
    body: Bytes,
}

/// The first byte of the current encoding. Version 1 (status and content type only) began with
/// the status, whose first byte is at most 0x03, so the two cannot be confused.
const FORMAT_V2: u8 = 0xF2;

impl StoredResponse {
    fn new(status: StatusCode, headers: &HeaderMap, body: Bytes) -> Self {
        let transient = |name: &HeaderName| {
            matches!(name.as_str(), "date" | "content-length" | "x-request-id" | "idempotent-replayed")
                || is_hop_by_hop(name)
        };
        let headers = headers
            .iter()
            .filter(|(name, value)| !transient(name) && value.len() <= usize::from(u16::MAX))
            .map(|(name, value)| (name.clone(), value.clone()))
            .collect();
        Self { status: status.as_u16(), headers, body }
    }

    /// `error`'s problem document (without a request id: each replay has its own).
    fn problem(error: &ApiError) -> Self {
        let mut headers = HeaderMap::new();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/problem+json"));
        let body = serde_json::to_vec(&error.problem()).unwrap_or_default();
        Self::new(error.status(), &headers, Bytes::from(body))
    }

    /// `0xF2 | status (u16 BE) | header count (u16 BE) | per header: name length (u16 BE), name,
    /// value length (u16 BE), value | body`.
    fn encode(&self) -> Vec<u8> {
        let size = self.headers.iter().map(|(n, v)| 4 + n.as_str().len() + v.len()).sum::<usize>();
        let mut out = Vec::with_capacity(5 + size + self.body.len());
        out.push(FORMAT_V2);
        out.extend_from_slice(&self.status.to_be_bytes());
        let count = u16::try_from(self.headers.len()).unwrap_or(u16::MAX);
        out.extend_from_slice(&count.to_be_bytes());
        for (name, value) in self.headers.iter().take(usize::from(count)) {
            for part in [name.as_str().as_bytes(), value.as_bytes()] {
                // Names and values were filtered to fit in a u16 when kept.
                out.extend_from_slice(&u16::try_from(part.len()).unwrap_or(u16::MAX).to_be_bytes());
                out.extend_from_slice(part);
            }
        }
        out.extend_from_slice(&self.body);
        out
    }

    fn decode(bytes: &[u8]) -> Option<Self> {
        if bytes.first() == Some(&FORMAT_V2) {
            return Self::decode_v2(&bytes[1..]);
        }
        // Version 1: `status (u16 BE) | content-type length (u16 BE) | content-type | body`.
        let status = u16::from_be_bytes(bytes.get(0..2)?.try_into().ok()?);
        let ct_len = usize::from(u16::from_be_bytes(bytes.get(2..4)?.try_into().ok()?));
        let ct = bytes.get(4..4 + ct_len)?;
        let body = Bytes::copy_from_slice(bytes.get(4 + ct_len..)?);
        let headers =
            if ct.is_empty() { Vec::new() } else { vec![(header::CONTENT_TYPE, HeaderValue::from_bytes(ct).ok()?)] };
        Some(Self { status, headers, body })
    }

    fn decode_v2(mut bytes: &[u8]) -> Option<Self> {
        fn take<'a>(bytes: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
            let (head, rest) = bytes.split_at_checked(n)?;
            *bytes = rest;
            Some(head)
        }
        fn take_u16(bytes: &mut &[u8]) -> Option<u16> {
            Some(u16::from_be_bytes(take(bytes, 2)?.try_into().ok()?))
        }
        let status = take_u16(&mut bytes)?;
        let count = take_u16(&mut bytes)?;
        let mut headers = Vec::with_capacity(usize::from(count));
        for _ in 0..count {
            let len = take_u16(&mut bytes)?;
            let name = HeaderName::from_bytes(take(&mut bytes, usize::from(len))?).ok()?;
            let len = take_u16(&mut bytes)?;
            let value = HeaderValue::from_bytes(take(&mut bytes, usize::from(len))?).ok()?;
            headers.push((name, value));
        }
        Some(Self { status, headers, body: Bytes::copy_from_slice(bytes) })
    }
}

impl IntoResponse for StoredResponse {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut response = (status, self.body).into_response();
        let headers = response.headers_mut();
        // The body's own default content type goes: the stored one (or none) is the truth.
        headers.remove(header::CONTENT_TYPE);
        for (name, value) in self.headers {
            headers.append(name, value);
        }
        headers.insert("idempotent-replayed", HeaderValue::from_static("true"));
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn replayed(stored: StoredResponse) -> Response {
        StoredResponse::decode(&stored.encode()).expect("decodes").into_response()
    }

    #[test]
    fn headers_are_kept_in_order_with_repeats_and_transient_ones_dropped() {
        let mut headers = HeaderMap::new();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/csv"));
        headers.insert(header::LOCATION, HeaderValue::from_static("/v1/calls/c-9"));
        headers.append(header::SET_COOKIE, HeaderValue::from_static("a=1"));
        headers.append(header::SET_COOKIE, HeaderValue::from_static("b=2"));
        for transient in ["date", "content-length", "x-request-id", "connection", "keep-alive"] {
            headers.insert(HeaderName::from_static(transient), HeaderValue::from_static("x"));
        }
        let response = replayed(StoredResponse::new(StatusCode::ACCEPTED, &headers, Bytes::from_static(b"a,b\n")));
        assert_eq!(response.status(), StatusCode::ACCEPTED);
        let h = response.headers();
        assert_eq!(h.get_all(header::CONTENT_TYPE).iter().collect::<Vec<_>>(), ["text/csv"]);
        assert_eq!(h.get(header::LOCATION).map(HeaderValue::as_bytes), Some(&b"/v1/calls/c-9"[..]));
        assert_eq!(h.get_all(header::SET_COOKIE).iter().collect::<Vec<_>>(), ["a=1", "b=2"]);
        for transient in ["date", "x-request-id", "connection", "keep-alive"] {
            assert!(h.get(transient).is_none(), "{transient} is not replayed");
        }
        assert_eq!(h.get("idempotent-replayed").map(HeaderValue::as_bytes), Some(&b"true"[..]));
    }

    #[test]
    fn a_response_stored_in_the_first_format_still_replays() {
        let mut v1 = 201u16.to_be_bytes().to_vec();
        v1.extend_from_slice(&16u16.to_be_bytes());
        v1.extend_from_slice(b"application/json");
        v1.extend_from_slice(b"{\"id\":1}");
        let stored = StoredResponse::decode(&v1).expect("a version 1 record decodes");
        assert_eq!((stored.status, stored.body.as_ref()), (201, &b"{\"id\":1}"[..]));
        let response = stored.into_response();
        assert_eq!(
            response.headers().get(header::CONTENT_TYPE).map(HeaderValue::as_bytes),
            Some(&b"application/json"[..])
        );
        assert!(StoredResponse::decode(&[FORMAT_V2, 0, 200, 0, 1, 0, 9]).is_none(), "a truncated record is refused");
    }
}
