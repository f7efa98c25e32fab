//! This test mirrors the README's "Quickstart", step by step: `keygate init` → `keygate serve`
//! → create a key with curl → an authenticated request with that key. Keep the two in sync: the
//! test also checks that the README still contains each command and body it runs, so editing one
//! without the other fails here.
//!
//! The one difference: the README's server listens on the default 127.0.0.1:8080; the test picks
//! a free port so it can run next to other tests.

use std::io::Write;
use std::process::Stdio;

use serde_json::Value;

use crate::support::{Sandbox, Server, plaintexts, the_plaintext};

const INIT: &str = "cargo run --release -- init";
const SERVE: &str = "cargo run --release -- serve";
const CREATE_KEY: &str = "curl -s -X POST http://127.0.0.1:8080/v1/api-keys";
const CREATE_KEY_BODY: &str = r#"{"name": "CRM integration", "scopes": ["tenants:read", "tenants:write"]}"#;
const CREATE_TENANT: &str = "curl -s -X POST http://127.0.0.1:8080/v1/tenants";
const CREATE_TENANT_BODY: &str = r#"{"name": "Northwind Clinic", "external_id": "nw-001"}"#;
const LIST_TENANTS: &str = "curl -s http://127.0.0.1:8080/v1/tenants";
const LIST_KEYS: &str = "curl -s http://127.0.0.1:8080/v1/api-keys";
const CREATE_USER: &str = "cargo run --release -- users create --email you@example.com --role owner --password-stdin";
const DASHBOARD: &str = "http://127.0.0.1:8080/dashboard";
const PASSPHRASE: &str = "choose a long pass phrase";

fn readme() -> String {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md");
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {path}: {e}"))
}

#[test]
fn the_readme_still_shows_what_this_test_runs() {
    let readme = readme();
    let quickstart = readme.split("## Quickstart").nth(1).expect("the README has a Quickstart section");
    let quickstart = quickstart.split("\n## ").next().unwrap_or_default();
    for snippet in [
        INIT.to_owned(),
        SERVE.to_owned(),
        CREATE_KEY.to_owned(),
        format!("-d '{CREATE_KEY_BODY}'"),
        CREATE_TENANT.to_owned(),
        format!("-d '{CREATE_TENANT_BODY}'"),
        LIST_TENANTS.to_owned(),
        LIST_KEYS.to_owned(),
        format!("printf '%s\\n' '{PASSPHRASE}' | {CREATE_USER}"),
        DASHBOARD.to_owned(),
        r#"-H "Authorization: Bearer $OPERATOR_KEY""#.to_owned(),
        r#"-H "Authorization: Bearer $CRM_KEY""#.to_owned(),
    ] {
        assert!(quickstart.contains(&snippet), "the README's quickstart no longer contains:\n{snippet}");
    }
    assert!(readme.contains("cargo nextest run --workspace"), "the README gives the test command");
}

#[test]
fn the_readme_quickstart_works() {
    let sandbox = Sandbox::new();

    // 1. `keygate init` prints the operator key; the human copies the `sk_live_…` line.
    let init = sandbox.ok(&["init"]);
    let operator_key = the_plaintext(&init.stdout);

    // 2. `keygate serve` (on a free port instead of 8080).
    let server = Server::start(&sandbox, &[]);
    let http = server.http();

    // 3. Create a key that may read and write tenants; its plaintext is in the response once.
    let body: Value = serde_json::from_str(CREATE_KEY_BODY).expect("the README's body is JSON");
    let created = http.post("/v1/api-keys", &operator_key, &body);
    assert_eq!(created.status, 201, "{}", created.text);
    let crm_key = created.json()["key"].as_str().expect("the new key").to_owned();
    assert!(crm_key.starts_with("sk_live_"));
    assert_eq!(created.json()["scopes"], serde_json::json!(["tenants:read", "tenants:write"]));

    // 4. Use it: create a tenant, then list tenants.
    let body: Value = serde_json::from_str(CREATE_TENANT_BODY).expect("the README's body is JSON");
    let tenant = http.post("/v1/tenants", &crm_key, &body);
    assert_eq!(tenant.status, 201, "{}", tenant.text);
    assert_eq!(tenant.json()["external_id"], "nw-001");
    let tenants = http.get("/v1/tenants", &crm_key);
    assert_eq!(tenants.status, 200, "{}", tenants.text);
    assert_eq!(tenants.json()["data"][0]["name"], "Northwind Clinic");
    assert_eq!(tenants.json()["next_cursor"], Value::Null);

    // 5. What its scopes do not allow is refused with a problem document naming the scope.
    let refused = http.get("/v1/api-keys", &crm_key);
    assert_eq!(refused.status, 403, "{}", refused.text);
    assert_eq!(refused.header("content-type"), Some("application/problem+json"));
    assert_eq!(refused.json()["code"], "insufficient_scope");
    assert_eq!(refused.json()["required_scope"], "api_keys:read");

    // And the operator's list shows the new key masked, never in full.
    let list = http.get("/v1/api-keys", &operator_key);
    assert_eq!(list.status, 200);
    assert!(plaintexts(&list.text).is_empty(), "{}", list.text);

    // 6. A dashboard user, then sign in at /dashboard.
    let args: Vec<&str> = CREATE_USER.split(" ").skip(4).collect();
    let mut child = sandbox
        .command(&args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("keygate starts");
    child.stdin.take().expect("a stdin pipe").write_all(format!("{PASSPHRASE}\n").as_bytes()).expect("written");
    let created = child.wait_with_output().expect("keygate finishes");
    assert!(created.status.success(), "{}", String::from_utf8_lossy(&created.stderr));
    let dashboard = http.send("GET", "/dashboard", None, None);
    assert_eq!((dashboard.status, dashboard.header("location")), (303, Some("/dashboard/api-keys")));
    let form = http.send("GET", "/dashboard/sign-in", None, None);
    assert_eq!(form.status, 200);
    let cookie = form.header("set-cookie").and_then(|c| c.split(';').next()).unwrap_or_default().to_owned();
    let csrf = form.text.split("name=\"csrf_token\" value=\"").nth(1).and_then(|t| t.split('"').next());
    let form = [("csrf_token", csrf.unwrap_or_default()), ("email", "you@example.com"), ("password", PASSPHRASE)];
    let signed_in = http.post_form("/dashboard/sign-in", &cookie, &form);
    assert_eq!(
        (signed_in.status, signed_in.header("location")),
        (303, Some("/dashboard/api-keys")),
        "{}",
        signed_in.text
    );
    let session = signed_in.header("set-cookie").and_then(|c| c.split(';').next()).unwrap_or_default().to_owned();
    assert!(session.starts_with("keygate_session="), "{session}");
}
