//! SPEC §2–§3: a malformed key or one with a bad checksum is rejected before any store lookup,
//! and the answer for a malformed key is the answer for an unknown one (no oracle).
//!
//! The proof closes the server's store: from then on anything that reaches it fails with 503.
//! Malformed and bad-checksum keys still get 401 `invalid_api_key`, so they never reached it;
//! a well-formed, correctly checksummed, unknown key gets 503, which shows that a lookup would
//! indeed have failed.

#[macro_use]
mod common;

use common::{Resp, TestApp, assert_problem, send};
use keygate_domain::{Environment, KeyFormat};
use serde_json::Value;

/// The body without its request id, which differs per request by design.
fn without_request_id(r: &Resp) -> Value {
    let mut body = r.body.clone();
    body.as_object_mut().expect("a problem document").remove("request_id");
    body
}

/// A well-formed key whose checksum does not match: one body character changed, so the shape
/// is still perfect.
fn with_bad_checksum(key: &str) -> String {
    let mut chars: Vec<char> = key.chars().collect();
    let i = "sk_live_".len() + 3;
    chars[i] = if chars[i] == 'a' { 'b' } else { 'a' };
    chars.into_iter().collect()
}

const MALFORMED: [&str; 5] = [
    "sk_live_short",
    "not-a-key-at-all",
    "pk_live_abcdefghijklmnopqrstuvwxyz0123456789",
    "sk_prod_abcdefghijklmnopqrstuvwxyz0123456789",
    "sk_live_abcdefghijklmnopqrstuvwxyz012345678!",
];

async fn malformed_and_bad_checksum_keys_never_reach_the_store(app: TestApp) {
    let format = KeyFormat::default();
    let unknown = format.generate(Environment::Live);
    let bad_checksum = with_bad_checksum(unknown.expose());
    assert!(format.parse(&bad_checksum).is_err(), "the corrupted key really fails its checksum");

    app.store.close().await;

    let mut bodies = Vec::new();
    for key in MALFORMED.iter().copied().chain([bad_checksum.as_str()]) {
        let r = app.get(key, "/v1/api-keys").await;
        assert_problem(&r, 401, "invalid_api_key");
        bodies.push(without_request_id(&r));
    }
    assert!(bodies.windows(2).all(|w| w[0] == w[1]), "one answer for every rejected key: {bodies:?}");

    // The control: a key that passes the format check needs the store, which is gone.
    let r = app.get(unknown.expose(), "/v1/api-keys").await;
    assert_problem(&r, 503, "service_unavailable");
    // And the 503 says nothing about why.
    assert!(!r.text.to_lowercase().contains("pool") && !r.text.to_lowercase().contains("sql"), "{r:?}");
}
both_backends!(malformed_and_bad_checksum_keys_never_reach_the_store);

async fn malformed_and_unknown_keys_get_the_same_answer(app: TestApp) {
    let format = KeyFormat::default();
    let unknown_live = format.generate(Environment::Live);
    let unknown_test = format.generate(Environment::Test);
    let bad_checksum = with_bad_checksum(format.generate(Environment::Live).expose());

    let mut responses = Vec::new();
    for key in [MALFORMED[0], MALFORMED[1], bad_checksum.as_str(), unknown_live.expose(), unknown_test.expose()] {
        responses.push(app.get(key, "/v1/api-keys").await);
    }
    // Through X-API-Key, too.
    responses.push(send(app.client.get(app.url("/v1/api-keys")).header("x-api-key", unknown_live.expose())).await);
    responses.push(send(app.client.get(app.url("/v1/api-keys")).header("x-api-key", MALFORMED[0])).await);

    let first = without_request_id(&responses[0]);
    for r in &responses {
        assert_problem(r, 401, "invalid_api_key");
        assert_eq!(without_request_id(r), first, "no oracle between malformed and unknown: {r:?}");
        assert_eq!(r.header("www-authenticate"), responses[0].header("www-authenticate"));
        assert_eq!(r.header("content-type"), responses[0].header("content-type"));
    }
}
both_backends!(malformed_and_unknown_keys_get_the_same_answer);
