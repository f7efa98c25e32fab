//! Usage and the request log: `GET /v1/api-keys/{id}/usage`, `GET /v1/tenants/{id}/usage` and
//! `GET /v1/usage` (per-day counts for one key, one tenant, the account) and `GET /v1/requests`
//! (the account's requests, newest first). Counts and records are made by
//! `keygate_http::context::request_context` through the engine's `requestlog`; the use cases
//! that read them are `keygate_engine::services::requests`.

use axum::Json;
use axum::extract::State;
use keygate_engine::services::requests::{ListRequestsParams, UsageParams};
use keygate_engine::views::{RequestList, RequestView, UsageList, UsageView};
use keygate_http::error::{ApiError, Problem};

use crate::auth::{AccountRead, ApiKeysRead, AuditRead, Scoped, TenantsRead};
use crate::extract::{Path, Query};
use crate::state::AppState;

const TAG: &str = "Requests";

/// Requests made with one key, counted per day (UTC) and outcome, newest day first.
#[utoipa::path(get, path = "/v1/api-keys/{id}/usage", tag = TAG,
    params(("id" = String, Path, description = "key_…"), UsageParams),
    responses((status = 200, body = UsageList), (status = 404, body = Problem, content_type = "application/problem+json")),
    security(("bearer" = [])))]
pub async fn api_key_usage(
    State(state): State<AppState>,
    caller: Scoped<ApiKeysRead>,
    Path(id): Path<String>,
    Query(q): Query<UsageParams>,
) -> Result<Json<UsageList>, ApiError> {
    let rows = state.recorded(caller.account().id).await.key_usage(&caller.principal(), &id, q).await?;
    Ok(usage_list(rows))
}

/// Requests made for one tenant, by any key, counted per day (UTC) and outcome, newest day first.
#[utoipa::path(get, path = "/v1/tenants/{id}/usage", tag = TAG,
    params(("id" = String, Path, description = "ten_…"), UsageParams),
    responses((status = 200, body = UsageList), (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json")),
    security(("bearer" = [])))]
pub async fn tenant_usage(
    State(state): State<AppState>,
    caller: Scoped<TenantsRead>,
    Path(id): Path<String>,
    Query(q): Query<UsageParams>,
) -> Result<Json<UsageList>, ApiError> {
    let rows = state.recorded(caller.account().id).await.tenant_usage(&caller.principal(), &id, q).await?;
    Ok(usage_list(rows))
}

/// Every request of the account, counted per day (UTC) and outcome, newest day first. A
/// tenant-scoped key is refused (403 `tenant_not_allowed`): it reads its tenants' usage.
#[utoipa::path(get, path = "/v1/usage", tag = TAG, params(UsageParams),
    responses((status = 200, body = UsageList), (status = 403, body = Problem, content_type = "application/problem+json")),
    security(("bearer" = [])))]
pub async fn account_usage(
    State(state): State<AppState>,
    caller: Scoped<AccountRead>,
    Query(q): Query<UsageParams>,
) -> Result<Json<UsageList>, ApiError> {
    let rows = state.recorded(caller.account().id).await.account_usage(&caller.principal(), q).await?;
    Ok(usage_list(rows))
}

fn usage_list(rows: Vec<keygate_store::UsageRow>) -> Json<UsageList> {
    Json(UsageList { data: rows.into_iter().map(UsageView::from).collect() })
}

/// The account's request log, newest first: one record per authenticated request.
#[utoipa::path(get, path = "/v1/requests", tag = TAG, params(ListRequestsParams),
    responses((status = 200, body = RequestList)), security(("bearer" = [])))]
pub async fn list_requests(
    State(state): State<AppState>,
    caller: Scoped<AuditRead>,
    Query(q): Query<ListRequestsParams>,
) -> Result<Json<RequestList>, ApiError> {
    let (rows, next_cursor) = state.recorded(caller.account().id).await.list_requests(&caller.principal(), q).await?;
    Ok(Json(RequestList { data: rows.iter().map(RequestView::from).collect(), next_cursor }))
}
