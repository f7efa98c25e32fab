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

/// A session's last request is written at most this often (seconds): the idle timeout is
/// measured in minutes, a write per page view is not needed.
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

fn new_token() -> Result<String, Error> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| Error::Internal(format!("no randomness for a session token: {e}")))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
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
        let expected = self.csrf_token(session);
        expected.len() == presented.len()
            && expected.bytes().zip(presented.bytes()).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0
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
        Ok(SignedIn { user, account, session, token })
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
        if (now - session.last_seen_at).num_seconds() >= TOUCH_EVERY_SECONDS {
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
