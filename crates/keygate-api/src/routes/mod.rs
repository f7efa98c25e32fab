//! The table of contents: every route keygate serves, with its OpenAPI description.
//!
//! Handlers live in one module per resource and are thin: extract, call a use case in
//! `services`, render a view. Authentication and the scope each route needs are visible in the
//! handler's signature (`Scoped<ApiKeysWrite>`).

pub mod accounts;
pub mod api_keys;
mod outcomes;
pub mod requests;
pub mod system;
pub mod tenants;
pub mod users;
pub mod verify;

use std::convert::Infallible;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::extract::Request;
use axum::response::IntoResponse;
use axum::response::Redirect;
use axum::routing::get;
use keygate_domain::scope::Catalog;
use keygate_http::context as middleware;
use tower_http::catch_panic::CatchPanicLayer;
use tower_service::Service;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use utoipa_swagger_ui::SwaggerUi;

use crate::metrics;
use crate::state::AppState;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "keygate",
        description = "API keys for a multi-tenant API platform: issue, scope, verify, revoke. \
            Every error is an RFC 9457 problem document with a stable `code`.",
        license(name = "Apache-2.0")
    ),
    components(schemas(keygate_http::error::Problem, keygate_engine::FieldError)),
    modifiers(&BearerAuth),
    tags(
        (name = "API keys", description = "Create, scope, roll and revoke keys. The full key is shown once."),
        (name = "Tenants", description = "Sub-accounts of your account."),
        (name = "Account", description = "Your own account."),
        (name = "Accounts (operator)", description = "Partner accounts; operator keys only."),
        (name = "Users", description = "Dashboard users of your account and their roles."),
        (name = "Audit", description = "Who did what."),
        (name = "Requests", description = "The request log: what each key did, and per-day usage."),
        (name = "Scopes", description = "The scope catalog."),
        (name = "Verify", description = "Check keys from your own services (operator keys with keys:verify)."),
        (name = "System", description = "Health and readiness."),
    )
)]
struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("An API key: `Authorization: Bearer sk_live_…` (or `X-API-Key: sk_live_…`)."))
                    .build(),
            ),
        );
    }
}

/// Every documented route, paired with its OpenAPI description.
fn api() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(api_keys::list_api_keys, api_keys::create_api_key))
        .routes(routes!(api_keys::lookup_api_key))
        .routes(routes!(api_keys::get_api_key, api_keys::update_api_key, api_keys::delete_api_key))
        .routes(routes!(api_keys::revoke_api_key))
        .routes(routes!(api_keys::roll_api_key))
        .routes(routes!(requests::api_key_usage))
        .routes(routes!(requests::tenant_usage))
        .routes(routes!(requests::account_usage))
        .routes(routes!(requests::list_requests))
        .routes(routes!(tenants::list_tenants, tenants::create_tenant))
        .routes(routes!(tenants::get_tenant, tenants::update_tenant))
        .routes(routes!(tenants::suspend_tenant))
        .routes(routes!(tenants::unsuspend_tenant))
        .routes(routes!(accounts::get_own_account, accounts::update_own_account))
        .routes(routes!(accounts::list_accounts, accounts::create_account))
        .routes(routes!(accounts::get_account, accounts::update_account))
        .routes(routes!(accounts::suspend_account))
        .routes(routes!(accounts::unsuspend_account))
        .routes(routes!(users::list_users, users::create_user))
        .routes(routes!(users::get_user, users::update_user, users::delete_user))
        .routes(routes!(system::list_audit_events))
        .routes(routes!(system::scope_catalog))
        .routes(routes!(verify::verify))
        .routes(routes!(system::healthz))
        .routes(routes!(system::readyz))
        .routes(routes!(metrics::render))
}

/// The paths of keygate's own endpoints, as templates (`/v1/api-keys/{id}`): the gateway refuses
/// routes that would collide with them.
#[must_use]
pub fn own_paths() -> Vec<String> {
    openapi().paths.paths.into_keys().collect()
}

/// The OpenAPI document of a server with the default settings.
#[must_use]
pub fn openapi() -> utoipa::openapi::OpenApi {
    openapi_for(&Catalog::default(), keygate_engine::Limits::default().max_key_rate_limit_per_minute)
}

/// The OpenAPI document of a server with this scope `catalog` and highest key rate limit (what
/// its `/openapi.json` serves and `keygate openapi` prints): the document states exactly what
/// that server accepts.
#[must_use]
pub fn openapi_for(catalog: &Catalog, max_key_rate_limit: u32) -> utoipa::openapi::OpenApi {
    let (_, mut doc) = api().split_for_parts();
    finish(&mut doc, catalog, max_key_rate_limit);
    doc
}

/// What the router's document still needs: the version, every status each operation can answer,
/// and what the settings decide (`outcomes`).
fn finish(doc: &mut utoipa::openapi::OpenApi, catalog: &Catalog, max_key_rate_limit: u32) {
    doc.info.version = env!("CARGO_PKG_VERSION").to_owned();
    outcomes::document(doc, catalog, max_key_rate_limit);
}

/// keygate's own API: every route above, Swagger UI, and 404 `route_not_found` for any other
/// path, inside the middleware of every request.
pub fn app(state: AppState) -> Router {
    build(state, |router| router.fallback(middleware::route_not_found))
}

/// As [`app`], with `mounts` (a path prefix and the router serving under it: the dashboard)
/// beside the API's routes, and `fallback` (the gateway, or `None`: 404 `route_not_found`)
/// serving every other path — all in one route table, inside the same middleware, so a
/// forwarded request is matched once.
pub fn app_with<F>(state: AppState, mounts: Vec<(&'static str, Router)>, fallback: Option<F>) -> Router
where
    F: Service<Request, Error = Infallible> + Clone + Send + Sync + 'static,
    F::Response: IntoResponse,
    F::Future: Send + 'static,
{
    build(state, |mut router| {
        for (path, mounted) in mounts {
            router = router.nest_service(path, mounted);
        }
        match fallback {
            Some(fallback) => router.fallback_service(fallback),
            None => router.fallback(middleware::route_not_found),
        }
    })
}

fn build(state: AppState, fallback: impl FnOnce(Router<AppState>) -> Router<AppState>) -> Router {
    metrics::install();
    let max_body = state.max_body_bytes;
    let context = middleware::RequestContext::new(&state.engine);
    let (router, mut doc) = api().split_for_parts();
    finish(&mut doc, &state.keygate.catalog, state.keygate.limits.max_key_rate_limit_per_minute);
    let router = router
        // The interactive reference: Swagger UI's assets are compiled into the binary.
        .merge(SwaggerUi::new("/docs").url("/openapi.json", doc))
        .route("/", get(|| async { Redirect::temporary("/docs/") }))
        .method_not_allowed_fallback(middleware::method_not_allowed);
    fallback(router)
        .with_state(state)
        .layer(DefaultBodyLimit::max(max_body))
        .layer(CatchPanicLayer::custom(middleware::panic_response))
        // keygate's own answers are one account's data, and some carry a plaintext key: no cache
        // may keep any of them, errors and the gateway's refusals included (SPEC §2). Responses
        // from the gateway's upstream keep its own headers.
        .layer(axum::middleware::map_response(|response| async { middleware::no_store(response) }))
        .layer(axum::middleware::from_fn_with_state(context, middleware::request_context))
}
