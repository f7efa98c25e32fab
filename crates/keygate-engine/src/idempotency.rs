//! `Idempotency-Key` (SPEC §6): retried POSTs that change state execute once. This is the claim
//! and replay logic; reading the header and the body, and turning responses into the records kept
//! here and back, is `keygate-http`'s.
//!
//! A request carrying the header is fingerprinted (method, path, query, SHA-256 of the body) and
//! claims the record (account, key) in the store before it executes: the claim is atomic in the
//! database, so it holds across nodes. The fingerprint is bound to the [`Binding`]: the principal
//! that sent the request (API key id, later the dashboard user) and, on gateway routes, the tenant
//! it acts for. Another principal or tenant reusing the Idempotency-Key gets 422
//! `idempotency_key_reused`, never the stored response: a replay must not hand a narrower key what
//! a wider one created (SPEC §6). Then:
//! - a completed record with the same fingerprint is replayed (`Idempotent-Replayed: true`):
//!   status, headers and body, byte for byte, without executing anything;
//! - a pending one answers 409 `idempotency_in_progress`; a different fingerprint 422
//!   `idempotency_key_reused`;
//! - otherwise the request executes and its response is stored — whatever the status, 5xx
//!   included, so a retry never executes twice — except a 4xx, which keygate only answers when it
//!   refused before executing (validation, conflict, not found): that claim is released and a
//!   retry executes normally. Refusals earlier still (401/403/429, bad JSON) never claim.
//! - A request that dies mid-execution leaves its record pending: retries get 409 until the
//!   record expires. That is the price of never executing twice.
//! - A response body over 10 MiB is not buffered whole: the client gets
//!   it streamed, and retries get 409 `conflict` saying the request completed.
//!
//! A stored response can hold a created key's plaintext, so it is sealed with
//! ChaCha20-Poly1305 under a key derived from the hash secret, bound to the (account, key) pair
//! it belongs to: only that account's retry can open it, a database dump alone opens nothing, and
//! records are purged when they expire (default 24 h).

use std::sync::Arc;

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use chrono::Duration;
use hmac::{Hmac, Mac};
use keygate_domain::{AccountId, TenantId, time};
use keygate_store::{IdempotencyBegin, Store};
use sha2::{Digest, Sha256};

use crate::error::Error;

/// The header's rules: 1–255 printable ASCII characters.
#[must_use]
pub fn valid_key(s: &str) -> bool {
    (1..=255).contains(&s.len()) && s.bytes().all(|b| (0x20..=0x7e).contains(&b))
}

/// What a request with an `Idempotency-Key` claims: the key, and the request's fingerprint
/// (method, path, query, SHA-256 of the body).
#[derive(Debug, Clone)]
pub struct Request {
    key: String,
    fingerprint: [u8; 32],
}

impl Request {
    /// `key` must pass [`valid_key`].
    #[must_use]
    pub fn new(key: String, method: &str, path: &str, query: &str, body: &[u8]) -> Self {
        let mut h = Sha256::new();
        for part in [method, path, query] {
            h.update(part.as_bytes());
            h.update([0]);
        }
        h.update(Sha256::digest(body));
        Self { key, fingerprint: h.finalize().into() }
    }
}

/// Who a claim belongs to beyond its account (SPEC §6): only a request of the same principal, for
/// the same tenant, may replay the stored response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Binding {
    pub account: AccountId,
    /// The acting principal's id: `key_…` (or `usr_…` for a dashboard user).
    pub principal: String,
    /// The tenant a gateway request acts for.
    pub tenant: Option<TenantId>,
}

impl Binding {
    /// The fingerprint of `request` bound to this principal and tenant: an HMAC-SHA256 under
    /// `key`, a secret derived from the hash secret. A plain digest would let a copy of the
    /// database confirm guesses of a body (a password sent to `POST /v1/users`) offline; keyed,
    /// it confirms nothing without the secret.
    fn fingerprint(&self, key: &[u8; 32], request: &[u8; 32]) -> [u8; 32] {
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(key).expect("HMAC takes any key length");
        mac.update(b"keygate-idempotency-binding-v2\0");
        mac.update(request);
        mac.update(self.principal.as_bytes());
        mac.update(&[0]);
        if let Some(t) = self.tenant {
            mac.update(t.to_string().as_bytes());
        }
        mac.finalize().into_bytes().into()
    }
}

/// What the caller does next.
pub enum Claim {
    /// Answer this stored response record (opened); execute nothing.
    Replay(Vec<u8>),
    /// Execute, then release or complete the [`Ticket`].
    Proceed(Ticket),
}

/// A claimed (or, without the header, unclaimed) execution.
#[must_use = "a claim is released or completed, or retries wait for it until it expires"]
pub struct Ticket {
    claimed: Option<(AccountId, String)>,
}

/// Claims, replays and stores: the store's records, sealed with the [`Sealer`].
pub struct Idempotency {
    store: Arc<dyn Store>,
    sealer: Sealer,
    fingerprint_key: [u8; 32],
    retention: Duration,
}

impl Idempotency {
    /// `sealer_key` and `fingerprint_key` must be secret and distinct (derive them from the hash
    /// secret); records are kept for `retention_seconds`.
    #[must_use]
    pub fn new(store: Arc<dyn Store>, sealer_key: [u8; 32], fingerprint_key: [u8; 32], retention_seconds: u64) -> Self {
        Self { store, sealer: Sealer::new(sealer_key), fingerprint_key, retention: retention(retention_seconds) }
    }

    /// How long a record is kept.
    #[must_use]
    pub fn retention(&self) -> Duration {
        self.retention
    }

    /// Claims `request`'s key for `binding`'s account (call after parsing the body: a body
    /// refused as invalid never claims). Without a request (no header), proceeds unclaimed.
    ///
    /// # Errors
    /// [`Error::IdempotencyInProgress`]; [`Error::IdempotencyKeyReused`] (also for the same
    /// request from another principal or for another tenant); a store failure; a record that does
    /// not open.
    pub async fn claim(&self, binding: &Binding, request: Option<&Request>) -> Result<Claim, Error> {
        let Some(Request { key, fingerprint }) = request else {
            return Ok(Claim::Proceed(Ticket { claimed: None }));
        };
        let account = binding.account;
        let fingerprint = binding.fingerprint(&self.fingerprint_key, fingerprint);
        let now = time::now();
        let expires_at = now + self.retention;
        match self.store.begin_idempotent(account, key, &fingerprint, now, expires_at).await? {
            IdempotencyBegin::Started => Ok(Claim::Proceed(Ticket { claimed: Some((account, key.clone())) })),
            IdempotencyBegin::InProgress => Err(Error::IdempotencyInProgress),
            IdempotencyBegin::Mismatch => Err(Error::IdempotencyKeyReused),
            IdempotencyBegin::Completed(sealed) => {
                let record = self.sealer.open(account, key, &sealed)?;
                metrics::counter!("keygate_idempotency_replays_total").increment(1);
                Ok(Claim::Replay(record))
            }
        }
    }
}

impl Ticket {
    /// Whether a key was claimed (the request carried one).
    #[must_use]
    pub fn is_claimed(&self) -> bool {
        self.claimed.is_some()
    }

    /// Gives the claim up: nothing executed, a retry runs normally.
    pub async fn release(self, idempotency: &Idempotency) {
        if let Some((account, key)) = self.claimed
            && let Err(e) = idempotency.store.release_idempotent(account, &key).await
        {
            tracing::warn!(error = %e, "could not release an idempotency claim");
        }
    }

    /// Stores `record` (the response, encoded by the front end) for replays, sealed.
    /// A failure is logged: the work is done and acknowledged, and a retry sees the claim pending
    /// (409), never a second execution.
    pub async fn complete(self, idempotency: &Idempotency, record: &[u8]) {
        let Some((account, key)) = self.claimed else { return };
        match idempotency.sealer.seal(account, &key, record) {
            Ok(sealed) => {
                if let Err(e) = idempotency.store.complete_idempotent(account, &key, &sealed).await {
                    tracing::error!(error = %e, "could not store an idempotent response");
                }
            }
            Err(e) => tracing::error!(error = %e, "could not seal an idempotent response"),
        }
    }
}

/// Seals stored response records to the (account, Idempotency-Key) they belong to.
pub struct Sealer {
    cipher: ChaCha20Poly1305,
}

impl Sealer {
    /// `key` must be secret: derive it from the hash secret.
    #[must_use]
    pub fn new(key: [u8; 32]) -> Self {
        Self { cipher: ChaCha20Poly1305::new(&Key::from(key)) }
    }

    fn aad(account: AccountId, key: &str) -> Vec<u8> {
        format!("keygate-idempotency-v1\0{account}\0{key}").into_bytes()
    }

    fn seal(&self, account: AccountId, key: &str, msg: &[u8]) -> Result<Vec<u8>, Error> {
        let mut nonce = [0u8; 12];
        getrandom::fill(&mut nonce).map_err(|e| Error::Internal(e.to_string()))?;
        let aad = Self::aad(account, key);
        let sealed = self
            .cipher
            .encrypt(&Nonce::from(nonce), Payload { msg, aad: &aad })
            .map_err(|_| Error::Internal("sealing failed".into()))?;
        Ok([nonce.as_slice(), &sealed].concat())
    }

    fn open(&self, account: AccountId, key: &str, sealed: &[u8]) -> Result<Vec<u8>, Error> {
        let (nonce, ciphertext) = sealed.split_at_checked(12).ok_or_else(|| Error::Internal("short record".into()))?;
        let nonce: [u8; 12] = nonce.try_into().map_err(|_| Error::Internal("short nonce".into()))?;
        let aad = Self::aad(account, key);
        self.cipher
            .decrypt(&Nonce::from(nonce), Payload { msg: ciphertext, aad: &aad })
            .map_err(|_| Error::Internal("a stored idempotent response does not open (secret changed?)".into()))
    }
}

/// How long records are kept, from the config.
fn retention(seconds: u64) -> Duration {
    Duration::seconds(i64::try_from(seconds).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_binding_changes_the_fingerprint() {
        let account = AccountId::generate();
        let request = [1u8; 32];
        let a = Binding { account, principal: "key_a".into(), tenant: None };
        let b = Binding { principal: "key_b".into(), ..a.clone() };
        let t1 = Binding { tenant: Some(TenantId::generate()), ..a.clone() };
        let t2 = Binding { tenant: Some(TenantId::generate()), ..a.clone() };
        let k = [9u8; 32];
        assert_eq!(a.fingerprint(&k, &request), a.clone().fingerprint(&k, &request));
        assert_ne!(a.fingerprint(&k, &request), b.fingerprint(&k, &request), "another principal");
        assert_ne!(a.fingerprint(&k, &request), t1.fingerprint(&k, &request), "a tenant");
        assert_ne!(t1.fingerprint(&k, &request), t2.fingerprint(&k, &request), "another tenant");
        assert_ne!(a.fingerprint(&k, &request), a.fingerprint(&k, &[2u8; 32]), "another request");
        assert_ne!(a.fingerprint(&k, &request), a.fingerprint(&[8u8; 32], &request), "without the secret, no match");
    }

    #[test]
    fn header_rules() {
        assert!(valid_key("a"));
        assert!(valid_key(&"x".repeat(255)));
        assert!(!valid_key(""));
        assert!(!valid_key(&"x".repeat(256)));
        assert!(!valid_key("tab\there"));
        assert!(!valid_key("é"));
    }

    #[test]
    fn sealed_records_open_only_for_their_own_account_and_key() {
        let sealer = Sealer::new([7; 32]);
        let a = AccountId::generate();
        let record = b"{\"key\":\"sk_live_x\"}";
        let sealed = sealer.seal(a, "k1", record).unwrap_or_default();
        assert!(!sealed.windows(9).any(|w| w == b"sk_live_x"), "the plaintext is not visible");
        assert_eq!(sealer.open(a, "k1", &sealed).ok().as_deref(), Some(&record[..]), "bytes kept");
        assert!(sealer.open(a, "k2", &sealed).is_err(), "another key");
        assert!(sealer.open(AccountId::generate(), "k1", &sealed).is_err(), "another account");
        assert!(Sealer::new([8; 32]).open(a, "k1", &sealed).is_err(), "another secret");
    }

    #[test]
    fn the_request_fingerprint_covers_method_path_query_and_body() {
        let base = Request::new("k".into(), "POST", "/v1/a", "x=1", b"{}");
        for other in [
            Request::new("k".into(), "PUT", "/v1/a", "x=1", b"{}"),
            Request::new("k".into(), "POST", "/v1/b", "x=1", b"{}"),
            Request::new("k".into(), "POST", "/v1/a", "x=2", b"{}"),
            Request::new("k".into(), "POST", "/v1/a", "x=1", b"{ }"),
            Request::new("k".into(), "POST", "/v1/a=x", "1", b"{}"),
        ] {
            assert_ne!(base.fingerprint, other.fingerprint);
        }
    }
}
