//! The CLI is the operator's (SPEC §11): `keys get|revoke|roll|delete ID` find the key by its id
//! in whichever account holds it and act as that account (so its audit log names it);
//! `--account` is a check, not a requirement. With `--json`, a failure is one problem document on
//! stdout, as the API would answer, and exit code 1.

use serde_json::Value;

use crate::support::{Run, Sandbox, Server, plaintexts};

/// A key id that no account holds.
const UNKNOWN_KEY: &str = "key_01ARZ3NDEKTSV4RRFFQ69G5FAV";

/// An operator, and a partner account with its first key (plaintext) and a second key (id).
struct Setup {
    sandbox: Sandbox,
    operator_id: String,
    partner_id: String,
    partner_key: String,
    second_id: String,
}

fn setup() -> Setup {
    let sandbox = Sandbox::new();
    let (operator, _) = sandbox.init();
    let partner = sandbox.json(&["accounts", "create", "--name", "Acme"]);
    let partner_id = partner["account"]["id"].as_str().expect("partner id").to_owned();
    let partner_key = partner["key"].as_str().expect("partner key").to_owned();
    let second = sandbox.json(&["keys", "create", "--account", &partner_id, "--name", "CRM sync"]);
    let second_id = second["id"].as_str().expect("key id").to_owned();
    Setup {
        operator_id: operator["id"].as_str().expect("operator id").to_owned(),
        sandbox,
        partner_id,
        partner_key,
        second_id,
    }
}

fn key_ids(sandbox: &Sandbox, account: &str) -> Vec<String> {
    let list = sandbox.json(&["keys", "list", "--account", account, "--limit", "100"]);
    list["data"].as_array().expect("data").iter().filter_map(|k| k["id"].as_str().map(str::to_owned)).collect()
}

/// The problem document of a failed `--json` command, checked for the RFC 9457 shape.
fn problem(run: &Run) -> Value {
    assert_eq!(run.status.code(), Some(1), "a failure exits 1\n{}", run.describe());
    let doc = run.json();
    for field in ["type", "title", "status", "detail", "code"] {
        assert!(doc.get(field).is_some(), "the problem lacks `{field}`: {doc}");
    }
    let code = doc["code"].as_str().expect("a code");
    assert_eq!(doc["type"], format!("https://keygate.dev/problems/{code}"), "{doc}");
    assert!(run.stderr.contains(code), "the human message still goes to stderr:\n{}", run.describe());
    doc
}

#[test]
fn every_keys_command_finds_a_partners_key_by_id_alone() {
    let s = setup();
    let sandbox = &s.sandbox;

    let got = sandbox.json(&["keys", "get", &s.second_id]);
    assert_eq!(got["id"], s.second_id.as_str());
    assert_eq!(got["name"], "CRM sync");
    let human = sandbox.ok(&["keys", "get", &s.second_id]);
    assert!(human.stdout.contains(&s.second_id) && human.stdout.contains("CRM sync"), "{}", human.describe());

    let rolled = sandbox.ok(&["--json", "keys", "roll", &s.second_id, "--grace-period-seconds", "60"]);
    let new_id = rolled.json()["id"].as_str().expect("new id").to_owned();
    assert!(rolled.stderr.contains("cannot be shown again"), "{}", rolled.describe());
    let partners = key_ids(sandbox, &s.partner_id);
    assert!(partners.contains(&new_id), "the new key is the partner's: {partners:?}");
    assert!(!key_ids(sandbox, &s.operator_id).contains(&new_id), "not the operator's");

    let revoked = sandbox.json(&["keys", "revoke", &s.second_id, "--reason", "leaked"]);
    assert_eq!(revoked["status"], "revoked");
    assert_eq!(revoked["revoked_reason"], "leaked");

    let deleted = sandbox.json(&["keys", "delete", &s.second_id]);
    assert_eq!(deleted["deleted"], true);
    assert_eq!(deleted["id"], s.second_id.as_str());
    assert_eq!(deleted["account_id"], s.partner_id.as_str());
    assert!(!key_ids(sandbox, &s.partner_id).contains(&s.second_id), "gone from the partner's list");
    let again = sandbox.fails(&["keys", "get", &s.second_id]);
    assert!(again.stderr.contains("not_found"), "{}", again.describe());

    let human = sandbox.ok(&["keys", "delete", &new_id]);
    assert!(human.stdout.contains("Deleted") && human.stdout.contains(&new_id), "{}", human.describe());
    assert!(plaintexts(&human.all_output()).is_empty());
}

#[test]
fn keys_changed_by_id_are_audited_in_the_holders_account() {
    let s = setup();
    let sandbox = &s.sandbox;
    sandbox.ok(&["keys", "roll", &s.second_id, "--grace-period-seconds", "60"]);
    sandbox.ok(&["keys", "revoke", &s.second_id]);
    sandbox.ok(&["keys", "delete", &s.second_id]);

    let server = Server::start(sandbox, &[]);
    let path = format!("/v1/audit-events?target_id={}&limit=100", s.second_id);
    let events = server.http().get(&path, &s.partner_key);
    assert_eq!(events.status, 200, "{}", events.text);
    let events = events.json();
    let mut actions: Vec<(&str, &str)> = events["data"]
        .as_array()
        .expect("data")
        .iter()
        .filter_map(|e| Some((e["action"].as_str()?, e["actor_type"].as_str()?)))
        .collect();
    actions.sort_unstable();
    assert_eq!(
        actions,
        [("api_key.created", "cli"), ("api_key.deleted", "cli"), ("api_key.revoked", "cli"), ("api_key.rolled", "cli")],
        "the partner's own audit log has every change: {events}"
    );
}

#[test]
fn account_is_a_check_when_given() {
    let s = setup();
    let sandbox = &s.sandbox;
    let own = sandbox.json(&["keys", "get", &s.second_id, "--account", &s.partner_id]);
    assert_eq!(own["id"], s.second_id.as_str());

    for command in ["get", "revoke", "roll", "delete"] {
        let run = sandbox.run(&["--json", "keys", command, &s.second_id, "--account", &s.operator_id]);
        let doc = problem(&run);
        assert_eq!(doc["code"], "not_found", "keys {command} in another account: {doc}");
        assert_eq!(doc["status"], 404);
        let detail = doc["detail"].as_str().expect("detail");
        assert!(detail.contains(&s.operator_id), "names the account it looked in: {detail}");
        assert!(detail.contains("--account"), "says how to look everywhere: {detail}");
    }
    let untouched = sandbox.json(&["keys", "get", &s.second_id]);
    assert_eq!(untouched["status"], "active", "nothing happened to it: {untouched}");

    let run = sandbox.fails(&["keys", "get", &s.second_id, "--account", "acct_01ARZ3NDEKTSV4RRFFQ69G5FAV"]);
    assert!(run.stderr.contains("not_found") && run.stderr.contains("keygate accounts list"), "{}", run.describe());
    let run = sandbox.fails(&["keys", "revoke", &s.second_id, "--account", "Acme"]);
    assert!(run.stderr.contains("No account has the id Acme"), "{}", run.describe());
}

#[test]
fn every_keys_command_on_an_unknown_id_is_not_found_as_a_problem() {
    let s = setup();
    let sandbox = &s.sandbox;
    for command in ["get", "revoke", "roll", "delete"] {
        for id in [UNKNOWN_KEY, "not-a-key-id"] {
            let human = sandbox.fails(&["keys", command, id]);
            assert!(human.stdout.is_empty(), "nothing on stdout without --json:\n{}", human.describe());
            assert!(human.stderr.contains("not_found"), "{}", human.describe());
            assert!(human.stderr.contains("keygate keys list --account"), "says what to do:\n{}", human.describe());

            let doc = problem(&sandbox.run(&["--json", "keys", command, id]));
            assert_eq!(doc["code"], "not_found");
            assert_eq!(doc["status"], 404);
            assert_eq!(doc["title"], "Not found");
            assert!(doc["detail"].as_str().is_some_and(|d| d.contains(id)), "{doc}");
        }
    }
    let still = key_ids(sandbox, &s.partner_id);
    assert_eq!(still.len(), 2, "nothing was created or deleted: {still:?}");
}

#[test]
fn a_validation_failure_is_one_problem_document_with_every_field() {
    let sandbox = Sandbox::new();
    sandbox.init();
    let run = sandbox.run(&["--json", "keys", "create", "--name", "x", "--scope", "nope:read", "--rate-limit", "0"]);
    let doc = problem(&run);
    assert_eq!(doc["code"], "validation_failed");
    assert_eq!(doc["status"], 422);
    let fields: Vec<&str> =
        doc["errors"].as_array().expect("errors").iter().filter_map(|e| e["field"].as_str()).collect();
    assert_eq!(fields, ["scopes[0]", "rate_limit_per_minute"], "{doc}");
    assert!(doc["errors"][0]["message"].is_string());
    for field in ["scopes[0]", "rate_limit_per_minute"] {
        assert!(run.stderr.contains(field), "stderr lists {field}:\n{}", run.describe());
    }

    let doc = problem(&sandbox.run(&["--json", "keys", "list", "--limit", "0"]));
    assert_eq!(doc["code"], "validation_failed");
    assert_eq!(doc["errors"][0]["field"], "limit");

    let doc = problem(&sandbox.run(&["--json", "keys", "list", "--cursor", "garbage"]));
    assert_eq!(doc["code"], "invalid_request");
    assert_eq!(doc["status"], 400);
}

#[test]
fn other_failures_are_problem_documents_too() {
    let sandbox = Sandbox::new();
    let doc = problem(&sandbox.run(&["--json", "keys", "list"]));
    assert_eq!(doc["code"], "invalid_request", "no operator yet: {doc}");
    assert!(doc["detail"].as_str().is_some_and(|d| d.contains("keygate init")), "{doc}");

    sandbox.init();
    let key = sandbox.json(&["keys", "create", "--name", "old"]);
    let id = key["id"].as_str().expect("id");
    sandbox.json(&["keys", "revoke", id]);
    let doc = problem(&sandbox.run(&["--json", "keys", "roll", id]));
    assert_eq!(doc["code"], "conflict");
    assert_eq!(doc["status"], 409);

    // A command line clap refuses: still one document, with clap's exit code 2.
    let run = sandbox.run(&["--json", "keys", "frobnicate"]);
    assert_eq!(run.status.code(), Some(2), "{}", run.describe());
    let doc = run.json();
    assert_eq!(doc["code"], "invalid_request");
    assert!(doc["detail"].as_str().is_some_and(|d| d.contains("frobnicate")), "{doc}");
    // Help is not a failure.
    let help = sandbox.ok(&["--json", "keys", "--help"]);
    assert!(help.stdout.contains("delete"), "{}", help.describe());
}
