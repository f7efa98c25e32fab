//! `/v1/api-keys`: HTTP glue over `services::keys`.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use keygate_domain::time;
use keygate_engine::services::keys::{
    CreateKeyRequest, ListKeysParams, LookupKeyRequest, RevokeKeyRequest, RollKeyRequest, UpdateKeyRequest,
};
use keygate_engine::views::{CreatedKey, KeyList, KeyView};
use keygate_http::error::{ApiError, Problem};

use crate::auth::{ApiKeysRead, ApiKeysWrite, Scoped};
use crate::extract::{Body, OptionalBody, Path, Query};
use crate::idempotent::Idempotent;
use crate::state::AppState;

const TAG: &str = "API keys";

fn created(key: &keygate_domain::ApiKey, plaintext: &keygate_domain::PlaintextKey) -> CreatedKey {
    CreatedKey { api_key: KeyView::new(key, time::now()), key: plaintext.expose().to_owned() }
}

/// Create an API key. The response is the only time the full key is shown.
#[utoipa::path(post, path = "/v1/api-keys", tag = TAG, params(("Idempotency-Key" = Option<String>, Header, description = "Makes a retry safe: the same key replays the first response (24 h).")), request_body = CreateKeyRequest,
    responses((status = 201, body = CreatedKey),
        (status = 422, body = Problem, content_type = "application/problem+json"),
        (status = 403, body = Problem, content_type = "application/problem+json")),
    security(("bearer" = [])))]
pub async fn create_api_key(
    State(state): State<AppState>,
    caller: Scoped<ApiKeysWrite>,
    body: Idempotent,
) -> Result<Response, ApiError> {
    let req: CreateKeyRequest = body.json()?;
    body.execute(&state, &caller.idempotency_binding(), || async {
        let (key, plaintext) = state.keygate.create_key(&caller.principal(), req).await?;
        Ok((StatusCode::CREATED, Json(created(&key, &plaintext))).into_response())
    })
    .await
}

/// List API keys (masked), newest first.
#[utoipa::path(get, path = "/v1/api-keys", tag = TAG, params(ListKeysParams),
    responses((status = 200, body = KeyList)), security(("bearer" = [])))]
pub async fn list_api_keys(
    State(state): State<AppState>,
    caller: Scoped<ApiKeysRead>,
    Query(q): Query<ListKeysParams>,
) -> Result<Json<KeyList>, ApiError> {
    let (keys, next_cursor) = state.keygate.list_keys(&caller.principal(), q).await?;
    let now = time::now();
    Ok(Json(KeyList { data: keys.iter().map(|k| KeyView::new(k, now)).collect(), next_cursor }))
}

/// Get one API key.
#[utoipa::path(get, path = "/v1/api-keys/{id}", tag = TAG, params(("id" = String, Path, description = "key_…")),
    responses((status = 200, body = KeyView), (status = 404, body = Problem, content_type = "application/problem+json")),
    security(("bearer" = [])))]
pub async fn get_api_key(
    State(state): State<AppState>,
    caller: Scoped<ApiKeysRead>,
    Path(id): Path<String>,
) -> Result<Json<KeyView>, ApiError> {
    let key = state.keygate.get_key(&caller.principal(), &id).await?;
    Ok(Json(KeyView::new(&key, time::now())))
}

/// Change a key's settings (never its value).
#[utoipa::path(patch, path = "/v1/api-keys/{id}", tag = TAG, params(("id" = String, Path, description = "key_…")),
    request_body = UpdateKeyRequest, responses((status = 200, body = KeyView)), security(("bearer" = [])))]
pub async fn update_api_key(
    State(state): State<AppState>,
    caller: Scoped<ApiKeysWrite>,
    Path(id): Path<String>,
    Body(req): Body<UpdateKeyRequest>,
) -> Result<Json<KeyView>, ApiError> {
    let key = state.keygate.update_key(&caller.principal(), &id, req).await?;
    Ok(Json(KeyView::new(&key, time::now())))
}

/// Delete a key for good (the audit log keeps its record).
#[utoipa::path(delete, path = "/v1/api-keys/{id}", tag = TAG, params(("id" = String, Path, description = "key_…")),
    responses((status = 204)), security(("bearer" = [])))]
pub async fn delete_api_key(
    State(state): State<AppState>,
    caller: Scoped<ApiKeysWrite>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    state.keygate.delete_key(&caller.principal(), &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Revoke a key. Revoking a revoked key changes nothing.
#[utoipa::path(post, path = "/v1/api-keys/{id}/revoke", tag = TAG, params(("id" = String, Path, description = "key_…")),
    request_body(content = Option<RevokeKeyRequest>), responses((status = 200, body = KeyView)), security(("bearer" = [])))]
pub async fn revoke_api_key(
    State(state): State<AppState>,
    caller: Scoped<ApiKeysWrite>,
    Path(id): Path<String>,
    OptionalBody(req): OptionalBody<RevokeKeyRequest>,
) -> Result<Json<KeyView>, ApiError> {
    let key = state.keygate.revoke_key(&caller.principal(), &id, req.reason).await?;
    Ok(Json(KeyView::new(&key, time::now())))
}

/// Roll a key: a new key with the same settings; the old one expires after the grace period.
#[utoipa::path(post, path = "/v1/api-keys/{id}/roll", tag = TAG, params(("id" = String, Path, description = "key_…"), ("Idempotency-Key" = Option<String>, Header, description = "Makes a retry safe: the same key replays the first response (24 h).")),
    request_body(content = Option<RollKeyRequest>), responses((status = 201, body = CreatedKey)), security(("bearer" = [])))]
pub async fn roll_api_key(
    State(state): State<AppState>,
    caller: Scoped<ApiKeysWrite>,
    Path(id): Path<String>,
    body: Idempotent,
) -> Result<Response, ApiError> {
    let req: RollKeyRequest = body.json_or_default()?;
    body.execute(&state, &caller.idempotency_binding(), || async {
        let (key, plaintext) = state.keygate.roll_key(&caller.principal(), &id, req.grace_period_seconds).await?;
        Ok((StatusCode::CREATED, Json(created(&key, &plaintext))).into_response())
    })
    .await
}

/// Find a key of this account by its value. The key travels in the body, never the URL.
#[utoipa::path(post, path = "/v1/api-keys/lookup", tag = TAG, request_body = LookupKeyRequest,
    responses((status = 200, body = KeyView), (status = 404, body = Problem, content_type = "application/problem+json")),
    security(("bearer" = [])))]
pub async fn lookup_api_key(
    State(state): State<AppState>,
    caller: Scoped<ApiKeysRead>,
    Body(req): Body<LookupKeyRequest>,
) -> Result<Json<KeyView>, ApiError> {
    let key = state.keygate.lookup_key(&caller.principal(), &req.key).await?;
    Ok(Json(KeyView::new(&key, time::now())))
}
