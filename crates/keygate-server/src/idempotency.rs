//! `Idempotency-Key` (SPEC §6): retried POSTs that change state execute once.
//!
//! A request carrying the header is fingerprinted (method, path, query, SHA-256 of the body) and
//! claims the record (account, key) in the store before it executes: the claim is atomic in the
//! database, so it holds across nodes. The fingerprint is bound to the [`Binding`]: the principal
//! that sent the request (API key id, later the dashboard user) and, on gateway routes, the tenant
//! it acts for. Another principal or tenant reusing the Idempotency-Key gets 422
//! `idempotency_key_reused`, never the stored response: a replay must not hand a narrower key what
//! a wider one created (SPEC §6). Then:
//! - a completed record with the same fingerprint is replayed (`Idempotent-Replayed: true`):
//!   status, headers and body, byte for byte, without executing anything;
//! - a pending one answers 409 `idempotency_in_progress`; a different fingerprint 422
//!   `idempotency_key_reused`;
//! - otherwise the request executes and its response is stored — whatever the status, 5xx
//!   included, so a retry never executes twice — except a 4xx, which keygate only answers when it
//!   refused before executing (validation, conflict, not found): that claim is released and a
//!   retry executes normally. Refusals earlier still (401/403/429, bad JSON) never claim.
//! - A request that dies mid-execution leaves its record pending: retries get 409 until the
//!   record expires. That is the price of never executing twice.
//! - A response body over [`MAX_STORED_RESPONSE_BYTES`] is not buffered whole: the client gets
//!   it streamed, and retries get 409 `conflict` saying the request completed.
//!
//! A stored response can hold a created key's plaintext, so it is sealed with
//! ChaCha20-Poly1305 under a key derived from the hash secret, bound to the (account, key) pair
//! it belongs to: only that account's retry can open it, a database dump alone opens nothing, and
//! records are purged when they expire (default 24 h).

use axum::body::{Body, Bytes};
use axum::extract::{FromRequest, Request};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use chrono::Duration;
use keygate_domain::{AccountId, TenantId, time};
use keygate_store::IdempotencyBegin;
use serde::de::DeserializeOwned;
use sha2::{Digest, Sha256};

use crate::error::ApiError;
use crate::extract::{body_bytes, parse_json};
use crate::state::AppState;

/// The header's rules: 1–255 printable ASCII characters.
fn valid_key(s: &str) -> bool {
    (1..=255).contains(&s.len()) && s.bytes().all(|b| (0x20..=0x7e).contains(&b))
}

/// A state-changing POST body, with what idempotency needs to know about the request.
pub struct Idempotent {
    bytes: Bytes,
    /// The `Idempotency-Key` and the request's fingerprint, when the header was sent.
    claim: Option<(String, [u8; 32])>,
}

/// The request's `Idempotency-Key`, if it sent one.
///
/// # Errors
/// 400 `invalid_request` for a value that is not 1–255 printable ASCII characters.
pub fn key_header(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    match headers.get("idempotency-key") {
        None => Ok(None),
        Some(v) => match v.to_str() {
            Ok(s) if valid_key(s) => Ok(Some(s.to_owned())),
            _ => Err(ApiError::InvalidRequest("Idempotency-Key must be 1–255 printable ASCII characters.".into())),
        },
    }
}

impl Idempotent {
    /// A request's body with its fingerprint (method, path, query, SHA-256 of the body).
    #[must_use]
    pub fn new(key: Option<String>, method: &Method, uri: &Uri, bytes: Bytes) -> Self {
        let claim = key.map(|key| {
            let mut h = Sha256::new();
            for part in [method.as_str(), uri.path(), uri.query().unwrap_or_default()] {
                h.update(part.as_bytes());
                h.update([0]);
            }
            h.update(Sha256::digest(&bytes));
            (key, h.finalize().into())
        });
        Self { bytes, claim }
    }
}

impl FromRequest<AppState> for Idempotent {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        let key = key_header(req.headers())?;
        let method = req.method().clone();
        let uri = req.uri().clone();
        let bytes = body_bytes(req, state).await?;
        Ok(Self::new(key, &method, &uri, bytes))
    }
}

/// Who a claim belongs to beyond its account (SPEC §6): only a request of the same principal, for
/// the same tenant, may replay the stored response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Binding {
    pub account: AccountId,
    /// The acting principal's id: `key_…` (or `usr_…` for a dashboard user).
    pub principal: String,
    /// The tenant a gateway request acts for.
    pub tenant: Option<TenantId>,
}

impl Binding {
    /// The fingerprint of `request` bound to this principal and tenant.
    fn fingerprint(&self, request: &[u8; 32]) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(b"keygate-idempotency-binding-v1\0");
        h.update(request);
        h.update(self.principal.as_bytes());
        h.update([0]);
        if let Some(t) = self.tenant {
            h.update(t.to_string().as_bytes());
        }
        h.finalize().into()
    }
}

/// What the handler does next.
pub enum Claim {
    /// Answer this stored response; execute nothing.
    Replay(Response),
    /// Execute, then pass the response to [`Ticket::finish`].
    Proceed(Ticket),
}

/// A claimed (or unclaimed, without the header) execution.
pub struct Ticket {
    claimed: Option<(AccountId, String)>,
}

impl Idempotent {
    /// The body as JSON.
    ///
    /// # Errors
    /// 400 for an empty or broken body, 422 naming the field for a wrong shape.
    pub fn json<T: DeserializeOwned>(&self) -> Result<T, ApiError> {
        if self.bytes.iter().all(u8::is_ascii_whitespace) {
            return Err(ApiError::InvalidRequest("This endpoint needs a JSON body.".into()));
        }
        parse_json(&self.bytes)
    }

    /// The body as JSON, or `T::default()` when it is empty.
    ///
    /// # Errors
    /// As [`Idempotent::json`].
    pub fn json_or_default<T: DeserializeOwned + Default>(&self) -> Result<T, ApiError> {
        crate::extract::parse_json_or_default(&self.bytes)
    }

    /// For keygate's own endpoints: claims the key, runs `execute` unless a stored response is
    /// replayed, and stores or releases the outcome ([`Ticket::finish`]). Call after parsing the
    /// body: a body refused as invalid never claims.
    ///
    /// # Errors
    /// As [`Idempotent::claim`].
    pub async fn execute<F, Fut>(&self, state: &AppState, binding: &Binding, execute: F) -> Result<Response, ApiError>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Response, ApiError>>,
    {
        match self.claim(state, binding).await? {
            Claim::Replay(stored) => Ok(stored),
            Claim::Proceed(ticket) => {
                let response = execute().await.unwrap_or_else(IntoResponse::into_response);
                Ok(ticket.finish(state, response).await)
            }
        }
    }

    /// Claims the key for `binding`'s account (call after parsing the body: a body refused as
    /// invalid never claims).
    ///
    /// # Errors
    /// 409 `idempotency_in_progress`, 422 `idempotency_key_reused` (also for the same request
    /// from another principal or for another tenant), or a store failure.
    pub async fn claim(&self, state: &AppState, binding: &Binding) -> Result<Claim, ApiError> {
        let Some((key, request)) = &self.claim else {
            return Ok(Claim::Proceed(Ticket { claimed: None }));
        };
        let account = binding.account;
        let fingerprint = binding.fingerprint(request);
        let now = time::now();
        let expires_at = now + state.idempotency_retention;
        match state.keygate.store.begin_idempotent(account, key, &fingerprint, now, expires_at).await? {
            IdempotencyBegin::Started => Ok(Claim::Proceed(Ticket { claimed: Some((account, key.clone())) })),
            IdempotencyBegin::InProgress => Err(ApiError::IdempotencyInProgress),
            IdempotencyBegin::Mismatch => Err(ApiError::IdempotencyKeyReused),
            IdempotencyBegin::Completed(sealed) => {
                let stored = state.sealer.open(account, key, &sealed)?;
                metrics::counter!("keygate_idempotency_replays_total").increment(1);
                Ok(Claim::Replay(stored.into_response()))
            }
        }
    }
}

impl Ticket {
    /// For keygate's own endpoints, where a 4xx is always a refusal before executing: releases
    /// the claim after a 4xx, stores anything else.
    pub async fn finish(self, state: &AppState, response: Response) -> Response {
        if response.status().is_client_error() {
            self.release(state).await;
            response
        } else {
            self.complete(state, response).await
        }
    }

    /// Gives the claim up: nothing executed, a retry runs normally.
    pub async fn release(self, state: &AppState) {
        if let Some((account, key)) = self.claimed
            && let Err(e) = state.keygate.store.release_idempotent(account, &key).await
        {
            tracing::warn!(error = %e, "could not release an idempotency claim");
        }
    }

    /// Stores `response` for replays, whatever its status, and returns it.
    ///
    /// A body larger than [`MAX_STORED_RESPONSE_BYTES`] is not kept: the client still gets all of
    /// it (the part read so far, then the rest, streamed), and retries get 409 `conflict` saying
    /// the request completed. Never a second execution, never an unbounded buffer.
    pub async fn complete(self, state: &AppState, response: Response) -> Response {
        let Some((account, key)) = self.claimed else { return response };
        let (parts, body) = response.into_parts();
        let (response, stored) = match read_capped(body, MAX_STORED_RESPONSE_BYTES).await {
            Read::Whole(bytes) => {
                let stored = StoredResponse::new(parts.status, &parts.headers, bytes.clone());
                (Response::from_parts(parts, Body::from(bytes)), stored)
            }
            Read::TooLarge(rest) => {
                let note = ApiError::Conflict(format!(
                    "The request with this Idempotency-Key completed with status {}, but its response was \
                     larger than {MAX_STORED_RESPONSE_BYTES} bytes and was not kept for replay. It will not \
                     be executed again.",
                    parts.status.as_u16()
                ));
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
        match state.sealer.seal(account, &key, &stored) {
            Ok(sealed) => {
                if let Err(e) = state.keygate.store.complete_idempotent(account, &key, &sealed).await {
                    // The work is done and acknowledged; a retry will see the claim pending (409),
                    // never a second execution.
                    tracing::error!(error = %e, "could not store an idempotent response");
                }
            }
            Err(e) => tracing::error!(error = %e, "could not seal an idempotent response"),
        }
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
                || crate::gateway::is_hop_by_hop(name)
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

/// Seals stored responses to the (account, Idempotency-Key) they belong to.
pub struct Sealer {
    cipher: ChaCha20Poly1305,
}

impl Sealer {
    /// `key` must be secret: derive it from the hash secret.
    #[must_use]
    pub fn new(key: [u8; 32]) -> Self {
        Self { cipher: ChaCha20Poly1305::new(&Key::from(key)) }
    }

    fn aad(account: AccountId, key: &str) -> Vec<u8> {
        format!("keygate-idempotency-v1\0{account}\0{key}").into_bytes()
    }

    fn seal(&self, account: AccountId, key: &str, stored: &StoredResponse) -> Result<Vec<u8>, ApiError> {
        let msg = stored.encode();
        let mut nonce = [0u8; 12];
        getrandom::fill(&mut nonce).map_err(|e| ApiError::Internal(e.to_string()))?;
        let aad = Self::aad(account, key);
        let sealed = self
            .cipher
            .encrypt(&Nonce::from(nonce), Payload { msg: &msg, aad: &aad })
            .map_err(|_| ApiError::Internal("sealing failed".into()))?;
        Ok([nonce.as_slice(), &sealed].concat())
    }

    fn open(&self, account: AccountId, key: &str, sealed: &[u8]) -> Result<StoredResponse, ApiError> {
        let (nonce, ciphertext) =
            sealed.split_at_checked(12).ok_or_else(|| ApiError::Internal("short record".into()))?;
        let nonce: [u8; 12] = nonce.try_into().map_err(|_| ApiError::Internal("short nonce".into()))?;
        let aad = Self::aad(account, key);
        let msg = self
            .cipher
            .decrypt(&Nonce::from(nonce), Payload { msg: ciphertext, aad: &aad })
            .map_err(|_| ApiError::Internal("a stored idempotent response does not open (secret changed?)".into()))?;
        StoredResponse::decode(&msg)
            .ok_or_else(|| ApiError::Internal("a stored idempotent response is malformed".into()))
    }
}

/// How long records are kept, from the config.
#[must_use]
pub fn retention(seconds: u64) -> Duration {
    Duration::seconds(i64::try_from(seconds).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_binding_changes_the_fingerprint() {
        let account = AccountId::generate();
        let request = [1u8; 32];
        let a = Binding { account, principal: "key_a".into(), tenant: None };
        let b = Binding { principal: "key_b".into(), ..a.clone() };
        let t1 = Binding { tenant: Some(TenantId::generate()), ..a.clone() };
        let t2 = Binding { tenant: Some(TenantId::generate()), ..a.clone() };
        assert_eq!(a.fingerprint(&request), a.clone().fingerprint(&request));
        assert_ne!(a.fingerprint(&request), b.fingerprint(&request), "another principal");
        assert_ne!(a.fingerprint(&request), t1.fingerprint(&request), "a tenant");
        assert_ne!(t1.fingerprint(&request), t2.fingerprint(&request), "another tenant");
        assert_ne!(a.fingerprint(&request), a.fingerprint(&[2u8; 32]), "another request");
    }

    #[test]
    fn header_rules() {
        assert!(valid_key("a"));
        assert!(valid_key(&"x".repeat(255)));
        assert!(!valid_key(""));
        assert!(!valid_key(&"x".repeat(256)));
        assert!(!valid_key("tab\there"));
        assert!(!valid_key("é"));
    }

    #[test]
    fn sealed_responses_open_only_for_their_own_account_and_key() {
        let sealer = Sealer::new([7; 32]);
        let a = AccountId::generate();
        let mut headers = HeaderMap::new();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        let stored = StoredResponse::new(StatusCode::CREATED, &headers, "{\"key\":\"sk_live_x\"}".into());
        let sealed = sealer.seal(a, "k1", &stored).unwrap_or_default();
        assert!(!sealed.windows(9).any(|w| w == b"sk_live_x"), "the plaintext is not visible");
        let opened = sealer.open(a, "k1", &sealed).ok();
        assert_eq!(opened.as_ref().map(|o| (o.status, o.body.clone())), Some((201, stored.body.clone())), "bytes kept");
        assert!(sealer.open(a, "k2", &sealed).is_err(), "another key");
        assert!(sealer.open(AccountId::generate(), "k1", &sealed).is_err(), "another account");
        assert!(Sealer::new([8; 32]).open(a, "k1", &sealed).is_err(), "another secret");
    }

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
