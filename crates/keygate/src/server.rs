//! Wiring and serving: the API with the gateway beside it, on one engine, served on a listener
//! until a shutdown future completes.
//!
//! Every request goes to the API's router (keygate's own endpoints, the dashboard, and the
//! gateway as its fallback, for the 404 and 405 of paths no route has), except the two calls of
//! the data plane, served directly in the same request context: `POST /v1/verify`
//! ([`verify::serve`]), and a request the gateway
//! [claims](keygate_gateway::Gateway::claims) — one of its routes, method and path, on a path
//! that is none of keygate's own. Those are the calls made for every request a platform serves,
//! and the router's layers and extractors (its route table, boxed middleware futures, the
//! `ConnectInfo` extension) cost the forwarding path about a tenth of its CPU and verify about a
//! fifth (docs/benchmarks.md).

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::Method;
use axum::response::Response;
use futures_util::FutureExt as _;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::GracefulShutdown;
use keygate_api::AppState;
use keygate_api::routes::verify;
use keygate_engine::Engine;
use keygate_gateway::GatewayService;
use keygate_http::context::RequestContext;
use tower_service::Service as _;

use crate::config::Settings;

/// The whole HTTP application on one engine. A clone is three reference counts (the router, the
/// gateway, the direct endpoints' state).
#[derive(Clone)]
pub struct App {
    /// keygate's own API, the dashboard at `/dashboard`, and the gateway as the fallback.
    router: axum::Router,
    /// When `[gateway]` is configured: the gateway.
    gateway: Option<GatewayService>,
    /// What the endpoints served beside the router need: the API's state, the request context.
    direct: Arc<(AppState, RequestContext)>,
}

/// The whole HTTP application on `engine`: keygate's own API; the dashboard at `/dashboard`;
/// when `[gateway]` is configured, the gateway for every other `/v1/*` path. The dashboard and
/// the gateway's refusals go through the API's middleware (request ids, log lines, `no-store`,
/// the panic guard); a forwarded request gets the same from the gateway itself.
pub fn app(engine: Arc<Engine>, settings: &Settings) -> App {
    let state = AppState::new(Arc::clone(&engine), settings.max_body_bytes);
    let dashboard = keygate_dashboard::router(Arc::clone(&engine));
    let gateway =
        settings.gateway.as_ref().map(|gateway| GatewayService::new(Arc::clone(&engine), Arc::clone(gateway)));
    let context = RequestContext::new(&engine);
    App {
        router: keygate_api::app_with(state.clone(), vec![("/dashboard", dashboard)], gateway.clone()),
        gateway,
        direct: Arc::new((state, context)),
    }
}

impl App {
    /// Answers one request from `peer`.
    pub async fn call(self, req: hyper::Request<Incoming>, peer: SocketAddr) -> Response {
        let (state, context) = &*self.direct;
        if req.method() == Method::POST && req.uri().path() == verify::PATH {
            let req = req.map(Body::new);
            let head = context.head_of_route(&req, peer.ip(), verify::PATH);
            return context.serve(head, verify::serve(state, req, peer.ip())).await;
        }
        if let Some(gateway) = &self.gateway
            && gateway.claims(req.method(), req.uri().path())
        {
            return gateway.serve(context, req.map(Body::new), peer.ip()).await;
        }
        let mut req = req.map(Body::new);
        req.extensions_mut().insert(ConnectInfo(peer));
        match self.router.clone().call(req).await {
            Ok(response) => response,
            Err(never) => match never {},
        }
    }
}

/// Serves `app` on `listener` (HTTP/1.1, keep-alive) until `shutdown` completes, then stops
/// accepting and lets in-flight requests finish: an idle keep-alive connection is closed, a
/// busy one after its response.
///
/// Connections get `TCP_NODELAY`: a response is small and complete when written, so waiting
/// for Nagle's algorithm only adds latency (a delayed ACK away on every response).
///
/// # Errors
/// None yet: a failed `accept` is retried by the listener (axum's `Listener` contract), a failed
/// connection ends only itself. The `Result` leaves room for a listener that can fail.
pub async fn serve(
    mut listener: impl axum::serve::Listener<Io = tokio::net::TcpStream, Addr = SocketAddr>,
    app: App,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let graceful = GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => accepted,
            () = &mut shutdown => break,
        };
        if let Err(e) = stream.set_nodelay(true) {
            tracing::debug!(error = %e, "could not set TCP_NODELAY");
        }
        let app = app.clone();
        // A combinator, not an `async` block: a block would keep the request twice in its state.
        let service = hyper::service::service_fn(move |req| app.clone().call(req, peer).map(Ok::<_, Infallible>));
        let connection = graceful.watch(http1::Builder::new().serve_connection(TokioIo::new(stream), service));
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::trace!(error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    graceful.shutdown().await;
    Ok(())
}
