//! What every response shares: problem documents for routing and credential errors, request
//! ids, health endpoints, the OpenAPI document and the bundled API reference.

#[macro_use]
mod common;

use common::{TestApp, assert_problem, is_id, send};
use reqwest::Method;
use serde_json::{Value, json};

async fn unknown_route_is_route_not_found(app: TestApp) {
    for path in ["/v1/nope", "/v2/api-keys", "/v1/api-keys/key_01JABCDEFGHJKMNPQRSTVWXYZ0/nope", "/nope"] {
        let r = send(app.client.get(app.url(path))).await;
        assert_problem(&r, 404, "route_not_found");
        // Also with a valid key: routing comes first.
        let r = app.get(&app.operator_key, path).await;
        assert_problem(&r, 404, "route_not_found");
    }
}
both_backends!(unknown_route_is_route_not_found);

async fn wrong_method_is_method_not_allowed(app: TestApp) {
    for (method, path, allowed) in [
        (Method::PUT, "/v1/api-keys", &["GET", "POST"][..]),
        (Method::DELETE, "/v1/tenants", &["GET", "POST"][..]),
        (Method::POST, "/v1/account", &["GET", "PATCH"][..]),
        (Method::GET, "/v1/api-keys/key_01JABCDEFGHJKMNPQRSTVWXYZ0/revoke", &["POST"][..]),
        (Method::POST, "/healthz", &["GET"][..]),
    ] {
        let r = send(app.request(method.clone(), path, &app.operator_key)).await;
        assert_problem(&r, 405, "method_not_allowed");
        let allow = r.header("allow").unwrap_or_else(|| panic!("no Allow header on {method} {path}: {r:?}"));
        let listed: Vec<&str> = allow.split(',').map(str::trim).collect();
        for m in allowed {
            assert!(listed.contains(m), "Allow `{allow}` of {method} {path} lists {m}");
        }
    }
}
both_backends!(wrong_method_is_method_not_allowed);

async fn missing_key_is_401_with_a_challenge(app: TestApp) {
    for path in ["/v1/api-keys", "/v1/tenants", "/v1/account", "/v1/accounts", "/v1/audit-events", "/v1/scopes"] {
        let r = send(app.client.get(app.url(path))).await;
        assert_problem(&r, 401, "missing_api_key");
        let challenge = r.header("www-authenticate").unwrap_or_else(|| panic!("no WWW-Authenticate: {r:?}"));
        assert!(challenge.starts_with("Bearer"), "{challenge}");
    }
    // An empty credential is no credential at all, or an invalid one; never a success.
    let r = send(app.client.get(app.url("/v1/account")).header("x-api-key", "")).await;
    assert_eq!(r.status, 401, "{r:?}");
}
both_backends!(missing_key_is_401_with_a_challenge);

async fn credentials_may_come_from_either_header_but_not_two_different_ones(app: TestApp) {
    let p = app.partner("Acme").await;
    let bearer_only = send(app.client.get(app.url("/v1/account")).bearer_auth(&p.key)).await;
    assert_eq!(bearer_only.expect_status(200)["id"], p.account_id);
    let header_only = send(app.client.get(app.url("/v1/account")).header("x-api-key", &p.key)).await;
    assert_eq!(header_only.expect_status(200)["id"], p.account_id);
    let both_same = send(app.client.get(app.url("/v1/account")).bearer_auth(&p.key).header("x-api-key", &p.key)).await;
    assert_eq!(both_same.expect_status(200)["id"], p.account_id, "the same key twice is one credential");

    let r =
        send(app.client.get(app.url("/v1/account")).bearer_auth(&p.key).header("x-api-key", &app.operator_key)).await;
    assert_problem(&r, 400, "ambiguous_credentials");
    // Even when one of them is garbage: the caller must say which one it means.
    let r = send(app.client.get(app.url("/v1/account")).bearer_auth(&p.key).header("x-api-key", "sk_live_nope")).await;
    assert_problem(&r, 400, "ambiguous_credentials");

    let r = send(app.client.get(app.url("/v1/account")).header("authorization", format!("Basic {}", p.key))).await;
    assert_problem(&r, 401, "invalid_api_key");
    // The deprecated query credential is off by default.
    let r = send(app.client.get(app.url(&format!("/v1/account?appid={}", p.key)))).await;
    assert_eq!(r.status, 401, "{r:?}");
    assert!(r.header("deprecation").is_none());
}
both_backends!(credentials_may_come_from_either_header_but_not_two_different_ones);

async fn every_response_has_a_request_id(app: TestApp) {
    let p = app.partner("Acme").await;
    let responses = [
        app.get(&p.key, "/v1/account").await,
        app.post(&p.key, "/v1/tenants", &serde_json::json!({"name": "T"})).await,
        app.post(&p.key, "/v1/tenants", &serde_json::json!({"name": ""})).await,
        send(app.client.get(app.url("/v1/account"))).await,
        send(app.client.get(app.url("/nope"))).await,
        send(app.client.put(app.url("/v1/account"))).await,
        send(app.client.get(app.url("/healthz"))).await,
        send(app.client.get(app.url("/openapi.json"))).await,
        send(app.client.get(app.url("/"))).await,
        app.delete(&p.key, "/v1/api-keys/key_01JABCDEFGHJKMNPQRSTVWXYZ0").await,
    ];
    let mut seen = Vec::new();
    for r in &responses {
        let id = r.request_id();
        assert!(is_id(id, "req"), "a generated request id is req_ + ULID: {id}");
        assert!(!seen.contains(&id.to_owned()), "request ids are unique");
        seen.push(id.to_owned());
    }
}
both_backends!(every_response_has_a_request_id);

async fn a_safe_incoming_request_id_is_kept(app: TestApp) {
    let p = app.partner("Acme").await;
    let max = "a".repeat(128);
    for id in ["trace-123_abc.def:9", "0af7651916cd43dd8448eb211c80319c", max.as_str()] {
        let r = send(app.request(Method::GET, "/v1/account", &p.key).header("x-request-id", id)).await;
        assert_eq!(r.status, 200);
        assert_eq!(r.request_id(), id);
        // Errors name it too.
        let r = send(app.client.get(app.url("/v1/account")).header("x-request-id", id)).await;
        assert_problem(&r, 401, "missing_api_key");
        assert_eq!(r.body["request_id"], id);
    }
    // The audit record carries it.
    let r = send(
        app.request(Method::POST, "/v1/tenants", &p.key)
            .header("x-request-id", "my-trace-1")
            .json(&serde_json::json!({"name": "T"})),
    )
    .await;
    let id = common::str_of(&r.expect_status(201)["id"]);
    assert_eq!(app.audit_event(&p.key, "tenant.created", &id).await["request_id"], "my-trace-1");
}
both_backends!(a_safe_incoming_request_id_is_kept);

async fn an_unsafe_incoming_request_id_is_replaced(app: TestApp) {
    let p = app.partner("Acme").await;
    let long = "a".repeat(129);
    for id in ["has spaces", long.as_str(), "semi;colon", "quote\"d", "<script>", "a/b"] {
        let r = send(app.request(Method::GET, "/v1/account", &p.key).header("x-request-id", id)).await;
        assert_eq!(r.status, 200);
        assert!(is_id(r.request_id(), "req"), "{id:?} replaced by a req_ id, got {}", r.request_id());
        let r = send(app.client.get(app.url("/v1/account")).header("x-request-id", id)).await;
        assert_problem(&r, 401, "missing_api_key");
        assert!(is_id(r.request_id(), "req"));
    }
}
both_backends!(an_unsafe_incoming_request_id_is_replaced);

/// SPEC §3: repeated authentication failures from one IP are throttled, in memory.
async fn repeated_failures_from_one_ip_are_throttled(app: TestApp) {
    let p = app.partner("Acme").await;
    let mut throttled = None;
    for i in 0..200 {
        let unknown = keygate_domain::KeyFormat::default().generate(keygate_domain::Environment::Live);
        let r = app.get(unknown.expose(), "/v1/account").await;
        if r.status == 429 {
            throttled = Some((i, r));
            break;
        }
        assert_problem(&r, 401, "invalid_api_key");
    }
    let (attempts, r) = throttled.expect("throttled within 200 failures");
    assert!(attempts >= 5, "not throttled after only {attempts} failures");
    assert_problem(&r, 429, "too_many_failed_attempts");
    let retry_after: u64 = r.header("retry-after").expect("Retry-After").parse().expect("whole seconds");
    assert!(retry_after >= 1, "{retry_after}");
    // Other clients are not affected.
    let elsewhere = app.client_from("127.0.0.2".parse().expect("an IP"));
    send(elsewhere.get(app.url("/v1/account")).bearer_auth(&p.key)).await.expect_status(200);
}
both_backends!(repeated_failures_from_one_ip_are_throttled);

async fn health_and_readiness(app: TestApp) {
    let r = send(app.client.get(app.url("/healthz"))).await;
    assert_eq!(r.expect_status(200)["status"], "ok");
    let r = send(app.client.get(app.url("/readyz"))).await;
    assert_eq!(r.expect_status(200), serde_json::json!({"status": "ready", "store": "ok"}), "no redis: one node");
}
both_backends!(health_and_readiness);

async fn readiness_says_degraded_when_the_store_is_gone(app: TestApp) {
    let key = app.operator_key.clone();
    let body = serde_json::json!({"key": key});
    let verify = || app.post(&key, "/v1/verify", &body);
    // Held in memory before the store goes.
    assert_eq!(verify().await.expect_status(200)["valid"], true);
    app.store.close().await;
    let r = send(app.client.get(app.url("/readyz"))).await;
    assert_eq!(
        r.expect_status(200),
        serde_json::json!({"status": "degraded", "store": "unavailable"}),
        "still serving what memory can: stays in rotation, says so"
    );
    assert_eq!(send(app.client.get(app.url("/healthz"))).await.status, 200, "the process itself is alive");
    // What truly needs the store is 503; a key held in memory still verifies.
    let r = app.get(&key, "/v1/api-keys").await;
    assert_problem(&r, 503, "service_unavailable");
    assert!(r.header("retry-after").is_some(), "{r:?}");
    assert_eq!(verify().await.expect_status(200)["valid"], true, "a key in memory still verifies");
}
both_backends!(readiness_says_degraded_when_the_store_is_gone);

/// The `/v1` paths of SPEC §8 that the router serves, as OpenAPI spells them.
const V1_PATHS: [&str; 16] = [
    "/v1/account",
    "/v1/accounts",
    "/v1/accounts/{id}",
    "/v1/accounts/{id}/suspend",
    "/v1/accounts/{id}/unsuspend",
    "/v1/api-keys",
    "/v1/api-keys/lookup",
    "/v1/api-keys/{id}",
    "/v1/api-keys/{id}/revoke",
    "/v1/api-keys/{id}/roll",
    "/v1/audit-events",
    "/v1/scopes",
    "/v1/tenants",
    "/v1/tenants/{id}",
    "/v1/tenants/{id}/suspend",
    "/v1/tenants/{id}/unsuspend",
];

async fn openapi_document_describes_every_route(app: TestApp) {
    let r = send(app.client.get(app.url("/openapi.json"))).await;
    assert!(r.header("content-type").is_some_and(|c| c.starts_with("application/json")), "{r:?}");
    let doc = r.expect_status(200);
    assert!(doc["openapi"].as_str().is_some_and(|v| v.starts_with("3.1")), "OpenAPI 3.1: {}", doc["openapi"]);
    assert_eq!(doc["info"]["title"], "keygate");
    let paths = doc["paths"].as_object().expect("paths");
    for path in V1_PATHS {
        assert!(paths.contains_key(path), "{path} is documented");
    }
    assert!(paths.contains_key("/healthz") && paths.contains_key("/readyz"));

    // Every documented operation is really served: it answers something other than
    // route_not_found / method_not_allowed (here: 401, as no key is sent, or 200 for health).
    for (path, item) in paths {
        let concrete = path.replace("{id}", "x");
        let methods = item.as_object().expect("a path item").keys();
        for method in methods.filter(|m| ["get", "post", "put", "patch", "delete"].contains(&m.as_str())) {
            let m: Method = method.to_uppercase().parse().expect("an HTTP method");
            let r = send(app.client.request(m.clone(), app.url(&concrete))).await;
            assert!(
                r.body["code"] != "route_not_found" && r.body["code"] != "method_not_allowed",
                "{m} {path} is documented but not served: {r:?}"
            );
            if path.starts_with("/v1") {
                assert_problem(&r, 401, "missing_api_key");
            }
        }
    }
    // The problem document is described once, and used.
    assert!(doc["components"]["schemas"]["Problem"].is_object());
    assert!(doc["components"]["securitySchemes"]["bearer"].is_object());
}
both_backends!(openapi_document_describes_every_route);

async fn root_redirects_to_a_self_contained_api_reference(app: TestApp) {
    let r = send(app.client.get(app.url("/"))).await;
    assert!((300..400).contains(&r.status), "a redirect: {r:?}");
    assert_eq!(r.header("location"), Some("/docs/"));

    let r = send(app.client.get(app.url("/docs/"))).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert!(r.header("content-type").is_some_and(|c| c.starts_with("text/html")), "{:?}", r.headers);
    let html = r.text.to_lowercase();
    assert!(html.contains("<html"), "an HTML page");

    // Every script and stylesheet is served by keygate itself: no CDN.
    let mut assets = Vec::new();
    for attr in ["src=\"", "href=\"", "src='", "href='"] {
        let quote = attr.chars().last().unwrap_or('"');
        for (i, _) in html.match_indices(attr) {
            let rest = &html[i + attr.len()..];
            let url = &rest[..rest.find(quote).unwrap_or(rest.len())];
            assert!(
                !url.starts_with("http:") && !url.starts_with("https:") && !url.starts_with("//"),
                "external asset {url} in /docs/"
            );
            assets.push(url.to_owned());
        }
    }
    assert!(html.contains("<script"), "the reference has scripts");
    assert!(!assets.is_empty());
    for asset in assets.iter().filter(|a| a.ends_with(".js") || a.ends_with(".css")) {
        let path = match asset.strip_prefix("./") {
            Some(rel) => format!("/docs/{rel}"),
            None if asset.starts_with('/') => asset.clone(),
            None => format!("/docs/{asset}"),
        };
        let r = send(app.client.get(app.url(&path))).await;
        assert_eq!(r.status, 200, "{path} is bundled: {:?}", r.status);
        assert!(
            !r.text.contains("https://unpkg.com") && !r.text.contains("cdn.jsdelivr.net"),
            "{path} loads nothing from a CDN"
        );
    }
    // The reference loads keygate's own document.
    let init = send(app.client.get(app.url("/docs/swagger-initializer.js"))).await;
    assert_eq!(init.status, 200);
    assert!(init.text.contains("/openapi.json"), "{}", init.text);
}
both_backends!(root_redirects_to_a_self_contained_api_reference);

async fn errors_carry_no_internals(app: TestApp) {
    // A JSON body where a problem document is expected never has other top-level members than
    // the documented ones.
    let r = send(app.client.get(app.url("/v1/account"))).await;
    let body = r.body.as_object().expect("an object");
    for key in body.keys() {
        assert!(
            ["type", "title", "status", "detail", "code", "request_id"].contains(&key.as_str()),
            "unexpected member {key} in {r:?}"
        );
    }
    assert_eq!(r.body["title"], Value::String("Missing API key".into()));
}
both_backends!(errors_carry_no_internals);

async fn a_nul_character_is_bad_input_not_an_outage(app: TestApp) {
    let p = app.partner("Acme").await;
    let key = app.create_key(&p.key, json!({"name": "k"})).await;
    let revoke = format!("/v1/api-keys/{}/revoke", key["id"].as_str().unwrap_or_default());
    let responses = [
        app.get(&p.key, "/v1/api-keys?name=a%00b").await,
        app.get(&p.key, "/v1/audit-events?action=a%00b").await,
        app.post(&p.key, &revoke, &json!({"reason": "a\u{0}b"})).await,
    ];
    for r in responses {
        match app.backend {
            // PostgreSQL holds no NUL in text: the client is told, nothing is written.
            common::Backend::Postgres => {
                assert_problem(&r, 400, "invalid_request");
                assert!(r.body["detail"].as_str().is_some_and(|d| d.contains("NUL")), "{r:?}");
            }
            common::Backend::Sqlite => assert!(r.status == 200, "{r:?}"),
        }
    }
}
both_backends!(a_nul_character_is_bad_input_not_an_outage);
