//! Tenants: a partner's end customers. `external_id` is the partner's own id, unique per account.
//!
//! A tenant-scoped key sees only its tenants: others of the account answer 403
//! `tenant_not_allowed` (check 10), others' tenants 404. Only a key for all tenants creates them.
//! Suspending twice (or unsuspending an active tenant) is a no-op that answers the tenant.

use keygate_domain::model::{Tenant, TenantStatus};
use keygate_domain::policy::AuthFailure;
use keygate_domain::{TenantId, time};
use keygate_store::TenantFilter;
use serde::Deserialize;
use serde_json::{Map, Value, json};
use utoipa::{IntoParams, ToSchema};

use super::{PageParams, Principal, Validator, about_tenants, diff, double_option, fields, merge_metadata, paginate};
use crate::error::Error;
use crate::keygate::Keygate;

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateTenantRequest {
    /// 1–200 characters, not only white space, no control characters.
    #[schema(
        example = "Northwind Clinic",
        min_length = 1,
        max_length = 200,
        pattern = "^[^\\u0000-\\u001F\\u007F-\\u009F\\u202A-\\u202E\\u2066-\\u2069]*[^\\s\\u0000-\\u001F\\u007F-\\u009F\\u202A-\\u202E\\u2066-\\u2069][^\\u0000-\\u001F\\u007F-\\u009F\\u202A-\\u202E\\u2066-\\u2069]*$"
    )]
    pub name: String,
    /// Your own id for this tenant (1–255 characters); unique within your account.
    #[schema(
        min_length = 1,
        max_length = 255,
        pattern = "^[^\\u0000-\\u001F\\u007F-\\u009F\\u202A-\\u202E\\u2066-\\u2069]*[^\\s\\u0000-\\u001F\\u007F-\\u009F\\u202A-\\u202E\\u2066-\\u2069][^\\u0000-\\u001F\\u007F-\\u009F\\u202A-\\u202E\\u2066-\\u2069]*$"
    )]
    pub external_id: Option<String>,
    #[schema(schema_with = fields::metadata_create)]
    pub metadata: Option<Map<String, Value>>,
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateTenantRequest {
    #[schema(
        min_length = 1,
        max_length = 200,
        pattern = "^[^\\u0000-\\u001F\\u007F-\\u009F\\u202A-\\u202E\\u2066-\\u2069]*[^\\s\\u0000-\\u001F\\u007F-\\u009F\\u202A-\\u202E\\u2066-\\u2069][^\\u0000-\\u001F\\u007F-\\u009F\\u202A-\\u202E\\u2066-\\u2069]*$"
    )]
    pub name: Option<String>,
    /// `null` removes it.
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<String>, min_length = 1, max_length = 255, pattern = "^[^\\u0000-\\u001F\\u007F-\\u009F\\u202A-\\u202E\\u2066-\\u2069]*[^\\s\\u0000-\\u001F\\u007F-\\u009F\\u202A-\\u202E\\u2066-\\u2069][^\\u0000-\\u001F\\u007F-\\u009F\\u202A-\\u202E\\u2066-\\u2069]*$")]
    pub external_id: Option<Option<String>>,
    /// Merged; a key set to `null` is removed.
    #[schema(schema_with = fields::metadata_patch)]
    pub metadata: Option<Map<String, Value>>,
}

#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListTenantsParams {
    /// `active` or `suspended`.
    #[param(pattern = "^(active|suspended)$")]
    pub status: Option<String>,
    pub external_id: Option<String>,
    /// 1–100, default 20.
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<u32>,
    /// `next_cursor` of the previous page.
    #[param(pattern = "^ten_[0-7][0-9A-HJKMNP-TV-Z]{25}$")]
    pub cursor: Option<String>,
}

fn external_id(v: &mut Validator, id: &str) -> String {
    v.text("external_id", id, 255)
}

impl Keygate {
    /// A tenant of `p`'s account within `p`'s tenant scope.
    async fn load_tenant(&self, p: &Principal, id: &str) -> Result<Tenant, Error> {
        let id: TenantId = id.parse().map_err(|_| Error::NotFound("tenant"))?;
        let tenant = self.store.get_tenant(p.account.id, id).await?.ok_or(Error::NotFound("tenant"))?;
        if p.tenant_ids.as_ref().is_some_and(|ids| !ids.contains(&tenant.id)) {
            return Err(AuthFailure::TenantNotAllowed.into());
        }
        Ok(tenant)
    }

    /// # Errors
    /// 403 for a tenant-scoped caller, 422, 409 on a duplicate `external_id`.
    pub async fn create_tenant(&self, p: &Principal, req: CreateTenantRequest) -> Result<Tenant, Error> {
        p.ensure_account_wide()?;
        p.ensure_live()?;
        let mut v = Validator::default();
        let name = v.name("name", &req.name);
        let external_id = req.external_id.as_deref().map(|e| external_id(&mut v, e));
        let metadata = req.metadata.unwrap_or_default();
        v.metadata("metadata", &metadata);
        v.finish()?;
        let now = time::now();
        let tenant = Tenant {
            id: TenantId::generate(),
            account_id: p.account.id,
            name,
            external_id,
            status: TenantStatus::Active,
            metadata,
            created_at: now,
            updated_at: now,
        };
        let audit = about_tenants(
            p.audit(
                "tenant.created",
                "tenant",
                tenant.id,
                json!({"name": tenant.name, "external_id": tenant.external_id, "metadata": tenant.metadata}),
            ),
            Some(vec![tenant.id]),
        );
        self.store.create_tenant(&tenant, &audit, u64::from(self.limits.max_tenants_per_account)).await?;
        Ok(tenant)
    }

    /// # Errors
    /// 422 for a bad filter, 400 for a bad cursor.
    pub async fn list_tenants(
        &self,
        p: &Principal,
        q: ListTenantsParams,
    ) -> Result<(Vec<Tenant>, Option<String>), Error> {
        let status = match q.status.as_deref() {
            None => None,
            Some(s) => {
                Some(TenantStatus::parse(s).ok_or_else(|| Error::field("status", "must be `active` or `suspended`"))?)
            }
        };
        let (page, limit) =
            PageParams { limit: q.limit, cursor: q.cursor }.to_page(|c| c.parse::<TenantId>().is_ok())?;
        let filter = TenantFilter { status, external_id: q.external_id };
        let rows = self.store.list_tenants(p.account.id, &filter, &page).await?;
        let (rows, next) = paginate(rows, limit, |t| t.id.to_string());
        let rows = rows.into_iter().filter(|t| p.tenant_ids.as_ref().is_none_or(|ids| ids.contains(&t.id))).collect();
        Ok((rows, next))
    }

    /// # Errors
    /// 404, or 403 outside the caller's tenant scope.
    pub async fn get_tenant(&self, p: &Principal, id: &str) -> Result<Tenant, Error> {
        self.load_tenant(p, id).await
    }

    /// # Errors
    /// 404, 403, 422, 409 on a duplicate `external_id`.
    pub async fn update_tenant(&self, p: &Principal, id: &str, req: UpdateTenantRequest) -> Result<Tenant, Error> {
        let old = self.load_tenant(p, id).await?;
        p.ensure_live()?;
        let mut t = old.clone();
        let mut v = Validator::default();
        if let Some(name) = &req.name {
            t.name = v.name("name", name);
        }
        if let Some(ext) = &req.external_id {
            t.external_id = ext.as_deref().map(|e| external_id(&mut v, e));
        }
        if let Some(patch) = req.metadata {
            merge_metadata(&mut t.metadata, patch);
            v.metadata("metadata", &t.metadata);
        }
        v.finish()?;
        let mut changes = Map::new();
        diff(&mut changes, "name", json!(old.name), json!(t.name));
        diff(&mut changes, "external_id", json!(old.external_id), json!(t.external_id));
        diff(&mut changes, "metadata", Value::Object(old.metadata.clone()), Value::Object(t.metadata.clone()));
        if changes.is_empty() {
            return Ok(old);
        }
        t.updated_at = time::now();
        let audit = about_tenants(p.audit("tenant.updated", "tenant", t.id, Value::Object(changes)), Some(vec![t.id]));
        self.store.update_tenant(&t, &audit).await?;
        Ok(t)
    }

    /// Suspends (`true`) or reactivates (`false`) a tenant.
    ///
    /// # Errors
    /// 404, or 403 outside the caller's tenant scope.
    pub async fn set_tenant_suspended(&self, p: &Principal, id: &str, suspended: bool) -> Result<Tenant, Error> {
        let mut t = self.load_tenant(p, id).await?;
        p.ensure_live()?;
        let status = if suspended { TenantStatus::Suspended } else { TenantStatus::Active };
        if t.status == status {
            return Ok(t);
        }
        t.status = status;
        t.updated_at = time::now();
        let action = if suspended { "tenant.suspended" } else { "tenant.unsuspended" };
        let audit =
            about_tenants(p.audit(action, "tenant", t.id, json!({"status": status.as_str()})), Some(vec![t.id]));
        self.store.update_tenant(&t, &audit).await?;
        Ok(t)
    }
}
