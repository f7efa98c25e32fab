//! Scopes (`resource:action`) and the catalog that declares which exist (SPEC §4).
//!
//! `write` implies `read` on the same resource; `resource:*` grants every action of it; other
//! actions (`sms:send`) grant only themselves. A key's scopes are either unrestricted (`None`)
//! or a list. Operator-only scopes (`accounts:*`, `keys:verify`) exist only for the operator
//! account.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// One `resource:action` pair, e.g. `calls:write`, `sms:send`, `tenants:*`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Scope {
    text: String,
    colon: usize,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a scope is `resource:action` in lowercase letters, digits and `_` (or `resource:*`)")]
pub struct InvalidScope;

fn is_word(s: &str) -> bool {
    !s.is_empty() && s.len() <= 64 && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

impl Scope {
    #[must_use]
    pub fn resource(&self) -> &str {
        &self.text[..self.colon]
    }

    #[must_use]
    pub fn action(&self) -> &str {
        &self.text[self.colon + 1..]
    }

    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Builds a scope from parts known to be valid (the catalog's own names).
    ///
    /// # Errors
    /// Either part is not a valid word.
    pub fn new(resource: &str, action: &str) -> Result<Self, InvalidScope> {
        format!("{resource}:{action}").parse()
    }

    /// Does holding `self` grant `required`?
    #[must_use]
    pub fn grants(&self, required: &Scope) -> bool {
        if self.resource() != required.resource() {
            return false;
        }
        match (self.action(), required.action()) {
            ("*", _) => true,
            (held, wanted) if held == wanted => true,
            ("write", "read") => true,
            _ => false,
        }
    }
}

impl FromStr for Scope {
    type Err = InvalidScope;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let colon = s.find(':').ok_or(InvalidScope)?;
        let (resource, action) = (&s[..colon], &s[colon + 1..]);
        if is_word(resource) && (action == "*" || is_word(action)) {
            Ok(Self { text: s.to_owned(), colon })
        } else {
            Err(InvalidScope)
        }
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl fmt::Debug for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl Serialize for Scope {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.text)
    }
}

impl<'de> Deserialize<'de> for Scope {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// A key's or caller's scopes: `None` is unrestricted.
pub type Scopes = Option<Vec<Scope>>;

/// Does a holder of `held` have `required`?
#[must_use]
pub fn grants(held: Option<&[Scope]>, required: &Scope) -> bool {
    held.is_none_or(|held| held.iter().any(|s| s.grants(required)))
}

/// The first scope of `wanted` that `held` does not cover, for the no-escalation rule: a key may
/// only give out what it holds. `None` (unrestricted) is within only `None`; `resource:*` is
/// within only `resource:*` or unrestricted. Returns `Ok` when `wanted` is within `held`.
///
/// # Errors
/// The scope (as text) that would be an escalation; `"*"` when unrestricted was asked for.
pub fn within(wanted: Option<&[Scope]>, held: Option<&[Scope]>) -> Result<(), String> {
    let Some(held) = held else { return Ok(()) };
    let Some(wanted) = wanted else { return Err("*".to_owned()) };
    match wanted.iter().find(|w| !grants(Some(held), w)) {
        Some(missing) => Err(missing.to_string()),
        None => Ok(()),
    }
}

/// Is `scope` one that only the operator account's keys can hold?
#[must_use]
pub fn is_operator_only(scope: &Scope) -> bool {
    OPERATOR_RESOURCES.iter().any(|(r, _, _)| *r == scope.resource())
}

/// One resource of the catalog with its actions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CatalogEntry {
    pub resource: String,
    pub actions: Vec<String>,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub group: String,
    /// Held only by keys of the operator account.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub operator_only: bool,
}

/// The scopes that exist. From config, with [`Catalog::default`] as SPEC §4's catalog.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Catalog {
    entries: Vec<CatalogEntry>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CatalogError {
    #[error("scope catalog entry `{0}`: resource and actions must be lowercase letters, digits and `_`")]
    BadName(String),
    #[error("scope catalog declares resource `{0}` twice")]
    Duplicate(String),
    #[error("scope catalog entry `{0}` has no actions")]
    NoActions(String),
    #[error("scope catalog entry `{0}` is reserved for the operator and cannot be redefined")]
    Reserved(String),
}

const OPERATOR_RESOURCES: &[(&str, &[&str], &str)] = &[
    ("accounts", &["read", "write"], "Partner accounts (operator only)"),
    ("keys", &["verify"], "Verify API keys for other services (operator only)"),
];

impl Catalog {
    /// A catalog from config entries, plus the built-in operator-only resources.
    ///
    /// # Errors
    /// Invalid names, duplicate resources, a resource without actions, or a redefinition of an
    /// operator resource.
    pub fn new(entries: Vec<CatalogEntry>) -> Result<Self, CatalogError> {
        let mut seen = std::collections::HashSet::new();
        for e in &entries {
            if !is_word(&e.resource) || !e.actions.iter().all(|a| is_word(a)) {
                return Err(CatalogError::BadName(e.resource.clone()));
            }
            if e.actions.is_empty() {
                return Err(CatalogError::NoActions(e.resource.clone()));
            }
            if OPERATOR_RESOURCES.iter().any(|(r, _, _)| *r == e.resource) {
                return Err(CatalogError::Reserved(e.resource.clone()));
            }
            if !seen.insert(e.resource.clone()) {
                return Err(CatalogError::Duplicate(e.resource.clone()));
            }
        }
        let mut entries = entries;
        entries.extend(OPERATOR_RESOURCES.iter().map(|(r, actions, d)| CatalogEntry {
            resource: (*r).to_owned(),
            actions: actions.iter().map(|a| (*a).to_owned()).collect(),
            description: (*d).to_owned(),
            group: "Operator".to_owned(),
            operator_only: true,
        }));
        Ok(Self { entries })
    }

    #[must_use]
    pub fn entries(&self) -> &[CatalogEntry] {
        &self.entries
    }

    /// The entries an account may see and grant.
    pub fn visible(&self, operator: bool) -> impl Iterator<Item = &CatalogEntry> {
        self.entries.iter().filter(move |e| operator || !e.operator_only)
    }

    /// May a key of this kind of account carry `scope`? The action must be declared (or `*`).
    #[must_use]
    pub fn allows(&self, scope: &Scope, operator: bool) -> bool {
        self.visible(operator).any(|e| {
            e.resource == scope.resource() && (scope.action() == "*" || e.actions.iter().any(|a| a == scope.action()))
        })
    }

    /// The SPEC §4 default: standard resources with `read`/`write` plus the action scopes.
    #[must_use]
    pub fn default_entries() -> Vec<CatalogEntry> {
        const RW: &[&str] = &["read", "write"];
        let table: &[(&str, &[&str], &str, &str)] = &[
            ("account", RW, "Account", "Account settings"),
            ("api_keys", RW, "Account", "API keys"),
            ("audit", RW, "Account", "Audit log"),
            ("billing", RW, "Account", "Billing"),
            ("balance", &["read"], "Account", "Account balance"),
            ("webhooks", RW, "Account", "Webhooks"),
            ("users", RW, "Account", "Dashboard users"),
            ("tenants", RW, "Tenants", "Tenants"),
            ("provisioning", RW, "Tenants", "Provisioning"),
            ("extensions", RW, "Voice", "Extensions"),
            ("call_flows", RW, "Voice", "Call flows"),
            ("queues", RW, "Voice", "Queues"),
            ("ring_groups", RW, "Voice", "Ring groups"),
            ("voicemail", RW, "Voice", "Voicemail"),
            ("calls", RW, "Voice", "Calls"),
            ("recordings", RW, "Voice", "Recordings"),
            ("trunks", RW, "Voice", "SIP trunks"),
            ("voice", &["send"], "Voice", "Send voice messages"),
            ("phone_numbers", RW, "Numbers", "Phone numbers"),
            ("port_requests", RW, "Numbers", "Port requests"),
            ("lookup", &["write"], "Numbers", "Number lookup"),
            ("messages", RW, "Messaging", "Messages"),
            ("faxes", RW, "Messaging", "Faxes"),
            ("campaigns", RW, "Messaging", "Campaigns"),
            ("sms", &["send"], "Messaging", "Send SMS"),
            ("email", &["verify"], "Messaging", "Verify email addresses"),
            ("two_fa", RW, "Verification", "Two-factor authentication"),
            ("validator", RW, "Verification", "Validator"),
            ("otp", &["send", "verify"], "Verification", "One-time passwords"),
            ("reports", &["read"], "Reports", "Reports"),
        ];
        table
            .iter()
            .map(|(resource, actions, group, description)| CatalogEntry {
                resource: (*resource).to_owned(),
                actions: actions.iter().map(|a| (*a).to_owned()).collect(),
                description: (*description).to_owned(),
                group: (*group).to_owned(),
                operator_only: false,
            })
            .collect()
    }
}

impl Default for Catalog {
    fn default() -> Self {
        #[expect(clippy::expect_used, reason = "the built-in table is valid; a unit test proves it")]
        Self::new(Self::default_entries()).expect("the default catalog is valid")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(x: &str) -> Scope {
        x.parse().unwrap_or_else(|_| panic!("bad scope {x}"))
    }

    #[test]
    fn write_implies_read_and_star_implies_all() {
        assert!(s("calls:write").grants(&s("calls:read")));
        assert!(!s("calls:read").grants(&s("calls:write")));
        assert!(s("calls:*").grants(&s("calls:delete")));
        assert!(!s("calls:write").grants(&s("sms:send")));
        assert!(s("otp:send").grants(&s("otp:send")));
        assert!(!s("otp:send").grants(&s("otp:verify")));
        assert!(!s("sms:write").grants(&s("sms:send")));
    }

    #[test]
    fn unrestricted_grants_everything() {
        assert!(grants(None, &s("anything:at_all")));
        assert!(!grants(Some(&[]), &s("calls:read")));
    }

    #[test]
    fn within_refuses_escalation() {
        let held = vec![s("calls:write"), s("sms:send")];
        assert_eq!(within(Some(&[s("calls:read")]), Some(&held)), Ok(()));
        assert_eq!(within(Some(&[s("calls:write"), s("sms:send")]), Some(&held)), Ok(()));
        assert_eq!(within(Some(&[s("calls:*")]), Some(&held)), Err("calls:*".into()));
        assert_eq!(within(Some(&[s("billing:read")]), Some(&held)), Err("billing:read".into()));
        assert_eq!(within(None, Some(&held)), Err("*".into()));
        assert_eq!(within(None, None), Ok(()));
        assert_eq!(within(Some(&[s("x:y")]), None), Ok(()));
    }

    #[test]
    fn parsing() {
        assert!("calls".parse::<Scope>().is_err());
        assert!("Calls:read".parse::<Scope>().is_err());
        assert!(":read".parse::<Scope>().is_err());
        assert!("calls:".parse::<Scope>().is_err());
        assert!("*:read".parse::<Scope>().is_err());
        assert_eq!(s("two_fa:write").resource(), "two_fa");
        assert_eq!(s("two_fa:write").action(), "write");
    }

    #[test]
    fn default_catalog_is_valid_and_has_operator_scopes_for_the_operator_only() {
        let c = Catalog::default();
        assert!(c.allows(&s("calls:write"), false));
        assert!(c.allows(&s("sms:send"), false));
        assert!(c.allows(&s("tenants:*"), false));
        assert!(!c.allows(&s("sms:read"), false));
        assert!(!c.allows(&s("accounts:read"), false));
        assert!(c.allows(&s("accounts:read"), true));
        assert!(c.allows(&s("keys:verify"), true));
        assert!(!c.allows(&s("nope:read"), true));
    }

    #[test]
    fn catalog_config_is_validated() {
        let mut e = Catalog::default_entries();
        e.push(e[0].clone());
        assert!(matches!(Catalog::new(e), Err(CatalogError::Duplicate(_))));
        let bad = CatalogEntry {
            resource: "accounts".into(),
            actions: vec!["read".into()],
            description: String::new(),
            group: String::new(),
            operator_only: false,
        };
        assert!(matches!(Catalog::new(vec![bad]), Err(CatalogError::Reserved(_))));
    }
}
