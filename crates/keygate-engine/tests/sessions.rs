//! Dashboard sign-in and sessions through the engine, on a real SQLite store, no HTTP: one answer
//! for an unknown email and a wrong password, the throttle per email, the idle and absolute
//! timeouts, sign-out, and sessions ending with a password change.

use std::net::IpAddr;
use std::sync::Arc;

use chrono::Duration;
use keygate_domain::key::{HashSecret, KeyFormat};
use keygate_domain::model::Account;
use keygate_domain::scope::Catalog;
use keygate_engine::services::Principal;
use keygate_engine::services::users::{CreateUserRequest, UpdateUserRequest};
use keygate_engine::{Engine, Error, Keygate, Limits, SessionSettings, Settings};

const PASSWORD: &str = "a long pass phrase for the dashboard";

fn settings() -> Settings {
    Settings {
        trusted_proxies: Vec::new(),
        client_ipv6_prefix: 64,
        key_format: KeyFormat::new("sk").unwrap_or_else(|e| panic!("{e}")),
        catalog: Catalog::default(),
        limits: Limits::default(),
        allow_query_key: false,
        max_failed_attempts_per_minute: 30,
        cache_max_keys: 100_000,
        idempotency_retention_seconds: 86_400,
        request_log_retention_days: 30,
        request_log: keygate_engine::settings::RequestLogMode::All,
        sessions: SessionSettings::default(),
    }
}

struct Fixture {
    engine: Engine,
    account: Account,
    _dir: tempfile::TempDir,
}

async fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let url = format!("sqlite://{}", dir.path().join("keygate.db").display());
    let store = keygate_store::connect(&url).await.unwrap_or_else(|e| panic!("{e}"));
    let secret = HashSecret::new("engine-sessions-test-secret-0123456789").unwrap_or_else(|e| panic!("{e}"));
    let keygate = Keygate::new(Arc::clone(&store), &settings(), &secret);
    let operator = keygate.init_operator().await.ok().flatten().unwrap_or_else(|| panic!("an operator"));
    let account = operator.0;
    let p = Principal::cli(account.clone());
    let req =
        CreateUserRequest { email: "Ada@Example.com".into(), role: "owner".into(), password: Some(PASSWORD.into()) };
    keygate.create_user(&p, req).await.unwrap_or_else(|e| panic!("{e}"));
    Fixture { engine: Engine::new(keygate, &settings()), account, _dir: dir }
}

fn ip(n: u8) -> IpAddr {
    IpAddr::from([192, 0, 2, n])
}

#[tokio::test]
async fn a_right_password_opens_a_session_and_a_wrong_one_or_an_unknown_email_does_not() {
    let f = fixture().await;
    for (email, password) in [("ada@example.com", "not the password!"), ("nobody@example.com", PASSWORD)] {
        let refused = f.engine.sign_in(email, password.into(), ip(1), None).await;
        assert!(matches!(refused, Err(Error::InvalidCredentials)), "{email}: {refused:?}");
    }
    let signed_in = f.engine.sign_in("ADA@example.com", PASSWORD.into(), ip(1), Some("tests".into())).await;
    let signed_in = signed_in.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(signed_in.token.len(), 64);
    assert_eq!(signed_in.user.email, "Ada@Example.com");
    assert_eq!(signed_in.account.id, f.account.id);
    assert!(!format!("{signed_in:?}").contains(&signed_in.token), "Debug does not print the token");

    let active = f.engine.session(&signed_in.token).await.ok().flatten().unwrap_or_else(|| panic!("a live session"));
    assert_eq!(active.user.id, signed_in.user.id);
    assert_eq!(active.session.ip, Some(ip(1)));
    assert!(f.engine.session("0".repeat(64).as_str()).await.ok().flatten().is_none(), "a made-up token");

    let listed = f.engine.keygate.user_sessions(&f.account, signed_in.user.id).await.unwrap_or_default();
    assert_eq!(listed.iter().map(|s| s.id).collect::<Vec<_>>(), [signed_in.session.id]);

    f.engine.keygate.sign_out(&signed_in.token).await.unwrap_or_else(|e| panic!("{e}"));
    assert!(f.engine.session(&signed_in.token).await.ok().flatten().is_none(), "signed out");
    assert!(f.engine.keygate.user_sessions(&f.account, signed_in.user.id).await.unwrap_or_default().is_empty());
}

#[tokio::test]
async fn sign_ins_for_one_email_are_throttled_right_password_or_not() {
    let f = fixture().await;
    for _ in 1..=10 {
        let r = f.engine.sign_in("ada@example.com", "a wrong guess!!".into(), ip(1), None).await;
        assert!(matches!(r, Err(Error::InvalidCredentials)), "{r:?}");
    }
    let r = f.engine.sign_in("ada@example.com", PASSWORD.into(), ip(1), None).await;
    assert!(matches!(r, Err(Error::TooManyFailedAttempts { retry_after }) if retry_after >= 1), "{r:?}");
    // From elsewhere Ada still signs in: one address's guesses do not lock her out.
    let r = f.engine.sign_in("ada@example.com", PASSWORD.into(), ip(2), None).await;
    assert!(r.is_ok(), "{r:?}");
}

#[tokio::test]
async fn concurrent_guesses_cannot_outrun_the_throttle() {
    let f = std::sync::Arc::new(fixture().await);
    let guesses = (0..40u8).map(|n| {
        let f = std::sync::Arc::clone(&f);
        tokio::spawn(
            async move { f.engine.sign_in("ada@example.com", format!("wrong guess {n}!!!"), ip(7), None).await },
        )
    });
    let mut checked = 0;
    for guess in guesses {
        match guess.await.unwrap_or_else(|e| panic!("{e}")) {
            Err(Error::InvalidCredentials) => checked += 1,
            Err(Error::TooManyFailedAttempts { .. }) => {}
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(checked, 10, "only the allowance of one email from one address is checked, however many arrive at once");
}

#[tokio::test]
async fn sessions_end_when_idle_at_their_lifetime_and_with_a_new_password() {
    let f = fixture().await;
    let keygate = &f.engine.keygate;
    let open = |idle: i64, lifetime: i64| SessionSettings {
        idle: Duration::minutes(idle),
        lifetime: Duration::minutes(lifetime),
    };
    let short_lived = keygate.sign_in("ada@example.com", PASSWORD.into(), None, None, open(30, 0)).await;
    let short_lived = short_lived.unwrap_or_else(|e| panic!("{e}"));
    assert!(keygate.session(&short_lived.token, open(30, 60)).await.ok().flatten().is_none(), "past its lifetime");

    let s = keygate.sign_in("ada@example.com", PASSWORD.into(), None, None, open(30, 60)).await;
    let s = s.unwrap_or_else(|e| panic!("{e}"));
    assert!(keygate.session(&s.token, open(30, 60)).await.ok().flatten().is_some());
    assert!(keygate.session(&s.token, open(0, 60)).await.ok().flatten().is_none(), "idle for longer than allowed");

    let p = Principal::cli(f.account.clone());
    let req = UpdateUserRequest { password: Some("another long pass phrase".into()), ..UpdateUserRequest::default() };
    keygate.update_user(&p, &s.user.id.to_string(), req).await.unwrap_or_else(|e| panic!("{e}"));
    assert!(keygate.session(&s.token, open(30, 60)).await.ok().flatten().is_none(), "a new password ends it");
    let old = keygate.sign_in("ada@example.com", PASSWORD.into(), None, None, open(30, 60)).await;
    assert!(matches!(old, Err(Error::InvalidCredentials)), "the old password no longer works");
}

/// Signs `email` in and returns the principal its session acts as.
async fn principal_of(f: &Fixture, email: &str) -> (Principal, keygate_engine::services::sessions::ActiveSession) {
    let signed_in = f.engine.sign_in(email, PASSWORD.into(), ip(9), None).await.unwrap_or_else(|e| panic!("{e}"));
    let active = f.engine.session(&signed_in.token).await.ok().flatten().unwrap_or_else(|| panic!("a live session"));
    let origin = keygate_engine::services::sessions::Origin { ip: Some(ip(9)), ..Default::default() };
    (f.engine.keygate.user_principal(&active, origin), active)
}

#[tokio::test]
async fn a_signed_in_user_acts_with_its_roles_scopes_and_manages_only_users_below_it() {
    let f = fixture().await;
    let keygate = &f.engine.keygate;
    let cli = Principal::cli(f.account.clone());
    for (email, role) in [("admin@example.com", "admin"), ("viewer@example.com", "viewer")] {
        let req = CreateUserRequest { email: email.into(), role: role.into(), password: Some(PASSWORD.into()) };
        keygate.create_user(&cli, req).await.unwrap_or_else(|e| panic!("{e}"));
    }
    let scope = |s: &str| s.parse::<keygate_domain::Scope>().unwrap_or_else(|_| panic!("{s}"));

    let (viewer, _) = principal_of(&f, "viewer@example.com").await;
    assert!(viewer.require(&scope("api_keys:read")).is_ok());
    assert!(viewer.require(&scope("api_keys:write")).is_err());
    assert_eq!(viewer.actor.kind(), "user");
    assert_eq!(viewer.ip, Some(ip(9)));

    let (admin, _) = principal_of(&f, "admin@example.com").await;
    assert!(admin.require(&scope("users:write")).is_ok());
    assert!(admin.require(&scope("accounts:write")).is_err(), "operator scopes are the owner's");
    let req = CreateUserRequest { email: "new-admin@example.com".into(), role: "admin".into(), password: None };
    let refused = keygate.create_user(&admin, req).await;
    assert!(
        matches!(refused, Err(Error::Escalation { exceeds: keygate_engine::error::Exceeds::Role, .. })),
        "an admin makes no admin: {refused:?}"
    );
    // An owner is unrestricted, which an admin is not: refused on its scopes first.
    let req = CreateUserRequest { email: "new-owner@example.com".into(), role: "owner".into(), password: None };
    assert!(matches!(keygate.create_user(&admin, req).await, Err(Error::Escalation { .. })));
    let req = CreateUserRequest { email: "dev@example.com".into(), role: "developer".into(), password: None };
    let dev = keygate.create_user(&admin, req).await.unwrap_or_else(|e| panic!("{e}"));
    let promote = UpdateUserRequest { role: Some("admin".into()), ..UpdateUserRequest::default() };
    assert!(keygate.update_user(&admin, &dev.id.to_string(), promote).await.is_err(), "not to its own level");

    let (owner, owner_session) = principal_of(&f, "ada@example.com").await;
    assert_eq!(owner.scopes, None, "an owner is unrestricted");
    let req = CreateUserRequest { email: "admin2@example.com".into(), role: "admin".into(), password: None };
    keygate.create_user(&owner, req).await.unwrap_or_else(|e| panic!("an owner makes admins: {e}"));

    // An admin cannot act on the owner either (SPEC §8: users below admin).
    let demote = UpdateUserRequest { role: Some("viewer".into()), ..UpdateUserRequest::default() };
    let refused = keygate.update_user(&admin, &owner_session.user.id.to_string(), demote).await;
    assert!(matches!(refused, Err(Error::Escalation { .. })), "{refused:?}");
    assert!(keygate.delete_user(&admin, &owner_session.user.id.to_string()).await.is_err());
}

#[tokio::test]
async fn csrf_tokens_belong_to_one_session() {
    let f = fixture().await;
    let a = f.engine.sign_in("ada@example.com", PASSWORD.into(), ip(1), None).await.unwrap_or_else(|e| panic!("{e}"));
    let b = f.engine.sign_in("ada@example.com", PASSWORD.into(), ip(2), None).await.unwrap_or_else(|e| panic!("{e}"));
    let keygate = &f.engine.keygate;
    let token = keygate.csrf_token(&a.session);
    assert_eq!(token.len(), 64);
    assert_eq!(token, keygate.csrf_token(&a.session), "stable for the session");
    assert!(keygate.csrf_matches(&a.session, &token));
    assert!(!keygate.csrf_matches(&b.session, &token), "another session's token");
    assert!(!keygate.csrf_matches(&a.session, ""));
    assert!(!keygate.csrf_matches(&a.session, &token[..63]));
    assert_ne!(token, a.token, "not the session token itself");
}

#[tokio::test]
async fn a_user_keeps_at_most_twenty_sessions_and_the_oldest_end_first() {
    let f = fixture().await;
    let mut tokens = Vec::new();
    for n in 0..22u8 {
        // Spread over addresses and past the throttle's per-email minute: each sign-in is its own.
        let signed = f
            .engine
            .keygate
            .sign_in("ada@example.com", PASSWORD.into(), Some(ip(n)), None, SessionSettings::default())
            .await;
        tokens.push(signed.unwrap_or_else(|e| panic!("{e}")).token);
    }
    let user = f.engine.session(&tokens[21]).await.ok().flatten().unwrap_or_else(|| panic!("the newest is live")).user;
    let live = f.engine.keygate.user_sessions(&f.account, user.id).await.unwrap_or_default();
    assert_eq!(live.len(), keygate_engine::services::sessions::MAX_SESSIONS_PER_USER);
    for old in &tokens[..2] {
        assert!(f.engine.session(old).await.ok().flatten().is_none(), "the two oldest ended");
    }
    assert!(f.engine.session(&tokens[2]).await.ok().flatten().is_some());
}
