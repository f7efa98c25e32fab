//! Reading usage and the request log (SPEC §8): requests per UTC day and outcome of one key, one
//! tenant or the whole account (from the usage counters), and the account's requests, newest
//! first. Reads with no rules beyond visibility: a key's usage is shown to whoever may see the
//! key ([`Keygate::get_key`]), a tenant's to whoever may see the tenant, the account's to an
//! account-wide principal; the listing to any principal of the account, narrowed to its tenants
//! when it is tenant-scoped (SPEC §4).

use std::collections::HashMap;

use chrono::{DateTime, Duration, Utc};
use keygate_domain::{KeyId, time};
use keygate_store::{RequestFilter, RequestRecord, UsageFilter, UsageRow};
use serde::Deserialize;
use utoipa::IntoParams;

use super::{PageParams, Principal, paginate, tenants_within};
use crate::error::Error;
use crate::keygate::Keygate;

/// The window `/usage` covers when `since` is not given.
const DEFAULT_USAGE_WINDOW: Duration = Duration::days(30);

#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct UsageParams {
    /// The first day counted is the UTC day of this time (RFC 3339); default 30 days before
    /// `until`.
    pub since: Option<DateTime<Utc>>,
    /// Requests before this time (RFC 3339), whose UTC day is the last counted; default now.
    /// Usage is counted per whole UTC day: a day is in the answer when it overlaps
    /// `[since, until)`.
    pub until: Option<DateTime<Utc>>,
}

#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListRequestsParams {
    /// Requests made with this key (`key_…`).
    #[param(pattern = "^key_[0-7][0-9A-HJKMNP-TV-Z]{25}$")]
    pub key_id: Option<String>,
    /// Requests answered with this HTTP status.
    #[param(minimum = 0, maximum = 65535)]
    pub status: Option<u16>,
    /// Requests at or after this time (RFC 3339).
    pub since: Option<DateTime<Utc>>,
    /// Requests before this time (RFC 3339).
    pub until: Option<DateTime<Utc>>,
    /// 1–100, default 20.
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<u32>,
    /// `next_cursor` of the previous page.
    #[param(pattern = "^rl_[0-9A-Z]{26}$")]
    pub cursor: Option<String>,
}

impl Keygate {
    /// Requests of one visible key per UTC day and outcome, newest day first.
    ///
    /// # Errors
    /// 404 when the key is not visible to `p`.
    pub async fn key_usage(&self, p: &Principal, id: &str, q: UsageParams) -> Result<Vec<UsageRow>, Error> {
        let key = self.get_key(p, id).await?;
        self.usage(p, UsageFilter { key_id: Some(key.id), tenant_id: None }, q).await
    }

    /// Requests made for one visible tenant, by any key, per UTC day and outcome, newest day
    /// first.
    ///
    /// # Errors
    /// 404 when the account has no such tenant; 403 `tenant_not_allowed` when `p` is scoped to
    /// other tenants (as reading the tenant is).
    pub async fn tenant_usage(&self, p: &Principal, id: &str, q: UsageParams) -> Result<Vec<UsageRow>, Error> {
        let tenant = self.get_tenant(p, id).await?;
        self.usage(p, UsageFilter { key_id: None, tenant_id: Some(tenant.id) }, q).await
    }

    /// Every request of the account per UTC day and outcome, newest day first.
    ///
    /// # Errors
    /// 403 `tenant_not_allowed` for a tenant-scoped principal (it sees its tenants' usage).
    pub async fn account_usage(&self, p: &Principal, q: UsageParams) -> Result<Vec<UsageRow>, Error> {
        p.ensure_account_wide()?;
        self.usage(p, UsageFilter::default(), q).await
    }

    async fn usage(&self, p: &Principal, filter: UsageFilter, q: UsageParams) -> Result<Vec<UsageRow>, Error> {
        // By default up to the end of the current second: the request made a moment ago counts.
        let until = q.until.unwrap_or_else(|| time::truncate(time::now()) + Duration::seconds(1));
        let since = q.since.unwrap_or(until - DEFAULT_USAGE_WINDOW);
        // An empty window (`since` at or after `until`) holds no requests.
        if since >= until {
            return Ok(Vec::new());
        }
        // `until` is exclusive: its own day counts only when the window reaches into it.
        let last = (until - Duration::nanoseconds(1)).date_naive();
        Ok(self.store.usage(p.account.id, filter, since.date_naive(), last).await?)
    }

    /// The account's request log, newest first.
    ///
    /// # Errors
    /// 400 for a bad cursor, 422 for a bad limit, key id or time window.
    pub async fn list_requests(
        &self,
        p: &Principal,
        q: ListRequestsParams,
    ) -> Result<(Vec<RequestRecord>, Option<String>), Error> {
        let (page, limit) = PageParams { limit: q.limit, cursor: q.cursor }.to_page(RequestRecord::is_id)?;
        let key_id =
            q.key_id.map(|k| k.parse::<KeyId>().map_err(|e| Error::field("key_id", e.to_string()))).transpose()?;
        let filter = RequestFilter { key_id, status: q.status, since: q.since, until: q.until };
        let found = self.store.list_requests(p.account.id, &filter, &page).await?;
        let (rows, next) = paginate(found.records, limit, |r| r.id.clone());
        // A listing that stopped at the store's work budget comes back short, even empty, with
        // where to go on.
        let next = next.or(found.resume);
        let Some(own) = p.tenant_ids.as_deref() else { return Ok((rows, next)) };
        // A tenant-scoped caller sees the requests made for its tenants, and those without a
        // tenant made by keys it can see; nothing of other tenants (SPEC §4). As with keys, a page
        // may come back short.
        let mut visible_keys: HashMap<KeyId, bool> = HashMap::new();
        let mut out = Vec::with_capacity(rows.len());
        for r in rows {
            let shown = match (r.tenant_id, r.key_id) {
                (Some(t), _) => own.contains(&t),
                (None, Some(key)) => match visible_keys.get(&key) {
                    Some(v) => *v,
                    None => {
                        let v = self
                            .store
                            .get_key(p.account.id, key)
                            .await?
                            .is_some_and(|k| tenants_within(k.tenant_ids.as_deref(), Some(own)));
                        visible_keys.insert(key, v);
                        v
                    }
                },
                (None, None) => false,
            };
            if shown {
                out.push(r);
            }
        }
        Ok((out, next))
    }
}
