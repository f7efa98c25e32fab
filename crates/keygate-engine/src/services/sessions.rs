//! Dashboard sessions (SPEC §12): sign-in with email and password, and server-side sessions.
//!
//! - A sign-in checks the password of every user with that email (oldest account first) and
//!   signs into the first that matches; an unknown email costs one argon2 verification too, and
//!   both failures answer the same `invalid_credentials`. A suspended account cannot sign in.
//! - The session's token (256 random bits, hex) goes to the browser once, in the cookie; the
//!   store keeps only its SHA-256, so a database dump opens no session.
//! - A session ends when signed out or revoked, after [`SessionSettings::idle`] without a
//!   request, at [`SessionSettings::lifetime`] whatever its activity, and with its user's
//!   password change or deletion (the store revokes them).
//! - Throttling failed sign-ins per address and per email is the engine's
//!   ([`crate::engine::Engine::sign_in`]), which keeps that state.

use std::net::IpAddr;

use hmac::{Hmac, KeyInit, Mac};
use keygate_domain::model::{Account, AccountStatus, Actor, Session, User};
use keygate_domain::policy::AuthFailure;
use keygate_domain::{SessionId, UserId, time};
use sha2::{Digest, Sha256};

use super::users::role_scopes;
use crate::error::Error;
use crate::keygate::Keygate;
use crate::principal::Principal;
use crate::settings::SessionSettings;

/// A session's last request is written at most this often (seconds), and at least four times
/// per idle timeout, so a session in use never reaches it: a write per page view is not needed.
const TOUCH_EVERY_SECONDS: i64 = 60;

/// A successful sign-in: the user, the new session, and the token for the cookie (shown once).
pub struct SignedIn {
    pub user: User,
    pub account: Account,
    pub session: Session,
    /// 64 hex characters; only its SHA-256 is stored.
    pub token: String,
}

impl std::fmt::Debug for SignedIn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SignedIn")
            .field("user", &self.user.id)
            .field("session", &self.session.id)
            .finish_non_exhaustive()
    }
}

/// Live sessions one user may hold; signing in past it ends the oldest (attack finding: sessions
/// grew without bound, and so did the Sessions page).
pub const MAX_SESSIONS_PER_USER: usize = 20;

/// How long a one-time sign-in link is valid.
pub const SIGN_IN_LINK_VALIDITY: chrono::Duration = chrono::Duration::hours(24);

/// A one-time sign-in link's secret part and its end.
pub struct SignInLink {
    /// 64 hex characters; only its SHA-256 is stored.
    pub token: String,
    pub expires_at: keygate_domain::time::Timestamp,
}

impl std::fmt::Debug for SignInLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SignInLink").field("expires_at", &self.expires_at).finish_non_exhaustive()
    }
}

/// A live session and who it belongs to.
#[derive(Debug, Clone)]
pub struct ActiveSession {
    pub session: Session,
    pub user: User,
    pub account: Account,
}

fn token_hash(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// `bytes` random bytes from the OS, in hex: session tokens, sign-in links, the dashboard's
/// sign-in-form tokens and form ids.
///
/// # Errors
/// The OS has no randomness to give.
pub fn random_hex(bytes: usize) -> Result<String, Error> {
    let mut buf = vec![0u8; bytes];
    getrandom::fill(&mut buf).map_err(|e| Error::Internal(format!("no randomness: {e}")))?;
    Ok(buf.iter().map(|b| format!("{b:02x}")).collect())
}

/// A session's or a sign-in link's token: 256 random bits in hex.
fn new_token() -> Result<String, Error> {
    random_hex(32)
}

/// Whether two tokens are equal, compared in constant time (a byte-by-byte comparison that
/// stops at the first difference would tell a guesser how much it got right).
#[must_use]
pub fn same_token(a: &str, b: &str) -> bool {
    a.len() == b.len() && a.bytes().zip(b.bytes()).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Where a dashboard request came from, for its audit events.
#[derive(Debug, Clone, Default)]
pub struct Origin {
    pub ip: Option<IpAddr>,
    pub user_agent: Option<String>,
    pub request_id: Option<String>,
}

impl Keygate {
    /// The principal a signed-in user acts as: its role's scopes ([`role_scopes`]) in its
    /// account, for every tenant, from any address, without an expiry, up to the configured
    /// maximum rate limit; its role also bounds the users it may manage (SPEC §8).
    #[must_use]
    pub fn user_principal(&self, active: &ActiveSession, origin: Origin) -> Principal {
        Principal {
            account: active.account.clone(),
            actor: Actor::User(active.user.id),
            scopes: role_scopes(active.user.role, &self.catalog, active.account.operator),
            tenant_ids: None,
            max_rate_limit: None,
            expires_at: None,
            allowed_ips: None,
            environment: None,
            role: Some(active.user.role),
            ip: origin.ip,
            user_agent: origin.user_agent,
            request_id: origin.request_id,
        }
    }

    /// The CSRF token of a session's forms: an HMAC of the session's id under a key derived from
    /// the hash secret, in hex (64 characters). It needs no storage, is the same for every form of
    /// the session, and is useless to anyone without the session (OWASP's HMAC synchronizer token).
    #[must_use]
    pub fn csrf_token(&self, session: &Session) -> String {
        let key = self.hasher.derive("dashboard-csrf-token-v1");
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(&key).expect("HMAC takes any key length");
        mac.update(session.id.to_string().as_bytes());
        mac.finalize().into_bytes().iter().map(|b| format!("{b:02x}")).collect()
    }

    /// Whether `presented` is the CSRF token of `session` (compared in constant time).
    #[must_use]
    pub fn csrf_matches(&self, session: &Session, presented: &str) -> bool {
        same_token(&self.csrf_token(session), presented)
    }

    /// Signs in with `email` and `password` from `ip`.
    ///
    /// # Errors
    /// 401 `invalid_credentials` for an unknown email or a wrong password (one answer for both);
    /// 403 `account_suspended`; a store failure.
    pub async fn sign_in(
        &self,
        email: &str,
        password: String,
        ip: Option<IpAddr>,
        user_agent: Option<String>,
        settings: SessionSettings,
    ) -> Result<SignedIn, Error> {
        let candidates = self.store.users_by_email(email).await?;
        let mut chosen = None;
        if candidates.is_empty() {
            // The same work as a wrong password: an unknown email is not told apart by time.
            let _ = self.passwords.verify(password, None).await;
        } else {
            for (user, hash) in candidates {
                if self.passwords.verify(password.clone(), hash).await {
                    chosen = Some(user);
                    break;
                }
            }
        }
        let user = chosen.ok_or(Error::InvalidCredentials)?;
        let account = self.store.get_account(user.account_id).await?.ok_or(Error::InvalidCredentials)?;
        self.start_session(user, account, ip, user_agent, settings).await
    }

    /// A new session for `user` of `account` (not suspended), noted as its latest sign-in.
    async fn start_session(
        &self,
        user: User,
        account: Account,
        ip: Option<IpAddr>,
        user_agent: Option<String>,
        settings: SessionSettings,
    ) -> Result<SignedIn, Error> {
        if account.status == AccountStatus::Suspended {
            return Err(AuthFailure::AccountSuspended.into());
        }
        let token = new_token()?;
        let now = time::now();
        let session = Session {
            id: SessionId::generate(),
            user_id: user.id,
            account_id: user.account_id,
            token_hash: token_hash(&token),
            created_at: now,
            last_seen_at: now,
            expires_at: now + settings.lifetime,
            ip: ip.map(keygate_domain::ip::canonical),
            user_agent: user_agent.map(|ua| ua.chars().take(512).collect()),
            revoked_at: None,
        };
        self.store.create_session(&session).await?;
        self.store.note_sign_in(user.account_id, user.id, now).await?;
        // A user keeps at most MAX_SESSIONS_PER_USER live sessions: the oldest end first.
        let live = self.store.list_sessions(user.account_id, user.id, now).await?;
        for old in live.iter().skip(MAX_SESSIONS_PER_USER) {
            self.store.revoke_session(user.account_id, user.id, old.id, now).await?;
        }
        Ok(SignedIn { user, account, session, token })
    }

    /// A one-time sign-in link's token for a user of `p`'s account without a password (SPEC §8:
    /// a user created without one signs in with a link, then sets one): 256 random bits in hex,
    /// valid for [`SIGN_IN_LINK_VALIDITY`], stored as its SHA-256 only, used up by its first
    /// sign-in, replacing the user's earlier links, and audited (`user.sign_in_link_created`).
    /// Setting a password, a change of role or deleting the user ends it.
    ///
    /// # Errors
    /// 404 for an unknown user; 403 when `p` may not manage a user of that role (it could sign
    /// in as it); 409 for a user with a password.
    pub async fn create_sign_in_link(&self, p: &Principal, user_id: &str) -> Result<(User, SignInLink), Error> {
        let user = self.get_user(p, user_id).await?;
        self.ensure_may_grant(p, user.role)?;
        if user.has_password {
            // Else a link would let whoever may manage the user sign in as it unseen.
            return Err(Error::Conflict(
                "This user has a password: sign-in links are for users without one. To let it in again, set a \
                 new password (PATCH /v1/users/{id}) or have it change its own."
                    .into(),
            ));
        }
        let token = new_token()?;
        let expires_at = time::now() + SIGN_IN_LINK_VALIDITY;
        let audit = p.audit(
            "user.sign_in_link_created",
            "user",
            user.id,
            serde_json::json!({"expires_at": crate::views::ts(expires_at)}),
        );
        self.store.create_sign_in_token(&token_hash(&token), user.account_id, user.id, expires_at, &audit).await?;
        Ok((user, SignInLink { token, expires_at }))
    }

    /// Signs in with a one-time link's token, using it up.
    ///
    /// # Errors
    /// 401 `invalid_credentials` for a token that is unknown, used or expired; 403
    /// `account_suspended`; a store failure.
    pub async fn sign_in_with_link(
        &self,
        token: &str,
        ip: Option<IpAddr>,
        user_agent: Option<String>,
        settings: SessionSettings,
    ) -> Result<SignedIn, Error> {
        let Some((account_id, user_id)) = self.store.consume_sign_in_token(&token_hash(token), time::now()).await?
        else {
            return Err(Error::InvalidCredentials);
        };
        let user = self.store.get_user(account_id, user_id).await?.ok_or(Error::InvalidCredentials)?;
        let account = self.store.get_account(account_id).await?.ok_or(Error::InvalidCredentials)?;
        self.start_session(user, account, ip, user_agent, settings).await
    }

    /// A signed-in user sets its own password (any role may: it is its own). With a password
    /// already set, `current` must be it. Every session of the user ends (the store's rule for a
    /// new password), and a new one opens for this browser.
    ///
    /// # Errors
    /// 422 for a password outside the rules; 401 `invalid_credentials` for a wrong `current`;
    /// 409 when the user changed role meanwhile; a store failure.
    pub async fn set_own_password(
        &self,
        active: &ActiveSession,
        current: Option<String>,
        new: String,
        origin: Origin,
        settings: SessionSettings,
    ) -> Result<SignedIn, Error> {
        let mut v = super::Validator::default();
        if let Err(m) = crate::password::Passwords::check_rules(&new) {
            v.error("password", m);
        }
        v.finish()?;
        if active.user.has_password {
            let stored = self
                .store
                .users_by_email(&active.user.email)
                .await?
                .into_iter()
                .find(|(u, _)| u.id == active.user.id)
                .and_then(|(_, hash)| hash);
            if !self.passwords.verify(current.unwrap_or_default(), stored).await {
                return Err(Error::InvalidCredentials);
            }
        }
        let hash = self.passwords.hash(new).await?;
        let p = self.user_principal(active, origin.clone());
        let audit = p.audit("user.password_changed", "user", active.user.id, serde_json::json!({}));
        let user = &active.user;
        if !self.store.set_password(user.account_id, user.id, user.role, Some(&hash), &audit).await? {
            return Err(Error::NotFound("user"));
        }
        let mut user = user.clone();
        user.has_password = true;
        self.start_session(user, active.account.clone(), origin.ip, origin.user_agent, settings).await
    }

    /// The live session `token` opens, if any: not revoked, not idle for longer than
    /// `settings.idle`, not past its lifetime, of a user and account that still exist and an
    /// account that is not suspended. Notes the request for the idle timeout.
    ///
    /// # Errors
    /// A store failure.
    pub async fn session(&self, token: &str, settings: SessionSettings) -> Result<Option<ActiveSession>, Error> {
        let Some((session, user)) = self.store.session_by_token(&token_hash(token)).await? else { return Ok(None) };
        let now = time::now();
        if session.revoked_at.is_some() || now >= session.expires_at || now - session.last_seen_at >= settings.idle {
            return Ok(None);
        }
        let Some(account) = self.store.get_account(session.account_id).await? else { return Ok(None) };
        if account.status == AccountStatus::Suspended {
            return Ok(None);
        }
        let touch_every = TOUCH_EVERY_SECONDS.min(settings.idle.num_seconds() / 4).max(1);
        if (now - session.last_seen_at).num_seconds() >= touch_every {
            self.store.touch_session(session.id, now).await?;
        }
        Ok(Some(ActiveSession { session, user, account }))
    }

    /// Ends the session `token` opens (signing out); nothing when it opens none.
    ///
    /// # Errors
    /// A store failure.
    pub async fn sign_out(&self, token: &str) -> Result<(), Error> {
        if let Some((session, user)) = self.store.session_by_token(&token_hash(token)).await? {
            self.store.revoke_session(user.account_id, user.id, session.id, time::now()).await?;
        }
        Ok(())
    }

    /// The live sessions of a user, newest first ("where you are signed in").
    ///
    /// # Errors
    /// A store failure.
    pub async fn user_sessions(&self, account: &Account, user: UserId) -> Result<Vec<Session>, Error> {
        Ok(self.store.list_sessions(account.id, user, time::now()).await?)
    }

    /// Ends one of a user's own sessions.
    ///
    /// # Errors
    /// 404 when it is not one of that user's.
    pub async fn revoke_user_session(&self, account: &Account, user: UserId, id: &str) -> Result<(), Error> {
        let id: SessionId = id.parse().map_err(|_| Error::NotFound("session"))?;
        if self.store.revoke_session(account.id, user, id, time::now()).await? {
            Ok(())
        } else {
            Err(Error::NotFound("session"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_compare_whole() {
        assert!(same_token("abc", "abc"));
        assert!(!same_token("abc", "abd"));
        assert!(!same_token("abc", "ab"));
        assert!(!same_token("", "a"));
    }
}
