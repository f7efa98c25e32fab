//! Dashboard passwords: argon2id (RFC 9106) with the crate's default parameters (19 MiB, two
//! passes, one lane: OWASP's minimum for argon2id), a random salt per password, and a pepper
//! derived from the hash secret, so a copy of the database alone cannot be cracked offline.
//! Stored as a PHC string (`$argon2id$v=19$m=19456,t=2,p=1$…`).
//!
//! Hashing costs tens of milliseconds of CPU and 19 MiB of memory: it runs off the async workers
//! (`spawn_blocking`), at most one per core at a time; more requests wait their turn, so a burst
//! of password changes or sign-ins cannot take the process's memory.

use std::sync::Arc;

use argon2::password_hash::phc::PasswordHash;
use argon2::password_hash::{PasswordHasher, PasswordVerifier};
use argon2::{Algorithm, Argon2, Params, Version};
use keygate_domain::KeyHasher;

use crate::error::Error;

/// The shortest password accepted, in characters (NIST SP 800-63B allows 8; a dashboard that
/// mints API keys asks for more).
pub const MIN_PASSWORD_CHARS: usize = 12;
/// The longest, in characters: argon2 takes any length, a person does not need more.
pub const MAX_PASSWORD_CHARS: usize = 256;

/// Hashes and checks passwords with the deployment's pepper.
#[derive(Clone)]
pub struct Passwords {
    pepper: Arc<[u8; 32]>,
    /// One permit per hash running at once.
    running: Arc<tokio::sync::Semaphore>,
}

impl std::fmt::Debug for Passwords {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Passwords(..)")
    }
}

impl Passwords {
    /// The pepper is derived from the hash secret (`hasher`), never stored.
    #[must_use]
    pub fn new(hasher: &KeyHasher) -> Self {
        let cores = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
        Self {
            pepper: Arc::new(hasher.derive("dashboard-password-pepper-v1")),
            running: Arc::new(tokio::sync::Semaphore::new(cores)),
        }
    }

    fn argon2(pepper: &[u8]) -> Result<Argon2<'_>, Error> {
        Argon2::new_with_secret(pepper, Algorithm::Argon2id, Version::V0x13, Params::default())
            .map_err(|e| Error::Internal(format!("argon2 parameters: {e}")))
    }

    /// Whether `password` is acceptable: [`MIN_PASSWORD_CHARS`] to [`MAX_PASSWORD_CHARS`]
    /// characters, as the OpenAPI document states (`minLength`, `maxLength`). The message, for a
    /// field error.
    ///
    /// # Errors
    /// The rule it breaks.
    pub fn check_rules(password: &str) -> Result<(), String> {
        if (MIN_PASSWORD_CHARS..=MAX_PASSWORD_CHARS).contains(&password.chars().count()) {
            Ok(())
        } else {
            Err(format!("must be {MIN_PASSWORD_CHARS}–{MAX_PASSWORD_CHARS} characters"))
        }
    }

    /// The PHC string of `password`.
    ///
    /// # Errors
    /// [`Error::Internal`] when hashing fails (it does not with valid parameters).
    pub async fn hash(&self, password: String) -> Result<String, Error> {
        // The permit moves into the hashing thread: released when the hash is done, even if this
        // request is dropped meanwhile.
        let turn = Arc::clone(&self.running)
            .acquire_owned()
            .await
            .map_err(|e| Error::Internal(format!("hashing queue: {e}")))?;
        let pepper = Arc::clone(&self.pepper);
        tokio::task::spawn_blocking(move || {
            let _turn = turn;
            Self::argon2(&pepper[..])?
                .hash_password(password.as_bytes())
                .map(|h| h.to_string())
                .map_err(|e| Error::Internal(format!("argon2: {e}")))
        })
        .await
        .map_err(|e| Error::Internal(format!("hashing task: {e}")))?
    }

    /// Whether `password` matches `phc`. With no stored hash, a hash of a fixed password is
    /// checked instead, so an unknown email or a user without a password costs the same time as
    /// a wrong password, and answers the same (false).
    pub async fn verify(&self, password: String, phc: Option<String>) -> bool {
        let Ok(turn) = Arc::clone(&self.running).acquire_owned().await else { return false };
        let pepper = Arc::clone(&self.pepper);
        tokio::task::spawn_blocking(move || {
            let _turn = turn;
            let Ok(argon2) = Self::argon2(&pepper[..]) else { return false };
            let (phc, real) = match phc {
                Some(phc) => (phc, true),
                None => (dummy_hash(&argon2), false),
            };
            let Ok(parsed) = PasswordHash::new(&phc) else { return false };
            argon2.verify_password(password.as_bytes(), &parsed).is_ok() && real
        })
        .await
        .unwrap_or(false)
    }
}

/// A hash to verify against when there is none, made once per process.
fn dummy_hash(argon2: &Argon2<'_>) -> String {
    static DUMMY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DUMMY
        .get_or_init(|| {
            argon2.hash_password(b"keygate-no-such-user-password").map(|h| h.to_string()).unwrap_or_default()
        })
        .clone()
}

#[cfg(test)]
mod tests {
    use keygate_domain::key::HashSecret;

    use super::*;

    fn passwords(secret: &str) -> Passwords {
        let secret = HashSecret::new(secret).unwrap_or_else(|e| panic!("{e}"));
        Passwords::new(&KeyHasher::new(&secret))
    }

    #[tokio::test]
    async fn a_hash_verifies_its_password_only_and_only_with_its_pepper() {
        let p = passwords("a-hash-secret-of-at-least-32-characters!");
        let phc = p.hash("correct horse battery".into()).await.unwrap_or_default();
        assert!(phc.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{phc}");
        assert!(!phc.contains("correct horse"));
        assert!(p.verify("correct horse battery".into(), Some(phc.clone())).await);
        assert!(!p.verify("correct horse batterY".into(), Some(phc.clone())).await);
        assert!(!p.verify("correct horse battery".into(), None).await, "no stored hash never matches");
        let other = passwords("another-hash-secret-of-32-characters-!!");
        assert!(!other.verify("correct horse battery".into(), Some(phc)).await, "another pepper");
    }

    #[test]
    fn rules() {
        assert!(Passwords::check_rules("twelve chars").is_ok());
        assert!(Passwords::check_rules("eleven char").is_err());
        assert!(Passwords::check_rules(&"é".repeat(256)).is_ok(), "characters, not bytes");
        assert!(Passwords::check_rules(&"x".repeat(257)).is_err());
    }
}
