//! The credential cache: a [`Store`] decorator that answers `find_key_by_hash` and `get_tenant`
//! from memory.
//!
//! Revocation is pushed, not waited for. This process's own writes go through the decorator,
//! which evicts what they touch before returning, so the response to a revoke is only sent once
//! the cache has forgotten the key, and tells the other nodes through the [`ChangeBus`] in
//! cluster mode ([`crate::bus`]), which they apply with [`Cache::evict`]. Other processes' writes
//! (another node, the CLI) also reach us through the store's change log, which
//! [`crate::follower`] reads and feeds to [`Cache::apply`]: the safety net for a lost message.
//! TTLs exist only as a safety net for memory, never as the way revocation takes effect.
//!
//! A read racing a write could put stale data back after the eviction; every eviction bumps a
//! generation counter, and a read only fills the cache if no eviction happened since it began,
//! and only once the follower knows its place in the change log (a change committed before that
//! could otherwise be cached and never evicted).
//!
//! Unknown hashes are remembered in a bounded negative cache, so a flood of well-formed but
//! unknown keys does not become a flood of queries.
//!
//! Hashes that belonged to a key when last looked up are also remembered ([`Cache::vouched`]),
//! apart from the key itself and for longer: an eviction (any change to the key or its account)
//! forgets the credential, not that the hash is a real key's. The failed-attempt throttle lets
//! such a hash through to the store, so a valid key is never locked out by a noisy neighbour
//! behind the same address, even right after its cache entry was evicted (SPEC §3). A guesser
//! cannot produce such a hash.

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use dashmap::DashMap;
use keygate_domain::model::{Account, ApiKey, AuditEvent, Tenant};
use keygate_domain::time::Timestamp;
use keygate_domain::{AccountId, KeyHash, KeyId, TenantId};
use keygate_store::{
    AccountStore, AuditFilter, AuditLog, Change, ChangeFeed, KeyFilter, KeyStore, KeyUsage, Page, Result, Store,
    TenantFilter, TenantStore,
};
use moka::notification::RemovalCause;
use moka::sync::Cache as Moka;

use crate::bus::{ChangeBus, Eviction};

/// A known key with its account, as cached.
#[derive(Debug)]
pub struct Cached {
    pub key: ApiKey,
    pub account: Account,
    /// The last use this process queued for `last_used_*`: its second and client IP, packed.
    last_noted: AtomicU64,
}

/// A use packed into 64 bits: the Unix second (low 32 bits) and the IP (IPv4 exactly; IPv6
/// folded to 32 bits, so two IPv6 clients of one key within one second may share a slot).
fn pack_use(unix_second: i64, ip: IpAddr) -> u64 {
    let ip32 = match ip {
        IpAddr::V4(v4) => u32::from(v4),
        IpAddr::V6(v6) => {
            let b = v6.to_bits();
            #[expect(clippy::cast_possible_truncation, reason = "folding 128 bits into 32 on purpose")]
            let folded = (b ^ (b >> 32) ^ (b >> 64) ^ (b >> 96)) as u32;
            folded
        }
    };
    #[expect(clippy::cast_sign_loss, clippy::cast_possible_truncation, reason = "the second's low 32 bits suffice")]
    let second = unix_second as u32;
    (u64::from(second) << 32) | u64::from(ip32)
}

impl Cached {
    #[must_use]
    pub fn new(key: ApiKey, account: Account) -> Self {
        Self { key, account, last_noted: AtomicU64::new(u64::MAX) }
    }

    /// Whether this use must be queued for `last_used_at` / `last_used_ip`: not when the same
    /// client already used the key in the same second. Keeps the usage queue's lock off the hot
    /// path for busy keys, and loses nothing: a new second or a new IP is always queued.
    pub fn note_use(&self, unix_second: i64, ip: IpAddr) -> bool {
        let packed = pack_use(unix_second, ip);
        self.last_noted.swap(packed, Ordering::Relaxed) != packed
    }
}

/// A known key with its account, shared without copying.
pub type Credential = Arc<Cached>;

/// Sizes of the caches.
#[derive(Debug, Clone, Copy)]
pub struct CacheConfig {
    pub max_keys: u64,
    pub max_unknown: u64,
    /// Memory hygiene only; revocation never waits for it.
    pub ttl: Duration,
    pub unknown_ttl: Duration,
}

impl Default for CacheConfig {
    fn default() -> Self {
        Self {
            max_keys: 100_000,
            max_unknown: 100_000,
            ttl: Duration::from_secs(600),
            unknown_ttl: Duration::from_secs(60),
        }
    }
}

/// How long a hash that belonged to a key bypasses the failed-attempt throttle after its last
/// lookup.
pub const VOUCHED_FOR: Duration = Duration::from_secs(3600);

/// The in-memory part, shared by the decorator and the change-log follower.
pub struct Cache {
    keys: Moka<KeyHash, Credential>,
    /// Each cached key's hash by its id, so evicting one key is one removal, not a predicate
    /// every later read must test until housekeeping runs (a burst of revocations on one node —
    /// published to every node — would otherwise stall every read for seconds). An entry is added
    /// before its credential is cached and removed when that same credential leaves the cache.
    by_id: Arc<DashMap<KeyId, (KeyHash, Credential)>>,
    unknown: Moka<KeyHash, ()>,
    /// Hashes a store lookup found a key for: they bypass the failed-attempt throttle.
    vouched: Moka<KeyHash, ()>,
    tenants: Moka<(AccountId, TenantId), Option<Tenant>>,
    generation: AtomicU64,
    /// False until the change-log follower knows where the log stands; until then nothing is
    /// remembered, so no change can slip between filling the cache and following the log.
    following: AtomicBool,
}

impl Cache {
    #[must_use]
    pub fn new(config: CacheConfig) -> Self {
        let by_id: Arc<DashMap<KeyId, (KeyHash, Credential)>> = Arc::new(DashMap::new());
        let index = Arc::clone(&by_id);
        Self {
            keys: Moka::builder()
                .max_capacity(config.max_keys)
                .time_to_live(config.ttl)
                .support_invalidation_closures()
                .eviction_listener(move |_hash, gone: Credential, cause| {
                    // A replacement under the same hash keeps the key's entry (its newer credential
                    // is the one in the index); anything else removes the entry if it is still
                    // this credential's, not a later fill's.
                    if cause != RemovalCause::Replaced {
                        index.remove_if(&gone.key.id, |_, (_, held)| Arc::ptr_eq(held, &gone));
                    }
                })
                .build(),
            by_id,
            unknown: Moka::builder().max_capacity(config.max_unknown).time_to_live(config.unknown_ttl).build(),
            vouched: Moka::builder().max_capacity(config.max_keys).time_to_live(VOUCHED_FOR).build(),
            tenants: Moka::builder()
                .max_capacity(config.max_keys)
                .time_to_live(config.ttl)
                .support_invalidation_closures()
                .build(),
            generation: AtomicU64::new(0),
            following: AtomicBool::new(false),
        }
    }

    /// Called by the follower once it has read its starting position in the change log.
    pub fn start_following(&self) {
        self.following.store(true, Ordering::Release);
    }

    /// A snapshot taken before a store read: the read may fill the cache only if it is still
    /// current afterwards (no eviction meanwhile, and the follower was already following).
    fn fill_ticket(&self) -> Option<u64> {
        self.following.load(Ordering::Acquire).then(|| self.generation.load(Ordering::Acquire))
    }

    fn may_fill(&self, ticket: Option<u64>) -> bool {
        ticket.is_some_and(|g| self.generation.load(Ordering::Acquire) == g)
    }

    fn bump(&self) {
        self.generation.fetch_add(1, Ordering::AcqRel);
    }

    fn evict_key(&self, id: KeyId) {
        self.bump();
        if let Some((_, (hash, _))) = self.by_id.remove(&id) {
            self.keys.invalidate(&hash);
        }
    }

    fn evict_account(&self, id: AccountId) {
        self.bump();
        let _ = self.keys.invalidate_entries_if(move |_, c| c.account.id == id);
        let _ = self.tenants.invalidate_entries_if(move |(account, _), _| *account == id);
    }

    fn evict_tenant(&self, account: AccountId, id: TenantId) {
        self.bump();
        self.tenants.invalidate(&(account, id));
    }

    /// The key with this hash and its account: from memory, or from `store` (and remembered).
    ///
    /// # Errors
    /// The store failed on a miss.
    pub async fn credential(&self, hash: &KeyHash, store: &dyn Store) -> Result<Option<Credential>> {
        match self.remembered(hash) {
            Some(known) => Ok(known),
            None => self.load(hash, store).await,
        }
    }

    /// What memory alone says about this hash: `Some(Some(_))` a known key, `Some(None)` a hash
    /// known to match no key, `None` a miss (only the store can tell).
    #[must_use]
    pub fn remembered(&self, hash: &KeyHash) -> Option<Option<Credential>> {
        if let Some(hit) = self.keys.get(hash) {
            metrics::counter!("keygate_auth_cache_hits_total").increment(1);
            return Some(Some(hit));
        }
        if self.unknown.contains_key(hash) {
            metrics::counter!("keygate_auth_cache_hits_total").increment(1);
            return Some(None);
        }
        None
    }

    /// Did a store lookup find a key for this hash within [`VOUCHED_FOR`]? (Revoked, expired,
    /// changed or not: only that it is a real key's, so looking it up again is no guess.)
    #[must_use]
    pub fn vouched(&self, hash: &KeyHash) -> bool {
        self.vouched.contains_key(hash)
    }

    /// A cache miss: the key with this hash from `store`, remembered when it is safe to.
    ///
    /// # Errors
    /// The store failed.
    pub async fn load(&self, hash: &KeyHash, store: &dyn Store) -> Result<Option<Credential>> {
        metrics::counter!("keygate_auth_cache_misses_total").increment(1);
        let ticket = self.fill_ticket();
        let found = store.find_key_by_hash(hash).await?.map(|(key, account)| Arc::new(Cached::new(key, account)));
        if found.is_some() {
            self.vouched.insert(*hash, ());
        }
        if self.may_fill(ticket) {
            match &found {
                Some(credential) => {
                    self.by_id.insert(credential.key.id, (*hash, Arc::clone(credential)));
                    self.keys.insert(*hash, Arc::clone(credential));
                    // An eviction that began between the check above and these inserts may have
                    // looked before they were made: then the fill is undone. One that begins after
                    // this check finds the index entry and the credential in place.
                    if !self.may_fill(ticket) {
                        self.keys.invalidate(hash);
                        self.by_id.remove_if(&credential.key.id, |_, (_, held)| Arc::ptr_eq(held, credential));
                    }
                }
                None => self.unknown.insert(*hash, ()),
            }
        }
        Ok(found)
    }

    /// Applies one change-log row from another process.
    pub fn apply(&self, change: &Change) {
        self.evict(Eviction::of(change));
    }

    /// Forgets what `eviction` names (a write here, or another node's, told through the bus).
    pub fn evict(&self, eviction: Eviction) {
        match eviction {
            Eviction::Key(_, id) => self.evict_key(id),
            Eviction::Account(id) => self.evict_account(id),
            Eviction::Tenant(account, id) => self.evict_tenant(account, id),
        }
    }

    /// Forgets everything (the follower lost track of the change log).
    pub fn clear(&self) {
        self.bump();
        self.keys.invalidate_all();
        self.unknown.invalidate_all();
        self.tenants.invalidate_all();
    }
}

/// A [`Store`] with the credential cache in front of it.
pub struct CachedStore {
    inner: Arc<dyn Store>,
    cache: Arc<Cache>,
    bus: Option<Arc<dyn ChangeBus>>,
}

impl CachedStore {
    /// `bus`, in cluster mode, tells every other node what a write here evicted.
    #[must_use]
    pub fn new(inner: Arc<dyn Store>, cache: Arc<Cache>, bus: Option<Arc<dyn ChangeBus>>) -> Self {
        Self { inner, cache, bus }
    }

    /// Evicts here, then tells the other nodes.
    fn evict(&self, eviction: Eviction) {
        self.cache.evict(eviction);
        if let Some(bus) = &self.bus {
            bus.publish(eviction);
        }
    }

    /// The undecorated store (for the change-log follower and cache misses).
    #[must_use]
    pub fn inner(&self) -> &Arc<dyn Store> {
        &self.inner
    }
}

#[async_trait]
impl KeyStore for CachedStore {
    async fn find_key_by_hash(&self, hash: &KeyHash) -> Result<Option<(ApiKey, Account)>> {
        Ok(self.cache.credential(hash, &*self.inner).await?.map(|c| (c.key.clone(), c.account.clone())))
    }

    async fn create_key(&self, key: &ApiKey, audit: &AuditEvent, max_keys: u64) -> Result<()> {
        self.inner.create_key(key, audit, max_keys).await?;
        self.cache.unknown.invalidate(&key.hash);
        Ok(())
    }

    async fn create_keys(&self, keys: &[(ApiKey, AuditEvent)], max_keys: u64) -> Result<()> {
        self.inner.create_keys(keys, max_keys).await?;
        for (key, _) in keys {
            self.cache.unknown.invalidate(&key.hash);
        }
        Ok(())
    }

    async fn get_key(&self, account: AccountId, id: KeyId) -> Result<Option<ApiKey>> {
        self.inner.get_key(account, id).await
    }

    async fn find_key_by_id(&self, id: KeyId) -> Result<Option<ApiKey>> {
        self.inner.find_key_by_id(id).await
    }

    async fn list_keys(&self, account: AccountId, filter: &KeyFilter, page: &Page) -> Result<Vec<ApiKey>> {
        self.inner.list_keys(account, filter, page).await
    }

    async fn update_key(&self, key: &ApiKey, audit: &AuditEvent) -> Result<()> {
        let result = self.inner.update_key(key, audit).await;
        self.evict(Eviction::Key(key.account_id, key.id));
        result
    }

    async fn roll_key(&self, old: &ApiKey, new: &ApiKey, audit: &AuditEvent, max_keys: u64) -> Result<()> {
        let result = self.inner.roll_key(old, new, audit, max_keys).await;
        self.evict(Eviction::Key(old.account_id, old.id));
        self.cache.unknown.invalidate(&new.hash);
        result
    }

    async fn delete_key(&self, account: AccountId, id: KeyId, audit: &AuditEvent) -> Result<bool> {
        let result = self.inner.delete_key(account, id, audit).await;
        self.evict(Eviction::Key(account, id));
        result
    }

    async fn record_key_usage(&self, usage: &[KeyUsage]) -> Result<()> {
        self.inner.record_key_usage(usage).await
    }
}

#[async_trait]
impl AccountStore for CachedStore {
    async fn create_account(&self, account: &Account, initial_key: &ApiKey, audit: &AuditEvent) -> Result<()> {
        self.inner.create_account(account, initial_key, audit).await?;
        self.cache.unknown.invalidate(&initial_key.hash);
        Ok(())
    }

    async fn get_account(&self, id: AccountId) -> Result<Option<Account>> {
        self.inner.get_account(id).await
    }

    async fn operator_account(&self) -> Result<Option<Account>> {
        self.inner.operator_account().await
    }

    async fn list_accounts(&self, page: &Page) -> Result<Vec<Account>> {
        self.inner.list_accounts(page).await
    }

    async fn update_account(&self, account: &Account, audit: &AuditEvent) -> Result<()> {
        let result = self.inner.update_account(account, audit).await;
        self.evict(Eviction::Account(account.id));
        result
    }
}

#[async_trait]
impl TenantStore for CachedStore {
    async fn create_tenant(&self, tenant: &Tenant, audit: &AuditEvent, max_tenants: u64) -> Result<()> {
        let result = self.inner.create_tenant(tenant, audit, max_tenants).await;
        self.evict(Eviction::Tenant(tenant.account_id, tenant.id));
        result
    }

    async fn get_tenant(&self, account: AccountId, id: TenantId) -> Result<Option<Tenant>> {
        if let Some(hit) = self.cache.tenants.get(&(account, id)) {
            return Ok(hit);
        }
        let ticket = self.cache.fill_ticket();
        let found = self.inner.get_tenant(account, id).await?;
        if self.cache.may_fill(ticket) {
            self.cache.tenants.insert((account, id), found.clone());
        }
        Ok(found)
    }

    async fn get_tenants(&self, account: AccountId, ids: &[TenantId]) -> Result<Vec<Tenant>> {
        self.inner.get_tenants(account, ids).await
    }

    async fn list_tenants(&self, account: AccountId, filter: &TenantFilter, page: &Page) -> Result<Vec<Tenant>> {
        self.inner.list_tenants(account, filter, page).await
    }

    async fn update_tenant(&self, tenant: &Tenant, audit: &AuditEvent) -> Result<()> {
        let result = self.inner.update_tenant(tenant, audit).await;
        self.evict(Eviction::Tenant(tenant.account_id, tenant.id));
        result
    }
}

#[async_trait]
impl AuditLog for CachedStore {
    async fn list_audit_events(
        &self,
        account: AccountId,
        filter: &AuditFilter,
        page: &Page,
    ) -> Result<Vec<AuditEvent>> {
        self.inner.list_audit_events(account, filter, page).await
    }
}

#[async_trait]
impl ChangeFeed for CachedStore {
    async fn changes_since(&self, after: i64, limit: u32) -> Result<Vec<Change>> {
        self.inner.changes_since(after, limit).await
    }

    async fn latest_change(&self) -> Result<i64> {
        self.inner.latest_change().await
    }

    async fn purge_changes(&self, before: Timestamp) -> Result<u64> {
        self.inner.purge_changes(before).await
    }
}

#[async_trait]
impl Store for CachedStore {
    fn backend(&self) -> &'static str {
        self.inner.backend()
    }

    async fn ping(&self) -> Result<()> {
        self.inner.ping().await
    }

    async fn migrate(&self) -> Result<()> {
        self.inner.migrate().await
    }

    async fn close(&self) {
        self.inner.close().await;
    }
}

#[async_trait]
impl keygate_store::IdempotencyStore for CachedStore {
    async fn begin_idempotent(
        &self,
        account: AccountId,
        key: &str,
        fingerprint: &[u8; 32],
        now: Timestamp,
        expires_at: Timestamp,
    ) -> Result<keygate_store::IdempotencyBegin> {
        self.inner.begin_idempotent(account, key, fingerprint, now, expires_at).await
    }

    async fn complete_idempotent(&self, account: AccountId, key: &str, response: &[u8]) -> Result<()> {
        self.inner.complete_idempotent(account, key, response).await
    }

    async fn release_idempotent(&self, account: AccountId, key: &str) -> Result<()> {
        self.inner.release_idempotent(account, key).await
    }

    async fn purge_idempotency(&self, before: Timestamp) -> Result<u64> {
        self.inner.purge_idempotency(before).await
    }
}

#[async_trait]
impl keygate_store::RequestLog for CachedStore {
    async fn record_requests(&self, records: &[keygate_store::RequestRecord]) -> Result<()> {
        self.inner.record_requests(records).await
    }

    async fn add_usage(&self, counts: &[keygate_store::UsageCount]) -> Result<()> {
        self.inner.add_usage(counts).await
    }

    async fn usage(
        &self,
        account: AccountId,
        filter: keygate_store::UsageFilter,
        first: chrono::NaiveDate,
        last: chrono::NaiveDate,
    ) -> Result<Vec<keygate_store::UsageRow>> {
        self.inner.usage(account, filter, first, last).await
    }

    async fn list_requests(
        &self,
        account: AccountId,
        filter: &keygate_store::RequestFilter,
        page: &Page,
    ) -> Result<Vec<keygate_store::RequestRecord>> {
        self.inner.list_requests(account, filter, page).await
    }

    async fn purge_requests(&self, before: Timestamp) -> Result<u64> {
        self.inner.purge_requests(before).await
    }
}

#[async_trait]
impl keygate_store::MetaStore for CachedStore {
    async fn hash_secret_fingerprint(&self) -> Result<Option<String>> {
        self.inner.hash_secret_fingerprint().await
    }

    async fn claim_hash_secret_fingerprint(&self, fingerprint: &str) -> Result<Option<String>> {
        self.inner.claim_hash_secret_fingerprint(fingerprint).await
    }
}

/// Users and sessions are not cached: every call goes to the store.
#[async_trait]
impl keygate_store::UserStore for CachedStore {
    async fn create_user(
        &self,
        user: &keygate_domain::User,
        password_hash: Option<&str>,
        audit: &AuditEvent,
        max_users: u64,
    ) -> Result<()> {
        self.inner.create_user(user, password_hash, audit, max_users).await
    }

    async fn get_user(&self, account: AccountId, id: keygate_domain::UserId) -> Result<Option<keygate_domain::User>> {
        self.inner.get_user(account, id).await
    }

    async fn users_by_email(&self, email: &str) -> Result<Vec<(keygate_domain::User, Option<String>)>> {
        self.inner.users_by_email(email).await
    }

    async fn list_users(&self, account: AccountId, page: &Page) -> Result<Vec<keygate_domain::User>> {
        self.inner.list_users(account, page).await
    }

    async fn update_user(
        &self,
        user: &keygate_domain::User,
        expected_role: keygate_domain::Role,
        audit: &AuditEvent,
    ) -> Result<bool> {
        self.inner.update_user(user, expected_role, audit).await
    }

    async fn set_password(
        &self,
        account: AccountId,
        id: keygate_domain::UserId,
        expected_role: keygate_domain::Role,
        password_hash: Option<&str>,
        audit: &AuditEvent,
    ) -> Result<bool> {
        self.inner.set_password(account, id, expected_role, password_hash, audit).await
    }

    async fn delete_user(
        &self,
        account: AccountId,
        id: keygate_domain::UserId,
        expected_role: keygate_domain::Role,
        audit: &AuditEvent,
    ) -> Result<bool> {
        self.inner.delete_user(account, id, expected_role, audit).await
    }

    async fn note_sign_in(&self, account: AccountId, id: keygate_domain::UserId, at: Timestamp) -> Result<()> {
        self.inner.note_sign_in(account, id, at).await
    }

    async fn create_session(&self, session: &keygate_domain::Session) -> Result<()> {
        self.inner.create_session(session).await
    }

    async fn session_by_token(
        &self,
        token_hash: &[u8; 32],
    ) -> Result<Option<(keygate_domain::Session, keygate_domain::User)>> {
        self.inner.session_by_token(token_hash).await
    }

    async fn touch_session(&self, id: keygate_domain::SessionId, at: Timestamp) -> Result<()> {
        self.inner.touch_session(id, at).await
    }

    async fn list_sessions(
        &self,
        account: AccountId,
        user: keygate_domain::UserId,
        now: Timestamp,
    ) -> Result<Vec<keygate_domain::Session>> {
        self.inner.list_sessions(account, user, now).await
    }

    async fn revoke_session(
        &self,
        account: AccountId,
        user: keygate_domain::UserId,
        id: keygate_domain::SessionId,
        at: Timestamp,
    ) -> Result<bool> {
        self.inner.revoke_session(account, user, id, at).await
    }

    async fn purge_sessions(&self, before: Timestamp) -> Result<u64> {
        self.inner.purge_sessions(before).await
    }

    async fn create_sign_in_token(
        &self,
        token_hash: &[u8; 32],
        account: AccountId,
        user: keygate_domain::UserId,
        expires_at: Timestamp,
        audit: &AuditEvent,
    ) -> Result<()> {
        self.inner.create_sign_in_token(token_hash, account, user, expires_at, audit).await
    }

    async fn consume_sign_in_token(
        &self,
        token_hash: &[u8; 32],
        now: Timestamp,
    ) -> Result<Option<(AccountId, keygate_domain::UserId)>> {
        self.inner.consume_sign_in_token(token_hash, now).await
    }
}
