//! Middleware around every request: the request id, one log line per request, the usage count
//! and request-log record of an authenticated request, and the fallbacks that turn unknown
//! routes and methods into problem documents.
//!
//! The log line never contains a query string (the deprecated `appid` credential lives there),
//! a header value, or a body; a key-shaped string in its path is masked (SPEC §2). The request
//! log keeps the matched route template, never the raw path.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use axum::extract::{ConnectInfo, MatchedPath, Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, Uri};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use keygate_domain::ip::IpText;
use keygate_domain::{AccountId, KeyId, RequestId, TenantId, time};
use keygate_engine::Error;
use keygate_engine::ratelimit::RateLimitStatus;
use keygate_engine::requestlog::{Counted, RequestRecorder};
use keygate_store::NewRequestRecord;

use crate::error::{ApiError, ErrorCode, REQUEST_ID};
use crate::headers::{X_RATELIMIT_LIMIT, write_ratelimit};

/// What [`request_context`] needs: where request-log records go, and the key format whose
/// key-shaped strings it masks in log lines.
#[derive(Clone)]
pub struct RequestContext {
    pub recorder: Arc<RequestRecorder>,
    pub key_format: Arc<keygate_domain::KeyFormat>,
}

impl RequestContext {
    /// The context of requests served by `engine`: its request recorder and key format.
    #[must_use]
    pub fn new(engine: &keygate_engine::Engine) -> Self {
        Self { recorder: Arc::clone(&engine.requests), key_format: Arc::new(engine.keygate.key_format.clone()) }
    }
}

pub static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

tokio::task_local! {
    /// Facts learned while handling the request, for its log line and response headers.
    pub static REQUEST_FACTS: RequestFacts;
}

/// Set once by authentication.
#[derive(Debug, Default)]
pub struct RequestFacts {
    pub caller: OnceLock<(AccountId, KeyId, IpAddr)>,
    /// The credential came from the deprecated `appid` query parameter.
    pub deprecated_credential: OnceLock<()>,
    /// The rate limit that applied, for the response's headers.
    pub ratelimit: OnceLock<RateLimitStatus>,
    /// The tenant the request acted for, when one is known (for the request log).
    pub tenant: OnceLock<TenantId>,
    /// The gateway route template the request matched (axum's `MatchedPath` covers keygate's
    /// own routes only).
    pub route: OnceLock<Arc<str>>,
    /// For `POST /v1/verify`: the key it verified, whose use the request-log record is.
    pub verified: OnceLock<Verified>,
}

/// A key a verify call checked (SPEC §9): its request-log record is a use of this key, with the
/// verifying key noted.
#[derive(Debug, Clone, Copy)]
pub struct Verified {
    pub account: AccountId,
    pub key: KeyId,
    pub tenant: Option<TenantId>,
    /// The end client's IP, when the call named one.
    pub ip: Option<IpAddr>,
    /// `ok`, or the code of the verdict.
    pub outcome: &'static str,
}

/// Records the key a verify call checked, for the request log.
pub fn note_verified(verified: Verified) {
    let _ = REQUEST_FACTS.try_with(|f| f.verified.set(verified));
}

/// Records the gateway route a request matched, for its log line, metrics and request-log record:
/// the template, never the raw path (which may hold anything, a pasted key included).
pub fn note_route(route: &Arc<str>) {
    let _ = REQUEST_FACTS.try_with(|f| f.route.set(Arc::clone(route)));
}

/// Records the tenant this request acts for, for its request-log record.
pub fn note_tenant(tenant: TenantId) {
    let _ = REQUEST_FACTS.try_with(|f| f.tenant.set(tenant));
}

/// Records the rate limit that applied to this request, for its response headers.
pub fn note_ratelimit(status: RateLimitStatus) {
    let _ = REQUEST_FACTS.try_with(|f| f.ratelimit.set(status));
}

/// Records who the authenticated caller is, for the request's log line.
pub fn note_caller(account: AccountId, key: KeyId, client_ip: IpAddr, deprecated: bool) {
    let _ = REQUEST_FACTS.try_with(|f| {
        let _ = f.caller.set((account, key, client_ip));
        if deprecated {
            let _ = f.deprecated_credential.set(());
        }
    });
}

/// An incoming id is kept when it is 1–128 safe characters and not key-shaped (an id is logged,
/// stored and forwarded); otherwise a new `req_…` is made.
fn request_id(headers: &HeaderMap, key_format: &keygate_domain::KeyFormat) -> String {
    headers
        .get(&X_REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|s| {
            !s.is_empty()
                && s.len() <= 128
                && s.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
                && matches!(key_format.mask_keys(s), std::borrow::Cow::Borrowed(_))
        })
        .map_or_else(|| RequestId::generate().to_string(), str::to_owned)
}

/// A part of the request line (path, method) as the log shows it: percent-decoded when it holds
/// escapes (so an encoded key is seen), then with every key-shaped string masked (SPEC §2). The
/// work happens when the line is written, never for a line the filter leaves out.
struct Masked<'a> {
    key_format: &'a keygate_domain::KeyFormat,
    text: &'a str,
}

impl std::fmt::Display for Masked<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Borrowed in the common case (no escape, no key): a log line allocates nothing more.
        let masked: std::borrow::Cow<'_, str> = if self.text.contains('%') {
            let decoded = keygate_domain::request::percent_decode_lossy(self.text);
            std::borrow::Cow::Owned(self.key_format.mask_keys(&decoded).into_owned())
        } else {
            self.key_format.mask_keys(self.text)
        };
        // A decoded `%0a` is a line break: escaped, so no request can write a log line of its own;
        // so are the separators some log viewers break lines at, and the bidirectional overrides
        // that make a viewer show text in another order than it was written.
        let escaped = |c: char| {
            c.is_control()
                || matches!(c, '\u{2028}' | '\u{2029}')
                || keygate_engine::services::fields::is_bidi_control(c)
        };
        if !masked.chars().any(escaped) {
            return f.write_str(&masked);
        }
        for c in masked.chars() {
            if escaped(c) {
                write!(f, "{}", c.escape_default())?;
            } else {
                f.write_char(c)?;
            }
        }
        Ok(())
    }
}

/// What the request context keeps of a request while its handler runs: its id, and what its
/// log line, metrics and request-log record name. Made by [`RequestContext::head`].
#[derive(Debug)]
pub struct RequestHead {
    id: String,
    method: Method,
    /// For the log line's path (a clone shares the parsed bytes).
    uri: Uri,
    /// The connection's peer, for the log line of a request no key was presented on.
    peer: Option<IpAddr>,
    /// keygate's own route, if the request is one of its endpoints.
    own_route: Option<OwnRoute>,
}

/// The template of one of keygate's own routes: as axum's router matched it, or as a direct
/// dispatch named it.
#[derive(Debug)]
enum OwnRoute {
    Matched(MatchedPath),
    Named(&'static str),
}

impl OwnRoute {
    fn as_str(&self) -> &str {
        match self {
            Self::Matched(m) => m.as_str(),
            Self::Named(route) => route,
        }
    }
}

impl RequestContext {
    /// What [`RequestContext::run`] needs of `req`, taken before the request goes to its handler:
    /// the request id (the client's `X-Request-Id` when it is acceptable, else a new `req_…`),
    /// method, target, and the route the router matched. `peer` is the connection's address.
    pub fn head<B>(&self, req: &axum::http::Request<B>, peer: Option<IpAddr>) -> RequestHead {
        self.head_with(req, peer, req.extensions().get::<MatchedPath>().cloned().map(OwnRoute::Matched))
    }

    /// As [`RequestContext::head`], for a request dispatched to keygate's own endpoint `route`
    /// (its template, as the router would have matched it) without the router.
    pub fn head_of_route<B>(&self, req: &axum::http::Request<B>, peer: IpAddr, route: &'static str) -> RequestHead {
        self.head_with(req, Some(peer), Some(OwnRoute::Named(route)))
    }

    fn head_with<B>(
        &self,
        req: &axum::http::Request<B>,
        peer: Option<IpAddr>,
        own_route: Option<OwnRoute>,
    ) -> RequestHead {
        RequestHead {
            id: request_id(req.headers(), &self.key_format),
            method: req.method().clone(),
            uri: req.uri().clone(),
            peer,
            own_route,
        }
    }

    /// Serves a request outside the router with what the router's layers give its routes, in
    /// their order: `handler`'s panic becomes the 500 problem, `Cache-Control: no-store` on what
    /// keygate answers itself, then [`RequestContext::run`]. Not an `async fn`: the handler is
    /// boxed here, before any future holds it, so what moves on (into `run`'s future and the
    /// connection's task) is a pointer, not the handler's state, which is kilobytes.
    pub fn serve<'a>(
        &'a self,
        head: RequestHead,
        handler: impl Future<Output = Response> + 'a,
    ) -> impl Future<Output = Response> + 'a {
        use futures_util::FutureExt as _;
        let guarded = Box::pin(
            std::panic::AssertUnwindSafe(handler).catch_unwind().map(|r| no_store(r.unwrap_or_else(panic_response))),
        );
        self.run(head, guarded)
    }

    /// Runs `handler` as the request `head` describes: makes the request id available to errors
    /// and the request's facts to whoever learns them (authentication, the gateway), then logs
    /// the request, counts it in the metrics, counts its usage and queues its request-log record
    /// when a key was presented (SPEC §8), and sets `X-Request-Id`, the rate-limit fields of the
    /// limit that applied (SPEC §5) and `Deprecation` where a deprecated credential was used.
    pub async fn run(&self, head: RequestHead, handler: impl Future<Output = Response>) -> Response {
        let RequestHead { id, method, uri, peer, own_route } = head;
        let at = time::truncate(time::now());
        let started = Instant::now();
        let (mut response, facts) = REQUEST_FACTS
            .scope(RequestFacts::default(), async {
                let response = REQUEST_ID.scope(id.clone(), handler).await;
                let facts = REQUEST_FACTS.with(|f| {
                    (
                        f.caller.get().copied(),
                        f.deprecated_credential.get().is_some(),
                        f.ratelimit.get().copied(),
                        f.tenant.get().copied(),
                        f.route.get().cloned(),
                        f.verified.get().copied(),
                    )
                });
                (response, facts)
            })
            .await;
        let (caller, deprecated, ratelimit, tenant, gateway_route, verified) = facts;
        let headers = response.headers_mut();
        if let Some(status) = ratelimit
            && !headers.contains_key(X_RATELIMIT_LIMIT)
        {
            write_ratelimit(headers, &status);
        }
        if let Ok(v) = HeaderValue::from_str(&id) {
            headers.insert(X_REQUEST_ID.clone(), v);
        }
        if deprecated {
            headers.insert("deprecation", HeaderValue::from_static("true"));
        }
        let status = response.status().as_u16();
        let code = response.extensions().get::<ErrorCode>().map_or("ok", |c| c.0);
        let latency = started.elapsed();
        let elapsed = latency.as_secs_f64();
        // Microsecond precision: the log line reads 0.051, not 0.051326000000000004.
        let latency_ms = (elapsed * 1_000_000.0).round() / 1000.0;
        let route: &str = match (&own_route, &gateway_route) {
            (Some(own), _) => own.as_str(),
            (None, Some(r)) => r,
            (None, None) => "unmatched",
        };
        let key_format = &*self.key_format;
        // An extension method is any token, a pasted key included: masked like the path.
        let logged_path = Masked { key_format, text: uri.path() };
        let logged_method = Masked { key_format, text: method.as_str() };
        count_request(code, route, elapsed);
        // The ids are formatted by the log line itself, only when it is enabled.
        let client_ip = caller.map_or(peer, |(_, _, ip)| Some(ip));
        tracing::info!(
            target: "keygate::request",
            request_id = %id, method = %logged_method, path = %logged_path, status, outcome = code,
            account_id = caller.map(|(a, _, _)| tracing::field::display(a)),
            key_id = caller.map(|(_, k, _)| tracing::field::display(k)),
            client_ip = client_ip.map(|ip| tracing::field::display(IpText(ip))), latency_ms,
            "request"
        );
        if let Some((account, key, ip)) = caller {
            // A verify call is a use of the verified key, noting who asked (SPEC §9).
            let (account_id, key_id, tenant_id, outcome, client_ip, via_key_id) = match verified {
                Some(v) => (v.account, v.key, v.tenant, v.outcome, v.ip.unwrap_or(ip), Some(key)),
                None => (account, key, tenant, code, ip, None),
            };
            let recorder = &self.recorder;
            recorder.count(Counted {
                account: account_id,
                key: key_id,
                tenant: tenant_id,
                day: at.date_naive(),
                outcome,
            });
            if recorder.keeps(status, outcome) {
                recorder.record(&NewRequestRecord {
                    request_id: &id,
                    at,
                    account_id,
                    key_id: Some(key_id),
                    tenant_id,
                    route,
                    method: method.as_str(),
                    status,
                    outcome,
                    client_ip: Some(client_ip),
                    latency_us: u64::try_from(latency.as_micros()).unwrap_or(u64::MAX),
                    via_key_id,
                });
            }
        }
        response
    }
}

/// Each thread's request counters: outcome → route template → counter.
type CountersByOutcome = HashMap<&'static str, HashMap<Box<str>, metrics::Counter, FoldHash>, FoldHash>;
type FoldHash = foldhash::fast::RandomState;

/// Counts a request in `keygate_requests_total{outcome, route}` and its latency in
/// `keygate_request_duration_seconds`. Each thread keeps the handles it has used (outcomes are
/// fixed codes, routes are templates: both few), so a request adds to two atomics instead of
/// building a labelled key and looking it up in the registry. The recorder is installed when the
/// router is built (`keygate_api`), before any request: a handle taken earlier would count
/// nowhere.
fn count_request(outcome: &'static str, route: &str, seconds: f64) {
    thread_local! {
        // foldhash, not SipHash: the keys are outcome codes and route templates, never a
        // client's text, so there is no flooding to resist.
        static COUNTERS: std::cell::RefCell<CountersByOutcome> = std::cell::RefCell::new(HashMap::default());
        static DURATION: metrics::Histogram = metrics::histogram!("keygate_request_duration_seconds");
    }
    COUNTERS.with_borrow_mut(|counters| {
        let by_route = counters.entry(outcome).or_default();
        if let Some(counter) = by_route.get(route) {
            counter.increment(1);
        } else {
            let counter =
                metrics::counter!("keygate_requests_total", "outcome" => outcome, "route" => route.to_owned());
            counter.increment(1);
            by_route.insert(route.into(), counter);
        }
    });
    DURATION.with(|histogram| histogram.record(seconds));
}

/// The router's middleware around every request ([`RequestContext::run`]); the peer address
/// comes from axum's `ConnectInfo`.
pub async fn request_context(State(context): State<RequestContext>, req: Request, next: Next) -> Response {
    let peer = req.extensions().get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip());
    let head = context.head(&req, peer);
    context.run(head, next.run(req)).await
}

/// Marks a response that is the gateway's upstream's own, not keygate's.
#[derive(Debug, Clone, Copy)]
pub struct FromUpstream;

/// `Cache-Control: no-store` on everything keygate answers itself (its API, its errors, the
/// gateway's refusals), unless the handler set its own; an upstream's response keeps its headers.
#[must_use]
pub fn no_store(mut response: Response) -> Response {
    if response.extensions().get::<FromUpstream>().is_none() {
        response.headers_mut().entry(axum::http::header::CACHE_CONTROL).or_insert(HeaderValue::from_static("no-store"));
    }
    response
}

pub async fn route_not_found() -> Response {
    ApiError::RouteNotFound.into_response()
}

pub async fn method_not_allowed() -> Response {
    ApiError::MethodNotAllowed.into_response()
}

/// A panic in a handler becomes a 500 with nothing in it but the request id. The panic message
/// is not logged either: it could hold anything.
pub fn panic_response(_: Box<dyn std::any::Any + Send + 'static>) -> Response {
    tracing::error!("handler panicked");
    ApiError::from(Error::Internal("handler panicked".into())).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_logged_path_cannot_break_its_line() {
        let key_format = keygate_domain::KeyFormat::new("sk").unwrap_or_else(|e| panic!("{e}"));
        let logged =
            Masked { key_format: &key_format, text: "/v1/x%0a2026-11-30T00:00:00Z INFO forged%0d%09end" }.to_string();
        assert!(!logged.contains('\n') && !logged.contains('\r') && !logged.contains('\t'), "{logged}");
        assert_eq!(logged, "/v1/x\\n2026-11-30T00:00:00Z INFO forged\\r\\tend");
    }

    #[test]
    fn a_logged_path_shows_no_separator_or_override_as_it_is() {
        let key_format = keygate_domain::KeyFormat::new("sk").unwrap_or_else(|e| panic!("{e}"));
        for (text, shown) in [
            ("/v1/a%E2%80%A8b", "/v1/a\\u{2028}b"),
            ("/v1/a\u{2029}b", "/v1/a\\u{2029}b"),
            ("/v1/a%E2%80%AEfdp.exe", "/v1/a\\u{202e}fdp.exe"),
            ("/v1/a\u{2066}b", "/v1/a\\u{2066}b"),
            ("/v1/caf%C3%A9/\u{e9}", "/v1/caf\u{e9}/\u{e9}"),
        ] {
            assert_eq!(Masked { key_format: &key_format, text }.to_string(), shown, "{text}");
        }
    }
}
