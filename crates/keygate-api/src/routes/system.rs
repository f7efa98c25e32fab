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

/// How a node stands with what it depends on.
#[derive(Serialize, ToSchema)]
pub struct Readiness {
    /// `ready`, or `degraded` while the store or Redis cannot be reached: the node still serves
    /// (keys it holds in memory keep verifying; limits fall back to this node's own) and stays in
    /// rotation.
    #[schema(example = "ready")]
    pub status: &'static str,
    /// `ok`, or `unavailable`: requests that need the store (a key not in memory, any change) get
    /// 503 `service_unavailable` meanwhile.
    #[schema(example = "ok")]
    pub store: &'static str,
    /// Cluster mode only: `ok`, or `unavailable` while limits are decided by this node alone.
    #[schema(example = "ok")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redis: Option<&'static str>,
}

/// Readiness: answers 200 whenever the node can serve, `degraded` when it serves without the
/// store or Redis (docs/operations.md).
#[utoipa::path(get, path = "/readyz", tag = "System", responses((status = 200, body = Readiness)))]
pub async fn readyz(State(state): State<AppState>) -> Json<Readiness> {
    let deps = state.dependencies().await;
    let word = |ok: bool| if ok { "ok" } else { "unavailable" };
    let healthy = deps.store && deps.redis != Some(false);
    Json(Readiness {
        status: if healthy { "ready" } else { "degraded" },
        store: word(deps.store),
        redis: deps.redis.map(word),
    })
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
