//! The HTTP test harness: a real keygate server on `127.0.0.1:0` over a fresh database, and a
//! client that talks to it.
//!
//! Every test body is an `async fn(TestApp)`; `both_backends!(name)` turns it into the tests
//! `name::sqlite` (a new SQLite file in a temporary directory) and `name::postgres` (a new
//! database on the server named by `KEYGATE_TEST_POSTGRES_URL`, e.g.
//! `postgres://postgres@127.0.0.1:5432/test`; without it the PostgreSQL half is reported as
//! ignored with the reason). `build.rs` turns that variable into `cfg(keygate_pg)`.
//!
//! `both_backends_with!(configure; name)` does the same with `configure(&mut Config)` applied
//! to the server's configuration (trusted proxies, the `appid` credential, the failed-attempts
//! throttle). [`TestApp::start_node`] starts another server on the same database (another node of
//! a cluster, with its own cache), and [`TestApp::offline_keygate`] opens the database the way
//! the CLI does, with no server at all.
//!
//! Nothing here reaches into the server's internals beyond what `keygate`'s binary does to start
//! it: the tests see keygate the way a client does, plus the store handle (to close it, or to
//! look at the SQLite files).

#![allow(dead_code, reason = "each test binary uses its own part of the harness")]

use std::fmt;
use std::future::Future;
use std::net::IpAddr;
use std::panic::resume_unwind;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use keygate::config::SecretString;
use keygate::{Config, Settings};
use keygate_domain::key::HashSecret;
use keygate_engine::ratelimit::ManualClock;
use keygate_engine::{Engine, Keygate};
use keygate_store::Store;
use reqwest::header::HeaderMap;
use reqwest::{Method, RequestBuilder};
use serde_json::{Value, json};
use sqlx::Connection;
use tempfile::TempDir;
use tokio::sync::oneshot;

/// The hash secret every test server uses (≥ 32 characters).
pub const HASH_SECRET: &str = "keygate-http-tests-hash-secret-0123456789";
/// The `User-Agent` of every request the harness client makes.
pub const USER_AGENT: &str = "keygate-tests/1.0";
/// The largest request body the test servers accept.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// `both_backends!(name)` turns `async fn name(app: TestApp)` into the tests `name::sqlite` and
/// `name::postgres`.
#[macro_export]
macro_rules! both_backends {
    ($($name:ident),+ $(,)?) => {
        $(
            mod $name {
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn sqlite() {
                    $crate::common::run($crate::common::Backend::Sqlite, super::$name).await;
                }

                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                #[cfg_attr(not(keygate_pg), ignore = "set KEYGATE_TEST_POSTGRES_URL to run the PostgreSQL suite")]
                async fn postgres() {
                    $crate::common::run($crate::common::Backend::Postgres, super::$name).await;
                }
            }
        )+
    };
}

/// `sqlite_only!(name)`: for what only exists on SQLite (its database files).
#[macro_export]
macro_rules! sqlite_only {
    ($($name:ident),+ $(,)?) => {
        $(
            mod $name {
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn sqlite() {
                    $crate::common::run($crate::common::Backend::Sqlite, super::$name).await;
                }
            }
        )+
    };
}

/// `both_backends_with!(configure; name, …)`: like `both_backends!`, on a server whose
/// configuration `fn configure(&mut Config)` (in the test file) changed first.
#[macro_export]
macro_rules! both_backends_with {
    ($configure:ident; $($name:ident),+ $(,)?) => {
        $(
            mod $name {
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn sqlite() {
                    $crate::common::run_with($crate::common::Backend::Sqlite, super::$configure, super::$name).await;
                }

                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                #[cfg_attr(not(keygate_pg), ignore = "set KEYGATE_TEST_POSTGRES_URL to run the PostgreSQL suite")]
                async fn postgres() {
                    $crate::common::run_with($crate::common::Backend::Postgres, super::$configure, super::$name).await;
                }
            }
        )+
    };
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// Starts a server on `backend`, runs `test` against it, then removes the database (also when
/// the test fails) and re-raises the test's panic.
pub async fn run<F, Fut>(backend: Backend, test: F)
where
    F: FnOnce(TestApp) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    run_with(backend, |_| {}, test).await;
}

/// [`run`] on a server whose configuration `configure` changed first.
pub async fn run_with<F, Fut>(backend: Backend, configure: impl FnOnce(&mut Config), test: F)
where
    F: FnOnce(TestApp) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let (app, cleanup) = TestApp::start_with(backend, configure).await;
    let outcome = tokio::spawn(test(app)).await;
    cleanup.finish().await;
    if let Err(e) = outcome {
        resume_unwind(e.into_panic());
    }
}

/// What [`run`] removes after a test.
pub struct Cleanup {
    /// Every server started on the database and every store opened on it.
    servers: Servers,
    /// PostgreSQL: the server's admin URL and the test database's name.
    postgres: Option<(String, String)>,
}

/// The servers' background tasks and the stores opened on the test database (the first server's,
/// other nodes', offline `Keygate`s'), stopped and closed before the database is removed.
type Servers = Arc<Mutex<Vec<(Option<Arc<Engine>>, Arc<dyn Store>)>>>;

impl Cleanup {
    async fn finish(self) {
        let servers = self.servers.lock().map(|mut s| std::mem::take(&mut *s)).unwrap_or_default();
        for (state, store) in servers {
            if let Some(state) = state {
                state.shutdown().await;
            }
            store.close().await;
        }
        if let Some((admin_url, name)) = self.postgres {
            // Best effort: a leftover database is untidy, not wrong.
            if let Ok(mut admin) = sqlx::PgConnection::connect(&admin_url).await {
                let drop = format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)");
                let _ = sqlx::query(sqlx::AssertSqlSafe(drop)).execute(&mut admin).await;
                let _ = admin.close().await;
            }
        }
    }
}

/// A running keygate with an operator key.
pub struct TestApp {
    pub backend: Backend,
    /// The server's address and a client for it (`app.get(…)`, `app.base_url` through `Deref`).
    pub endpoint: Endpoint,
    /// The operator account's first key (unrestricted, holds `accounts:*`).
    pub operator_key: String,
    pub operator_key_id: String,
    pub operator_account_id: String,
    /// The server's store (the tests close it to prove some paths never touch it).
    pub store: Arc<dyn Store>,
    /// The test database, for other processes on it ([`TestApp::start_node`]).
    pub database_url: String,
    /// The clock rate limits run on (shared with nodes started from this app): frozen unless a
    /// test advances it.
    pub clock: Arc<ManualClock>,
    /// SQLite: the directory holding `keygate.db` (and its `-wal`/`-shm` files).
    pub db_dir: Option<TempDir>,
    servers: Servers,
    /// Dropping it shuts the server down.
    _shutdown: oneshot::Sender<()>,
}

/// Another keygate server on a [`TestApp`]'s database: another node, with its own cache,
/// change-log follower and failed-attempts throttle.
pub struct Node {
    pub endpoint: Endpoint,
    /// This node's own store (its own connection pool on the shared database).
    pub store: Arc<dyn Store>,
    /// Dropping it shuts the node down.
    _shutdown: oneshot::Sender<()>,
}

/// A server's address and a client for it: what [`TestApp`] and [`Node`] send requests through.
pub struct Endpoint {
    /// `http://127.0.0.1:<port>`.
    pub base_url: String,
    /// Sends `User-Agent: keygate-tests/1.0`; follows no redirects.
    pub client: reqwest::Client,
}

impl Endpoint {
    fn new(base_url: String) -> Self {
        Self { base_url, client: client_from(None) }
    }

    #[must_use]
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base_url)
    }

    /// A request with `key` as a Bearer token.
    pub fn request(&self, method: Method, path: &str, key: &str) -> RequestBuilder {
        self.client.request(method, self.url(path)).bearer_auth(key)
    }

    pub async fn get(&self, key: &str, path: &str) -> Resp {
        send(self.request(Method::GET, path, key)).await
    }

    pub async fn post(&self, key: &str, path: &str, body: &Value) -> Resp {
        send(self.request(Method::POST, path, key).json(body)).await
    }
}

impl std::ops::Deref for TestApp {
    type Target = Endpoint;

    fn deref(&self) -> &Endpoint {
        &self.endpoint
    }
}

impl std::ops::Deref for Node {
    type Target = Endpoint;

    fn deref(&self) -> &Endpoint {
        &self.endpoint
    }
}

/// A partner account and its unrestricted first key.
#[derive(Debug, Clone)]
pub struct Partner {
    pub account_id: String,
    pub key: String,
    pub key_id: String,
}

/// The configuration of every test server before a test changes it.
fn test_config() -> Config {
    Config {
        hash_secret: Some(SecretString::new(HASH_SECRET.into())),
        max_body_bytes: MAX_BODY_BYTES,
        ..Config::default()
    }
}

fn test_settings(configure: impl FnOnce(&mut Config)) -> Settings {
    let mut config = test_config();
    configure(&mut config);
    config.validate().expect("a valid test configuration")
}

fn test_secret() -> HashSecret {
    HashSecret::new(HASH_SECRET).expect("a long enough secret")
}

/// Serves `keygate` on `127.0.0.1:0` until the returned sender is dropped. Rate limits run on
/// `clock`, which only the test moves.
async fn serve(
    keygate: Keygate,
    settings: &Settings,
    clock: Arc<ManualClock>,
) -> (String, Arc<Engine>, oneshot::Sender<()>) {
    let state = Arc::new(Engine::with_clock(keygate, &settings.engine, clock));
    let app = keygate::server::app(Arc::clone(&state), settings);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind 127.0.0.1:0");
    let base_url = format!("http://{}", listener.local_addr().expect("a local address"));
    let (shutdown, shutdown_rx) = oneshot::channel::<()>();
    tokio::spawn(keygate::server::serve(listener, app, async {
        let _ = shutdown_rx.await;
    }));
    (base_url, state, shutdown)
}

impl TestApp {
    pub async fn start(backend: Backend) -> (Self, Cleanup) {
        Self::start_with(backend, |_| {}).await
    }

    /// A server whose configuration `configure` changed first.
    pub async fn start_with(backend: Backend, configure: impl FnOnce(&mut Config)) -> (Self, Cleanup) {
        let (url, db_dir, postgres) = match backend {
            Backend::Sqlite => {
                let dir = tempfile::tempdir().expect("a temporary directory");
                let url = format!("sqlite://{}", dir.path().join("keygate.db").display());
                (url, Some(dir), None)
            }
            Backend::Postgres => {
                let admin_url =
                    std::env::var("KEYGATE_TEST_POSTGRES_URL").expect("KEYGATE_TEST_POSTGRES_URL names a server");
                let name = format!("kg_t_{}", ulid::Ulid::generate().to_string().to_lowercase());
                let mut admin =
                    sqlx::PgConnection::connect(&admin_url).await.expect("connect to KEYGATE_TEST_POSTGRES_URL");
                sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
                    .execute(&mut admin)
                    .await
                    .expect("create the test database");
                let _ = admin.close().await;
                (with_database(&admin_url, &name), None, Some((admin_url, name)))
            }
        };
        let store = keygate_store::connect(&url).await.expect("open and migrate the store");

        let settings = test_settings(configure);
        let keygate = Keygate::new(store.clone(), &settings.engine, &test_secret());
        let (operator, key, plaintext) =
            keygate.init_operator().await.expect("init the operator").expect("a fresh database has no operator");
        let clock = Arc::new(ManualClock::at(chrono::Utc::now().timestamp().unsigned_abs()));
        let (base_url, state, shutdown) = serve(keygate, &settings, Arc::clone(&clock)).await;
        let servers: Servers = Arc::new(Mutex::new(vec![(Some(state), store.clone())]));

        let app = Self {
            backend,
            endpoint: Endpoint::new(base_url),
            operator_key: plaintext.expose().to_owned(),
            operator_key_id: key.id.to_string(),
            operator_account_id: operator.id.to_string(),
            store: store.clone(),
            database_url: url,
            clock,
            db_dir,
            servers: Arc::clone(&servers),
            _shutdown: shutdown,
        };
        (app, Cleanup { servers, postgres })
    }

    /// Another server on this database, with the same hash secret and `configure`d settings.
    pub async fn start_node(&self, configure: impl FnOnce(&mut Config)) -> Node {
        let store = keygate_store::connect(&self.database_url).await.expect("open the store for another node");
        let settings = test_settings(configure);
        let (base_url, state, shutdown) =
            serve(Keygate::new(store.clone(), &settings.engine, &test_secret()), &settings, Arc::clone(&self.clock))
                .await;
        self.servers.lock().expect("the cleanup list").push((Some(state), store.clone()));
        Node { endpoint: Endpoint::new(base_url), store, _shutdown: shutdown }
    }

    /// The use cases on this database with no server in between, as the CLI runs them: its own
    /// connection, no credential cache, nothing to tell the servers but the change log.
    pub async fn offline_keygate(&self) -> Keygate {
        let store = keygate_store::connect(&self.database_url).await.expect("open the store like the CLI");
        self.servers.lock().expect("the cleanup list").push((None, store.clone()));
        Keygate::new(store, &test_settings(|_| {}).engine, &test_secret())
    }

    /// A client whose requests come from `local` (any 127.0.0.0/8 address reaches the server),
    /// for allowlist tests: the default client is 127.0.0.1.
    #[must_use]
    pub fn client_from(&self, local: IpAddr) -> reqwest::Client {
        client_from(Some(local))
    }

    /// A POST without a body.
    pub async fn post_empty(&self, key: &str, path: &str) -> Resp {
        send(self.request(Method::POST, path, key)).await
    }

    pub async fn patch(&self, key: &str, path: &str, body: &Value) -> Resp {
        send(self.request(Method::PATCH, path, key).json(body)).await
    }

    pub async fn delete(&self, key: &str, path: &str) -> Resp {
        send(self.request(Method::DELETE, path, key)).await
    }

    /// `POST /v1/accounts` with the operator key: a partner and its first key.
    pub async fn partner(&self, name: &str) -> Partner {
        let created = self.post(&self.operator_key, "/v1/accounts", &json!({"name": name})).await.expect_status(201);
        Partner {
            account_id: str_of(&created["account"]["id"]),
            key: str_of(&created["initial_key"]["key"]),
            key_id: str_of(&created["initial_key"]["id"]),
        }
    }

    /// `POST /v1/api-keys`, expecting 201: the key object with its plaintext `key`.
    pub async fn create_key(&self, key: &str, body: Value) -> Value {
        self.post(key, "/v1/api-keys", &body).await.expect_status(201)
    }

    /// `POST /v1/tenants`, expecting 201.
    pub async fn create_tenant(&self, key: &str, body: Value) -> Value {
        self.post(key, "/v1/tenants", &body).await.expect_status(201)
    }

    /// `GET /v1/audit-events` with `query`, expecting 200: the events, newest first.
    pub async fn audit_events(&self, key: &str, query: &[(&str, &str)]) -> Vec<Value> {
        let r = send(self.request(Method::GET, "/v1/audit-events", key).query(query)).await;
        list_data(r.expect_status(200))
    }

    /// The newest audit event with `action` about `target_id`.
    pub async fn audit_event(&self, key: &str, action: &str, target_id: &str) -> Value {
        let events = self.audit_events(key, &[("action", action), ("target_id", target_id), ("limit", "100")]).await;
        events.into_iter().next().unwrap_or_else(|| panic!("no {action} event for {target_id}"))
    }
}

fn client_from(local: Option<IpAddr>) -> reqwest::Client {
    reqwest::Client::builder()
        .user_agent(USER_AGENT)
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .local_address(local)
        .build()
        .expect("an HTTP client")
}

/// Calls `probe` every `every` until it answers `Some`, for at most `deadline`. Returns the
/// answer and how long after the start it came, or `Err(elapsed)` when the deadline passed.
/// The only waiting the suite does: for what the SPEC lets happen "within" a bound.
///
/// (`probe` is a closure returning a future rather than an async closure: the futures of async
/// closures are not yet known to be `Send` for every lifetime, which the test task needs.)
pub async fn poll<T, Fut>(
    deadline: Duration,
    every: Duration,
    mut probe: impl FnMut() -> Fut,
) -> Result<(T, Duration), Duration>
where
    Fut: Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(answer) = probe().await {
            return Ok((answer, start.elapsed()));
        }
        if start.elapsed() >= deadline {
            return Err(start.elapsed());
        }
        tokio::time::sleep(every).await;
    }
}

/// `url` with its database name replaced by `database`.
fn with_database(url: &str, database: &str) -> String {
    let (base, query) = url.split_once('?').map_or((url, None), |(b, q)| (b, Some(q)));
    let authority_start = base.find("://").map_or(0, |i| i + 3);
    let server = match base[authority_start..].find('/') {
        Some(slash) => &base[..authority_start + slash],
        None => base,
    };
    match query {
        Some(q) => format!("{server}/{database}?{q}"),
        None => format!("{server}/{database}"),
    }
}

/// A response, read whole: status, headers, the body as text and (when it is JSON) as a value.
pub struct Resp {
    pub status: u16,
    pub headers: HeaderMap,
    /// `Value::Null` when the body is empty or not JSON.
    pub body: Value,
    pub text: String,
}

impl fmt::Debug for Resp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "HTTP {} {}", self.status, self.text)
    }
}

impl Resp {
    /// The value of header `name`, if present and text.
    #[must_use]
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The response's `X-Request-Id`.
    #[must_use]
    pub fn request_id(&self) -> &str {
        self.header("x-request-id").unwrap_or_else(|| panic!("no X-Request-Id on {self:?}"))
    }

    /// Asserts the status and hands out the body.
    #[track_caller]
    pub fn expect_status(self, status: u16) -> Value {
        assert_eq!(self.status, status, "unexpected status: {self:?}");
        self.body
    }
}

/// Sends a request and reads the whole response.
pub async fn send(request: RequestBuilder) -> Resp {
    let response = request.send().await.expect("the server answers");
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let text = response.text().await.expect("a readable body");
    let body = serde_json::from_str(&text).unwrap_or(Value::Null);
    Resp { status, headers, body, text }
}

/// Asserts an RFC 9457 problem document with `status` and `code`, carrying the response's
/// request id.
#[track_caller]
pub fn assert_problem(r: &Resp, status: u16, code: &str) {
    assert_eq!(r.status, status, "status of {r:?}");
    assert_eq!(r.header("content-type"), Some("application/problem+json"), "content type of {r:?}");
    let b = &r.body;
    assert_eq!(b["code"], code, "code of {r:?}");
    assert_eq!(b["type"], format!("https://keygate.dev/problems/{code}"), "type of {r:?}");
    assert_eq!(b["status"], status, "status field of {r:?}");
    assert!(b["title"].as_str().is_some_and(|t| !t.is_empty()), "title of {r:?}");
    assert!(b["detail"].as_str().is_some_and(|t| !t.is_empty()), "detail of {r:?}");
    assert_eq!(b["request_id"].as_str(), Some(r.request_id()), "request_id of {r:?}");
}

/// Asserts a 422 `validation_failed` whose `errors` name exactly `fields` (in any order).
#[track_caller]
pub fn assert_invalid_fields(r: &Resp, fields: &[&str]) {
    assert_problem(r, 422, "validation_failed");
    let errors = r.body["errors"].as_array().unwrap_or_else(|| panic!("no errors in {r:?}"));
    let mut named: Vec<&str> = errors.iter().map(|e| e["field"].as_str().unwrap_or_default()).collect();
    assert!(
        errors.iter().all(|e| e["message"].as_str().is_some_and(|m| !m.is_empty())),
        "every error has a message: {r:?}"
    );
    named.sort_unstable();
    let mut expected = fields.to_vec();
    expected.sort_unstable();
    assert_eq!(named, expected, "fields named by {r:?}");
}

/// The `data` of a list response.
#[track_caller]
pub fn list_data(body: Value) -> Vec<Value> {
    match body {
        Value::Object(mut m) => match m.remove("data") {
            Some(Value::Array(items)) => items,
            other => panic!("a list has `data`, got {other:?}"),
        },
        other => panic!("a list is an object, got {other:?}"),
    }
}

/// The `id`s of a list's items, in order.
#[must_use]
pub fn ids(items: &[Value]) -> Vec<String> {
    items.iter().map(|i| str_of(&i["id"])).collect()
}

/// A JSON string's value (panics on anything else).
#[track_caller]
#[must_use]
pub fn str_of(v: &Value) -> String {
    v.as_str().unwrap_or_else(|| panic!("expected a string, got {v}")).to_owned()
}

/// Is `s` a `{prefix}_` followed by a 26-character ULID?
#[must_use]
pub fn is_id(s: &str, prefix: &str) -> bool {
    s.strip_prefix(prefix)
        .and_then(|r| r.strip_prefix('_'))
        .is_some_and(|u| u.len() == 26 && ulid::Ulid::from_string(u).is_ok())
}

/// Is `s` an RFC 3339 UTC timestamp with whole seconds (`2026-04-20T15:42:11Z`)?
#[must_use]
pub fn is_timestamp(s: &str) -> bool {
    s.len() == 20 && s.ends_with('Z') && chrono::DateTime::parse_from_rfc3339(s).is_ok()
}

/// Parses an API timestamp.
#[track_caller]
#[must_use]
pub fn timestamp(v: &Value) -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::parse_from_rfc3339(&str_of(v)).expect("an RFC 3339 timestamp").to_utc()
}

/// Does `key` look like a plaintext key: `sk_(live|test)_` + 36 base62 characters?
#[must_use]
pub fn is_plaintext_key(key: &str) -> bool {
    let rest = key.strip_prefix("sk_live_").or_else(|| key.strip_prefix("sk_test_"));
    rest.is_some_and(|r| r.len() == 36 && r.bytes().all(|b| b.is_ascii_alphanumeric()))
}

/// Polls `futures` together on the current task (real parallel requests through the client's
/// pool) and returns their outputs in order.
pub async fn join_all<F: Future>(futures: Vec<F>) -> Vec<F::Output> {
    let mut pinned: Vec<_> = futures.into_iter().map(Box::pin).collect();
    let mut out: Vec<Option<F::Output>> = pinned.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (f, slot) in pinned.iter_mut().zip(out.iter_mut()) {
            if slot.is_none() {
                match f.as_mut().poll(cx) {
                    std::task::Poll::Ready(v) => *slot = Some(v),
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending { std::task::Poll::Pending } else { std::task::Poll::Ready(()) }
    })
    .await;
    out.into_iter().map(|r| r.expect("every future finished")).collect()
}
