//! The rest of the dashboard: Tenants, Audit log, Account settings, Users and, for the operator,
//! Accounts. Each page calls the use cases the API's routes call, as the signed-in user.

use askama::Template;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use chrono::{DateTime, NaiveDateTime, TimeZone, Utc};
use keygate_domain::model::{AccountStatus, Role, TenantStatus};
use keygate_engine::Error;
use keygate_engine::error::FieldError;
use keygate_engine::services::PageParams;
use keygate_engine::services::accounts::{CreateAccountRequest, UpdateOwnAccountRequest};
use keygate_engine::services::audit::ListAuditParams;
use keygate_engine::services::tenants::{CreateTenantRequest, ListTenantsParams};
use keygate_engine::services::users::{CreateUserRequest, ListUsersParams, UpdateUserRequest};
use serde::Deserialize;

use crate::Dashboard;
use crate::form::{new_form_id, split_list};
use crate::render::{Chrome, PageError, Problem, already_created, coded, page, see_other, when};
use crate::session::{Client, Signed, Submission};

/// The page after `cursor`, keeping the other query parameters.
fn next_link(base: &str, pairs: &[(&str, &str)], cursor: Option<String>) -> Option<String> {
    cursor.map(|c| {
        let mut query = form_urlencoded::Serializer::new(String::new());
        for (k, v) in pairs {
            if !v.is_empty() {
                query.append_pair(k, v);
            }
        }
        query.append_pair("cursor", &c);
        format!("{base}?{}", query.finish())
    })
}

/// A `datetime-local` value (UTC) or RFC 3339, for filters; empty = none.
fn parse_time(field: &str, text: &str, errors: &mut Vec<FieldError>) -> Option<DateTime<Utc>> {
    let text = text.trim();
    if text.is_empty() {
        return None;
    }
    if let Ok(t) = DateTime::parse_from_rfc3339(text) {
        return Some(t.with_timezone(&Utc));
    }
    for format in ["%Y-%m-%dT%H:%M", "%Y-%m-%dT%H:%M:%S"] {
        if let Ok(t) = NaiveDateTime::parse_from_str(text, format) {
            return Some(Utc.from_utc_datetime(&t));
        }
    }
    errors.push(FieldError::new(field, "must be a date and time like 2026-11-30T14:00 (UTC)"));
    None
}

// ---------------------------------------------------------------------------------------------
// Tenants

struct TenantRow {
    id: String,
    name: String,
    external_id: String,
    active: bool,
    created: String,
}

#[derive(Template)]
#[template(path = "tenants.html")]
struct TenantsPage {
    chrome: Chrome,
    tenants: Vec<TenantRow>,
    next: Option<String>,
    can_write: bool,
    name: String,
    external_id: String,
    problem: Option<Problem>,
}

#[derive(Deserialize)]
pub struct CursorQuery {
    cursor: Option<String>,
}

async fn tenants_page(
    dashboard: &Dashboard,
    signed: &Signed,
    cursor: Option<String>,
    status: StatusCode,
    typed: (String, String),
    problem: Option<Problem>,
) -> Result<Response, PageError> {
    signed.require("tenants:read")?;
    let params = ListTenantsParams { limit: Some(50), cursor, ..ListTenantsParams::default() };
    let (tenants, next) = dashboard.engine.keygate.list_tenants(&signed.principal, params).await?;
    let code = problem.as_ref().map(|p| p.code);
    Ok(coded(
        page(
            status,
            &TenantsPage {
                chrome: signed.chrome("tenants"),
                tenants: tenants
                    .iter()
                    .map(|t| TenantRow {
                        id: t.id.to_string(),
                        name: t.name.clone(),
                        external_id: t.external_id.clone().unwrap_or_default(),
                        active: t.status == TenantStatus::Active,
                        created: when(Some(t.created_at)),
                    })
                    .collect(),
                next: next_link("/dashboard/tenants", &[], next),
                can_write: signed.can("tenants:write"),
                name: typed.0,
                external_id: typed.1,
                problem,
            },
        ),
        code,
    ))
}

/// `GET /dashboard/tenants`.
pub async fn tenants(
    State(dashboard): State<Dashboard>,
    signed: Signed,
    Query(q): Query<CursorQuery>,
) -> Result<Response, PageError> {
    tenants_page(&dashboard, &signed, q.cursor, StatusCode::OK, Default::default(), None).await
}

/// `POST /dashboard/tenants`: creates a tenant.
pub async fn create_tenant(
    State(dashboard): State<Dashboard>,
    signed: Signed,
    body: Bytes,
) -> Result<Response, PageError> {
    let data = signed.accept(&dashboard, &body, "tenants:write").await?;
    let name = data.text("name").to_owned();
    let external_id = data.text("external_id").trim().to_owned();
    let request = CreateTenantRequest {
        name: name.clone(),
        external_id: Some(external_id.clone()).filter(|e| !e.is_empty()),
        metadata: None,
    };
    match dashboard.engine.keygate.create_tenant(&signed.principal, request).await {
        Ok(_) => Ok(see_other("/dashboard/tenants")),
        Err(e) => {
            let problem = Problem::from_error(e);
            tenants_page(&dashboard, &signed, None, problem.status, (name, external_id), Some(problem)).await
        }
    }
}

/// `suspend` → true, `unsuspend` → false; anything else is no page.
fn suspending(action: &str) -> Result<bool, PageError> {
    match action {
        "suspend" => Ok(true),
        "unsuspend" => Ok(false),
        _ => Err(Error::NotFound("page").into()),
    }
}

/// `POST /dashboard/tenants/{id}/suspend` and `…/unsuspend`.
pub async fn set_tenant_status(
    State(dashboard): State<Dashboard>,
    signed: Signed,
    Path((id, action)): Path<(String, String)>,
    body: Bytes,
) -> Result<Response, PageError> {
    let suspended = suspending(&action)?;
    signed.accept(&dashboard, &body, "tenants:write").await?;
    dashboard.engine.keygate.set_tenant_suspended(&signed.principal, &id, suspended).await?;
    Ok(see_other("/dashboard/tenants"))
}

// ---------------------------------------------------------------------------------------------
// Audit log

struct EventRow {
    at: String,
    action: String,
    actor: String,
    target: String,
    ip: String,
    changes: String,
}

#[derive(Template)]
#[template(path = "audit.html")]
struct AuditPage {
    chrome: Chrome,
    events: Vec<EventRow>,
    action: String,
    actor_id: String,
    target_id: String,
    since: String,
    until: String,
    next: Option<String>,
    problem: Option<Problem>,
}

/// Filters of the audit log.
#[derive(Deserialize, Default)]
pub struct AuditQuery {
    #[serde(default)]
    action: String,
    #[serde(default)]
    actor_id: String,
    #[serde(default)]
    target_id: String,
    #[serde(default)]
    since: String,
    #[serde(default)]
    until: String,
    cursor: Option<String>,
}

/// `GET /dashboard/audit`: filter by action, actor, target and time (UTC).
pub async fn audit(
    State(dashboard): State<Dashboard>,
    signed: Signed,
    Query(q): Query<AuditQuery>,
) -> Result<Response, PageError> {
    signed.require("audit:read")?;
    let mut errors = Vec::new();
    let since = parse_time("since", &q.since, &mut errors);
    let until = parse_time("until", &q.until, &mut errors);
    let nonempty = |s: &str| Some(s.trim().to_owned()).filter(|s| !s.is_empty());
    let (events, next, problem, status) = if errors.is_empty() {
        let params = ListAuditParams {
            action: nonempty(&q.action),
            actor_id: nonempty(&q.actor_id),
            target_id: nonempty(&q.target_id),
            since,
            until,
            limit: Some(50),
            cursor: q.cursor.clone(),
        };
        match dashboard.engine.keygate.list_audit_events(&signed.principal, params).await {
            Ok((events, next)) => (events, next, None, StatusCode::OK),
            Err(e) => {
                let problem = Problem::from_error(e);
                let status = problem.status;
                (Vec::new(), None, Some(problem), status)
            }
        }
    } else {
        let problem = Problem::from_error(Error::Validation(errors));
        let status = problem.status;
        (Vec::new(), None, Some(problem), status)
    };
    let next = next_link(
        "/dashboard/audit",
        &[
            ("action", &q.action),
            ("actor_id", &q.actor_id),
            ("target_id", &q.target_id),
            ("since", &q.since),
            ("until", &q.until),
        ],
        next,
    );
    let code = problem.as_ref().map(|p| p.code);
    Ok(coded(
        page(
            status,
            &AuditPage {
                chrome: signed.chrome("audit"),
                events: events
                    .iter()
                    .map(|e| EventRow {
                        at: e.created_at.format("%Y-%m-%d %H:%M:%S UTC").to_string(),
                        action: e.action.clone(),
                        actor: format!("{} {}", e.actor_type, e.actor_id),
                        target: format!("{} {}", e.target_type, e.target_id),
                        ip: e.ip.map(|ip| ip.to_string()).unwrap_or_default(),
                        changes: if e.changes.as_object().is_some_and(serde_json::Map::is_empty) {
                            String::new()
                        } else {
                            e.changes.to_string()
                        },
                    })
                    .collect(),
                action: q.action,
                actor_id: q.actor_id,
                target_id: q.target_id,
                since: q.since,
                until: q.until,
                next,
                problem,
            },
        ),
        code,
    ))
}

// ---------------------------------------------------------------------------------------------
// Account settings

#[derive(Template)]
#[template(path = "settings.html")]
struct SettingsPage {
    chrome: Chrome,
    account_id: String,
    name: String,
    allowed_ips: String,
    rate_limit: u32,
    can_write: bool,
    problem: Option<Problem>,
    saved: bool,
}

#[derive(Deserialize)]
pub struct SavedQuery {
    saved: Option<String>,
}

/// `GET /dashboard/settings`: the account's name and IP allowlist (and its rate limit, which only
/// the operator changes).
pub async fn settings(
    State(_): State<Dashboard>,
    signed: Signed,
    Query(q): Query<SavedQuery>,
) -> Result<Response, PageError> {
    signed.require("account:read")?;
    let account = &signed.active.account;
    Ok(page(
        StatusCode::OK,
        &SettingsPage {
            chrome: signed.chrome("settings"),
            account_id: account.id.to_string(),
            name: account.name.clone(),
            allowed_ips: account.allowed_ips.iter().map(keygate_engine::views::ip_entry).collect::<Vec<_>>().join("\n"),
            rate_limit: account.rate_limit_per_minute,
            can_write: signed.can("account:write"),
            problem: None,
            saved: q.saved.is_some(),
        },
    ))
}

/// `POST /dashboard/settings`.
pub async fn update_settings(
    State(dashboard): State<Dashboard>,
    signed: Signed,
    body: Bytes,
) -> Result<Response, PageError> {
    let data = signed.accept(&dashboard, &body, "account:write").await?;
    let request = UpdateOwnAccountRequest {
        name: Some(data.text("name").to_owned()),
        allowed_ips: Some(split_list(data.text("allowed_ips"))),
    };
    match dashboard.engine.keygate.update_own_account(&signed.principal, request).await {
        Ok(_) => Ok(see_other("/dashboard/settings?saved=1")),
        Err(e) => {
            let problem = Problem::from_error(e);
            let code = Some(problem.code);
            let account = &signed.active.account;
            Ok(coded(
                page(
                    problem.status,
                    &SettingsPage {
                        chrome: signed.chrome("settings"),
                        account_id: account.id.to_string(),
                        name: data.text("name").to_owned(),
                        allowed_ips: data.text("allowed_ips").to_owned(),
                        rate_limit: account.rate_limit_per_minute,
                        can_write: true,
                        problem: Some(problem),
                        saved: false,
                    },
                ),
                code,
            ))
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Users

struct UserRow {
    id: String,
    email: String,
    /// Without one it signs in with a one-time link.
    has_password: bool,
    role: String,
    last_sign_in: String,
    you: bool,
    /// The signed-in user may change or remove this one (an admin: users below admin).
    manageable: bool,
    /// Its "Sign-in link" form's rendering ([`crate::session::Signed::submit_once`]).
    form_id: String,
}

#[derive(Template)]
#[template(path = "users.html")]
struct UsersPage {
    chrome: Chrome,
    users: Vec<UserRow>,
    next: Option<String>,
    /// Roles the signed-in user may give.
    grantable: Vec<&'static str>,
    email: String,
    role: String,
    problem: Option<Problem>,
    /// The add form's rendering ([`crate::session::Signed::submit_once`]: without a password it shows a
    /// sign-in link once).
    form_id: String,
}

/// The roles `mine` may give: an owner any, an admin those below admin, others none.
fn grantable(mine: Role, can_write: bool) -> Vec<Role> {
    if !can_write {
        return Vec::new();
    }
    Role::ALL.into_iter().filter(|r| mine == Role::Owner || *r < mine).rev().collect()
}

async fn users_page(
    dashboard: &Dashboard,
    signed: &Signed,
    cursor: Option<String>,
    status: StatusCode,
    typed: (String, String),
    problem: Option<Problem>,
) -> Result<Response, PageError> {
    signed.require("users:read")?;
    let (users, next) =
        dashboard.engine.keygate.list_users(&signed.principal, ListUsersParams { limit: Some(50), cursor }).await?;
    let mine = signed.active.user.role;
    let roles = grantable(mine, signed.can("users:write"));
    let code = problem.as_ref().map(|p| p.code);
    Ok(coded(
        page(
            status,
            &UsersPage {
                chrome: signed.chrome("users"),
                users: users
                    .iter()
                    .map(|u| UserRow {
                        id: u.id.to_string(),
                        email: u.email.clone(),
                        has_password: u.has_password,
                        role: u.role.as_str().to_owned(),
                        last_sign_in: when(u.last_sign_in_at),
                        you: u.id == signed.active.user.id,
                        manageable: roles.contains(&u.role),
                        form_id: new_form_id().unwrap_or_default(),
                    })
                    .collect(),
                next: next_link("/dashboard/users", &[], next),
                grantable: roles.iter().map(|r| r.as_str()).collect(),
                email: typed.0,
                // Least privilege unless chosen.
                role: if typed.1.is_empty() { "viewer".to_owned() } else { typed.1 },
                problem,
                form_id: new_form_id()?,
            },
        ),
        code,
    ))
}

/// `GET /dashboard/users` (owners and admins; others read it if their role may).
pub async fn users(
    State(dashboard): State<Dashboard>,
    signed: Signed,
    Query(q): Query<CursorQuery>,
) -> Result<Response, PageError> {
    users_page(&dashboard, &signed, q.cursor, StatusCode::OK, Default::default(), None).await
}

/// `POST /dashboard/users`: adds a user, with a password or, without one, its one-time
/// sign-in link shown once.
pub async fn create_user(
    State(dashboard): State<Dashboard>,
    client: Client,
    signed: Signed,
    body: Bytes,
) -> Result<Response, PageError> {
    let data = signed.accept(&dashboard, &body, "users:write").await?;
    let email = data.text("email").trim().to_owned();
    let role = data.text("role").to_owned();
    let password = Some(data.text("password").to_owned()).filter(|p| !p.is_empty());
    let request = CreateUserRequest { email: email.clone(), role: role.clone(), password };
    let ticket = match signed.submit_once(&dashboard, &data, "/dashboard/users").await? {
        Submission::First(ticket) => ticket,
        Submission::Again(id) => return Ok(already_created(&format!("the user {id}"))),
    };
    let idempotency = &dashboard.engine.idempotency;
    let created = dashboard.engine.keygate.create_user(&signed.principal, request).await;
    match &created {
        Ok(user) => ticket.complete(idempotency, user.id.to_string().as_bytes()).await,
        Err(_) => ticket.release(idempotency).await,
    }
    match created {
        Ok(user) if !user.has_password => link_page(&dashboard, &signed, &client, &user.id.to_string()).await,
        Ok(_) => Ok(see_other("/dashboard/users")),
        Err(e) => {
            let problem = Problem::from_error(e);
            users_page(&dashboard, &signed, None, problem.status, (email, role), Some(problem)).await
        }
    }
}

#[derive(Template)]
#[template(path = "link_created.html")]
struct LinkCreatedPage {
    chrome: Chrome,
    email: String,
    url: String,
    expires: String,
}

/// A new one-time sign-in link for a user of the account, shown once.
async fn link_page(dashboard: &Dashboard, signed: &Signed, client: &Client, id: &str) -> Result<Response, PageError> {
    let (user, link) = dashboard.engine.keygate.create_sign_in_link(&signed.principal, id).await?;
    Ok(page(
        StatusCode::CREATED,
        &LinkCreatedPage {
            chrome: signed.chrome("users"),
            email: user.email,
            url: format!("{}/dashboard/sign-in/link?token={}", client.base_url, link.token),
            expires: when(Some(link.expires_at)),
        },
    ))
}

/// `POST /dashboard/users/{id}/link`: a one-time sign-in link for a user without a password
/// (one the signed-in user may manage).
pub async fn sign_in_link(
    State(dashboard): State<Dashboard>,
    client: Client,
    signed: Signed,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Response, PageError> {
    let data = signed.accept(&dashboard, &body, "users:write").await?;
    let ticket = match signed.submit_once(&dashboard, &data, &format!("/dashboard/users/{id}/link")).await? {
        Submission::First(ticket) => ticket,
        Submission::Again(_) => return Ok(already_created("a sign-in link")),
    };
    let idempotency = &dashboard.engine.idempotency;
    let page = link_page(&dashboard, &signed, &client, &id).await;
    match &page {
        Ok(_) => ticket.complete(idempotency, id.as_bytes()).await,
        Err(_) => ticket.release(idempotency).await,
    }
    page
}

/// `POST /dashboard/users/{id}/role`.
pub async fn change_role(
    State(dashboard): State<Dashboard>,
    signed: Signed,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Response, PageError> {
    let data = signed.accept(&dashboard, &body, "users:write").await?;
    let request = UpdateUserRequest { role: Some(data.text("role").to_owned()), ..UpdateUserRequest::default() };
    dashboard.engine.keygate.update_user(&signed.principal, &id, request).await?;
    Ok(see_other("/dashboard/users"))
}

/// `POST /dashboard/users/{id}/delete`.
pub async fn delete_user(
    State(dashboard): State<Dashboard>,
    signed: Signed,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Response, PageError> {
    signed.accept(&dashboard, &body, "users:write").await?;
    dashboard.engine.keygate.delete_user(&signed.principal, &id).await?;
    Ok(see_other("/dashboard/users"))
}

// ---------------------------------------------------------------------------------------------
// Accounts (operator)

struct AccountRow {
    id: String,
    name: String,
    active: bool,
    operator: bool,
    rate_limit: u32,
    created: String,
}

#[derive(Template)]
#[template(path = "accounts.html")]
struct AccountsPage {
    chrome: Chrome,
    accounts: Vec<AccountRow>,
    next: Option<String>,
    can_write: bool,
    name: String,
    problem: Option<Problem>,
    /// The create form's rendering ([`crate::session::Signed::submit_once`]).
    form_id: String,
}

#[derive(Template)]
#[template(path = "account_created.html")]
struct AccountCreatedPage {
    chrome: Chrome,
    account_name: String,
    account_id: String,
    plaintext: String,
}

async fn accounts_page(
    dashboard: &Dashboard,
    signed: &Signed,
    cursor: Option<String>,
    status: StatusCode,
    name: String,
    problem: Option<Problem>,
) -> Result<Response, PageError> {
    signed.require("accounts:read")?;
    let (accounts, next) =
        dashboard.engine.keygate.list_accounts(&signed.principal, PageParams { limit: Some(50), cursor }).await?;
    let code = problem.as_ref().map(|p| p.code);
    Ok(coded(
        page(
            status,
            &AccountsPage {
                chrome: signed.chrome("accounts"),
                accounts: accounts
                    .iter()
                    .map(|a| AccountRow {
                        id: a.id.to_string(),
                        name: a.name.clone(),
                        active: a.status == AccountStatus::Active,
                        operator: a.operator,
                        rate_limit: a.rate_limit_per_minute,
                        created: when(Some(a.created_at)),
                    })
                    .collect(),
                next: next_link("/dashboard/accounts", &[], next),
                can_write: signed.can("accounts:write"),
                name,
                problem,
                form_id: new_form_id()?,
            },
        ),
        code,
    ))
}

/// `GET /dashboard/accounts` (the operator account only).
pub async fn accounts(
    State(dashboard): State<Dashboard>,
    signed: Signed,
    Query(q): Query<CursorQuery>,
) -> Result<Response, PageError> {
    accounts_page(&dashboard, &signed, q.cursor, StatusCode::OK, String::new(), None).await
}

/// `POST /dashboard/accounts`: creates an account and shows its first key once.
pub async fn create_account(
    State(dashboard): State<Dashboard>,
    signed: Signed,
    body: Bytes,
) -> Result<Response, PageError> {
    let data = signed.accept(&dashboard, &body, "accounts:write").await?;
    let name = data.text("name").to_owned();
    let rate_limit = match data.text("rate_limit_per_minute").trim() {
        "" => None,
        text => Some(
            text.parse::<u32>()
                .map_err(|_| Error::field("rate_limit_per_minute", "must be a whole number of requests per minute"))?,
        ),
    };
    let request = CreateAccountRequest { name: name.clone(), rate_limit_per_minute: rate_limit };
    let ticket = match signed.submit_once(&dashboard, &data, "/dashboard/accounts").await? {
        Submission::First(ticket) => ticket,
        Submission::Again(id) => return Ok(already_created(&format!("the account {id}"))),
    };
    let idempotency = &dashboard.engine.idempotency;
    let created = dashboard.engine.keygate.create_account(&signed.principal, request).await;
    match &created {
        Ok((account, ..)) => ticket.complete(idempotency, account.id.to_string().as_bytes()).await,
        Err(_) => ticket.release(idempotency).await,
    }
    match created {
        Ok((account, _key, plaintext)) => Ok(page(
            StatusCode::CREATED,
            &AccountCreatedPage {
                chrome: signed.chrome("accounts"),
                account_name: account.name,
                account_id: account.id.to_string(),
                plaintext: plaintext.expose().to_owned(),
            },
        )),
        Err(e) => {
            let problem = Problem::from_error(e);
            accounts_page(&dashboard, &signed, None, problem.status, name, Some(problem)).await
        }
    }
}

/// `POST /dashboard/accounts/{id}/suspend` and `…/unsuspend` (the operator).
pub async fn set_account_status(
    State(dashboard): State<Dashboard>,
    signed: Signed,
    Path((id, action)): Path<(String, String)>,
    body: Bytes,
) -> Result<Response, PageError> {
    let suspended = suspending(&action)?;
    signed.accept(&dashboard, &body, "accounts:write").await?;
    dashboard.engine.keygate.set_account_suspended(&signed.principal, &id, suspended).await?;
    Ok(see_other("/dashboard/accounts"))
}
