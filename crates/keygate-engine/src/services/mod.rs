//! Use cases: what keygate does, independent of HTTP.
//!
//! Handlers and the CLI both call these methods on [`Keygate`], so the rules (validation, no
//! escalation, audit records, account isolation) live in one place. Each method takes the
//! [`Principal`] acting, validates its input completely (every bad field reported at once),
//! checks it against the principal's own bounds, and writes through the store together with the
//! audit event. Objects of another account are reported as not found.

pub mod accounts;
pub mod audit;
pub mod fields;
pub mod keys;
pub mod operator;
pub mod requests;
pub mod sessions;
pub mod tenants;
pub mod users;

use ipnet::IpNet;
use keygate_domain::TenantId;
use keygate_domain::model::AuditEvent;
use keygate_store::Page;
use serde::{Deserialize, Deserializer};
use serde_json::{Map, Value};

use crate::error::{Error, FieldError};
pub use crate::principal::Principal;

/// Is `wanted` within `held`? (`None` = all tenants.) The one rule for what a tenant-scoped
/// principal may see and hand out: keys, audit events, request-log records (SPEC §4).
#[must_use]
pub fn tenants_within(wanted: Option<&[TenantId]>, held: Option<&[TenantId]>) -> bool {
    match (wanted, held) {
        (_, None) => true,
        (None, Some(_)) => false,
        (Some(w), Some(h)) => w.iter().all(|t| h.contains(t)),
    }
}

/// Is every entry of `wanted` inside some entry of `held`? (`None` = any IP.) The no-escalation
/// rule for allowlists, a key's and the account's (SPEC §4).
#[must_use]
pub fn ips_within(wanted: Option<&[IpNet]>, held: Option<&[IpNet]>) -> bool {
    match (wanted, held) {
        (_, None) => true,
        (None, Some(_)) => false,
        (Some(w), Some(h)) => w.iter().all(|net| h.iter().any(|outer| keygate_domain::ip::net_within(net, outer))),
    }
}

/// `event` marked as being about `tenants` (`None`: the account as a whole), so that
/// tenant-scoped callers see it only when those tenants are all theirs.
#[must_use]
pub fn about_tenants(mut event: AuditEvent, tenants: Option<Vec<TenantId>>) -> AuditEvent {
    event.tenant_ids = tenants;
    event
}

/// Distinguishes an absent field (`None`: leave as is / default) from an explicit `null`
/// (`Some(None)`).
///
/// # Errors
/// The value does not deserialize as `T`.
pub fn double_option<'de, T: Deserialize<'de>, D: Deserializer<'de>>(d: D) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

/// `limit` and `cursor` of every list.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct PageParams {
    /// 1–100, default 20.
    pub limit: Option<u32>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

impl PageParams {
    /// A store page asking for one row more than the limit, so the caller can tell whether
    /// another page exists. `parse_cursor` checks the cursor is an id of the listed kind.
    ///
    /// # Errors
    /// `limit` out of range (422) or a cursor that is not one of ours (400).
    pub fn to_page(&self, parse_cursor: impl Fn(&str) -> bool) -> Result<(Page, usize), Error> {
        let limit = self.limit.unwrap_or(20);
        if !(1..=100).contains(&limit) {
            return Err(Error::field("limit", "must be between 1 and 100"));
        }
        if let Some(c) = &self.cursor
            && !parse_cursor(c)
        {
            return Err(Error::InvalidRequest("The cursor is not valid; use next_cursor from a previous page.".into()));
        }
        Ok((Page { limit: limit + 1, before: self.cursor.clone() }, limit as usize))
    }
}

/// Cuts a page fetched with one extra row down to `limit`, returning the next cursor.
pub fn paginate<T>(mut rows: Vec<T>, limit: usize, id: impl Fn(&T) -> String) -> (Vec<T>, Option<String>) {
    if rows.len() > limit {
        rows.truncate(limit);
        let next = rows.last().map(id);
        (rows, next)
    } else {
        (rows, None)
    }
}

/// Collects field errors while validating a request.
#[derive(Debug, Default)]
pub struct Validator {
    pub errors: Vec<FieldError>,
}

impl Validator {
    pub fn error(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.errors.push(FieldError::new(field, message));
    }

    /// # Errors
    /// 422 with every error collected.
    pub fn finish(self) -> Result<(), Error> {
        if self.errors.is_empty() { Ok(()) } else { Err(Error::Validation(self.errors)) }
    }

    /// A display name ([`fields::TEXT`]): 1–`max` characters as sent, not only white space, no
    /// control characters; kept trimmed.
    pub fn text(&mut self, field: &str, text: &str, max: usize) -> String {
        if !fields::is_text(text, max) {
            self.error(
                field,
                format!(
                    "must be 1–{max} characters, not only spaces, without control or bidirectional-override characters"
                ),
            );
        }
        text.trim().to_owned()
    }

    /// A display name: [`Validator::text`] of at most 200 characters.
    pub fn name(&mut self, field: &str, name: &str) -> String {
        self.text(field, name, 200)
    }

    /// Metadata as Stripe bounds it: at most 50 keys of 1–40 characters, each value a string of at
    /// most 500 characters ([`fields::metadata_schema`]).
    pub fn metadata(&mut self, field: &str, metadata: &Map<String, Value>) {
        if metadata.len() > 50 {
            self.error(field, "may have at most 50 keys");
        }
        for (k, v) in metadata {
            if k.is_empty() || k.chars().count() > 40 {
                self.error(format!("{field}.{k}"), "keys must be 1–40 characters");
            }
            match v.as_str() {
                Some(text) if text.chars().count() <= 500 => {}
                Some(_) => self.error(format!("{field}.{k}"), "values must be at most 500 characters"),
                None => self.error(format!("{field}.{k}"), "values must be strings (send numbers as text)"),
            }
        }
    }

    /// An IP allowlist: addresses and CIDRs ([`fields::ip_entry_pattern`]), at most 100.
    pub fn ip_list(&mut self, field: &str, entries: &[String]) -> Vec<IpNet> {
        if entries.len() > 100 {
            self.error(field, "may have at most 100 entries");
        }
        let mut out = Vec::with_capacity(entries.len());
        for (i, e) in entries.iter().enumerate() {
            if !fields::is_ip_entry(e) {
                self.error(
                    format!("{field}[{i}]"),
                    format!("`{e}` is not an IP address or CIDR (like 203.0.113.7 or 10.0.0.0/8)"),
                );
                continue;
            }
            match keygate_domain::ip::parse_entry(e) {
                Ok(net) if !out.contains(&net) => out.push(net),
                Ok(_) => {}
                Err(m) => self.error(format!("{field}[{i}]"), m),
            }
        }
        out
    }
}

/// Merges a PATCH's `metadata` the way Stripe does: given keys are set, a key set to `null` is
/// removed.
pub fn merge_metadata(metadata: &mut Map<String, Value>, patch: Map<String, Value>) {
    for (k, val) in patch {
        if val.is_null() {
            metadata.remove(&k);
        } else {
            metadata.insert(k, val);
        }
    }
}

/// `{"from": old, "to": new}` when they differ, for audit `changes`.
pub fn diff(changes: &mut Map<String, Value>, field: &str, from: Value, to: Value) {
    if from != to {
        changes.insert(field.to_owned(), serde_json::json!({"from": from, "to": to}));
    }
}
