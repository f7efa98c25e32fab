//! The request log: `GET /v1/api-keys/{id}/usage` (per-day counts for one key) and
//! `GET /v1/requests` (the account's requests, newest first). Records are written by
//! `keygate_http::context::request_context` through the engine's `requestlog`; the use cases
//! that read them are `keygate_engine::services::requests`.

use axum::Json;
use axum::extract::State;
use keygate_engine::services::requests::{KeyUsageParams, ListRequestsParams};
use keygate_engine::views::{KeyUsageList, KeyUsageView, RequestList, RequestView};
use keygate_http::error::{ApiError, Problem};

use crate::auth::{ApiKeysRead, AuditRead, Scoped};
use crate::extract::{Path, Query};
use crate::state::AppState;

const TAG: &str = "Requests";

/// Requests made with one key, counted per day (UTC) and outcome, newest day first.
#[utoipa::path(get, path = "/v1/api-keys/{id}/usage", tag = TAG,
    params(("id" = String, Path, description = "key_…"), KeyUsageParams),
    responses((status = 200, body = KeyUsageList), (status = 404, body = Problem, content_type = "application/problem+json")),
    security(("bearer" = [])))]
pub async fn api_key_usage(
    State(state): State<AppState>,
    caller: Scoped<ApiKeysRead>,
    Path(id): Path<String>,
    Query(q): Query<KeyUsageParams>,
) -> Result<Json<KeyUsageList>, ApiError> {
    // What this node has queued counts at once (SPEC §8: the current second included).
    state.requests.flush(&*state.keygate.store).await;
    let rows = state.keygate.key_usage(&caller.principal(), &id, q).await?;
    Ok(Json(KeyUsageList { data: rows.into_iter().map(KeyUsageView::from).collect() }))
}

/// The account's request log, newest first: one record per authenticated request.
#[utoipa::path(get, path = "/v1/requests", tag = TAG, params(ListRequestsParams),
    responses((status = 200, body = RequestList)), security(("bearer" = [])))]
pub async fn list_requests(
    State(state): State<AppState>,
    caller: Scoped<AuditRead>,
    Query(q): Query<ListRequestsParams>,
) -> Result<Json<RequestList>, ApiError> {
    state.requests.flush(&*state.keygate.store).await;
    let (rows, next_cursor) = state.keygate.list_requests(&caller.principal(), q).await?;
    Ok(Json(RequestList { data: rows.iter().map(RequestView::from).collect(), next_cursor }))
}
