//! [`Keygate`]: what every use case needs (the store, the key format and hasher, the catalog,
//! the limits). The CLI builds one over the database and runs the same use cases the API does.

use std::sync::Arc;

use keygate_domain::key::{HashSecret, KeyFormat, KeyHasher};
use keygate_domain::scope::Catalog;
use keygate_store::Store;

use crate::password::Passwords;
use crate::settings::{Limits, Settings};

/// The use cases' dependencies.
pub struct Keygate {
    pub store: Arc<dyn Store>,
    pub key_format: KeyFormat,
    pub hasher: KeyHasher,
    pub catalog: Catalog,
    pub limits: Limits,
    /// Dashboard passwords, peppered with a key derived from the hash secret.
    pub passwords: Passwords,
}

impl Keygate {
    #[must_use]
    pub fn new(store: Arc<dyn Store>, settings: &Settings, secret: &HashSecret) -> Self {
        let hasher = KeyHasher::new(secret);
        Self {
            store,
            key_format: settings.key_format.clone(),
            passwords: Passwords::new(&hasher),
            hasher,
            catalog: settings.catalog.clone(),
            limits: settings.limits,
        }
    }
}

/// The database was made with another hash secret (SPEC §2): every key would fail
/// `invalid_api_key`, so keygate refuses to start instead.
#[derive(Debug, thiserror::Error)]
pub enum SecretCheckError {
    #[error(
        "the hash secret does not match the one this database was set up with (its fingerprint is \
         {stored}, this secret's is {ours}); every existing key would fail as invalid_api_key. Start \
         keygate with the original secret (KEYGATE_HASH_SECRET, hash_secret in keygate.toml, or the \
         keygate.secret file beside a SQLite database)"
    )]
    Mismatch { stored: String, ours: String },
    #[error(transparent)]
    Store(#[from] keygate_store::StoreError),
}

impl Keygate {
    /// The fingerprint of the configured hash secret: an HMAC of a fixed label under it, in hex.
    /// It identifies the secret without revealing it.
    #[must_use]
    pub fn hash_secret_fingerprint(&self) -> String {
        let mac = self.hasher.derive("hash-secret-fingerprint-v1");
        mac.iter().take(16).map(|b| format!("{b:02x}")).collect()
    }

    /// Records the secret's fingerprint in a database that has none, or checks it against the
    /// one recorded (SPEC §2). Call once at start, before serving or changing anything.
    ///
    /// # Errors
    /// [`SecretCheckError::Mismatch`] when the database was made with another secret.
    pub async fn check_hash_secret(&self) -> Result<(), SecretCheckError> {
        let ours = self.hash_secret_fingerprint();
        match self.store.claim_hash_secret_fingerprint(&ours).await? {
            Some(stored) if stored != ours => Err(SecretCheckError::Mismatch { stored, ours }),
            _ => Ok(()),
        }
    }
}
