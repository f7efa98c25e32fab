//! `/v1/users`: HTTP glue over `services::users` (SPEC §8).

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use keygate_engine::services::users::{CreateUserRequest, ListUsersParams, UpdateUserRequest};
use keygate_engine::views::{UserList, UserView};
use keygate_http::error::{ApiError, Problem};

use crate::auth::{Scoped, UsersRead, UsersWrite};
use crate::extract::{Body, Path, Query};
use crate::idempotent::Idempotent;
use crate::state::AppState;

const TAG: &str = "Users";

/// Create a dashboard user. Only a key without tenant, IP or expiry bounds may, and only for a
/// role whose scopes it holds.
#[utoipa::path(post, path = "/v1/users", tag = TAG, params(("Idempotency-Key" = Option<String>, Header, description = "Makes a retry safe: the same key replays the first response (24 h).")), request_body = CreateUserRequest,
    responses((status = 201, body = UserView), (status = 409, body = Problem, content_type = "application/problem+json")),
    security(("bearer" = [])))]
pub async fn create_user(
    State(state): State<AppState>,
    caller: Scoped<UsersWrite>,
    body: Idempotent,
) -> Result<Response, ApiError> {
    let req: CreateUserRequest = body.json()?;
    body.execute(&state, &caller.idempotency_binding(), || async {
        let user = state.keygate.create_user(&caller.principal(), req).await?;
        Ok((StatusCode::CREATED, Json(UserView::from(&user))).into_response())
    })
    .await
}

/// List the account's users, newest first.
#[utoipa::path(get, path = "/v1/users", tag = TAG, params(ListUsersParams),
    responses((status = 200, body = UserList)), security(("bearer" = [])))]
pub async fn list_users(
    State(state): State<AppState>,
    caller: Scoped<UsersRead>,
    Query(q): Query<ListUsersParams>,
) -> Result<Json<UserList>, ApiError> {
    let (rows, next_cursor) = state.keygate.list_users(&caller.principal(), q).await?;
    Ok(Json(UserList { data: rows.iter().map(UserView::from).collect(), next_cursor }))
}

/// Get one user.
#[utoipa::path(get, path = "/v1/users/{id}", tag = TAG, params(("id" = String, Path, description = "usr_…")),
    responses((status = 200, body = UserView), (status = 404, body = Problem, content_type = "application/problem+json")),
    security(("bearer" = [])))]
pub async fn get_user(
    State(state): State<AppState>,
    caller: Scoped<UsersRead>,
    Path(id): Path<String>,
) -> Result<Json<UserView>, ApiError> {
    Ok(Json(UserView::from(&state.keygate.get_user(&caller.principal(), &id).await?)))
}

/// Change a user's email, role or password (a new password ends the user's sessions).
#[utoipa::path(patch, path = "/v1/users/{id}", tag = TAG, params(("id" = String, Path, description = "usr_…")),
    request_body = UpdateUserRequest,
    responses((status = 200, body = UserView), (status = 404, body = Problem, content_type = "application/problem+json")),
    security(("bearer" = [])))]
pub async fn update_user(
    State(state): State<AppState>,
    caller: Scoped<UsersWrite>,
    Path(id): Path<String>,
    Body(req): Body<UpdateUserRequest>,
) -> Result<Json<UserView>, ApiError> {
    Ok(Json(UserView::from(&state.keygate.update_user(&caller.principal(), &id, req).await?)))
}

/// Delete a user and end its sessions. The account's last owner cannot be deleted (409).
#[utoipa::path(delete, path = "/v1/users/{id}", tag = TAG, params(("id" = String, Path, description = "usr_…")),
    responses((status = 204)), security(("bearer" = [])))]
pub async fn delete_user(
    State(state): State<AppState>,
    caller: Scoped<UsersWrite>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    state.keygate.delete_user(&caller.principal(), &id).await?;
    Ok(StatusCode::NO_CONTENT)
}
