//! What each CLI command prints: human text, or with `--json` exactly one JSON document on
//! stdout and the human notes on stderr. Keys are shown once, masked everywhere else.

use std::os::unix::fs::PermissionsExt;

use serde_json::Value;

use crate::support::{Sandbox, plaintexts, the_plaintext};

fn assert_key_object(v: &Value) {
    for field in [
        "id",
        "name",
        "masked",
        "environment",
        "status",
        "scopes",
        "tenant_ids",
        "allowed_ips",
        "rate_limit_per_minute",
        "expires_at",
        "revoked_at",
        "revoked_reason",
        "last_used_at",
        "last_used_ip",
        "metadata",
        "created_at",
        "created_by",
    ] {
        assert!(v.get(field).is_some(), "key object lacks `{field}`: {v}");
    }
    assert!(v["id"].as_str().is_some_and(|s| s.starts_with("key_")), "{v}");
}

fn masked_of(plaintext: &str) -> String {
    let (prefix_env, _) = plaintext.split_at(plaintext.len() - 36);
    format!("{prefix_env}...{}", &plaintext[plaintext.len() - 4..])
}

#[test]
fn init_prints_the_operator_key_once() {
    let sandbox = Sandbox::new();
    let first = sandbox.ok(&["init"]);
    let key = the_plaintext(&first.stdout);
    assert!(key.starts_with("sk_live_"), "{key}");
    assert!(first.stdout.contains("acct_"), "names the operator account:\n{}", first.describe());
    assert!(first.stderr.contains("cannot be shown again"), "warns that the key is shown once:\n{}", first.describe());

    let second = sandbox.ok(&["init"]);
    assert!(plaintexts(&second.all_output()).is_empty(), "a second init prints no key:\n{}", second.describe());
    assert!(second.stderr.contains("already exists"), "{}", second.describe());
}

#[test]
fn init_json_is_one_document_with_the_account_and_key() {
    let sandbox = Sandbox::new();
    let first = sandbox.ok(&["init", "--json"]);
    let doc = first.json();
    let object = doc.as_object().expect("an object");
    let mut fields: Vec<&str> = object.keys().map(String::as_str).collect();
    fields.sort_unstable();
    assert_eq!(fields, ["account", "key"], "{doc}");
    assert!(doc["account"]["id"].as_str().is_some_and(|s| s.starts_with("acct_")), "{doc}");
    assert_eq!(doc["account"]["operator"], true);
    assert_eq!(doc["account"]["status"], "active");
    let key = doc["key"].as_str().expect("the key");
    assert_eq!(the_plaintext(key), key);
    assert!(plaintexts(&first.stderr).is_empty(), "messages on stderr, the key only on stdout");
    assert!(!first.stderr.trim().is_empty(), "the human note goes to stderr");

    let second = sandbox.ok(&["--json", "init"]);
    let doc2 = second.json();
    assert_eq!(doc2["key"], Value::Null, "{doc2}");
    assert_eq!(doc2["account"]["id"], doc["account"]["id"]);
    assert!(plaintexts(&second.all_output()).is_empty());
    assert!(second.stderr.contains("already exists"), "{}", second.describe());
}

#[test]
fn hash_secret_is_generated_beside_the_database_once_with_mode_0600() {
    let sandbox = Sandbox::new();
    let first = sandbox.ok(&["init"]);
    let secret_file = sandbox.file("keygate.secret");
    let secret = std::fs::read_to_string(&secret_file).expect("keygate.secret was generated");
    let mode = std::fs::metadata(&secret_file).expect("its metadata").permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "keygate.secret is private");
    assert!(secret.trim().len() >= 32, "a long secret");
    assert!(first.stderr.contains("keygate.secret"), "says it generated the secret:\n{}", first.describe());
    assert!(!first.all_output().contains(secret.trim()), "the secret itself is not printed");

    let again = sandbox.ok(&["keys", "list"]);
    assert_eq!(std::fs::read_to_string(&secret_file).expect("still there"), secret, "reused, not regenerated");
    assert!(!again.stderr.contains("generated"), "{}", again.describe());
}

#[test]
fn hash_secret_lives_beside_a_database_in_another_directory() {
    let sandbox = Sandbox::new();
    std::fs::create_dir(sandbox.file("data")).expect("mkdir data");
    let url = format!("sqlite://{}", sandbox.file("data/keygate.db").display());
    sandbox.ok(&["--database-url", &url, "init"]);
    assert!(sandbox.file("data/keygate.db").exists());
    assert!(sandbox.file("data/keygate.secret").exists(), "beside the database");
    assert!(!sandbox.file("keygate.secret").exists(), "not in the working directory");
}

#[test]
fn a_configured_hash_secret_writes_no_secret_file() {
    let mut sandbox = Sandbox::new();
    sandbox.set_env("KEYGATE_HASH_SECRET", "0123456789abcdef0123456789abcdef-test");
    sandbox.ok(&["init"]);
    assert!(!sandbox.file("keygate.secret").exists());
}

#[test]
fn commands_other_than_init_ask_for_init_first() {
    let sandbox = Sandbox::new();
    let run = sandbox.fails(&["keys", "list"]);
    assert!(run.stderr.contains("keygate init"), "{}", run.describe());
}

#[test]
fn accounts_create_prints_the_new_accounts_key_once() {
    let sandbox = Sandbox::new();
    sandbox.init();
    let run = sandbox.ok(&["--json", "accounts", "create", "--name", "Acme Telecom", "--rate-limit", "500"]);
    let doc = run.json();
    let account = &doc["account"];
    assert!(account["id"].as_str().is_some_and(|s| s.starts_with("acct_")), "{doc}");
    assert_eq!(account["name"], "Acme Telecom");
    assert_eq!(account["operator"], false);
    assert_eq!(account["rate_limit_per_minute"], 500);
    let key = doc["key"].as_str().expect("the first key").to_owned();
    assert!(key.starts_with("sk_live_"));
    assert!(plaintexts(&run.stderr).is_empty());

    let account_id = account["id"].as_str().expect("id");
    let list = sandbox.ok(&["--json", "keys", "list", "--account", account_id]);
    let keys = list.json();
    let data = keys["data"].as_array().expect("data");
    assert_eq!(data.len(), 1, "{keys}");
    assert_eq!(data[0]["name"], "Initial key");
    assert_eq!(data[0]["scopes"], Value::Null, "the first key is unrestricted");
    assert_eq!(data[0]["tenant_ids"], Value::Null);
    assert_eq!(data[0]["rate_limit_per_minute"], 10_000, "and has the maximum key rate limit");
    assert_eq!(data[0]["masked"], masked_of(&key));
    assert!(plaintexts(&list.all_output()).is_empty(), "listed masked only:\n{}", list.describe());

    let human = sandbox.ok(&["accounts", "create", "--name", "Globex"]);
    let _ = the_plaintext(&human.stdout);
    assert!(human.stdout.contains("Globex"), "{}", human.describe());

    let accounts = sandbox.json(&["accounts", "list"]);
    let names: Vec<&str> =
        accounts["data"].as_array().expect("data").iter().filter_map(|a| a["name"].as_str()).collect();
    assert_eq!(names, ["Globex", "Acme Telecom", "Operator"], "newest first");
}

#[test]
fn keys_commands_produce_json_with_the_expected_fields() {
    let sandbox = Sandbox::new();
    sandbox.init();
    let tenant = sandbox.json(&["tenants", "create", "--name", "Northwind", "--external-id", "nw-1"]);
    let tenant_id = tenant["id"].as_str().expect("tenant id");

    let created = sandbox.ok(&[
        "--json",
        "keys",
        "create",
        "--name",
        "CRM",
        "--environment",
        "test",
        "--scope",
        "tenants:read",
        "--scope",
        "billing:read",
        "--tenant",
        tenant_id,
        "--allow-ip",
        "203.0.113.7",
        "--allow-ip",
        "10.0.0.0/8",
        "--rate-limit",
        "50",
        "--expires-at",
        "2099-01-01T00:00:00Z",
    ]);
    let doc = created.json();
    assert_key_object(&doc);
    let plaintext = doc["key"].as_str().expect("the plaintext, this once").to_owned();
    assert!(plaintext.starts_with("sk_test_"), "{plaintext}");
    assert_eq!(doc["masked"], masked_of(&plaintext));
    assert_eq!(doc["environment"], "test");
    assert_eq!(doc["status"], "active");
    assert_eq!(doc["scopes"], serde_json::json!(["tenants:read", "billing:read"]));
    assert_eq!(doc["tenant_ids"], serde_json::json!([tenant_id]));
    assert_eq!(doc["allowed_ips"], serde_json::json!(["203.0.113.7", "10.0.0.0/8"]));
    assert_eq!(doc["rate_limit_per_minute"], 50);
    assert_eq!(doc["expires_at"], "2099-01-01T00:00:00Z");
    assert!(created.stderr.contains("cannot be shown again"), "{}", created.describe());
    let id = doc["id"].as_str().expect("id").to_owned();

    let list = sandbox.ok(&["--json", "keys", "list"]);
    let listed = list.json();
    let data = listed["data"].as_array().expect("data");
    assert_eq!(data.len(), 2, "the operator's initial key and the new one: {listed}");
    for k in data {
        assert_key_object(k);
        assert!(k.get("key").is_none(), "no plaintext field in a list: {k}");
    }
    assert_eq!(data[0]["id"], id.as_str(), "newest first");
    assert!(plaintexts(&list.all_output()).is_empty(), "{}", list.describe());

    let filtered = sandbox.json(&["keys", "list", "--name", "crm"]);
    assert_eq!(filtered["data"].as_array().map(Vec::len), Some(1), "{filtered}");

    let got = sandbox.ok(&["--json", "keys", "get", &id]);
    let got_doc = got.json();
    assert_key_object(&got_doc);
    assert_eq!(got_doc["id"], id.as_str());
    assert!(got_doc.get("key").is_none());
    assert!(plaintexts(&got.all_output()).is_empty());

    let rolled = sandbox.ok(&["--json", "keys", "roll", &id, "--grace-period-seconds", "3600"]);
    let rolled_doc = rolled.json();
    assert_key_object(&rolled_doc);
    let new_id = rolled_doc["id"].as_str().expect("new id").to_owned();
    assert_ne!(new_id, id, "a roll makes a new key");
    let new_plaintext = rolled_doc["key"].as_str().expect("the new plaintext");
    assert_ne!(new_plaintext, plaintext);
    assert_eq!(rolled_doc["scopes"], doc["scopes"], "same settings");
    assert_eq!(rolled_doc["tenant_ids"], doc["tenant_ids"]);
    let old = sandbox.json(&["keys", "get", &id]);
    assert_eq!(old["status"], "active", "still inside its grace period");
    assert!(old["expires_at"].as_str().is_some_and(|t| t < "2099"), "expiry shortened: {old}");

    let revoked = sandbox.ok(&["--json", "keys", "revoke", &id, "--reason", "rotated"]);
    let revoked_doc = revoked.json();
    assert_key_object(&revoked_doc);
    assert_eq!(revoked_doc["status"], "revoked");
    assert_eq!(revoked_doc["revoked_reason"], "rotated");
    assert!(revoked_doc["revoked_at"].is_string());
    assert!(plaintexts(&revoked.all_output()).is_empty());

    let again = sandbox.json(&["keys", "revoke", &id]);
    assert_eq!(again["revoked_at"], revoked_doc["revoked_at"], "revoking twice changes nothing");

    let refused = sandbox.fails(&["keys", "roll", &id]);
    assert!(refused.stderr.contains("revoked"), "{}", refused.describe());

    let revoked_only = sandbox.json(&["keys", "list", "--status", "revoked"]);
    assert_eq!(revoked_only["data"].as_array().map(Vec::len), Some(1), "{revoked_only}");
}

#[test]
fn keys_list_human_output_is_masked() {
    let sandbox = Sandbox::new();
    let (_, operator_key) = sandbox.init();
    let created = sandbox.ok(&["keys", "create", "--name", "Human readable"]);
    let plaintext = the_plaintext(&created.stdout);
    let list = sandbox.ok(&["keys", "list"]);
    assert!(plaintexts(&list.all_output()).is_empty(), "{}", list.describe());
    assert!(list.stdout.contains(&masked_of(&plaintext)), "{}", list.describe());
    assert!(list.stdout.contains(&masked_of(&operator_key)), "{}", list.describe());
    assert!(list.stdout.contains("Human readable"));
}

#[test]
fn invalid_key_settings_name_the_field() {
    let sandbox = Sandbox::new();
    sandbox.init();
    let run = sandbox.fails(&["keys", "create", "--name", "x", "--scope", "tenants:read", "--scope", "nope:read"]);
    assert!(run.stderr.contains("scopes[1]"), "{}", run.describe());
    assert!(run.stderr.contains("validation_failed"), "{}", run.describe());
    let run = sandbox.fails(&["keys", "create", "--name", "x", "--rate-limit", "100000"]);
    assert!(run.stderr.contains("rate_limit_per_minute"), "{}", run.describe());
    let run = sandbox.fails(&["keys", "get", "key_01ARZ3NDEKTSV4RRFFQ69G5FAV"]);
    assert!(run.stderr.contains("not_found"), "{}", run.describe());
}

#[test]
fn tenants_create_and_list() {
    let sandbox = Sandbox::new();
    sandbox.init();
    let created = sandbox.json(&["tenants", "create", "--name", "Northwind Clinic", "--external-id", "nw-001"]);
    assert!(created["id"].as_str().is_some_and(|s| s.starts_with("ten_")), "{created}");
    assert_eq!(created["name"], "Northwind Clinic");
    assert_eq!(created["external_id"], "nw-001");
    assert_eq!(created["status"], "active");
    sandbox.json(&["tenants", "create", "--name", "Contoso"]);

    let list = sandbox.json(&["tenants", "list"]);
    let names: Vec<&str> = list["data"].as_array().expect("data").iter().filter_map(|t| t["name"].as_str()).collect();
    assert_eq!(names, ["Contoso", "Northwind Clinic"], "newest first");

    let duplicate = sandbox.fails(&["tenants", "create", "--name", "Again", "--external-id", "nw-001"]);
    assert!(duplicate.stderr.contains("external_id"), "{}", duplicate.describe());

    let partner = sandbox.json(&["accounts", "create", "--name", "Acme"]);
    let partner_id = partner["account"]["id"].as_str().expect("id");
    let theirs = sandbox.json(&["tenants", "list", "--account", partner_id]);
    assert_eq!(theirs["data"], serde_json::json!([]), "tenants belong to one account");
}

#[test]
fn openapi_and_migrate() {
    let sandbox = Sandbox::new();
    let doc = sandbox.json(&["openapi"]);
    assert!(doc["openapi"].as_str().is_some_and(|v| v.starts_with("3.1")), "{}", doc["openapi"]);
    assert!(doc["paths"]["/v1/api-keys"].is_object());
    let human = sandbox.ok(&["openapi"]);
    assert_eq!(human.json(), doc, "the same document without --json");

    let migrated = sandbox.json(&["migrate"]);
    assert_eq!(migrated["migrated"], true);
    assert!(sandbox.file("keygate.db").exists(), "migrate creates the database");
}
