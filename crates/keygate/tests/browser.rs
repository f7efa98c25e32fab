//! The dashboard (SPEC §12) in a real browser: Debian's Chromium, driven by `playwright-core`
//! from the Node suite in `tests/browser/` at the repository's root.
//!
//! This test prepares what the suite needs with the real binary, as an operator would: a SQLite
//! database in a temporary directory (`keygate init`), a partner account (`keygate accounts
//! create`), its owner, a viewer and a developer without a password (who gets a one-time sign-in
//! link), and an owner of the operator account (`keygate users create`, passwords on standard
//! input); then it starts `keygate serve` (trusting 127.0.0.1 as a proxy, so the suite can show
//! the `Secure` cookie behind an https proxy), installs the suite's packages when `node_modules`
//! is missing or older than `package-lock.json` (`npm ci`), and runs `node --test` with the
//! server's address and the credentials in `DASHBOARD_*` variables (keygate refuses unknown
//! `KEYGATE_*` ones). The suite's screenshots go to `SCREENSHOT_DIR` (by default
//! `target/browser-screenshots`).
//!
//! It needs Node, npm and `/usr/bin/chromium`, so it runs only when `KEYGATE_TEST_BROWSER` is set
//! (`build.rs` turns it into `cfg(keygate_browser)`); elsewhere it is listed as skipped, with the
//! reason. `.ci/run` installs them and sets it.

#[allow(dead_code)]
#[path = "cli/support.rs"]
mod support;

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;
use support::{Sandbox, Server};

/// The whole suite, browser start and `npm ci` included, must finish within this.
const SUITE_TIMEOUT: Duration = Duration::from_secs(600);

const PARTNER: &str = "Northwind Telecom";
const OWNER_EMAIL: &str = "maria.lopez@northwind.example";
const OWNER_PASSWORD: &str = "a long pass phrase for Maria";
const VIEWER_EMAIL: &str = "sam.chen@northwind.example";
const VIEWER_PASSWORD: &str = "Sam reads but never writes";
const OPERATOR_EMAIL: &str = "ops@keygate.example";
const OPERATOR_PASSWORD: &str = "the operator's own pass phrase";
/// A developer made without a password: signs in with a one-time link, then sets one.
const NEWCOMER_EMAIL: &str = "priya.patel@northwind.example";

fn repository_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().expect("the repository's root")
}

/// `keygate --json users create [--account ID] --email E --role R --password-stdin`.
fn create_user(sandbox: &Sandbox, account: Option<&str>, email: &str, role: &str, password: &str) -> Value {
    let mut args = vec!["--json", "users", "create", "--email", email, "--role", role, "--password-stdin"];
    if let Some(account) = account {
        args.extend(["--account", account]);
    }
    let mut child = sandbox
        .command(&args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("keygate starts");
    child.stdin.take().expect("a stdin pipe").write_all(format!("{password}\n").as_bytes()).expect("write");
    let out = child.wait_with_output().expect("keygate users create finishes");
    assert!(
        out.status.success(),
        "keygate {} failed:\n{}{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("one JSON document")
}

/// Runs `program args` in `dir` to completion within `limit`; its exit success and its output.
fn run(program: &str, args: &[&str], dir: &Path, envs: &[(&str, String)], limit: Duration) -> (bool, String) {
    let mut command = Command::new(program);
    command.args(args).current_dir(dir).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    for (name, value) in envs {
        command.env(name, value);
    }
    let mut child = command.spawn().unwrap_or_else(|e| {
        panic!("cannot run {program} ({e}): the browser suite needs Node and npm on PATH (.ci/run installs them)")
    });
    let stdout = drain(child.stdout.take());
    let stderr = drain(child.stderr.take());
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait().expect("poll the child") {
            break Some(status);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        thread::sleep(Duration::from_millis(50));
    };
    let output = format!(
        "{}{}",
        stdout.join().expect("read stdout"),
        stderr.join().map(|e| if e.is_empty() { e } else { format!("--- stderr ---\n{e}") }).expect("read stderr")
    );
    match status {
        Some(status) => (status.success(), output),
        None => (false, format!("{program} {} did not finish within {limit:?}\n{output}", args.join(" "))),
    }
}

fn drain(pipe: Option<impl std::io::Read + Send + 'static>) -> thread::JoinHandle<String> {
    thread::spawn(move || {
        let mut out = String::new();
        if let Some(mut pipe) = pipe {
            let _ = pipe.read_to_string(&mut out);
        }
        out
    })
}

/// `npm ci` unless `node_modules` already holds what `package-lock.json` names (npm writes its
/// own copy, `node_modules/.package-lock.json`, after installing).
fn install_packages(suite: &Path) {
    let modified = |p: PathBuf| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    let lock = modified(suite.join("package-lock.json")).expect("tests/browser/package-lock.json is committed");
    let fresh = modified(suite.join("node_modules/.package-lock.json")).is_some_and(|installed| installed >= lock);
    if !fresh {
        let (ok, output) = run("npm", &["ci", "--no-audit", "--no-fund"], suite, &[], Duration::from_secs(300));
        assert!(ok, "npm ci failed in {}:\n{output}", suite.display());
    }
}

#[test]
#[cfg_attr(
    not(keygate_browser),
    ignore = "set KEYGATE_TEST_BROWSER=1 to run the browser suite (needs Node, npm and /usr/bin/chromium; .ci/run installs them)"
)]
fn the_dashboard_works_in_a_real_browser() {
    let started = Instant::now();
    let mut sandbox = Sandbox::new();
    // The suite sends `X-Forwarded-Proto: https` from 127.0.0.1, as a TLS-terminating proxy on
    // this host would: the session cookie must then be `__Host-` and `Secure`.
    sandbox.set_env("KEYGATE_TRUSTED_PROXIES", "127.0.0.1");
    sandbox.init();
    let partner = sandbox.json(&["accounts", "create", "--name", PARTNER]);
    let account_id = partner["account"]["id"].as_str().expect("the account's id").to_owned();
    let account_key = partner["key"].as_str().expect("the account's first key").to_owned();
    create_user(&sandbox, Some(&account_id), OWNER_EMAIL, "owner", OWNER_PASSWORD);
    create_user(&sandbox, Some(&account_id), VIEWER_EMAIL, "viewer", VIEWER_PASSWORD);
    create_user(&sandbox, None, OPERATOR_EMAIL, "owner", OPERATOR_PASSWORD);
    let newcomer =
        sandbox.json(&["users", "create", "--account", &account_id, "--email", NEWCOMER_EMAIL, "--role", "developer"]);
    // The link names `listen` (not the port the server gets below): the suite keeps its path.
    let link = newcomer["sign_in_link"]["url"].as_str().expect("a user without a password gets a link");
    let link_path = &link[link.find("/dashboard/").expect("the link's path")..];
    let server = Server::start(&sandbox, &[]);

    let root = repository_root();
    let suite = root.join("tests/browser");
    install_packages(&suite);
    let screenshots = std::env::var("SCREENSHOT_DIR")
        .ok()
        .filter(|d| !d.is_empty())
        .map_or_else(|| root.join("target/browser-screenshots"), PathBuf::from);
    let envs = [
        ("DASHBOARD_URL", server.base.clone()),
        ("DASHBOARD_ACCOUNT_NAME", PARTNER.to_owned()),
        ("DASHBOARD_ACCOUNT_KEY", account_key),
        ("DASHBOARD_OWNER_EMAIL", OWNER_EMAIL.to_owned()),
        ("DASHBOARD_OWNER_PASSWORD", OWNER_PASSWORD.to_owned()),
        ("DASHBOARD_VIEWER_EMAIL", VIEWER_EMAIL.to_owned()),
        ("DASHBOARD_VIEWER_PASSWORD", VIEWER_PASSWORD.to_owned()),
        ("DASHBOARD_OPERATOR_EMAIL", OPERATOR_EMAIL.to_owned()),
        ("DASHBOARD_OPERATOR_PASSWORD", OPERATOR_PASSWORD.to_owned()),
        ("DASHBOARD_NEWCOMER_EMAIL", NEWCOMER_EMAIL.to_owned()),
        ("DASHBOARD_SIGN_IN_LINK", link_path.to_owned()),
        ("SCREENSHOT_DIR", screenshots.display().to_string()),
    ];
    let (ok, output) =
        run("node", &["--test", "--test-reporter=spec", "dashboard.test.mjs"], &suite, &envs, SUITE_TIMEOUT);
    eprintln!("{output}");
    assert!(
        ok,
        "the browser suite failed (its output is above); the server's log:\n{}",
        server.log().lines().rev().take(60).collect::<Vec<_>>().into_iter().rev().collect::<Vec<_>>().join("\n")
    );
    let passed = output
        .lines()
        .find_map(|l| l.trim().strip_prefix("ℹ pass "))
        .and_then(|n| n.trim().parse::<u32>().ok())
        .unwrap_or(0);
    assert!(passed > 0, "the browser suite ran no test:\n{output}");
    eprintln!(
        "browser suite: {passed} tests passed in {:.1} s; screenshots in {}",
        started.elapsed().as_secs_f64(),
        screenshots.display()
    );
}
