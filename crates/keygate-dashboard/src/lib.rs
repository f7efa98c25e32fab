//! The partner dashboard (SPEC §12): server-rendered pages at `/dashboard`, in the seeds' own
//! words ("API Keys", "Create API Key", "Tenant Scope", "Restrict access to authorized IPs
//! only"…), over the same use cases as the API, so every action makes the same audit events with
//! the signed-in user as the actor and the browser's address.
//!
//! - **Pages** are askama templates compiled into the binary; the stylesheet, the one script and
//!   the icon are embedded too ([`assets`]). Every core flow is a plain form POST answered by a
//!   page or a 303 redirect, so it works with JavaScript off; the script only adds Copy, Select
//!   All without a round trip and a real modal. Every refusal is a page with the API's stable
//!   `code`.
//! - **Sessions** ([`session`]): sign-in with email and password or a one-time link, a
//!   server-side session in an `HttpOnly`, `SameSite=Strict` cookie (`__Host-` and `Secure` when
//!   a trusted proxy says the browser used https), sign-out, the user's sessions listed and
//!   revocable, its own password; forms that show something once are sent once.
//! - **CSRF**: a state-changing request the browser marks as coming from elsewhere is refused
//!   first ([`origin`]), then every form must carry the session's HMAC token ([`form`]); the
//!   sign-in forms, before any session, carry a double-submitted random token.
//! - **Headers** ([`security_headers`]): a Content Security Policy allowing only this origin's
//!   own styles, script and images (no inline code, no CDN), `frame-ancestors 'none'`,
//!   `nosniff`, `Referrer-Policy: same-origin` (no URL of the dashboard reaches another site);
//!   the API's middleware adds `no-store`.

pub mod assets;
mod chart;
pub mod form;
mod keys;
mod manage;
pub mod origin;
mod render;
pub mod session;

use std::sync::Arc;

use axum::Router;
use axum::extract::Request;
use axum::http::{HeaderName, HeaderValue, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use keygate_engine::Engine;

/// What every dashboard handler gets.
#[derive(Clone)]
pub struct Dashboard {
    pub engine: Arc<Engine>,
}

/// The policy of every dashboard response: this origin's own stylesheet, script and images
/// only; forms post only here; no framing; nothing else loads.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
     connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// The dashboard's routes, to be nested at `/dashboard` (its pages link to absolute
/// `/dashboard/…` paths).
pub fn router(engine: Arc<Engine>) -> Router {
    let state = Dashboard { engine };
    Router::new()
        .route("/", get(|| async { Redirect::to("/dashboard/api-keys") }))
        .route("/assets/{file}", get(assets::serve))
        .route("/sign-in", get(session::sign_in_page).post(session::sign_in))
        .route("/sign-in/link", get(session::link_page).post(session::link_sign_in))
        .route("/sign-out", post(session::sign_out))
        .route("/password", get(session::password_page).post(session::set_password))
        .route("/sessions", get(session::sessions_page))
        .route("/sessions/{id}/revoke", post(session::revoke_session))
        .route("/api-keys", get(keys::list).post(keys::create))
        .route("/api-keys/new", get(keys::new_form))
        .route("/api-keys/{id}", get(keys::show))
        .route("/api-keys/{id}/edit", get(keys::edit_form).post(keys::update))
        .route("/api-keys/{id}/roll", get(keys::roll_confirm).post(keys::roll))
        .route("/api-keys/{id}/revoke", get(keys::revoke_confirm).post(keys::revoke))
        .route("/api-keys/{id}/delete", get(keys::delete_confirm).post(keys::delete))
        .route("/tenants", get(manage::tenants).post(manage::create_tenant))
        .route("/tenants/{id}/{action}", post(manage::set_tenant_status))
        .route("/audit", get(manage::audit))
        .route("/settings", get(manage::settings).post(manage::update_settings))
        .route("/users", get(manage::users).post(manage::create_user))
        .route("/users/{id}/role", post(manage::change_role))
        .route("/users/{id}/delete", post(manage::delete_user))
        .route("/users/{id}/link", post(manage::sign_in_link))
        .route("/accounts", get(manage::accounts).post(manage::create_account))
        .route("/accounts/{id}/{action}", post(manage::set_account_status))
        .fallback(render::not_found)
        .method_not_allowed_fallback(render::method_not_allowed)
        .with_state(state)
        .layer(axum::middleware::from_fn(render::refusals_as_pages))
        .layer(axum::middleware::from_fn(origin::refuse_cross_site))
        .layer(axum::middleware::from_fn(security_headers))
}

/// Adds the dashboard's security headers to every response of it.
async fn security_headers(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CONTENT_SECURITY_POLICY));
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    // Not `no-referrer`: with it Chromium sends `Origin: null` on the dashboard's own form posts.
    // `same-origin` keeps every URL of the dashboard from other sites all the same.
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("same-origin"));
    headers.insert(HeaderName::from_static("cross-origin-opener-policy"), HeaderValue::from_static("same-origin"));
    response
}
