//! The dashboard over HTTP (SPEC §12), as a browser without JavaScript drives it: forms posted
//! with their cookie and CSRF token. Sessions, CSRF, the users' role bounds, the same use cases
//! (and audit events) as the API, the plaintext shown once, and the headers of every page. The
//! real-browser suite (Chromium, Copy, the modal, accessibility) is `tests/browser.rs`.

mod common;

use std::collections::BTreeMap;

use common::{TestApp, assert_problem, str_of};
use reqwest::StatusCode;
use reqwest::header::{HeaderMap, LOCATION, SET_COOKIE};
use serde_json::{Value, json};

const PASSWORD: &str = "correct horse battery staple";

/// A browser without JavaScript: keeps cookies, does not follow redirects.
struct Browser {
    base: String,
    client: reqwest::Client,
    cookies: BTreeMap<String, String>,
    /// Extra headers of every request (a proxy's `X-Forwarded-Proto`).
    extra: Vec<(String, String)>,
}

/// A page as the browser got it.
#[derive(Debug)]
struct Page {
    status: StatusCode,
    headers: HeaderMap,
    html: String,
}

impl Page {
    fn location(&self) -> &str {
        self.headers.get(LOCATION).and_then(|v| v.to_str().ok()).unwrap_or("")
    }

    /// The value of the first `<input name="{name}" … value="…">` on the page.
    fn input(&self, name: &str) -> String {
        let marker = format!("name=\"{name}\" value=\"");
        let start =
            self.html.find(&marker).unwrap_or_else(|| panic!("no input {name} in {}", self.html)) + marker.len();
        self.html[start..].split('"').next().unwrap_or_default().to_owned()
    }

    fn csrf(&self) -> String {
        self.input("csrf_token")
    }

    fn set_cookies(&self) -> Vec<String> {
        self.headers.get_all(SET_COOKIE).iter().filter_map(|v| v.to_str().ok()).map(str::to_owned).collect()
    }
}

impl Browser {
    fn new(app: &TestApp) -> Self {
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .user_agent("dashboard-tests/1.0")
            .build()
            .unwrap_or_else(|e| panic!("a client: {e}"));
        Self { base: app.endpoint.base_url.clone(), client, cookies: BTreeMap::new(), extra: Vec::new() }
    }

    fn cookie_header(&self) -> String {
        self.cookies.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join("; ")
    }

    async fn send(&mut self, request: reqwest::RequestBuilder) -> Page {
        let mut request = request.header("cookie", self.cookie_header());
        for (k, v) in &self.extra {
            request = request.header(k.as_str(), v.as_str());
        }
        let response = request.send().await.unwrap_or_else(|e| panic!("request failed: {e}"));
        let status = response.status();
        let headers = response.headers().clone();
        for set in headers.get_all(SET_COOKIE).iter().filter_map(|v| v.to_str().ok()) {
            let pair = set.split(';').next().unwrap_or_default();
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            if value.is_empty() || set.contains("Max-Age=0") {
                self.cookies.remove(name);
            } else {
                self.cookies.insert(name.to_owned(), value.to_owned());
            }
        }
        let html = response.text().await.unwrap_or_default();
        Page { status, headers, html }
    }

    async fn get(&mut self, path: &str) -> Page {
        let request = self.client.get(format!("{}{path}", self.base));
        self.send(request).await
    }

    async fn post(&mut self, path: &str, form: &[(&str, &str)]) -> Page {
        let body: String = form_urlencoded::Serializer::new(String::new()).extend_pairs(form).finish();
        let request = self
            .client
            .post(format!("{}{path}", self.base))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body);
        self.send(request).await
    }

    /// Signs in through the form; returns the answer to the POST.
    async fn sign_in(&mut self, email: &str, password: &str) -> Page {
        let form = self.get("/dashboard/sign-in").await;
        assert_eq!(form.status, StatusCode::OK);
        let csrf = form.csrf();
        self.post(
            "/dashboard/sign-in",
            &[("csrf_token", &csrf), ("email", email), ("password", password), ("next", "/dashboard/api-keys")],
        )
        .await
    }

    /// Signs in and checks it worked.
    async fn signed_in(app: &TestApp, email: &str) -> Self {
        let mut browser = Self::new(app);
        let page = browser.sign_in(email, PASSWORD).await;
        assert_eq!((page.status, page.location()), (StatusCode::SEE_OTHER, "/dashboard/api-keys"), "{page:?}");
        browser
    }

    /// The CSRF token of this session's forms (any signed-in page carries it).
    async fn csrf(&mut self) -> String {
        self.get("/dashboard/api-keys").await.csrf()
    }
}

/// An account with a user of each role; returns the account's key.
async fn account_with_users(app: &TestApp, name: &str) -> common::Partner {
    let p = app.partner(name).await;
    let slug = name.to_lowercase();
    for role in ["owner", "admin", "developer", "viewer"] {
        let email = format!("{role}@{slug}.example");
        app.post(&p.key, "/v1/users", &json!({"email": email, "role": role, "password": PASSWORD}))
            .await
            .expect_status(201);
    }
    p
}

fn key_form<'a>(csrf: &'a str, name: &'a str, extra: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
    let mut form = vec![
        ("csrf_token", csrf),
        ("name", name),
        ("environment", "live"),
        ("access", "restricted"),
        ("rate_limit_per_minute", "100"),
    ];
    form.extend_from_slice(extra);
    form
}

/// The plaintext key on a "created" page.
fn plaintext_of(page: &Page) -> String {
    let marker = "id=\"plaintext-key\" type=\"text\" readonly value=\"";
    let start = page.html.find(marker).unwrap_or_else(|| panic!("no plaintext on {}", page.html)) + marker.len();
    page.html[start..].split('"').next().unwrap_or_default().to_owned()
}

async fn sign_in_with_one_message_and_a_strict_cookie(app: TestApp) {
    account_with_users(&app, "Acme").await;
    let mut browser = Browser::new(&app);
    let form = browser.get("/dashboard/sign-in").await;
    assert_eq!(form.status, StatusCode::OK);
    let pre = form.set_cookies();
    assert!(
        pre.iter()
            .any(|c| c.starts_with("keygate_sign_in=") && c.contains("HttpOnly") && c.contains("SameSite=Strict")),
        "{pre:?}"
    );

    let wrong = browser.sign_in("owner@acme.example", "not the password at all").await;
    let unknown = browser.sign_in("nobody@acme.example", PASSWORD).await;
    for page in [&wrong, &unknown] {
        assert_eq!(page.status, StatusCode::UNAUTHORIZED);
        assert!(page.html.contains("Incorrect email or password."), "{}", page.html);
        assert!(!page.set_cookies().iter().any(|c| c.starts_with("keygate_session=")));
    }
    assert!(!wrong.html.contains("not the password"), "the password is not echoed");
    assert!(wrong.html.contains("value=\"owner@acme.example\""), "the email is kept");

    let ok = browser.sign_in("OWNER@acme.example", PASSWORD).await;
    assert_eq!((ok.status, ok.location()), (StatusCode::SEE_OTHER, "/dashboard/api-keys"));
    let cookie = ok.set_cookies().into_iter().find(|c| c.starts_with("keygate_session=")).unwrap_or_default();
    for flag in ["HttpOnly", "SameSite=Strict", "Path=/dashboard"] {
        assert!(cookie.contains(flag), "{flag} in {cookie}");
    }
    assert!(!cookie.contains("Secure"), "plain http: {cookie}");
    let token = cookie.split(';').next().and_then(|p| p.split_once('=')).map(|(_, v)| v.to_owned()).unwrap_or_default();
    assert_eq!(token.len(), 64, "256 random bits in hex");

    let keys = browser.get("/dashboard/api-keys").await;
    assert_eq!(keys.status, StatusCode::OK);
    assert!(keys.html.contains("<h1>API Keys</h1>") && keys.html.contains("owner@acme.example"));

    // The session is not an API credential.
    let api = app
        .endpoint
        .client
        .get(app.endpoint.url("/v1/api-keys"))
        .header("cookie", format!("keygate_session={token}"))
        .send()
        .await
        .map(|r| r.status().as_u16())
        .unwrap_or_default();
    assert_eq!(api, 401);

    // Signing out ends the session on the server, not only in the browser.
    let csrf = browser.csrf().await;
    let out = browser.post("/dashboard/sign-out", &[("csrf_token", &csrf)]).await;
    assert_eq!((out.status, out.location()), (StatusCode::SEE_OTHER, "/dashboard/sign-in"));
    let mut replay = Browser::new(&app);
    replay.cookies.insert("keygate_session".into(), token);
    let page = replay.get("/dashboard/api-keys").await;
    assert_eq!(page.status, StatusCode::SEE_OTHER);
    assert!(page.location().starts_with("/dashboard/sign-in?next="), "{}", page.location());
    let post = replay.post("/dashboard/api-keys", &key_form(&csrf, "after sign-out", &[])).await;
    assert_eq!(post.status, StatusCode::UNAUTHORIZED);
    assert!(post.html.contains("session_required"));
}
both_backends!(sign_in_with_one_message_and_a_strict_cookie);

async fn sign_in_form_needs_its_own_token_and_next_stays_on_the_dashboard(app: TestApp) {
    account_with_users(&app, "Acme").await;
    let mut browser = Browser::new(&app);
    browser.get("/dashboard/sign-in").await;
    let forged = browser
        .post(
            "/dashboard/sign-in",
            &[("csrf_token", "0".repeat(64).as_str()), ("email", "owner@acme.example"), ("password", PASSWORD)],
        )
        .await;
    assert_eq!(forged.status, StatusCode::FORBIDDEN, "login CSRF: {forged:?}");
    assert!(!forged.set_cookies().iter().any(|c| c.starts_with("keygate_session=")));

    for next in
        ["//evil.example/", "https://evil.example/", "/dashboard/../v1/api-keys", "/\\evil.example", "/dashboard//evil"]
    {
        let form = browser.get("/dashboard/sign-in").await;
        let csrf = form.csrf();
        let page = browser
            .post(
                "/dashboard/sign-in",
                &[("csrf_token", &csrf), ("email", "owner@acme.example"), ("password", PASSWORD), ("next", next)],
            )
            .await;
        assert_eq!((page.status, page.location()), (StatusCode::SEE_OTHER, "/dashboard/api-keys"), "next={next}");
    }
    let form = browser.get("/dashboard/sign-in").await;
    let page = browser
        .post(
            "/dashboard/sign-in",
            &[
                ("csrf_token", &form.csrf()),
                ("email", "owner@acme.example"),
                ("password", PASSWORD),
                ("next", "/dashboard/audit"),
            ],
        )
        .await;
    assert_eq!(page.location(), "/dashboard/audit");
}
both_backends!(sign_in_form_needs_its_own_token_and_next_stays_on_the_dashboard);

async fn a_form_without_the_sessions_token_changes_nothing(app: TestApp) {
    let p = account_with_users(&app, "Acme").await;
    let mut owner = Browser::signed_in(&app, "owner@acme.example").await;
    let mut other = Browser::signed_in(&app, "admin@acme.example").await;
    let others_token = other.csrf().await;
    let mine = owner.csrf().await;

    for token in ["", "nonsense", others_token.as_str()] {
        let page = owner.post("/dashboard/api-keys", &key_form(token, "forged", &[])).await;
        assert_eq!(page.status, StatusCode::FORBIDDEN, "token {token:?}");
        assert!(page.html.contains("csrf_token_invalid"), "{}", page.html);
    }
    // A browser that says the form came from another site is refused before the token is read.
    owner.extra = vec![("origin".into(), "https://evil.example".into())];
    let page = owner.post("/dashboard/api-keys", &key_form(&mine, "forged", &[])).await;
    assert_eq!(page.status, StatusCode::FORBIDDEN);
    owner.extra = vec![("sec-fetch-site".into(), "cross-site".into())];
    let page = owner.post("/dashboard/tenants", &[("csrf_token", &mine), ("name", "forged")]).await;
    assert_eq!(page.status, StatusCode::FORBIDDEN);
    owner.extra.clear();

    let listed = app.get(&p.key, "/v1/api-keys?name=forged").await.expect_status(200);
    assert_eq!(listed["data"], json!([]), "nothing was created");
    let tenants = app.get(&p.key, "/v1/tenants").await.expect_status(200);
    assert_eq!(tenants["data"], json!([]));

    let page = owner.post("/dashboard/api-keys", &key_form(&mine, "real", &[])).await;
    assert_eq!(page.status, StatusCode::CREATED, "{}", page.html);
}
both_backends!(a_form_without_the_sessions_token_changes_nothing);

async fn the_plaintext_is_shown_once_and_the_key_works(app: TestApp) {
    let p = account_with_users(&app, "Acme").await;
    let mut dev = Browser::signed_in(&app, "developer@acme.example").await;
    let csrf = dev.csrf().await;
    let form = key_form(
        &csrf,
        "Production CRM Integration",
        &[("perm.api_keys", "read"), ("perm.calls", "write"), ("scope", "sms:send")],
    );
    let created = dev.post("/dashboard/api-keys", &form).await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.html);
    assert_eq!(created.headers.get("cache-control").and_then(|v| v.to_str().ok()), Some("no-store"));
    assert!(created.html.contains("will not be shown again"));
    let plaintext = plaintext_of(&created);
    assert!(plaintext.starts_with("sk_live_"), "{plaintext}");

    let listed = app.get(&p.key, "/v1/api-keys?name=CRM").await.expect_status(200);
    let key = &listed["data"][0];
    assert_eq!(key["scopes"], json!(["api_keys:read", "calls:write", "sms:send"]));
    assert_eq!(key["tenant_ids"], Value::Null);
    assert_eq!(key["allowed_ips"], Value::Null);
    assert_eq!(key["rate_limit_per_minute"], 100);
    let dev_id = str_of(&key["created_by"]);
    assert!(dev_id.starts_with("usr_"), "made by the user: {key}");
    let by_creator = app.get(&p.key, &format!("/v1/api-keys?created_by={dev_id}")).await.expect_status(200);
    assert_eq!(by_creator["data"].as_array().map(Vec::len), Some(1));

    // The audit event names the user and the browser's address.
    let event = app.audit_event(&p.key, "api_key.created", &str_of(&key["id"])).await;
    assert_eq!((event["actor_type"].as_str(), event["actor_id"].as_str()), (Some("user"), Some(dev_id.as_str())));
    assert_eq!(event["ip"], "127.0.0.1");
    assert_eq!(event["user_agent"], "dashboard-tests/1.0");

    // The table shows it masked; no page shows the plaintext again.
    let table = dev.get("/dashboard/api-keys").await;
    let last4 = &plaintext[plaintext.len() - 4..];
    assert!(table.html.contains(&format!("sk_live_...{last4}")), "{}", table.html);
    assert!(table.html.contains("ACTIVE") && table.html.contains("Never"));
    let show = dev.get(&format!("/dashboard/api-keys/{}", str_of(&key["id"]))).await;
    for page in [&table, &show] {
        assert!(!page.html.contains(&plaintext), "the plaintext is shown once");
    }

    // It is a real key, and its page shows the request it just made (SPEC §8: at once).
    app.get(&plaintext, "/v1/api-keys").await.expect_status(200);
    let show = dev.get(&format!("/dashboard/api-keys/{}", str_of(&key["id"]))).await;
    assert!(!show.html.contains("No requests recorded"), "{}", show.html);
    assert!(show.html.contains("<code>/v1/api-keys</code></td><td>200</td>"), "{}", show.html);
}
both_backends!(the_plaintext_is_shown_once_and_the_key_works);

async fn users_act_within_their_role(app: TestApp) {
    let p = account_with_users(&app, "Acme").await;
    // A viewer reads, and can do nothing else.
    let mut viewer = Browser::signed_in(&app, "viewer@acme.example").await;
    let table = viewer.get("/dashboard/api-keys").await;
    assert_eq!(table.status, StatusCode::OK);
    assert!(!table.html.contains("Create API Key"), "no create button for a viewer");
    let new = viewer.get("/dashboard/api-keys/new").await;
    assert_eq!(new.status, StatusCode::FORBIDDEN);
    assert!(new.html.contains("insufficient_scope"));
    let csrf = viewer.csrf().await;
    let post = viewer.post("/dashboard/api-keys", &key_form(&csrf, "by a viewer", &[])).await;
    assert_eq!(post.status, StatusCode::FORBIDDEN);
    assert_eq!(
        viewer.post("/dashboard/tenants", &[("csrf_token", &csrf), ("name", "T")]).await.status,
        StatusCode::FORBIDDEN
    );
    assert_eq!(viewer.get("/dashboard/accounts").await.status, StatusCode::FORBIDDEN, "operator only");

    // A developer makes keys, within its role: not tenant writes, not unrestricted keys, no users.
    let mut dev = Browser::signed_in(&app, "developer@acme.example").await;
    let csrf = dev.csrf().await;
    let beyond = dev.post("/dashboard/api-keys", &key_form(&csrf, "too much", &[("perm.tenants", "write")])).await;
    assert_eq!(beyond.status, StatusCode::FORBIDDEN, "{}", beyond.html);
    assert!(beyond.html.contains("tenants:write") && beyond.html.contains("value=\"too much\""), "the form is kept");
    let unrestricted = dev
        .post(
            "/dashboard/api-keys",
            &[
                ("csrf_token", &csrf),
                ("name", "everything"),
                ("access", "unrestricted"),
                ("rate_limit_per_minute", "100"),
            ],
        )
        .await;
    assert_eq!(unrestricted.status, StatusCode::FORBIDDEN);
    let user = dev
        .post(
            "/dashboard/users",
            &[("csrf_token", &csrf), ("email", "x@acme.example"), ("role", "viewer"), ("password", PASSWORD)],
        )
        .await;
    assert_eq!(user.status, StatusCode::FORBIDDEN);
    assert_eq!(dev.get("/dashboard/users").await.status, StatusCode::OK, "a developer reads users");

    // An admin manages users below admin only.
    let mut admin = Browser::signed_in(&app, "admin@acme.example").await;
    let csrf = admin.csrf().await;
    let peer = admin
        .post(
            "/dashboard/users",
            &[("csrf_token", &csrf), ("email", "admin2@acme.example"), ("role", "admin"), ("password", PASSWORD)],
        )
        .await;
    assert_eq!(peer.status, StatusCode::FORBIDDEN, "{}", peer.html);
    assert!(peer.html.contains("insufficient_scope"));
    let junior = admin
        .post(
            "/dashboard/users",
            &[("csrf_token", &csrf), ("email", "dev2@acme.example"), ("role", "developer"), ("password", PASSWORD)],
        )
        .await;
    assert_eq!((junior.status, junior.location()), (StatusCode::SEE_OTHER, "/dashboard/users"));
    let users = app.get(&p.key, "/v1/users?limit=100").await.expect_status(200);
    let id_of = |email: &str| {
        users["data"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|u| u["email"] == email)
            .map(|u| str_of(&u["id"]))
            .unwrap_or_default()
    };
    let owner_id = id_of("owner@acme.example");
    let dev_id = id_of("developer@acme.example");
    for (path, form) in [
        (format!("/dashboard/users/{owner_id}/role"), vec![("csrf_token", csrf.as_str()), ("role", "viewer")]),
        (format!("/dashboard/users/{owner_id}/delete"), vec![("csrf_token", csrf.as_str())]),
        (format!("/dashboard/users/{dev_id}/role"), vec![("csrf_token", csrf.as_str()), ("role", "admin")]),
    ] {
        let page = admin.post(&path, &form).await;
        assert_eq!(page.status, StatusCode::FORBIDDEN, "{path}: {}", page.html);
    }
    let page =
        admin.post(&format!("/dashboard/users/{dev_id}/role"), &[("csrf_token", &csrf), ("role", "viewer")]).await;
    assert_eq!(page.status, StatusCode::SEE_OTHER);
    let event = app.audit_event(&p.key, "user.updated", &dev_id).await;
    assert_eq!(event["actor_type"], "user");

    // An owner may make an admin.
    let mut owner = Browser::signed_in(&app, "owner@acme.example").await;
    let csrf = owner.csrf().await;
    let page = owner
        .post(
            "/dashboard/users",
            &[("csrf_token", &csrf), ("email", "admin3@acme.example"), ("role", "admin"), ("password", PASSWORD)],
        )
        .await;
    assert_eq!(page.status, StatusCode::SEE_OTHER, "{}", page.html);
}
both_backends!(users_act_within_their_role);

async fn another_accounts_objects_do_not_exist(app: TestApp) {
    let acme = account_with_users(&app, "Acme").await;
    account_with_users(&app, "Globex").await;
    let key = app.create_key(&acme.key, json!({"name": "acme key"})).await;
    let tenant = app.create_tenant(&acme.key, json!({"name": "acme tenant"})).await;
    let mut globex = Browser::signed_in(&app, "owner@globex.example").await;
    let csrf = globex.csrf().await;
    let key_id = str_of(&key["id"]);
    for path in [format!("/dashboard/api-keys/{key_id}"), format!("/dashboard/api-keys/{key_id}/edit")] {
        assert_eq!(globex.get(&path).await.status, StatusCode::NOT_FOUND, "{path}");
    }
    for path in [
        format!("/dashboard/api-keys/{key_id}/revoke"),
        format!("/dashboard/api-keys/{key_id}/delete"),
        format!("/dashboard/api-keys/{key_id}/roll"),
        format!("/dashboard/tenants/{}/suspend", str_of(&tenant["id"])),
    ] {
        let page = globex.post(&path, &[("csrf_token", &csrf)]).await;
        assert_eq!(page.status, StatusCode::NOT_FOUND, "{path}");
        assert!(page.html.contains("not_found"));
    }
    let key_now = app.get(&acme.key, &format!("/v1/api-keys/{key_id}")).await.expect_status(200);
    assert_eq!(key_now["status"], "active");
    let table = globex.get("/dashboard/api-keys").await;
    assert!(!table.html.contains("acme key"));
}
both_backends!(another_accounts_objects_do_not_exist);

async fn edit_roll_revoke_and_delete(app: TestApp) {
    let p = account_with_users(&app, "Acme").await;
    let mut owner = Browser::signed_in(&app, "owner@acme.example").await;
    let csrf = owner.csrf().await;
    let created = owner.post("/dashboard/api-keys", &key_form(&csrf, "CRM", &[("perm.calls", "read")])).await;
    let plaintext = plaintext_of(&created);
    let key = app.get(&p.key, "/v1/api-keys?name=CRM").await.expect_status(200)["data"][0].clone();
    let id = str_of(&key["id"]);

    let edit = owner.get(&format!("/dashboard/api-keys/{id}/edit")).await;
    assert_eq!(edit.status, StatusCode::OK);
    assert!(edit.html.contains("name=\"perm.calls\" value=\"read\" checked"), "the form shows the key's scopes");
    assert!(!edit.html.contains(&plaintext));
    let saved = owner
        .post(
            &format!("/dashboard/api-keys/{id}/edit"),
            &[
                ("csrf_token", &csrf),
                ("name", "CRM sync"),
                ("access", "restricted"),
                ("perm.calls", "write"),
                ("restrict_ips", "on"),
                ("allowed_ips", "203.0.113.7\n10.0.0.0/8"),
                ("rate_limit_per_minute", "250"),
                ("expires", "2099-01-01T00:00"),
            ],
        )
        .await;
    assert_eq!(
        (saved.status, saved.location().to_owned()),
        (StatusCode::SEE_OTHER, format!("/dashboard/api-keys/{id}"))
    );
    let changed = app.get(&p.key, &format!("/v1/api-keys/{id}")).await.expect_status(200);
    assert_eq!(changed["name"], "CRM sync");
    assert_eq!(changed["scopes"], json!(["calls:write"]));
    assert_eq!(changed["allowed_ips"], json!(["203.0.113.7", "10.0.0.0/8"]));
    assert_eq!(changed["rate_limit_per_minute"], 250);
    assert_eq!(changed["expires_at"], "2099-01-01T00:00:00Z");

    // Bad input keeps what was typed and names the fields.
    let bad = owner
        .post(
            &format!("/dashboard/api-keys/{id}/edit"),
            &[
                ("csrf_token", &csrf),
                ("name", "CRM sync"),
                ("access", "restricted"),
                ("rate_limit_per_minute", "lots"),
                ("expires", "soon"),
            ],
        )
        .await;
    assert_eq!(bad.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        bad.html.contains("rate_limit_per_minute")
            && bad.html.contains("expires_at")
            && bad.html.contains("value=\"lots\"")
    );

    let rolled = owner
        .post(&format!("/dashboard/api-keys/{id}/roll"), &[("csrf_token", &csrf), ("grace_period_seconds", "3600")])
        .await;
    assert_eq!(rolled.status, StatusCode::CREATED, "{}", rolled.html);
    let new_plaintext = plaintext_of(&rolled);
    assert_ne!(new_plaintext, plaintext);
    let event = app.audit_event(&p.key, "api_key.rolled", &id).await;
    assert_eq!(event["actor_type"], "user");

    let new_id =
        app.get(&p.key, "/v1/api-keys?name=CRM%20sync&status=active").await.expect_status(200)["data"][0]["id"].clone();
    let new_id = str_of(&new_id);
    let confirm = owner.get(&format!("/dashboard/api-keys/{new_id}/revoke")).await;
    assert!(confirm.html.contains("Revoke"));
    let revoked = owner
        .post(&format!("/dashboard/api-keys/{new_id}/revoke"), &[("csrf_token", &csrf), ("reason", "leaked")])
        .await;
    assert_eq!((revoked.status, revoked.location()), (StatusCode::SEE_OTHER, "/dashboard/api-keys"));
    assert_problem(&app.get(&new_plaintext, "/v1/api-keys").await, 401, "api_key_revoked");
    let table = owner.get("/dashboard/api-keys?status=revoked").await;
    assert!(table.html.contains("REVOKED") && table.html.contains("CRM sync"));

    let deleted = owner.post(&format!("/dashboard/api-keys/{new_id}/delete"), &[("csrf_token", &csrf)]).await;
    assert_eq!(deleted.status, StatusCode::SEE_OTHER);
    assert_eq!(owner.get(&format!("/dashboard/api-keys/{new_id}")).await.status, StatusCode::NOT_FOUND);
    app.audit_event(&p.key, "api_key.deleted", &new_id).await;
}
both_backends!(edit_roll_revoke_and_delete);

async fn every_page_answers_with_its_security_headers(app: TestApp) {
    account_with_users(&app, "Acme").await;
    let mut owner = Browser::signed_in(&app, "owner@acme.example").await;
    for path in [
        "/dashboard/api-keys",
        "/dashboard/api-keys/new",
        "/dashboard/tenants",
        "/dashboard/audit?action=api_key.created",
        "/dashboard/settings",
        "/dashboard/users",
        "/dashboard/sessions",
        "/dashboard/nowhere",
        "/dashboard/api-keys/key_01J0000000000000000000000",
        "/dashboard/assets/app.css",
    ] {
        let page = owner.get(path).await;
        let header = |name: &str| page.headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
        assert!(header("content-security-policy").contains("default-src 'none'"), "{path}");
        assert!(header("content-security-policy").contains("frame-ancestors 'none'"), "{path}");
        assert_eq!(header("x-frame-options"), "DENY", "{path}");
        assert_eq!(header("x-content-type-options"), "nosniff", "{path}");
        assert_eq!(header("cache-control"), "no-store", "{path}");
        assert!(!page.html.contains("https://") || path.ends_with(".css"), "no external resource on {path}");
    }
    assert_eq!(owner.get("/dashboard/nowhere").await.status, StatusCode::NOT_FOUND);
    let bad_filter = owner.get("/dashboard/audit?since=yesterday").await;
    assert_eq!(bad_filter.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(bad_filter.html.contains("since"));
}
both_backends!(every_page_answers_with_its_security_headers);

fn behind_an_https_proxy(config: &mut keygate::Config) {
    config.trusted_proxies = vec!["127.0.0.0/8".into()];
}

async fn behind_an_https_proxy_the_cookie_is_secure(app: TestApp) {
    account_with_users(&app, "Acme").await;
    let mut browser = Browser::new(&app);
    browser.extra =
        vec![("x-forwarded-proto".into(), "https".into()), ("x-forwarded-for".into(), "198.51.100.9".into())];
    let page = browser.sign_in("owner@acme.example", PASSWORD).await;
    assert_eq!(page.status, StatusCode::SEE_OTHER);
    let cookie = page.set_cookies().into_iter().find(|c| c.starts_with("__Host-keygate_session=")).unwrap_or_default();
    assert!(cookie.contains("Secure") && cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"), "{cookie}");
    assert!(
        cookie.contains("Path=/;") || cookie.ends_with("Path=/"),
        "__Host- cookies are for the whole host: {cookie}"
    );
    assert!(!cookie.contains("Domain"), "{cookie}");
    let sessions = browser.get("/dashboard/sessions").await;
    assert!(sessions.html.contains("198.51.100.9"), "the session records the client, not the proxy");

    // The same header from an untrusted peer changes nothing: that is `behind_…`'s config only.
}
both_backends_with!(behind_an_https_proxy; behind_an_https_proxy_the_cookie_is_secure);

async fn https_claims_from_untrusted_peers_are_ignored(app: TestApp) {
    account_with_users(&app, "Acme").await;
    let mut browser = Browser::new(&app);
    browser.extra = vec![("x-forwarded-proto".into(), "https".into())];
    let page = browser.sign_in("owner@acme.example", PASSWORD).await;
    let cookies = page.set_cookies();
    assert!(cookies.iter().any(|c| c.starts_with("keygate_session=") && !c.contains("Secure")), "{cookies:?}");
}
both_backends!(https_claims_from_untrusted_peers_are_ignored);

async fn users_see_and_end_their_sessions(app: TestApp) {
    account_with_users(&app, "Acme").await;
    let mut laptop = Browser::signed_in(&app, "owner@acme.example").await;
    let mut phone = Browser::signed_in(&app, "owner@acme.example").await;
    let list = laptop.get("/dashboard/sessions").await;
    assert_eq!(list.html.matches("/revoke\"").count(), 2, "{}", list.html);
    assert!(list.html.contains("this session"));
    // Newest first: the phone's session heads both lists.
    let phone_page = phone.get("/dashboard/sessions").await;
    let marker = "<form method=\"post\" action=\"/dashboard/sessions/";
    let first = |html: &str| {
        html.find(marker)
            .map(|i| html[i + marker.len()..].split('/').next().unwrap_or_default().to_owned())
            .unwrap_or_default()
    };
    let phone_id = first(&list.html);
    assert_eq!(first(&phone_page.html), phone_id);
    let csrf = laptop.csrf().await;
    let ended = laptop.post(&format!("/dashboard/sessions/{phone_id}/revoke"), &[("csrf_token", &csrf)]).await;
    assert_eq!(ended.status, StatusCode::SEE_OTHER);
    assert_eq!(phone.get("/dashboard/api-keys").await.status, StatusCode::SEE_OTHER, "the phone is signed out");
    assert_eq!(laptop.get("/dashboard/api-keys").await.status, StatusCode::OK);
}
both_backends!(users_see_and_end_their_sessions);

async fn a_sign_in_link_signs_in_once_then_the_user_sets_a_password(app: TestApp) {
    let p = app.partner("Acme").await;
    let invited = app.post(&p.key, "/v1/users", &json!({"email": "grace@acme.example", "role": "viewer"})).await;
    let user_id = str_of(&invited.expect_status(201)["id"]);
    let keygate = app.offline_keygate().await;
    let account = keygate.store.get_account(p.account_id.parse().unwrap_or_else(|_| panic!("an id"))).await;
    let account = account.ok().flatten().unwrap_or_else(|| panic!("the account"));
    let cli = keygate_engine::services::Principal::cli(account);
    let (_, link) = keygate.create_sign_in_link(&cli, &user_id).await.unwrap_or_else(|e| panic!("{e}"));

    let mut browser = Browser::new(&app);
    // Opening the link spends nothing (a link preview may fetch it); the button does.
    for _ in 0..2 {
        let page = browser.get(&format!("/dashboard/sign-in/link?token={}", link.token)).await;
        assert_eq!(page.status, StatusCode::OK);
    }
    let page = browser.get(&format!("/dashboard/sign-in/link?token={}", link.token)).await;
    let csrf = page.csrf();
    let signed = browser.post("/dashboard/sign-in/link", &[("csrf_token", &csrf), ("token", &link.token)]).await;
    assert_eq!((signed.status, signed.location()), (StatusCode::SEE_OTHER, "/dashboard/password"), "{signed:?}");

    // Once only.
    let mut other = Browser::new(&app);
    let page = other.get(&format!("/dashboard/sign-in/link?token={}", link.token)).await;
    let again = other.post("/dashboard/sign-in/link", &[("csrf_token", &page.csrf()), ("token", &link.token)]).await;
    assert_eq!(again.status, StatusCode::UNAUTHORIZED);
    assert!(again.html.contains("used already or has expired"));

    let form = browser.get("/dashboard/password").await;
    assert!(form.html.contains("Set your password") && !form.html.contains("current_password"));
    let csrf = form.csrf();
    let mismatch = browser
        .post(
            "/dashboard/password",
            &[("csrf_token", &csrf), ("password", PASSWORD), ("password_confirmation", "something else entirely")],
        )
        .await;
    assert_eq!(mismatch.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(mismatch.html.contains("password_confirmation"));
    let short = browser
        .post(
            "/dashboard/password",
            &[("csrf_token", &csrf), ("password", "short"), ("password_confirmation", "short")],
        )
        .await;
    assert_eq!(short.status, StatusCode::UNPROCESSABLE_ENTITY);
    let set = browser
        .post(
            "/dashboard/password",
            &[("csrf_token", &csrf), ("password", PASSWORD), ("password_confirmation", PASSWORD)],
        )
        .await;
    assert_eq!(set.status, StatusCode::SEE_OTHER, "{set:?}");
    assert_eq!(browser.get("/dashboard/api-keys").await.status, StatusCode::OK, "this browser stays signed in");
    let event = app.audit_event(&p.key, "user.password_changed", &user_id).await;
    assert_eq!((event["actor_type"].as_str(), event["actor_id"].as_str()), (Some("user"), Some(user_id.as_str())));

    // Changing it needs the current one; a wrong one is refused and changes nothing.
    let csrf = browser.csrf().await;
    let wrong = browser
        .post(
            "/dashboard/password",
            &[
                ("csrf_token", &csrf),
                ("current_password", "not my password!"),
                ("password", "another long phrase here"),
                ("password_confirmation", "another long phrase here"),
            ],
        )
        .await;
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);
    let mut fresh = Browser::new(&app);
    let ok = fresh.sign_in("grace@acme.example", PASSWORD).await;
    assert_eq!(ok.status, StatusCode::SEE_OTHER, "the password set above still works");
}
both_backends!(a_sign_in_link_signs_in_once_then_the_user_sets_a_password);

async fn a_users_changes_are_rate_limited_apart_from_the_accounts_keys(app: TestApp) {
    let p = account_with_users(&app, "Acme").await;
    let mut owner = Browser::signed_in(&app, "owner@acme.example").await;
    let csrf = owner.csrf().await;
    let mut refused = None;
    for n in 0..200 {
        let name = format!("Acme {n}");
        let page =
            owner.post("/dashboard/settings", &[("csrf_token", &csrf), ("name", &name), ("allowed_ips", "")]).await;
        if page.status != StatusCode::SEE_OTHER {
            refused = Some((n, page));
            break;
        }
    }
    let (n, page) = refused.unwrap_or_else(|| panic!("200 changes in a row were all accepted"));
    assert_eq!(n, 120, "the user's allowance is 120 changes a minute");
    assert_eq!(page.status, StatusCode::TOO_MANY_REQUESTS);
    assert!(page.html.contains("rate_limited"), "{}", page.html);
    // The account's keys are not slowed by it, and pages still read.
    app.get(&p.key, "/v1/account").await.expect_status(200);
    assert_eq!(owner.get("/dashboard/api-keys").await.status, StatusCode::OK);
}
both_backends!(a_users_changes_are_rate_limited_apart_from_the_accounts_keys);

async fn the_account_allowlist_guards_keys_not_the_dashboard(app: TestApp) {
    let p = account_with_users(&app, "Acme").await;
    let mut admin = Browser::signed_in(&app, "admin@acme.example").await;
    let csrf = admin.csrf().await;
    // The browser is at 127.0.0.1, outside this list: the dashboard takes it all the same.
    let saved = admin
        .post("/dashboard/settings", &[("csrf_token", &csrf), ("name", "Acme"), ("allowed_ips", "203.0.113.0/24")])
        .await;
    assert_eq!(
        (saved.status, saved.location()),
        (StatusCode::SEE_OTHER, "/dashboard/settings?saved=1"),
        "{}",
        saved.html
    );
    assert_problem(&app.get(&p.key, "/v1/account").await, 403, "ip_not_allowed");
    let page = admin.get("/dashboard/settings?saved=1").await;
    assert!(page.html.contains("203.0.113.0/24") && page.html.contains("Saved."));
    // And back, from the dashboard, which the list does not lock out.
    let saved =
        admin.post("/dashboard/settings", &[("csrf_token", &csrf), ("name", "Acme"), ("allowed_ips", "")]).await;
    assert_eq!(saved.status, StatusCode::SEE_OTHER);
    app.get(&p.key, "/v1/account").await.expect_status(200);
}
both_backends!(the_account_allowlist_guards_keys_not_the_dashboard);

async fn after_signing_in_the_browser_returns_where_it_was_going(app: TestApp) {
    account_with_users(&app, "Acme").await;
    let mut browser = Browser::new(&app);
    let away = browser.get("/dashboard/audit?action=api_key.created").await;
    assert_eq!(away.status, StatusCode::SEE_OTHER);
    let to = away.location().to_owned();
    assert_eq!(to, "/dashboard/sign-in?next=%2Fdashboard%2Faudit%3Faction%3Dapi_key.created");
    let form = browser.get(&to).await;
    let next = form.input("next");
    assert_eq!(next, "/dashboard/audit?action=api_key.created");
    let page = browser
        .post(
            "/dashboard/sign-in",
            &[("csrf_token", &form.csrf()), ("email", "owner@acme.example"), ("password", PASSWORD), ("next", &next)],
        )
        .await;
    assert_eq!((page.status, page.location()), (StatusCode::SEE_OTHER, "/dashboard/audit?action=api_key.created"));
}
both_backends!(after_signing_in_the_browser_returns_where_it_was_going);

async fn malformed_requests_get_a_page_with_a_code(app: TestApp) {
    account_with_users(&app, "Acme").await;
    let mut owner = Browser::signed_in(&app, "owner@acme.example").await;
    let csrf = owner.csrf().await;
    let big = "x".repeat(common::MAX_BODY_BYTES + 10);
    for (page, status, code) in [
        (
            owner.get("/dashboard/api-keys?status=active&status=revoked").await,
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
        (owner.get("/dashboard/api-keys/%ff%fe").await, StatusCode::BAD_REQUEST, "invalid_request"),
        (
            owner.post("/dashboard/tenants", &[("csrf_token", &csrf), ("name", &big)]).await,
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
        ),
    ] {
        assert_eq!(page.status, status, "{page:?}");
        assert!(page.html.contains(code), "{code}: {}", page.html);
        let csp = page.headers.get("content-security-policy").and_then(|v| v.to_str().ok()).unwrap_or("");
        assert!(csp.contains("default-src 'none'"), "{page:?}");
    }
    // Refusal pages count under their code, like problem documents (metrics and log lines).
    let metrics = owner.get("/metrics").await;
    for code in ["invalid_request", "payload_too_large"] {
        assert!(metrics.html.contains(&format!("outcome=\"{code}\"")), "{code}");
    }
    let slash = owner.get("/dashboard/").await;
    assert_eq!((slash.status, slash.location()), (StatusCode::SEE_OTHER, "/dashboard/api-keys"));
}
both_backends!(malformed_requests_get_a_page_with_a_code);

async fn reloading_the_page_a_create_answered_creates_nothing_more(app: TestApp) {
    let p = account_with_users(&app, "Acme").await;
    let mut owner = Browser::signed_in(&app, "owner@acme.example").await;
    let form = owner.get("/dashboard/api-keys/new").await;
    let (csrf, form_id) = (form.csrf(), form.input("form_id"));
    assert_eq!(form_id.len(), 32);
    // A refused submission (refused by the use case, after the claim) does not use the form up:
    // corrected, it goes through.
    let too_long = "n".repeat(201);
    let refused = owner
        .post("/dashboard/api-keys", &key_form(&csrf, &too_long, &[("form_id", &form_id), ("perm.calls", "read")]))
        .await;
    assert_eq!(refused.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", refused.html);
    assert_eq!(refused.input("form_id"), form_id, "the corrected form is the same submission");
    let body = key_form(&csrf, "Once", &[("form_id", &form_id), ("perm.calls", "read")]);
    let created = owner.post("/dashboard/api-keys", &body).await;
    assert_eq!(created.status, StatusCode::CREATED);
    let plaintext = plaintext_of(&created);
    // The browser's reload sends the same POST again.
    let again = owner.post("/dashboard/api-keys", &body).await;
    assert_eq!(again.status, StatusCode::CONFLICT, "{}", again.html);
    assert!(again.html.contains("form_already_submitted") && !again.html.contains(&plaintext), "{}", again.html);
    let listed = app.get(&p.key, "/v1/api-keys?name=Once").await.expect_status(200);
    assert_eq!(listed["data"].as_array().map(Vec::len), Some(1), "one key");
    assert!(again.html.contains(listed["data"][0]["id"].as_str().unwrap_or("?")), "it names the key made");

    // Roll likewise.
    let id = str_of(&listed["data"][0]["id"]);
    let confirm = owner.get(&format!("/dashboard/api-keys/{id}/roll")).await;
    let roll = [("csrf_token", csrf.as_str()), ("form_id", &confirm.input("form_id")), ("grace_period_seconds", "0")];
    assert_eq!(owner.post(&format!("/dashboard/api-keys/{id}/roll"), &roll).await.status, StatusCode::CREATED);
    let again = owner.post(&format!("/dashboard/api-keys/{id}/roll"), &roll).await;
    assert_eq!(again.status, StatusCode::CONFLICT);
    let all = app.get(&p.key, "/v1/api-keys?name=Once").await.expect_status(200);
    assert_eq!(all["data"].as_array().map(Vec::len), Some(2), "the old key and one new one");
}
both_backends!(reloading_the_page_a_create_answered_creates_nothing_more);

async fn an_admin_adds_a_user_without_a_password_and_hands_over_its_link(app: TestApp) {
    let p = account_with_users(&app, "Acme").await;
    let mut admin = Browser::signed_in(&app, "admin@acme.example").await;
    let page = admin.get("/dashboard/users").await;
    assert!(page.html.contains("<option value=\"viewer\" selected>"), "least privilege by default");
    let csrf = page.csrf();
    let made = admin
        .post(
            "/dashboard/users",
            &[("csrf_token", &csrf), ("email", "new@acme.example"), ("role", "developer"), ("password", "")],
        )
        .await;
    assert_eq!(made.status, StatusCode::CREATED, "{}", made.html);
    let url = plaintext_of(&made);
    let prefix = format!("{}/dashboard/sign-in/link?token=", app.endpoint.base_url);
    assert!(url.starts_with(&prefix), "{url}");
    let token = url[prefix.len()..].to_owned();

    let mut newcomer = Browser::new(&app);
    let form = newcomer.get(&format!("/dashboard/sign-in/link?token={token}")).await;
    let signed = newcomer.post("/dashboard/sign-in/link", &[("csrf_token", &form.csrf()), ("token", &token)]).await;
    assert_eq!((signed.status, signed.location()), (StatusCode::SEE_OTHER, "/dashboard/password"));

    // Another link for that user (it has no password yet); none for an owner from an admin.
    let users = app.get(&p.key, "/v1/users?limit=100").await.expect_status(200);
    let id_of = |email: &str| {
        users["data"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|u| u["email"] == email)
            .map(|u| str_of(&u["id"]))
            .unwrap_or_default()
    };
    let again =
        admin.post(&format!("/dashboard/users/{}/link", id_of("new@acme.example")), &[("csrf_token", &csrf)]).await;
    assert_eq!(again.status, StatusCode::CREATED);
    let refused =
        admin.post(&format!("/dashboard/users/{}/link", id_of("owner@acme.example")), &[("csrf_token", &csrf)]).await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN, "an admin cannot sign in as an owner");
    let mut viewer = Browser::signed_in(&app, "viewer@acme.example").await;
    let csrf = viewer.csrf().await;
    let refused =
        viewer.post(&format!("/dashboard/users/{}/link", id_of("new@acme.example")), &[("csrf_token", &csrf)]).await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);
}
both_backends!(an_admin_adds_a_user_without_a_password_and_hands_over_its_link);

async fn tenants_are_created_suspended_and_unsuspended(app: TestApp) {
    let p = account_with_users(&app, "Acme").await;
    let mut admin = Browser::signed_in(&app, "admin@acme.example").await;
    let csrf = admin.csrf().await;
    let made = admin
        .post("/dashboard/tenants", &[("csrf_token", &csrf), ("name", "Northwind Clinic"), ("external_id", "nw-001")])
        .await;
    assert_eq!((made.status, made.location()), (StatusCode::SEE_OTHER, "/dashboard/tenants"));
    let duplicate =
        admin.post("/dashboard/tenants", &[("csrf_token", &csrf), ("name", "Again"), ("external_id", "nw-001")]).await;
    assert_eq!(duplicate.status, StatusCode::CONFLICT);
    assert!(duplicate.html.contains("value=\"Again\""), "the form keeps what was typed");
    let tenant = app.get(&p.key, "/v1/tenants?external_id=nw-001").await.expect_status(200)["data"][0].clone();
    let id = str_of(&tenant["id"]);
    for (action, status) in [("suspend", "suspended"), ("unsuspend", "active")] {
        let page = admin.post(&format!("/dashboard/tenants/{id}/{action}"), &[("csrf_token", &csrf)]).await;
        assert_eq!(page.status, StatusCode::SEE_OTHER, "{action}");
        assert_eq!(app.get(&p.key, &format!("/v1/tenants/{id}")).await.expect_status(200)["status"], status);
        let event = app.audit_event(&p.key, &format!("tenant.{action}ed"), &id).await;
        assert_eq!(event["actor_type"], "user");
    }
    let bogus = admin.post(&format!("/dashboard/tenants/{id}/delete"), &[("csrf_token", &csrf)]).await;
    assert_eq!(bogus.status, StatusCode::NOT_FOUND);
    let mut dev = Browser::signed_in(&app, "developer@acme.example").await;
    let csrf = dev.csrf().await;
    assert_eq!(
        dev.post(&format!("/dashboard/tenants/{id}/suspend"), &[("csrf_token", &csrf)]).await.status,
        StatusCode::FORBIDDEN
    );
}
both_backends!(tenants_are_created_suspended_and_unsuspended);

async fn editing_a_key_keeps_every_scope_it_holds(app: TestApp) {
    let p = account_with_users(&app, "Acme").await;
    let key = app
        .create_key(
            &p.key,
            json!({"name": "starry", "scopes": ["calls:*", "sms:*", "balance:*", "otp:verify", "messages:read"]}),
        )
        .await;
    let id = str_of(&key["id"]);
    let mut owner = Browser::signed_in(&app, "owner@acme.example").await;
    let edit = owner.get(&format!("/dashboard/api-keys/{id}/edit")).await;
    // Post back exactly what the form shows checked.
    let mut form: Vec<(String, String)> = vec![
        ("csrf_token".into(), edit.csrf()),
        ("name".into(), "starry".into()),
        ("access".into(), "restricted".into()),
        ("rate_limit_per_minute".into(), "100".into()),
    ];
    for (name, value) in [
        ("perm.calls", "write"),
        ("perm.balance", "read"),
        ("perm.messages", "read"),
        ("scope", "sms:send"),
        ("scope", "otp:verify"),
    ] {
        let marker = format!("name=\"{name}\" value=\"{value}\" checked");
        assert!(edit.html.contains(&marker), "{marker} in the edit form");
        form.push((name.into(), value.into()));
    }
    let pairs: Vec<(&str, &str)> = form.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let saved = owner.post(&format!("/dashboard/api-keys/{id}/edit"), &pairs).await;
    assert_eq!(saved.status, StatusCode::SEE_OTHER, "{}", saved.html);
    let after = app.get(&p.key, &format!("/v1/api-keys/{id}")).await.expect_status(200);
    assert_eq!(after["scopes"], json!(["balance:read", "calls:write", "messages:read", "otp:verify", "sms:send"]));
}
both_backends!(editing_a_key_keeps_every_scope_it_holds);

async fn sign_in_links_are_for_users_without_a_password_and_die_with_a_new_role(app: TestApp) {
    let p = account_with_users(&app, "Acme").await;
    let users = app.get(&p.key, "/v1/users?limit=100").await.expect_status(200);
    let id_of = |email: &str| {
        users["data"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|u| u["email"] == email)
            .map(|u| str_of(&u["id"]))
            .unwrap_or_default()
    };
    let mut admin = Browser::signed_in(&app, "admin@acme.example").await;
    let csrf = admin.csrf().await;
    // A user with a password gets no link: whoever made one could sign in as it unseen.
    let refused = admin
        .post(&format!("/dashboard/users/{}/link", id_of("developer@acme.example")), &[("csrf_token", &csrf)])
        .await;
    assert_eq!(refused.status, StatusCode::CONFLICT, "{}", refused.html);
    // A new user without one: the admin holds its link, signs in with it…
    let made = admin
        .post("/dashboard/users", &[("csrf_token", &csrf), ("email", "junior@acme.example"), ("role", "viewer")])
        .await;
    assert_eq!(made.status, StatusCode::CREATED);
    let junior = app.get(&p.key, "/v1/users?limit=100").await.expect_status(200)["data"][0].clone();
    assert_eq!(junior["email"], "junior@acme.example");
    let event = app.audit_event(&p.key, "user.sign_in_link_created", &str_of(&junior["id"])).await;
    assert_eq!(event["actor_type"], "user", "who made a link is on record");
    let url = plaintext_of(&made);
    let token = url.rsplit('=').next().unwrap_or_default().to_owned();
    let mut as_junior = Browser::new(&app);
    let form = as_junior.get(&format!("/dashboard/sign-in/link?token={token}")).await;
    let signed = as_junior.post("/dashboard/sign-in/link", &[("csrf_token", &form.csrf()), ("token", &token)]).await;
    assert_eq!(signed.status, StatusCode::SEE_OTHER);
    assert_eq!(as_junior.get("/dashboard/api-keys").await.status, StatusCode::OK);
    // …and when an owner promotes the user, that session does not take the new role along.
    app.patch(&p.key, &format!("/v1/users/{}", str_of(&junior["id"])), &json!({"role": "admin"}))
        .await
        .expect_status(200);
    assert_eq!(as_junior.get("/dashboard/api-keys").await.status, StatusCode::SEE_OTHER, "signed out by the promotion");
}
both_backends!(sign_in_links_are_for_users_without_a_password_and_die_with_a_new_role);

async fn a_stolen_session_cannot_keep_its_user_from_taking_the_account_back(app: TestApp) {
    account_with_users(&app, "Acme").await;
    let mut thief = Browser::signed_in(&app, "owner@acme.example").await;
    let mut owner = Browser::signed_in(&app, "owner@acme.example").await;
    let thief_csrf = thief.csrf().await;
    for n in 0..121 {
        let name = format!("Acme {n}");
        thief.post("/dashboard/settings", &[("csrf_token", &thief_csrf), ("name", &name), ("allowed_ips", "")]).await;
    }
    let csrf = owner.csrf().await;
    let blocked =
        owner.post("/dashboard/settings", &[("csrf_token", &csrf), ("name", "Acme"), ("allowed_ips", "")]).await;
    assert_eq!(blocked.status, StatusCode::TOO_MANY_REQUESTS, "the user's allowance is used up");
    // Ending the thief's session still works: the newest-first list puts the owner's own first.
    let sessions = owner.get("/dashboard/sessions").await;
    let marker = "<form method=\"post\" action=\"/dashboard/sessions/";
    let ids: Vec<String> = sessions
        .html
        .match_indices(marker)
        .map(|(i, _)| sessions.html[i + marker.len()..].split('/').next().unwrap_or_default().to_owned())
        .collect();
    let thiefs = ids.get(1).cloned().unwrap_or_default();
    let ended = owner.post(&format!("/dashboard/sessions/{thiefs}/revoke"), &[("csrf_token", &csrf)]).await;
    assert_eq!(ended.status, StatusCode::SEE_OTHER, "{}", ended.html);
    assert_eq!(thief.get("/dashboard/api-keys").await.status, StatusCode::SEE_OTHER, "the thief is out");
    let changed = owner
        .post(
            "/dashboard/password",
            &[
                ("csrf_token", &csrf),
                ("current_password", PASSWORD),
                ("password", "a brand new pass phrase"),
                ("password_confirmation", "a brand new pass phrase"),
            ],
        )
        .await;
    assert_eq!(changed.status, StatusCode::SEE_OTHER, "{}", changed.html);
    let csrf = owner.csrf().await;
    assert_eq!(owner.post("/dashboard/sign-out", &[("csrf_token", &csrf)]).await.status, StatusCode::SEE_OTHER);
}
both_backends!(a_stolen_session_cannot_keep_its_user_from_taking_the_account_back);

async fn what_the_navigation_offers_follows_the_role(app: TestApp) {
    // The operator account's viewer: no Accounts link (it could not open the page).
    let created = app
        .post(
            &app.operator_key,
            "/v1/users",
            &json!({"email": "sam@operator.example", "role": "viewer", "password": PASSWORD}),
        )
        .await;
    created.expect_status(201);
    let mut viewer = Browser::signed_in(&app, "sam@operator.example").await;
    let page = viewer.get("/dashboard/api-keys").await;
    assert!(!page.html.contains("href=\"/dashboard/accounts\""), "no Accounts for an operator viewer");
    app.post(
        &app.operator_key,
        "/v1/users",
        &json!({"email": "root@operator.example", "role": "owner", "password": PASSWORD}),
    )
    .await
    .expect_status(201);
    let mut owner = Browser::signed_in(&app, "root@operator.example").await;
    assert!(owner.get("/dashboard/api-keys").await.html.contains("href=\"/dashboard/accounts\""));
    // A cookie that is not ASCII, from a sibling host, does not hide the session's.
    let mut noisy = Browser::signed_in(&app, "root@operator.example").await;
    noisy.cookies.insert("sibling".into(), "caf\u{e9}".into());
    assert_eq!(noisy.get("/dashboard/api-keys").await.status, StatusCode::OK);
}
both_backends!(what_the_navigation_offers_follows_the_role);
