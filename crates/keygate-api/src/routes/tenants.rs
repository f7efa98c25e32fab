//! `/v1/tenants`: HTTP glue over `services::tenants`.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use keygate_engine::services::tenants::{CreateTenantRequest, ListTenantsParams, UpdateTenantRequest};
use keygate_engine::views::{TenantList, TenantView};
use keygate_http::error::{ApiError, Problem};

use crate::auth::{Scoped, TenantsRead, TenantsWrite};
use crate::extract::{Body, Path, Query};
use crate::idempotent::Idempotent;
use crate::state::AppState;

const TAG: &str = "Tenants";

/// Create a tenant.
#[utoipa::path(post, path = "/v1/tenants", tag = TAG, params(("Idempotency-Key" = Option<String>, Header, description = "Makes a retry safe: the same key replays the first response (24 h).")), request_body = CreateTenantRequest,
    responses((status = 201, body = TenantView), (status = 409, body = Problem, content_type = "application/problem+json")),
    security(("bearer" = [])))]
pub async fn create_tenant(
    State(state): State<AppState>,
    caller: Scoped<TenantsWrite>,
    body: Idempotent,
) -> Result<Response, ApiError> {
    let req: CreateTenantRequest = body.json()?;
    body.execute(&state, &caller.idempotency_binding(), || async {
        let t = state.keygate.create_tenant(&caller.principal(), req).await?;
        Ok((StatusCode::CREATED, Json(TenantView::from(&t))).into_response())
    })
    .await
}

/// List tenants, newest first.
#[utoipa::path(get, path = "/v1/tenants", tag = TAG, params(ListTenantsParams),
    responses((status = 200, body = TenantList)), security(("bearer" = [])))]
pub async fn list_tenants(
    State(state): State<AppState>,
    caller: Scoped<TenantsRead>,
    Query(q): Query<ListTenantsParams>,
) -> Result<Json<TenantList>, ApiError> {
    let (rows, next_cursor) = state.keygate.list_tenants(&caller.principal(), q).await?;
    Ok(Json(TenantList { data: rows.iter().map(TenantView::from).collect(), next_cursor }))
}

/// Get one tenant.
#[utoipa::path(get, path = "/v1/tenants/{id}", tag = TAG, params(("id" = String, Path, description = "ten_…")),
    responses((status = 200, body = TenantView), (status = 404, body = Problem, content_type = "application/problem+json")),
    security(("bearer" = [])))]
pub async fn get_tenant(
    State(state): State<AppState>,
    caller: Scoped<TenantsRead>,
    Path(id): Path<String>,
) -> Result<Json<TenantView>, ApiError> {
    Ok(Json(TenantView::from(&state.keygate.get_tenant(&caller.principal(), &id).await?)))
}

/// Change a tenant's name, external id or metadata.
#[utoipa::path(patch, path = "/v1/tenants/{id}", tag = TAG, params(("id" = String, Path, description = "ten_…")),
    request_body = UpdateTenantRequest, responses((status = 200, body = TenantView)), security(("bearer" = [])))]
pub async fn update_tenant(
    State(state): State<AppState>,
    caller: Scoped<TenantsWrite>,
    Path(id): Path<String>,
    Body(req): Body<UpdateTenantRequest>,
) -> Result<Json<TenantView>, ApiError> {
    Ok(Json(TenantView::from(&state.keygate.update_tenant(&caller.principal(), &id, req).await?)))
}

/// Suspend a tenant: requests on its behalf are refused with `tenant_suspended`.
#[utoipa::path(post, path = "/v1/tenants/{id}/suspend", tag = TAG, params(("id" = String, Path, description = "ten_…")),
    responses((status = 200, body = TenantView)), security(("bearer" = [])))]
pub async fn suspend_tenant(
    State(state): State<AppState>,
    caller: Scoped<TenantsWrite>,
    Path(id): Path<String>,
) -> Result<Json<TenantView>, ApiError> {
    Ok(Json(TenantView::from(&state.keygate.set_tenant_suspended(&caller.principal(), &id, true).await?)))
}

/// Reactivate a suspended tenant.
#[utoipa::path(post, path = "/v1/tenants/{id}/unsuspend", tag = TAG, params(("id" = String, Path, description = "ten_…")),
    responses((status = 200, body = TenantView)), security(("bearer" = [])))]
pub async fn unsuspend_tenant(
    State(state): State<AppState>,
    caller: Scoped<TenantsWrite>,
    Path(id): Path<String>,
) -> Result<Json<TenantView>, ApiError> {
    Ok(Json(TenantView::from(&state.keygate.set_tenant_suspended(&caller.principal(), &id, false).await?)))
}
