//! Settings → API Keys (SPEC §12, seeds 000 and 001): the table, Create, the one-time modal,
//! Edit, Roll, Revoke, Delete, and a key's usage. Each action calls the use case the API's route
//! calls, as the signed-in user.

use std::collections::{BTreeMap, HashSet};

use askama::Template;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use chrono::{NaiveDateTime, TimeZone, Utc};
use keygate_domain::PlaintextKey;
use keygate_domain::model::{ApiKey, KeyStatus};
use keygate_domain::scope::{self, Catalog, Scope};
use keygate_domain::time::{self, Timestamp};
use keygate_engine::Error;
use keygate_engine::error::FieldError;
use keygate_engine::services::keys::{CreateKeyRequest, ListKeysParams, UpdateKeyRequest};
use keygate_engine::services::requests::{ListRequestsParams, UsageParams};
use serde::Deserialize;

use crate::Dashboard;
use crate::chart::{self, UsageChart};
use crate::form::{FORM_ID_FIELD, FormData, new_form_id, split_list};
use crate::render::{Chrome, PageError, Problem, already_created, coded, page, see_other, when};
use crate::session::{Signed, Submission};

/// One row of the API Keys table, in the seed's columns.
struct KeyRow {
    id: String,
    name: String,
    masked: String,
    /// "All" for an unrestricted key, else how many scopes.
    scopes: String,
    /// "All tenants", or how many.
    tenants: String,
    /// ACTIVE, REVOKED or EXPIRED.
    status: String,
    last_used: String,
    environment: String,
    active: bool,
}

impl KeyRow {
    fn new(key: &ApiKey, now: Timestamp) -> Self {
        let status = key.status(now);
        Self {
            id: key.id.to_string(),
            name: key.name.clone(),
            masked: key.masked(),
            scopes: key.scopes.as_ref().map_or_else(|| "All".to_owned(), |s| s.len().to_string()),
            tenants: match &key.tenant_ids {
                None => "All tenants".to_owned(),
                Some(t) if t.len() == 1 => "1 tenant".to_owned(),
                Some(t) => format!("{} tenants", t.len()),
            },
            status: match status {
                KeyStatus::Active => "ACTIVE",
                KeyStatus::Revoked => "REVOKED",
                KeyStatus::Expired => "EXPIRED",
            }
            .to_owned(),
            last_used: when(key.last_used_at),
            environment: key.environment.as_str().to_owned(),
            active: status == KeyStatus::Active,
        }
    }
}

#[derive(Template)]
#[template(path = "keys.html")]
struct KeysPage {
    chrome: Chrome,
    keys: Vec<KeyRow>,
    name: String,
    status: String,
    next: Option<String>,
    can_write: bool,
    paged: bool,
}

/// Filters of the table.
#[derive(Deserialize)]
pub struct ListQuery {
    name: Option<String>,
    status: Option<String>,
    cursor: Option<String>,
}

/// `GET /dashboard/api-keys`: the table, filtered by name and status, 20 a page.
pub async fn list(
    State(dashboard): State<Dashboard>,
    signed: Signed,
    Query(q): Query<ListQuery>,
) -> Result<Response, PageError> {
    signed.require("api_keys:read")?;
    let name = q.name.unwrap_or_default();
    let status = q.status.unwrap_or_default();
    let params = ListKeysParams {
        name: Some(name.trim().to_owned()).filter(|n| !n.is_empty()),
        status: Some(status.clone()).filter(|s| !s.is_empty()),
        limit: Some(20),
        cursor: q.cursor.clone().filter(|c| !c.is_empty()),
        ..ListKeysParams::default()
    };
    let (keys, next) = dashboard.engine.keygate.list_keys(&signed.principal, params).await?;
    let now = time::now();
    let next = next.map(|cursor| {
        let query: String = form_urlencoded::Serializer::new(String::new())
            .append_pair("name", &name)
            .append_pair("status", &status)
            .append_pair("cursor", &cursor)
            .finish();
        format!("/dashboard/api-keys?{query}")
    });
    Ok(page(
        StatusCode::OK,
        &KeysPage {
            can_write: signed.can("api_keys:write"),
            chrome: signed.chrome("api-keys"),
            keys: keys.iter().map(|k| KeyRow::new(k, now)).collect(),
            name,
            status,
            next,
            paged: q.cursor.is_some(),
        },
    ))
}

/// One option of a resource's radio group.
struct LevelOption {
    value: &'static str,
    label: &'static str,
    checked: bool,
    /// Beyond what the user's role may give.
    disabled: bool,
}

/// An action scope (`sms:send`) as a checkbox.
struct ActionBox {
    scope: String,
    label: String,
    checked: bool,
    disabled: bool,
}

struct ResourceView {
    resource: String,
    description: String,
    options: Vec<LevelOption>,
    actions: Vec<ActionBox>,
}

struct GroupView {
    name: String,
    resources: Vec<ResourceView>,
}

/// What the key form holds, as typed: re-rendered unchanged after an error, so nothing is lost.
#[derive(Default)]
struct KeyForm {
    name: String,
    environment: String,
    unrestricted: bool,
    /// resource → `none`, `read` or `write`.
    levels: BTreeMap<String, String>,
    /// Checked action scopes.
    actions: HashSet<String>,
    tenant_ids: String,
    restrict_ips: bool,
    allowed_ips: String,
    rate_limit: String,
    /// `YYYY-MM-DDTHH:MM`, UTC; empty = never.
    expires: String,
    /// The rendering this came from, when posted.
    form_id: Option<String>,
}

impl KeyForm {
    fn blank(dashboard: &Dashboard) -> Self {
        Self {
            environment: "live".to_owned(),
            unrestricted: false,
            rate_limit: dashboard.engine.keygate.limits.default_key_rate_limit_per_minute.to_string(),
            ..Self::default()
        }
    }

    fn of_key(key: &ApiKey, catalog: &Catalog) -> Self {
        let mut form = Self {
            name: key.name.clone(),
            environment: key.environment.as_str().to_owned(),
            unrestricted: key.scopes.is_none(),
            tenant_ids: key
                .tenant_ids
                .as_ref()
                .map(|t| t.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"))
                .unwrap_or_default(),
            restrict_ips: key.allowed_ips.is_some(),
            allowed_ips: key
                .allowed_ips
                .as_ref()
                .map(|ips| ips.iter().map(keygate_engine::views::ip_entry).collect::<Vec<_>>().join("\n"))
                .unwrap_or_default(),
            rate_limit: key.rate_limit_per_minute.to_string(),
            expires: key.expires_at.map(|t| t.format("%Y-%m-%dT%H:%M").to_string()).unwrap_or_default(),
            ..Self::default()
        };
        let Some(scopes) = &key.scopes else { return form };
        for s in scopes {
            // `resource:*` is shown as every action the catalog declares for it (saving writes
            // them out; a `*` held by no declared action could not be shown at all).
            let actions: Vec<&str> = if s.action() == "*" {
                catalog
                    .entries()
                    .iter()
                    .filter(|e| e.resource == s.resource())
                    .flat_map(|e| e.actions.iter())
                    .map(String::as_str)
                    .collect()
            } else {
                vec![s.action()]
            };
            for action in actions {
                match action {
                    "write" => {
                        form.levels.insert(s.resource().to_owned(), "write".to_owned());
                    }
                    "read" => {
                        form.levels.entry(s.resource().to_owned()).or_insert_with(|| "read".to_owned());
                    }
                    other => {
                        form.actions.insert(format!("{}:{other}", s.resource()));
                    }
                }
            }
        }
        form
    }

    fn of_form(form: &FormData) -> Self {
        let mut levels = BTreeMap::new();
        for (name, value) in form.pairs() {
            if let Some(resource) = name.strip_prefix("perm.") {
                levels.insert(resource.to_owned(), value.to_owned());
            }
        }
        Self {
            name: form.text("name").to_owned(),
            environment: form.get("environment").unwrap_or("live").to_owned(),
            unrestricted: form.text("access") == "unrestricted",
            levels,
            actions: form.all("scope").map(str::to_owned).collect(),
            tenant_ids: form.text("tenant_ids").to_owned(),
            restrict_ips: form.checked("restrict_ips"),
            allowed_ips: form.text("allowed_ips").to_owned(),
            rate_limit: form.text("rate_limit_per_minute").to_owned(),
            expires: form.text("expires").to_owned(),
            form_id: form.get(FORM_ID_FIELD).filter(|id| !id.is_empty()).map(str::to_owned),
        }
    }

    /// Every resource at its highest level and every action checked, within what the user may
    /// give ("Select All").
    fn select_all(&mut self, dashboard: &Dashboard, signed: &Signed) {
        self.unrestricted = false;
        for entry in dashboard.engine.keygate.catalog.visible(signed.active.account.operator) {
            for action in &entry.actions {
                let Ok(s) = Scope::new(&entry.resource, action) else { continue };
                if !may_give(signed, &s) {
                    continue;
                }
                match action.as_str() {
                    "write" => {
                        self.levels.insert(entry.resource.clone(), "write".to_owned());
                    }
                    "read" => {
                        self.levels.entry(entry.resource.clone()).or_insert_with(|| "read".to_owned());
                    }
                    _ => {
                        self.actions.insert(s.to_string());
                    }
                }
            }
        }
    }

    /// The scopes the form asks for: `None` = unrestricted.
    fn scopes(&self) -> Option<Vec<String>> {
        if self.unrestricted {
            return None;
        }
        let mut out: Vec<String> = self
            .levels
            .iter()
            .filter(|(_, level)| matches!(level.as_str(), "read" | "write"))
            .map(|(resource, level)| format!("{resource}:{level}"))
            .collect();
        let mut actions: Vec<&String> = self.actions.iter().collect();
        actions.sort();
        out.extend(actions.into_iter().cloned());
        Some(out)
    }

    /// The fields the use case's request cannot express as typed (a number, a time), checked
    /// here with the API's field names.
    fn parse_limit_and_expiry(&self) -> Result<(Option<u32>, Option<Timestamp>), Error> {
        let mut errors = Vec::new();
        let limit = self.rate_limit.trim().parse::<u32>().map_err(|_| {
            errors.push(FieldError::new("rate_limit_per_minute", "must be a whole number of requests per minute"));
        });
        let expires = if self.expires.trim().is_empty() {
            Ok(None)
        } else {
            NaiveDateTime::parse_from_str(self.expires.trim(), "%Y-%m-%dT%H:%M")
                .or_else(|_| NaiveDateTime::parse_from_str(self.expires.trim(), "%Y-%m-%dT%H:%M:%S"))
                .map(|t| Some(Utc.from_utc_datetime(&t)))
                .map_err(|_| {
                    errors.push(FieldError::new("expires_at", "must be a date and time like 2027-01-01T00:00"))
                })
        };
        if errors.is_empty() { Ok((limit.ok(), expires.ok().flatten())) } else { Err(Error::Validation(errors)) }
    }

    fn tenants(&self) -> Option<Vec<String>> {
        let list = split_list(&self.tenant_ids);
        if list.is_empty() { None } else { Some(list) }
    }

    fn ips(&self) -> Option<Vec<String>> {
        self.restrict_ips.then(|| split_list(&self.allowed_ips))
    }
}

/// Whether the signed-in user may put `s` on a key (its role holds it).
fn may_give(signed: &Signed, s: &Scope) -> bool {
    scope::grants(signed.principal.scopes.as_deref(), s)
}

/// The catalog as the form shows it: groups, each resource a radio group (No access / Read /
/// Write, as its actions allow) and its other actions as checkboxes.
fn groups(dashboard: &Dashboard, signed: &Signed, form: &KeyForm) -> Vec<GroupView> {
    let mut groups: Vec<GroupView> = Vec::new();
    for entry in dashboard.engine.keygate.catalog.visible(signed.active.account.operator) {
        let level = form.levels.get(&entry.resource).map_or("none", String::as_str);
        let mut options = Vec::new();
        let has = |a: &str| entry.actions.iter().any(|x| x == a);
        if has("read") || has("write") {
            options.push(LevelOption { value: "none", label: "No access", checked: level == "none", disabled: false });
            for (value, label) in [("read", "Read"), ("write", "Write")] {
                if has(value) {
                    let disabled = Scope::new(&entry.resource, value).is_ok_and(|s| !may_give(signed, &s));
                    options.push(LevelOption { value, label, checked: level == value, disabled });
                }
            }
        }
        let actions = entry
            .actions
            .iter()
            .filter(|a| !matches!(a.as_str(), "read" | "write"))
            .filter_map(|a| Scope::new(&entry.resource, a).ok())
            .map(|s| ActionBox {
                checked: form.actions.contains(s.as_str()),
                disabled: !may_give(signed, &s),
                label: s.to_string(),
                scope: s.to_string(),
            })
            .collect();
        let view = ResourceView {
            resource: entry.resource.clone(),
            description: if entry.description.is_empty() { entry.resource.clone() } else { entry.description.clone() },
            options,
            actions,
        };
        let group = if entry.group.is_empty() { "Other".to_owned() } else { entry.group.clone() };
        match groups.iter_mut().find(|g| g.name == group) {
            Some(g) => g.resources.push(view),
            None => groups.push(GroupView { name: group, resources: vec![view] }),
        }
    }
    groups
}

#[derive(Template)]
#[template(path = "key_form.html")]
struct KeyFormPage {
    chrome: Chrome,
    /// `None` when creating.
    key_id: Option<String>,
    masked: String,
    form: KeyForm,
    groups: Vec<GroupView>,
    max_rate_limit: u32,
    problem: Option<Problem>,
    /// This rendering's id ([`crate::session::Signed::submit_once`]): kept when the form comes back with
    /// an error, so the corrected form is still one submission.
    form_id: String,
}

fn form_page(
    dashboard: &Dashboard,
    signed: &Signed,
    status: StatusCode,
    key: Option<&ApiKey>,
    form: KeyForm,
    problem: Option<Problem>,
) -> Response {
    let form_id = match form.form_id.clone() {
        Some(id) => id,
        None => match new_form_id() {
            Ok(id) => id,
            Err(e) => return PageError::from(e).into_response(),
        },
    };
    let code = problem.as_ref().map(|p| p.code);
    let response = page(
        status,
        &KeyFormPage {
            form_id,
            chrome: signed.chrome("api-keys"),
            key_id: key.map(|k| k.id.to_string()),
            masked: key.map(|k| k.masked()).unwrap_or_default(),
            groups: groups(dashboard, signed, &form),
            form,
            max_rate_limit: dashboard.engine.keygate.limits.max_key_rate_limit_per_minute,
            problem,
        },
    );
    coded(response, code)
}

/// `GET /dashboard/api-keys/new`: "Create API Key".
pub async fn new_form(State(dashboard): State<Dashboard>, signed: Signed) -> Result<Response, PageError> {
    signed.require("api_keys:write")?;
    let form = KeyForm::blank(&dashboard);
    Ok(form_page(&dashboard, &signed, StatusCode::OK, None, form, None))
}

#[derive(Template)]
#[template(path = "key_created.html")]
struct CreatedPage {
    chrome: Chrome,
    title: String,
    key_id: String,
    name: String,
    plaintext: String,
}

/// The one page that shows a plaintext key: after Create and after Roll.
fn created_page(signed: &Signed, title: &str, key: &ApiKey, plaintext: &PlaintextKey) -> Response {
    page(
        StatusCode::CREATED,
        &CreatedPage {
            chrome: signed.chrome("api-keys"),
            title: title.to_owned(),
            key_id: key.id.to_string(),
            name: key.name.clone(),
            plaintext: plaintext.expose().to_owned(),
        },
    )
}

/// `POST /dashboard/api-keys`: creates the key and shows it once; "Select All" (a submit button
/// of the same form, for browsers without JavaScript) re-renders the form with everything the
/// user may give selected.
pub async fn create(State(dashboard): State<Dashboard>, signed: Signed, body: Bytes) -> Result<Response, PageError> {
    let data = signed.accept(&dashboard, &body, "api_keys:write").await?;
    let mut form = KeyForm::of_form(&data);
    if data.get("select_all").is_some() {
        form.select_all(&dashboard, &signed);
        return Ok(form_page(&dashboard, &signed, StatusCode::OK, None, form, None));
    }
    let request = match form.parse_limit_and_expiry() {
        Ok((rate_limit, expires_at)) => CreateKeyRequest {
            name: form.name.clone(),
            environment: Some(form.environment.clone()),
            scopes: Some(form.scopes()),
            tenant_ids: Some(form.tenants()),
            allowed_ips: Some(form.ips()),
            rate_limit_per_minute: rate_limit,
            expires_at: Some(expires_at),
            metadata: None,
        },
        Err(e) => {
            let problem = Problem::from_error(e);
            return Ok(form_page(&dashboard, &signed, problem.status, None, form, Some(problem)));
        }
    };
    let ticket = match signed.submit_once(&dashboard, &data, "/dashboard/api-keys").await? {
        Submission::First(ticket) => ticket,
        Submission::Again(id) => return Ok(already_created(&format!("the key {id}"))),
    };
    let idempotency = &dashboard.engine.idempotency;
    match dashboard.engine.keygate.create_key(&signed.principal, request).await {
        Ok((key, plaintext)) => {
            ticket.complete(idempotency, key.id.to_string().as_bytes()).await;
            Ok(created_page(&signed, "API key created", &key, &plaintext))
        }
        Err(e) => {
            ticket.release(idempotency).await;
            let problem = Problem::from_error(e);
            Ok(form_page(&dashboard, &signed, problem.status, None, form, Some(problem)))
        }
    }
}

/// `GET /dashboard/api-keys/{id}/edit`: Edit (scopes, tenants, IPs, limit, expiry; never the
/// value).
pub async fn edit_form(
    State(dashboard): State<Dashboard>,
    signed: Signed,
    Path(id): Path<String>,
) -> Result<Response, PageError> {
    signed.require("api_keys:write")?;
    let key = dashboard.engine.keygate.get_key(&signed.principal, &id).await?;
    Ok(form_page(
        &dashboard,
        &signed,
        StatusCode::OK,
        Some(&key),
        KeyForm::of_key(&key, &dashboard.engine.keygate.catalog),
        None,
    ))
}

/// `POST /dashboard/api-keys/{id}/edit`.
pub async fn update(
    State(dashboard): State<Dashboard>,
    signed: Signed,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Response, PageError> {
    let data = signed.accept(&dashboard, &body, "api_keys:write").await?;
    let key = dashboard.engine.keygate.get_key(&signed.principal, &id).await?;
    let mut form = KeyForm::of_form(&data);
    form.environment = key.environment.as_str().to_owned();
    if data.get("select_all").is_some() {
        form.select_all(&dashboard, &signed);
        return Ok(form_page(&dashboard, &signed, StatusCode::OK, Some(&key), form, None));
    }
    let request = match form.parse_limit_and_expiry() {
        Ok((rate_limit, expires_at)) => UpdateKeyRequest {
            name: Some(form.name.clone()),
            scopes: Some(form.scopes()),
            tenant_ids: Some(form.tenants()),
            allowed_ips: Some(form.ips()),
            rate_limit_per_minute: rate_limit,
            // Unchanged expiry is not sent: a key whose expiry has passed can still be renamed.
            expires_at: (expires_at != key.expires_at.map(|t| t.with_second_and_nanos_zeroed())).then_some(expires_at),
            metadata: None,
        },
        Err(e) => {
            let problem = Problem::from_error(e);
            return Ok(form_page(&dashboard, &signed, problem.status, Some(&key), form, Some(problem)));
        }
    };
    match dashboard.engine.keygate.update_key(&signed.principal, &id, request).await {
        Ok(key) => Ok(see_other(&format!("/dashboard/api-keys/{}", key.id))),
        Err(e) => {
            let problem = Problem::from_error(e);
            Ok(form_page(&dashboard, &signed, problem.status, Some(&key), form, Some(problem)))
        }
    }
}

/// Rounds a time down to its minute (what a `datetime-local` field shows).
trait MinuteOnly {
    fn with_second_and_nanos_zeroed(self) -> Self;
}

impl MinuteOnly for Timestamp {
    fn with_second_and_nanos_zeroed(self) -> Self {
        use chrono::Timelike;
        self.with_second(0).and_then(|t| t.with_nanosecond(0)).unwrap_or(self)
    }
}

#[derive(Template)]
#[template(path = "key_confirm.html")]
struct ConfirmPage {
    chrome: Chrome,
    /// `roll`, `revoke` or `delete`.
    action: &'static str,
    key: KeyRow,
    /// For Roll, which shows a new key once ([`crate::session::Signed::submit_once`]).
    form_id: String,
}

async fn confirm(
    dashboard: &Dashboard,
    signed: &Signed,
    id: &str,
    action: &'static str,
) -> Result<Response, PageError> {
    signed.require("api_keys:write")?;
    let key = dashboard.engine.keygate.get_key(&signed.principal, id).await?;
    Ok(page(
        StatusCode::OK,
        &ConfirmPage {
            chrome: signed.chrome("api-keys"),
            action,
            key: KeyRow::new(&key, time::now()),
            form_id: new_form_id()?,
        },
    ))
}

/// `GET /dashboard/api-keys/{id}/roll`: the grace period, then Roll.
pub async fn roll_confirm(
    State(dashboard): State<Dashboard>,
    signed: Signed,
    Path(id): Path<String>,
) -> Result<Response, PageError> {
    confirm(&dashboard, &signed, &id, "roll").await
}

/// `GET /dashboard/api-keys/{id}/revoke`: a reason, then Revoke.
pub async fn revoke_confirm(
    State(dashboard): State<Dashboard>,
    signed: Signed,
    Path(id): Path<String>,
) -> Result<Response, PageError> {
    confirm(&dashboard, &signed, &id, "revoke").await
}

/// `GET /dashboard/api-keys/{id}/delete`: Delete, confirmed.
pub async fn delete_confirm(
    State(dashboard): State<Dashboard>,
    signed: Signed,
    Path(id): Path<String>,
) -> Result<Response, PageError> {
    confirm(&dashboard, &signed, &id, "delete").await
}

/// `POST /dashboard/api-keys/{id}/roll`: a new key with the same settings, shown once; the old
/// one expires after the grace period (seconds).
pub async fn roll(
    State(dashboard): State<Dashboard>,
    signed: Signed,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Response, PageError> {
    let data = signed.accept(&dashboard, &body, "api_keys:write").await?;
    let grace = match data.text("grace_period_seconds").trim() {
        "" => None,
        text => Some(
            text.parse::<i64>()
                .map_err(|_| Error::field("grace_period_seconds", "must be a whole number of seconds"))?,
        ),
    };
    let ticket = match signed.submit_once(&dashboard, &data, &format!("/dashboard/api-keys/{id}/roll")).await? {
        Submission::First(ticket) => ticket,
        Submission::Again(new_id) => return Ok(already_created(&format!("the key {new_id}"))),
    };
    let idempotency = &dashboard.engine.idempotency;
    match dashboard.engine.keygate.roll_key(&signed.principal, &id, grace).await {
        Ok((key, plaintext)) => {
            ticket.complete(idempotency, key.id.to_string().as_bytes()).await;
            Ok(created_page(&signed, "API key rolled", &key, &plaintext))
        }
        Err(e) => {
            ticket.release(idempotency).await;
            Err(e.into())
        }
    }
}

/// `POST /dashboard/api-keys/{id}/revoke`.
pub async fn revoke(
    State(dashboard): State<Dashboard>,
    signed: Signed,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Response, PageError> {
    let data = signed.accept(&dashboard, &body, "api_keys:write").await?;
    let reason = Some(data.text("reason").trim().to_owned()).filter(|r| !r.is_empty());
    dashboard.engine.keygate.revoke_key(&signed.principal, &id, reason).await?;
    Ok(see_other("/dashboard/api-keys"))
}

/// `POST /dashboard/api-keys/{id}/delete`.
pub async fn delete(
    State(dashboard): State<Dashboard>,
    signed: Signed,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Response, PageError> {
    signed.accept(&dashboard, &body, "api_keys:write").await?;
    dashboard.engine.keygate.delete_key(&signed.principal, &id).await?;
    Ok(see_other("/dashboard/api-keys"))
}

/// A request-log record as the key page lists it.
struct RequestRow {
    at: String,
    method: String,
    route: String,
    status: u16,
    outcome: String,
    client_ip: String,
    tenant: String,
}

#[derive(Template)]
#[template(path = "key_show.html")]
struct KeyShowPage {
    chrome: Chrome,
    key: KeyRow,
    scopes: Vec<String>,
    tenant_ids: Vec<String>,
    allowed_ips: Vec<String>,
    rate_limit: u32,
    expires: String,
    created: String,
    created_by: String,
    last_used_ip: String,
    revoked_reason: String,
    chart: UsageChart,
    requests: Option<Vec<RequestRow>>,
    can_write: bool,
}

/// `GET /dashboard/api-keys/{id}`: the key, its requests per day by outcome (30 days), and its
/// latest requests from the request log — what a partner reads after a leak.
pub async fn show(
    State(dashboard): State<Dashboard>,
    signed: Signed,
    Path(id): Path<String>,
) -> Result<Response, PageError> {
    signed.require("api_keys:read")?;
    // Through `recorded`: the requests made a moment ago count, as in the API.
    let keygate = dashboard.engine.recorded(signed.principal.account.id).await;
    let key = keygate.get_key(&signed.principal, &id).await?;
    let usage = keygate.key_usage(&signed.principal, &id, UsageParams::default()).await?;
    let requests = if signed.can("audit:read") {
        let params = ListRequestsParams { key_id: Some(key.id.to_string()), limit: Some(25), ..Default::default() };
        let (records, _) = keygate.list_requests(&signed.principal, params).await?;
        Some(
            records
                .into_iter()
                .map(|r| RequestRow {
                    at: r.at.format("%Y-%m-%d %H:%M:%S UTC").to_string(),
                    method: r.method,
                    route: r.route,
                    status: r.status,
                    outcome: r.outcome,
                    client_ip: r.client_ip.map(|ip| ip.to_string()).unwrap_or_default(),
                    tenant: r.tenant_id.map(|t| t.to_string()).unwrap_or_default(),
                })
                .collect(),
        )
    } else {
        None
    };
    let now = time::now();
    Ok(page(
        StatusCode::OK,
        &KeyShowPage {
            chrome: signed.chrome("api-keys"),
            scopes: key.scopes.as_ref().map(|s| s.iter().map(ToString::to_string).collect()).unwrap_or_default(),
            tenant_ids: key
                .tenant_ids
                .as_ref()
                .map(|t| t.iter().map(ToString::to_string).collect())
                .unwrap_or_default(),
            allowed_ips: key
                .allowed_ips
                .as_ref()
                .map(|ips| ips.iter().map(keygate_engine::views::ip_entry).collect())
                .unwrap_or_default(),
            rate_limit: key.rate_limit_per_minute,
            expires: key.expires_at.map_or_else(|| "Never".to_owned(), |t| when(Some(t))),
            created: when(Some(key.created_at)),
            created_by: key.created_by.clone().unwrap_or_default(),
            last_used_ip: key.last_used_ip.map(|ip| ip.to_string()).unwrap_or_default(),
            revoked_reason: key.revoked_reason.clone().unwrap_or_default(),
            chart: chart::usage(&usage, now, 30),
            requests,
            can_write: signed.can("api_keys:write"),
            key: KeyRow::new(&key, now),
        },
    ))
}
