//! Health, readiness, the scope catalog and the audit log reader.

use axum::Json;
use axum::extract::State;
use keygate_domain::scope::CatalogEntry;
use keygate_engine::services::audit::ListAuditParams;
use keygate_engine::views::{AuditEventList, AuditEventView};
use keygate_http::ApiError;
use serde::Serialize;
use utoipa::ToSchema;

use crate::auth::{AuditRead, Authenticated, Scoped};
use crate::extract::Query;
use crate::state::AppState;

#[derive(Serialize, ToSchema)]
pub struct Health {
    #[schema(example = "ok")]
    pub status: &'static str,
}

/// Liveness: the process answers.
#[utoipa::path(get, path = "/healthz", tag = "System", responses((status = 200, body = Health)))]
pub async fn healthz() -> Json<Health> {
    Json(Health { status: "ok" })
}

/// Readiness: the store answers.
#[utoipa::path(get, path = "/readyz", tag = "System",
    responses((status = 200, body = Health), (status = 503, body = keygate_http::error::Problem, content_type = "application/problem+json")))]
pub async fn readyz(State(state): State<AppState>) -> Result<Json<Health>, ApiError> {
    state.keygate.store.ping().await?;
    Ok(Json(Health { status: "ready" }))
}

/// One resource of the scope catalog.
#[derive(Serialize, ToSchema)]
pub struct ScopeResource {
    #[schema(example = "calls")]
    pub resource: String,
    /// Declared actions; `write` implies `read`, and `resource:*` grants them all.
    #[schema(example = json!(["read", "write"]))]
    pub actions: Vec<String>,
    pub description: String,
    /// Display group, e.g. `Voice`.
    pub group: String,
}

#[derive(Serialize, ToSchema)]
pub struct ScopeCatalog {
    pub data: Vec<ScopeResource>,
}

/// The scopes a key of the caller's account can hold, for rendering scope pickers.
#[utoipa::path(get, path = "/v1/scopes", tag = "Scopes", responses((status = 200, body = ScopeCatalog)), security(("bearer" = [])))]
pub async fn scope_catalog(State(state): State<AppState>, caller: Authenticated) -> Json<ScopeCatalog> {
    let entry = |e: &CatalogEntry| ScopeResource {
        resource: e.resource.clone(),
        actions: e.actions.clone(),
        description: e.description.clone(),
        group: e.group.clone(),
    };
    Json(ScopeCatalog { data: state.keygate.catalog.visible(caller.account().operator).map(entry).collect() })
}

/// The account's audit log, newest first.
#[utoipa::path(get, path = "/v1/audit-events", tag = "Audit", params(ListAuditParams),
    responses((status = 200, body = AuditEventList)), security(("bearer" = [])))]
pub async fn list_audit_events(
    State(state): State<AppState>,
    caller: Scoped<AuditRead>,
    Query(q): Query<ListAuditParams>,
) -> Result<Json<AuditEventList>, ApiError> {
    let (rows, next_cursor) = state.keygate.list_audit_events(&caller.principal(), q).await?;
    Ok(Json(AuditEventList { data: rows.iter().map(AuditEventView::from).collect(), next_cursor }))
}
