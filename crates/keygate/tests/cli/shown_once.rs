//! SPEC §2 and the "shown once": a plaintext key exists in exactly one output — the
//! response or CLI output that created (or rolled) it. Not in any other response, not in the
//! server's log (JSON or text), not in later CLI output, not in the database files.
//!
//! The scenario records every response (status, headers, body) and every CLI output (stdout and
//! stderr) in a transcript, then checks each plaintext against all of it. Matching is on the
//! key's secret part (the 36 characters after `sk_live_`), so a partial leak counts too.

use serde_json::{Value, json};

use crate::support::{Response, Run, Sandbox, Server, contains_bytes, secret_part, the_plaintext};

#[derive(Default)]
struct Transcript {
    entries: Vec<(String, String)>,
    /// (plaintext, the label of the one entry allowed to contain it)
    created: Vec<(String, String)>,
}

impl Transcript {
    fn response(&mut self, label: &str, response: Response) -> Response {
        self.entries.push((label.to_owned(), response.transcript()));
        response
    }

    fn cli(&mut self, label: &str, run: Run) -> Run {
        self.entries.push((label.to_owned(), run.all_output()));
        run
    }

    fn created(&mut self, label: &str, plaintext: &str) -> String {
        assert!(
            self.entries.iter().any(|(l, text)| l == label && text.contains(plaintext)),
            "`{label}` is where {label} was shown"
        );
        self.created.push((plaintext.to_owned(), label.to_owned()));
        plaintext.to_owned()
    }

    fn assert_each_key_shown_once(&self) {
        for (plaintext, creator) in &self.created {
            let seen_in: Vec<&str> = self
                .entries
                .iter()
                .filter(|(_, text)| text.contains(secret_part(plaintext)))
                .map(|(label, _)| label.as_str())
                .collect();
            assert_eq!(seen_in, [creator.as_str()], "the key created by `{creator}` appears in {seen_in:?}");
        }
    }

    fn assert_nowhere(&self, what: &str, needle: &str) {
        for (label, text) in &self.entries {
            assert!(!text.contains(needle), "{what} appears in `{label}`");
        }
    }
}

fn str_field(v: &Value, pointer: &str) -> String {
    v.pointer(pointer).and_then(Value::as_str).unwrap_or_else(|| panic!("no {pointer} in {v}")).to_owned()
}

fn expect_status(r: &Response, status: u16) {
    assert_eq!(r.status, status, "{}", r.text);
}

fn scenario(log_format: &str, rust_log: Option<&str>) {
    let mut sandbox = Sandbox::new();
    if let Some(filter) = rust_log {
        sandbox.set_env("RUST_LOG", filter);
    }
    let mut t = Transcript::default();

    let init = t.cli("cli init", sandbox.ok(&["--json", "init"]));
    let operator = t.created("cli init", &str_field(&init.json(), "/key"));
    let operator_key_id = str_field(&sandbox.json(&["keys", "list"]), "/data/0/id");

    let mut server = Server::start(&sandbox, &["--log-format", log_format]);
    let http = server.http();

    // --- Keys made over HTTP.
    let body =
        json!({"name": "shown-once http", "scopes": ["tenants:read", "api_keys:read"], "metadata": {"owner": "tests"}});
    let r = t.response("http create", http.post("/v1/api-keys", &operator, &body));
    expect_status(&r, 201);
    let k_http = t.created("http create", &str_field(&r.json(), "/key"));
    let k_http_id = str_field(&r.json(), "/id");

    let r = t.response("http create account", http.post("/v1/accounts", &operator, &json!({"name": "Partner"})));
    expect_status(&r, 201);
    let partner_key = t.created("http create account", &str_field(&r.json(), "/initial_key/key"));
    let partner_id = str_field(&r.json(), "/account/id");

    let r = t.response("http partner create", http.post("/v1/api-keys", &partner_key, &json!({"name": "partner's"})));
    expect_status(&r, 201);
    let k_partner = t.created("http partner create", &str_field(&r.json(), "/key"));
    let k_partner_id = str_field(&r.json(), "/id");

    let roll_path = format!("/v1/api-keys/{k_http_id}/roll");
    let r = t.response("http roll", http.post(&roll_path, &operator, &json!({"grace_period_seconds": 3600})));
    expect_status(&r, 201);
    let k_rolled = t.created("http roll", &str_field(&r.json(), "/key"));
    let k_rolled_id = str_field(&r.json(), "/id");

    // --- Keys made with the CLI while the server runs, in both output modes.
    let run = t.cli("cli keys create", sandbox.ok(&["--json", "keys", "create", "--name", "shown-once cli"]));
    let k_cli = t.created("cli keys create", &str_field(&run.json(), "/key"));
    let k_cli_id = str_field(&run.json(), "/id");

    let run = t.cli("cli accounts create", sandbox.ok(&["accounts", "create", "--name", "Other Partner"]));
    let k_other = t.created("cli accounts create", &the_plaintext(&run.stdout));

    let run = t.cli("cli keys roll", sandbox.ok(&["keys", "roll", &k_cli_id]));
    let k_cli_rolled = t.created("cli keys roll", &the_plaintext(&run.stdout));

    let run = t.cli(
        "cli partner keys create",
        sandbox.ok(&["keys", "create", "--account", &partner_id, "--name", "cli partner", "--environment", "test"]),
    );
    let k_cli_partner = t.created("cli partner keys create", &the_plaintext(&run.stdout));
    assert!(k_cli_partner.starts_with("sk_test_"));

    // --- Every live key authenticates; the replaced and a forged one are refused.
    for (i, key) in [&operator, &k_http, &partner_key, &k_partner, &k_rolled, &k_other, &k_cli_rolled, &k_cli_partner]
        .into_iter()
        .enumerate()
    {
        let r = t.response(&format!("use key #{i}"), http.get("/v1/api-keys", key));
        expect_status(&r, 200);
    }
    let r = t.response("use replaced key", http.get("/v1/api-keys", &k_cli));
    assert_eq!(r.code().as_deref(), Some("api_key_expired"), "{}", r.text);
    let mut forged = k_http.clone();
    let last = if forged.ends_with('A') { "B" } else { "A" };
    forged.replace_range(forged.len() - 1.., last);
    let r = t.response("use forged key", http.get("/v1/api-keys", &forged));
    assert_eq!(r.code().as_deref(), Some("invalid_api_key"), "{}", r.text);

    // --- Every read and change of keys over HTTP.
    for (label, path) in [
        ("http list", "/v1/api-keys?limit=100".to_owned()),
        ("http list filtered", "/v1/api-keys?name=shown-once".to_owned()),
        ("http get", format!("/v1/api-keys/{k_http_id}")),
        ("http get rolled", format!("/v1/api-keys/{k_rolled_id}")),
        ("http get cli", format!("/v1/api-keys/{k_cli_id}")),
        ("http accounts", "/v1/accounts".to_owned()),
        ("http account", format!("/v1/accounts/{partner_id}")),
        ("http own account", "/v1/account".to_owned()),
        ("http scopes", "/v1/scopes".to_owned()),
    ] {
        let r = t.response(label, http.get(&path, &operator));
        expect_status(&r, 200);
    }
    let r = t.response("http partner list", http.get("/v1/api-keys", &partner_key));
    expect_status(&r, 200);
    assert_eq!(r.json()["data"].as_array().map(Vec::len), Some(3), "{}", r.text);

    for (i, key) in [&operator, &k_http, &k_rolled, &k_cli_rolled].into_iter().enumerate() {
        let r =
            t.response(&format!("http lookup #{i}"), http.post("/v1/api-keys/lookup", &operator, &json!({"key": key})));
        expect_status(&r, 200);
    }
    let r = t
        .response("http lookup other account", http.post("/v1/api-keys/lookup", &operator, &json!({"key": k_partner})));
    assert_eq!(r.code().as_deref(), Some("not_found"), "{}", r.text);
    for (i, key) in [&k_http, &k_partner, &k_cli].into_iter().enumerate() {
        let r = t.response(&format!("http verify #{i}"), http.post("/v1/verify", &operator, &json!({"key": key})));
        expect_status(&r, 200);
    }

    let patch = json!({"name": "renamed", "metadata": {"note": "patched"}});
    let r = t.response(
        "http patch",
        http.send("PATCH", &format!("/v1/api-keys/{k_rolled_id}"), Some(&operator), Some(&patch)),
    );
    expect_status(&r, 200);
    let revoke_path = format!("/v1/api-keys/{k_partner_id}/revoke");
    let r = t.response("http revoke", http.post(&revoke_path, &partner_key, &json!({"reason": "done with it"})));
    expect_status(&r, 200);
    let r = t.response("use revoked key", http.get("/v1/api-keys", &k_partner));
    assert_eq!(r.code().as_deref(), Some("api_key_revoked"), "{}", r.text);
    let r = t.response(
        "http delete",
        http.send("DELETE", &format!("/v1/api-keys/{k_partner_id}"), Some(&partner_key), None),
    );
    expect_status(&r, 204);

    let r = t.response("http audit", http.get("/v1/audit-events?limit=100", &operator));
    expect_status(&r, 200);
    let actions: Vec<String> =
        r.json()["data"].as_array().expect("data").iter().map(|e| str_field(e, "/action")).collect();
    for action in ["api_key.created", "api_key.rolled", "api_key.updated", "account.created"] {
        assert!(actions.iter().any(|a| a == action), "the audit log has {action}: {actions:?}");
    }
    let r = t.response("http partner audit", http.get("/v1/audit-events?limit=100", &partner_key));
    expect_status(&r, 200);
    assert!(r.text.contains("api_key.deleted"), "{}", r.text);

    // --- Later CLI output.
    for (label, args) in [
        ("cli list json", vec!["--json", "keys", "list", "--limit", "100"]),
        ("cli list", vec!["keys", "list", "--limit", "100"]),
        ("cli partner list", vec!["--json", "keys", "list", "--account", &partner_id]),
        ("cli get", vec!["--json", "keys", "get", &k_http_id]),
        ("cli get human", vec!["keys", "get", &k_rolled_id]),
        ("cli get operator", vec!["keys", "get", &operator_key_id]),
        ("cli revoke", vec!["--json", "keys", "revoke", &k_http_id]),
        ("cli accounts", vec!["--json", "accounts", "list"]),
        ("cli init again", vec!["init"]),
    ] {
        t.cli(label, sandbox.ok(&args));
    }

    // --- A key pasted into a URL path: the log line masks it (SPEC §2).
    let r = t.response("key in a path", http.get(&format!("/v1/api-keys/{k_rolled}"), &operator));
    expect_status(&r, 404);
    let r = t.response("key in an unknown path", http.get(&format!("/v1/keys/{k_cli_rolled}/x"), &operator));
    expect_status(&r, 404);
    let encoded = k_http.replace('_', "%5F").replacen('A', "%41", 1);
    let r = t.response("percent-encoded key in a path", http.get(&format!("/v1/api-keys/{encoded}"), &operator));
    expect_status(&r, 404);
    let r = t.response("key as the method", http.send(&k_other, "/v1/api-keys", Some(&operator), None));
    assert!(r.status == 405 || r.status == 404, "{}", r.text);
    let r = t.response(
        "key as the request id",
        http.get_with_header("/v1/api-keys", &operator, "x-request-id", &k_cli_partner),
    );
    expect_status(&r, 200);
    assert!(r.header("x-request-id").is_some_and(|id| id.starts_with("req_")), "a key-shaped id is replaced");

    let r = t.response("metrics", http.send("GET", "/metrics", None, None));
    expect_status(&r, 200);

    let db_while_running = sandbox.database_bytes();
    let status = server.terminate();
    assert!(status.success(), "{status}");
    let mut db = sandbox.database_bytes();
    db.extend_from_slice(&db_while_running);
    let log = server.log();

    // The checks look in the right places…
    assert!(log.contains("/v1/api-keys") && log.contains(&operator_key_id), "the log has the requests:\n{log}");
    if log_format == "json" {
        for line in log.lines().filter(|l| !l.trim().is_empty()) {
            serde_json::from_str::<Value>(line).unwrap_or_else(|e| panic!("not a JSON log line ({e}): {line}"));
        }
    }
    assert!(contains_bytes(&db, b"shown-once http"), "the database files hold the keys' rows");

    // …and find no plaintext anywhere but where it was created.
    assert_eq!(t.created.len(), 9);
    t.assert_each_key_shown_once();
    for (plaintext, creator) in &t.created {
        let secret = secret_part(plaintext);
        assert!(!log.contains(secret), "the key created by `{creator}` is in the server log");
        assert!(!contains_bytes(&db, secret.as_bytes()), "the key created by `{creator}` is in the database files");
    }
    assert!(!log.contains(secret_part(&forged)), "a presented credential is never logged");

    let hash_secret = std::fs::read_to_string(sandbox.file("keygate.secret")).expect("keygate.secret");
    let hash_secret = hash_secret.trim();
    assert!(!log.contains(hash_secret), "the hash secret is not logged");
    t.assert_nowhere("the hash secret", hash_secret);
    assert!(!contains_bytes(&db, hash_secret.as_bytes()), "the hash secret is not in the database");
}

#[test]
fn plaintext_keys_are_shown_once_with_json_logs() {
    scenario("json", None);
}

#[test]
fn plaintext_keys_are_shown_once_with_text_logs_at_debug_level() {
    scenario("text", Some("debug"));
}
