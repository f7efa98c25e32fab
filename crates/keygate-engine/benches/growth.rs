//! Growth: what a large key population costs. Three figures, each printed as a ratio measured in
//! this run (nothing here asserts a time):
//!
//! 1. A verify of a cached key with 1,000,000 keys in the credential cache against the same
//!    verify with 1,000 in it (goal ≤ 1.2×): checks 2–8 and the scope, as `hot_path` measures
//!    it. Both caches are configured alike and hold keys of the same SQLite database; batches of
//!    each alternate (the order flips every round) and the medians of the batches are compared.
//!    Every verify picks a random key of its whole population, so the 1M cache's lookups miss
//!    the CPU caches as they would in production; the picked keys are copied into a small buffer
//!    first, as a request's bytes would be hot. The cache lookup alone (`Cache::remembered` on a
//!    precomputed hash) is measured the same way, to tell it from the rest of the verify. And
//!    the machine's floor for any table too large for the CPU's caches: one random memory access
//!    (a chase through a cycle of 64-byte lines spread over as much memory as the million keys
//!    took, each load's address read by the one before), against the ~0.2× of the 1k verify the
//!    goal leaves for everything the larger table adds.
//! 2. The process's resident memory (`VmRSS`) with 1,000,000 keys cached, minus before (goal
//!    ≤ 300 MB), in MB and bytes per key; then, in a fresh process (this binary run again), what
//!    one key's share is made of: the credential and its entry in the `keys` table (a key held
//!    there has no `vouched` entry, and there is no index by id since session 12).
//! 3. Key creation through the store on SQLite (a temporary file, `keygate_store::connect`'s
//!    pragmas: WAL, `synchronous = NORMAL`): keys per second (goal ≥ 20,000/s) in batches, one
//!    `store.create_keys` transaction per account holding its 999 keys besides the first (1,000
//!    keys per account: the default `limits.max_keys_per_account`, checked once per batch), each
//!    key with its audit event and change row as `create_key` writes them; the first and last
//!    tenth of the batches, to show the cost as the table grows. Then the last 2,000 keys (at
//!    most a tenth) one `create_key` transaction each, as the API creates a key, on the full
//!    table: that rate too, against the store's own round trip.
//!
//! The engine's own cache (`Engine::new`) is built with `CacheConfig::default()`, whose
//! `max_keys` is below 1,000,000 and which no setting changes; this bench builds the same
//! `Cache` and `Authenticator` the engine does, with `max_keys` above the population (the TTL
//! stays the default's; the run prints how long the cache was in use, which must stay below it).
//!
//! Run: `cargo bench -p keygate-engine --bench growth`. About three minutes at 1,000,000 keys on
//! two cores: a minute and a half creating the keys (figure 3), one filling the cache through the
//! store; `GROWTH_KEYS=N` changes the population (at least 1,000) for a shorter run (20 s at
//! 100,000), and then figure 2 projects the memory to 1,000,000 from the cost per key (below about
//! 100,000 keys, fixed costs inflate that cost and the projection). Key creation slows as the
//! table grows (its rate at 100,000 keys is not its rate at 1,000,000).

#![expect(clippy::print_stdout, reason = "a benchmark prints its figures")]

#[allow(dead_code, reason = "this bench builds its own population, not the shared fixture")]
#[path = "common.rs"]
mod common;

use std::hint::black_box;
use std::net::IpAddr;
use std::pin::pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use keygate_domain::model::ApiKey;
use keygate_domain::{Environment, KeyHash, KeyId, Scope, policy, time};
use keygate_engine::auth::{Authenticator, Evaluation};
use keygate_engine::cache::{Cache, CacheConfig, Cached, CachedKey, Credential, SharedAccount};
use keygate_engine::services::Principal;
use keygate_engine::services::accounts::CreateAccountRequest;
use keygate_engine::usage::UsageRecorder;
use keygate_engine::{Keygate, Limits};
use keygate_store::Store;
use serde_json::json;

/// The allocator the `keygate` binary runs on: memory per key and the cost of a lookup that
/// misses the CPU caches depend on it.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const DEFAULT_KEYS: usize = 1_000_000;
const SMALL: usize = 1_000;
/// Keys verified per timed chunk: copied into a buffer first, then verified back to back.
const CHUNK: usize = 64;
/// Chunks per measured batch (131,072 verifies).
const CHUNKS_PER_BATCH: usize = 2_048;
/// Measured batches of each size; the order alternates every round.
const ROUNDS: usize = 15;
/// Concurrent streams filling the cache (see [`fill`]).
const FILLERS: usize = 4;

fn population() -> usize {
    match std::env::var("GROWTH_KEYS") {
        Ok(v) => v
            .replace(['_', ','], "")
            .parse::<usize>()
            .unwrap_or_else(|_| panic!("GROWTH_KEYS={v}: not a number"))
            .max(SMALL),
        Err(_) => DEFAULT_KEYS,
    }
}

/// The process's resident set in bytes, from `/proc/self/status`.
fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).expect("VmRSS");
    let kb: u64 = line.split_whitespace().nth(1).and_then(|n| n.parse().ok()).expect("VmRSS in kB");
    kb * 1024
}

/// Polls a future once: `None` if it would have to wait (a cache hit never does).
fn now<F: Future>(f: F) -> Option<F::Output> {
    let mut f = pin!(f);
    match f.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(v) => Some(v),
        Poll::Pending => None,
    }
}

struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n as u64) as usize
    }
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

/// One measured batch: [`CHUNKS_PER_BATCH`] times, [`CHUNK`] random items of `pool` are copied
/// into `buf` (untimed), then `op` runs on each of them back to back (timed). Returns the mean
/// nanoseconds per `op`, and how many times it answered `false` (not from memory).
fn batch<T>(
    pool: &[T],
    rng: &mut Rng,
    buf: &mut [T],
    copy: impl Fn(&mut T, &T),
    mut op: impl FnMut(&T) -> bool,
) -> (f64, u64) {
    let mut timed = Duration::ZERO;
    let mut misses = 0;
    for _ in 0..CHUNKS_PER_BATCH {
        for slot in buf.iter_mut() {
            copy(slot, &pool[rng.below(pool.len())]);
        }
        let t = Instant::now();
        for item in buf.iter() {
            if !op(black_box(item)) {
                misses += 1;
            }
        }
        timed += t.elapsed();
    }
    (timed.as_secs_f64() * 1e9 / (CHUNKS_PER_BATCH * CHUNK) as f64, misses)
}

/// A verify of a presented key as `hot_path` measures it: checks 2–8 (format and checksum, HMAC,
/// the credential cache, the policy), then the scope. `false` if it had to wait for the store.
fn verify(auth: &Authenticator, key: &str, ip: IpAddr, scope: &Scope) -> bool {
    match now(auth.evaluate(key, Some(ip))) {
        Some(Ok(Evaluation { credential: Some(c), outcome: Ok(()) })) => {
            black_box(policy::check_scope(&*c, &c.account, scope).is_ok());
            true
        }
        Some(_) => panic!("a key of the population did not verify"),
        None => false,
    }
}

/// Verifies every key once (each a cache miss read from the store, then remembered), in
/// [`FILLERS`] interleaved streams so the store's connections work in parallel.
async fn fill(auth: &Authenticator, keys: &[String], ip: IpAddr) {
    let stream = |first: usize| async move {
        for key in keys.iter().skip(first).step_by(FILLERS) {
            let e = auth.evaluate(key, Some(ip)).await.expect("store");
            assert!(e.credential.is_some() && e.outcome.is_ok(), "a created key did not verify");
        }
    };
    tokio::join!(stream(0), stream(1), stream(2), stream(3));
}

/// Set in the process [`breakdown`] starts: hold this many keys and print what each part took.
const BREAKDOWN_ENV: &str = "GROWTH_BREAKDOWN_KEYS";

/// Runs this binary again to measure, per key, what the credential and its cache entry take:
/// `[credential, keys entry]` in bytes.
fn breakdown(n: usize) -> Option<[f64; 2]> {
    let out =
        std::process::Command::new(std::env::current_exe().ok()?).env(BREAKDOWN_ENV, n.to_string()).output().ok()?;
    let text = String::from_utf8(out.stdout).ok()?;
    let v: Vec<f64> = text.split_whitespace().filter_map(|x| x.parse().ok()).collect();
    (out.status.success() && v.len() == 2).then(|| [v[0], v[1]])
}

/// The child's side of [`breakdown`]: `n` credentials shaped as the population's (one account
/// shared by all, as the cache shares it), then a table shaped as the engine's `keys` (hash →
/// credential) holding them; nothing is freed in between, so each resident-memory delta is that
/// part alone. (The `vouched` table holds only hashes the `keys` table does not.)
fn breakdown_child(n: usize) {
    let settings = common::settings();
    let hasher = keygate_domain::KeyHasher::new(&common::secret());
    let scopes = scopes();
    let now = time::now();
    let account = keygate_domain::model::Account {
        id: keygate_domain::AccountId::generate(),
        name: "Partner 0".into(),
        status: keygate_domain::model::AccountStatus::Active,
        operator: false,
        allowed_ips: Vec::new(),
        rate_limit_per_minute: Limits::default().default_account_rate_limit_per_minute,
        created_at: now,
        updated_at: now,
    };
    let plaintexts: Vec<_> = (0..n).map(|_| settings.key_format.generate(Environment::Live)).collect();
    let hashes: Vec<KeyHash> = plaintexts.iter().map(|p| hasher.hash(p)).collect();
    let config = CacheConfig { max_keys: n as u64 + n as u64 / 4 + 1_000, ..CacheConfig::default() };

    let account = Arc::new(SharedAccount::new(account));
    let shared_scopes: Arc<[Scope]> = Arc::from(scopes.clone());
    let before = rss_bytes();
    let credentials: Vec<Credential> = plaintexts
        .iter()
        .zip(&hashes)
        .enumerate()
        .map(|(i, (p, h))| {
            let mut key = CachedKey::from(new_key(&account, i, *h, p.last4(), &scopes));
            // One copy of the list for all, as the cache shares it.
            key.scopes = Some(Arc::clone(&shared_scopes));
            Arc::new(Cached::new(key, Arc::clone(&account)))
        })
        .collect();
    let held = rss_bytes();
    let capacity = usize::try_from(config.max_keys).expect("fits");
    let keys = quick_cache::sync::Cache::<KeyHash, Credential>::new(capacity);
    for (h, c) in hashes.iter().zip(&credentials) {
        keys.insert(*h, Arc::clone(c));
    }
    let in_keys = rss_bytes();
    let per_key = |from: u64, to: u64| to.saturating_sub(from) as f64 / n as f64;
    // The Vec holding the credentials is the bench's, not the cache's: 8 bytes a key.
    println!("{} {}", per_key(before, held) - 8.0, per_key(held, in_keys));
    drop((credentials, keys));
}

fn scopes() -> Vec<Scope> {
    ["calls:write", "sms:send", "tenants:read"].iter().map(|s| s.parse().expect("scope")).collect()
}

/// A key of the population: three scopes, no tenant or IP restriction, as the key use case
/// builds one.
fn new_key(
    account: &keygate_domain::model::Account,
    i: usize,
    hash: KeyHash,
    last4: String,
    scopes: &[Scope],
) -> ApiKey {
    let now = time::now();
    ApiKey {
        id: KeyId::generate(),
        account_id: account.id,
        name: format!("key {i}"),
        prefix: "sk".to_owned(),
        environment: Environment::Live,
        hash,
        last4,
        scopes: Some(scopes.to_vec()),
        tenant_ids: None,
        allowed_ips: None,
        rate_limit_per_minute: 100,
        expires_at: None,
        revoked_at: None,
        revoked_reason: None,
        last_used_at: None,
        last_used_ip: None,
        metadata: serde_json::Map::new(),
        created_at: now,
        created_by: Some("cli".to_owned()),
        updated_at: now,
    }
}

fn main() {
    if let Ok(n) = std::env::var(BREAKDOWN_ENV) {
        breakdown_child(n.parse().expect("a number of keys"));
        return;
    }
    let started = Instant::now();
    let n = population();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().expect("runtime");
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("sqlite://{}/growth.db", dir.path().display());
    let settings = common::settings();
    let per_account = Limits::default().max_keys_per_account as usize;
    let rss_start = rss_bytes();
    println!("growth: {n} keys ({} accounts of up to {per_account}), SQLite at {url}", n.div_ceil(per_account));

    // Figure 3: the population, created through the store.
    let (store, plaintexts, create) = rt.block_on(create_population(&url, &settings, n, per_account));
    let rss_created = rss_bytes();

    // Figure 2: the cache filled by verifying every key once (each a miss, then remembered).
    let config = CacheConfig { max_keys: n as u64 + n as u64 / 4 + 1_000, ..CacheConfig::default() };
    let authenticator = |cache: &Arc<Cache>| {
        cache.start_following();
        Authenticator::new(
            &settings,
            keygate_domain::KeyHasher::new(&common::secret()),
            Arc::clone(cache),
            Arc::clone(&store),
            Arc::new(UsageRecorder::default()),
            Arc::new(keygate_engine::ratelimit::InProcessLimiter::default()),
        )
    };
    let big_cache = Arc::new(Cache::new(config));
    let big = authenticator(&big_cache);
    let small_cache = Arc::new(Cache::new(config));
    let small = authenticator(&small_cache);
    let small_keys: Vec<String> = (0..SMALL).map(|i| plaintexts[i * (n / SMALL)].clone()).collect();
    let ip: IpAddr = "10.1.2.3".parse().expect("ip");

    let rss_before = rss_bytes();
    let fill_started = Instant::now();
    let tenth = n / 10;
    rt.block_on(fill(&big, &plaintexts[..tenth], ip));
    let rss_tenth = rss_bytes();
    rt.block_on(fill(&big, &plaintexts[tenth..], ip));
    let filled = fill_started.elapsed();
    let rss_after = rss_bytes();
    rt.block_on(fill(&small, &small_keys, ip));

    // Figure 1: interleaved batches, 1k vs the whole population; and the cache lookup alone
    // (`Cache::remembered` on a precomputed hash), to tell the lookup from the rest.
    let _guard = rt.enter();
    let scope: Scope = "calls:write".parse().expect("scope");
    let hashes = |keys: &[String]| -> Vec<KeyHash> {
        let hasher = keygate_domain::KeyHasher::new(&common::secret());
        keys.iter().map(|k| hasher.hash(&settings.key_format.parse(k).expect("well-formed").0)).collect()
    };
    let (small_hashes, big_hashes) = (hashes(&small_keys), hashes(&plaintexts));
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let mut keys_buf: Vec<String> = (0..CHUNK).map(|_| String::with_capacity(64)).collect();
    let mut hash_buf: Vec<KeyHash> = small_hashes[..CHUNK].to_vec();
    let copy_hash = |slot: &mut KeyHash, h: &KeyHash| *slot = *h;
    let copy_key = |slot: &mut String, key: &String| {
        slot.clear();
        slot.push_str(key);
    };
    let mut run = |kind: usize, rng: &mut Rng| match kind {
        0 => batch(&small_keys, rng, &mut keys_buf, copy_key, |k| verify(&small, k, ip, &scope)),
        1 => batch(&plaintexts, rng, &mut keys_buf, copy_key, |k| verify(&big, k, ip, &scope)),
        2 => batch(&small_hashes, rng, &mut hash_buf, copy_hash, |h| black_box(small_cache.remembered(h)).is_some()),
        _ => batch(&big_hashes, rng, &mut hash_buf, copy_hash, |h| black_box(big_cache.remembered(h)).is_some()),
    };
    let measure_started = Instant::now();
    // Warm-up, discarded: the caches' pending maintenance, the branch predictors, the CPU caches.
    for kind in 0..4 {
        let _ = run(kind, &mut rng);
    }
    let mut ns: [Vec<f64>; 4] = Default::default();
    let mut misses = 0;
    for round in 0..ROUNDS {
        let order = if round % 2 == 0 { [0, 1, 2, 3] } else { [3, 2, 1, 0] };
        for kind in order {
            let (t, m) = run(kind, &mut rng);
            misses += m;
            ns[kind].push(t);
        }
    }
    let measure = measure_started.elapsed();
    let chase_bytes = usize::try_from(rss_after.saturating_sub(rss_before)).unwrap_or(usize::MAX).max(64 << 20);
    let mut chase = Chase::new(chase_bytes, &mut rng);
    let mut access: Vec<f64> = (0..5).map(|_| chase.ns_per_access(1 << 20)).collect();
    let access = median(&mut access);
    drop(chase);
    let (small_min, small_max) = min_max(&ns[0]);
    let (big_min, big_max) = min_max(&ns[1]);
    let [small_med, big_med, small_lookup, big_lookup] = ns.each_mut().map(|v| median(v));

    // What one key's share is made of, measured in a fresh process (this one has freed and
    // fragmented too much for small deltas to mean anything).
    let sizes = breakdown(n);

    let grown = rss_after.saturating_sub(rss_before);
    let mb = |b: u64| b as f64 / 1e6;
    let accounts = n.div_ceil(per_account);
    println!();
    println!("growth summary ({n} keys; ratios against a baseline or goal measured in this run):");
    println!(
        "  1. cached verify, {n} keys vs {SMALL}: median {big_med:.1} ns vs {small_med:.1} ns per verify = {:.3}× \
         (goal ≤ 1.2×; {:.3}× the goal)",
        big_med / small_med,
        big_med / small_med / 1.2,
    );
    println!(
        "     {ROUNDS} interleaved batches of {} verifies each (random key of the population; checks 2–8 + scope); \
         {n}: {big_min:.1}–{big_max:.1} ns, {SMALL}: {small_min:.1}–{small_max:.1} ns; verifies not answered from memory: {misses}",
        CHUNK * CHUNKS_PER_BATCH,
    );
    println!(
        "     of which the cache lookup alone (Cache::remembered, precomputed hash): {big_lookup:.1} ns vs \
         {small_lookup:.1} ns = {:.3}×; the rest (parse, HMAC, policy on the credential's fields, scope): \
         {:.1} ns vs {:.1} ns = {:.3}×",
        big_lookup / small_lookup,
        big_med - big_lookup,
        small_med - small_lookup,
        (big_med - big_lookup) / (small_med - small_lookup),
    );
    println!(
        "     the floor: one random memory access over {:.0} MiB (dependent loads, this process's allocator and \
         pages) {access:.1} ns, {:.2}× the {:.1} ns the goal leaves above the {SMALL}-key verify; a table reaching \
         a key in one such access could at best be {:.3}×",
        chase_bytes as f64 / f64::from(1 << 20),
        access / (small_med * 0.2),
        small_med * 0.2,
        (small_med + access) / small_med,
    );
    // The first tenth also pays what does not grow with the population (SQLite's page caches
    // warming, the caches' first allocations); the last nine tenths show the cost per key.
    let per_key = rss_after.saturating_sub(rss_tenth) as f64 / (n - tenth) as f64;
    let projected = rss_tenth.saturating_sub(rss_before) as f64 + per_key * (DEFAULT_KEYS - tenth) as f64;
    println!(
        "  2. RSS with {n} keys cached: +{:.1} MB ({:.0} bytes per key) = {:.3}× the 300 MB goal{}",
        mb(grown),
        grown as f64 / n as f64,
        if n == DEFAULT_KEYS { mb(grown) } else { projected / 1e6 } / 300.0,
        if n == DEFAULT_KEYS {
            String::new()
        } else {
            format!(" (projected to {DEFAULT_KEYS} keys: {:.1} MB)", projected / 1e6)
        },
    );
    println!(
        "     {per_key:.0} bytes per key over the last nine tenths; VmRSS {:.1} MB at start, {:.1} MB after creating \
         the keys, {:.1} MB before filling, {:.1} MB at a tenth, {:.1} MB after; filled by {n} uncached verifies \
         ({FILLERS} streams) in {:.1} s ({:.1} µs each)",
        mb(rss_start),
        mb(rss_created),
        mb(rss_before),
        mb(rss_tenth),
        mb(rss_after),
        filled.as_secs_f64(),
        micros(filled) / n as f64,
    );
    match sizes {
        Some([credential, keys_entry]) => println!(
            "     per key, in a fresh process holding {n} of each: the credential (Arc<Cached>: the compact CachedKey \
             and shares of its account and scope list, {} bytes inline) {credential:.0} bytes, its entry in `keys` (hash → Arc) \
             {keys_entry:.0}: {:.0} together",
            std::mem::size_of::<Cached>(),
            credential + keys_entry,
        ),
        None => println!("     (the per-key breakdown could not be measured: its process failed)"),
    }
    let rate = create.keys as f64 / create.store_time.as_secs_f64();
    let single = micros(create.single_time) / create.single_keys as f64;
    println!(
        "  3. store.create_keys on SQLite: {rate:.0} keys/s ({:.1} µs each) = {:.3}× the 20,000/s goal; one at a \
         time (store.create_key, as the API creates keys): {:.0} keys/s = {:.3}× the goal",
        micros(create.store_time) / create.keys as f64,
        rate / 20_000.0,
        1e6 / single,
        1e6 / single / 20_000.0,
    );
    println!(
        "     {} keys in {} batches (one per account, up to {}) in {:.1} s of store calls ({:.1} s with generating \
         and hashing them); first 10% of the batches {:.0}/s, last 10% {:.0}/s = {:.3}× as the table grows; then \
         {} keys one at a time on the full table, {single:.1} µs each = {:.1}× the store's round trip (SELECT 1, \
         p50 {:.1} µs); {accounts} accounts (with their first keys) in {:.1} s",
        create.keys,
        create.batches,
        per_account - 1,
        create.store_time.as_secs_f64(),
        create.loop_time.as_secs_f64(),
        create.first_rate,
        create.last_rate,
        create.last_rate / create.first_rate,
        create.single_keys,
        single / micros(create.ping_p50),
        micros(create.ping_p50),
        create.accounts_time.as_secs_f64(),
    );
    println!(
        "  cache: max_keys {} here; the engine's default (Engine::new) is {}; ttl {} s, elapsed from the first fill \
         to the last measurement {:.0} s",
        config.max_keys,
        CacheConfig::default().max_keys,
        config.ttl.as_secs(),
        (filled + measure).as_secs_f64(),
    );
    println!("  total run time {:.1} s", started.elapsed().as_secs_f64());
    drop(_guard);
    rt.block_on(store.close());
}

/// A random cycle through the 64-byte lines of one allocation: each line's first word holds the
/// index of the next, so every load waits for the one before (no overlap, no prefetch).
struct Chase {
    words: Vec<u64>,
    at: usize,
}

impl Chase {
    const WORDS_PER_LINE: usize = 8;

    fn new(bytes: usize, rng: &mut Rng) -> Self {
        let lines = bytes / 64;
        let mut order: Vec<usize> = (0..lines).collect();
        // Sattolo's shuffle: one cycle through every line.
        for i in (1..lines).rev() {
            let j = rng.below(i);
            order.swap(i, j);
        }
        let mut words = vec![0_u64; lines * Self::WORDS_PER_LINE];
        for (i, &line) in order.iter().enumerate() {
            words[line * Self::WORDS_PER_LINE] = order[(i + 1) % lines] as u64;
        }
        Self { words, at: 0 }
    }

    /// Mean nanoseconds per access over `steps` dependent accesses.
    fn ns_per_access(&mut self, steps: usize) -> f64 {
        let t = Instant::now();
        let mut at = self.at;
        for _ in 0..steps {
            at = self.words[at * Self::WORDS_PER_LINE] as usize;
        }
        let elapsed = t.elapsed();
        self.at = black_box(at);
        elapsed.as_secs_f64() * 1e9 / steps as f64
    }
}

fn min_max(v: &[f64]) -> (f64, f64) {
    v.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &x| (lo.min(x), hi.max(x)))
}

struct Creation {
    /// Created in batches, one `store.create_keys` per account.
    keys: usize,
    batches: usize,
    /// Inside `store.create_keys` only.
    store_time: Duration,
    /// The batches' whole loop: generating, hashing, building the audit events, and the store
    /// calls.
    loop_time: Duration,
    /// Over the first and the last tenth of the batches.
    first_rate: f64,
    last_rate: f64,
    /// Created one at a time (`store.create_key`) after the batches, on the full table.
    single_keys: usize,
    /// Inside `store.create_key` only.
    single_time: Duration,
    accounts_time: Duration,
    ping_p50: Duration,
}

/// Keys created one at a time at the end, for the rate the API gets (at most a tenth of them).
const SINGLE_KEYS: usize = 2_000;

/// A new key of `account` with the audit event the key use case writes for its creation.
fn created_key(
    account: &keygate_domain::model::Account,
    i: usize,
    format: &keygate_domain::KeyFormat,
    hasher: &keygate_domain::KeyHasher,
    scopes: &[Scope],
) -> (ApiKey, keygate_domain::model::AuditEvent, String) {
    let plaintext = format.generate(Environment::Live);
    let key = new_key(account, i, hasher.hash(&plaintext), plaintext.last4(), scopes);
    let audit = Principal::cli(account.clone()).audit(
        "api_key.created",
        "api_key",
        key.id,
        json!({
            "name": key.name, "environment": "live", "scopes": key.scopes, "tenant_ids": null,
            "allowed_ips": null, "rate_limit_per_minute": 100, "expires_at": null, "metadata": {},
        }),
    );
    (key, audit, plaintext.expose().to_owned())
}

/// Creates `n` keys: `n / per_account` accounts through the use case (each comes with its first
/// key), then the rest through the store: each account's keys in one `store.create_keys` batch,
/// except the last [`SINGLE_KEYS`], made one `store.create_key` each, as the key use case calls
/// it. Returns the raw store, every plaintext, and the timings.
async fn create_population(
    url: &str,
    settings: &keygate_engine::Settings,
    n: usize,
    per_account: usize,
) -> (Arc<dyn Store>, Vec<String>, Creation) {
    let store = keygate_store::connect(url).await.unwrap_or_else(|e| panic!("connect {url}: {e}"));
    let keygate = Keygate::new(Arc::clone(&store), settings, &common::secret());
    let (operator, ..) = keygate.init_operator().await.ok().flatten().expect("init");
    let op = Principal::cli(operator);

    let mut pings = Vec::with_capacity(2_000);
    for _ in 0..2_000 {
        let t = Instant::now();
        store.ping().await.expect("ping");
        pings.push(t.elapsed());
    }
    pings.sort_unstable();
    let ping_p50 = pings[pings.len() / 2];

    let accounts = n.div_ceil(per_account);
    let mut plaintexts = Vec::with_capacity(n);
    let mut owners = Vec::with_capacity(accounts);
    let t = Instant::now();
    for a in 0..accounts {
        let req = CreateAccountRequest { name: format!("Partner {a}"), ..CreateAccountRequest::default() };
        let (account, _, plaintext) = keygate.create_account(&op, req).await.expect("account");
        plaintexts.push(plaintext.expose().to_owned());
        owners.push(account);
    }
    let accounts_time = t.elapsed();

    let scopes = scopes();
    let max_keys = u64::from(Limits::default().max_keys_per_account);
    let format = &settings.key_format;
    let hasher = keygate_domain::KeyHasher::new(&common::secret());
    let to_create = n - accounts;
    let singles = SINGLE_KEYS.min(to_create / 10);
    let to_batch = to_create - singles;
    let mut batch_times = Vec::with_capacity(accounts);
    let (mut created, mut single_time) = (0usize, Duration::ZERO);
    let loop_started = Instant::now();
    let mut loop_time = Duration::ZERO;
    for account in &owners {
        let here = (per_account - 1).min(to_create - created);
        let batched = here.min(to_batch.saturating_sub(created));
        if batched > 0 {
            let batch: Vec<_> = (created..created + batched)
                .map(|i| {
                    let (key, audit, plaintext) = created_key(account, i, format, &hasher, &scopes);
                    plaintexts.push(plaintext);
                    (key, audit)
                })
                .collect();
            let t = Instant::now();
            store.create_keys(&batch, max_keys).await.expect("create_keys");
            batch_times.push((batched, t.elapsed()));
            created += batched;
            if created == to_batch {
                loop_time = loop_started.elapsed();
            }
        }
        for i in created..created + (here - batched) {
            let (key, audit, plaintext) = created_key(account, i, format, &hasher, &scopes);
            let t = Instant::now();
            store.create_key(&key, &audit, max_keys).await.expect("create_key");
            single_time += t.elapsed();
            plaintexts.push(plaintext);
        }
        created += here - batched;
    }
    let tenth = (batch_times.len() / 10).max(1);
    let rate = |times: &[(usize, Duration)]| {
        let (keys, time) = times.iter().fold((0, Duration::ZERO), |(k, t), (n, d)| (k + n, t + *d));
        keys as f64 / time.as_secs_f64()
    };
    let creation = Creation {
        keys: to_batch,
        batches: batch_times.len(),
        store_time: batch_times.iter().map(|(_, d)| *d).sum(),
        loop_time,
        first_rate: rate(&batch_times[..tenth]),
        last_rate: rate(&batch_times[batch_times.len() - tenth..]),
        single_keys: singles,
        single_time,
        accounts_time,
        ping_p50,
    };
    (store, plaintexts, creation)
}
