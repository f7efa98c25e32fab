//! Users: the dashboard logins of an account (SPEC §8), each with a role —
//! owner > admin > developer > viewer. An account always keeps one owner (the store refuses the
//! change that would leave none, atomically).
//!
//! No escalation through a user (SPEC §4): a user acts with its role's scopes
//! ([`role_scopes`]) from anywhere, without an expiry, and may make keys up to the configured
//! maximum rate limit, so only a live key without an IP or expiry bound and with that maximum rate
//! limit may create or change users, and only for a role whose scopes it holds itself (an owner
//! needs an unrestricted principal). Otherwise 403 `insufficient_scope` naming the bound
//! (`exceeds`); a tenant-scoped key, which users are outside of, gets 403 `tenant_not_allowed`.
//! The store re-checks the role it was given under the account's lock, so a concurrent change
//! of the user answers 409 rather than acting on a role that was never checked. Emails are unique per account, compared
//! without case; a duplicate is 409. Passwords are hashed with argon2id ([`crate::password`]) and
//! never written anywhere else, audit included.

use keygate_domain::model::{Role, User};
use keygate_domain::scope::{self, Catalog};
use keygate_domain::{Scope, UserId, time};
use serde::Deserialize;
use serde_json::{Map, Value, json};
use utoipa::{IntoParams, ToSchema};

use super::{PageParams, Principal, Validator, diff, fields, paginate};
use crate::error::{Error, Exceeds};
use crate::keygate::Keygate;
use crate::password::Passwords;

/// Resources only admins and owners write: the account itself, its tenants, its users, its
/// audit log and billing. A developer reads them and writes everything else.
const MANAGEMENT: &[&str] = &["account", "audit", "billing", "tenants", "users"];

/// The scopes `role` acts with in an account that sees `catalog` (`operator`: the operator
/// account, whose catalog holds the operator-only resources). `None` = unrestricted (an owner).
///
/// - viewer: every `read` scope;
/// - developer: every scope but the writes of [`MANAGEMENT`] resources and the operator's;
/// - admin: every scope but the operator's;
/// - owner: everything.
#[must_use]
pub fn role_scopes(role: Role, catalog: &Catalog, operator: bool) -> Option<Vec<Scope>> {
    if role == Role::Owner {
        return None;
    }
    let mut out = Vec::new();
    for entry in catalog.visible(operator).filter(|e| !e.operator_only) {
        for action in &entry.actions {
            let keep = match role {
                Role::Viewer => action == "read",
                Role::Developer => !MANAGEMENT.contains(&entry.resource.as_str()) || action == "read",
                Role::Admin | Role::Owner => true,
            };
            if keep && let Ok(s) = format!("{}:{action}", entry.resource).parse::<Scope>() {
                out.push(s);
            }
        }
    }
    Some(out)
}

#[derive(Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateUserRequest {
    /// The sign-in email; unique in the account, compared without case.
    #[schema(
        example = "ada@example.com",
        min_length = 3,
        max_length = 254,
        pattern = "^[^\\s@\\u0000-\\u001F\\u007F-\\u009F\\u00AD\\u200B-\\u200F\\u202A-\\u202E\\u2060-\\u206F\\uFEFF]+@[^\\s@.\\u0000-\\u001F\\u007F-\\u009F\\u00AD\\u200B-\\u200F\\u202A-\\u202E\\u2060-\\u206F\\uFEFF][^\\s@\\u0000-\\u001F\\u007F-\\u009F\\u00AD\\u200B-\\u200F\\u202A-\\u202E\\u2060-\\u206F\\uFEFF]*\\.[^\\s@\\u0000-\\u001F\\u007F-\\u009F\\u00AD\\u200B-\\u200F\\u202A-\\u202E\\u2060-\\u206F\\uFEFF]*[^\\s@.\\u0000-\\u001F\\u007F-\\u009F\\u00AD\\u200B-\\u200F\\u202A-\\u202E\\u2060-\\u206F\\uFEFF]$"
    )]
    pub email: String,
    /// `owner`, `admin`, `developer` or `viewer`.
    #[schema(example = "developer", pattern = "^(owner|admin|developer|viewer)$")]
    pub role: String,
    /// 12–256 characters. Without one, the user cannot sign in until a password is set.
    #[schema(min_length = 12, max_length = 256, format = Password)]
    pub password: Option<String>,
}

#[derive(Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateUserRequest {
    #[schema(
        min_length = 3,
        max_length = 254,
        pattern = "^[^\\s@\\u0000-\\u001F\\u007F-\\u009F\\u00AD\\u200B-\\u200F\\u202A-\\u202E\\u2060-\\u206F\\uFEFF]+@[^\\s@.\\u0000-\\u001F\\u007F-\\u009F\\u00AD\\u200B-\\u200F\\u202A-\\u202E\\u2060-\\u206F\\uFEFF][^\\s@\\u0000-\\u001F\\u007F-\\u009F\\u00AD\\u200B-\\u200F\\u202A-\\u202E\\u2060-\\u206F\\uFEFF]*\\.[^\\s@\\u0000-\\u001F\\u007F-\\u009F\\u00AD\\u200B-\\u200F\\u202A-\\u202E\\u2060-\\u206F\\uFEFF]*[^\\s@.\\u0000-\\u001F\\u007F-\\u009F\\u00AD\\u200B-\\u200F\\u202A-\\u202E\\u2060-\\u206F\\uFEFF]$"
    )]
    pub email: Option<String>,
    #[schema(pattern = "^(owner|admin|developer|viewer)$")]
    pub role: Option<String>,
    /// A new password (12–256 characters); every session of the user ends.
    #[schema(min_length = 12, max_length = 256, format = Password)]
    pub password: Option<String>,
}

/// Never prints the password.
impl std::fmt::Debug for CreateUserRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CreateUserRequest")
            .field("email", &self.email)
            .field("role", &self.role)
            .field("password", &self.password.as_ref().map(|_| "…"))
            .finish()
    }
}

/// Never prints the password.
impl std::fmt::Debug for UpdateUserRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpdateUserRequest")
            .field("email", &self.email)
            .field("role", &self.role)
            .field("password", &self.password.as_ref().map(|_| "…"))
            .finish()
    }
}

#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListUsersParams {
    /// 1–100, default 20.
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<u32>,
    /// `next_cursor` of the previous page.
    #[param(pattern = "^usr_[0-7][0-9A-HJKMNP-TV-Z]{25}$")]
    pub cursor: Option<String>,
}

/// An email address as a sign-in name ([`fields::EMAIL`]), kept as written.
fn email(v: &mut Validator, field: &str, email: &str) -> String {
    if !fields::is_email(email) {
        v.error(field, "must be an email address like ada@example.com");
    }
    email.to_owned()
}

fn role(v: &mut Validator, field: &str, role: &str) -> Role {
    role.parse::<Role>().unwrap_or_else(|_| {
        v.error(field, "must be one of owner, admin, developer, viewer");
        Role::Viewer
    })
}

fn password(v: &mut Validator, field: &str, password: &str) {
    if let Err(m) = Passwords::check_rules(password) {
        v.error(field, m);
    }
}

impl Keygate {
    /// The no-escalation rule for users: `p` may give a user `role` only if it holds every scope
    /// of that role and has no bound a user would not have.
    pub(crate) fn ensure_may_grant(&self, p: &Principal, role: Role) -> Result<(), Error> {
        let refuse = |exceeds| Err(Error::Escalation { exceeds, required_scope: None });
        p.ensure_live()?;
        if p.tenant_ids.is_some() {
            return refuse(Exceeds::TenantIds);
        }
        if p.allowed_ips.is_some() {
            return refuse(Exceeds::AllowedIps);
        }
        if p.expires_at.is_some() {
            return refuse(Exceeds::ExpiresAt);
        }
        // A user may create keys up to the configured maximum rate limit.
        if p.max_rate_limit.is_some_and(|max| max < self.limits.max_key_rate_limit_per_minute) {
            return refuse(Exceeds::RateLimit);
        }
        let wanted = role_scopes(role, &self.catalog, p.account.operator);
        if let Err(missing) = scope::within(wanted.as_deref(), p.scopes.as_deref()) {
            return Err(Error::Escalation { exceeds: Exceeds::Scopes, required_scope: Some(missing) });
        }
        // SPEC §8: an admin manages users below admin; only an owner acts on admins and owners.
        // Among keys only an unrestricted one stands for an owner, so a key an admin made —
        // holding every scope an admin holds — cannot act on admins either.
        let owner = match p.role {
            Some(mine) => mine == Role::Owner,
            None => p.scopes.is_none(),
        };
        let below_own_role = p.role.is_none_or(|mine| role < mine);
        if !owner && (role >= Role::Admin || !below_own_role) {
            return Err(Error::Escalation { exceeds: Exceeds::Role, required_scope: None });
        }
        Ok(())
    }

    async fn load_user(&self, p: &Principal, id: &str) -> Result<User, Error> {
        let id: UserId = id.parse().map_err(|_| Error::NotFound("user"))?;
        self.store.get_user(p.account.id, id).await?.ok_or(Error::NotFound("user"))
    }

    /// Creates a user of `p`'s account.
    ///
    /// # Errors
    /// 422 for a bad email, role or password; 403 when `p` may not give that role
    /// ([`Keygate::ensure_may_grant`]); 409 when the email is taken in the account.
    pub async fn create_user(&self, p: &Principal, req: CreateUserRequest) -> Result<User, Error> {
        p.ensure_account_wide()?;
        let mut v = Validator::default();
        let email = email(&mut v, "email", &req.email);
        let role = role(&mut v, "role", &req.role);
        if let Some(pw) = &req.password {
            password(&mut v, "password", pw);
        }
        v.finish()?;
        self.ensure_may_grant(p, role)?;
        let hash = match req.password {
            Some(pw) => Some(self.passwords.hash(pw).await?),
            None => None,
        };
        let now = time::now();
        let user = User {
            id: UserId::generate(),
            account_id: p.account.id,
            email,
            role,
            has_password: hash.is_some(),
            created_at: now,
            updated_at: now,
            last_sign_in_at: None,
        };
        let audit = p.audit(
            "user.created",
            "user",
            user.id,
            json!({"email": user.email, "role": user.role.as_str(), "has_password": user.has_password}),
        );
        self.store.create_user(&user, hash.as_deref(), &audit, u64::from(self.limits.max_users_per_account)).await?;
        Ok(user)
    }

    /// Users of `p`'s account, newest first.
    ///
    /// # Errors
    /// 422 for a bad limit, 400 for a bad cursor; 403 for a tenant-scoped principal (users are
    /// account-wide).
    pub async fn list_users(&self, p: &Principal, q: ListUsersParams) -> Result<(Vec<User>, Option<String>), Error> {
        p.ensure_account_wide()?;
        let (page, limit) = PageParams { limit: q.limit, cursor: q.cursor }.to_page(|c| c.parse::<UserId>().is_ok())?;
        let rows = self.store.list_users(p.account.id, &page).await?;
        Ok(paginate(rows, limit, |u| u.id.to_string()))
    }

    /// # Errors
    /// 404; 403 for a tenant-scoped principal.
    pub async fn get_user(&self, p: &Principal, id: &str) -> Result<User, Error> {
        p.ensure_account_wide()?;
        self.load_user(p, id).await
    }

    /// Changes a user's email, role or password. Changing a role needs the right to give both
    /// the old and the new one; a new password ends every session of the user.
    ///
    /// # Errors
    /// 404, 422, 403 as for [`Keygate::create_user`], 409 for a taken email or when the account
    /// would be left without an owner.
    pub async fn update_user(&self, p: &Principal, id: &str, req: UpdateUserRequest) -> Result<User, Error> {
        let old = self.get_user(p, id).await?;
        let mut v = Validator::default();
        let new_email = req.email.as_deref().map(|e| email(&mut v, "email", e));
        let new_role = req.role.as_deref().map(|r| role(&mut v, "role", r));
        if let Some(pw) = &req.password {
            password(&mut v, "password", pw);
        }
        v.finish()?;
        // Whoever changes a user could sign in as it (a new password, a new email): it must be
        // allowed to hold what the user holds, before and after.
        self.ensure_may_grant(p, old.role)?;
        let mut user = old.clone();
        if let Some(role) = new_role {
            self.ensure_may_grant(p, role)?;
            user.role = role;
        }
        if let Some(email) = new_email {
            user.email = email;
        }
        let mut changes = Map::new();
        diff(&mut changes, "email", json!(old.email), json!(user.email));
        diff(&mut changes, "role", json!(old.role.as_str()), json!(user.role.as_str()));
        if !changes.is_empty() {
            user.updated_at = time::now();
            let audit = p.audit("user.updated", "user", user.id, Value::Object(changes));
            if !self.store.update_user(&user, old.role, &audit).await? {
                return Err(Error::NotFound("user"));
            }
        }
        if let Some(pw) = req.password {
            let hash = self.passwords.hash(pw).await?;
            let audit = p.audit("user.password_changed", "user", user.id, json!({}));
            if !self.store.set_password(user.account_id, user.id, user.role, Some(&hash), &audit).await? {
                return Err(Error::NotFound("user"));
            }
            user.has_password = true;
            user.updated_at = time::now();
        }
        Ok(user)
    }

    /// Deletes a user and ends its sessions.
    ///
    /// # Errors
    /// 404; 403 as for [`Keygate::create_user`] (for the user's role); 409 for the account's last
    /// owner.
    pub async fn delete_user(&self, p: &Principal, id: &str) -> Result<(), Error> {
        let user = self.get_user(p, id).await?;
        self.ensure_may_grant(p, user.role)?;
        let audit = p.audit("user.deleted", "user", user.id, json!({"email": user.email, "role": user.role.as_str()}));
        if self.store.delete_user(user.account_id, user.id, user.role, &audit).await? {
            Ok(())
        } else {
            Err(Error::NotFound("user"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scopes(role: Role) -> Vec<String> {
        role_scopes(role, &Catalog::default(), false).unwrap_or_default().iter().map(ToString::to_string).collect()
    }

    #[test]
    fn roles_nest_and_only_owners_are_unrestricted() {
        let (viewer, developer, admin) = (scopes(Role::Viewer), scopes(Role::Developer), scopes(Role::Admin));
        assert!(viewer.iter().all(|s| s.ends_with(":read")));
        assert!(viewer.contains(&"users:read".to_owned()) && viewer.contains(&"calls:read".to_owned()));
        assert!(developer.contains(&"api_keys:write".to_owned()) && developer.contains(&"sms:send".to_owned()));
        for management in ["tenants:write", "users:write", "account:write", "billing:write"] {
            assert!(!developer.contains(&management.to_owned()), "{management}");
            assert!(admin.contains(&management.to_owned()), "{management}");
        }
        assert!(viewer.iter().all(|s| developer.contains(s)) && developer.iter().all(|s| admin.contains(s)));
        assert!(!admin.iter().any(|s| s.starts_with("accounts:") || s.starts_with("keys:")), "operator scopes");
        assert_eq!(role_scopes(Role::Owner, &Catalog::default(), false), None);
    }

    #[test]
    fn requests_never_print_their_password() {
        let create =
            CreateUserRequest { email: "a@b.c".into(), role: "owner".into(), password: Some("hunter2hunter2".into()) };
        let update = UpdateUserRequest { password: Some("hunter2hunter2".into()), ..UpdateUserRequest::default() };
        assert!(!format!("{create:?}{update:?}").contains("hunter2"));
    }

    #[test]
    fn emails() {
        for ok in ["ada@example.com", "Ada.Lovelace+dash@Example.co.uk", "a@b.c"] {
            let mut v = Validator::default();
            let _ = email(&mut v, "email", ok);
            assert!(v.errors.is_empty(), "{ok}");
        }
        for bad in [
            "",
            "ada",
            "@example.com",
            "ada@",
            "ada@example",
            "ada@@example.com",
            "a da@example.com",
            "ada@.com",
            "ada@example.com.",
            " ada@example.com",
            "ada@exa\u{7}mple.com",
            "owner\u{200b}@example.com",
            "\u{202e}owner@example.com",
            "owner@example.com\u{ad}",
        ] {
            let mut v = Validator::default();
            let _ = email(&mut v, "email", bad);
            assert_eq!(v.errors.len(), 1, "{bad}");
        }
    }
}
