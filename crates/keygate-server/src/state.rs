//! What handlers and use cases share: the store, the key format and hasher, the catalog, limits.
//!
//! [`Keygate`] is everything the use cases (`services`) need; the CLI builds one too, so the
//! command line and the HTTP API run the same code. [`AppState`] adds what only HTTP needs.

use std::sync::Arc;

use keygate_domain::key::{HashSecret, KeyFormat, KeyHasher};
use keygate_domain::scope::Catalog;
use keygate_store::Store;

use crate::auth::Authenticator;
use crate::config::{Limits, Settings};

/// The use cases' dependencies.
pub struct Keygate {
    pub store: Arc<dyn Store>,
    pub key_format: KeyFormat,
    pub hasher: KeyHasher,
    pub catalog: Catalog,
    pub limits: Limits,
}

impl Keygate {
    #[must_use]
    pub fn new(store: Arc<dyn Store>, settings: &Settings, secret: &HashSecret) -> Self {
        Self {
            store,
            key_format: settings.key_format.clone(),
            hasher: KeyHasher::new(secret),
            catalog: settings.catalog.clone(),
            limits: settings.limits,
        }
    }
}

/// Shared by every handler.
#[derive(Clone)]
pub struct AppState {
    pub keygate: Arc<Keygate>,
    pub auth: Arc<Authenticator>,
    pub max_body_bytes: usize,
}

impl AppState {
    #[must_use]
    pub fn new(keygate: Keygate, settings: &Settings) -> Self {
        let keygate = Arc::new(keygate);
        let auth = Arc::new(Authenticator::new(Arc::clone(&keygate), settings));
        Self { keygate, auth, max_body_bytes: settings.max_body_bytes }
    }
}
