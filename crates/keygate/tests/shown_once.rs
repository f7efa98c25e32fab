//! SPEC §2: the plaintext key exists in exactly one response, the one that created (or rolled)
//! it. No other endpoint returns it, and the database holds only its keyed hash.

#[macro_use]
mod common;

use common::{TestApp, str_of};
use serde_json::json;

/// Creates a key and rolls it, then reads it back through every endpoint that shows keys,
/// asserting no body contains either plaintext. Returns the plaintexts.
async fn exercise_every_read(app: &TestApp) -> Vec<String> {
    let p = app.partner("Acme").await;
    let tenant = app.create_tenant(&p.key, json!({"name": "T"})).await;
    let k = app.create_key(&p.key, json!({"name": "secret", "tenant_ids": [tenant["id"]]})).await;
    let id = str_of(&k["id"]);
    let plaintext = str_of(&k["key"]);
    // Use it, so usage bookkeeping has something to write.
    app.get(&plaintext, "/v1/api-keys").await.expect_status(200);

    let rolled = app.post(&p.key, &format!("/v1/api-keys/{id}/roll"), &json!({"grace_period_seconds": 60})).await;
    let rolled = rolled.expect_status(201);
    let rolled_id = str_of(&rolled["id"]);
    let rolled_plaintext = str_of(&rolled["key"]);
    app.get(&rolled_plaintext, "/v1/api-keys").await.expect_status(200);
    let secrets = vec![plaintext.clone(), rolled_plaintext.clone(), p.key.clone(), app.operator_key.clone()];

    let responses = vec![
        app.get(&p.key, &format!("/v1/api-keys/{id}")).await,
        app.get(&p.key, &format!("/v1/api-keys/{rolled_id}")).await,
        app.get(&p.key, "/v1/api-keys?limit=100").await,
        app.get(&p.key, "/v1/api-keys?name=secret").await,
        app.post(&p.key, "/v1/api-keys/lookup", &json!({"key": plaintext})).await,
        app.post(&p.key, "/v1/api-keys/lookup", &json!({"key": rolled_plaintext})).await,
        app.patch(&p.key, &format!("/v1/api-keys/{rolled_id}"), &json!({"name": "renamed"})).await,
        app.post(&p.key, &format!("/v1/api-keys/{id}/revoke"), &json!({"reason": "done"})).await,
        app.get(&p.key, "/v1/audit-events?limit=100").await,
        app.get(&app.operator_key, "/v1/audit-events?limit=100").await,
        app.get(&p.key, "/v1/account").await,
        app.get(&app.operator_key, &format!("/v1/accounts/{}", p.account_id)).await,
        app.get(&app.operator_key, "/v1/accounts").await,
        app.get(&p.key, "/v1/tenants").await,
    ];
    for r in &responses {
        assert_eq!(r.status, 200, "{r:?}");
        for secret in &secrets {
            assert!(!r.text.contains(secret.as_str()), "a plaintext key in {r:?}");
        }
        for header in r.headers.values() {
            let value = String::from_utf8_lossy(header.as_bytes());
            assert!(secrets.iter().all(|s| !value.contains(s.as_str())), "a plaintext key in a header");
        }
    }
    secrets
}

async fn plaintext_appears_only_in_the_creating_response(app: TestApp) {
    exercise_every_read(&app).await;
}
both_backends!(plaintext_appears_only_in_the_creating_response);

async fn the_database_files_hold_no_plaintext(app: TestApp) {
    let secrets = exercise_every_read(&app).await;
    let dir = app.db_dir.as_ref().expect("a SQLite directory").path().to_owned();
    // Let the server finish writing (usage is flushed in batches), then read every file it
    // wrote, while its connections still hold the WAL.
    let _ = app.store.ping().await;
    let mut checked = 0;
    for name in ["keygate.db", "keygate.db-wal", "keygate.db-shm"] {
        let Ok(bytes) = std::fs::read(dir.join(name)) else { continue };
        checked += 1;
        for secret in &secrets {
            let needle = secret.as_bytes();
            assert!(!bytes.windows(needle.len()).any(|w| w == needle), "a plaintext key in {name}");
            // Nor its random part alone.
            let body = &needle[8..38];
            assert!(!bytes.windows(body.len()).any(|w| w == body), "a key's random part in {name}");
        }
        let secret = common::HASH_SECRET.as_bytes();
        assert!(!bytes.windows(secret.len()).any(|w| w == secret), "the hash secret in {name}");
    }
    assert!(checked >= 1, "keygate.db exists in {}", dir.display());
}
sqlite_only!(the_database_files_hold_no_plaintext);
