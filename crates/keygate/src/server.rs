//! Wiring and serving: the API with the gateway mounted as its fallback, on one engine, served
//! on a listener until a shutdown future completes.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use keygate_api::AppState;
use keygate_engine::Engine;
use keygate_gateway::GatewayService;

use crate::config::Settings;

/// The whole HTTP application on `engine`: keygate's own API; the dashboard at `/dashboard`;
/// when `[gateway]` is configured, the gateway for every other `/v1/*` path. The dashboard and
/// the gateway sit behind the API's routes, inside its middleware (request ids, log lines,
/// `no-store`, the panic guard).
pub fn app(engine: Arc<Engine>, settings: &Settings) -> axum::Router {
    let state = AppState::new(Arc::clone(&engine), settings.max_body_bytes);
    let dashboard = keygate_dashboard::router(Arc::clone(&engine));
    let gateway = settings.gateway.as_ref().map(|gateway| GatewayService::new(engine, Arc::clone(gateway)));
    keygate_api::app_with(state, vec![("/dashboard", dashboard)], gateway)
}

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
