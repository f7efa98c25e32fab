//! A snapshot of the OpenAPI document: a change to the API shows up as a diff of
//! `tests/snapshots/openapi.json` in review.
//!
//! After an intended change, regenerate it with
//! `UPDATE_SNAPSHOTS=1 cargo test -p keygate-api --test openapi` and commit the result.

use std::path::Path;

#[test]
fn openapi_document_matches_the_snapshot() {
    let actual = keygate_api::openapi().to_pretty_json().expect("the document renders") + "\n";
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/snapshots/openapi.json");
    if std::env::var_os("UPDATE_SNAPSHOTS").is_some_and(|v| v == "1") {
        std::fs::write(&path, &actual).expect("write the snapshot");
        return;
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        actual == expected,
        "the OpenAPI document differs from {}; if the change is intended, run \
         `UPDATE_SNAPSHOTS=1 cargo test -p keygate-api --test openapi` and commit the file.\n{}",
        path.display(),
        first_difference(&expected, &actual)
    );
}

/// The first differing line, so the failure says where to look.
fn first_difference(expected: &str, actual: &str) -> String {
    let mut e = expected.lines();
    let mut a = actual.lines();
    for n in 1.. {
        match (e.next(), a.next()) {
            (None, None) => break,
            (x, y) if x == y => {}
            (x, y) => {
                return format!(
                    "line {n}:\n  snapshot: {}\n  actual:   {}",
                    x.unwrap_or("<end>"),
                    y.unwrap_or("<end>")
                );
            }
        }
    }
    String::new()
}

/// Every pattern validation enforces (`keygate_engine::services::fields`) is stated in the
/// document, so a client can check before it sends.
#[test]
fn the_document_states_every_pattern_validation_enforces() {
    fn patterns(v: &serde_json::Value, out: &mut Vec<String>) {
        match v {
            serde_json::Value::Object(m) => {
                for (k, v) in m {
                    match (k.as_str(), v) {
                        ("pattern", serde_json::Value::String(p)) => out.push(p.clone()),
                        _ => patterns(v, out),
                    }
                }
            }
            serde_json::Value::Array(a) => a.iter().for_each(|v| patterns(v, out)),
            _ => {}
        }
    }
    let doc = serde_json::to_value(keygate_api::openapi()).unwrap_or_default();
    let mut found = Vec::new();
    patterns(&doc, &mut found);
    use keygate_engine::services::fields::{
        ACCOUNT_ID, EMAIL, EVENT_ID, IDEMPOTENCY_KEY, KEY_ID, RECORD_ID, SCOPE, TENANT_ID, TEXT, ip_entry_pattern,
        ip_pattern,
    };
    for pattern in [TEXT, KEY_ID, TENANT_ID, ACCOUNT_ID, EVENT_ID, RECORD_ID, SCOPE, IDEMPOTENCY_KEY, EMAIL] {
        assert!(found.iter().any(|p| p == pattern), "the document does not state {pattern}");
    }
    assert!(found.contains(&ip_entry_pattern()) && found.contains(&ip_pattern()));
}
