//! Reading the audit log of one account. Writing happens inside every other use case, in the
//! same transaction as the change it records. A tenant-scoped caller sees only events about its
//! own tenants (and keys within them); events about other tenants or the whole account do not
//! exist for it (SPEC §4).

use chrono::{DateTime, Utc};
use keygate_domain::EventId;
use keygate_domain::model::AuditEvent;
use keygate_store::AuditFilter;
use serde::Deserialize;
use utoipa::IntoParams;

use super::{PageParams, Principal, paginate, tenants_within};
use crate::error::Error;
use crate::keygate::Keygate;

#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListAuditParams {
    /// Exact action, e.g. `api_key.revoked`.
    pub action: Option<String>,
    /// Who acted: a key id, `cli` or `system`.
    pub actor_id: Option<String>,
    /// The object acted on.
    pub target_id: Option<String>,
    /// Events at or after this time (RFC 3339).
    pub since: Option<DateTime<Utc>>,
    /// Events before this time (RFC 3339).
    pub until: Option<DateTime<Utc>>,
    /// 1–100, default 20.
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<u32>,
    /// `next_cursor` of the previous page.
    #[param(pattern = "^evt_[0-7][0-9A-HJKMNP-TV-Z]{25}$")]
    pub cursor: Option<String>,
}

impl Keygate {
    /// # Errors
    /// 400 for a bad cursor, 422 for a bad limit.
    pub async fn list_audit_events(
        &self,
        p: &Principal,
        q: ListAuditParams,
    ) -> Result<(Vec<AuditEvent>, Option<String>), Error> {
        let (page, limit) =
            PageParams { limit: q.limit, cursor: q.cursor }.to_page(|c| c.parse::<EventId>().is_ok())?;
        let filter = AuditFilter {
            action: q.action,
            actor_id: q.actor_id,
            target_id: q.target_id,
            since: q.since,
            until: q.until,
        };
        let rows = self.store.list_audit_events(p.account.id, &filter, &page).await?;
        let (rows, next) = paginate(rows, limit, |e| e.id.to_string());
        // Events about other tenants, or about the account as a whole, do not exist for a
        // tenant-scoped caller (SPEC §4). As with keys, a page may come back short.
        Ok((
            rows.into_iter().filter(|e| tenants_within(e.tenant_ids.as_deref(), p.tenant_ids.as_deref())).collect(),
            next,
        ))
    }
}
