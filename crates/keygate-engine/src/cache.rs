//! The credential cache: what the request path knows of keys ([`Cache::credential`]) and
//! tenants, from memory, in front of the [`Store`] (a decorator that evicts what writes touch).
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
//! could otherwise be cached and never evicted). The table is keyed by hash, and an eviction
//! names a key's id: a key eviction is recorded with its generation, and a credential read
//! before it is a miss (then dropped) when next looked up. Those records last one TTL, and
//! there are at most as many as the cache holds keys (at least 100,000): past that, every
//! credential cached is read again instead.
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
//!
//! Memory is spent by the key, since a node may hold millions (about 240 bytes each at
//! 1,000,000, docs/benchmarks.md): the credentials live in one [`quick_cache`] table (S3-FIFO
//! eviction, a few words of overhead an entry) with no second index, every key of an account
//! shares one copy of the account and every key of a scope list one copy of the list, what few
//! keys carry is boxed apart, and a hash vouched for outside the table is remembered as 64 of
//! its bits and the second it was vouched for.

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use dashmap::DashMap;
use ipnet::IpNet;
use keygate_domain::model::{Account, ApiKey, AuditEvent, Tenant};
use keygate_domain::time::Timestamp;
use keygate_domain::{AccountId, Environment, KeyBounds, KeyHash, KeyId, Scope, TenantId};
use keygate_store::{
    AccountStore, AuditFilter, AuditLog, Change, ChangeFeed, KeyFilter, KeyStore, KeyUsage, Page, Result, Store,
    TenantFilter, TenantStore,
};
use moka::sync::Cache as Moka;
use quick_cache::{DefaultHashBuilder, Lifecycle, UnitWeighter};
use serde_json::{Map, Value};

use crate::bus::{ChangeBus, Eviction};

/// Counts a hit in `keygate_auth_cache_hits_total`. Every authenticated request hits (a verify
/// call twice), so each thread keeps the counter's handle instead of looking the name up in the
/// registry each time. The recorder is installed when the router is built, before any request:
/// a handle taken earlier would count nowhere.
fn count_hit() {
    thread_local! {
        static HITS: metrics::Counter = metrics::counter!("keygate_auth_cache_hits_total");
    }
    HITS.with(|hits| hits.increment(1));
}

/// What the credential cache keeps of a key: the fields authentication, checks 4–10, the rate
/// limits and a verify answer read, compactly (a node may hold millions). The rest of
/// [`ApiKey`] (its masked form, who made it, when it was last used) is read from the store where
/// it is shown. Its hash is the cache table's key and its account the [`Cached`] beside it, so
/// neither is repeated here; what few keys carry (a tenant or IP restriction, metadata) sits
/// behind one pointer that is null for the rest.
#[derive(Debug)]
pub struct CachedKey {
    pub id: KeyId,
    pub name: Box<str>,
    /// `None` = unrestricted. One copy per distinct list in the cache.
    pub scopes: Option<Arc<[Scope]>>,
    pub expires_at: Option<Timestamp>,
    pub rate_limit_per_minute: u32,
    pub environment: Environment,
    pub revoked: bool,
    /// `None` when the key has no tenant or IP restriction and no metadata.
    rare: Option<Box<Rare>>,
}

/// The parts of a key most keys leave empty.
#[derive(Debug, Default)]
struct Rare {
    tenant_ids: Option<Box<[TenantId]>>,
    allowed_ips: Option<Box<[IpNet]>>,
    metadata: Map<String, Value>,
}

impl From<ApiKey> for CachedKey {
    fn from(key: ApiKey) -> Self {
        let rare = Rare {
            tenant_ids: key.tenant_ids.map(Vec::into_boxed_slice),
            allowed_ips: key.allowed_ips.map(Vec::into_boxed_slice),
            metadata: key.metadata,
        };
        let rare_is_empty = rare.tenant_ids.is_none() && rare.allowed_ips.is_none() && rare.metadata.is_empty();
        Self {
            id: key.id,
            name: key.name.into_boxed_str(),
            scopes: key.scopes.map(Arc::from),
            expires_at: key.expires_at,
            rate_limit_per_minute: key.rate_limit_per_minute,
            environment: key.environment,
            revoked: key.revoked_at.is_some(),
            rare: (!rare_is_empty).then(|| Box::new(rare)),
        }
    }
}

impl CachedKey {
    /// `None` = every tenant of the account.
    #[must_use]
    pub fn tenant_ids(&self) -> Option<&[TenantId]> {
        self.rare.as_ref()?.tenant_ids.as_deref()
    }

    /// `None` = any IP; empty = no IP at all.
    #[must_use]
    pub fn allowed_ips(&self) -> Option<&[IpNet]> {
        self.rare.as_ref()?.allowed_ips.as_deref()
    }

    /// The key's metadata (an empty map when it has none).
    #[must_use]
    pub fn metadata(&self) -> &Map<String, Value> {
        static NONE: std::sync::LazyLock<Map<String, Value>> = std::sync::LazyLock::new(Map::new);
        self.rare.as_ref().map_or(&NONE, |r| &r.metadata)
    }
}

/// An account as its cached keys share it: one copy for all of them, and whether it is stale.
#[derive(Debug)]
pub struct SharedAccount {
    account: Account,
    /// Set when the account changes (or the cache lets go of this copy): every credential holding
    /// it is a miss from then on, so evicting an account with a million cached keys is one store,
    /// not a scan of the cache (an account's own owner can change it as often as its limits
    /// allow, and every node applies each change).
    stale: AtomicBool,
}

impl SharedAccount {
    #[must_use]
    pub fn new(account: Account) -> Self {
        Self { account, stale: AtomicBool::new(false) }
    }

    fn mark_stale(&self) {
        self.stale.store(true, Ordering::Release);
    }

    fn is_stale(&self) -> bool {
        self.stale.load(Ordering::Acquire)
    }
}

impl std::ops::Deref for SharedAccount {
    type Target = Account;

    fn deref(&self) -> &Account {
        &self.account
    }
}

/// A known key with its account, as cached.
#[derive(Debug)]
pub struct Cached {
    pub key: CachedKey,
    /// Shared by every cached key of the account (whose id is the key's `account_id`).
    pub account: Arc<SharedAccount>,
    /// The last use this process queued for `last_used_*`: its second and client IP, packed.
    last_noted: AtomicU64,
    /// The cache's eviction generation when the read that found it began: an eviction of its
    /// key recorded with a later generation makes it a miss ([`Cache::remembered`]).
    generation: u64,
    /// When the read that found it began, in [`clock_s`] seconds (its TTL is memory hygiene,
    /// never revocation). Never later than any eviction that refuses it ([`Cache::tidy`]).
    loaded_s: u32,
}

/// Whole seconds since this process first asked: the clock of cached entries' ages, four bytes
/// each (a TTL of minutes needs no finer grain).
fn clock_s() -> u32 {
    static EPOCH: std::sync::LazyLock<Instant> = std::sync::LazyLock::new(Instant::now);
    u32::try_from(EPOCH.elapsed().as_secs()).unwrap_or(u32::MAX)
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
    /// A credential for `key` of `account` (the store's pair: the account is the key's).
    #[must_use]
    pub fn new(key: CachedKey, account: Arc<SharedAccount>) -> Self {
        Self::read(key, account, 0, clock_s())
    }

    fn read(key: CachedKey, account: Arc<SharedAccount>, generation: u64, loaded_s: u32) -> Self {
        Self { key, account, last_noted: AtomicU64::new(u64::MAX), generation, loaded_s }
    }

    /// Whether this use must be queued for `last_used_at` / `last_used_ip`: not when the same
    /// client already used the key in the same second. Keeps the usage queue's lock off the hot
    /// path for busy keys, and loses nothing: a new second or a new IP is always queued.
    pub fn note_use(&self, unix_second: i64, ip: IpAddr) -> bool {
        let packed = pack_use(unix_second, ip);
        self.last_noted.swap(packed, Ordering::Relaxed) != packed
    }

    /// Seconds since it was read from the store.
    fn age_s(&self, now_s: u32) -> u32 {
        now_s.saturating_sub(self.loaded_s)
    }
}

/// The policy's view of a cached key: the key's bounds, its account's id.
impl KeyBounds for Cached {
    fn account_id(&self) -> AccountId {
        self.account.id
    }

    fn is_revoked(&self) -> bool {
        self.key.revoked
    }

    fn expires_at(&self) -> Option<Timestamp> {
        self.key.expires_at
    }

    fn allowed_ips(&self) -> Option<&[IpNet]> {
        self.key.allowed_ips()
    }

    fn scopes(&self) -> Option<&[Scope]> {
        self.key.scopes.as_deref()
    }

    fn tenant_ids(&self) -> Option<&[TenantId]> {
        self.key.tenant_ids()
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

/// The fewest key-eviction records a cache keeps before raising its floor (see
/// `Cache::evicted_floor`).
const MIN_EVICTIONS: usize = 100_000;

/// Distinct scope lists shared before sharing starts over (keys keep their copies).
const MAX_SCOPE_LISTS: usize = 10_000;

/// How long a hash that belonged to a key bypasses the failed-attempt throttle after its last
/// lookup.
pub const VOUCHED_FOR: Duration = Duration::from_secs(3600);

/// The credentials by hash: a bounded [`quick_cache`] table whose capacity evictions are
/// collected (into [`Evicted`]) so their hashes stay vouched for once the table's lock is
/// released.
type Keys = quick_cache::sync::Cache<KeyHash, Credential, UnitWeighter, DefaultHashBuilder, CollectEvicted>;

/// The credentials one insert pushed out of the table, with their hashes.
#[derive(Default)]
struct Evicted(Vec<(KeyHash, Credential)>);

/// A [`Lifecycle`] that hands capacity evictions to the caller in [`Evicted`] (replacing a value
/// under the same hash is not an eviction).
#[derive(Clone, Copy, Default)]
struct CollectEvicted;

impl Lifecycle<KeyHash, Credential> for CollectEvicted {
    type RequestState = Evicted;

    fn on_evict(&self, evicted: &mut Evicted, hash: KeyHash, credential: Credential) {
        evicted.0.push((hash, credential));
    }
}

/// 64 bits of a key hash: an HMAC output, uniformly distributed, that nobody without the hash
/// secret can aim at (a guesser matches one of a million vouched fingerprints with odds of
/// about 2^-44 a guess, and then only skips the throttle).
fn fingerprint(hash: &KeyHash) -> u64 {
    let mut first = [0; 8];
    first.copy_from_slice(&hash.as_bytes()[..8]);
    u64::from_le_bytes(first)
}

/// A key eviction as [`Cache::evicted_keys`] remembers it: the generation it bumped the cache
/// to, and its [`clock_s`] second.
#[derive(Debug, Clone, Copy)]
struct KeyEviction {
    generation: u64,
    at_s: u32,
}

/// The in-memory part, shared by the decorator and the change-log follower.
pub struct Cache {
    keys: Keys,
    /// Keys evicted by id (a revoke, patch, delete or roll, here or on another node), with the
    /// generation each eviction bumped the cache to: a cached credential of such a key read
    /// before that generation is a miss. An eviction names the key's id, which the table is not
    /// keyed by; this map holds one entry per key evicted in the last TTL (at most
    /// `max_evictions`) instead of an id index over every cached key (a node may hold
    /// millions). An entry older than the TTL is dropped by [`Cache::tidy`]: every credential
    /// it could refuse is past its TTL.
    /// Hashed with quick_cache's fast seeded hasher: ids are made by keygate, not chosen by a
    /// caller, and every hit looks one up while records exist.
    evicted_keys: DashMap<KeyId, KeyEviction, DefaultHashBuilder>,
    /// At least the number of entries in `evicted_keys` (raised before an insert, lowered after
    /// a removal), so a hit looks the map up only when it may hold something.
    evicted_count: AtomicUsize,
    /// Every credential read before this generation is a miss: raised when `evicted_keys`
    /// reaches [`Cache::max_evictions`], whose entries up to it are then dropped. A burst of
    /// writes to keys (every created key's change-log row is applied as an eviction too) costs
    /// a reload of what is cached, never unbounded memory.
    evicted_floor: AtomicU64,
    /// Entries `evicted_keys` holds at most: `max_keys`, and at least [`MIN_EVICTIONS`].
    max_evictions: usize,
    /// The one copy of each account its cached keys share. Every copy a cached credential holds
    /// is either this one or marked stale: a copy leaves the map only marked.
    accounts: DashMap<AccountId, Arc<SharedAccount>>,
    /// The one copy of each distinct scope list cached keys share (most keys of a platform hold
    /// one of a few lists).
    scope_lists: DashMap<Arc<[Scope]>, ()>,
    unknown: Moka<KeyHash, ()>,
    /// Hashes a store lookup found a key for (by [`fingerprint`]), with the [`clock_s`] second
    /// it last did, that the `keys` table no longer holds (pushed out, evicted, or never
    /// cached): with the table's own, they bypass the failed-attempt throttle for
    /// [`VOUCHED_FOR`]. A hash in the table needs no entry here: its credential says when it
    /// was read.
    vouched: quick_cache::sync::Cache<u64, u32>,
    tenants: Moka<(AccountId, TenantId), Option<Tenant>>,
    max_keys: u64,
    ttl_s: u32,
    generation: AtomicU64,
    /// False until the change-log follower knows where the log stands; until then nothing is
    /// remembered, so no change can slip between filling the cache and following the log.
    following: AtomicBool,
}

impl Cache {
    #[must_use]
    pub fn new(config: CacheConfig) -> Self {
        let capacity = usize::try_from(config.max_keys).unwrap_or(usize::MAX);
        Self {
            keys: Keys::with(capacity, config.max_keys, UnitWeighter, DefaultHashBuilder::default(), CollectEvicted),
            evicted_keys: DashMap::with_hasher(DefaultHashBuilder::default()),
            evicted_count: AtomicUsize::new(0),
            evicted_floor: AtomicU64::new(0),
            max_evictions: capacity.max(MIN_EVICTIONS),
            accounts: DashMap::new(),
            scope_lists: DashMap::new(),
            unknown: Moka::builder().max_capacity(config.max_unknown).time_to_live(config.unknown_ttl).build(),
            vouched: quick_cache::sync::Cache::new(capacity),
            tenants: Moka::builder()
                .max_capacity(config.max_keys)
                .time_to_live(config.ttl)
                .support_invalidation_closures()
                .build(),
            max_keys: config.max_keys,
            ttl_s: u32::try_from(config.ttl.as_secs()).unwrap_or(u32::MAX),
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

    /// Starts an eviction: the generation it makes current.
    fn bump(&self) -> u64 {
        self.generation.fetch_add(1, Ordering::AcqRel) + 1
    }

    fn evict_key(&self, id: KeyId) {
        let eviction = KeyEviction { generation: self.bump(), at_s: clock_s() };
        let count = self.evicted_count.fetch_add(1, Ordering::AcqRel) + 1;
        let mut added = true;
        self.evicted_keys
            .entry(id)
            .and_modify(|held| {
                added = false;
                // Two evictions of one key may arrive in either order: the later generation
                // is the one a credential must have been read after.
                if held.generation < eviction.generation {
                    *held = eviction;
                }
            })
            .or_insert(eviction);
        if !added {
            self.evicted_count.fetch_sub(1, Ordering::AcqRel);
        } else if count > self.max_evictions {
            self.raise_floor();
        }
    }

    /// Makes every credential read before now a miss, then drops the eviction records that
    /// covers (those of later evictions, made meanwhile, stay).
    fn raise_floor(&self) {
        let floor = self.bump();
        self.evicted_floor.fetch_max(floor, Ordering::AcqRel);
        self.forget_evictions(|e| e.generation <= floor);
        tracing::info!(
            max = self.max_evictions,
            "key evictions reached their bound: every cached credential will be read again"
        );
    }

    /// Drops the eviction records `drop` picks, counting each.
    fn forget_evictions(&self, drop: impl Fn(&KeyEviction) -> bool) {
        self.evicted_keys.retain(|_, e| {
            let dropped = drop(e);
            if dropped {
                self.evicted_count.fetch_sub(1, Ordering::AcqRel);
            }
            !dropped
        });
        if self.evicted_count.load(Ordering::Acquire) == 0 {
            self.evicted_keys.shrink_to_fit();
        }
    }

    fn evict_account(&self, id: AccountId) {
        self.bump();
        if let Some((_, shared)) = self.accounts.remove(&id) {
            shared.mark_stale();
        }
        let _ = self.tenants.invalidate_entries_if(move |(account, _), _| *account == id);
    }

    fn evict_tenant(&self, account: AccountId, id: TenantId) {
        self.bump();
        self.tenants.invalidate(&(account, id));
    }

    /// Whether an eviction of its key came after `credential` was read. The record is looked up
    /// before the floor is read: a record dropped by [`Cache::raise_floor`] was dropped after
    /// the floor was raised, so a lookup that misses it sees the raised floor.
    fn evicted_since_read(&self, credential: &Cached) -> bool {
        (self.evicted_count.load(Ordering::Acquire) != 0
            && self.evicted_keys.get(&credential.key.id).is_some_and(|e| e.generation > credential.generation))
            || credential.generation < self.evicted_floor.load(Ordering::Acquire)
    }

    /// Housekeeping, called by the change-log follower at each poll: forgets key evictions
    /// older than the TTL. Every credential such an eviction refuses began its read before the
    /// eviction's generation, so at or before its second: it is past its TTL by the clock of
    /// any hit that no longer finds the record ([`Cache::remembered`] reads the clock after the
    /// records).
    pub fn tidy(&self) {
        if self.evicted_count.load(Ordering::Acquire) == 0 {
            return;
        }
        let now_s = clock_s();
        self.forget_evictions(|e| now_s.saturating_sub(e.at_s) >= self.ttl_s);
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
            if self.evicted_since_read(&hit) {
                // Evicted by id: out of the table, still vouched for.
                self.keys.remove_if(hash, |held| Arc::ptr_eq(held, &hit));
                self.vouch_for(hash, &hit);
                return None;
            }
            // The clock is read after the eviction records (see `tidy`).
            if hit.account.is_stale() || hit.age_s(clock_s()) >= self.ttl_s {
                return None;
            }
            count_hit();
            return Some(Some(hit));
        }
        if self.unknown.contains_key(hash) {
            count_hit();
            return Some(None);
        }
        None
    }

    /// Did a store lookup find a key for this hash within [`VOUCHED_FOR`]? (Revoked, expired,
    /// changed or not: only that it is a real key's, so looking it up again is no guess.)
    #[must_use]
    pub fn vouched(&self, hash: &KeyHash) -> bool {
        let now_s = clock_s();
        let recent = |at_s: u32| u64::from(now_s.saturating_sub(at_s)) < VOUCHED_FOR.as_secs();
        self.keys.peek(hash).is_some_and(|c| recent(c.loaded_s))
            || self.vouched.get(&fingerprint(hash)).is_some_and(recent)
    }

    /// Remembers that `hash` was `credential`'s when it was read, for a hash leaving (or never
    /// entering) the table.
    fn vouch_for(&self, hash: &KeyHash, credential: &Cached) {
        self.vouched.insert(fingerprint(hash), credential.loaded_s);
    }

    /// The account's shared copy: the one already held if it is still this (as the store just
    /// read it), else this one, and the held one is stale.
    fn shared_account(&self, account: Account) -> Arc<SharedAccount> {
        if let Some(held) = self.accounts.get(&account.id)
            && held.account == account
            && !held.is_stale()
        {
            return Arc::clone(&held);
        }
        // Bounded like the keys: copies no credential holds go first, then every copy (their
        // credentials are read again).
        if self.accounts.len() as u64 >= self.max_keys {
            self.let_go_of_accounts(|a| Arc::strong_count(a) > 1);
            if self.accounts.len() as u64 >= self.max_keys {
                self.let_go_of_accounts(|_| false);
            }
        }
        let shared = Arc::new(SharedAccount::new(account));
        if let Some(replaced) = self.accounts.insert(shared.id, Arc::clone(&shared)) {
            replaced.mark_stale();
        }
        shared
    }

    /// Removes the shared account copies `keep` refuses, each marked stale first (a copy leaves
    /// the map only marked, so every live copy a credential holds is the tracked one).
    fn let_go_of_accounts(&self, keep: impl Fn(&Arc<SharedAccount>) -> bool) {
        self.accounts.retain(|_, a| {
            let kept = keep(a);
            if !kept {
                a.mark_stale();
            }
            kept
        });
    }

    /// The shared copy of a scope list: the one held if there is one, else this one.
    fn shared_scopes(&self, scopes: Arc<[Scope]>) -> Arc<[Scope]> {
        if let Some(held) = self.scope_lists.get(&*scopes) {
            return Arc::clone(held.key());
        }
        if self.scope_lists.len() >= MAX_SCOPE_LISTS {
            self.scope_lists.clear();
        }
        self.scope_lists.insert(Arc::clone(&scopes), ());
        scopes
    }

    /// A cache miss: the key with this hash from `store`, remembered when it is safe to.
    ///
    /// # Errors
    /// The store failed.
    pub async fn load(&self, hash: &KeyHash, store: &dyn Store) -> Result<Option<Credential>> {
        metrics::counter!("keygate_auth_cache_misses_total").increment(1);
        // Read before the ticket: an eviction after the ticket is no earlier than this second.
        let read_s = clock_s();
        let ticket = self.fill_ticket();
        let found = store.find_key_by_hash(hash).await?;
        let Some(ticket) = ticket.filter(|_| self.may_fill(ticket)) else {
            return Ok(found.map(|(key, account)| {
                let account = Arc::new(SharedAccount::new(account));
                let credential = Arc::new(Cached::read(key.into(), account, 0, read_s));
                self.vouch_for(hash, &credential);
                credential
            }));
        };
        let Some((key, account)) = found else {
            self.unknown.insert(*hash, ());
            return Ok(None);
        };
        let mut key = CachedKey::from(key);
        key.scopes = key.scopes.map(|s| self.shared_scopes(s));
        let credential = Arc::new(Cached::read(key, self.shared_account(account), ticket, read_s));
        let mut evicted = Evicted::default();
        self.keys.insert_with_lifecycle(*hash, Arc::clone(&credential), &mut evicted);
        // What the insert pushed out is still a key's hash.
        for (gone, c) in evicted.0 {
            self.vouch_for(&gone, &c);
        }
        // An eviction that began between the check above and the insert may have looked before
        // it was made: then the fill is undone. One that begins after this check is recorded
        // with a later generation than the credential's.
        if !self.may_fill(Some(ticket)) {
            self.keys.remove_if(hash, |held| Arc::ptr_eq(held, &credential));
            self.vouch_for(hash, &credential);
        }
        Ok(Some(credential))
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

    /// Forgets everything (the follower lost track of the change log); the hashes held stay
    /// vouched for.
    pub fn clear(&self) {
        self.bump();
        for (hash, credential) in self.keys.drain() {
            self.vouch_for(&hash, &credential);
        }
        self.let_go_of_accounts(|_| false);
        self.scope_lists.clear();
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
    /// The whole stored key, so from the store: the cache keeps only what authentication reads
    /// ([`CachedKey`]), and the request path asks [`Cache::credential`].
    async fn find_key_by_hash(&self, hash: &KeyHash) -> Result<Option<(ApiKey, Account)>> {
        self.inner.find_key_by_hash(hash).await
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
    async fn record_requests(&self, chunks: &[keygate_store::RequestChunk]) -> Result<()> {
        self.inner.record_requests(chunks).await
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
    ) -> Result<keygate_store::RequestPage> {
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

#[cfg(test)]
mod tests {
    //! The cache's own bookkeeping on a real SQLite store: what is held, shared and forgotten.

    use keygate_domain::key::{HashSecret, KeyFormat, KeyHasher};
    use keygate_domain::scope::Catalog;

    use super::*;
    use crate::services::Principal;
    use crate::services::accounts::CreateAccountRequest;
    use crate::services::keys::CreateKeyRequest;
    use crate::{Keygate, Limits, Settings};

    const SECRET: &str = "cache-unit-test-secret-0123456789abcdef";

    struct Fixture {
        store: Arc<dyn Store>,
        /// `(account, [(key id, hash)])` for two accounts of three keys each.
        accounts: Vec<(AccountId, Vec<(KeyId, KeyHash)>)>,
        _dir: tempfile::TempDir,
    }

    async fn fixture() -> Fixture {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let store =
            keygate_store::connect(&format!("sqlite://{}", dir.path().join("k.db").display())).await.expect("a store");
        let settings = Settings {
            trusted_proxies: Vec::new(),
            client_ipv6_prefix: 64,
            key_format: KeyFormat::new("sk").expect("a format"),
            catalog: Catalog::default(),
            limits: Limits::default(),
            allow_query_key: false,
            max_failed_attempts_per_minute: 30,
            cache_max_keys: 100,
            idempotency_retention_seconds: 86_400,
            request_log_retention_days: 30,
            request_log: crate::settings::RequestLogMode::All,
            sessions: crate::SessionSettings::default(),
        };
        let secret = HashSecret::new(SECRET).expect("a secret");
        let hasher = KeyHasher::new(&secret);
        let keygate = Keygate::new(Arc::clone(&store), &settings, &secret);
        let (operator, ..) = keygate.init_operator().await.ok().flatten().expect("an operator");
        let mut accounts = Vec::new();
        for n in 0..2 {
            let req = CreateAccountRequest { name: format!("partner {n}"), ..CreateAccountRequest::default() };
            let (account, ..) =
                keygate.create_account(&Principal::cli(operator.clone()), req).await.expect("an account");
            let p = Principal::cli(account.clone());
            let mut keys = Vec::new();
            for k in 0..3 {
                // Keys 0 and 1 of each account hold one scope list, key 2 none (unrestricted).
                let scopes = (k < 2).then(|| vec!["calls:write".to_owned(), "sms:send".to_owned()]);
                let req =
                    CreateKeyRequest { name: format!("key {k}"), scopes: Some(scopes), ..CreateKeyRequest::default() };
                let (key, plaintext) = keygate.create_key(&p, req).await.expect("a key");
                keys.push((key.id, hasher.hash(&plaintext)));
            }
            accounts.push((account.id, keys));
        }
        Fixture { store, accounts, _dir: dir }
    }

    fn cache(max_keys: u64) -> Cache {
        let cache = Cache::new(CacheConfig { max_keys, ..CacheConfig::default() });
        cache.start_following();
        cache
    }

    async fn load(cache: &Cache, f: &Fixture, hash: &KeyHash) -> Credential {
        cache.load(hash, &*f.store).await.expect("the store").expect("a key")
    }

    fn held(cache: &Cache, hash: &KeyHash) -> bool {
        matches!(cache.remembered(hash), Some(Some(_)))
    }

    /// Every account copy a cached credential holds is the shared one, or stale.
    fn accounts_are_tracked(cache: &Cache) {
        for (_, c) in cache.keys.iter() {
            let shared = cache.accounts.get(&c.account.id);
            assert!(
                c.account.is_stale() || shared.is_some_and(|s| Arc::ptr_eq(&s, &c.account)),
                "a live copy of {} the cache does not track",
                c.account.id
            );
        }
    }

    #[tokio::test]
    async fn keys_of_one_account_share_one_copy_of_it() {
        let f = fixture().await;
        let cache = cache(100);
        let [a, b] = [0, 1].map(|k| f.accounts[0].1[k].1);
        let other = f.accounts[1].1[0].1;
        let (a, b, other) = (load(&cache, &f, &a).await, load(&cache, &f, &b).await, load(&cache, &f, &other).await);
        assert!(Arc::ptr_eq(&a.account, &b.account), "two keys of one account share it");
        assert!(!Arc::ptr_eq(&a.account, &other.account));
        assert_eq!(a.account.id, f.accounts[0].0);
        assert_eq!(other.account.id, f.accounts[1].0);
    }

    #[tokio::test]
    async fn keys_with_one_scope_list_share_one_copy_of_it_across_accounts() {
        let f = fixture().await;
        let cache = cache(100);
        let [a, b, unrestricted] = [0, 1, 2].map(|k| f.accounts[0].1[k].1);
        let other = f.accounts[1].1[1].1;
        let loaded = [a, b, other, unrestricted];
        let mut held = Vec::new();
        for hash in &loaded {
            held.push(load(&cache, &f, hash).await);
        }
        let list = held[0].key.scopes.as_ref().expect("a scope list");
        assert_eq!(list.iter().map(Scope::as_str).collect::<Vec<_>>(), ["calls:write", "sms:send"]);
        for c in &held[1..3] {
            assert!(Arc::ptr_eq(list, c.key.scopes.as_ref().expect("a list")), "one copy of the list");
        }
        assert!(held[3].key.scopes.is_none(), "an unrestricted key stays unrestricted");
        assert_eq!(cache.scope_lists.len(), 1);
    }

    #[tokio::test]
    async fn the_compact_copy_gets_every_verdict_the_stored_key_gets() {
        use keygate_domain::policy::{self, RequestFacts};

        let f = fixture().await;
        let (stored, account) = f.store.find_key_by_hash(&f.accounts[0].1[0].1).await.expect("store").expect("a key");
        let now = keygate_domain::time::now();
        let tenant = TenantId::generate();
        let with = |change: &dyn Fn(&mut ApiKey)| {
            let mut key = stored.clone();
            change(&mut key);
            key
        };
        let variants = [
            with(&|_| {}),
            with(&|k| k.revoked_at = Some(now)),
            with(&|k| k.expires_at = Some(now - chrono::Duration::seconds(1))),
            with(&|k| k.expires_at = Some(now + chrono::Duration::seconds(60))),
            with(&|k| k.allowed_ips = Some(Vec::new())),
            with(&|k| k.allowed_ips = Some(vec!["192.0.2.0/24".parse().expect("a network")])),
            with(&|k| k.tenant_ids = Some(vec![tenant])),
            with(&|k| k.scopes = None),
        ];
        let asked: Vec<Scope> = ["calls:write", "sms:send", "tenants:read", "accounts:write"]
            .iter()
            .map(|s| s.parse().expect("a scope"))
            .collect();
        let shared = Arc::new(SharedAccount::new(account.clone()));
        for (n, key) in variants.iter().enumerate() {
            let compact = Cached::new(CachedKey::from(key.clone()), Arc::clone(&shared));
            for ip in [None, Some("192.0.2.7".parse().expect("ip")), Some("198.51.100.7".parse().expect("ip"))] {
                let facts = RequestFacts { now, client_ip: ip };
                assert_eq!(
                    policy::check_key(key, &account, facts),
                    policy::check_key(&compact, &account, facts),
                    "variant {n}, {ip:?}"
                );
            }
            for scope in &asked {
                assert_eq!(policy::check_scope(key, &account, scope), policy::check_scope(&compact, &account, scope));
            }
            for t in [tenant, TenantId::generate()] {
                assert_eq!(key.covers_tenant(t), compact.covers_tenant(t), "variant {n}");
                let other = Tenant { id: t, account_id: AccountId::generate(), ..tenant_of(&account, t) };
                for tenant in [tenant_of(&account, t), other] {
                    assert_eq!(
                        policy::check_tenant(key, Some(&tenant)),
                        policy::check_tenant(&compact, Some(&tenant)),
                        "variant {n}"
                    );
                }
            }
            assert_eq!(compact.key.tenant_ids(), key.tenant_ids.as_deref());
            assert_eq!(compact.key.allowed_ips(), key.allowed_ips.as_deref());
            assert_eq!(compact.key.metadata(), &key.metadata);
        }
        // What few keys carry is boxed only when a key carries it.
        let mut tagged = stored.clone();
        tagged.metadata.insert("customer".to_owned(), Value::from("c_42"));
        assert!(CachedKey::from(stored.clone()).rare.is_none());
        assert_eq!(CachedKey::from(tagged.clone()).metadata(), &tagged.metadata);
    }

    fn tenant_of(account: &Account, id: TenantId) -> Tenant {
        let now = keygate_domain::time::now();
        Tenant {
            id,
            account_id: account.id,
            name: "t".to_owned(),
            external_id: None,
            status: keygate_domain::model::TenantStatus::Active,
            metadata: Map::new(),
            created_at: now,
            updated_at: now,
        }
    }

    #[tokio::test]
    async fn an_account_eviction_forgets_its_keys_its_copy_and_nothing_else() {
        let f = fixture().await;
        let cache = cache(100);
        for (_, keys) in &f.accounts {
            for (_, hash) in keys {
                load(&cache, &f, hash).await;
            }
        }
        let (gone, kept) = (&f.accounts[0], &f.accounts[1]);
        let copy = Arc::clone(&*cache.accounts.get(&gone.0).expect("the shared copy"));
        cache.evict(Eviction::Account(gone.0));
        assert!(copy.is_stale(), "the copy every cached key of the account holds is stale");
        for (_, hash) in &gone.1 {
            assert!(!held(&cache, hash), "a key of the evicted account is still held");
            assert!(cache.vouched(hash), "an eviction forgets the credential, not that the hash is a key's");
        }
        assert!(!cache.accounts.contains_key(&gone.0));
        accounts_are_tracked(&cache);
        // Read again, the keys share a fresh copy.
        let again = load(&cache, &f, &gone.1[0].1).await;
        assert!(!again.account.is_stale() && !Arc::ptr_eq(&again.account, &copy) && held(&cache, &gone.1[0].1));
        for (id, hash) in &kept.1 {
            assert!(held(&cache, hash), "another account's key {id} was evicted");
        }
        assert!(cache.accounts.contains_key(&kept.0));
    }

    #[tokio::test]
    async fn a_key_pushed_out_by_capacity_stays_vouched_and_evicting_it_touches_no_other() {
        let f = fixture().await;
        let cache = cache(2);
        let all: Vec<(KeyId, KeyHash)> = f.accounts.iter().flat_map(|(_, keys)| keys.clone()).collect();
        for (_, hash) in &all {
            load(&cache, &f, hash).await;
            // Two accounts fill the shared copies' bound (the keys' capacity) from here on.
            accounts_are_tracked(&cache);
        }
        let in_table: Vec<&(KeyId, KeyHash)> = all.iter().filter(|(_, h)| held(&cache, h)).collect();
        assert!((1..=2).contains(&in_table.len()), "{} of 6 held with room for 2", in_table.len());
        // The vouched table has room for as many hashes again as the key table (2 here).
        let pushed_out_vouched = all.iter().filter(|(_, h)| !held(&cache, h) && cache.vouched(h)).count();
        assert!(pushed_out_vouched >= 1, "a hash pushed out of the table is still a key's");
        // Evicting keys no longer held is harmless; evicting a held one forgets it.
        for (id, hash) in all.iter().filter(|(_, h)| !held(&cache, h)) {
            cache.evict(Eviction::Key(f.accounts[0].0, *id));
            assert!(!held(&cache, hash));
        }
        assert_eq!(all.iter().filter(|(_, h)| held(&cache, h)).count(), in_table.len());
        let (id, hash) = in_table[0];
        cache.evict(Eviction::Key(f.accounts[0].0, *id));
        assert!(!held(&cache, hash) && cache.keys.peek(hash).is_none(), "a hit on an evicted key drops it");
        assert!(cache.vouched(hash));
        for (_, other) in &in_table[1..] {
            assert!(held(&cache, other), "evicting one key evicted another");
        }
    }

    #[tokio::test]
    async fn a_key_read_before_its_eviction_is_a_miss_and_read_after_it_a_hit() {
        let f = fixture().await;
        let cache = cache(100);
        let [(id, a), (_, b)] = [0, 1].map(|k| f.accounts[0].1[k]);
        load(&cache, &f, &a).await;
        load(&cache, &f, &b).await;
        cache.evict(Eviction::Key(f.accounts[0].0, id));
        cache.evict(Eviction::Key(f.accounts[0].0, id));
        assert_eq!(cache.evicted_keys.len(), 1);
        assert_eq!(cache.evicted_count.load(Ordering::Acquire), 1, "one entry, counted once");
        assert!(!held(&cache, &a), "read before the eviction");
        assert!(held(&cache, &b), "another key of the account");
        load(&cache, &f, &a).await;
        assert!(held(&cache, &a), "read after the eviction");
        cache.tidy();
        assert_eq!(cache.evicted_keys.len(), 1, "an eviction younger than the TTL is kept");
        assert!(held(&cache, &a));
    }

    #[tokio::test]
    async fn past_their_bound_key_evictions_make_every_earlier_read_a_miss_and_are_dropped() {
        let f = fixture().await;
        let mut cache = cache(100);
        cache.max_evictions = 3;
        let [(_, a), (_, b)] = [0, 1].map(|k| f.accounts[0].1[k]);
        load(&cache, &f, &a).await;
        load(&cache, &f, &b).await;
        // Evictions of keys the cache does not hold (created keys' change-log rows, say).
        for _ in 0..3 {
            cache.evict(Eviction::Key(f.accounts[0].0, KeyId::generate()));
        }
        assert!(held(&cache, &a) && held(&cache, &b), "within the bound nothing cached is touched");
        cache.evict(Eviction::Key(f.accounts[0].0, KeyId::generate()));
        assert!(cache.evicted_keys.is_empty() && cache.evicted_count.load(Ordering::Acquire) == 0);
        assert!(!held(&cache, &a) && !held(&cache, &b), "past it, what was read before is read again");
        assert!(cache.vouched(&a) && cache.vouched(&b));
        load(&cache, &f, &a).await;
        assert!(held(&cache, &a), "read after the floor");
    }

    #[tokio::test]
    async fn tidying_forgets_evictions_only_once_what_they_refuse_is_past_its_ttl() {
        let f = fixture().await;
        let cache = Cache::new(CacheConfig { ttl: Duration::from_secs(1), ..CacheConfig::default() });
        cache.start_following();
        let (id, hash) = f.accounts[0].1[0];
        let before = load(&cache, &f, &hash).await;
        cache.evict(Eviction::Key(f.accounts[0].0, id));
        cache.tidy();
        assert_eq!(cache.evicted_count.load(Ordering::Acquire), 1);
        assert!(cache.remembered(&hash).is_none());
        tokio::time::sleep(Duration::from_millis(2100)).await;
        cache.tidy();
        assert!(cache.evicted_keys.is_empty() && cache.evicted_count.load(Ordering::Acquire) == 0);
        // The credential read before the eviction, were it still in the table, is past its TTL.
        cache.keys.insert(hash, Arc::clone(&before));
        assert!(cache.remembered(&hash).is_none(), "past its TTL");
    }

    #[tokio::test]
    async fn past_their_bound_the_shared_copies_are_let_go_of_only_as_stale() {
        let f = fixture().await;
        // Room for one key, so for one account's copy.
        let cache = cache(1);
        let (a, b) = (f.accounts[0].1[0].1, f.accounts[1].1[0].1);
        let first = load(&cache, &f, &a).await;
        accounts_are_tracked(&cache);
        let second = load(&cache, &f, &b).await;
        accounts_are_tracked(&cache);
        assert!(first.account.is_stale(), "the copy a cached key still held was let go of, marked");
        assert!(!second.account.is_stale() && cache.accounts.len() == 1);
        assert!(!held(&cache, &a), "a key holding a let-go copy is read again");
        let again = load(&cache, &f, &a).await;
        assert!(!again.account.is_stale());
        accounts_are_tracked(&cache);
    }

    #[tokio::test]
    async fn a_credential_past_its_ttl_is_read_again_and_an_unfollowed_cache_holds_nothing() {
        let f = fixture().await;
        let hash = f.accounts[0].1[0].1;
        let stale = Cache::new(CacheConfig { ttl: Duration::ZERO, ..CacheConfig::default() });
        stale.start_following();
        load(&stale, &f, &hash).await;
        assert!(stale.remembered(&hash).is_none(), "a credential past its TTL is a miss");

        let unfollowed = Cache::new(CacheConfig::default());
        load(&unfollowed, &f, &hash).await;
        assert!(unfollowed.remembered(&hash).is_none() && unfollowed.keys.is_empty());
        assert!(unfollowed.vouched(&hash), "a found hash is vouched for even when not cached");
        assert!(!unfollowed.vouched(&KeyHash::from_bytes([7; 32])));
    }

    #[tokio::test]
    async fn a_changed_account_is_not_shared_with_its_old_copy() {
        let f = fixture().await;
        let cache = cache(100);
        let [(_, a), (_, b)] = [0, 1].map(|k| f.accounts[0].1[k]);
        let first = load(&cache, &f, &a).await;
        let mut changed = Account::clone(&first.account);
        changed.rate_limit_per_minute += 1;
        let shared = cache.shared_account(changed.clone());
        assert!(!Arc::ptr_eq(&shared, &first.account) && **shared == changed);
        assert!(first.account.is_stale() && !held(&cache, &a), "a replaced copy is stale, and its keys misses");
        let second = load(&cache, &f, &b).await;
        assert_eq!(**second.account, **first.account, "the store's copy replaced the changed one");
        assert!(!Arc::ptr_eq(&second.account, &shared) && shared.is_stale());
    }
}
