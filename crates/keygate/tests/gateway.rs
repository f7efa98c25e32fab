//! SPEC §10 over real HTTP: keygate in front of a real upstream (an axum server the test starts
//! on `127.0.0.1:0`, which counts its calls and echoes what it received). Forwarding of method,
//! path, query, headers and bodies both ways (large streamed ones included), the identity headers
//! and what a client cannot forge, the credential stripped, fail-closed routing, scopes and
//! tenants, the per-IP route limit, 413/502/504, idempotent replay through the gateway, keygate's
//! own endpoints untouched, and invalid gateway configuration refused naming the route.

#[macro_use]
mod common;

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use common::{Backend, Resp, TestApp, assert_problem, run_with, send, str_of};
use http_body_util::BodyExt;
use hyper::body::Frame;
use keygate::Config;
use keygate_gateway::{GatewayConfig, RouteConfig};
use reqwest::Method;
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

// ---------------------------------------------------------------------------------------------
// The upstream
// ---------------------------------------------------------------------------------------------

/// The API behind keygate: an axum server on `127.0.0.1`, counting the requests it receives.
///
/// - `GET|POST /v1/slow`: sleeps 2 s, then echoes.
/// - `POST /v1/teapot`: 418 with a body naming the call.
/// - `GET /v1/recordings/{n}`: `n` deterministic bytes ([`pattern`]).
/// - anything else: 200 with the echo `{call, method, path, query, headers, body_len,
///   body_sha256}` (`headers`: lowercased names, repeated values joined by `, `).
///
/// Every response carries `x-upstream` and a hop-by-hop `keep-alive` header.
struct Upstream {
    addr: SocketAddr,
    calls: Arc<AtomicUsize>,
    task: Option<tokio::task::JoinHandle<()>>,
    /// A closed upstream's port: bound, not listening, so connecting is refused and no other
    /// process can take the port (it is bound without `SO_REUSEADDR`).
    reserved: Option<tokio::net::TcpSocket>,
}

impl Upstream {
    async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind the upstream");
        Self::serve(listener)
    }

    /// No server: a port held without listening, so connecting to it is refused.
    fn closed() -> Self {
        let socket = tokio::net::TcpSocket::new_v4().expect("a TCP socket");
        socket.bind(([127, 0, 0, 1], 0).into()).expect("bind a port");
        let addr = socket.local_addr().expect("a local address");
        Self { addr, calls: Arc::new(AtomicUsize::new(0)), task: None, reserved: Some(socket) }
    }

    /// A [`Upstream::closed`] one comes up on its port.
    fn open(mut self) -> Self {
        let socket = self.reserved.take().expect("a closed upstream");
        Self::serve(socket.listen(1024).expect("listen on the upstream's port"))
    }

    fn serve(listener: tokio::net::TcpListener) -> Self {
        let addr = listener.local_addr().expect("a local address");
        let calls = Arc::new(AtomicUsize::new(0));
        let router = axum::Router::new().fallback(upstream_handler).with_state(Arc::clone(&calls));
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        Self { addr, calls, task: Some(task), reserved: None }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// How many requests reached the upstream.
    fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

async fn upstream_handler(State(calls): State<Arc<AtomicUsize>>, request: Request) -> Response {
    let call = calls.fetch_add(1, Ordering::SeqCst) + 1;
    let (parts, mut body) = request.into_parts();
    let mut hasher = Sha256::new();
    let mut body_len = 0usize;
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(frame) => {
                if let Ok(data) = frame.into_data() {
                    body_len += data.len();
                    hasher.update(&data);
                }
            }
            Err(_) => return (StatusCode::BAD_REQUEST, "the request body broke off").into_response(),
        }
    }
    let path = parts.uri.path().to_owned();
    let mut response = if path == "/v1/slow" {
        tokio::time::sleep(Duration::from_secs(2)).await;
        axum::Json(json!({"call": call, "slept": true})).into_response()
    } else if path == "/v1/teapot" {
        (StatusCode::IM_A_TEAPOT, format!("short and stout, call {call}")).into_response()
    } else if path == "/v1/broken" {
        Response::new(Body::new(Broken {
            sent: false,
            sleep: Box::pin(tokio::time::sleep(Duration::from_millis(200))),
        }))
    } else if path == "/v1/drip" {
        Response::new(Body::new(Drip { first_sent: false, done: false, sleep: Box::pin(tokio::time::sleep(DRIP)) }))
    } else if let Some(n) = path.strip_prefix("/v1/recordings/").and_then(|n| n.parse::<usize>().ok()) {
        Response::new(Body::from(pattern(n)))
    } else {
        let mut headers = Map::new();
        for (name, value) in &parts.headers {
            let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
            match headers.get_mut(name.as_str()) {
                Some(Value::String(existing)) => {
                    existing.push_str(", ");
                    existing.push_str(&value);
                }
                _ => {
                    headers.insert(name.as_str().to_owned(), Value::String(value));
                }
            }
        }
        axum::Json(json!({
            "call": call,
            "method": parts.method.as_str(),
            "path": path,
            "query": parts.uri.query(),
            "headers": headers,
            "body_len": body_len,
            "body_sha256": hex(&hasher.finalize()),
        }))
        .into_response()
    };
    let h = response.headers_mut();
    h.insert("x-upstream", "yes".parse().expect("a header value"));
    h.insert("keep-alive", "timeout=99".parse().expect("a header value"));
    h.append("set-cookie", "a=1".parse().expect("a header value"));
    h.append("set-cookie", "b=2".parse().expect("a header value"));
    response
}

/// A response body that sends one chunk, then breaks off 200 ms later (after keygate has the
/// response headers).
struct Broken {
    sent: bool,
    sleep: Pin<Box<tokio::time::Sleep>>,
}

impl hyper::body::Body for Broken {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        if self.sent {
            return match self.sleep.as_mut().poll(cx) {
                Poll::Pending => Poll::Pending,
                Poll::Ready(()) => Poll::Ready(Some(Err(std::io::Error::other("the upstream broke off")))),
            };
        }
        self.sent = true;
        Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(b"partial")))))
    }
}

/// How long `/v1/drip` waits between its two chunks.
const DRIP: Duration = Duration::from_secs(1);

/// A response body: `first\n` at once, `second\n` [`DRIP`] later.
struct Drip {
    first_sent: bool,
    done: bool,
    sleep: Pin<Box<tokio::time::Sleep>>,
}

impl hyper::body::Body for Drip {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        if !self.first_sent {
            self.first_sent = true;
            return Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(b"first\n")))));
        }
        if self.done {
            return Poll::Ready(None);
        }
        match self.sleep.as_mut().poll(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(()) => {
                self.done = true;
                Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(b"second\n")))))
            }
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

/// `n` deterministic, incompressible-looking bytes (xorshift).
fn pattern(n: usize) -> Vec<u8> {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x.to_le_bytes()[3]
        })
        .collect()
}

/// A request body of unknown length (sent chunked), handed out in `chunk`-byte frames.
struct Chunked {
    data: Bytes,
    at: usize,
    chunk: usize,
}

impl Chunked {
    fn body(data: Vec<u8>, chunk: usize) -> reqwest::Body {
        reqwest::Body::wrap(Self { data: Bytes::from(data), at: 0, chunk })
    }
}

impl hyper::body::Body for Chunked {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        if self.at >= self.data.len() {
            return Poll::Ready(None);
        }
        let end = (self.at + self.chunk).min(self.data.len());
        let frame = self.data.slice(self.at..end);
        self.at = end;
        Poll::Ready(Some(Ok(Frame::data(frame))))
    }
}

// ---------------------------------------------------------------------------------------------
// The gateway under test
// ---------------------------------------------------------------------------------------------

fn route(method: &str, path: &str, scope: &str) -> RouteConfig {
    RouteConfig { method: method.into(), path: path.into(), scope: scope.into(), ..Default::default() }
}

/// The routes every test server forwards to its upstream.
fn gateway_config(upstream: &str) -> GatewayConfig {
    GatewayConfig {
        upstream: upstream.into(),
        timeout_ms: 10_000,
        max_body_bytes: 8 * 1024 * 1024,
        routes: vec![
            route("GET", "/v1/calls/{call_id}", "calls:read"),
            route("DELETE", "/v1/calls/{call_id}", "calls:write"),
            route("POST", "/v1/calls", "calls:write"),
            RouteConfig { ip_rate_limit_per_minute: Some(3), ..route("POST", "/v1/sms/send", "sms:send") },
            RouteConfig {
                tenant: Some("tenant_id".into()),
                ..route("GET", "/v1/tenants/{tenant_id}/extensions", "extensions:read")
            },
            route("GET", "/v1/extensions", "extensions:read"),
            route("POST", "/v1/recordings", "recordings:write"),
            route("GET", "/v1/recordings/{size}", "recordings:read"),
            route("POST", "/v1/recordings/{size}", "recordings:write"),
            route("GET", "/v1/drip", "calls:read"),
            route("POST", "/v1/broken", "calls:write"),
            route("GET", "/v1/slow", "calls:read"),
            route("POST", "/v1/slow", "calls:write"),
            route("POST", "/v1/teapot", "calls:write"),
            RouteConfig { idempotent: Some(false), ..route("POST", "/v1/messages", "messages:write") },
            route("GET", "/v1/calls/{call_id}/recording", "calls:read"),
            route("GET", "/v1/recording", "recordings:read"),
            route("GET", "/v1/files/{*path}", "calls:read"),
            RouteConfig {
                tenant: Some("tenant_id".into()),
                ..route("POST", "/v1/tenants/{tenant_id}/faxes", "faxes:write")
            },
            route("POST", "/v1/faxes", "faxes:write"),
        ],
        ..GatewayConfig::default()
    }
}

#[derive(Clone, Copy)]
enum Mode {
    /// The upstream runs.
    Running,
    /// The configured upstream port is closed (connection refused).
    Closed,
}

/// Starts the upstream (or takes a closed port), then a keygate forwarding to it with
/// [`gateway_config`] changed by `tweak`, and runs `test` with both.
async fn with_gateway<F, Fut>(backend: Backend, mode: Mode, tweak: fn(&mut Config), test: F)
where
    F: FnOnce(TestApp, Upstream) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let upstream = match mode {
        Mode::Running => Upstream::start().await,
        Mode::Closed => Upstream::closed(),
    };
    let url = upstream.url();
    run_with(
        backend,
        move |c| {
            c.gateway = Some(gateway_config(&url));
            tweak(c);
        },
        move |app| test(app, upstream),
    )
    .await;
}

fn gateway_of(c: &mut Config) -> &mut GatewayConfig {
    c.gateway.as_mut().expect("the gateway is configured")
}

fn no_tweak(_: &mut Config) {}

fn query_keys(c: &mut Config) {
    c.auth.allow_query_key = true;
}

fn behind_a_proxy(c: &mut Config) {
    c.trusted_proxies = vec!["127.0.0.1".into()];
}

fn short_timeout(c: &mut Config) {
    gateway_of(c).timeout_ms = 300;
}

/// `GET /v1/{resource}`: a parameter where keygate's own endpoints have fixed segments.
fn a_route_beside_own_endpoints(c: &mut Config) {
    gateway_of(c).routes.push(route("GET", "/v1/{resource}", "calls:read"));
}

fn small_bodies(c: &mut Config) {
    gateway_of(c).max_body_bytes = 4096;
}

/// `gateway_tests!(a, b)`, `gateway_tests!(with tweak; a)`, `gateway_tests!(closed tweak; a)`:
/// each test as `name::sqlite` and `name::postgres`, like `both_backends!`.
macro_rules! gateway_tests {
    (@one $mode:expr, $tweak:path, $name:ident) => {
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                super::with_gateway($crate::common::Backend::Sqlite, $mode, $tweak, super::$name).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            #[cfg_attr(not(keygate_pg), ignore = "set KEYGATE_TEST_POSTGRES_URL to run the PostgreSQL suite")]
            async fn postgres() {
                super::with_gateway($crate::common::Backend::Postgres, $mode, $tweak, super::$name).await;
            }
        }
    };
    (with $tweak:ident; $($name:ident),+ $(,)?) => {
        $(gateway_tests!(@one super::Mode::Running, super::$tweak, $name);)+
    };
    (closed $tweak:ident; $($name:ident),+ $(,)?) => {
        $(gateway_tests!(@one super::Mode::Closed, super::$tweak, $name);)+
    };
    ($($name:ident),+ $(,)?) => {
        $(gateway_tests!(@one super::Mode::Running, super::no_tweak, $name);)+
    };
}

gateway_tests!(
    a_binary_response_is_replayed_byte_for_byte,
    a_response_too_large_to_keep_still_arrives_and_is_never_executed_twice,
    an_upstream_breaking_off_does_not_wedge_the_idempotency_key,
    method_path_query_headers_and_body_are_forwarded,
    a_large_streamed_body_arrives_intact_both_ways,
    the_upstream_receives_exact_identity_headers,
    forged_keygate_headers_are_dropped,
    the_credential_never_reaches_the_upstream,
    unmatched_routes_fail_closed,
    a_key_without_the_route_scope_is_refused,
    the_tenant_comes_from_the_path_parameter,
    the_tenant_comes_from_the_x_tenant_id_header,
    a_tenant_scoped_key_cannot_call_a_route_without_a_tenant,
    a_suspended_tenant_is_refused,
    the_route_ip_limit_refuses_with_retry_after,
    rate_limit_headers_come_with_the_upstream_response,
    an_idempotent_retry_replays_without_calling_the_upstream,
    an_upstream_error_status_is_stored_and_replayed,
    routes_not_marked_idempotent_execute_every_time,
    keygate_serves_its_own_endpoints_itself,
    repeated_headers_pass_both_ways,
    headers_named_in_connection_are_not_forwarded,
    the_key_limit_refuses_before_the_upstream,
    concurrent_duplicates_reach_the_upstream_once,
    the_query_is_part_of_the_fingerprint,
);
gateway_tests!(
    with query_keys;
    the_appid_credential_is_removed_from_the_query,
    only_appid_is_removed_and_the_rest_of_the_query_is_kept_as_sent
);
gateway_tests!(
    with behind_a_proxy;
    the_forwarded_for_is_the_client_ip_a_trusted_proxy_names,
    ipv6_clients_of_one_network_share_the_route_ip_limit
);
gateway_tests!(
    dot_segments_and_odd_targets_are_refused_before_anything,
    two_tenant_headers_are_refused,
    headers_an_upstream_trusts_are_removed,
    a_replay_never_crosses_tenants_or_keys,
    the_request_log_keeps_the_route_not_the_path,
);
gateway_tests!(with query_keys; the_credential_leaves_the_query_whichever_source_carried_it);
gateway_tests!(a_405_says_what_is_allowed_and_head_is_served_by_get);
gateway_tests!(with small_bodies; a_body_over_the_gateway_limit_is_413);
gateway_tests!(with a_route_beside_own_endpoints; own_endpoints_win_over_a_route_parameter);
gateway_tests!(
    with short_timeout;
    a_slow_upstream_is_504,
    a_504_after_the_upstream_began_is_stored,
    the_timeout_ends_at_the_headers_and_the_response_streams,
);
gateway_tests!(closed no_tweak; an_unreachable_upstream_is_502, a_502_is_not_stored_and_the_retry_executes);
both_backends!(without_a_gateway_v1_paths_are_route_not_found);

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// A key of the partner with `body` (name added), its plaintext and id.
async fn key_with(app: &TestApp, owner: &str, body: Value) -> (String, String, Value) {
    let mut body = body;
    body["name"] = json!("gateway-test");
    let k = app.create_key(owner, body).await;
    (str_of(&k["key"]), str_of(&k["id"]), k)
}

/// The upstream's echo of a forwarded request (asserts a 200 from the echo route).
#[track_caller]
fn echo(r: &Resp) -> &Value {
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.header("x-upstream"), Some("yes"), "the upstream answered: {r:?}");
    &r.body
}

/// The header `name` as the upstream received it.
fn seen<'a>(echo: &'a Value, name: &str) -> Option<&'a str> {
    echo["headers"][name].as_str()
}

/// The names of the `x-keygate-*` headers the upstream received, sorted.
fn keygate_headers(echo: &Value) -> Vec<String> {
    let mut names: Vec<String> = echo["headers"]
        .as_object()
        .map(|h| h.keys().filter(|k| k.starts_with("x-keygate-")).cloned().collect())
        .unwrap_or_default();
    names.sort();
    names
}

/// Sends a request and keeps the body as bytes (for binary downloads).
async fn send_bytes(request: reqwest::RequestBuilder) -> (u16, reqwest::header::HeaderMap, Vec<u8>) {
    let response = request.send().await.expect("the server answers");
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let bytes = response.bytes().await.expect("a readable body").to_vec();
    (status, headers, bytes)
}

fn header_u64(r: &Resp, name: &str) -> u64 {
    r.header(name).and_then(|v| v.parse().ok()).unwrap_or_else(|| panic!("header {name} in {r:?}"))
}

async fn post_idem(app: &TestApp, key: &str, path: &str, idem: &str, body: &Value) -> Resp {
    send(app.request(Method::POST, path, key).header("idempotency-key", idem).json(body)).await
}

// ---------------------------------------------------------------------------------------------
// Forwarding
// ---------------------------------------------------------------------------------------------

async fn method_path_query_headers_and_body_are_forwarded(app: TestApp, up: Upstream) {
    let p = app.partner("Acme").await;

    let get = send(
        app.request(Method::GET, "/v1/calls/c-42?b=2&a=one%20two&a=3", &p.key)
            .header("x-custom", "hello")
            .header("accept", "application/json"),
    )
    .await;
    let e = echo(&get);
    assert_eq!(e["method"], "GET");
    assert_eq!(e["path"], "/v1/calls/c-42");
    assert_eq!(e["query"], "b=2&a=one%20two&a=3", "the query string as sent");
    assert_eq!(seen(e, "x-custom"), Some("hello"));
    assert_eq!(seen(e, "accept"), Some("application/json"));
    assert_eq!(seen(e, "user-agent"), Some(common::USER_AGENT));
    assert_eq!(e["body_len"], 0);
    assert_eq!(get.header("content-type"), Some("application/json"), "the upstream's headers come back");
    assert!(get.header("keep-alive").is_none(), "hop-by-hop response headers are not passed on: {:?}", get.headers);

    let encoded = echo(&app.get(&p.key, "/v1/calls/a%20b").await).clone();
    assert_eq!(encoded["path"], "/v1/calls/a%20b", "the path is forwarded as sent");
    assert_eq!(encoded["query"], Value::Null);

    let body = json!({"to": "+15555550100", "from": "+15555550199", "notes": "x".repeat(3000)});
    let bytes = serde_json::to_vec(&body).expect("JSON");
    let post = send(
        app.request(Method::POST, "/v1/calls?dry_run=true", &p.key)
            .header("content-type", "application/json")
            .body(bytes.clone()),
    )
    .await;
    let e = echo(&post);
    assert_eq!(e["method"], "POST");
    assert_eq!(e["path"], "/v1/calls");
    assert_eq!(e["query"], "dry_run=true");
    assert_eq!(seen(e, "content-type"), Some("application/json"));
    assert_eq!(e["body_len"], bytes.len());
    assert_eq!(e["body_sha256"], sha256_hex(&bytes));

    let delete = send(app.request(Method::DELETE, "/v1/calls/c-42", &p.key).header("keep-alive", "timeout=5")).await;
    let e = echo(&delete);
    assert_eq!(e["method"], "DELETE");
    assert_eq!(e["path"], "/v1/calls/c-42");
    assert_eq!(seen(e, "keep-alive"), None, "hop-by-hop request headers are not forwarded");

    // A status other than 200 comes back as the upstream sent it.
    let teapot = send(app.request(Method::POST, "/v1/teapot", &p.key)).await;
    assert_eq!(teapot.status, 418);
    assert_eq!(teapot.text, "short and stout, call 5");
    assert_eq!(teapot.header("x-upstream"), Some("yes"));
    assert_eq!(up.calls(), 5);
}

async fn a_large_streamed_body_arrives_intact_both_ways(app: TestApp, up: Upstream) {
    let p = app.partner("Acme").await;
    let data = pattern(5 * 1024 * 1024 + 17);
    let expected = sha256_hex(&data);

    // Sent chunked, with no Content-Length, in 64 KiB frames.
    let streamed = send(
        app.request(Method::POST, "/v1/recordings", &p.key)
            .header("content-type", "application/octet-stream")
            .body(Chunked::body(data.clone(), 64 * 1024)),
    )
    .await;
    let e = echo(&streamed);
    assert_eq!(e["body_len"], data.len());
    assert_eq!(e["body_sha256"], expected);

    // The same with a Content-Length.
    let sized = send(app.request(Method::POST, "/v1/recordings", &p.key).body(data.clone())).await;
    let e = echo(&sized);
    assert_eq!(e["body_len"], data.len());
    assert_eq!(e["body_sha256"], expected);
    assert_eq!(seen(e, "content-length"), Some(data.len().to_string().as_str()));

    // And a large response back.
    let size = 3 * 1024 * 1024 + 5;
    let (status, headers, bytes) =
        send_bytes(app.request(Method::GET, &format!("/v1/recordings/{size}"), &p.key)).await;
    assert_eq!(status, 200);
    assert_eq!(headers.get("x-upstream").map(|v| v.as_bytes()), Some(&b"yes"[..]));
    assert_eq!(bytes.len(), size);
    assert_eq!(sha256_hex(&bytes), sha256_hex(&pattern(size)), "the response body arrives intact");
    assert_eq!(up.calls(), 3);
}

async fn the_upstream_receives_exact_identity_headers(app: TestApp, _up: Upstream) {
    let p = app.partner("Acme").await;
    let (key, key_id, k) = key_with(&app, &p.key, json!({"scopes": ["calls:read", "messages:write"]})).await;
    let scopes: Vec<String> = k["scopes"].as_array().expect("scopes").iter().map(str_of).collect();

    let r = app.get(&key, "/v1/calls/c-1").await;
    let e = echo(&r);
    assert_eq!(seen(e, "x-keygate-account-id"), Some(p.account_id.as_str()));
    assert_eq!(seen(e, "x-keygate-key-id"), Some(key_id.as_str()));
    assert_eq!(seen(e, "x-keygate-scopes"), Some(scopes.join(",").as_str()));
    assert_eq!(
        keygate_headers(e),
        ["x-keygate-account-id", "x-keygate-key-id", "x-keygate-scopes"],
        "no tenant header on a request without a tenant"
    );
    assert_eq!(seen(e, "x-request-id"), Some(r.request_id()), "the same request id as keygate's response");
    assert_eq!(seen(e, "x-forwarded-for"), Some("127.0.0.1"));

    // An unrestricted key: `*`. From another address, with an X-Forwarded-For of its own.
    let other = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));
    let r = send(
        app.client_from(other)
            .get(app.url("/v1/calls/c-2"))
            .bearer_auth(&p.key)
            .header("x-forwarded-for", "203.0.113.9"),
    )
    .await;
    let e = echo(&r);
    assert_eq!(seen(e, "x-keygate-key-id"), Some(p.key_id.as_str()));
    assert_eq!(seen(e, "x-keygate-scopes"), Some("*"));
    assert_eq!(seen(e, "x-forwarded-for"), Some("127.0.0.2"), "the client's IP replaces what it claimed");
    assert_eq!(seen(e, "x-request-id"), Some(r.request_id()));
}

async fn forged_keygate_headers_are_dropped(app: TestApp, _up: Upstream) {
    let p = app.partner("Acme").await;
    let other = app.partner("Globex").await;
    let (key, key_id, _) = key_with(&app, &p.key, json!({"scopes": ["calls:read"]})).await;
    let r = send(
        app.request(Method::GET, "/v1/calls/c-1", &key)
            .header("x-keygate-account-id", &other.account_id)
            .header("x-keygate-key-id", &other.key_id)
            .header("x-keygate-tenant-id", "ten_01JABCDEFGHJKMNPQRSTVWXYZ0")
            .header("x-keygate-scopes", "*")
            .header("X-Keygate-Admin", "true")
            .header("x-request-id", "req_forged"),
    )
    .await;
    let e = echo(&r);
    assert_eq!(seen(e, "x-keygate-account-id"), Some(p.account_id.as_str()));
    assert_eq!(seen(e, "x-keygate-key-id"), Some(key_id.as_str()));
    assert_eq!(seen(e, "x-keygate-scopes"), Some("calls:read"));
    assert_eq!(keygate_headers(e), ["x-keygate-account-id", "x-keygate-key-id", "x-keygate-scopes"]);
    assert_eq!(seen(e, "x-request-id"), Some(r.request_id()), "the upstream sees keygate's request id only");
}

async fn the_credential_never_reaches_the_upstream(app: TestApp, _up: Upstream) {
    let p = app.partner("Acme").await;
    let bearer = app.get(&p.key, "/v1/calls/c-1").await;
    let e = echo(&bearer);
    assert_eq!(seen(e, "authorization"), None);
    assert!(!bearer.text.contains(&p.key), "the key appears nowhere in what the upstream saw");

    let api_key = send(app.client.get(app.url("/v1/calls/c-1?x=1")).header("x-api-key", &p.key)).await;
    let e = echo(&api_key);
    assert_eq!(seen(e, "x-api-key"), None);
    assert_eq!(seen(e, "authorization"), None);
    assert_eq!(e["query"], "x=1");
    assert!(!api_key.text.contains(&p.key));
}

async fn the_appid_credential_is_removed_from_the_query(app: TestApp, _up: Upstream) {
    let p = app.partner("Acme").await;
    let r = send(app.client.get(app.url(&format!("/v1/calls/c-1?before=1&appid={}&after=2", p.key)))).await;
    let e = echo(&r);
    assert_eq!(e["query"], "before=1&after=2", "appid removed, the rest kept in order");
    assert_eq!(seen(e, "x-keygate-key-id"), Some(p.key_id.as_str()));
    assert!(!r.text.contains(&p.key));
    let only = echo(&send(app.client.get(app.url(&format!("/v1/calls/c-1?appid={}", p.key)))).await).clone();
    assert!(only["query"].is_null() || only["query"] == "", "no query left: {only}");
}

// ---------------------------------------------------------------------------------------------
// Routing, scopes, tenants
// ---------------------------------------------------------------------------------------------

async fn unmatched_routes_fail_closed(app: TestApp, up: Upstream) {
    let p = app.partner("Acme").await;
    for path in ["/v1/nothing-here", "/v1/calls/c-1/extra", "/v1/sms", "/v1/tenants/ten_x/unknown"] {
        assert_problem(&app.get(&p.key, path).await, 404, "route_not_found");
    }
    assert_problem(&app.get(&p.key, "/v1/calls").await, 405, "method_not_allowed");
    assert_problem(&app.post(&p.key, "/v1/calls/c-1", &json!({})).await, 405, "method_not_allowed");
    assert_problem(&send(app.request(Method::PUT, "/v1/calls/c-1", &p.key)).await, 405, "method_not_allowed");
    assert_problem(&app.get(&p.key, "/v1/sms/send").await, 405, "method_not_allowed");
    // Without a credential, a configured route still authenticates first.
    assert_problem(&send(app.client.get(app.url("/v1/calls/c-1"))).await, 401, "missing_api_key");
    assert_problem(&app.get("sk_live_nope", "/v1/calls/c-1").await, 401, "invalid_api_key");
    assert_eq!(up.calls(), 0, "nothing reached the upstream");
}

async fn without_a_gateway_v1_paths_are_route_not_found(app: TestApp) {
    let p = app.partner("Acme").await;
    assert_problem(&app.get(&p.key, "/v1/calls/c-1").await, 404, "route_not_found");
    assert_problem(&app.post(&p.key, "/v1/sms/send", &json!({})).await, 404, "route_not_found");
}

async fn a_key_without_the_route_scope_is_refused(app: TestApp, up: Upstream) {
    let p = app.partner("Acme").await;
    let (reader, _, _) = key_with(&app, &p.key, json!({"scopes": ["calls:read"]})).await;
    let refused = app.post(&reader, "/v1/calls", &json!({"to": "+15555550100"})).await;
    assert_problem(&refused, 403, "insufficient_scope");
    assert_eq!(refused.body["required_scope"], "calls:write");
    let sms = app.post(&reader, "/v1/sms/send", &json!({})).await;
    assert_problem(&sms, 403, "insufficient_scope");
    assert_eq!(sms.body["required_scope"], "sms:send");
    assert_eq!(up.calls(), 0);
    echo(&app.get(&reader, "/v1/calls/c-1").await);

    let (writer, writer_id, _) = key_with(&app, &p.key, json!({"scopes": ["calls:write"]})).await;
    echo(&app.get(&writer, "/v1/calls/c-1").await); // write implies read
    echo(&app.post(&writer, "/v1/calls", &json!({})).await);
    assert_eq!(up.calls(), 3);

    let revoked = app.post(&p.key, &format!("/v1/api-keys/{writer_id}/revoke"), &json!({})).await;
    assert_eq!(revoked.status, 200, "{revoked:?}");
    assert_problem(&app.get(&writer, "/v1/calls/c-1").await, 401, "api_key_revoked");
    assert_eq!(up.calls(), 3);
}

async fn tenants(app: &TestApp, key: &str) -> (String, String) {
    let t1 = app.create_tenant(key, json!({"name": "Northwind Clinic"})).await;
    let t2 = app.create_tenant(key, json!({"name": "Southpark Dental"})).await;
    (str_of(&t1["id"]), str_of(&t2["id"]))
}

async fn the_tenant_comes_from_the_path_parameter(app: TestApp, up: Upstream) {
    let p = app.partner("Acme").await;
    let (t1, t2) = tenants(&app, &p.key).await;
    let (scoped, _, _) =
        key_with(&app, &p.key, json!({"scopes": ["extensions:read"], "tenant_ids": [t1.clone()]})).await;

    let r = app.get(&scoped, &format!("/v1/tenants/{t1}/extensions")).await;
    let e = echo(&r);
    assert_eq!(e["path"], format!("/v1/tenants/{t1}/extensions"));
    assert_eq!(seen(e, "x-keygate-tenant-id"), Some(t1.as_str()));
    assert_problem(&app.get(&scoped, &format!("/v1/tenants/{t2}/extensions")).await, 403, "tenant_not_allowed");

    // A partner-level key reaches every tenant of its account, and none of another's.
    let e = echo(&app.get(&p.key, &format!("/v1/tenants/{t2}/extensions")).await).clone();
    assert_eq!(seen(&e, "x-keygate-tenant-id"), Some(t2.as_str()));
    let other = app.partner("Globex").await;
    let (theirs, _) = tenants(&app, &other.key).await;
    assert_problem(&app.get(&p.key, &format!("/v1/tenants/{theirs}/extensions")).await, 403, "tenant_not_allowed");
    for unknown in ["ten_01JABCDEFGHJKMNPQRSTVWXYZ0", "northwind"] {
        let r = app.get(&p.key, &format!("/v1/tenants/{unknown}/extensions")).await;
        assert_problem(&r, 403, "tenant_not_allowed");
    }
    assert_eq!(up.calls(), 2);
}

async fn the_tenant_comes_from_the_x_tenant_id_header(app: TestApp, up: Upstream) {
    let p = app.partner("Acme").await;
    let (t1, t2) = tenants(&app, &p.key).await;
    let (scoped, _, _) =
        key_with(&app, &p.key, json!({"scopes": ["extensions:read"], "tenant_ids": [t1.clone()]})).await;
    let with_tenant = |key: &str, tenant: &str| {
        send(app.request(Method::GET, "/v1/extensions", key).header("x-tenant-id", tenant.to_owned()))
    };

    let e = echo(&with_tenant(&scoped, &t1).await).clone();
    assert_eq!(seen(&e, "x-keygate-tenant-id"), Some(t1.as_str()));
    assert_problem(&with_tenant(&scoped, &t2).await, 403, "tenant_not_allowed");
    assert_problem(&app.get(&scoped, "/v1/extensions").await, 403, "tenant_not_allowed");

    // A partner-level key: a tenant when it names one, none when it doesn't.
    let e = echo(&with_tenant(&p.key, &t2).await).clone();
    assert_eq!(seen(&e, "x-keygate-tenant-id"), Some(t2.as_str()));
    let e = echo(&app.get(&p.key, "/v1/extensions").await).clone();
    assert_eq!(seen(&e, "x-keygate-tenant-id"), None);
    assert_problem(&with_tenant(&p.key, "ten_01JABCDEFGHJKMNPQRSTVWXYZ0").await, 403, "tenant_not_allowed");
    assert_eq!(up.calls(), 3);
}

async fn a_tenant_scoped_key_cannot_call_a_route_without_a_tenant(app: TestApp, up: Upstream) {
    let p = app.partner("Acme").await;
    let (t1, _) = tenants(&app, &p.key).await;
    let (scoped, _, _) = key_with(&app, &p.key, json!({"scopes": ["calls:read"], "tenant_ids": [t1]})).await;
    assert_problem(&app.get(&scoped, "/v1/calls/c-1").await, 403, "tenant_not_allowed");
    assert_eq!(up.calls(), 0);
}

async fn a_suspended_tenant_is_refused(app: TestApp, up: Upstream) {
    let p = app.partner("Acme").await;
    let (t1, _) = tenants(&app, &p.key).await;
    let (scoped, _, _) =
        key_with(&app, &p.key, json!({"scopes": ["extensions:read"], "tenant_ids": [t1.clone()]})).await;
    let path = format!("/v1/tenants/{t1}/extensions");
    echo(&app.get(&scoped, &path).await);

    assert_eq!(app.post_empty(&p.key, &format!("/v1/tenants/{t1}/suspend")).await.status, 200);
    assert_problem(&app.get(&scoped, &path).await, 403, "tenant_suspended");
    assert_problem(&app.get(&p.key, &path).await, 403, "tenant_suspended");
    let by_header = send(app.request(Method::GET, "/v1/extensions", &p.key).header("x-tenant-id", &t1)).await;
    assert_problem(&by_header, 403, "tenant_suspended");
    assert_eq!(up.calls(), 1);

    assert_eq!(app.post_empty(&p.key, &format!("/v1/tenants/{t1}/unsuspend")).await.status, 200);
    echo(&app.get(&scoped, &path).await);
    assert_eq!(up.calls(), 2);
}

// ---------------------------------------------------------------------------------------------
// Rate limits
// ---------------------------------------------------------------------------------------------

async fn the_route_ip_limit_refuses_with_retry_after(app: TestApp, up: Upstream) {
    let p = app.partner("Acme").await;
    let (sender, _, _) = key_with(&app, &p.key, json!({"scopes": ["sms:send"]})).await;
    let sms = json!({"to": "+15555550100", "text": "hi"});
    for remaining in (0..3).rev() {
        let r = app.post(&sender, "/v1/sms/send", &sms).await;
        echo(&r);
        assert_eq!(r.header("ratelimit-policy"), Some("\"ip\";q=3;w=60"), "the route's IP limit is the tightest");
        assert_eq!(r.header("x-ratelimit-limit"), Some("3"));
        assert_eq!(header_u64(&r, "x-ratelimit-remaining"), remaining);
    }
    let refused = app.post(&sender, "/v1/sms/send", &sms).await;
    assert_problem(&refused, 429, "rate_limited");
    assert_eq!(refused.body["limit_scope"], "ip");
    assert_eq!(refused.body["limit"], 3);
    assert_eq!(refused.header("retry-after"), Some("20"), "3/min refills one every 20 s");
    // The limit is the client IP's on this route, whatever the key.
    assert_problem(&app.post(&p.key, "/v1/sms/send", &sms).await, 429, "rate_limited");
    assert_eq!(up.calls(), 3);
    // Another address has its own allowance; other routes are not limited by it.
    let other = app.client_from(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2)));
    echo(&send(other.post(app.url("/v1/sms/send")).bearer_auth(&sender).json(&sms)).await);
    echo(&app.post(&p.key, "/v1/calls", &json!({})).await);

    app.clock.advance(Duration::from_millis(19_999));
    let still = app.post(&sender, "/v1/sms/send", &sms).await;
    assert_problem(&still, 429, "rate_limited");
    assert_eq!(still.header("retry-after"), Some("1"));
    app.clock.advance(Duration::from_millis(1));
    echo(&app.post(&sender, "/v1/sms/send", &sms).await);
    assert_eq!(up.calls(), 6);
}

async fn rate_limit_headers_come_with_the_upstream_response(app: TestApp, _up: Upstream) {
    let p = app.partner("Acme").await;
    let (key, _, _) = key_with(&app, &p.key, json!({"rate_limit_per_minute": 50})).await;
    let now = app.clock.now_seconds();
    let r = app.get(&key, "/v1/calls/c-1").await;
    echo(&r);
    assert_eq!(r.header("x-ratelimit-limit"), Some("50"));
    assert_eq!(r.header("x-ratelimit-remaining"), Some("49"));
    assert_eq!(header_u64(&r, "x-ratelimit-reset"), now + 2, "50/min refills one every 1.2 s");
    assert_eq!(r.header("ratelimit-policy"), Some("\"key\";q=50;w=60"));
    assert_eq!(r.header("ratelimit"), Some("\"key\";r=49;t=2"));
    assert!(r.header("x-request-id").is_some_and(|id| id.starts_with("req_")), "{r:?}");
    let teapot = send(app.request(Method::POST, "/v1/teapot", &key)).await;
    assert_eq!(teapot.status, 418);
    assert_eq!(teapot.header("x-ratelimit-remaining"), Some("48"), "on any upstream status");
}

// ---------------------------------------------------------------------------------------------
// Bodies and upstream failures
// ---------------------------------------------------------------------------------------------

async fn a_body_over_the_gateway_limit_is_413(app: TestApp, up: Upstream) {
    let p = app.partner("Acme").await;
    // keygate answers from Content-Length without reading the body and closes: a loaded machine
    // can show the client its write failing (EPIPE) before the 413, so a few tries are allowed.
    let mut by_length = None;
    for _ in 0..20 {
        if let Ok(response) = app.request(Method::POST, "/v1/recordings", &p.key).body(pattern(4097)).send().await {
            let status = response.status().as_u16();
            let headers = response.headers().clone();
            let text = response.text().await.unwrap_or_default();
            let body = serde_json::from_str(&text).unwrap_or(Value::Null);
            by_length = Some(Resp { status, headers, body, text });
            break;
        }
    }
    let by_length = by_length.expect("one of the tries got an answer");
    assert_problem(&by_length, 413, "payload_too_large");
    assert_eq!(by_length.header("connection"), Some("close"), "the unread body makes the connection unusable");
    assert_eq!(up.calls(), 0, "refused from Content-Length before forwarding");

    let at_limit = send(app.request(Method::POST, "/v1/recordings", &p.key).body(pattern(4096))).await;
    assert_eq!(echo(&at_limit)["body_len"], 4096);

    // Over the limit with no Content-Length: refused while streaming. keygate answers before
    // reading the rest and closes the connection, so under load the client may see its write
    // fail (EPIPE) instead of the 413 (on a loaded machine, five tries in a row did once); at
    // least one of up to 50 attempts must show the 413, and every answer must be the 413.
    let mut refused = 0;
    for _ in 0..50 {
        if refused > 0 {
            break;
        }
        let request = app.request(Method::POST, "/v1/recordings", &p.key).body(Chunked::body(pattern(16 * 1024), 1024));
        match request.send().await {
            Ok(response) => {
                let status = response.status().as_u16();
                let headers = response.headers().clone();
                let text = response.text().await.unwrap_or_default();
                let body = serde_json::from_str(&text).unwrap_or(Value::Null);
                assert_problem(&Resp { status, headers, body, text }, 413, "payload_too_large");
                refused += 1;
            }
            Err(e) => assert!(e.is_request() || e.is_body(), "a transport error while sending: {e:?}"),
        }
    }
    assert!(refused > 0, "no attempt got the 413");
    assert_eq!(up.calls(), 1, "no part of an over-limit body of unknown length reached the upstream");
    let streamed_ok =
        send(app.request(Method::POST, "/v1/recordings", &p.key).body(Chunked::body(pattern(4000), 1000))).await;
    assert_eq!(echo(&streamed_ok)["body_sha256"], sha256_hex(&pattern(4000)));
}

async fn an_unreachable_upstream_is_502(app: TestApp, _up: Upstream) {
    let p = app.partner("Acme").await;
    let r = app.get(&p.key, "/v1/calls/c-1").await;
    assert_problem(&r, 502, "upstream_unavailable");
    // Still authenticated first.
    assert_problem(&send(app.client.get(app.url("/v1/calls/c-1"))).await, 401, "missing_api_key");
    assert_problem(&app.get(&p.key, "/v1/nothing-here").await, 404, "route_not_found");
}

async fn a_slow_upstream_is_504(app: TestApp, up: Upstream) {
    let p = app.partner("Acme").await;
    let started = Instant::now();
    let r = app.get(&p.key, "/v1/slow").await;
    let took = started.elapsed();
    assert_problem(&r, 504, "upstream_timeout");
    assert!(took < Duration::from_millis(1_500), "answered after the 300 ms timeout, not the 2 s upstream: {took:?}");
    assert_eq!(up.calls(), 1);
    // A fast route on the same server is unaffected.
    echo(&app.get(&p.key, "/v1/calls/c-1").await);
}

// ---------------------------------------------------------------------------------------------
// Idempotency
// ---------------------------------------------------------------------------------------------

async fn an_idempotent_retry_replays_without_calling_the_upstream(app: TestApp, up: Upstream) {
    let p = app.partner("Acme").await;
    let body = json!({"to": "+15555550100"});
    let first = post_idem(&app, &p.key, "/v1/calls", "call-1", &body).await;
    assert_eq!(echo(&first)["call"], 1);
    assert!(first.header("idempotent-replayed").is_none());
    let again = post_idem(&app, &p.key, "/v1/calls", "call-1", &body).await;
    assert_eq!(again.status, 200);
    assert_eq!(again.text, first.text, "byte-identical");
    assert_eq!(again.header("idempotent-replayed"), Some("true"));
    assert_eq!(again.header("content-type"), Some("application/json"));
    assert_eq!(again.header("x-upstream"), Some("yes"), "the upstream's own headers are replayed");
    let cookies: Vec<&str> = again.headers.get_all("set-cookie").iter().filter_map(|v| v.to_str().ok()).collect();
    assert_eq!(cookies, ["a=1", "b=2"], "repeated headers, in order");
    assert!(again.header("keep-alive").is_none(), "hop-by-hop headers are not");
    assert_ne!(again.header("x-request-id"), first.header("x-request-id"), "the retry has its own request id");
    assert_eq!(up.calls(), 1, "the upstream executed once");

    let reused = post_idem(&app, &p.key, "/v1/calls", "call-1", &json!({"to": "+15555550111"})).await;
    assert_problem(&reused, 422, "idempotency_key_reused");
    // Another account's same key executes its own request.
    let other = app.partner("Globex").await;
    let theirs = post_idem(&app, &other.key, "/v1/calls", "call-1", &body).await;
    assert_eq!(echo(&theirs)["call"], 2);
    assert!(theirs.header("idempotent-replayed").is_none());
    assert_eq!(up.calls(), 2);
}

async fn an_upstream_error_status_is_stored_and_replayed(app: TestApp, up: Upstream) {
    let p = app.partner("Acme").await;
    let first = send(app.request(Method::POST, "/v1/teapot", &p.key).header("idempotency-key", "brew")).await;
    assert_eq!(first.status, 418);
    assert_eq!(first.text, "short and stout, call 1");
    let again = send(app.request(Method::POST, "/v1/teapot", &p.key).header("idempotency-key", "brew")).await;
    assert_eq!(again.status, 418);
    assert_eq!(again.text, first.text);
    assert_eq!(again.header("idempotent-replayed"), Some("true"));
    assert_eq!(up.calls(), 1);
}

async fn routes_not_marked_idempotent_execute_every_time(app: TestApp, up: Upstream) {
    let p = app.partner("Acme").await;
    for call in 1..=2 {
        let r = post_idem(&app, &p.key, "/v1/messages", "m-1", &json!({"text": "hi"})).await;
        assert_eq!(echo(&r)["call"], call);
        assert!(r.header("idempotent-replayed").is_none());
    }
    for call in 3..=4 {
        let r = send(app.request(Method::GET, "/v1/calls/c-1", &p.key).header("idempotency-key", "g-1")).await;
        assert_eq!(echo(&r)["call"], call);
        assert!(r.header("idempotent-replayed").is_none());
    }
    assert_eq!(up.calls(), 4);
}

async fn a_502_is_not_stored_and_the_retry_executes(app: TestApp, up: Upstream) {
    let p = app.partner("Acme").await;
    let body = json!({"to": "+15555550100"});
    let failed = post_idem(&app, &p.key, "/v1/calls", "retry-me", &body).await;
    assert_problem(&failed, 502, "upstream_unavailable");
    let still = post_idem(&app, &p.key, "/v1/calls", "retry-me", &body).await;
    assert_problem(&still, 502, "upstream_unavailable");
    assert!(still.header("idempotent-replayed").is_none(), "a 502 before reaching the upstream is not replayed");

    // The upstream comes up on that port: the retry executes, and only then is it stored.
    let live = up.open();
    let executed = post_idem(&app, &p.key, "/v1/calls", "retry-me", &body).await;
    assert_eq!(echo(&executed)["call"], 1);
    assert!(executed.header("idempotent-replayed").is_none());
    let replayed = post_idem(&app, &p.key, "/v1/calls", "retry-me", &body).await;
    assert_eq!(replayed.text, executed.text);
    assert_eq!(replayed.header("idempotent-replayed"), Some("true"));
    assert_eq!(live.calls(), 1);
}

async fn a_504_after_the_upstream_began_is_stored(app: TestApp, up: Upstream) {
    let p = app.partner("Acme").await;
    let first = send(app.request(Method::POST, "/v1/slow", &p.key).header("idempotency-key", "slow-1")).await;
    assert_problem(&first, 504, "upstream_timeout");
    assert_eq!(up.calls(), 1);
    let again = send(app.request(Method::POST, "/v1/slow", &p.key).header("idempotency-key", "slow-1")).await;
    assert_eq!(again.status, 504);
    assert_eq!(again.text, first.text, "the stored 504 is replayed: the upstream may have acted");
    assert_eq!(again.header("idempotent-replayed"), Some("true"));
    assert_eq!(up.calls(), 1, "a retry never executes twice");
}

// ---------------------------------------------------------------------------------------------
// keygate's own endpoints
// ---------------------------------------------------------------------------------------------

async fn keygate_serves_its_own_endpoints_itself(app: TestApp, up: Upstream) {
    let p = app.partner("Acme").await;
    let keys = app.get(&p.key, "/v1/api-keys").await;
    assert_eq!(keys.status, 200, "{keys:?}");
    assert!(keys.header("x-upstream").is_none());
    assert_eq!(common::list_data(keys.body).len(), 1);
    let (t1, _) = tenants(&app, &p.key).await;
    let tenant = app.get(&p.key, &format!("/v1/tenants/{t1}")).await;
    assert_eq!(tenant.status, 200, "{tenant:?}");
    assert_eq!(tenant.body["id"], t1);
    assert_eq!(app.get(&p.key, "/v1/account").await.status, 200);
    let verified = app.post(&app.operator_key, "/v1/verify", &json!({"key": p.key})).await;
    assert_eq!(verified.body["valid"], true, "{verified:?}");
    assert_problem(&app.get(&p.key, "/v1/api-keys/key_01JABCDEFGHJKMNPQRSTVWXYZ0").await, 404, "not_found");
    assert_eq!(up.calls(), 0, "none of these was proxied");
}

/// A route whose parameter also matches one of keygate's own paths never takes that path, under
/// any method: the own endpoint answers (its data, its 405), the upstream sees nothing of it.
async fn own_endpoints_win_over_a_route_parameter(app: TestApp, up: Upstream) {
    let p = app.partner("Acme").await;
    let account = app.get(&p.key, "/v1/account").await;
    assert_eq!(account.status, 200, "{account:?}");
    assert!(account.header("x-upstream").is_none(), "{account:?}");
    assert_eq!(account.body["name"], "Acme", "{account:?}");
    let usage = app.get(&p.key, "/v1/usage").await;
    assert_eq!(usage.status, 200, "{usage:?}");
    assert!(usage.header("x-upstream").is_none(), "{usage:?}");
    assert_problem(&app.get(&p.key, "/v1/verify").await, 405, "method_not_allowed");
    assert_eq!(up.calls(), 0, "none of keygate's own paths was proxied");
    let forwarded = app.get(&p.key, "/v1/widgets").await;
    assert_eq!(seen(echo(&forwarded), "x-keygate-scopes"), Some("*"), "{forwarded:?}");
    assert_eq!(up.calls(), 1);
}

// ---------------------------------------------------------------------------------------------
// Configuration
// ---------------------------------------------------------------------------------------------

fn config_with(gateway: GatewayConfig) -> Config {
    Config {
        hash_secret: Some(keygate::config::SecretString::new(common::HASH_SECRET.into())),
        gateway: Some(gateway),
        ..Config::default()
    }
}

fn two_good_routes(extra: RouteConfig) -> GatewayConfig {
    GatewayConfig {
        upstream: "http://127.0.0.1:9000".into(),
        routes: vec![
            route("POST", "/v1/calls", "calls:write"),
            route("GET", "/v1/calls/{call_id}", "calls:read"),
            extra,
        ],
        ..GatewayConfig::default()
    }
}

#[test]
fn the_spec_example_and_the_test_routes_are_valid() {
    let spec = GatewayConfig {
        upstream: "http://127.0.0.1:9000".into(),
        routes: vec![
            RouteConfig {
                idempotent: Some(true),
                ip_rate_limit_per_minute: Some(30),
                ..route("POST", "/v1/sms/send", "sms:send")
            },
            RouteConfig {
                tenant: Some("tenant_id".into()),
                ..route("GET", "/v1/tenants/{tenant_id}/extensions", "extensions:read")
            },
        ],
        ..GatewayConfig::default()
    };
    if let Err(e) = config_with(spec).validate() {
        panic!("the SPEC's example is refused: {e:?}");
    }
    if let Err(e) = config_with(gateway_config("http://127.0.0.1:9000")).validate() {
        panic!("the test routes are refused: {e:?}");
    }
}

#[test]
fn gateway_defaults_and_unknown_fields() {
    let g: GatewayConfig = serde_json::from_value(json!({
        "upstream": "http://127.0.0.1:9000",
        "routes": [{"method": "POST", "path": "/v1/sms/send", "scope": "sms:send"}],
    }))
    .expect("a minimal gateway");
    assert_eq!((g.connect_timeout_ms, g.timeout_ms, g.max_body_bytes), (2_000, 30_000, 10 * 1024 * 1024));
    assert_eq!(g.routes[0].tenant, None);
    assert_eq!(g.routes[0].idempotent, None);
    assert_eq!(g.routes[0].ip_rate_limit_per_minute, None);
    let unknown = serde_json::from_value::<GatewayConfig>(json!({"upstream": "http://x", "retries": 3}));
    assert!(unknown.is_err(), "unknown gateway fields are refused");
    let unknown_in_route = serde_json::from_value::<GatewayConfig>(json!({
        "upstream": "http://x",
        "routes": [{"method": "GET", "path": "/v1/x", "scope": "calls:read", "cache": true}],
    }));
    assert!(unknown_in_route.is_err(), "unknown route fields are refused");
}

#[test]
fn an_invalid_route_is_refused_naming_it() {
    let cases = [
        ("a bad method", route("GET POST", "/v1/x", "calls:read")),
        ("a path outside /v1/", route("GET", "/v2/x", "calls:read")),
        ("a path outside /v1/", route("GET", "/admin", "calls:read")),
        ("a duplicate route", route("POST", "/v1/calls", "calls:write")),
        ("a route shadowing another", route("GET", "/v1/calls/{id}", "calls:read")),
        ("keygate's own endpoint", route("GET", "/v1/api-keys", "calls:read")),
        ("keygate's own endpoint", route("POST", "/v1/verify", "calls:read")),
        ("keygate's own endpoint", route("GET", "/v1/tenants/{tenant_id}", "tenants:read")),
        ("an unknown scope", route("GET", "/v1/x", "nope:read")),
        (
            "a tenant parameter the path lacks",
            RouteConfig { tenant: Some("tenant_id".into()), ..route("GET", "/v1/x/{id}", "calls:read") },
        ),
    ];
    for (what, bad) in cases {
        let named = format!("routes[2] ({} {})", bad.method, bad.path);
        let errors = match config_with(two_good_routes(bad)).validate() {
            Ok(_) => panic!("{what} ({named}) is accepted"),
            Err(e) => e,
        };
        assert!(
            errors.iter().any(|m| m.contains("gateway") && m.contains(&named)),
            "{what}: {named} not named in {errors:?}"
        );
    }
}

#[test]
fn a_bad_upstream_is_refused_and_every_problem_is_reported() {
    for upstream in ["ftp://127.0.0.1:21", "127.0.0.1:9000", "", "http://user:secret@127.0.0.1:9000"] {
        let g = GatewayConfig { upstream: upstream.into(), ..two_good_routes(route("GET", "/v1/x", "calls:read")) };
        let errors = config_with(g).validate().err().unwrap_or_else(|| panic!("upstream `{upstream}` accepted"));
        assert!(errors.iter().any(|m| m.contains("upstream")), "`{upstream}`: {errors:?}");
        assert!(errors.iter().all(|m| !m.contains("secret")), "a password is not repeated: {errors:?}");
    }
    let g = GatewayConfig {
        upstream: "http://127.0.0.1:9000".into(),
        routes: vec![
            route("GET", "/v2/x", "calls:read"),
            route("GET", "/v1/y", "nope:read"),
            route("GET", "/v1/z", "calls:read"),
            RouteConfig { tenant: Some("t".into()), ..route("GET", "/v1/w", "calls:read") },
        ],
        ..GatewayConfig::default()
    };
    let errors = config_with(g).validate().err().unwrap_or_default();
    for named in ["routes[0] (GET /v2/x)", "routes[1] (GET /v1/y)", "routes[3] (GET /v1/w)"] {
        assert!(errors.iter().any(|m| m.contains(named)), "{named} in {errors:?}");
    }
    assert!(!errors.iter().any(|m| m.contains("routes[2]")), "{errors:?}");
}

// ---------------------------------------------------------------------------------------------
// More edges
// ---------------------------------------------------------------------------------------------

async fn repeated_headers_pass_both_ways(app: TestApp, _up: Upstream) {
    let p = app.partner("Acme").await;
    let r = send(app.request(Method::GET, "/v1/calls/c-1", &p.key).header("x-multi", "a").header("x-multi", "b")).await;
    assert_eq!(seen(echo(&r), "x-multi"), Some("a, b"), "both values forwarded");
    let cookies: Vec<&str> = r.headers.get_all("set-cookie").iter().filter_map(|v| v.to_str().ok()).collect();
    assert_eq!(cookies, ["a=1", "b=2"], "both of the upstream's values come back");
}

async fn headers_named_in_connection_are_not_forwarded(app: TestApp, _up: Upstream) {
    let p = app.partner("Acme").await;
    let r = send(
        app.request(Method::GET, "/v1/calls/c-1", &p.key)
            .header("connection", "x-hop-only")
            .header("x-hop-only", "1")
            .header("x-end-to-end", "1"),
    )
    .await;
    let e = echo(&r);
    assert_eq!(seen(e, "x-end-to-end"), Some("1"));
    assert_eq!(seen(e, "x-hop-only"), None, "a header named in Connection is hop-by-hop (RFC 9110 7.6.1)");
}

async fn the_key_limit_refuses_before_the_upstream(app: TestApp, up: Upstream) {
    let p = app.partner("Acme").await;
    let (key, _, _) = key_with(&app, &p.key, json!({"rate_limit_per_minute": 2})).await;
    echo(&app.get(&key, "/v1/calls/c-1").await);
    echo(&app.get(&key, "/v1/calls/c-1").await);
    let refused = app.get(&key, "/v1/calls/c-1").await;
    assert_problem(&refused, 429, "rate_limited");
    assert_eq!(refused.body["limit_scope"], "key");
    assert_eq!(refused.header("retry-after"), Some("30"));
    assert_eq!(up.calls(), 2);
}

async fn concurrent_duplicates_reach_the_upstream_once(app: TestApp, up: Upstream) {
    let p = app.partner("Acme").await;
    // The upstream takes 2 s: every duplicate arrives while the first is running.
    let requests: Vec<_> =
        (0..6).map(|_| send(app.request(Method::POST, "/v1/slow", &p.key).header("idempotency-key", "dup"))).collect();
    let results = common::join_all(requests).await;
    let executed: Vec<&Resp> = results.iter().filter(|r| r.status == 200).collect();
    assert_eq!(executed.len(), 1, "{results:?}");
    for r in results.iter().filter(|r| r.status != 200) {
        assert_problem(r, 409, "idempotency_in_progress");
    }
    let replay = send(app.request(Method::POST, "/v1/slow", &p.key).header("idempotency-key", "dup")).await;
    assert_eq!(replay.text, executed[0].text);
    assert_eq!(replay.header("idempotent-replayed"), Some("true"));
    assert_eq!(up.calls(), 1);
}

async fn the_query_is_part_of_the_fingerprint(app: TestApp, up: Upstream) {
    let p = app.partner("Acme").await;
    let body = json!({"to": "+15555550100"});
    echo(&post_idem(&app, &p.key, "/v1/calls?attempt=1", "q", &body).await);
    let other_query = post_idem(&app, &p.key, "/v1/calls?attempt=2", "q", &body).await;
    assert_problem(&other_query, 422, "idempotency_key_reused");
    let other_route = post_idem(&app, &p.key, "/v1/messages", "q", &body).await;
    assert!(other_route.header("idempotent-replayed").is_none(), "{other_route:?}");
    assert_eq!(up.calls(), 2, "the first call, and the route that is not idempotent");
}

async fn the_timeout_ends_at_the_headers_and_the_response_streams(app: TestApp, _up: Upstream) {
    let p = app.partner("Acme").await;
    let started = Instant::now();
    let mut response = app.request(Method::GET, "/v1/drip", &p.key).send().await.expect("the server answers");
    assert_eq!(response.status().as_u16(), 200, "headers came within the 300 ms timeout; the body may take longer");
    let first = response.chunk().await.expect("a readable body").expect("a first chunk");
    let first_at = started.elapsed();
    assert_eq!(&first[..], b"first\n");
    assert!(
        first_at < DRIP - Duration::from_millis(200),
        "the first chunk is passed on at once, not buffered: {first_at:?}"
    );
    let mut rest = Vec::new();
    while let Some(chunk) = response.chunk().await.expect("a readable body") {
        rest.extend_from_slice(&chunk);
    }
    assert_eq!(rest, b"second\n");
    assert!(started.elapsed() >= DRIP, "the second chunk came when the upstream sent it");
}

async fn the_forwarded_for_is_the_client_ip_a_trusted_proxy_names(app: TestApp, _up: Upstream) {
    let p = app.partner("Acme").await;
    let r = send(app.request(Method::GET, "/v1/calls/c-1", &p.key).header("x-forwarded-for", "198.51.100.7")).await;
    assert_eq!(seen(echo(&r), "x-forwarded-for"), Some("198.51.100.7"), "the client's IP, as the trusted proxy said");
    // The per-IP route limit counts that client, not the proxy.
    let sms = json!({"to": "+15555550100"});
    for _ in 0..3 {
        echo(
            &send(
                app.request(Method::POST, "/v1/sms/send", &p.key).header("x-forwarded-for", "198.51.100.7").json(&sms),
            )
            .await,
        );
    }
    let refused =
        send(app.request(Method::POST, "/v1/sms/send", &p.key).header("x-forwarded-for", "198.51.100.7").json(&sms))
            .await;
    assert_problem(&refused, 429, "rate_limited");
    assert_eq!(refused.body["limit_scope"], "ip");
    echo(
        &send(app.request(Method::POST, "/v1/sms/send", &p.key).header("x-forwarded-for", "198.51.100.8").json(&sms))
            .await,
    );
}

async fn a_binary_response_is_replayed_byte_for_byte(app: TestApp, up: Upstream) {
    let p = app.partner("Acme").await;
    let size = 100_000;
    let request =
        || app.request(Method::POST, &format!("/v1/recordings/{size}"), &p.key).header("idempotency-key", "bin");
    let (status, _, first) = send_bytes(request()).await;
    assert_eq!(status, 200);
    assert_eq!(first, pattern(size));
    let (status, headers, again) = send_bytes(request()).await;
    assert_eq!(status, 200);
    assert_eq!(headers.get("idempotent-replayed").map(|v| v.as_bytes()), Some(&b"true"[..]));
    assert!(again == first, "the replay is byte-identical ({} bytes vs {})", again.len(), first.len());
    assert_eq!(up.calls(), 1);
}

async fn a_response_too_large_to_keep_still_arrives_and_is_never_executed_twice(app: TestApp, up: Upstream) {
    let p = app.partner("Acme").await;
    let size = keygate_http::idempotency::MAX_STORED_RESPONSE_BYTES + 1;
    let request =
        || app.request(Method::POST, &format!("/v1/recordings/{size}"), &p.key).header("idempotency-key", "huge");
    let (status, headers, first) = send_bytes(request()).await;
    assert_eq!(status, 200);
    assert!(first == pattern(size), "the client gets the whole response ({} bytes of {size})", first.len());
    assert!(headers.get("idempotent-replayed").is_none());

    // A stored note, replayed as stored: a problem document without a request id of its own.
    let again = send(request()).await;
    assert_eq!((again.status, str_of(&again.body["code"])), (409, "conflict".to_owned()), "{again:?}");
    assert_eq!(again.header("content-type"), Some("application/problem+json"));
    assert_eq!(again.header("idempotent-replayed"), Some("true"));
    let detail = str_of(&again.body["detail"]);
    assert!(detail.contains("completed with status 200") && detail.contains("not be executed again"), "{detail}");
    assert_eq!(up.calls(), 1, "the upstream executed once");
}

async fn an_upstream_breaking_off_does_not_wedge_the_idempotency_key(app: TestApp, up: Upstream) {
    let p = app.partner("Acme").await;
    let request = || app.request(Method::POST, "/v1/broken", &p.key).header("idempotency-key", "broken");
    let first = send(request()).await;
    assert!(first.status >= 500, "{first:?}");
    let again = send(request()).await;
    assert_ne!(again.status, 409, "the key is not left in progress for its whole retention: {again:?}");
    assert_eq!(again.status, first.status, "{again:?}");
    assert_eq!(again.header("idempotent-replayed"), Some("true"), "execution began: the outcome is stored");
    assert_eq!(up.calls(), 1);
}

// only_appid_is_removed_and_the_rest_of_the_query_is_kept_as_sent);

async fn only_appid_is_removed_and_the_rest_of_the_query_is_kept_as_sent(app: TestApp, _up: Upstream) {
    let p = app.partner("Acme").await;
    let r =
        send(app.client.get(app.url(&format!("/v1/calls/c-1?flag&b=two%20words&appid={}&c=%7E&d=1+2", p.key)))).await;
    assert_eq!(echo(&r)["query"], "flag&b=two%20words&c=%7E&d=1+2", "byte for byte, but for appid");
}

// ---------------------------------------------------------------------------------------------
// Security review (SPEC §6, §10): what the upstream can be tricked into
// ---------------------------------------------------------------------------------------------

/// Sends `request` (a whole HTTP/1.1 request head, `Connection: close`) over a raw socket, as
/// `curl --path-as-is` would: no client library normalises the target. Returns the status and the
/// whole response text.
async fn raw(app: &TestApp, request: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = app.base_url.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect to keygate");
    stream.write_all(request.as_bytes()).await.expect("send the request");
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut buf)).await;
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status = text.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    (status, text)
}

fn get_as_is(target: &str, key: &str) -> String {
    format!("GET {target} HTTP/1.1\r\nHost: keygate\r\nAuthorization: Bearer {key}\r\nConnection: close\r\n\r\n")
}

async fn dot_segments_and_odd_targets_are_refused_before_anything(app: TestApp, up: Upstream) {
    let p = app.partner("Acme").await;
    let (calls_reader, _, _) = key_with(&app, &p.key, json!({"scopes": ["calls:read"]})).await;
    // What the key may do, as a control.
    let (status, _) = raw(&app, &get_as_is("/v1/calls/c-1/recording", &calls_reader)).await;
    assert_eq!(status, 200);
    let (status, text) = raw(&app, &get_as_is("/v1/recording", &calls_reader)).await;
    assert_eq!(status, 403, "{text}");
    assert_eq!(up.calls(), 1);

    for target in [
        "/v1/calls/../recording",
        "/v1/calls/%2e%2e/recording",
        "/v1/calls/%2E%2E/recording",
        "/v1/calls/.%2e/recording",
        "/v1/calls/%252e%252e/recording",
        "/v1/calls/..;/recording",
        "/v1/calls/./c-1/recording",
        "/v1/calls/c-1/../../recording",
        "/v1/calls%2f..%2frecording",
        "/v1/calls/c-1%2F..%2F..%2Frecording",
        "/v1/calls/c-1%5c..%5crecording",
        "/v1/files/a/../../recording",
        "/v1/files/%2e%2e/%2e%2e/recording",
        "/v1//recording",
        "/v1/calls/c-1%00/recording",
        "/v1/calls/c-1/%72ecording",
        "/v1/calls/c-1/rec%6Frding",
        "/v1/calls/c-1/recording;x=1",
        "/v1/calls/%c0%ae%c0%ae/recording",
    ] {
        for key in [&calls_reader, &p.key] {
            let (status, text) = raw(&app, &get_as_is(target, key)).await;
            assert_eq!(status, 400, "{target}: {text}");
            assert!(text.contains(r#""code":"invalid_request""#), "{target}: {text}");
        }
    }
    // Absolute form: refused, whatever host it names.
    let absolute = format!("{}/v1/calls/c-1", app.base_url);
    let (status, text) = raw(&app, &get_as_is(&absolute, &calls_reader)).await;
    assert_eq!(status, 400, "{text}");
    assert!(text.contains(r#""code":"invalid_request""#), "{text}");
    // A catch-all parameter serves its own canonical paths.
    let (status, text) = raw(&app, &get_as_is("/v1/files/a/b.txt", &calls_reader)).await;
    assert_eq!(status, 200, "{text}");
    assert!(text.contains(r#""path":"/v1/files/a/b.txt""#), "{text}");
    assert_eq!(up.calls(), 2, "no refused target reached the upstream");
}

async fn two_tenant_headers_are_refused(app: TestApp, up: Upstream) {
    let p = app.partner("Acme").await;
    let (t1, t2) = tenants(&app, &p.key).await;
    let (scoped, _, _) =
        key_with(&app, &p.key, json!({"scopes": ["extensions:read"], "tenant_ids": [t1.clone()]})).await;
    for key in [&scoped, &p.key] {
        for (a, b) in [(&t1, &t2), (&t1, &t1)] {
            let r = send(
                app.request(Method::GET, "/v1/extensions", key)
                    .header("x-tenant-id", a.as_str())
                    .header("x-tenant-id", b.as_str()),
            )
            .await;
            assert_problem(&r, 400, "invalid_request");
        }
    }
    // A path tenant and a header naming another tenant: refused too; the same one is fine.
    let path = format!("/v1/tenants/{t1}/extensions");
    let r = send(app.request(Method::GET, &path, &scoped).header("x-tenant-id", t2.as_str())).await;
    assert_problem(&r, 400, "invalid_request");
    assert_eq!(up.calls(), 0);
    let r = send(app.request(Method::GET, &path, &scoped).header("x-tenant-id", t1.as_str())).await;
    assert_eq!(seen(echo(&r), "x-keygate-tenant-id"), Some(t1.as_str()));
    assert_eq!(up.calls(), 1);
}

async fn headers_an_upstream_trusts_are_removed(app: TestApp, _up: Upstream) {
    let p = app.partner("Acme").await;
    let (reader, _, _) = key_with(&app, &p.key, json!({"scopes": ["calls:read"]})).await;
    let trusted = [
        ("x-http-method-override", "DELETE"),
        ("x-http-method", "DELETE"),
        ("x-method-override", "DELETE"),
        ("forwarded", "for=1.2.3.4;host=admin.internal;proto=https"),
        ("x-real-ip", "1.2.3.4"),
        ("x-forwarded-host", "admin.internal"),
        ("x-forwarded-proto", "https"),
        ("x-forwarded-port", "443"),
        ("x-forwarded-prefix", "/admin"),
        ("x-original-url", "/v1/admin"),
        ("x-rewrite-url", "/v1/admin"),
        ("x-client-ip", "1.2.3.4"),
        ("true-client-ip", "1.2.3.4"),
        ("x-forwarded-user", "admin"),
        ("x-forwarded-uri", "/v1/admin"),
        ("x-original-method", "DELETE"),
        ("x-envoy-original-path", "/v1/admin"),
        ("remote-user", "admin"),
        // CGI and WSGI read `_` as `-`: these would alias keygate's own headers.
        ("x_keygate_tenant_id", "ten_forged"),
        ("x_keygate_scopes", "*"),
        ("x_tenant_id", "ten_forged"),
        ("x_real_ip", "6.6.6.6"),
        ("x_api_key", "sk_live_forged"),
    ];
    // The dashboard's session cookie is `Path=/` over https: a browser sends it here too.
    let mut request = app
        .request(Method::GET, "/v1/calls/c-1", &reader)
        .header("x-kept", "1")
        .header("cookie", "theme=dark; __Host-keygate_session=0123456789abcdef; keygate_sign_in=x");
    for (name, value) in trusted {
        request = request.header(name, value);
    }
    let r = send(request).await;
    let e = echo(&r);
    for (name, _) in trusted {
        assert_eq!(seen(e, name), None, "{name} must not reach the upstream");
    }
    assert_eq!(seen(e, "x-kept"), Some("1"), "other headers pass");
    assert_eq!(seen(e, "cookie"), Some("theme=dark"), "keygate's own cookies never reach the upstream");
    assert_eq!(e["method"], "GET");
    assert_eq!(seen(e, "x-forwarded-for"), Some("127.0.0.1"), "keygate's own");
    assert_eq!(seen(e, "x-keygate-scopes"), Some("calls:read"), "keygate's own, alone");
    assert!(e["headers"].as_object().is_some_and(|h| h.keys().all(|k| !k.contains('_'))), "{e}");
    // The upstream's answer keeps its own caching headers; keygate's refusals are no-store.
    assert_eq!(r.header("cache-control"), None);
    let refused = app.get(&reader, "/v1/recording").await;
    assert_problem(&refused, 403, "insufficient_scope");
    assert_eq!(refused.header("cache-control"), Some("no-store"));
    for r in [app.get(&reader, "/v1/nothing").await, send(app.request(Method::PUT, "/v1/calls/c-1", &reader)).await] {
        assert_eq!(r.header("cache-control"), Some("no-store"), "{r:?}");
    }
}

async fn the_credential_leaves_the_query_whichever_source_carried_it(app: TestApp, _up: Upstream) {
    let p = app.partner("Acme").await;
    // The same key in the header and the query: one credential, and the query loses it.
    let r = send(app.request(Method::GET, &format!("/v1/calls/c-1?appid={}&page=2", p.key), &p.key)).await;
    assert_eq!(echo(&r)["query"], "page=2");
    let r = send(app.client.get(app.url(&format!("/v1/calls/c-1?page=2&appid={}", p.key))).header("x-api-key", &p.key))
        .await;
    assert_eq!(echo(&r)["query"], "page=2");
    // Under any other parameter name, encoded or not, the key is removed too.
    let encoded = p.key.replace('_', "%5F");
    let r = send(app.request(Method::GET, &format!("/v1/calls/c-1?token={encoded}&page=3"), &p.key)).await;
    assert_eq!(echo(&r)["query"], "page=3");
    // Inside a longer value or as a name, too.
    let query = format!("x=Bearer%20{}&y={}%0A&{}=1&page=4", p.key, p.key, p.key);
    let r = send(app.request(Method::GET, &format!("/v1/calls/c-1?{query}"), &p.key)).await;
    assert_eq!(echo(&r)["query"], "page=4");
    let e = echo(&r);
    assert!(!e.to_string().contains(&p.key), "the plaintext reached the upstream: {e}");
}

async fn a_replay_never_crosses_tenants_or_keys(app: TestApp, up: Upstream) {
    let p = app.partner("Acme").await;
    let (t1, t2) = tenants(&app, &p.key).await;
    let (k1, _, _) = key_with(&app, &p.key, json!({"scopes": ["faxes:write"], "tenant_ids": [t1.clone()]})).await;
    let (k2, _, _) = key_with(&app, &p.key, json!({"scopes": ["faxes:write"], "tenant_ids": [t2.clone()]})).await;
    let body = json!({"to": "+15555550100"});
    // Through X-Tenant-Id on a route without a path tenant.
    let post = |key: &str, tenant: &str| {
        send(
            app.request(Method::POST, "/v1/faxes", key)
                .header("idempotency-key", "fax-1")
                .header("x-tenant-id", tenant.to_owned())
                .json(&body),
        )
    };
    let first = post(&k1, &t1).await;
    assert_eq!(echo(&first)["call"], 1);
    assert_problem(&post(&k2, &t2).await, 422, "idempotency_key_reused");
    // The partner-level key (another principal) for the same tenant, and for the other one.
    assert_problem(&post(&p.key, &t1).await, 422, "idempotency_key_reused");
    assert_problem(&post(&p.key, &t2).await, 422, "idempotency_key_reused");
    let replay = post(&k1, &t1).await;
    assert_eq!((replay.header("idempotent-replayed"), replay.text.clone()), (Some("true"), first.text.clone()));
    assert_eq!(up.calls(), 1);
    // Through the path tenant: the same key for two tenants.
    let via_path = |tenant: &str| {
        send(
            app.request(Method::POST, &format!("/v1/tenants/{tenant}/faxes"), &p.key)
                .header("idempotency-key", "fax-2")
                .json(&body),
        )
    };
    echo(&via_path(&t1).await);
    assert_problem(&via_path(&t2).await, 422, "idempotency_key_reused");
    assert_eq!(up.calls(), 2);
}

async fn ipv6_clients_of_one_network_share_the_route_ip_limit(app: TestApp, up: Upstream) {
    let p = app.partner("Acme").await;
    let (sender, _, _) = key_with(&app, &p.key, json!({"scopes": ["sms:send"]})).await;
    let sms = json!({"to": "+15555550100", "text": "hi"});
    let from =
        |ip: String| send(app.request(Method::POST, "/v1/sms/send", &sender).header("x-forwarded-for", ip).json(&sms));
    let mut statuses = Vec::new();
    for i in 1..=8 {
        statuses.push(from(format!("2001:db8:1:2::{i:x}:{i:x}")).await.status);
    }
    assert_eq!(statuses, [200, 200, 200, 429, 429, 429, 429, 429], "one /64 is one client");
    // Another /64 has its own allowance; so does an IPv4 client, by its address.
    assert_eq!(from("2001:db8:1:3::1".into()).await.status, 200);
    assert_eq!(from("203.0.113.7".into()).await.status, 200);
    assert_eq!(up.calls(), 5);
}

async fn the_request_log_keeps_the_route_not_the_path(app: TestApp, _up: Upstream) {
    let p = app.partner("Acme").await;
    let pasted = app.create_key(&p.key, json!({"name": "pasted"})).await;
    let secret = str_of(&pasted["key"]);
    echo(&app.get(&p.key, &format!("/v1/calls/{secret}")).await);
    let (records, _) = common::poll(Duration::from_secs(5), Duration::from_millis(50), || async {
        let list = app.get(&p.key, "/v1/requests?limit=100").await.expect_status(200);
        let data = common::list_data(list);
        data.iter().any(|r| r["route"] == "/v1/calls/{call_id}").then_some(data)
    })
    .await
    .expect("the gateway request is in the request log");
    let text = serde_json::to_string(&records).expect("json");
    assert!(!text.contains(&secret), "the pasted key is not in the request log: {text}");
}

/// RFC 9110 §15.5.6: a 405 lists the methods the path has; HEAD is served wherever GET is.
async fn a_405_says_what_is_allowed_and_head_is_served_by_get(app: TestApp, up: Upstream) {
    let p = app.partner("Acme").await;
    let put = send(app.request(Method::PUT, "/v1/calls/c-1", &p.key)).await;
    assert_problem(&put, 405, "method_not_allowed");
    assert_eq!(put.header("allow"), Some("GET, DELETE, HEAD"), "{put:?}");
    let get_only = send(app.request(Method::POST, "/v1/recording", &p.key)).await;
    assert_problem(&get_only, 405, "method_not_allowed");
    assert_eq!(get_only.header("allow"), Some("GET, HEAD"));
    let post_only = send(app.request(Method::GET, "/v1/sms/send", &p.key)).await;
    assert_eq!(post_only.header("allow"), Some("POST"));
    assert_eq!(up.calls(), 0);

    let head = app.request(Method::HEAD, "/v1/calls/c-1", &p.key).send().await.expect("the server answers");
    assert_eq!(head.status(), 200);
    assert_eq!(head.headers().get("x-upstream").map(|v| v.as_bytes()), Some(&b"yes"[..]), "forwarded as HEAD");
    assert_eq!(up.calls(), 1);
    // The GET route's scope applies to HEAD.
    let (sender, _, _) = key_with(&app, &p.key, json!({"scopes": ["sms:send"]})).await;
    let refused = app.request(Method::HEAD, "/v1/calls/c-1", &sender).send().await.expect("the server answers");
    assert_eq!(refused.status(), 403);
    assert_eq!(up.calls(), 1);
}

/// An upstream on a raw socket that answers each request on a connection with
/// `{"connection": n, "host": …}` (keep-alive) and closes a connection left idle for
/// [`IDLE_CLOSE`], as an upstream's keep-alive timeout does.
async fn closing_upstream() -> SocketAddr {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind the upstream");
    let addr = listener.local_addr().expect("a local address");
    tokio::spawn(async move {
        let mut accepted = 0;
        while let Ok((mut stream, _)) = listener.accept().await {
            accepted += 1;
            let connection = accepted;
            tokio::spawn(async move {
                let mut buf = Vec::new();
                loop {
                    let mut chunk = [0; 4096];
                    let read = if buf.is_empty() {
                        match tokio::time::timeout(IDLE_CLOSE, stream.read(&mut chunk)).await {
                            Ok(read) => read,
                            Err(_) => return, // idle too long: closed
                        }
                    } else {
                        stream.read(&mut chunk).await
                    };
                    let Ok(n @ 1..) = read else { return };
                    buf.extend_from_slice(&chunk[..n]);
                    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else { continue };
                    let head = String::from_utf8_lossy(&buf[..end]).into_owned();
                    buf.drain(..end + 4);
                    let host = head
                        .lines()
                        .find_map(|l| l.split_once(':').filter(|(n, _)| n.eq_ignore_ascii_case("host")))
                        .map_or("", |(_, v)| v.trim());
                    let body = json!({"connection": connection, "host": host}).to_string();
                    let response = format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
                        body.len()
                    );
                    if stream.write_all(response.as_bytes()).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}

const IDLE_CLOSE: Duration = Duration::from_millis(150);

/// The upstream pool: connections are kept alive and reused, every request names the upstream in
/// `Host`, and a connection the upstream closed while idle is replaced, not answered with a 502.
async fn upstream_connections_are_reused_and_replaced_when_closed(backend: Backend) {
    let addr = closing_upstream().await;
    let url = format!("http://{addr}");
    run_with(
        backend,
        move |c| c.gateway = Some(gateway_config(&url)),
        move |app| async move {
            let p = app.partner("Acme").await;
            let call = || async { app.get(&p.key, "/v1/calls/c-1").await.expect_status(200) };
            let first = call().await;
            assert_eq!(first["host"], addr.to_string(), "the upstream's authority: {first}");
            assert_eq!(call().await["connection"], first["connection"], "kept alive and reused");
            tokio::time::sleep(IDLE_CLOSE * 3).await;
            let after = call().await;
            assert_ne!(after["connection"], first["connection"], "a new connection: {after}");
            assert_eq!(call().await["connection"], after["connection"]);
        },
    )
    .await;
}

mod upstream_connections_are_reused_and_replaced_when_closed {
    #[tokio::test]
    async fn sqlite() {
        super::upstream_connections_are_reused_and_replaced_when_closed(super::Backend::Sqlite).await;
    }
}
