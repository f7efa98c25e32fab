//! Uncached verification: what a cache miss costs on each backend. Each sample parses the key,
//! hashes it, reads the key and its account from the store, and evaluates checks 4–8, for a
//! random one of 1,000 keys. The baseline, measured in the same run, is the store's own round
//! trip (`SELECT 1`). Targets: p99 ≤ 1 ms on SQLite, ≤ 2 ms on PostgreSQL.
//!
//! Run: `cargo bench -p keygate-engine --bench store_verify`. PostgreSQL is included when
//! `KEYGATE_TEST_POSTGRES_URL` is set (a scratch database is created and dropped).

#![expect(clippy::print_stdout, reason = "a benchmark prints its figures")]

#[path = "common.rs"]
mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use keygate_domain::key::{KeyFormat, KeyHasher};
use keygate_domain::policy::{self, RequestFacts};
use keygate_domain::time;
use keygate_engine::Keygate;
use keygate_engine::services::Principal;
use keygate_engine::services::keys::CreateKeyRequest;
use keygate_store::Store;

const KEYS: usize = 1_000;
const SAMPLES: usize = 5_000;

struct Percentiles {
    p50: Duration,
    p99: Duration,
}

fn percentiles(mut v: Vec<Duration>) -> Percentiles {
    v.sort_unstable();
    let at = |q: f64| v[((v.len() as f64 * q) as usize).min(v.len() - 1)];
    Percentiles { p50: at(0.50), p99: at(0.99) }
}

async fn run(label: &str, url: &str, target: Duration) {
    let f = common::fixture(url).await;
    let keygate = Keygate::new(Arc::clone(&f.store), &f.settings, &common::secret());
    let operator = f.store.operator_account().await.expect("store").expect("operator");
    let p = Principal::cli(operator);
    let mut keys = Vec::with_capacity(KEYS);
    for i in 0..KEYS {
        let req = CreateKeyRequest { name: format!("k{i}"), ..CreateKeyRequest::default() };
        keys.push(keygate.create_key(&p, req).await.expect("create").1.expose().to_owned());
    }
    let format = KeyFormat::default();
    let hasher = KeyHasher::new(&common::secret());
    let store: &dyn Store = &*f.store;

    let mut ping = Vec::with_capacity(SAMPLES);
    let mut verify = Vec::with_capacity(SAMPLES);
    let mut seed = 0x9E37_79B9_7F4A_7C15_u64;
    for _ in 0..SAMPLES {
        let t = Instant::now();
        store.ping().await.expect("ping");
        ping.push(t.elapsed());

        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let key = &keys[(seed % KEYS as u64) as usize];
        let t = Instant::now();
        let (plaintext, _) = format.parse(key).expect("well-formed");
        let (k, a) = store.find_key_by_hash(&hasher.hash(&plaintext)).await.expect("store").expect("known");
        policy::check_key(&k, &a, RequestFacts { now: time::now(), client_ip: Some([10, 0, 0, 1].into()) })
            .expect("valid");
        verify.push(t.elapsed());
    }
    let ping = percentiles(ping);
    let verify = percentiles(verify);
    println!(
        "{label:<10} uncached verify p50 {:>7.1} µs  p99 {:>7.1} µs | store round trip p50 {:>6.1} µs  p99 {:>6.1} µs | \
         p99 {:.2}× round trip, {:.2}× the {} µs target",
        verify.p50.as_secs_f64() * 1e6,
        verify.p99.as_secs_f64() * 1e6,
        ping.p50.as_secs_f64() * 1e6,
        ping.p99.as_secs_f64() * 1e6,
        verify.p99.as_secs_f64() / ping.p99.as_secs_f64(),
        verify.p99.as_secs_f64() / target.as_secs_f64(),
        target.as_micros(),
    );
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().expect("runtime");
    rt.block_on(async {
        let dir = tempfile::tempdir().expect("tempdir");
        run("sqlite", &format!("sqlite://{}/bench.db", dir.path().display()), Duration::from_millis(1)).await;
        match common::ScratchDatabase::create().await {
            Some(db) => {
                run("postgres", &db.url, Duration::from_millis(2)).await;
                db.drop().await;
            }
            None => println!("postgres   not run: set KEYGATE_TEST_POSTGRES_URL to include it"),
        }
    });
}
