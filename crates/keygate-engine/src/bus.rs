//! Evictions sent to every node: the part of cluster mode the credential cache needs.
//!
//! A write that changes what a cached credential says (revoke, patch, delete, roll, suspend, a
//! tenant's change) evicts it here at once ([`crate::cache`]) and is also told to the other nodes
//! through a [`ChangeBus`] (Redis pub/sub in `keygate-cluster`), so they evict within
//! milliseconds instead of at their next change-log poll. The bus carries no secret: an
//! [`Eviction`] names ids only. A message lost while a node was disconnected is covered by the
//! store's change log, which every node still follows ([`crate::follower`]).

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use keygate_domain::{AccountId, KeyId, TenantId};
use keygate_store::{Change, ChangeKind};
use tokio::sync::watch;

/// What one write makes every node's cache forget.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Eviction {
    /// One key (of this account).
    Key(AccountId, KeyId),
    /// An account: its keys and tenants.
    Account(AccountId),
    /// One tenant of this account.
    Tenant(AccountId, TenantId),
}

impl Eviction {
    /// The eviction a change-log row stands for. A row whose entity id does not parse evicts
    /// its whole account: too much is forgotten, never too little.
    #[must_use]
    pub fn of(change: &Change) -> Self {
        let account = change.account_id;
        match change.kind {
            ChangeKind::ApiKey => change.entity_id.parse().map_or(Self::Account(account), |id| Self::Key(account, id)),
            ChangeKind::Account => Self::Account(account),
            ChangeKind::Tenant => {
                change.entity_id.parse().map_or(Self::Account(account), |id| Self::Tenant(account, id))
            }
        }
    }
}

/// The wire form: `key <account> <key>`, `account <account>`, `tenant <account> <tenant>`.
impl fmt::Display for Eviction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Key(account, key) => write!(f, "key {account} {key}"),
            Self::Account(account) => write!(f, "account {account}"),
            Self::Tenant(account, tenant) => write!(f, "tenant {account} {tenant}"),
        }
    }
}

/// A message that is not an [`Eviction`]'s wire form.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not an eviction message")]
pub struct NotAnEviction;

impl FromStr for Eviction {
    type Err = NotAnEviction;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut words = s.split(' ');
        let kind = words.next().ok_or(NotAnEviction)?;
        let account: AccountId = words.next().ok_or(NotAnEviction)?.parse().map_err(|_| NotAnEviction)?;
        let eviction = match kind {
            "account" => Self::Account(account),
            "key" => Self::Key(account, words.next().ok_or(NotAnEviction)?.parse().map_err(|_| NotAnEviction)?),
            "tenant" => Self::Tenant(account, words.next().ok_or(NotAnEviction)?.parse().map_err(|_| NotAnEviction)?),
            _ => return Err(NotAnEviction),
        };
        if words.next().is_some() {
            return Err(NotAnEviction);
        }
        Ok(eviction)
    }
}

/// Where this node's evictions are delivered, by a [`ChangeBus`]'s listener.
pub type Deliver = Arc<dyn Fn(Eviction) + Send + Sync>;

/// Evictions to and from the other nodes.
pub trait ChangeBus: Send + Sync {
    /// Tells every other node to evict. Never waits on the network: the message is queued, and
    /// one that cannot be sent is dropped (the change log covers it).
    fn publish(&self, eviction: Eviction);

    /// The subscription other nodes' evictions reach this node through right now, as a number
    /// that changes whenever the subscription is made anew (`None` while there is none). While it
    /// stays the same, nothing published was missed; a node that cannot read the change log keeps
    /// its cache only while the subscription it had at its last read is still the one receiving
    /// ([`crate::follower::BLIND_AFTER`]).
    fn subscription(&self) -> Option<u64>;

    /// Whether other nodes' evictions reach this node right now.
    fn receiving(&self) -> bool {
        self.subscription().is_some()
    }

    /// Receives other nodes' evictions and hands each to `deliver`, reconnecting as needed,
    /// until `stop` turns true.
    fn listen(
        self: Arc<Self>,
        deliver: Deliver,
        stop: watch::Receiver<bool>,
    ) -> std::pin::Pin<Box<dyn Future<Output = ()> + Send>>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_wire_form_round_trips_and_rejects_anything_else() {
        let account = AccountId::generate();
        for e in [
            Eviction::Key(account, KeyId::generate()),
            Eviction::Account(account),
            Eviction::Tenant(account, TenantId::generate()),
        ] {
            assert_eq!(e.to_string().parse::<Eviction>(), Ok(e));
        }
        for bad in [
            "",
            "key",
            "account nope",
            &format!("key {account}"),
            &format!("account {account} extra"),
            &format!("user {account}"),
        ] {
            assert_eq!(bad.parse::<Eviction>(), Err(NotAnEviction), "{bad:?}");
        }
    }
}
