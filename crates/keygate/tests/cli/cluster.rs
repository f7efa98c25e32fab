//! Cluster mode (SPEC §5, §11; docs/operations.md): three `keygate serve` processes on one
//! PostgreSQL database and one Redis (or a three-master Redis Cluster) act as one.
//!
//! - limits are exact across the nodes: a 30/min key, account or route+IP limit admits exactly
//!   30 of 90 requests spread round-robin over the three, sent in parallel;
//! - a revocation on one node is refused on the other two within 100 ms (p99 of 100, printed);
//! - Redis killed under load: no 5xx, cached keys keep verifying, limits fall back to each node's
//!   own and `/readyz` says `degraded`; Redis back: exact again within seconds, no restart.
//!
//! They need `KEYGATE_TEST_POSTGRES_URL` and `KEYGATE_TEST_REDIS_URL` (a private Redis that
//! `.ci/run` starts on a free port), and `redis-server` / `redis-cli` on the PATH for the tests
//! that start, kill and restart their own Redis or build a Redis Cluster.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::{Http, Response, Sandbox, Server, free_port, listens_on};

const SECRET: &str = "0123456789abcdef0123456789abcdef-cluster";

/// A scratch PostgreSQL database, dropped with it.
struct ScratchDatabase {
    admin: String,
    name: String,
    url: String,
}

impl ScratchDatabase {
    fn new(admin: &str) -> Self {
        let name = format!("kg_cluster_{}", ulid::Ulid::generate().to_string().to_lowercase());
        let (server, _) = admin.rsplit_once('/').expect("a URL with a database name");
        let db = Self { admin: admin.to_owned(), url: format!("{server}/{name}"), name };
        db.exec(&format!("CREATE DATABASE {}", db.name));
        db
    }

    fn exec(&self, sql: &str) {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a Tokio runtime");
        runtime.block_on(async {
            use sqlx::Connection as _;
            let mut conn = sqlx::PgConnection::connect(&self.admin).await.expect("connect to PostgreSQL");
            sqlx::query(sqlx::AssertSqlSafe(sql.to_owned())).execute(&mut conn).await.expect("run the statement");
            let _ = conn.close().await;
        });
    }
}

impl Drop for ScratchDatabase {
    fn drop(&mut self) {
        self.exec(&format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name));
    }
}

/// A `redis-server` of this test's own on a free loopback port, killed when dropped.
struct PrivateRedis {
    child: Option<Child>,
    port: u16,
    dir: tempfile::TempDir,
    cluster: bool,
}

impl PrivateRedis {
    fn start(port: u16, cluster: bool) -> Self {
        let mut redis = Self { child: None, port, dir: tempfile::tempdir().expect("a directory"), cluster };
        redis.restart();
        redis
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    fn restart(&mut self) {
        let port = self.port.to_string();
        let mut cmd = Command::new("redis-server");
        cmd.args(["--port", &port, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(self.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if self.cluster {
            cmd.args([
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                "nodes.conf",
                "--cluster-node-timeout",
                "2000",
            ]);
        }
        let child = self.child.insert(cmd.spawn().expect("start redis-server (is it installed?)"));
        let deadline = Instant::now() + Duration::from_secs(10);
        // The PONG must come from this child: another test's server may have taken the port.
        while !(redis_cli(self.port, &["PING"]).trim() == "PONG" && listens_on(child.id(), self.port)) {
            if let Some(status) = child.try_wait().expect("poll redis-server") {
                panic!("redis-server on {port} exited ({status}): is the port taken?");
            }
            assert!(Instant::now() < deadline, "redis-server on {port} did not answer PING");
            thread::sleep(Duration::from_millis(20));
        }
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        self.kill();
    }
}

fn redis_cli(port: u16, args: &[&str]) -> String {
    Command::new("redis-cli")
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(args)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default()
}

/// Where the nodes find Redis.
enum RedisAt {
    Url(String),
    Cluster(Vec<String>),
}

/// Three `keygate serve` processes on one scratch database and one Redis, and the operator key.
struct Cluster {
    nodes: Vec<Server>,
    operator: String,
    /// The environment every node was started with (and the CLI runs with).
    sandbox: Sandbox,
    _db: ScratchDatabase,
}

impl Cluster {
    fn start(redis: &RedisAt, gateway: Option<&str>) -> Self {
        Self::start_with(redis, gateway, |_, _| {})
    }

    /// As [`Cluster::start`], with `node_env(n, sandbox)` setting node `n`'s own environment.
    fn start_with(redis: &RedisAt, gateway: Option<&str>, node_env: impl Fn(usize, &mut Sandbox)) -> Self {
        let db = ScratchDatabase::new(postgres_url());
        let mut sandbox = Sandbox::new();
        sandbox.set_env("KEYGATE_DATABASE_URL", &db.url);
        sandbox.set_env("KEYGATE_HASH_SECRET", SECRET);
        sandbox.set_env("KEYGATE_LIMITS__MAX_KEY_RATE_LIMIT_PER_MINUTE", "1000000");
        sandbox.set_env("KEYGATE_LIMITS__DEFAULT_KEY_RATE_LIMIT_PER_MINUTE", "1000000");
        sandbox.set_env("KEYGATE_LIMITS__DEFAULT_ACCOUNT_RATE_LIMIT_PER_MINUTE", "1000000");
        sandbox.set_env("KEYGATE_WORKERS", "1");
        // Every test here fails keys from 127.0.0.1 on purpose (revoked ones), and the throttle
        // is shared through Redis like every limit.
        sandbox.set_env("KEYGATE_AUTH__MAX_FAILED_ATTEMPTS_PER_MINUTE", "100000");
        match redis {
            RedisAt::Url(url) => sandbox.set_env("KEYGATE_REDIS_URL", url),
            RedisAt::Cluster(nodes) => sandbox.set_env("KEYGATE_REDIS_CLUSTER_NODES", &nodes.join(",")),
        }
        if let Some(gateway) = gateway {
            sandbox.write("keygate.toml", gateway);
        }
        let (_, operator) = sandbox.init();
        let nodes: Vec<Server> = (0..3)
            .map(|n| {
                let before = sandbox.env().clone();
                node_env(n, &mut sandbox);
                let node = Server::start(&sandbox, &[]);
                sandbox.set_all_env(before);
                node
            })
            .collect();
        let cluster = Self { nodes, operator, sandbox, _db: db };
        cluster.wait_ready();
        cluster
    }

    /// What every node logged about Redis (why a node decided without it).
    fn redis_log(&self) -> String {
        let lines = self.nodes.iter().flat_map(|n| {
            let log = n.log();
            log.lines().filter(|l| l.contains("edis")).map(|l| format!("{}: {l}", n.base)).collect::<Vec<_>>()
        });
        lines.collect::<Vec<_>>().join("\n")
    }

    fn bases(&self) -> Vec<String> {
        self.nodes.iter().map(|n| n.base.clone()).collect()
    }

    /// Until every node's `/readyz` says `ready` (Redis reachable): how long that took.
    fn wait_ready(&self) -> Duration {
        let started = Instant::now();
        for node in &self.nodes {
            let http = node.http();
            loop {
                let ready = http.try_get("/readyz").map(|r| r.json());
                if ready.as_ref().is_some_and(|r| r["status"] == "ready") {
                    break;
                }
                assert!(
                    started.elapsed() < Duration::from_secs(20),
                    "{} never ready: {ready:?}\n{}",
                    node.base,
                    node.log()
                );
                thread::sleep(Duration::from_millis(25));
            }
        }
        started.elapsed()
    }

    /// A key of the operator's account: `(plaintext, id)`.
    fn key(&self, body: &Value) -> (String, String) {
        let created = self.nodes[0].http().post("/v1/api-keys", &self.operator, body);
        assert_eq!(created.status, 201, "{}", created.text);
        let created = created.json();
        (created["key"].as_str().expect("plaintext").to_owned(), created["id"].as_str().expect("id").to_owned())
    }

    /// A partner account and its first key: `(account id, plaintext)`.
    fn account(&self) -> (String, String) {
        let created = self.nodes[0].http().post("/v1/accounts", &self.operator, &json!({"name": "limited partner"}));
        assert_eq!(created.status, 201, "{}", created.text);
        let created = created.json();
        (
            created["account"]["id"].as_str().expect("an id").to_owned(),
            created["initial_key"]["key"].as_str().expect("the first key's plaintext").to_owned(),
        )
    }
}

/// Sends `total` requests, request `i` to node `i % 3` with key `i % keys.len()`, from 9 threads
/// at once; returns how many got each status (and every 429's `limit_scope`).
fn round_robin(
    bases: &[String],
    keys: &[String],
    method: &str,
    path: &str,
    total: usize,
) -> Vec<(u16, Option<String>)> {
    const THREADS: usize = 9;
    let results = std::sync::Mutex::new(Vec::with_capacity(total));
    thread::scope(|s| {
        for t in 0..THREADS {
            let results = &results;
            s.spawn(move || {
                let clients: Vec<Http> = bases.iter().map(|b| Http::new(b)).collect();
                for i in (t..total).step_by(THREADS) {
                    let r = clients[i % bases.len()].send(method, path, Some(&keys[i % keys.len()]), None);
                    let scope = (r.status == 429).then(|| r.json()["limit_scope"].as_str().unwrap_or("").to_owned());
                    results.lock().expect("results").push((r.status, scope));
                }
            });
        }
    });
    results.into_inner().expect("results")
}

fn count(results: &[(u16, Option<String>)], status: u16) -> usize {
    results.iter().filter(|(s, _)| *s == status).count()
}

/// Key, account and route+IP limits, each 30/min: exactly 30 of 90 admitted over three nodes.
fn limits_are_exact_across_three_nodes(redis: &RedisAt) {
    let upstream = Upstream::start();
    let gateway = format!(
        "[gateway]\nupstream = \"http://127.0.0.1:{}\"\n\n[[gateway.routes]]\nmethod = \"POST\"\npath = \"/v1/sms/send\"\n\
         scope = \"sms:send\"\nip_rate_limit_per_minute = 30\n",
        upstream.port
    );
    // Exactness is what this measures, not the fallback: a call to Redis that outlasts the
    // default 50 ms (a first connection to a cluster master on a loaded CI machine, say) would
    // have that node decide in its own memory, and admit more than the limit.
    let cluster = Cluster::start_with(redis, Some(&gateway), |_, sandbox| {
        sandbox.set_env("KEYGATE_REDIS_TIMEOUT_MS", "2000");
    });
    let bases = cluster.bases();

    let (key, _) = cluster.key(&json!({"name": "30/min", "scopes": ["tenants:read"], "rate_limit_per_minute": 30}));
    let results = round_robin(&bases, &[key], "GET", "/v1/tenants", 90);
    assert_eq!(
        (count(&results, 200), count(&results, 429)),
        (30, 60),
        "a key's limit: {results:?}\n{}",
        cluster.redis_log()
    );
    assert!(results.iter().all(|(s, scope)| *s != 429 || scope.as_deref() == Some("key")), "{results:?}");

    // An account spent through three keys of its own, its limit lowered to 30/min on one node
    // (it applies on every node to the very next request, SPEC §5).
    let (account, first) = cluster.account();
    let http = Http::new(&bases[1]);
    let mut keys = vec![first.clone()];
    for n in 0..2 {
        let created =
            http.post("/v1/api-keys", &first, &json!({"name": format!("key {n}"), "rate_limit_per_minute": 1000}));
        assert_eq!(created.status, 201, "{}", created.text);
        keys.push(created.json()["key"].as_str().expect("plaintext").to_owned());
    }
    for key in &keys {
        for base in &bases {
            assert_eq!(Http::new(base).get("/v1/tenants", key).status, 200, "every node holds every key");
        }
    }
    let lowered = http.send(
        "PATCH",
        &format!("/v1/accounts/{account}"),
        Some(&cluster.operator),
        Some(&json!({"rate_limit_per_minute": 30})),
    );
    assert_eq!(lowered.status, 200, "{}", lowered.text);
    thread::sleep(Duration::from_millis(100));
    let results = round_robin(&bases, &keys, "GET", "/v1/tenants", 90);
    assert_eq!(
        (count(&results, 200), count(&results, 429)),
        (30, 60),
        "an account's limit: {results:?}\n{}",
        cluster.redis_log()
    );
    assert!(results.iter().all(|(s, scope)| *s != 429 || scope.as_deref() == Some("account")), "{results:?}");

    // A gateway route's limit per client IP (all of these come from 127.0.0.1), two keys.
    let a = cluster.key(&json!({"name": "sms a", "scopes": ["sms:send"], "rate_limit_per_minute": 1000})).0;
    let b = cluster.key(&json!({"name": "sms b", "scopes": ["sms:send"], "rate_limit_per_minute": 1000})).0;
    let results = round_robin(&bases, &[a, b], "POST", "/v1/sms/send", 90);
    assert_eq!(
        (count(&results, 200), count(&results, 429)),
        (30, 60),
        "a route's limit per IP: {results:?}\n{}",
        cluster.redis_log()
    );
    assert!(results.iter().all(|(s, scope)| *s != 429 || scope.as_deref() == Some("ip")), "{results:?}");
    assert_eq!(upstream.served.load(Ordering::Relaxed), 30, "only admitted requests reach the upstream");
}

#[test]
#[cfg_attr(
    not(all(keygate_pg, keygate_redis)),
    ignore = "set KEYGATE_TEST_POSTGRES_URL and KEYGATE_TEST_REDIS_URL to run the cluster tests"
)]
fn three_nodes_on_one_redis_admit_exactly_each_limit() {
    limits_are_exact_across_three_nodes(&RedisAt::Url(shared_redis()));
}

/// The private Redis `.ci/run` started for these tests.
fn shared_redis() -> String {
    match option_env!("KEYGATE_TEST_REDIS_URL") {
        Some(url) => url.to_owned(),
        None => panic!("set KEYGATE_TEST_REDIS_URL to a private Redis"),
    }
}

/// The PostgreSQL server the suites make their databases on.
fn postgres_url() -> &'static str {
    match option_env!("KEYGATE_TEST_POSTGRES_URL") {
        Some(url) => url,
        None => panic!("set KEYGATE_TEST_POSTGRES_URL"),
    }
}

#[test]
#[cfg_attr(
    not(all(keygate_pg, keygate_redis)),
    ignore = "set KEYGATE_TEST_POSTGRES_URL and KEYGATE_TEST_REDIS_URL to run the cluster tests"
)]
fn three_nodes_on_a_redis_cluster_admit_exactly_each_limit() {
    // Three masters on loopback; each needs its port and port + 10,000 (the cluster bus) free.
    let ports: Vec<u16> = (0..3).map(|_| free_port_with_bus()).collect();
    let masters: Vec<PrivateRedis> = ports.iter().map(|p| PrivateRedis::start(*p, true)).collect();
    let addresses: Vec<String> = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
    let mut create = vec!["--cluster", "create"];
    create.extend(addresses.iter().map(String::as_str));
    create.extend(["--cluster-replicas", "0", "--cluster-yes"]);
    let out = redis_cli(ports[0], &create);
    assert!(out.contains("[OK] All 16384 slots covered"), "redis-cli --cluster create: {out}");
    let deadline = Instant::now() + Duration::from_secs(20);
    while !ports.iter().all(|p| redis_cli(*p, &["CLUSTER", "INFO"]).contains("cluster_state:ok")) {
        assert!(Instant::now() < deadline, "the cluster never reached cluster_state:ok");
        thread::sleep(Duration::from_millis(50));
    }
    let redis = RedisAt::Cluster(masters.iter().map(PrivateRedis::url).collect());
    limits_are_exact_across_three_nodes(&redis);
}

/// A free port whose cluster-bus port (+10,000) is free too.
fn free_port_with_bus() -> u16 {
    loop {
        let port = free_port();
        if port < 55_000 && TcpListener::bind(("127.0.0.1", port + 10_000)).is_ok() {
            return port;
        }
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        // Ephemeral ports are usually above 32768: pick one in 20000–45000 instead.
        let candidate = 20_000 + listener.local_addr().expect("addr").port() % 25_000;
        if TcpListener::bind(("127.0.0.1", candidate)).is_ok()
            && TcpListener::bind(("127.0.0.1", candidate + 10_000)).is_ok()
        {
            return candidate;
        }
    }
}

#[test]
#[cfg_attr(
    not(all(keygate_pg, keygate_redis)),
    ignore = "set KEYGATE_TEST_POSTGRES_URL and KEYGATE_TEST_REDIS_URL to run the cluster tests"
)]
fn a_revocation_on_one_node_is_refused_on_the_others_within_100_ms() {
    {
        let cluster = Cluster::start(&RedisAt::Url(shared_redis()), None);
        let [a, b, c] = [0, 1, 2].map(|n| cluster.nodes[n].http());
        let mut delays = Vec::with_capacity(100);
        for n in 0..100 {
            let (key, id) = cluster.key(&json!({"name": format!("revoked {n}"), "scopes": ["tenants:read"]}));
            // B and C hold the key in memory.
            for node in [&b, &c] {
                let r = node.get("/v1/tenants", &key);
                assert_eq!(r.status, 200, "{}", r.text);
            }
            let revoked = a.post(&format!("/v1/api-keys/{id}/revoke"), &cluster.operator, &json!({}));
            assert_eq!(revoked.status, 200, "{}", revoked.text);
            let since = Instant::now();
            let mut refused = [false, false];
            while refused != [true, true] {
                for (i, node) in [&b, &c].into_iter().enumerate() {
                    if !refused[i] {
                        let r = node.get("/v1/tenants", &key);
                        match r.status {
                            200 => {}
                            401 => {
                                assert_eq!(r.code().as_deref(), Some("api_key_revoked"), "{}", r.text);
                                refused[i] = true;
                            }
                            other => panic!("{other}: {}", r.text),
                        }
                    }
                }
                assert!(since.elapsed() < Duration::from_secs(5), "revocation {n} never reached both nodes");
            }
            delays.push(since.elapsed());
        }
        delays.sort();
        let (p50, p99, max) = (delays[49], delays[98], delays[99]);
        eprintln!(
            "revocation on node A refused on nodes B and C, 100 revocations: p50 {p50:?}, p99 {p99:?}, max {max:?}"
        );
        assert!(p99 <= Duration::from_millis(100), "p99 {p99:?} (p50 {p50:?}, max {max:?})");
    }
}

#[test]
#[cfg_attr(
    not(all(keygate_pg, keygate_redis)),
    ignore = "set KEYGATE_TEST_POSTGRES_URL and KEYGATE_TEST_REDIS_URL to run the cluster tests"
)]
fn redis_killed_under_load_serves_on_and_comes_back_exact() {
    {
        let mut redis = PrivateRedis::start(free_port(), false);
        let cluster = Cluster::start(&RedisAt::Url(redis.url()), None);
        let bases = cluster.bases();
        let (steady, _) = cluster.key(&json!({"name": "steady", "scopes": ["tenants:read"]}));

        // Load on every node with a key they all hold in memory, while Redis goes away.
        let stop = Arc::new(AtomicBool::new(false));
        let (answered, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(std::sync::Mutex::new(Vec::new())));
        let load: Vec<_> = bases
            .iter()
            .map(|base| {
                let (base, key, stop, answered, failed) =
                    (base.clone(), steady.clone(), Arc::clone(&stop), Arc::clone(&answered), Arc::clone(&failed));
                thread::spawn(move || {
                    let http = Http::new(&base);
                    while !stop.load(Ordering::Relaxed) {
                        let r = http.get("/v1/tenants", &key);
                        answered.fetch_add(1, Ordering::Relaxed);
                        if r.status != 200 {
                            failed.lock().expect("failures").push(format!("{base}: {} {}", r.status, r.text));
                        }
                    }
                })
            })
            .collect();
        thread::sleep(Duration::from_millis(500));
        redis.kill();
        thread::sleep(Duration::from_secs(2));
        for node in &cluster.nodes {
            let ready = node.http().send("GET", "/readyz", None, None);
            assert_eq!(ready.status, 200, "still in rotation: {}", ready.text);
            assert_eq!(ready.json(), json!({"status": "degraded", "store": "ok", "redis": "unavailable"}));
        }
        // Limits are each node's own meanwhile: a 30/min key admits 30 on each of the three.
        let (limited, _) =
            cluster.key(&json!({"name": "30/min alone", "scopes": ["tenants:read"], "rate_limit_per_minute": 30}));
        let results = round_robin(&bases, &[limited], "GET", "/v1/tenants", 120);
        assert_eq!(count(&results, 200), 90, "30 per node while Redis is away: {results:?}");
        assert_eq!(count(&results, 429), 30, "{results:?}");
        let metrics = cluster.nodes[0].http().send("GET", "/metrics", None, None).text;
        assert!(
            metrics.lines().any(|l| l.starts_with("keygate_redis_errors_total") && !l.ends_with(" 0")),
            "redis errors counted:\n{}",
            metrics.lines().filter(|l| l.contains("redis")).collect::<Vec<_>>().join("\n")
        );

        redis.restart();
        let back = cluster.wait_ready();
        eprintln!("Redis restarted: all three nodes ready (shared limits) again after {back:?}");
        assert!(back < Duration::from_secs(5), "{back:?}");
        stop.store(true, Ordering::Relaxed);
        for t in load {
            t.join().expect("a load thread");
        }
        let failed = failed.lock().expect("failures");
        assert!(
            failed.is_empty(),
            "{} of {} requests failed: {:?}",
            failed.len(),
            answered.load(Ordering::Relaxed),
            &failed[..failed.len().min(5)]
        );
        assert!(answered.load(Ordering::Relaxed) > 100, "the load ran");

        let (exact, _) =
            cluster.key(&json!({"name": "30/min shared", "scopes": ["tenants:read"], "rate_limit_per_minute": 30}));
        let results = round_robin(&bases, &[exact], "GET", "/v1/tenants", 90);
        assert_eq!((count(&results, 200), count(&results, 429)), (30, 60), "exact again: {results:?}");
    }
}

#[test]
#[cfg_attr(
    not(all(keygate_pg, keygate_redis)),
    ignore = "set KEYGATE_TEST_POSTGRES_URL and KEYGATE_TEST_REDIS_URL to run the cluster tests"
)]
fn a_node_cut_off_from_postgresql_keeps_answering_the_keys_it_holds() {
    // Node C reaches PostgreSQL through a TCP relay the test can cut: a network partition.
    let pg = postgres_url();
    let relay = Relay::start(postgres_port(pg));
    // A gateway route: forwarding needs the key, not the store.
    let upstream = Upstream::start();
    let gateway = format!(
        "[gateway]\nupstream = \"http://127.0.0.1:{}\"\n\n[[gateway.routes]]\nmethod = \"GET\"\npath = \"/v1/calls\"\nscope = \"calls:read\"\n",
        upstream.port
    );
    let cluster = Cluster::start_with(&RedisAt::Url(shared_redis()), Some(&gateway), |n, sandbox| {
        if n == 2 {
            let url = sandbox.env()["KEYGATE_DATABASE_URL"]
                .replace(&format!(":{}/", postgres_port(pg)), &format!(":{}/", relay.port));
            sandbox.set_env("KEYGATE_DATABASE_URL", &url);
            sandbox.set_env("KEYGATE_DATABASE__ACQUIRE_TIMEOUT_MS", "300");
        }
    });
    let [a, c] = [0, 2].map(|n| cluster.nodes[n].http());
    let (held, held_id) = cluster.key(&json!({"name": "held", "scopes": ["calls:read"]}));
    let (other, other_id) = cluster.key(&json!({"name": "held too", "scopes": ["calls:read"]}));
    let (unseen, _) = cluster.key(&json!({"name": "never used on C", "scopes": ["calls:read"]}));
    for key in [&held, &other] {
        held_in_memory(&c, key);
    }

    relay.cut();
    // Longer than a node without a change bus trusts its memory (follower::BLIND_AFTER, 2 s).
    thread::sleep(Duration::from_secs(3));
    let ready = c.send("GET", "/readyz", None, None);
    assert_eq!(ready.status, 200, "{}", ready.text);
    assert_eq!(ready.json(), json!({"status": "degraded", "store": "unavailable", "redis": "ok"}));
    for key in [&held, &other] {
        let r = c.get("/v1/calls", key);
        assert_eq!(
            r.status,
            200,
            "a key in memory keeps verifying: {}\nnode C's log:\n{}",
            r.text,
            cluster.nodes[2].log()
        );
    }
    let r = c.get("/v1/calls", &unseen);
    assert_eq!(
        (r.status, r.code().as_deref()),
        (503, Some("service_unavailable")),
        "only the store knows it: {}",
        r.text
    );
    // A revocation made elsewhere still reaches C, over Redis: it no longer admits the key.
    let revoked = a.post(&format!("/v1/api-keys/{held_id}/revoke"), &cluster.operator, &json!({}));
    assert_eq!(revoked.status, 200, "{}", revoked.text);
    let (_, r) = no_longer_admitted(&c, &held, Duration::from_secs(1));
    assert_eq!(r.status, 503, "it cannot say why without the store, but it refuses: {}", r.text);

    // So does one made with the CLI, which is one more node (SPEC §3) and publishes it too.
    cluster.sandbox.ok(&["keys", "revoke", &other_id]);
    let (_, r) = no_longer_admitted(&c, &other, Duration::from_secs(1));
    assert_eq!(r.status, 503, "a key revoked with the CLI: {}", r.text);

    relay.heal();
    refused_as_revoked(&c, &held, Duration::from_secs(10));
    assert_eq!(c.get("/v1/calls", &unseen).status, 200);
    assert_eq!(c.send("GET", "/readyz", None, None).json()["status"], "ready");
}

#[test]
#[cfg_attr(
    not(all(keygate_pg, keygate_redis)),
    ignore = "set KEYGATE_TEST_POSTGRES_URL and KEYGATE_TEST_REDIS_URL to run the cluster tests"
)]
fn a_node_cut_off_from_postgresql_and_redis_by_a_black_hole_stops_trusting_its_memory() {
    // Node C reaches both through relays that swallow every byte and close nothing.
    let pg = postgres_url();
    let redis = PrivateRedis::start(free_port(), false);
    let (pg_relay, redis_relay) = (Relay::start(postgres_port(pg)), Relay::start(redis.port));
    let upstream = Upstream::start();
    let gateway = format!(
        "[gateway]\nupstream = \"http://127.0.0.1:{}\"\n\n[[gateway.routes]]\nmethod = \"GET\"\npath = \"/v1/calls\"\nscope = \"calls:read\"\n",
        upstream.port
    );
    let cluster = Cluster::start_with(&RedisAt::Url(redis.url()), Some(&gateway), |n, sandbox| {
        if n == 2 {
            let url = sandbox.env()["KEYGATE_DATABASE_URL"]
                .replace(&format!(":{}/", postgres_port(pg)), &format!(":{}/", pg_relay.port));
            sandbox.set_env("KEYGATE_DATABASE_URL", &url);
            sandbox.set_env("KEYGATE_REDIS_URL", &format!("redis://127.0.0.1:{}", redis_relay.port));
        }
    });
    let [a, c] = [0, 2].map(|n| cluster.nodes[n].http());
    let (key, id) = cluster.key(&json!({"name": "held", "scopes": ["calls:read"]}));
    held_in_memory(&c, &key);

    pg_relay.freeze();
    redis_relay.freeze();
    let revoked = a.post(&format!("/v1/api-keys/{id}/revoke"), &cluster.operator, &json!({}));
    assert_eq!(revoked.status, 200, "{}", revoked.text);
    // C hears of it from neither; it must stop trusting what it holds: within the change log's
    // blind time (2 s) once its read times out (1 s) and its subscription's ping goes unanswered.
    let (stopped, r) = no_longer_admitted(&c, &key, Duration::from_secs(5));
    // Without the store the answer waits out database.acquire_timeout_ms (5 s), then 503.
    assert_eq!(r.status, 503, "{}", r.text);
    eprintln!(
        "a node cut off from PostgreSQL and Redis by a black hole stopped admitting a key revoked elsewhere after {stopped:?}"
    );

    let ready = c.send("GET", "/readyz", None, None).json();
    assert_eq!(ready, json!({"status": "degraded", "store": "unavailable", "redis": "unavailable"}));

    pg_relay.heal();
    redis_relay.heal();
    refused_as_revoked(&c, &key, Duration::from_secs(15));
}

/// Uses `key` on `node`'s gateway route while it is admitted (for at most `within`): when the
/// first request that was not admitted was sent, and its answer.
fn no_longer_admitted(node: &Http, key: &str, within: Duration) -> (Duration, Response) {
    let since = Instant::now();
    loop {
        let asked = since.elapsed();
        let r = node.get("/v1/calls", key);
        if r.status != 200 {
            return (asked, r);
        }
        assert!(asked < within, "a revoked key still admitted {asked:?} after the revocation");
        thread::sleep(Duration::from_millis(20));
    }
}

/// Uses `key` on `node`'s gateway route until it is refused as revoked (within `within`): the node
/// has the store back.
fn refused_as_revoked(node: &Http, key: &str, within: Duration) {
    let since = Instant::now();
    loop {
        let r = node.get("/v1/calls", key);
        if r.status == 401 {
            assert_eq!(r.code().as_deref(), Some("api_key_revoked"));
            return;
        }
        assert!(since.elapsed() < within, "the node never got the store back: {} {}", r.status, r.text);
        thread::sleep(Duration::from_millis(100));
    }
}

/// Uses `key` on `node` until the node answers it from memory (a node that has just started
/// does not remember what it looks up until it knows where the change log stands).
/// Waits until `node` answers `key` from its credential cache, and still does after its
/// change-log follower has had time to read the key's creation: that change evicts the key
/// (harmlessly, with the store at hand), and a fill made before the follower read it would be
/// gone by the time a test cuts the node off (seen in CI under load).
fn held_in_memory(node: &Http, key: &str) {
    let hits = || -> u64 {
        let metrics = node.send("GET", "/metrics", None, None).text;
        metrics
            .lines()
            .find(|l| l.starts_with("keygate_auth_cache_hits_total"))
            .and_then(|l| l.rsplit(' ').next()?.parse().ok())
            .unwrap_or(0)
    };
    let hit = || {
        let before = hits();
        let r = node.get("/v1/calls", key);
        assert_eq!(r.status, 200, "{}", r.text);
        hits() > before
    };
    let since = Instant::now();
    loop {
        if hit() {
            // Several of the follower's polls (every 200 ms) later, still held.
            thread::sleep(Duration::from_millis(1500));
            if hit() {
                return;
            }
        }
        assert!(since.elapsed() < Duration::from_secs(15), "the node never held the key in memory");
        thread::sleep(Duration::from_millis(50));
    }
}

fn postgres_port(url: &str) -> u16 {
    let host = url.split('@').next_back().expect("a host").split('/').next().expect("host:port");
    host.rsplit_once(':').and_then(|(_, p)| p.parse().ok()).unwrap_or(5432)
}

/// A TCP relay to a local port that can be cut (every connection closed, new ones refused),
/// frozen (a black hole: bytes are swallowed, nothing is closed, as in a network partition) and
/// healed again.
struct Relay {
    port: u16,
    cut: Arc<AtomicBool>,
    frozen: Arc<AtomicBool>,
    open: Arc<std::sync::Mutex<Vec<TcpStream>>>,
}

impl Relay {
    fn start(target: u16) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the relay");
        let port = listener.local_addr().expect("its address").port();
        let (cut, open) = (Arc::new(AtomicBool::new(false)), Arc::new(std::sync::Mutex::new(Vec::new())));
        let frozen = Arc::new(AtomicBool::new(false));
        let (cut2, open2, frozen2) = (Arc::clone(&cut), Arc::clone(&open), Arc::clone(&frozen));
        thread::spawn(move || {
            for client in listener.incoming().flatten() {
                if cut2.load(Ordering::SeqCst) {
                    let _ = client.shutdown(std::net::Shutdown::Both);
                    continue;
                }
                if frozen2.load(Ordering::SeqCst) {
                    // A black hole accepts nothing either: the connection just hangs.
                    open2.lock().expect("relay").push(client);
                    continue;
                }
                let Ok(server) = TcpStream::connect(("127.0.0.1", target)) else { continue };
                let mut open = open2.lock().expect("relay");
                for stream in [&client, &server] {
                    open.push(stream.try_clone().expect("clone"));
                }
                for (mut from, mut to) in
                    [(client.try_clone().expect("clone"), server.try_clone().expect("clone")), (server, client)]
                {
                    let frozen = Arc::clone(&frozen2);
                    thread::spawn(move || {
                        let mut buf = [0u8; 16 * 1024];
                        loop {
                            match from.read(&mut buf) {
                                Ok(0) | Err(_) => break,
                                Ok(n) if !frozen.load(Ordering::SeqCst) => {
                                    if to.write_all(&buf[..n]).is_err() {
                                        break;
                                    }
                                }
                                Ok(_) => {} // swallowed
                            }
                        }
                        let _ = to.shutdown(std::net::Shutdown::Both);
                    });
                }
            }
        });
        Self { port, cut, frozen, open }
    }

    fn freeze(&self) {
        self.frozen.store(true, Ordering::SeqCst);
    }

    fn cut(&self) {
        self.cut.store(true, Ordering::SeqCst);
        for stream in self.open.lock().expect("relay").drain(..) {
            let _ = stream.shutdown(std::net::Shutdown::Both);
        }
    }

    fn heal(&self) {
        self.cut.store(false, Ordering::SeqCst);
        self.frozen.store(false, Ordering::SeqCst);
        // Connections that lived through the freeze lost bytes: end them.
        for stream in self.open.lock().expect("relay").drain(..) {
            let _ = stream.shutdown(std::net::Shutdown::Both);
        }
    }
}

/// A minimal HTTP upstream: answers every request `200 ok` and counts them.
struct Upstream {
    port: u16,
    served: Arc<AtomicUsize>,
}

impl Upstream {
    fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the upstream");
        let port = listener.local_addr().expect("its address").port();
        let served = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&served);
        thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let counter = Arc::clone(&counter);
                thread::spawn(move || answer(stream, &counter));
            }
        });
        Self { port, served }
    }
}

/// Answers each request on one keep-alive connection until the peer closes it.
fn answer(stream: TcpStream, served: &AtomicUsize) {
    let mut reader = BufReader::new(stream.try_clone().expect("clone the stream"));
    let mut writer = stream;
    loop {
        let mut length = 0usize;
        let mut line = String::new();
        let mut first = true;
        loop {
            line.clear();
            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                return;
            }
            if line == "\r\n" && !first {
                break;
            }
            first = false;
            if let Some((name, value)) = line.split_once(':')
                && name.eq_ignore_ascii_case("content-length")
            {
                length = value.trim().parse().unwrap_or(0);
            }
        }
        let mut body = vec![0; length];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        served.fetch_add(1, Ordering::Relaxed);
        if writer.write_all(b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 2\r\n\r\nok").is_err() {
            return;
        }
    }
}
