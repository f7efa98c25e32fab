//! `/v1/account` (the caller's own) and `/v1/accounts` (operator only): glue over
//! `services::accounts`.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use keygate_domain::time;
use keygate_engine::services::accounts::{
    CreateAccountRequest, ListAccountsParams, UpdateAccountRequest, UpdateOwnAccountRequest,
};
use keygate_engine::views::{AccountList, AccountView, CreatedAccount, CreatedKey, KeyView};
use keygate_http::error::{ApiError, Problem};

use crate::auth::{AccountRead, AccountWrite, AccountsRead, AccountsWrite, Scoped};
use crate::extract::{Body, Path, Query};
use crate::idempotent::Idempotent;
use crate::state::AppState;

const OWN: &str = "Account";
const OPERATOR: &str = "Accounts (operator)";

/// The caller's own account.
#[utoipa::path(get, path = "/v1/account", tag = OWN, responses((status = 200, body = AccountView)), security(("bearer" = [])))]
pub async fn get_own_account(caller: Scoped<AccountRead>) -> Json<AccountView> {
    Json(AccountView::from(caller.account()))
}

/// Change the caller's account name or IP allowlist. The rate limit is read-only here.
#[utoipa::path(patch, path = "/v1/account", tag = OWN, request_body = UpdateOwnAccountRequest,
    responses((status = 200, body = AccountView), (status = 422, body = Problem, content_type = "application/problem+json")),
    security(("bearer" = [])))]
pub async fn update_own_account(
    State(state): State<AppState>,
    caller: Scoped<AccountWrite>,
    Body(req): Body<UpdateOwnAccountRequest>,
) -> Result<Json<AccountView>, ApiError> {
    Ok(Json(AccountView::from(&state.keygate.update_own_account(&caller.principal(), req).await?)))
}

/// Create a partner account with its first key (unrestricted, shown once).
#[utoipa::path(post, path = "/v1/accounts", tag = OPERATOR, params(("Idempotency-Key" = Option<String>, Header, description = "Makes a retry safe: the same key replays the first response (24 h).")), request_body = CreateAccountRequest,
    responses((status = 201, body = CreatedAccount), (status = 403, body = Problem, content_type = "application/problem+json")),
    security(("bearer" = [])))]
pub async fn create_account(
    State(state): State<AppState>,
    caller: Scoped<AccountsWrite>,
    body: Idempotent,
) -> Result<Response, ApiError> {
    let req: CreateAccountRequest = body.json()?;
    body.execute(&state, &caller.idempotency_binding(), || async {
        let (account, key, plaintext) = state.keygate.create_account(&caller.principal(), req).await?;
        let initial_key = CreatedKey { api_key: KeyView::new(&key, time::now()), key: plaintext.expose().to_owned() };
        let created = CreatedAccount { account: AccountView::from(&account), initial_key };
        Ok((StatusCode::CREATED, Json(created)).into_response())
    })
    .await
}

/// List accounts, newest first.
#[utoipa::path(get, path = "/v1/accounts", tag = OPERATOR, params(ListAccountsParams),
    responses((status = 200, body = AccountList)), security(("bearer" = [])))]
pub async fn list_accounts(
    State(state): State<AppState>,
    caller: Scoped<AccountsRead>,
    Query(q): Query<ListAccountsParams>,
) -> Result<Json<AccountList>, ApiError> {
    let (rows, next_cursor) = state.keygate.list_accounts(&caller.principal(), q.into()).await?;
    Ok(Json(AccountList { data: rows.iter().map(AccountView::from).collect(), next_cursor }))
}

/// Get any account.
#[utoipa::path(get, path = "/v1/accounts/{id}", tag = OPERATOR, params(("id" = String, Path, description = "acct_…")),
    responses((status = 200, body = AccountView)), security(("bearer" = [])))]
pub async fn get_account(
    State(state): State<AppState>,
    caller: Scoped<AccountsRead>,
    Path(id): Path<String>,
) -> Result<Json<AccountView>, ApiError> {
    Ok(Json(AccountView::from(&state.keygate.get_account(&caller.principal(), &id).await?)))
}

/// Change any account, including its rate limit.
#[utoipa::path(patch, path = "/v1/accounts/{id}", tag = OPERATOR, params(("id" = String, Path, description = "acct_…")),
    request_body = UpdateAccountRequest, responses((status = 200, body = AccountView)), security(("bearer" = [])))]
pub async fn update_account(
    State(state): State<AppState>,
    caller: Scoped<AccountsWrite>,
    Path(id): Path<String>,
    Body(req): Body<UpdateAccountRequest>,
) -> Result<Json<AccountView>, ApiError> {
    Ok(Json(AccountView::from(&state.keygate.update_account(&caller.principal(), &id, req).await?)))
}

/// Suspend an account: every key of it is refused with `account_suspended`.
#[utoipa::path(post, path = "/v1/accounts/{id}/suspend", tag = OPERATOR, params(("id" = String, Path, description = "acct_…")),
    responses((status = 200, body = AccountView)), security(("bearer" = [])))]
pub async fn suspend_account(
    State(state): State<AppState>,
    caller: Scoped<AccountsWrite>,
    Path(id): Path<String>,
) -> Result<Json<AccountView>, ApiError> {
    Ok(Json(AccountView::from(&state.keygate.set_account_suspended(&caller.principal(), &id, true).await?)))
}

/// Reactivate a suspended account.
#[utoipa::path(post, path = "/v1/accounts/{id}/unsuspend", tag = OPERATOR, params(("id" = String, Path, description = "acct_…")),
    responses((status = 200, body = AccountView)), security(("bearer" = [])))]
pub async fn unsuspend_account(
    State(state): State<AppState>,
    caller: Scoped<AccountsWrite>,
    Path(id): Path<String>,
) -> Result<Json<AccountView>, ApiError> {
    Ok(Json(AccountView::from(&state.keygate.set_account_suspended(&caller.principal(), &id, false).await?)))
}
