//! `keygate users create|list|delete`: the password comes on standard input, never as a flag,
//! and lands nowhere but as its argon2id hash; an account keeps one owner.

use std::io::Write;
use std::process::Stdio;

use serde_json::Value;

use crate::support::Sandbox;

const PASSWORD: &str = "a long pass phrase for the dashboard";

/// `keygate --json users create … --password-stdin`, with `stdin` written to its standard input.
fn create_with_stdin(sandbox: &Sandbox, email: &str, role: &str, stdin: &str) -> std::process::Output {
    let args = ["--json", "users", "create", "--email", email, "--role", role, "--password-stdin"];
    let mut child = sandbox
        .command(&args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("keygate starts");
    child.stdin.take().expect("a stdin pipe").write_all(stdin.as_bytes()).expect("the password is written");
    child.wait_with_output().expect("keygate finishes")
}

#[test]
fn users_are_created_from_stdin_listed_and_deleted_keeping_one_owner() {
    let sandbox = Sandbox::new();
    sandbox.init();
    let out = create_with_stdin(&sandbox, "ada@example.com", "owner", &format!("{PASSWORD}\n"));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let ada: Value = serde_json::from_str(&stdout).expect("one JSON document");
    assert!(ada["id"].as_str().is_some_and(|id| id.starts_with("usr_")), "{ada}");
    assert_eq!((ada["email"].as_str(), ada["role"].as_str()), (Some("ada@example.com"), Some("owner")));
    assert_eq!(ada["has_password"], true);
    let everything = format!("{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(!everything.contains(PASSWORD), "the password is not printed");
    let database = String::from_utf8_lossy(&sandbox.database_bytes()).into_owned();
    assert!(!database.contains(PASSWORD), "the password is not stored");
    assert!(database.contains("$argon2id$v=19$"), "its argon2id hash is");

    // Without --password-stdin: a user without a password, and its one-time sign-in link.
    let invited = sandbox.ok(&["users", "create", "--email", "grace@example.com", "--role", "viewer"]);
    let link_line = invited.stdout.lines().find(|l| l.contains("/dashboard/sign-in/link?token=")).unwrap_or_default();
    assert!(link_line.starts_with("http://127.0.0.1:8080/dashboard/sign-in/link?token="), "{}", invited.describe());
    let token = link_line.rsplit('=').next().unwrap_or_default();
    assert!(token.len() == 64 && token.bytes().all(|b| b.is_ascii_hexdigit()), "{token}");
    assert!(invited.stderr.contains("signs in once"), "{}", invited.describe());
    let database = String::from_utf8_lossy(&sandbox.database_bytes()).into_owned();
    assert!(!database.contains(token), "only the token's hash is stored");

    let listed = sandbox.json(&["users", "list"]);
    let emails: Vec<&str> =
        listed["data"].as_array().into_iter().flatten().filter_map(|u| u["email"].as_str()).collect();
    assert_eq!(emails, ["grace@example.com", "ada@example.com"], "newest first");

    let ada_id = ada["id"].as_str().unwrap_or_default();
    let refused = sandbox.fails(&["--json", "users", "delete", ada_id]);
    assert_eq!(refused.json()["code"], "conflict", "the last owner stays: {}", refused.describe());
    let out = create_with_stdin(&sandbox, "ed@example.com", "owner", &format!("{PASSWORD}\n"));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // A new link for an existing user, with --json.
    let grace = listed["data"][0]["id"].as_str().unwrap_or_default().to_owned();
    let relinked = sandbox.json(&["users", "link", &grace]);
    assert_eq!(relinked["user_id"], grace.as_str());
    assert!(relinked["sign_in_link"]["url"].as_str().is_some_and(|u| u.contains("token=")), "{relinked}");
    assert!(relinked["sign_in_link"]["expires_at"].is_string());

    let deleted = sandbox.json(&["users", "delete", ada_id]);
    assert_eq!(deleted["deleted"], true);
    assert_eq!(sandbox.json(&["users", "list"])["data"].as_array().map(Vec::len), Some(2));
}

#[test]
fn a_bad_password_or_an_empty_stdin_is_refused_and_creates_nothing() {
    let sandbox = Sandbox::new();
    sandbox.init();
    let out = create_with_stdin(&sandbox, "ada@example.com", "owner", "short\n");
    assert_eq!(out.status.code(), Some(1));
    let problem: Value = serde_json::from_slice(&out.stdout).expect("one problem document");
    assert_eq!(problem["code"], "validation_failed");
    assert_eq!(problem["errors"][0]["field"], "password");

    let out = create_with_stdin(&sandbox, "ada@example.com", "owner", "");
    assert_eq!(out.status.code(), Some(1));
    let problem: Value = serde_json::from_slice(&out.stdout).expect("one problem document");
    assert_eq!(problem["code"], "invalid_request", "{problem}");
    assert_eq!(sandbox.json(&["users", "list"])["data"], serde_json::json!([]));
}
