//! [`AppState`]: what every handler gets — the engine, shared with the gateway, and the API's own
//! request-body limit.

use std::ops::Deref;
use std::sync::Arc;

use keygate_engine::Engine;

/// Cloned for each handler and middleware: one reference count and a number.
#[derive(Clone)]
pub struct AppState {
    pub engine: Arc<Engine>,
    /// The largest request body the API accepts, in bytes.
    pub max_body_bytes: usize,
}

impl AppState {
    #[must_use]
    pub fn new(engine: Arc<Engine>, max_body_bytes: usize) -> Self {
        Self { engine, max_body_bytes }
    }
}

/// Handlers reach the engine's parts directly: `state.keygate`, `state.auth`.
impl Deref for AppState {
    type Target = Engine;

    fn deref(&self) -> &Engine {
        &self.engine
    }
}
