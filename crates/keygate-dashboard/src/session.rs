//! Signing in and out, the session cookie, and [`Signed`]: the extractor every signed-in page
//! takes, which turns the cookie into the engine's session and the user's [`Principal`].
//!
//! The cookie holds the session token only (the store keeps its SHA-256). It is `HttpOnly` (no
//! script reads it) and `SameSite=Strict` (no other site's page sends it). Over plain HTTP it is
//! `keygate_session` with `Path=/dashboard`. When the browser reached keygate over https — which
//! keygate, serving plain HTTP, knows only from a trusted proxy's `X-Forwarded-Proto: https` —
//! it is `__Host-keygate_session`: `Secure`, `Path=/`, no `Domain`, so no sibling host can set
//! or shadow it. It carries no `Max-Age`: it ends with the browser, and the server ends the
//! session after its idle and absolute timeouts whatever the browser keeps.

use std::net::{IpAddr, SocketAddr};

use askama::Template;
use axum::body::Bytes;
use axum::extract::{ConnectInfo, FromRequestParts, OriginalUri, Path, Query, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use cookie::{Cookie, SameSite};
use keygate_domain::Scope;
use keygate_engine::Error;
use keygate_engine::principal::Principal;
use keygate_engine::services::sessions::{ActiveSession, Origin, random_hex, same_token};

use crate::Dashboard;
use crate::form::{CSRF_FIELD, FormData};
use crate::render::{self, Chrome, PageError, Problem, coded, page, see_other};

const SESSION_COOKIE: &str = "keygate_session";
/// Over https: `__Host-` (Secure, `Path=/`, no `Domain`), so no sibling host can plant or
/// shadow it (RFC 6265bis §4.1.3.2).
const SECURE_SESSION_COOKIE: &str = "__Host-keygate_session";
/// The sign-in form's double-submitted CSRF token (there is no session yet to tie one to).
const SIGN_IN_COOKIE: &str = "keygate_sign_in";
const SECURE_SIGN_IN_COOKIE: &str = "__Host-keygate_sign_in";

/// Facts about the browser's request that sessions and audit events need.
pub struct Client {
    pub ip: IpAddr,
    /// The browser reached keygate over https (a trusted proxy said so).
    pub https: bool,
    pub user_agent: Option<String>,
    /// The session cookie's token, if sent.
    session_token: Option<String>,
    /// The sign-in form's cookie token, if sent.
    sign_in_token: Option<String>,
    /// Where this browser reached keygate (`https://host` or `http://host`), for the sign-in
    /// links the dashboard hands out: the browser's own `Host`, so a link works where the admin
    /// who made it works.
    pub base_url: String,
}

impl FromRequestParts<Dashboard> for Client {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, dashboard: &Dashboard) -> Result<Self, Self::Rejection> {
        Ok(Self::of(parts, dashboard))
    }
}

impl Client {
    fn of(parts: &Parts, dashboard: &Dashboard) -> Self {
        let peer = parts.extensions.get::<ConnectInfo<SocketAddr>>().map_or(IpAddr::from([127, 0, 0, 1]), |c| c.0.ip());
        let auth = &dashboard.engine.auth;
        let headers = &parts.headers;
        let ip = keygate_http::caller::client_ip(auth, peer, headers);
        let https = auth.is_trusted_proxy(peer)
            && headers
                .get("x-forwarded-proto")
                .and_then(|v| v.to_str().ok())
                .is_some_and(|p| p.trim().eq_ignore_ascii_case("https"));
        let user_agent =
            headers.get(header::USER_AGENT).and_then(|v| v.to_str().ok()).map(|s| s.chars().take(512).collect());
        let (session_name, sign_in_name) =
            if https { (SECURE_SESSION_COOKIE, SECURE_SIGN_IN_COOKIE) } else { (SESSION_COOKIE, SIGN_IN_COOKIE) };
        let host = headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .filter(|h| !h.is_empty() && h.bytes().all(|b| b.is_ascii_alphanumeric() || b".-:[]".contains(&b)))
            .unwrap_or("localhost");
        let base_url = format!("{}://{host}", if https { "https" } else { "http" });
        Self {
            ip,
            https,
            user_agent,
            base_url,
            session_token: read_cookie(headers, session_name),
            sign_in_token: read_cookie(headers, sign_in_name),
        }
    }

    fn origin(&self) -> Origin {
        Origin {
            ip: Some(self.ip),
            user_agent: self.user_agent.clone(),
            request_id: keygate_http::error::current_request_id(),
        }
    }

    fn session_cookie_name(&self) -> &'static str {
        if self.https { SECURE_SESSION_COOKIE } else { SESSION_COOKIE }
    }

    fn sign_in_cookie_name(&self) -> &'static str {
        if self.https { SECURE_SIGN_IN_COOKIE } else { SIGN_IN_COOKIE }
    }

    /// Whether a sign-in form (before any session) carries the token its cookie holds: the
    /// double-submitted CSRF token.
    fn sign_in_form_is_ours(&self, form: &FormData) -> bool {
        self.sign_in_token.as_deref().is_some_and(|t| !t.is_empty() && same_token(t, form.text(CSRF_FIELD)))
    }

    /// A 303 to `to` that hands the browser its new session's cookie and drops the sign-in
    /// form's.
    fn start_session(&self, token: &str, to: &str) -> Response {
        let mut response = see_other(to);
        let headers = response.headers_mut();
        headers.append(header::SET_COOKIE, self.cookie(self.session_cookie_name(), Some(token)));
        headers.append(header::SET_COOKIE, self.cookie(self.sign_in_cookie_name(), None));
        response
    }

    /// A `Set-Cookie` value with the dashboard's flags; `None` removes the cookie.
    fn cookie(&self, name: &'static str, value: Option<&str>) -> HeaderValue {
        let mut cookie = Cookie::build((name, value.unwrap_or("").to_owned()))
            // `__Host-` requires `Path=/`; over plain http the cookie stays on the dashboard.
            .path(if self.https { "/" } else { "/dashboard" })
            .http_only(true)
            .same_site(SameSite::Strict)
            .secure(self.https);
        if value.is_none() {
            cookie = cookie.max_age(cookie::time::Duration::ZERO);
        }
        HeaderValue::from_str(&cookie.build().to_string()).unwrap_or_else(|_| HeaderValue::from_static(""))
    }
}

fn read_cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers.get_all(header::COOKIE).iter().find_map(|v| {
        // Lossy: one cookie with bytes that are not ASCII (a sibling host's) must not hide ours.
        let header = String::from_utf8_lossy(v.as_bytes());
        Cookie::split_parse(header.as_ref())
            .filter_map(Result::ok)
            .find(|c| c.name() == name)
            .map(|c| c.value().to_owned())
    })
}

/// Whether this rendering of a form was submitted before.
pub enum Submission {
    /// The first time: do the work, then complete the ticket with what to remember (or release
    /// it on failure, so the form can be corrected and sent again).
    First(keygate_engine::idempotency::Ticket),
    /// Sent before, and done then: what was remembered (an id). The plaintext it showed is not
    /// shown again.
    Again(String),
}

/// A signed-in request: the live session, the principal the user acts as (its role's scopes,
/// SPEC §8), and the CSRF token of its forms. Without a live session, a GET is sent to the
/// sign-in page (and back after), anything else is refused with 401.
pub struct Signed {
    pub active: ActiveSession,
    pub principal: Principal,
    pub csrf: String,
}

impl Signed {
    /// The frame of a page of this session: who, where, the navigation its role may use, the
    /// CSRF token of its forms; `active` names the navigation entry of the page.
    #[must_use]
    pub fn chrome(&self, active: &'static str) -> Chrome {
        Chrome {
            email: self.active.user.email.clone(),
            role: self.active.user.role.as_str().to_owned(),
            account_name: self.active.account.name.clone(),
            // Accounts is in the navigation of those who may read them.
            operator: self.active.account.operator && self.can("accounts:read"),
            csrf: self.csrf.clone(),
            active,
            can_manage_users: self.can("users:write"),
        }
    }

    /// Claims a form's one submission. Without JavaScript, reloading the page a POST answered sends
    /// the POST again; for a form that creates a key or an account that would create a second one.
    /// The form's id is claimed as an idempotency key (SPEC §6) bound to the user, with nothing of
    /// the body in its fingerprint: any second submission of that rendering replays the id of what
    /// the first made, never its plaintext. A form without an id (a script's) is not claimed.
    ///
    /// # Errors
    /// 409 `idempotency_in_progress` while the first is still running; a store failure.
    pub async fn submit_once(
        &self,
        dashboard: &Dashboard,
        form: &FormData,
        action: &str,
    ) -> Result<Submission, keygate_engine::Error> {
        use keygate_engine::idempotency::{Binding, Claim, Request as Claimed};
        let id = form.text(crate::form::FORM_ID_FIELD);
        let request = (id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit()))
            .then(|| Claimed::new(format!("dashboard-form:{id}"), "POST", action, "", b""));
        let binding =
            Binding { account: self.active.account.id, principal: self.active.user.id.to_string(), tenant: None };
        Ok(match dashboard.engine.idempotency.claim(&binding, request.as_ref()).await? {
            Claim::Proceed(ticket) => Submission::First(ticket),
            Claim::Replay(record) => Submission::Again(String::from_utf8_lossy(&record).into_owned()),
        })
    }

    /// Whether the user's role holds `scope` (written `resource:action`).
    #[must_use]
    pub fn can(&self, scope: &str) -> bool {
        scope.parse::<Scope>().is_ok_and(|s| self.principal.require(&s).is_ok())
    }

    /// Check 9 for the user: its role holds `scope`.
    ///
    /// # Errors
    /// 403 `insufficient_scope`.
    pub fn require(&self, scope: &str) -> Result<(), PageError> {
        let s: Scope = scope.parse().map_err(|_| Error::Internal(format!("bad scope literal {scope}")))?;
        self.principal.require(&s)?;
        Ok(())
    }

    /// Accepts a posted form: its CSRF token is this session's, and the user's allowance of
    /// changes admits one more ([`keygate_engine::Engine::spend_user`]).
    ///
    /// # Errors
    /// 403 `csrf_token_invalid`, 429 `rate_limited`: nothing was done.
    pub async fn accept_form(&self, dashboard: &Dashboard, form: &FormData) -> Result<(), PageError> {
        self.accept_form_unmetered(dashboard, form)?;
        dashboard.engine.spend_user(self.active.user.id).await?;
        Ok(())
    }

    /// A posted form for an action that needs `scope`: parsed, accepted ([`Signed::accept_form`]:
    /// its CSRF token, the user's allowance) and checked against the user's role (check 9), in
    /// that order, so no handler can take one step without the others.
    ///
    /// # Errors
    /// 403 `csrf_token_invalid`, 429 `rate_limited`, 403 `insufficient_scope`: nothing was done.
    pub async fn accept(&self, dashboard: &Dashboard, body: &[u8], scope: &str) -> Result<FormData, PageError> {
        let form = FormData::parse(body);
        self.accept_form(dashboard, &form).await?;
        self.require(scope)?;
        Ok(form)
    }

    /// Accepts a posted form on its CSRF token alone, spending no allowance: for what a user
    /// does to take its account back — signing out, ending a session, changing its password —
    /// which a thief holding another session of the user could otherwise block by using the
    /// allowance up.
    ///
    /// # Errors
    /// 403 `csrf_token_invalid`: nothing was done.
    pub fn accept_form_unmetered(&self, dashboard: &Dashboard, form: &FormData) -> Result<(), PageError> {
        let presented = form.text(CSRF_FIELD);
        if dashboard.engine.keygate.csrf_matches(&self.active.session, presented) {
            Ok(())
        } else {
            Err(PageError(Problem {
                status: StatusCode::FORBIDDEN,
                code: "csrf_token_invalid",
                message: "This form's security token is missing or out of date, so nothing was changed. Go back, \
                          reload the page and try again."
                    .to_owned(),
                fields: Vec::new(),
            }))
        }
    }
}

impl FromRequestParts<Dashboard> for Signed {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, dashboard: &Dashboard) -> Result<Self, Self::Rejection> {
        let client = Client::of(parts, dashboard);
        let active = match &client.session_token {
            Some(token) => dashboard.engine.session(token).await.map_err(|e| PageError::from(e).into_response())?,
            None => None,
        };
        let Some(active) = active else {
            if parts.method == Method::GET || parts.method == Method::HEAD {
                // The path as the browser asked it: inside the nested router `parts.uri` has lost
                // its `/dashboard`.
                let original = parts.extensions.get::<OriginalUri>().map_or(&parts.uri, |o| &o.0);
                let here = original.path_and_query().map_or("/dashboard", |p| p.as_str());
                let next: String = form_urlencoded::byte_serialize(here.as_bytes()).collect();
                return Err(see_other(&format!("/dashboard/sign-in?next={next}")));
            }
            return Err(render::refusal(
                StatusCode::UNAUTHORIZED,
                "session_required",
                "Your session has ended, so nothing was changed. Sign in again and retry.",
            ));
        };
        let principal = dashboard.engine.keygate.user_principal(&active, client.origin());
        let csrf = dashboard.engine.keygate.csrf_token(&active.session);
        Ok(Self { active, principal, csrf })
    }
}

#[derive(Template)]
#[template(path = "sign_in.html")]
struct SignInPage {
    csrf: String,
    email: String,
    next: String,
    /// What went wrong, and its stable code.
    error: Option<(String, &'static str)>,
}

/// Where to go after signing in: a path of the dashboard only — never another site (an open
/// redirect would lend keygate's name to a phishing page) nor, through dot segments, another
/// part of this one. Checked as sent and as decoded once and twice, since a browser resolves
/// `%2e%2e` and a proxy may decode again.
fn safe_next(next: Option<&str>) -> String {
    const HOME: &str = "/dashboard/api-keys";
    let Some(next) = next else { return HOME.to_owned() };
    let once = percent_decode(next);
    let twice = percent_decode(&once);
    let safe = |path: &str| {
        (path == "/dashboard" || path.starts_with("/dashboard/") || path.starts_with("/dashboard?"))
            && !path.contains("//")
            && !path.contains('\\')
            && !path.chars().any(char::is_control)
            && !path.split(['/', '?', '#']).any(|segment| segment == ".." || segment == ".")
    };
    if [next, once.as_str(), twice.as_str()].into_iter().all(safe) { next.to_owned() } else { HOME.to_owned() }
}

/// `%XX` escapes decoded (invalid ones kept as written); not UTF-8-strict, for checking only.
fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        if bytes[i] == b'%'
            && let (Some(Some(hi)), Some(Some(lo))) =
                (bytes.get(i + 1).map(|b| hex(*b)), bytes.get(i + 2).map(|b| hex(*b)))
        {
            out.push(u8::try_from(hi * 16 + lo).unwrap_or(b'?'));
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn random_token() -> Result<String, Error> {
    random_hex(32)
}

/// The sign-in form, with a fresh double-submitted CSRF token.
fn sign_in_form(
    client: &Client,
    status: StatusCode,
    email: String,
    next: String,
    error: Option<(String, &'static str)>,
) -> Response {
    let token = match random_token() {
        Ok(t) => t,
        Err(e) => return PageError::from(e).into_response(),
    };
    let code = error.as_ref().map(|(_, code)| *code);
    let mut response = coded(page(status, &SignInPage { csrf: token.clone(), email, next, error }), code);
    response.headers_mut().append(header::SET_COOKIE, client.cookie(client.sign_in_cookie_name(), Some(&token)));
    response
}

/// Query of the sign-in page.
#[derive(serde::Deserialize)]
pub struct NextParam {
    next: Option<String>,
}

/// `GET /dashboard/sign-in`.
pub async fn sign_in_page(client: Client, Query(q): Query<NextParam>) -> Response {
    sign_in_form(&client, StatusCode::OK, String::new(), safe_next(q.next.as_deref()), None)
}

/// `POST /dashboard/sign-in`: email and password. One message for an unknown email and a wrong
/// password; throttled per address and per email (the engine's).
pub async fn sign_in(State(dashboard): State<Dashboard>, client: Client, body: Bytes) -> Response {
    let form = FormData::parse(&body);
    let email = form.text("email").trim().to_owned();
    let next = safe_next(form.get("next"));
    if !client.sign_in_form_is_ours(&form) {
        return sign_in_form(
            &client,
            StatusCode::FORBIDDEN,
            email,
            next,
            Some((
                "This sign-in form is out of date or did not come from this page; try again.".into(),
                "csrf_token_invalid",
            )),
        );
    }
    let password = form.text("password").to_owned();
    match dashboard.engine.sign_in(&email, password, client.ip, client.user_agent.clone()).await {
        Ok(signed_in) => client.start_session(&signed_in.token, &next),
        Err(Error::InvalidCredentials) => sign_in_form(
            &client,
            StatusCode::UNAUTHORIZED,
            email,
            next,
            Some(("Incorrect email or password.".into(), "invalid_credentials")),
        ),
        Err(e) => {
            let problem = Problem::from_error(e);
            sign_in_form(&client, problem.status, email, next, Some((problem.message, problem.code)))
        }
    }
}

/// `POST /dashboard/sign-out`: ends this session and clears the cookie.
pub async fn sign_out(State(dashboard): State<Dashboard>, client: Client, signed: Signed, body: Bytes) -> Response {
    let form = FormData::parse(&body);
    if let Err(e) = signed.accept_form_unmetered(&dashboard, &form) {
        return e.into_response();
    }
    if let Some(token) = &client.session_token
        && let Err(e) = dashboard.engine.keygate.sign_out(token).await
    {
        return PageError::from(e).into_response();
    }
    let mut response = see_other("/dashboard/sign-in");
    response.headers_mut().append(header::SET_COOKIE, client.cookie(client.session_cookie_name(), None));
    response
}

/// One row of the sessions page.
struct SessionRow {
    id: String,
    created_at: String,
    last_seen_at: String,
    ip: String,
    user_agent: String,
    current: bool,
}

#[derive(Template)]
#[template(path = "sessions.html")]
struct SessionsPage {
    chrome: Chrome,
    sessions: Vec<SessionRow>,
    password_changed: bool,
}

/// Query of the sessions page.
#[derive(serde::Deserialize)]
pub struct SessionsQuery {
    password: Option<String>,
}

/// `GET /dashboard/sessions`: where this user is signed in.
pub async fn sessions_page(
    State(dashboard): State<Dashboard>,
    signed: Signed,
    Query(q): Query<SessionsQuery>,
) -> Result<Response, PageError> {
    let sessions = dashboard.engine.keygate.user_sessions(&signed.active.account, signed.active.user.id).await?;
    let rows = sessions
        .iter()
        .map(|s| SessionRow {
            id: s.id.to_string(),
            created_at: render::when(Some(s.created_at)),
            last_seen_at: render::when(Some(s.last_seen_at)),
            ip: s.ip.map(|ip| ip.to_string()).unwrap_or_default(),
            user_agent: s.user_agent.clone().unwrap_or_default(),
            current: s.id == signed.active.session.id,
        })
        .collect();
    let password_changed = q.password.as_deref() == Some("changed");
    Ok(page(StatusCode::OK, &SessionsPage { chrome: signed.chrome("sessions"), sessions: rows, password_changed }))
}

/// `POST /dashboard/sessions/{id}/revoke`: ends one of the user's own sessions.
pub async fn revoke_session(
    State(dashboard): State<Dashboard>,
    signed: Signed,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Response, PageError> {
    signed.accept_form_unmetered(&dashboard, &FormData::parse(&body))?;
    dashboard.engine.keygate.revoke_user_session(&signed.active.account, signed.active.user.id, &id).await?;
    let to = if id == signed.active.session.id.to_string() { "/dashboard/sign-in" } else { "/dashboard/sessions" };
    Ok(see_other(to))
}

#[derive(Template)]
#[template(path = "link.html")]
struct LinkPage {
    csrf: String,
    token: String,
}

/// Query of a sign-in link.
#[derive(serde::Deserialize)]
pub struct LinkParam {
    #[serde(default)]
    token: String,
}

/// `GET /dashboard/sign-in/link?token=…`: a page with one button that signs in. The GET uses
/// nothing up (a mail scanner or a link preview that fetches it spends no link); the button's
/// POST does.
pub async fn link_page(client: Client, Query(q): Query<LinkParam>) -> Response {
    let token = match random_token() {
        Ok(t) => t,
        Err(e) => return PageError::from(e).into_response(),
    };
    let mut response = page(StatusCode::OK, &LinkPage { csrf: token.clone(), token: q.token });
    response.headers_mut().append(header::SET_COOKIE, client.cookie(client.sign_in_cookie_name(), Some(&token)));
    response
}

/// `POST /dashboard/sign-in/link`: signs in with the link's token, once; a user without a
/// password goes on to set one.
pub async fn link_sign_in(State(dashboard): State<Dashboard>, client: Client, body: Bytes) -> Response {
    let form = FormData::parse(&body);
    let next = "/dashboard/api-keys".to_owned();
    if !client.sign_in_form_is_ours(&form) {
        return sign_in_form(
            &client,
            StatusCode::FORBIDDEN,
            String::new(),
            next,
            Some((
                "This sign-in form is out of date or did not come from this page; open the link again.".into(),
                "csrf_token_invalid",
            )),
        );
    }
    // Whoever is signed in here is signed out first: the link is someone's, maybe not theirs,
    // and a session left open behind it would be forgotten.
    if let Some(token) = &client.session_token
        && let Err(e) = dashboard.engine.keygate.sign_out(token).await
    {
        return PageError::from(e).into_response();
    }
    match dashboard.engine.sign_in_with_link(form.text("token"), client.ip, client.user_agent.clone()).await {
        Ok(signed_in) => {
            let to = if signed_in.user.has_password { "/dashboard/api-keys" } else { "/dashboard/password" };
            client.start_session(&signed_in.token, to)
        }
        Err(Error::InvalidCredentials) => sign_in_form(
            &client,
            StatusCode::UNAUTHORIZED,
            String::new(),
            next,
            Some((
                "This sign-in link is not valid: it was used already or has expired. Ask an admin for a new one."
                    .into(),
                "invalid_credentials",
            )),
        ),
        Err(e) => {
            let problem = Problem::from_error(e);
            sign_in_form(&client, problem.status, String::new(), next, Some((problem.message, problem.code)))
        }
    }
}

#[derive(Template)]
#[template(path = "password.html")]
struct PasswordPage {
    chrome: Chrome,
    has_password: bool,
    problem: Option<Problem>,
}

/// `GET /dashboard/password`: set (after a sign-in link) or change one's own password.
pub async fn password_page(signed: Signed) -> Response {
    let has_password = signed.active.user.has_password;
    page(StatusCode::OK, &PasswordPage { chrome: signed.chrome("sessions"), has_password, problem: None })
}

/// `POST /dashboard/password`: every other session of the user ends; this browser gets a new
/// one.
pub async fn set_password(
    State(dashboard): State<Dashboard>,
    client: Client,
    signed: Signed,
    body: Bytes,
) -> Result<Response, PageError> {
    let form = FormData::parse(&body);
    signed.accept_form_unmetered(&dashboard, &form)?;
    let new = form.text("password").to_owned();
    let failed = |problem: Problem| {
        let has_password = signed.active.user.has_password;
        let code = Some(problem.code);
        Ok(coded(
            page(
                problem.status,
                &PasswordPage { chrome: signed.chrome("sessions"), has_password, problem: Some(problem) },
            ),
            code,
        ))
    };
    if new != form.text("password_confirmation") {
        return failed(Problem::from_error(Error::field("password_confirmation", "does not match the new password")));
    }
    let current = form.get("current_password").map(str::to_owned);
    match dashboard.engine.set_own_password(&signed.active, current, new, client.origin()).await {
        Ok(signed_in) => {
            let mut response = see_other("/dashboard/sessions?password=changed");
            response
                .headers_mut()
                .append(header::SET_COOKIE, client.cookie(client.session_cookie_name(), Some(&signed_in.token)));
            Ok(response)
        }
        Err(Error::InvalidCredentials) => failed(Problem {
            status: StatusCode::UNAUTHORIZED,
            code: "invalid_credentials",
            message: "The current password is not right.".into(),
            fields: Vec::new(),
        }),
        Err(e) => failed(Problem::from_error(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_stays_on_the_dashboard() {
        for ok in
            ["/dashboard", "/dashboard/audit", "/dashboard/api-keys?name=crm%20sync&status=active", "/dashboard?x=1"]
        {
            assert_eq!(safe_next(Some(ok)), ok);
        }
        for bad in [
            "//evil.example/",
            "https://evil.example/",
            "/dashboard/../v1/api-keys",
            "/dashboard/%2e%2e/%2e%2e/v1/account",
            "/dashboard/%252e%252e/v1/account",
            "/dashboard/./x",
            "/\\evil.example",
            "/dashboard/%5c%5cevil",
            "/dashboard//evil",
            "/dashboard/%2f%2fevil",
            "/dashboardx",
            "/dashboard/x\r\nSet-Cookie: a=b",
            "/dashboard/x%0d%0aSet-Cookie:%20a=b",
            "",
        ] {
            assert_eq!(safe_next(Some(bad)), "/dashboard/api-keys", "{bad:?}");
        }
        assert_eq!(safe_next(None), "/dashboard/api-keys");
    }
}
