//! `keygate serve` as an operator runs it: health endpoints, `keygate healthcheck`, graceful
//! shutdown on SIGTERM, the bundled API reference, and CLI changes reaching a running server.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::support::{ClosedPort, Http, Sandbox, Server, eventually, free_port, listens_on};

#[test]
fn serve_is_healthy_until_sigterm_and_then_exits_zero() {
    let sandbox = Sandbox::new();
    sandbox.init();
    let mut server = Server::start(&sandbox, &[]);
    let http = server.http();
    let health = http.send("GET", "/healthz", None, None);
    assert_eq!(health.status, 200);
    assert_eq!(health.json()["status"], "ok");
    assert!(health.header("x-request-id").is_some_and(|id| id.starts_with("req_")), "every response has an id");
    let ready = http.send("GET", "/readyz", None, None);
    assert_eq!(ready.status, 200, "{}", ready.text);

    let check = sandbox.ok(&["healthcheck", "--url", &server.base]);
    assert!(check.stdout.contains("healthy"), "{}", check.describe());
    let check = sandbox.json(&["healthcheck", "--url", &server.base]);
    assert_eq!(check["healthy"], true);

    let status = server.terminate();
    assert!(status.success(), "SIGTERM is a clean exit, got {status}\n{}", server.log());
    assert!(server.log().contains("stopped"), "says it stopped:\n{}", server.log());
}

#[test]
fn healthcheck_fails_against_a_closed_port() {
    let sandbox = Sandbox::new();
    let closed = ClosedPort::new();
    let url = format!("http://127.0.0.1:{}", closed.port);
    let run = sandbox.fails(&["healthcheck", "--url", &url]);
    assert!(run.stdout.contains("unhealthy"), "{}", run.describe());
    assert!(run.stdout.contains("nothing accepts connections"), "says why: {}", run.describe());
    let run = sandbox.fails(&["--json", "healthcheck", "--url", &url]);
    assert_eq!(run.json()["healthy"], false);
    assert!(run.json()["reason"].as_str().is_some_and(|r| r.contains(&url)), "{}", run.describe());
}

#[test]
fn healthcheck_defaults_to_the_configured_listen_address() {
    let mut sandbox = Sandbox::new();
    sandbox.init();
    let server = Server::start(&sandbox, &[]);
    sandbox.set_env("KEYGATE_LISTEN", &format!("127.0.0.1:{}", server.port));
    sandbox.ok(&["healthcheck"]);
}

#[test]
fn listen_flag_overrides_env_and_file() {
    // The file's and the environment's ports are held shut: a server that chose either could not
    // bind it and would exit instead of answering on the flag's port.
    let mut sandbox = Sandbox::new();
    sandbox.init();
    let (file, env) = (ClosedPort::new(), ClosedPort::new());
    sandbox.write("keygate.toml", &format!("listen = \"127.0.0.1:{}\"\n", file.port));
    sandbox.set_env("KEYGATE_LISTEN", &format!("127.0.0.1:{}", env.port));
    let flag_port = free_port();
    let listen = format!("127.0.0.1:{flag_port}");
    let server = Server::spawn(&sandbox, &["serve", "--listen", &listen], flag_port)
        .unwrap_or_else(|log| panic!("serve --listen {listen} did not start:\n{log}"));
    assert_eq!(server.http().send("GET", "/healthz", None, None).status, 200);
    // `spawn` returned: this process listens on the flag's port.
    let pid = server.pid();
    assert!(!listens_on(pid, file.port) && !listens_on(pid, env.port), "not on the file's or the environment's port");
}

#[test]
fn env_listen_overrides_the_file() {
    let mut sandbox = Sandbox::new();
    sandbox.init();
    let file = ClosedPort::new();
    let env_port = free_port();
    sandbox.write("keygate.toml", &format!("listen = \"127.0.0.1:{}\"\n", file.port));
    sandbox.set_env("KEYGATE_LISTEN", &format!("127.0.0.1:{env_port}"));
    let server = Server::spawn(&sandbox, &["serve"], env_port)
        .unwrap_or_else(|log| panic!("serve on KEYGATE_LISTEN did not start:\n{log}"));
    assert_eq!(server.http().send("GET", "/healthz", None, None).status, 200);
    assert!(!listens_on(server.pid(), file.port), "not on the file's port");
}

#[test]
fn serve_without_init_warns_and_still_serves() {
    let sandbox = Sandbox::new();
    let server = Server::start(&sandbox, &[]);
    assert!(server.log().contains("keygate init"), "tells the operator what to do:\n{}", server.log());
}

#[test]
fn the_interactive_reference_and_the_spec_are_served_without_a_cdn() {
    let sandbox = Sandbox::new();
    sandbox.init();
    let server = Server::start(&sandbox, &[]);
    let http = server.http();
    let root = http.send("GET", "/", None, None);
    assert!((300..400).contains(&root.status), "`/` redirects: {}", root.status);
    assert_eq!(root.header("location"), Some("/docs/"));
    let docs = http.send("GET", "/docs/", None, None);
    assert_eq!(docs.status, 200);
    assert!(docs.text.to_lowercase().contains("swagger"), "{}", docs.text);
    for cdn in ["unpkg.com", "jsdelivr", "cdnjs", "https://"] {
        assert!(!docs.text.contains(cdn), "the reference loads nothing from {cdn}:\n{}", docs.text);
    }
    let spec = http.send("GET", "/openapi.json", None, None);
    assert_eq!(spec.status, 200);
    let printed = sandbox.json(&["openapi"]);
    assert_eq!(spec.json(), printed, "`keygate openapi` prints what /openapi.json serves");
}

#[test]
fn unknown_routes_are_problem_documents() {
    let sandbox = Sandbox::new();
    let server = Server::start(&sandbox, &[]);
    let r = server.http().send("GET", "/v1/nothing-here", None, None);
    assert_eq!(r.status, 404);
    assert_eq!(r.header("content-type"), Some("application/problem+json"));
    assert_eq!(r.code().as_deref(), Some("route_not_found"));
    assert_eq!(r.json()["request_id"].as_str(), r.header("x-request-id"));
}

/// SPEC §3: a revocation made by another node — and a CLI command on the same database counts
/// as one — takes effect on a running server within 1 second. (With no credential cache the
/// very next request is refused; a cache may delay that, but never beyond the second.)
#[test]
fn a_key_revoked_by_the_cli_is_refused_by_a_running_server() {
    let sandbox = Sandbox::new();
    sandbox.init();
    let partner = sandbox.json(&["accounts", "create", "--name", "Acme"]);
    let account_id = partner["account"]["id"].as_str().expect("account id").to_owned();
    let key = partner["key"].as_str().expect("key").to_owned();
    let key_id =
        sandbox.json(&["keys", "list", "--account", &account_id])["data"][0]["id"].as_str().expect("key id").to_owned();

    let server = Server::start(&sandbox, &[]);
    let http = server.http();
    // Use the key first, so anything the server caches about it is warm.
    for _ in 0..3 {
        assert_eq!(http.get("/v1/account", &key).status, 200);
    }

    sandbox.ok(&["keys", "revoke", &key_id, "--account", &account_id, "--reason", "compromised"]);
    let revoked_at = Instant::now();
    let first = http.get("/v1/account", &key);
    if first.status != 401 {
        eprintln!("note: the first request after the CLI revocation answered {}", first.status);
    }
    let refused = eventually(Duration::from_secs(1), "the revocation reaches the server", || {
        let r = http.get("/v1/account", &key);
        assert!(r.status == 200 || r.status == 401, "unexpected {} {}", r.status, r.text);
        (r.status == 401).then_some(r)
    });
    assert!(revoked_at.elapsed() <= Duration::from_millis(1500));
    assert_eq!(refused.code().as_deref(), Some("api_key_revoked"), "{}", refused.text);
}

/// The same for a roll: the old key stops (`api_key_expired`) and the new one works.
#[test]
fn a_key_rolled_by_the_cli_is_replaced_on_a_running_server() {
    let sandbox = Sandbox::new();
    sandbox.init();
    let partner = sandbox.json(&["accounts", "create", "--name", "Acme"]);
    let account_id = partner["account"]["id"].as_str().expect("account id").to_owned();
    let old_key = partner["key"].as_str().expect("key").to_owned();
    let key_id =
        sandbox.json(&["keys", "list", "--account", &account_id])["data"][0]["id"].as_str().expect("key id").to_owned();
    let server = Server::start(&sandbox, &[]);
    let http = server.http();
    assert_eq!(http.get("/v1/account", &old_key).status, 200);

    let rolled = sandbox.json(&["keys", "roll", &key_id, "--account", &account_id]);
    let new_key = rolled["key"].as_str().expect("the new key");
    assert_eq!(http.get("/v1/account", new_key).status, 200, "the new key works at once");
    let refused = eventually(Duration::from_secs(1), "the roll reaches the server", || {
        let r = http.get("/v1/account", &old_key);
        (r.status == 401).then_some(r)
    });
    assert_eq!(refused.code().as_deref(), Some("api_key_expired"), "{}", refused.text);

    let created = http.post("/v1/api-keys", new_key, &json!({"name": "made with the rolled key"}));
    assert_eq!(created.status, 201, "{}", created.text);
}

#[test]
fn a_use_answered_just_before_sigterm_is_flushed_on_the_way_out() {
    let sandbox = Sandbox::new();
    let (_, operator) = sandbox.init();
    let mut server = Server::start(&sandbox, &[]);
    let http = server.http();
    let created = http.post("/v1/api-keys", &operator, &json!({"name": "used once", "scopes": ["api_keys:read"]}));
    assert_eq!(created.status, 201, "{}", created.text);
    let created = created.json();
    let key = created["key"].as_str().expect("a created key has its plaintext").to_owned();
    let id = created["id"].as_str().expect("a created key has an id").to_owned();

    // Served by a worker thread; its last use waits in memory for the next batch (every second).
    let used = http.get("/v1/api-keys", &key);
    assert_eq!(used.status, 200, "{}", used.text);
    let status = server.terminate();
    assert!(status.success(), "SIGTERM is a clean exit, got {status}\n{}", server.log());

    let stored = sandbox.json(&["keys", "get", &id]);
    assert!(stored["last_used_at"].is_string(), "the last use was written at shutdown: {stored}");
    assert_eq!(stored["last_used_ip"], "127.0.0.1", "{stored}");
}

#[test]
fn workers_sets_how_many_threads_serve_and_every_connection_is_answered() {
    let mut sandbox = Sandbox::new();
    let (_, operator) = sandbox.init();
    sandbox.set_env("KEYGATE_WORKERS", "3");
    let mut server = Server::start(&sandbox, &[]);
    // Each client is its own connection: handed to the three workers in turn.
    for n in 0..7 {
        let listed = server.http().get("/v1/api-keys", &operator);
        assert_eq!(listed.status, 200, "connection {n}: {}", listed.text);
        assert_eq!(listed.json()["data"].as_array().map(Vec::len), Some(1), "connection {n}: {}", listed.text);
    }
    let status = server.terminate();
    assert!(status.success(), "{status}\n{}", server.log());
    assert!(server.log().contains("workers=3"), "says how many threads serve:\n{}", server.log());

    sandbox.set_env("KEYGATE_WORKERS", "5000");
    let run = sandbox.fails(&["serve", "--listen", "127.0.0.1:0"]);
    assert!(run.stderr.contains("workers must be between 0 (one per core) and 1024"), "{}", run.describe());
}

#[test]
fn sigterm_lets_a_forwarded_request_in_flight_finish() {
    use std::io::{Read, Write};
    // An upstream that answers its one request a second late.
    let upstream = std::net::TcpListener::bind("127.0.0.1:0").expect("bind the upstream");
    let upstream_addr = upstream.local_addr().expect("the upstream's address");
    let upstream = std::thread::spawn(move || {
        let (mut conn, _) = upstream.accept().expect("keygate connects");
        let mut request = Vec::new();
        let mut buf = [0u8; 4096];
        while !request.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = conn.read(&mut buf).expect("read the request");
            assert!(n > 0, "the request was cut off");
            request.extend_from_slice(&buf[..n]);
        }
        std::thread::sleep(Duration::from_secs(1));
        conn.write_all(b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 8\r\n\r\nfinished")
            .expect("answer");
    });
    let sandbox = Sandbox::new();
    let (_, operator) = sandbox.init();
    sandbox.write(
        "keygate.toml",
        &format!(
            "[gateway]\nupstream = \"http://{upstream_addr}\"\n[[gateway.routes]]\nmethod = \"GET\"\npath = \"/v1/slow\"\nscope = \"calls:read\"\n"
        ),
    );
    let mut server = Server::start(&sandbox, &[]);
    let base = server.base.clone();
    let in_flight = std::thread::spawn(move || crate::support::Http::new(&base).get("/v1/slow", &operator));
    std::thread::sleep(Duration::from_millis(300));
    let sent = Instant::now();
    let status = server.terminate();
    let answered = in_flight.join().expect("the client thread");
    assert_eq!(answered.status, 200, "{}", answered.text);
    assert_eq!(answered.text, "finished");
    assert!(status.success(), "{status}\n{}", server.log());
    assert!(sent.elapsed() >= Duration::from_millis(500), "the server waited for the request before exiting");
    upstream.join().expect("the upstream thread");
}

/// SPEC §8: nothing acknowledged is lost at a graceful shutdown. N requests answered (some
/// refused), SIGTERM at once, then a fresh server finds every one of them in the request log and
/// in the key's usage.
fn every_answered_request_is_kept_through_sigterm(sandbox: &Sandbox) {
    const OK: usize = 600;
    const REFUSED: usize = 200;
    const CLIENTS: usize = 8;
    // Limits far above the load: this counts requests, it does not hit limits.
    sandbox.write(
        "keygate.toml",
        "[limits]\nmax_key_rate_limit_per_minute = 1000000\ndefault_account_rate_limit_per_minute = 1000000\n",
    );
    let (_, operator) = sandbox.init();
    let mut server = Server::start(sandbox, &[]);
    let created = server.http().post(
        "/v1/api-keys",
        &operator,
        &json!({"name": "load", "scopes": ["tenants:read"], "rate_limit_per_minute": 1_000_000}),
    );
    assert_eq!(created.status, 201, "{}", created.text);
    let created = created.json();
    let key = created["key"].as_str().expect("a created key has its plaintext").to_owned();
    let id = created["id"].as_str().expect("a created key has an id").to_owned();

    // CLIENTS threads, each with its own keep-alive connection, sending its share in turn: every
    // request is answered before SIGTERM goes out.
    let base = server.base.clone();
    let threads: Vec<_> = (0..CLIENTS)
        .map(|n| {
            let (base, key) = (base.clone(), key.clone());
            std::thread::spawn(move || {
                let http = Http::new(&base);
                let mut statuses = Vec::new();
                for i in 0..(OK + REFUSED) / CLIENTS {
                    // One in four asks for what the key may not read: 403 insufficient_scope.
                    let path = if (n + i) % 4 == 0 { "/v1/api-keys" } else { "/v1/tenants" };
                    statuses.push(http.get(path, &key).status);
                }
                statuses
            })
        })
        .collect();
    let statuses: Vec<u16> = threads.into_iter().flat_map(|t| t.join().expect("a client thread")).collect();
    assert_eq!(statuses.iter().filter(|s| **s == 200).count(), OK, "{statuses:?}");
    assert_eq!(statuses.iter().filter(|s| **s == 403).count(), REFUSED, "{statuses:?}");
    let status = server.terminate();
    assert!(status.success(), "SIGTERM is a clean exit, got {status}\n{}", server.log());
    drop(server);

    let server = Server::start(sandbox, &[]);
    let http = server.http();
    let usage = http.get(&format!("/v1/api-keys/{id}/usage"), &operator).json();
    let count = |outcome: &str| -> u64 {
        usage["data"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|r| r["outcome"] == outcome)
            .filter_map(|r| r["count"].as_u64())
            .sum()
    };
    assert_eq!((count("ok"), count("insufficient_scope")), (OK as u64, REFUSED as u64), "{usage}");
    let mut records = 0;
    let mut cursor: Option<String> = None;
    loop {
        let mut path = format!("/v1/requests?key_id={id}&limit=100");
        if let Some(c) = &cursor {
            path.push_str(&format!("&cursor={c}"));
        }
        let page = http.get(&path, &operator).json();
        records += page["data"].as_array().map_or(0, Vec::len);
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    assert_eq!(records, OK + REFUSED, "one request-log record per answered request");
}

#[test]
fn nothing_answered_is_lost_at_sigterm_on_sqlite() {
    every_answered_request_is_kept_through_sigterm(&Sandbox::new());
}

#[test]
#[cfg_attr(not(keygate_pg), ignore = "set KEYGATE_TEST_POSTGRES_URL to run the PostgreSQL tests")]
fn nothing_answered_is_lost_at_sigterm_on_postgres() {
    #[cfg(keygate_pg)]
    {
        let admin = env!("KEYGATE_TEST_POSTGRES_URL");
        let name = format!("kg_sigterm_{}", ulid::Ulid::generate().to_string().to_lowercase());
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a Tokio runtime");
        let exec = |sql: String| {
            runtime.block_on(async {
                use sqlx::Connection as _;
                let mut conn = sqlx::PgConnection::connect(admin).await.expect("connect to PostgreSQL");
                sqlx::query(sqlx::AssertSqlSafe(sql)).execute(&mut conn).await.expect("run the statement");
                let _ = conn.close().await;
            });
        };
        exec(format!("CREATE DATABASE {name}"));
        let (server, _) = admin.rsplit_once('/').expect("a URL with a database name");
        let mut sandbox = Sandbox::new();
        sandbox.set_env("KEYGATE_DATABASE_URL", &format!("{server}/{name}"));
        sandbox.set_env("KEYGATE_HASH_SECRET", "0123456789abcdef0123456789abcdef-test");
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            every_answered_request_is_kept_through_sigterm(&sandbox);
        }));
        exec(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"));
        if let Err(panic) = outcome {
            std::panic::resume_unwind(panic);
        }
    }
}
