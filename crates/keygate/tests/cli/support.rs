//! Helpers for driving the real `keygate` binary: a sandbox directory with its own environment,
//! commands with a time limit, a server child process that is killed on drop, and a small HTTP
//! client.
//!
//! Every child gets `KEYGATE_*` (and `RUST_LOG`) from the sandbox only: whatever the developer's
//! shell exports must not change what a test sees.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::Read;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_keygate");
/// The longest any one CLI command may take (a cold SQLite file is created and migrated).
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a server may take to answer `/healthz`, and to exit after SIGTERM.
pub const SERVER_TIMEOUT: Duration = Duration::from_secs(10);

/// A temporary working directory plus the environment the binary runs with.
pub struct Sandbox {
    dir: tempfile::TempDir,
    env: BTreeMap<String, String>,
}

impl Sandbox {
    pub fn new() -> Self {
        Self { dir: tempfile::tempdir().expect("a temporary directory"), env: BTreeMap::new() }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn file(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn write(&self, name: &str, contents: &str) {
        let path = self.file(name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).expect("create the file's directory");
        }
        std::fs::write(path, contents).expect("write a file in the sandbox");
    }

    /// Sets a variable for every later command (`KEYGATE_*` and `RUST_LOG` come only from here).
    pub fn set_env(&mut self, name: &str, value: &str) {
        self.env.insert(name.to_owned(), value.to_owned());
    }

    /// The variables set so far.
    pub fn env(&self) -> &BTreeMap<String, String> {
        &self.env
    }

    /// Replaces every variable set so far.
    pub fn set_all_env(&mut self, env: BTreeMap<String, String>) {
        self.env = env;
    }

    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(BIN);
        cmd.args(args).current_dir(self.path()).stdin(Stdio::null());
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with("KEYGATE_") {
                cmd.env_remove(&name);
            }
        }
        cmd.env_remove("RUST_LOG");
        cmd.envs(&self.env);
        cmd
    }

    /// Runs `keygate <args>` to completion (bounded by [`COMMAND_TIMEOUT`]).
    pub fn run(&self, args: &[&str]) -> Run {
        run_bounded(self.command(args), args)
    }

    /// Runs a command that must succeed.
    pub fn ok(&self, args: &[&str]) -> Run {
        let run = self.run(args);
        assert!(run.status.success(), "expected success\n{}", run.describe());
        run
    }

    /// Runs a command that must fail with exit code 1; returns its stderr.
    pub fn fails(&self, args: &[&str]) -> Run {
        let run = self.run(args);
        assert_eq!(run.status.code(), Some(1), "expected exit code 1\n{}", run.describe());
        run
    }

    /// Runs `keygate --json <args>`, which must succeed and print exactly one JSON document.
    pub fn json(&self, args: &[&str]) -> Value {
        let mut all = vec!["--json"];
        all.extend_from_slice(args);
        self.ok(&all).json()
    }

    /// `keygate init --json`: the operator account and its key.
    pub fn init(&self) -> (Value, String) {
        let out = self.json(&["init"]);
        let key = out["key"].as_str().expect("init prints the operator key").to_owned();
        (out["account"].clone(), key)
    }

    /// Every file of the SQLite database (`keygate.db`, `-wal`, `-shm`), concatenated.
    pub fn database_bytes(&self) -> Vec<u8> {
        let mut bytes = Vec::new();
        for name in ["keygate.db", "keygate.db-wal", "keygate.db-shm"] {
            if let Ok(b) = std::fs::read(self.file(name)) {
                bytes.extend_from_slice(&b);
            }
        }
        assert!(!bytes.is_empty(), "no database files in {}", self.path().display());
        bytes
    }
}

/// A finished command.
pub struct Run {
    pub args: String,
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn describe(&self) -> String {
        format!(
            "keygate {}\nstatus: {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.args, self.status, self.stdout, self.stderr
        )
    }

    /// stdout as exactly one JSON document (trailing whitespace aside).
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not exactly one JSON document: {e}\n{}", self.describe()))
    }

    /// stdout and stderr together, for "appears nowhere" checks.
    pub fn all_output(&self) -> String {
        format!("{}\n{}", self.stdout, self.stderr)
    }
}

fn run_bounded(mut cmd: Command, args: &[&str]) -> Run {
    let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("start the keygate binary");
    let stdout = reader(child.stdout.take());
    let stderr = reader(child.stderr.take());
    let deadline = Instant::now() + COMMAND_TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait().expect("poll the child") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("keygate {} did not finish within {COMMAND_TIMEOUT:?}", args.join(" "));
        }
        thread::sleep(Duration::from_millis(10));
    };
    Run {
        args: args.join(" "),
        status,
        stdout: stdout.join().expect("read stdout"),
        stderr: stderr.join().expect("read stderr"),
    }
}

fn reader(pipe: Option<impl Read + Send + 'static>) -> thread::JoinHandle<String> {
    thread::spawn(move || {
        let mut out = String::new();
        if let Some(mut pipe) = pipe {
            let _ = pipe.read_to_string(&mut out);
        }
        out
    })
}

/// A port that was free a moment ago: another test may take it before the caller binds it.
/// [`Server::spawn`] checks that the server it waits for is its own; a test that needs a port
/// where nothing listens holds a [`ClosedPort`] instead.
pub fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    listener.local_addr().expect("its address").port()
}

/// A port on 127.0.0.1, held while this lives, where nothing accepts connections.
///
/// The socket is bound and never listens, so a connection is refused (`ECONNREFUSED`). It is
/// bound without `SO_REUSEADDR`, so no other process binds the port meanwhile, not even a
/// listener that sets it (Tokio's and Redis's do): no test's server can answer there.
pub struct ClosedPort {
    pub port: u16,
    _socket: tokio::net::TcpSocket,
}

impl ClosedPort {
    pub fn new() -> Self {
        let socket = tokio::net::TcpSocket::new_v4().expect("a TCP socket");
        socket.bind(([127, 0, 0, 1], 0).into()).expect("bind an ephemeral port");
        let port = socket.local_addr().expect("its address").port();
        Self { port, _socket: socket }
    }
}

/// Whether process `pid` holds a listening TCP socket on IPv4 `port`: the socket inodes among its
/// descriptors (`/proc/<pid>/fd`) matched against the listeners of its network namespace
/// (`/proc/<pid>/net/tcp`, where state `0A` is LISTEN and the tenth field the inode). Linux only.
pub fn listens_on(pid: u32, port: u16) -> bool {
    let Ok(table) = std::fs::read_to_string(format!("/proc/{pid}/net/tcp")) else { return false };
    let inodes: Vec<String> = table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let local_port = u16::from_str_radix(fields.get(1)?.rsplit(':').next()?, 16).ok()?;
            let inode = fields.get(9)?;
            (local_port == port && *fields.get(3)? == "0A").then(|| format!("socket:[{inode}]"))
        })
        .collect();
    let Ok(descriptors) = std::fs::read_dir(format!("/proc/{pid}/fd")) else { return false };
    descriptors
        .flatten()
        .filter_map(|fd| std::fs::read_link(fd.path()).ok())
        .any(|target| inodes.iter().any(|inode| target.as_os_str() == inode.as_str()))
}

/// A running `keygate serve`, killed when dropped.
pub struct Server {
    child: Child,
    pub port: u16,
    pub base: String,
    log: PathBuf,
    _logs: tempfile::TempDir,
}

impl Server {
    /// `keygate serve --listen 127.0.0.1:<free port> <extra>`, waiting until `/healthz` answers.
    pub fn start(sandbox: &Sandbox, extra: &[&str]) -> Self {
        for _ in 0..3 {
            let port = free_port();
            let listen = format!("127.0.0.1:{port}");
            let mut args = vec!["serve", "--listen", &listen];
            args.extend_from_slice(extra);
            match Self::spawn(sandbox, &args, port) {
                Ok(server) => return server,
                // Someone took the port between our probe and the bind: try another.
                Err(log) if log.contains("cannot listen") => {}
                Err(log) => panic!("keygate serve exited before it was healthy:\n{log}"),
            }
        }
        panic!("keygate serve could not find a free port in three tries");
    }

    /// Runs `keygate <args>` (which must make it listen on `port`) and waits until `/healthz`
    /// answers there from this child: another test's server that took the port in between does
    /// not count (see [`listens_on`]).
    ///
    /// # Errors
    /// The server's log, when it exited before becoming healthy.
    pub fn spawn(sandbox: &Sandbox, args: &[&str], port: u16) -> Result<Self, String> {
        let logs = tempfile::tempdir().expect("a directory for server logs");
        let log = logs.path().join("stderr.log");
        let stderr = std::fs::File::create(&log).expect("create the log file");
        let stdout = std::fs::File::create(logs.path().join("stdout.log")).expect("create the stdout file");
        let child = sandbox.command(args).stdout(stdout).stderr(stderr).spawn().expect("start keygate serve");
        let mut server = Self { child, port, base: format!("http://127.0.0.1:{port}"), log, _logs: logs };
        let http = Http::new(&server.base);
        let deadline = Instant::now() + SERVER_TIMEOUT;
        loop {
            if server.child.try_wait().expect("poll the server").is_some() {
                return Err(server.log());
            }
            if http.try_get("/healthz").is_some_and(|r| r.status == 200) && listens_on(server.child.id(), port) {
                return Ok(server);
            }
            if Instant::now() > deadline {
                let log = server.log();
                let _ = server.child.kill();
                panic!("keygate serve was not healthy within {SERVER_TIMEOUT:?}:\n{log}");
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn http(&self) -> Http {
        Http::new(&self.base)
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Everything the server wrote to stderr so far (its log).
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Sends SIGTERM and waits (bounded) for the process to exit.
    pub fn terminate(&mut self) -> ExitStatus {
        let sent = Command::new("kill").arg("-TERM").arg(self.child.id().to_string()).status().expect("run kill -TERM");
        assert!(sent.success(), "kill -TERM failed");
        let deadline = Instant::now() + SERVER_TIMEOUT;
        loop {
            if let Some(status) = self.child.try_wait().expect("poll the server") {
                return status;
            }
            assert!(Instant::now() < deadline, "keygate serve did not exit within {SERVER_TIMEOUT:?} of SIGTERM");
            thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A response, read completely.
pub struct Response {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub text: String,
}

impl Response {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.text)
            .unwrap_or_else(|e| panic!("response is not JSON ({e}): {} {}", self.status, self.text))
    }

    /// The problem document's `code`, if this is one.
    pub fn code(&self) -> Option<String> {
        serde_json::from_str::<Value>(&self.text).ok()?.get("code")?.as_str().map(str::to_owned)
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// Status line, headers and body, for "appears nowhere" checks.
    pub fn transcript(&self) -> String {
        let mut out = format!("{}\n", self.status);
        for (name, value) in &self.headers {
            let _ = writeln!(out, "{name}: {}", String::from_utf8_lossy(value.as_bytes()));
        }
        out.push_str(&self.text);
        out
    }
}

/// A blocking HTTP client over a small Tokio runtime.
pub struct Http {
    runtime: tokio::runtime::Runtime,
    client: reqwest::Client,
    base: String,
}

impl Http {
    pub fn new(base: &str) -> Self {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a Tokio runtime");
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("an HTTP client");
        Self { runtime, client, base: base.trim_end_matches('/').to_owned() }
    }

    /// `method path` with an optional bearer key and JSON body.
    pub fn send(&self, method: &str, path: &str, key: Option<&str>, body: Option<&Value>) -> Response {
        self.try_send(method, path, key, body).unwrap_or_else(|e| panic!("{method} {path} failed: {e}"))
    }

    pub fn get(&self, path: &str, key: &str) -> Response {
        self.send("GET", path, Some(key), None)
    }

    pub fn post(&self, path: &str, key: &str, body: &Value) -> Response {
        self.send("POST", path, Some(key), Some(body))
    }

    pub fn try_get(&self, path: &str) -> Option<Response> {
        self.try_send("GET", path, None, None).ok()
    }

    /// `GET path` with a bearer key and one more header.
    pub fn get_with_header(&self, path: &str, key: &str, name: &str, value: &str) -> Response {
        self.try_send_with("GET", path, Some(key), None, Some((name, value)))
            .unwrap_or_else(|e| panic!("GET {path} failed: {e}"))
    }

    /// `POST path` with a URL-encoded form and a `Cookie` header, as a browser posts a form.
    pub fn post_form(&self, path: &str, cookie: &str, form: &[(&str, &str)]) -> Response {
        let body: String = form_urlencoded::Serializer::new(String::new()).extend_pairs(form).finish();
        let request = self
            .client
            .post(format!("{}{path}", self.base))
            .header("cookie", cookie)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body);
        self.runtime.block_on(async {
            let response = request.send().await.unwrap_or_else(|e| panic!("POST {path} failed: {e}"));
            let status = response.status().as_u16();
            let headers = response.headers().clone();
            let text = response.text().await.unwrap_or_default();
            Response { status, headers, text }
        })
    }

    fn try_send(&self, method: &str, path: &str, key: Option<&str>, body: Option<&Value>) -> Result<Response, String> {
        self.try_send_with(method, path, key, body, None)
    }

    fn try_send_with(
        &self,
        method: &str,
        path: &str,
        key: Option<&str>,
        body: Option<&Value>,
        header: Option<(&str, &str)>,
    ) -> Result<Response, String> {
        let method = reqwest::Method::from_bytes(method.as_bytes()).map_err(|e| e.to_string())?;
        let mut request = self.client.request(method, format!("{}{path}", self.base));
        if let Some((name, value)) = header {
            request = request.header(name, value);
        }
        if let Some(key) = key {
            request = request.bearer_auth(key);
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        self.runtime.block_on(async {
            let response = request.send().await.map_err(|e| e.to_string())?;
            let status = response.status().as_u16();
            let headers = response.headers().clone();
            let text = response.text().await.map_err(|e| e.to_string())?;
            Ok(Response { status, headers, text })
        })
    }
}

/// Every plaintext-looking key in `text`: `<prefix>_<live|test>_` + 36 base62 characters.
pub fn plaintexts(text: &str) -> Vec<String> {
    let bytes = text.as_bytes();
    let mut found = Vec::new();
    for marker in ["_live_", "_test_"] {
        for (at, _) in text.match_indices(marker) {
            let mut start = at;
            while start > 0 && (bytes[start - 1].is_ascii_lowercase() || bytes[start - 1].is_ascii_digit()) {
                start -= 1;
            }
            let body_start = at + marker.len();
            let body_end = body_start + 36;
            let is_key = start < at
                && bytes.len() >= body_end
                && bytes[body_start..body_end].iter().all(u8::is_ascii_alphanumeric)
                && bytes.get(body_end).is_none_or(|b| !b.is_ascii_alphanumeric());
            if is_key {
                found.push(text[start..body_end].to_owned());
            }
        }
    }
    found
}

/// The one plaintext key in `text`.
pub fn the_plaintext(text: &str) -> String {
    let found = plaintexts(text);
    assert_eq!(found.len(), 1, "expected exactly one key in:\n{text}");
    found.into_iter().next().expect("one key")
}

/// The secret part of a plaintext key: everything after `<prefix>_<env>_`.
pub fn secret_part(plaintext: &str) -> &str {
    &plaintext[plaintext.len() - 36..]
}

pub fn contains_bytes(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && haystack.windows(needle.len()).any(|w| w == needle)
}

/// Polls `f` every 20 ms until it returns `Some`, or panics after `limit` with `what`.
pub fn eventually<T>(limit: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "{what}: not within {limit:?}");
        thread::sleep(Duration::from_millis(20));
    }
}
