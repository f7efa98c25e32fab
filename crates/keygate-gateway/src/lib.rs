//! The gateway (SPEC §10): keygate in front of an upstream API.
//!
//! Every `/v1/*` request that is not keygate's own endpoint is matched against the configured
//! routes (compiled once at start into `matchit` routers, one per method) and fails closed: no
//! route, 404 `route_not_found`; the path under another method, 405. A matched request runs SPEC
//! §3 in order with the route's scope (9) and tenant (10, from the route's path parameter or
//! `X-Tenant-Id`; a tenant-scoped key must name one), then its limits (11: key, the route's
//! per-IP limit, account), then `Idempotency-Key` on idempotent routes, and is forwarded on one
//! of this thread's keep-alive connections to the upstream ([`upstream::Pool`]), bodies streamed
//! both ways.
//!
//! What the upstream sees: the request without the credential (`Authorization`, `X-API-Key`, or
//! the `appid` parameter that carried it), without hop-by-hop headers and without any incoming
//! `X-Keygate-*` (a client cannot forge identity), plus `X-Keygate-Account-Id`,
//! `X-Keygate-Key-Id`, `X-Keygate-Tenant-Id` (when the request names a tenant),
//! `X-Keygate-Scopes` (comma-separated; `*` for an unrestricted key), keygate's `X-Request-Id`,
//! and `X-Forwarded-For` set to the client IP keygate resolved (an incoming chain is not passed
//! on: the upstream should trust keygate's view, not the client's claim).
//!
//! Idempotent routes (POST by default) buffer the body (to fingerprint it) and store whatever the
//! upstream answered, its 4xx and 5xx included; a 502 where the upstream could not be reached is
//! not stored, so a retry executes.

use std::borrow::Cow;
use std::collections::HashMap;
use std::convert::Infallible;
use std::fmt;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::extract::Request;
use axum::http::header::{self, HeaderMap, HeaderName, HeaderValue};
use axum::http::request::Parts;
use axum::http::uri::PathAndQuery;
use axum::http::{Method, Uri};
use axum::response::{IntoResponse, Response};
use futures_util::FutureExt as _;
use keygate_domain::gcra::Quota;
use keygate_domain::ip::IpText;
use keygate_domain::policy::{self, AuthFailure};
use keygate_domain::request::{TargetError, query_without_credential};
use keygate_domain::scope::Catalog;
use keygate_domain::{AccountId, KeyId, Scope, TenantId};
use keygate_engine::Engine;
use keygate_engine::auth::{Authenticator, Caller};
use keygate_engine::idempotency::Binding;
use keygate_engine::ratelimit::LimitKey;
use keygate_http::context::{FromUpstream, RequestContext, X_REQUEST_ID, note_route, note_tenant};
use keygate_http::headers::{X_API_KEY, X_FORWARDED_FOR, strip_hop_by_hop};
use keygate_http::idempotency::{self, Claim};
use keygate_http::{ApiError, caller};

pub mod config;
pub mod upstream;

pub use config::{GatewayConfig, RouteConfig};

/// One compiled route.
#[derive(Debug)]
pub struct Route {
    pub method: Method,
    /// As configured; also names the route's per-IP limiter.
    pub path: Arc<str>,
    pub scope: Scope,
    pub tenant: Option<String>,
    pub idempotent: bool,
    pub ip_rate_limit_per_minute: Option<u32>,
}

/// The compiled `[gateway]`: the route table and the upstream client.
pub struct Gateway {
    /// `http://host:port`, no trailing slash.
    upstream: String,
    timeout: Duration,
    pub max_body_bytes: usize,
    routes: Vec<Route>,
    by_method: HashMap<Method, matchit::Router<usize>>,
    /// Every route's path (parameters renamed) → the index in `allowed` of the methods it has, to
    /// tell 405 (with `Allow`) from 404.
    any_method: matchit::Router<usize>,
    /// The `Allow` value of each path shape: its methods, plus `HEAD` where it has `GET`.
    allowed: Vec<HeaderValue>,
    /// Keep-alive connections to the upstream, per thread: a request is forwarded on connections
    /// whose tasks run on its own thread, so no wake-up crosses threads (keygate serves on one
    /// thread per core).
    pool: upstream::Pool<Body>,
    /// keygate's own endpoints: a request for one of these paths is never the gateway's, whatever
    /// its method ([`Gateway::claims`]).
    own: matchit::Router<()>,
}

/// `http://host:port (N routes)`, for the start-up log line.
impl fmt::Display for Gateway {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({} routes)", self.upstream, self.routes.len())
    }
}

impl fmt::Debug for Gateway {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Gateway")
            .field("upstream", &self.upstream)
            .field("routes", &self.routes)
            .finish_non_exhaustive()
    }
}

/// `/v1/x/{a}/y/{b}` → `/v1/x/{p0}/y/{p1}`: the same shape whatever the parameters are called.
fn normalized(path: &str) -> String {
    let mut n = 0;
    path.split('/')
        .map(|seg| {
            if seg.starts_with('{') && seg.ends_with('}') {
                n += 1;
                format!("{{p{}}}", n - 1)
            } else {
                seg.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join("/")
}

/// A concrete path the template matches (parameters filled with `x`).
fn sample(path: &str) -> String {
    path.split('/').map(|seg| if seg.starts_with('{') { "x" } else { seg }).collect::<Vec<_>>().join("/")
}

/// How long an upstream connection may sit unused and still be used (what hyper-util's pooled
/// client, keygate's before its own pool, was configured with).
const UPSTREAM_IDLE_TIMEOUT: Duration = Duration::from_secs(60);

const METHODS: [Method; 7] =
    [Method::GET, Method::POST, Method::PUT, Method::PATCH, Method::DELETE, Method::HEAD, Method::OPTIONS];

impl Gateway {
    /// Validates and compiles the configuration.
    ///
    /// # Errors
    /// Every problem, each naming its route.
    /// `own_paths` are keygate's own endpoints (`/v1/api-keys/{id}`, …): a route that collides
    /// with one is refused, since keygate's router would answer it first.
    pub fn compile<'a>(
        config: &GatewayConfig,
        catalog: &Catalog,
        own_paths: impl IntoIterator<Item = &'a str>,
    ) -> Result<Self, Vec<String>> {
        let mut errors = Vec::new();
        let mut authority = None;
        let upstream = match config.upstream.parse::<Uri>() {
            Ok(uri)
                if uri.scheme_str() == Some("http")
                    // No userinfo: it would be sent nowhere useful, and a secret in it could leak.
                    && uri.authority().is_some_and(|a| !a.as_str().contains('@'))
                    && matches!(uri.path(), "" | "/")
                    && uri.query().is_none() =>
            {
                authority = uri.authority().cloned();
                format!("http://{}", uri.authority().map(ToString::to_string).unwrap_or_default())
            }
            _ => {
                // A value with userinfo is not repeated: it may hold a password.
                let shown =
                    if config.upstream.contains('@') { "(not shown: it holds user@)" } else { &config.upstream };
                errors.push(format!(
                    "upstream `{shown}` must be http://host:port (no path, no user:password@; https upstreams are not \
                     supported yet)"
                ));
                String::new()
            }
        };
        if config.timeout_ms == 0 || config.connect_timeout_ms == 0 {
            errors.push("timeout_ms and connect_timeout_ms must be at least 1".into());
        }
        if config.max_body_bytes == 0 {
            errors.push("max_body_bytes must be at least 1".into());
        }
        let mut own = matchit::Router::new();
        for path in own_paths {
            let _ = own.insert(normalized(path), ());
        }
        let mut routes = Vec::new();
        let mut by_method: HashMap<Method, matchit::Router<usize>> = HashMap::new();
        let mut methods_of: Vec<(String, Vec<Method>)> = Vec::new();
        for (i, r) in config.routes.iter().enumerate() {
            let label = format!("routes[{i}] ({} {})", r.method, r.path);
            let method_name = r.method.to_ascii_uppercase();
            let Some(method) = METHODS.iter().find(|m| m.as_str() == method_name).cloned() else {
                let known: Vec<&str> = METHODS.iter().map(Method::as_str).collect();
                errors.push(format!("{label}: method must be one of {}", known.join(", ")));
                continue;
            };
            if !r.path.starts_with("/v1/") {
                errors.push(format!("{label}: path must start with /v1/"));
                continue;
            }
            if own.at(&sample(&r.path)).is_ok() || own.at(&r.path).is_ok() {
                errors.push(format!("{label}: collides with one of keygate's own endpoints"));
                continue;
            }
            let scope = match r.scope.parse::<Scope>() {
                Ok(s) if catalog.allows(&s, true) => s,
                _ => {
                    errors.push(format!("{label}: scope `{}` is not in the scope catalog", r.scope));
                    continue;
                }
            };
            if let Some(param) = &r.tenant
                && !r.path.split('/').any(|seg| seg == format!("{{{param}}}"))
            {
                errors.push(format!("{label}: tenant names `{param}`, which is not a parameter of the path"));
                continue;
            }
            if r.ip_rate_limit_per_minute == Some(0) {
                errors.push(format!("{label}: ip_rate_limit_per_minute must be at least 1"));
                continue;
            }
            let router = by_method.entry(method.clone()).or_default();
            if let Err(e) = router.insert(r.path.clone(), routes.len()) {
                errors.push(format!("{label}: {e}"));
                continue;
            }
            let shape = normalized(&r.path);
            match methods_of.iter_mut().find(|(s, _)| *s == shape) {
                Some((_, methods)) => methods.push(method.clone()),
                None => methods_of.push((shape, vec![method.clone()])),
            }
            routes.push(Route {
                idempotent: r.idempotent.unwrap_or(method == Method::POST),
                method,
                path: r.path.as_str().into(),
                scope,
                tenant: r.tenant.clone(),
                ip_rate_limit_per_minute: r.ip_rate_limit_per_minute,
            });
        }
        let Some(authority) = authority.filter(|_| errors.is_empty()) else {
            return Err(errors);
        };
        let mut any_method = matchit::Router::new();
        let mut allowed = Vec::with_capacity(methods_of.len());
        for (shape, mut methods) in methods_of {
            if methods.contains(&Method::GET) && !methods.contains(&Method::HEAD) {
                methods.push(Method::HEAD);
            }
            methods.sort_by_key(|m| METHODS.iter().position(|known| known == m));
            let list = methods.iter().map(Method::as_str).collect::<Vec<_>>().join(", ");
            let _ = any_method.insert(shape, allowed.len());
            allowed.push(HeaderValue::from_str(&list).unwrap_or(HeaderValue::from_static("")));
        }
        Ok(Self {
            upstream,
            pool: upstream::Pool::new(
                &authority,
                Duration::from_millis(config.connect_timeout_ms),
                UPSTREAM_IDLE_TIMEOUT,
            ),
            timeout: Duration::from_millis(config.timeout_ms),
            max_body_bytes: config.max_body_bytes,
            routes,
            by_method,
            any_method,
            allowed,
            own,
        })
    }

    /// Whether a request is one of the gateway's routes, method and path, and its path none of
    /// keygate's own endpoints: what the router would hand the gateway as its fallback and the
    /// gateway would forward. A route may have a parameter where an own endpoint has a fixed
    /// segment (`/v1/{thing}` and `/v1/usage`): the own endpoint is answered.
    #[must_use]
    pub fn claims(&self, method: &Method, path: &str) -> bool {
        self.own.at(path).is_err() && self.matched(method, path).is_some()
    }

    /// The route table's match for this request. `HEAD` is served by a `GET` route where the
    /// path has no `HEAD` route of its own (RFC 9110 §9.3.2).
    fn matched<'p>(&self, method: &Method, path: &'p str) -> Option<matchit::Match<'_, 'p, &usize>> {
        match self.by_method.get(method).and_then(|r| r.at(path).ok()) {
            Some(m) => Some(m),
            None if *method == Method::HEAD => self.by_method.get(&Method::GET)?.at(path).ok(),
            None => None,
        }
    }

    /// The route for this request and its path parameters.
    fn find(&self, method: &Method, path: &str) -> Option<(&Route, Vec<(String, String)>)> {
        let m = self.matched(method, path)?;
        let params = m.params.iter().map(|(k, v)| (k.to_owned(), v.to_owned())).collect();
        Some((&self.routes[*m.value], params))
    }
}

/// The gateway as a service for everything keygate's own router does not serve: `/v1/*` requests
/// are matched against the routes and forwarded; anything else is 404 `route_not_found`. The
/// binary mounts it as the API's fallback, inside the API's middleware (request id, log line,
/// request log, no-store for keygate's own answers), and serves the requests it
/// [claims](GatewayService::claims) with [`GatewayService::serve`], in the same request context
/// without the router. A clone is one reference count.
#[derive(Clone)]
pub struct GatewayService(Arc<(Arc<Engine>, Arc<Gateway>)>);

impl GatewayService {
    /// Forwards by `gateway`'s routes, checking requests with `engine` (the API's own).
    #[must_use]
    pub fn new(engine: Arc<Engine>, gateway: Arc<Gateway>) -> Self {
        Self(Arc::new((engine, gateway)))
    }

    /// Whether this service forwards the request ([`Gateway::claims`]): the front end then serves
    /// it with [`GatewayService::serve`], without the router.
    #[must_use]
    pub fn claims(&self, method: &Method, path: &str) -> bool {
        self.0.1.claims(method, path)
    }

    /// Serves a request the gateway [claims](Gateway::claims) from `peer`, in `context`, without
    /// the router: [`RequestContext::serve`] does what the router's layers do for every request,
    /// in the same order, so the request gets the same answer, log line, metrics, usage count and
    /// request-log record as through the router, at less cost per request (no route table of
    /// keygate's own, no boxed middleware futures, no `ConnectInfo` extension).
    ///
    /// The forwarding future is built from combinators, not `async` blocks (each block that moves
    /// a future in and awaits it keeps both in its state); the context boxes it once, so nothing
    /// copies its 1.7 KB again on its way to the connection's task.
    pub async fn serve(&self, context: &RequestContext, req: Request, peer: IpAddr) -> Response {
        let (engine, gateway) = &*self.0;
        let head = context.head(&req, Some(peer));
        context
            .serve(head, proxy(engine, gateway, req, peer).map(|r| r.unwrap_or_else(IntoResponse::into_response)))
            .await
    }
}

impl tower_service::Service<Request> for GatewayService {
    type Response = Response;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request) -> Self::Future {
        let shared = Arc::clone(&self.0);
        Box::pin(async move {
            let (engine, gateway) = &*shared;
            if !req.uri().path().starts_with("/v1/") {
                return Ok(ApiError::RouteNotFound.into_response());
            }
            let peer = caller::peer(req.extensions());
            Ok(proxy(engine, gateway, req, peer).await.unwrap_or_else(IntoResponse::into_response))
        })
    }
}

async fn proxy(engine: &Engine, gw: &Gateway, req: Request, peer: IpAddr) -> Result<Response, ApiError> {
    let (parts, body) = req.into_parts();
    // One canonical form (SPEC §10): what keygate matches and authorises is byte for byte what
    // the upstream receives, so anything an upstream might resolve differently is refused.
    if parts.uri.scheme().is_some() || parts.uri.authority().is_some() {
        return Err(ApiError::invalid(TargetError::AbsoluteForm.to_string()));
    }
    keygate_domain::request::check_path(parts.uri.path()).map_err(|e| ApiError::invalid(e.to_string()))?;
    let Some((route, params)) = gw.find(&parts.method, parts.uri.path()) else {
        return Ok(match gw.any_method.at(parts.uri.path()) {
            Ok(m) => {
                let mut refused = ApiError::MethodNotAllowed.into_response();
                if let Some(allow) = gw.allowed.get(*m.value) {
                    refused.headers_mut().insert(header::ALLOW, allow.clone());
                }
                refused
            }
            Err(_) => ApiError::RouteNotFound.into_response(),
        });
    };
    note_route(&route.path);
    let caller = caller::authenticate_from(peer, &parts, engine).await?;
    caller.require(&route.scope)?;
    let tenant = tenant_of(engine, &caller, route, &params, &parts.headers).await?;
    let ip_limit = route.ip_rate_limit_per_minute.map(|n| {
        (
            LimitKey::RouteIp(caller.account().id, Arc::clone(&route.path), engine.auth.rate_key(caller.client_ip)),
            Quota::per_minute(n),
        )
    });
    caller::spend(engine, &caller, ip_limit).await?;

    let declared = parts.headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|n| n > gw.max_body_bytes as u64) {
        return Err(ApiError::PayloadTooLarge(gw.max_body_bytes));
    }

    let key_header = if route.idempotent { idempotency::key_header(&parts.headers)? } else { None };
    let Some(idem_key) = key_header else {
        // A body of declared length (checked above) streams: hyper delivers exactly that many
        // bytes or fails the message; so does the empty body of a GET. A body of unknown length
        // (chunked) could cross the limit midway, after the upstream had part of it, so it is
        // read up to the limit first and sent whole: the upstream never gets a cut-off body it
        // could take as complete.
        let body = if declared.is_some() || hyper::body::Body::is_end_stream(&body) {
            body
        } else {
            Body::from(read_limited(body, gw.max_body_bytes).await?)
        };
        return forward(gw, &engine.auth, parts, body, &caller, tenant).await.map_err(ApiError::from);
    };
    // Rarer and larger (the body buffered, a claim, the answer stored): boxed, so that the future
    // of every other forwarded request stays small (it is moved on its way to the connection).
    Box::pin(forward_once(engine, gw, parts, body, &caller, tenant, idem_key)).await
}

/// An idempotent route's request with an `Idempotency-Key` (SPEC §6): the body is buffered and
/// fingerprinted, the key claimed for this caller and tenant, then the request forwarded once and
/// whatever the upstream answered stored for replay — except a 502 where it could not be reached,
/// which releases the claim so that a retry executes.
async fn forward_once(
    engine: &Engine,
    gw: &Gateway,
    parts: Parts,
    body: Body,
    caller: &Caller,
    tenant: Option<TenantId>,
    idem_key: String,
) -> Result<Response, ApiError> {
    let bytes = read_limited(body, gw.max_body_bytes).await?;
    let request = idempotency::request(Some(idem_key), &parts.method, &parts.uri, &bytes);
    let binding = Binding { tenant, ..caller.idempotency_binding() };
    let ticket = match idempotency::claim(engine, &binding, request.as_ref()).await? {
        Claim::Replay(stored) => return Ok(stored),
        Claim::Proceed(ticket) => ticket,
    };
    match forward(gw, &engine.auth, parts, Body::from(bytes), caller, tenant).await {
        Ok(response) => Ok(ticket.complete(engine, response).await),
        Err(UpstreamError::Unreachable) => {
            ticket.release(engine).await;
            Err(UpstreamError::Unreachable.into())
        }
        Err(e) => Ok(ticket.complete(engine, ApiError::from(e).into_response()).await),
    }
}

/// The whole request body, or 413 once it passes `limit` bytes.
async fn read_limited(body: Body, limit: usize) -> Result<axum::body::Bytes, ApiError> {
    axum::body::to_bytes(body, limit).await.map_err(|e| {
        let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&e);
        while let Some(s) = source {
            if s.is::<http_body_util::LengthLimitError>() {
                return ApiError::PayloadTooLarge(limit);
            }
            source = s.source();
        }
        ApiError::invalid("The request body could not be read to its end.")
    })
}

/// Check 10 for a gateway request: the tenant it names, if any, and whether the key may act on it.
async fn tenant_of(
    engine: &Engine,
    caller: &Caller,
    route: &Route,
    params: &[(String, String)],
    headers: &HeaderMap,
) -> Result<Option<TenantId>, ApiError> {
    let mut header_values = headers.get_all(X_TENANT_ID).iter();
    let header = header_values.next();
    if header_values.next().is_some() {
        return Err(ApiError::invalid("Send at most one X-Tenant-Id header."));
    }
    let header = header.map(|v| v.to_str().map(str::trim).map_err(|_| AuthFailure::TenantNotAllowed)).transpose()?;
    let named = match &route.tenant {
        Some(param) => {
            let from_path = params.iter().find(|(k, _)| k == param).map(|(_, v)| v.clone());
            // Two different tenants in one request: the upstream might act on either.
            if let (Some(h), Some(p)) = (header, &from_path)
                && h != p
            {
                return Err(ApiError::invalid(format!(
                    "X-Tenant-Id names a different tenant than the path's `{param}`; send one tenant."
                )));
            }
            from_path
        }
        None => header.map(str::to_owned),
    };
    let Some(named) = named else {
        return if caller.key().tenant_ids().is_some() { Err(AuthFailure::TenantNotAllowed.into()) } else { Ok(None) };
    };
    let id: TenantId = named.trim().parse().map_err(|_| ApiError::from(AuthFailure::TenantNotAllowed))?;
    let tenant = engine.keygate.store.get_tenant(caller.account().id, id).await?;
    policy::check_tenant(&*caller.credential, tenant.as_ref())?;
    note_tenant(id);
    Ok(Some(id))
}

/// Why forwarding failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamError {
    /// No connection could be made: nothing reached the upstream.
    Unreachable,
    /// No response headers within the timeout.
    Timeout,
    /// The request body grew past the limit while streaming.
    BodyTooLarge(usize),
    /// The connection failed after the request was sent.
    Broken,
}

impl From<UpstreamError> for ApiError {
    fn from(e: UpstreamError) -> Self {
        let kind = match e {
            UpstreamError::Unreachable => "unreachable",
            UpstreamError::Timeout => "timeout",
            UpstreamError::BodyTooLarge(_) => "body_too_large",
            UpstreamError::Broken => "broken",
        };
        metrics::counter!("keygate_upstream_errors_total", "kind" => kind).increment(1);
        match e {
            UpstreamError::Timeout => Self::UpstreamTimeout,
            UpstreamError::BodyTooLarge(limit) => Self::PayloadTooLarge(limit),
            UpstreamError::Unreachable | UpstreamError::Broken => Self::UpstreamUnavailable,
        }
    }
}

/// Whether a client's header is one only keygate may say (SPEC §10): removed from every
/// forwarded request, since an upstream might trust it for routing, method or identity (keygate
/// sets `X-Forwarded-For` itself). That is every `X-Forwarded-*` and `X-Keygate-*`, the names
/// below, and every name holding an `_`: CGI and WSGI servers read `X_Keygate_Key_Id` as
/// `X-Keygate-Key-Id` (nginx drops such headers by default for the same reason).
fn is_untrusted(name: &HeaderName) -> bool {
    let n = name.as_str();
    n.bytes().any(|b| b == b'_')
        || n.starts_with("x-forwarded-")
        || n.starts_with("x-keygate-")
        || matches!(
            n,
            "forwarded"
                | "x-real-ip"
                | "x-http-method-override"
                | "x-http-method"
                | "x-method-override"
                | "x-original-url"
                | "x-original-uri"
                | "x-rewrite-url"
                | "x-original-host"
                | "x-client-ip"
                | "true-client-ip"
                | "cf-connecting-ip"
                | "x-cluster-client-ip"
                | "client-ip"
                | "x-original-method"
                | "x-envoy-original-path"
                | "x-envoy-internal"
                | "remote-user"
                | "x-remote-user"
                | "x-user"
                | "x-authenticated-user"
                | "x-auth-request-user"
                | "x-auth-request-email"
                | "x-auth-request-groups"
        )
}
const X_TENANT_ID: HeaderName = HeaderName::from_static("x-tenant-id");
const X_KEYGATE_ACCOUNT_ID: HeaderName = HeaderName::from_static("x-keygate-account-id");
const X_KEYGATE_KEY_ID: HeaderName = HeaderName::from_static("x-keygate-key-id");
const X_KEYGATE_TENANT_ID: HeaderName = HeaderName::from_static("x-keygate-tenant-id");
const X_KEYGATE_SCOPES: HeaderName = HeaderName::from_static("x-keygate-scopes");

async fn forward(
    gw: &Gateway,
    auth: &Authenticator,
    parts: Parts,
    body: Body,
    caller: &Caller,
    tenant: Option<TenantId>,
) -> Result<Response, UpstreamError> {
    let uri = upstream_uri(auth, &parts).ok_or(UpstreamError::Broken)?;

    let mut headers = parts.headers;
    strip_hop_by_hop(&mut headers);
    let forged: Vec<HeaderName> = headers.keys().filter(|k| is_untrusted(k)).cloned().collect();
    for name in forged {
        headers.remove(name);
    }
    for name in [header::HOST, header::AUTHORIZATION, X_API_KEY] {
        headers.remove(name);
    }
    keygate_http::headers::strip_keygate_cookies(&mut headers);
    let set = |headers: &mut HeaderMap, name: HeaderName, value: &str| {
        if let Ok(v) = HeaderValue::from_str(value) {
            headers.insert(name, v);
        }
    };
    let key = caller.key();
    set(&mut headers, X_KEYGATE_ACCOUNT_ID, caller.account().id.encode(&mut [0; AccountId::TEXT_LEN]));
    set(&mut headers, X_KEYGATE_KEY_ID, key.id.encode(&mut [0; KeyId::TEXT_LEN]));
    if let Some(t) = tenant {
        set(&mut headers, X_KEYGATE_TENANT_ID, t.encode(&mut [0; TenantId::TEXT_LEN]));
    }
    match &key.scopes {
        None => set(&mut headers, X_KEYGATE_SCOPES, "*"),
        Some(scopes) => {
            let mut list = String::with_capacity(scopes.iter().map(|s| s.as_str().len() + 1).sum());
            for scope in scopes.iter() {
                if !list.is_empty() {
                    list.push(',');
                }
                list.push_str(scope.as_str());
            }
            set(&mut headers, X_KEYGATE_SCOPES, &list);
        }
    }
    if let Some(id) = &caller.request_id {
        set(&mut headers, X_REQUEST_ID.clone(), id);
    }
    set(&mut headers, X_FORWARDED_FOR, &IpText(caller.client_ip).to_string());

    let mut request = hyper::Request::builder().method(parts.method).uri(uri);
    if let Some(h) = request.headers_mut() {
        *h = headers;
    }
    let request = request.body(body).map_err(|_| UpstreamError::Broken)?;
    let response = match tokio::time::timeout(gw.timeout, gw.pool.send(request)).await {
        Err(_) => {
            tracing::warn!(upstream = %gw.upstream, timeout_ms = gw.timeout.as_millis(), "the upstream sent no response headers in time");
            return Err(UpstreamError::Timeout);
        }
        Ok(Err(e)) => {
            // The operator's side of a 502: which upstream, and why (the client's problem
            // document says only that it could not be reached).
            tracing::warn!(upstream = %gw.upstream, error = %e, source = ?std::error::Error::source(&e), "forwarding to the upstream failed");
            return Err(classify(&e, gw.max_body_bytes));
        }
        Ok(Ok(r)) => r,
    };
    let (mut head, incoming) = response.into_parts();
    strip_hop_by_hop(&mut head.headers);
    // Answer in the client's HTTP version, not the upstream's (an HTTP/1.0 upstream must not
    // turn keygate's own connection into HTTP/1.0).
    head.version = parts.version;
    // The upstream's own answer: keygate's no-store default does not apply to it.
    head.extensions.insert(FromUpstream);
    Ok(Response::from_parts(head, Body::new(incoming)))
}

/// The request target sent upstream (origin-form, `/path?query`; the pool sets `Host`): its path
/// and query as they came (SPEC §10's one canonical form), without the credential where the query
/// carried one; `None` if that cannot be a URI.
/// A query with no credential in it is passed on as it is, sharing the request's bytes.
fn upstream_uri(auth: &Authenticator, parts: &Parts) -> Option<Uri> {
    let path_and_query = match parts.uri.query() {
        None => parts.uri.path_and_query().cloned()?,
        Some(q) => {
            // The credential, in whichever form it came, stays here (SPEC §10): every `appid`
            // where that parameter is a credential, and any parameter holding the presented key.
            let presented = caller::credential(auth, &parts.headers, Some(q)).map(|(c, _)| c).unwrap_or_default();
            match query_without_credential(q, &presented, auth.allows_query_key()) {
                kept if kept.is_empty() => PathAndQuery::try_from(parts.uri.path()).ok()?,
                Cow::Borrowed(_) => parts.uri.path_and_query().cloned()?,
                kept => PathAndQuery::try_from(format!("{}?{kept}", parts.uri.path())).ok()?,
            }
        }
    };
    Some(Uri::from(path_and_query))
}

/// Tells a connection never made from a body that grew too large from a connection lost midway.
fn classify(e: &upstream::SendError, limit: usize) -> UpstreamError {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(s) = source {
        if s.is::<http_body_util::LengthLimitError>() {
            return UpstreamError::BodyTooLarge(limit);
        }
        source = s.source();
    }
    match e {
        upstream::SendError::Connect(_) => UpstreamError::Unreachable,
        upstream::SendError::Exchange(_) => UpstreamError::Broken,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes() {
        assert_eq!(normalized("/v1/tenants/{tenant_id}/extensions/{id}"), "/v1/tenants/{p0}/extensions/{p1}");
        assert_eq!(sample("/v1/tenants/{tenant_id}/extensions"), "/v1/tenants/x/extensions");
    }
}
