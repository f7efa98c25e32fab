//! The authorization hot path, in process: verifying a cached key with full policy evaluation
//! (format and checksum, HMAC, cache lookup, checks 4–8, scope, tenant), against the baselines
//! of its irreducible parts measured in the same run. Target: ≤ 1 µs median.
//!
//! Also one rate-limiter check (the in-process GCRA, compare-and-swap included): target ≤ 100 ns.
//!
//! Run: `cargo bench -p keygate-engine --bench hot_path`. The summary at the end prints each
//! median and its ratio to the HMAC-SHA256 baseline and to its target.

#![expect(clippy::print_stdout, reason = "a benchmark prints its figures")]

#[path = "common.rs"]
mod common;

use std::hint::black_box;
use std::net::IpAddr;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use criterion::Criterion;
use keygate_domain::gcra::Quota;
use keygate_domain::key::{KeyFormat, KeyHasher};
use keygate_domain::policy;
use keygate_domain::{Scope, TenantId};
use keygate_engine::auth::Evaluation;
use keygate_engine::ratelimit::{Clock, InProcessLimiter, LimitKey, SystemClock};
use keygate_engine::{Engine, Keygate};

/// Polls a future that must complete without waiting (a cache hit never awaits I/O).
fn now<F: Future>(f: F) -> F::Output {
    let mut f = pin!(f);
    match f.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(v) => v,
        Poll::Pending => panic!("a cached verification had to wait"),
    }
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().expect("runtime");
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("sqlite://{}/bench.db", dir.path().display());
    let (state, fixture) = rt.block_on(async {
        let f = common::fixture(&url).await;
        let state = Engine::new(Keygate::new(f.store.clone(), &f.settings, &common::secret()), &f.settings);
        (state, f)
    });
    let key = fixture.plaintext.clone();
    let ip: IpAddr = "10.1.2.3".parse().expect("ip");
    let scope: Scope = "calls:write".parse().expect("scope");
    let tenant_id: TenantId = fixture.tenant_id.parse().expect("tenant");
    let format = KeyFormat::default();
    let hasher = KeyHasher::new(&common::secret());
    let (parsed, _) = format.parse(&key).expect("parse");

    // Warm the caches (key and tenant), as any second request would find them.
    let _guard = rt.enter();
    let full = || {
        let Evaluation { credential, outcome } = now(state.auth.evaluate(black_box(&key), Some(ip))).expect("store");
        let credential = credential.expect("known");
        outcome.expect("valid");
        policy::check_scope(&*credential, &credential.account, &scope).expect("scope");
        let tenant = now(state.keygate.store.get_tenant(credential.account.id, tenant_id)).expect("tenant");
        policy::check_tenant(&*credential, tenant.as_ref()).expect("tenant ok");
    };
    rt.block_on(async {
        let _ = state.auth.evaluate(&key, Some(ip)).await;
        let _ = state.keygate.store.get_tenant(parsed_account(&state, &key).await, tenant_id).await;
    });

    let mut c = Criterion::default().configure_from_args();
    let mut g = c.benchmark_group("hot_path");
    g.bench_function("baseline_hmac_sha256", |b| b.iter(|| hasher.hash(black_box(&parsed))));
    g.bench_function("baseline_parse_checksum", |b| b.iter(|| format.parse(black_box(&key))));
    g.bench_function("verify_cached_full_policy", |b| b.iter(full));
    let limiter = InProcessLimiter::default();
    let limit_key = LimitKey::Key(keygate_domain::KeyId::generate());
    // A limit no bench run can exhaust, so every check takes the admitting path (CAS included).
    let quota = Quota::per_minute(u32::MAX);
    let start = SystemClock.now_ns();
    let mut tick = 0u64;
    g.bench_function("ratelimit_check", |b| {
        b.iter(|| {
            tick += 1;
            limiter.check_now(black_box(&limit_key), quota, 1, start + tick)
        })
    });
    g.bench_function("reject_malformed", |b| {
        b.iter(|| now(state.auth.evaluate(black_box("sk_live_nope"), Some(ip))).expect("no store"))
    });
    g.finish();
    c.final_summary();
    summary();
}

async fn parsed_account(state: &Engine, key: &str) -> keygate_domain::AccountId {
    let e = state.auth.evaluate(key, None).await.expect("store");
    e.credential.expect("known").account.id
}

fn median_ns(name: &str) -> Option<f64> {
    let dir =
        std::env::var("CARGO_TARGET_DIR").unwrap_or_else(|_| format!("{}/../../target", env!("CARGO_MANIFEST_DIR")));
    let path = format!("{dir}/criterion/hot_path/{name}/new/estimates.json");
    let text = std::fs::read_to_string(path).ok()?;
    let v: serde_json::Value = serde_json::from_str(&text).ok()?;
    v["median"]["point_estimate"].as_f64()
}

fn summary() {
    let Some(hmac) = median_ns("baseline_hmac_sha256") else { return };
    println!(
        "\nhot path summary (median; ratio to the HMAC baseline; ratio to the target: 1 µs, or 100 ns for one limiter check):"
    );
    for name in [
        "baseline_hmac_sha256",
        "baseline_parse_checksum",
        "verify_cached_full_policy",
        "reject_malformed",
        "ratelimit_check",
    ] {
        if let Some(ns) = median_ns(name) {
            let target = if name == "ratelimit_check" { 100.0 } else { 1000.0 };
            println!("  {name:<28} {ns:>8.1} ns   {:>5.2}× hmac   {:>5.3}× target", ns / hmac, ns / target);
        }
    }
}
