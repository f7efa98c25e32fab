//! keygate's HTTP server: the router, handlers, authentication and the one [`ApiError`].
//!
//! Layers, from the outside in: `routes` (the table of contents and thin handlers) → `auth`
//! (credentials to a [`auth::Caller`]) → `services` (use cases, shared with the CLI) →
//! `keygate_domain` (pure rules) and `keygate_store` (persistence behind traits).
//! [`serve`] runs the app on a listener until a shutdown future completes, so a test starts a
//! real server on `127.0.0.1:0` in three lines; `keygate serve` runs it on one thread per core
//! with [`serve_per_core`].

pub mod auth;
pub mod cache;
pub mod config;
pub mod error;
pub mod extract;
pub mod follower;
pub mod gateway;
pub mod idempotency;
pub mod metrics;
pub mod middleware;
pub mod ratelimit;
pub mod requestlog;
pub mod routes;
pub mod services;
pub mod state;
pub mod throttle;
pub mod usage;
pub mod views;
pub mod workers;

use std::future::Future;
use std::net::SocketAddr;

pub use config::{Config, Settings};
pub use error::ApiError;
pub use routes::{app, openapi, openapi_for};
pub use state::{AppState, Keygate};
pub use workers::serve_per_core;

/// Serves `app` on `listener` until `shutdown` completes, then finishes in-flight requests.
///
/// Connections get `TCP_NODELAY`: a response is small and complete when written, so waiting
/// for Nagle's algorithm only adds latency (a delayed ACK away on every response).
///
/// # Errors
/// The listener fails.
pub async fn serve(
    listener: impl axum::serve::Listener<Io = tokio::net::TcpStream, Addr = SocketAddr>,
    app: axum::Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    use axum::serve::ListenerExt;
    let listener = listener.tap_io(|tcp| {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "could not set TCP_NODELAY");
        }
    });
    axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>())
        .with_graceful_shutdown(shutdown)
        .await
}
