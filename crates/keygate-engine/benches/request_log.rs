//! What one request-log record costs, against the target "≤ 1 µs of CPU per record, amortised".
//!
//! A request's record is paid for in two places:
//!
//! 1. **The hot path**, on the request's own thread (`keygate-http/src/context.rs`): one
//!    `RequestRecorder::count` of its usage counter, `keeps`, and `RequestRecorder::record`, which
//!    gives the record its `rl_` id and encodes it into its account's open chunk. Per request.
//!    Every 1,000 requests (100 ms at 10,000 req/s) the chunks due are taken, as the flusher takes
//!    them, and every 10,000 (one second) the counters, so the chunks' and the map's growth is
//!    paid as in production; what is taken is freed on another thread, as the flusher frees it
//!    after writing it (and counted there, below). On mimalloc, as the `keygate` binary runs.
//! 2. **The store**, on the flusher: `Store::record_requests` of what the flusher takes at each
//!    100 ms turn at 10,000 req/s, freed after, per record. The chunks come from a
//!    `RequestRecorder` fed 1,000 requests a turn; one measured iteration is one second of turns
//!    (ten writes, 10,000 records). Two ways of taking them:
//!    - `record_requests_by_turn`, as keygate does: at each turn the closed chunks and the open
//!      chunks of the accounts whose turn it is (a tenth of them), each holding about a second of
//!      its account's records;
//!    - `record_requests_every_100ms`, for comparison: every open chunk at every turn, as the
//!      previous version wrote (each account's 100 ms of records in a chunk).
//!
//!    On SQLite (a temporary file opened by `keygate_store::connect`: WAL, `synchronous =
//!    NORMAL`, the production pragmas) the write runs in process, on the flusher and SQLite's
//!    connection thread. On PostgreSQL (when `KEYGATE_TEST_POSTGRES_URL` is set; a scratch
//!    database `kg_bench_<ulid>` is created and dropped) the client's wall time includes the round
//!    trips and the server's work; the CPU is this process's plus that of the server's client
//!    backends serving the scratch database (read from `/proc`, so the server must run on this
//!    machine; its WAL writer and checkpointer, shared with other databases, and autovacuum are
//!    not counted).
//!
//! Also `Store::add_usage` of one second of counters (every key × 2 outcomes), per counter row
//! and amortised per request at 10,000 req/s.
//!
//! **CPU, not wall time.** Criterion is handed the CPU time of the measured work (the thread's
//! for the hot path; for the store, every thread of this process plus, on PostgreSQL, the
//! server's backends), read from `/proc/…/schedstat` after a `sched_yield` (which brings the
//! running thread's figure up to date). On a machine shared with builds, wall time measures the
//! queue for the CPU and the disk as much as the work; the summary prints the wall time beside
//! each figure (its mean) so the two can be compared.
//!
//! The traffic: 1,000 keys of 100 accounts (`KEYGATE_BENCH_REQUEST_LOG_KEYS` changes the number
//! of keys; accounts are a tenth of them), chosen at random per request; half act for a tenant;
//! one request in ten is refused. The request log is filled with 100,000 records
//! (`KEYGATE_BENCH_REQUEST_LOG_ROWS`) and the counters with 29 earlier days before anything is
//! measured, and both keep growing while the bench writes: the summary says how many rows the
//! log held before and after each backend's figures.
//!
//! Run: `cargo bench -p keygate-engine --bench request_log` (criterion's flags apply, e.g.
//! `-- --warm-up-time 1 --measurement-time 2`). The summary at the end prints each median and its
//! ratio to the 1 µs target: the hot path plus the store's `record_requests_by_turn`.

#![expect(clippy::print_stdout, reason = "a benchmark prints its figures")]

#[path = "common.rs"]
#[allow(dead_code, reason = "this bench uses only the scratch database of the shared set-up")]
mod common;

use std::cell::Cell;
use std::hint::black_box;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use chrono::{Days, NaiveDate};
use criterion::{Criterion, SamplingMode, Throughput};
use keygate_domain::{AccountId, KeyId, RequestId, TenantId, time};
use keygate_engine::requestlog::{Counted, Due, MAX_PENDING, RequestRecorder};
use keygate_engine::settings::RequestLogMode;
use keygate_store::{NewRequestRecord, RequestChunk, RequestRecord, Store, UsageCount};
use sqlx::Connection;
use tokio::runtime::Runtime;

/// The allocator the `keygate` binary runs on: a chunk's buffers grow on the request's thread and
/// are freed on the flusher's.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const TARGET_NS: f64 = 1_000.0;
const DEFAULT_KEYS: usize = 1_000;
const DEFAULT_PREFILL: u64 = 100_000;
/// Requests per flush of the log at 10,000 req/s and one flush every 100 ms.
const FLUSH_BATCH: usize = 1_000;
/// Flushes per measured iteration of the store: one second of them.
const TURNS: usize = 10;
/// The two ways of taking the chunks (module docs).
const SCHEDULES: [(&str, bool); 2] = [("by_turn", true), ("every_100ms", false)];
/// Requests per write of the counters at 10,000 req/s and one write a second.
const COUNT_BATCH: u64 = 10_000;
const REQUESTS_PER_SECOND: f64 = 10_000.0;
const OUTCOMES: [&str; 2] = ["ok", "rate_limited"];
/// Earlier days of counters in the table before the counters are measured.
const COUNTER_DAYS: u64 = 29;

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).filter(|&n| n > 0).unwrap_or(default)
}

// ---- CPU time ----

fn schedstat_ns(path: &str) -> Option<u64> {
    std::fs::read_to_string(path).ok()?.split_whitespace().next()?.parse().ok()
}

/// The calling thread's CPU time so far. A running thread's figure is brought up to date only at
/// a tick or a switch: the yield is a switch point.
fn thread_cpu() -> Duration {
    std::thread::yield_now();
    Duration::from_nanos(schedstat_ns("/proc/thread-self/schedstat").unwrap_or_else(|| panic!("schedstat")))
}

/// The CPU time so far of every thread of this process (SQLite's connection threads included).
fn process_cpu() -> Duration {
    std::thread::yield_now();
    let tasks = std::fs::read_dir("/proc/self/task").unwrap_or_else(|e| panic!("/proc/self/task: {e}"));
    let ns =
        tasks.filter_map(Result::ok).filter_map(|t| schedstat_ns(&format!("{}/schedstat", t.path().display()))).sum();
    Duration::from_nanos(ns)
}

/// Bytes this process has read and written through system calls so far (`rchar`, `wchar`).
fn process_io() -> (u64, u64) {
    let text = std::fs::read_to_string("/proc/self/io").unwrap_or_default();
    let field = |name: &str| {
        text.lines().find_map(|l| l.strip_prefix(name)).and_then(|v| v.trim().parse().ok()).unwrap_or_default()
    };
    (field("rchar:"), field("wchar:"))
}

/// The CPU time so far of the processes `pids` (the server's backends: idle between writes, so
/// their figures are up to date).
fn pids_cpu(pids: &[u32]) -> Duration {
    Duration::from_nanos(pids.iter().filter_map(|pid| schedstat_ns(&format!("/proc/{pid}/schedstat"))).sum())
}

// ---- the traffic ----

/// One caller of record: a key of an account, acting for a tenant or not.
#[derive(Clone, Copy)]
struct Caller {
    account: AccountId,
    key: KeyId,
    tenant: Option<TenantId>,
}

/// What the bench's requests are made of: keys of accounts, half of them acting for a tenant, a
/// few route templates, and a request id of the shape keygate generates.
struct Population {
    callers: Vec<Caller>,
    accounts: usize,
    routes: Vec<Arc<str>>,
    request_id: String,
}

impl Population {
    fn new(keys: usize) -> Self {
        let accounts: Vec<AccountId> = (0..keys.div_ceil(10)).map(|_| AccountId::generate()).collect();
        let callers = (0..keys)
            .map(|i| Caller {
                account: accounts[i % accounts.len()],
                key: KeyId::generate(),
                tenant: (i % 2 == 0).then(TenantId::generate),
            })
            .collect();
        let routes = ["/v1/verify", "/v1/api-keys/{id}", "/calls/{call_id}/recordings", "/v1/tenants"]
            .into_iter()
            .map(Arc::from)
            .collect();
        Self { callers, accounts: accounts.len(), routes, request_id: RequestId::generate().to_string() }
    }

    /// A random request: its caller, route, status and outcome (one in ten refused), client IP.
    fn pick(&self, seed: &mut u64) -> (Caller, &Arc<str>, u16, &'static str, IpAddr) {
        *seed ^= *seed << 13;
        *seed ^= *seed >> 7;
        *seed ^= *seed << 17;
        let r = *seed;
        let caller = self.callers[(r % self.callers.len() as u64) as usize];
        let route = &self.routes[((r >> 16) % self.routes.len() as u64) as usize];
        let (status, outcome) = if (r >> 24).is_multiple_of(10) { (429, OUTCOMES[1]) } else { (200, OUTCOMES[0]) };
        let ip = IpAddr::from([10, (r >> 32) as u8, (r >> 40) as u8, (r >> 48) as u8]);
        (caller, route, status, outcome, ip)
    }

    /// `n` whole records, made at random.
    fn records(&self, n: usize, seed: &mut u64) -> Vec<RequestRecord> {
        (0..n)
            .map(|_| {
                let (caller, route, status, outcome, ip) = self.pick(seed);
                let new = build(caller, time::truncate(time::now()), &self.request_id, route, status, outcome, ip);
                RequestRecord {
                    id: RequestRecord::generate_id(),
                    request_id: new.request_id.to_owned(),
                    at: new.at,
                    account_id: new.account_id,
                    key_id: new.key_id,
                    tenant_id: new.tenant_id,
                    route: new.route.to_owned(),
                    method: new.method.to_owned(),
                    status: new.status,
                    outcome: new.outcome.to_owned(),
                    client_ip: new.client_ip,
                    latency_us: new.latency_us,
                    via_key_id: new.via_key_id,
                }
            })
            .collect()
    }

    /// What the flusher takes at each of `turns` turns, from `recorder` fed [`FLUSH_BATCH`]
    /// requests a turn, by turn or everything every turn.
    fn turns(
        &self,
        recorder: &RequestRecorder,
        turn: &mut u64,
        turns: usize,
        by_turn: bool,
        seed: &mut u64,
    ) -> Vec<Vec<RequestChunk>> {
        (0..turns)
            .map(|_| {
                for _ in 0..FLUSH_BATCH {
                    let (caller, route, status, outcome, ip) = self.pick(seed);
                    recorder.record(&build(
                        caller,
                        time::truncate(time::now()),
                        &self.request_id,
                        route,
                        status,
                        outcome,
                        ip,
                    ));
                }
                *turn += 1;
                recorder.take(if by_turn { Due::Turn(*turn) } else { Due::All })
            })
            .collect()
    }

    /// One second of counters: every key, both outcomes.
    fn counts(&self, day: NaiveDate) -> Vec<UsageCount> {
        let mut rows = Vec::with_capacity(self.callers.len() * OUTCOMES.len());
        for (i, c) in self.callers.iter().enumerate() {
            for outcome in OUTCOMES {
                let count = if outcome == "ok" { 9 + (i as u64 % 3) } else { 1 };
                rows.push(UsageCount {
                    account_id: c.account,
                    key_id: c.key,
                    tenant_id: c.tenant,
                    day,
                    outcome,
                    count,
                });
            }
        }
        rows
    }
}

/// A record as `context.rs` hands it over.
#[inline]
fn build<'a>(
    caller: Caller,
    at: time::Timestamp,
    request_id: &'a str,
    route: &'a str,
    status: u16,
    outcome: &'a str,
    ip: IpAddr,
) -> NewRequestRecord<'a> {
    NewRequestRecord {
        request_id,
        at,
        account_id: caller.account,
        key_id: Some(caller.key),
        tenant_id: caller.tenant,
        route,
        method: "POST",
        status,
        outcome,
        client_ip: Some(ip),
        latency_us: 412,
        via_key_id: None,
    }
}

// ---- the hot path ----

/// What the measured routine used, summed over its calls in this run.
#[derive(Default)]
struct Totals {
    items: Cell<u64>,
    /// The measuring thread's CPU (the hot path's thread; the flusher's).
    thread: Cell<Duration>,
    /// This process's CPU, every thread.
    process: Cell<Duration>,
    /// The PostgreSQL backends' CPU.
    server: Cell<Duration>,
    wall: Cell<Duration>,
    /// Bytes this process read and wrote through system calls (SQLite's pages).
    io: Cell<(u64, u64)>,
    /// The store's figures: the bytes of the chunks written, and how many chunks.
    stored: Cell<(u64, u64)>,
}

struct Usage {
    thread: Duration,
    process: Duration,
    server: Duration,
    wall: Duration,
    io: (u64, u64),
}

impl Totals {
    fn add(&self, items: u64, u: &Usage) {
        self.items.set(self.items.get() + items);
        self.thread.set(self.thread.get() + u.thread);
        self.process.set(self.process.get() + u.process);
        self.server.set(self.server.get() + u.server);
        self.wall.set(self.wall.get() + u.wall);
        let (r, w) = self.io.get();
        self.io.set((r + u.io.0, w + u.io.1));
    }

    fn per_item_ns(&self, d: Duration) -> f64 {
        d.as_secs_f64() * 1e9 / self.items.get().max(1) as f64
    }

    /// CPU / wall.
    fn cpu_per_wall(&self) -> f64 {
        (self.process.get() + self.server.get()).as_secs_f64() / self.wall.get().as_secs_f64().max(1e-12)
    }
}

/// What `iters` requests pay, in the thread's CPU time: each its counter, and its record kept.
/// Every 1,000 requests the chunks due are taken, and every 10,000 the counters, and sent to
/// `flusher` to be freed there, as the flusher takes and frees them.
fn hot_path(
    population: &Population,
    recorder: &RequestRecorder,
    iters: u64,
    seed: &mut u64,
    flusher: &mpsc::Sender<Box<dyn Send>>,
    totals: &Totals,
) -> Duration {
    let mut counters = RequestRecorder::new(RequestLogMode::All, MAX_PENDING);
    let (cpu, wall) = (thread_cpu(), Instant::now());
    let mut done = 0u64;
    let mut turn = 0;
    while done < iters {
        let n = (iters - done).min(FLUSH_BATCH as u64);
        for _ in 0..n {
            let (caller, route, status, outcome, ip) = population.pick(seed);
            let at = time::truncate(time::now());
            counters.count(Counted {
                account: caller.account,
                key: caller.key,
                tenant: caller.tenant,
                day: at.date_naive(),
                outcome,
            });
            if recorder.keeps(status, outcome) {
                recorder.record(&build(caller, at, &population.request_id, route, status, outcome, ip));
            }
        }
        done += n;
        turn += 1;
        let _ = flusher.send(Box::new(recorder.take(Due::Turn(turn))));
        if done.is_multiple_of(COUNT_BATCH) {
            let fresh = RequestRecorder::new(RequestLogMode::All, MAX_PENDING);
            let _ = flusher.send(Box::new(std::mem::replace(&mut counters, fresh)));
        }
    }
    let (wall, cpu) = (wall.elapsed(), thread_cpu().saturating_sub(cpu));
    let _ = flusher.send(Box::new(counters));
    let usage = Usage { thread: cpu, process: cpu, server: Duration::ZERO, wall, io: (0, 0) };
    totals.add(iters, &usage);
    cpu
}

// ---- the store ----

/// A connection to the PostgreSQL server, to find the backends serving the scratch database.
struct Server {
    admin: sqlx::PgConnection,
    database: String,
}

impl Server {
    fn backends(&mut self, rt: &Runtime) -> Vec<u32> {
        // Client backends only: autovacuum, the WAL writer and the checkpointer run on their own
        // schedule (and the last two for every database).
        let query = "SELECT pid FROM pg_stat_activity WHERE datname = $1 AND backend_type = 'client backend'";
        let pids: Vec<i32> = rt
            .block_on(sqlx::query_scalar(query).bind(&self.database).fetch_all(&mut self.admin))
            .unwrap_or_else(|e| panic!("pg_stat_activity: {e}"));
        pids.into_iter().filter_map(|p| u32::try_from(p).ok()).collect()
    }
}

/// One backend's measured routines.
struct Backend {
    label: &'static str,
    remote: bool,
    rows_before: u64,
    rows_after: u64,
    records: Vec<(&'static str, Totals)>,
    usage: Totals,
}

/// The CPU time of `write` applied to each of `inputs`: this process's, plus the server's
/// backends' when there is a server. Added to `totals`.
fn store_cpu<T>(
    rt: &Runtime,
    server: &mut Option<Server>,
    inputs: Vec<T>,
    items: u64,
    totals: &Totals,
    mut write: impl FnMut(T),
) -> Duration {
    let pids = server.as_mut().map(|s| s.backends(rt)).unwrap_or_default();
    let (io0, server0, process0, thread0) = (process_io(), pids_cpu(&pids), process_cpu(), thread_cpu());
    let wall0 = Instant::now();
    for input in inputs {
        write(input);
    }
    let wall = wall0.elapsed();
    let (thread, process) = (thread_cpu().saturating_sub(thread0), process_cpu().saturating_sub(process0));
    let (server_cpu, io1) = (pids_cpu(&pids).saturating_sub(server0), process_io());
    let io = (io1.0.saturating_sub(io0.0), io1.1.saturating_sub(io0.1));
    totals.add(items, &Usage { thread, process, server: server_cpu, wall, io });
    process + server_cpu
}

/// Fills the tables, then measures `record_requests` (by turn, and everything every 100 ms) and
/// `add_usage` on the store at `url`.
fn store_figures(
    c: &mut Criterion,
    rt: &Runtime,
    population: &Population,
    label: &'static str,
    url: &str,
    mut server: Option<Server>,
) -> Backend {
    let store: Arc<dyn Store> = rt.block_on(keygate_store::connect(url)).unwrap_or_else(|e| panic!("connect: {e}"));
    let write = |chunks: &[RequestChunk]| {
        rt.block_on(store.record_requests(chunks)).unwrap_or_else(|e| panic!("record_requests: {e}"));
    };
    let mut seed = 0x2545_F491_4F6C_DD1D_u64;
    let rows = Cell::new(0u64);
    let prefill = env_number("KEYGATE_BENCH_REQUEST_LOG_ROWS", DEFAULT_PREFILL);
    let started = Instant::now();
    while rows.get() < prefill {
        let n = (prefill - rows.get()).min(FLUSH_BATCH as u64) as usize;
        write(&RequestChunk::group(&population.records(n, &mut seed)).expect("record ids"));
        rows.set(rows.get() + n as u64);
    }
    let today = time::now().date_naive();
    for back in (1..=COUNTER_DAYS).rev() {
        let day = today.checked_sub_days(Days::new(back)).unwrap_or(today);
        rt.block_on(store.add_usage(&population.counts(day))).unwrap_or_else(|e| panic!("add_usage: {e}"));
    }
    println!(
        "{label}: filled the request log with {} rows and the counters with {COUNTER_DAYS} days × {} rows in {:.1} s",
        thousands(rows.get()),
        thousands(population.callers.len() as u64 * 2),
        started.elapsed().as_secs_f64()
    );
    let rows_before = rows.get();

    let mut g = c.benchmark_group(format!("request_log_{label}"));
    g.sampling_mode(SamplingMode::Flat);
    let mut records = Vec::new();
    for (name, by_turn) in SCHEDULES {
        let totals = Totals::default();
        let recorder = RequestRecorder::new(RequestLogMode::All, usize::MAX);
        let mut turn = 0;
        // A second of turns first, so every chunk taken in the measured ones is a steady one.
        drop(population.turns(&recorder, &mut turn, TURNS, by_turn, &mut seed));
        g.throughput(Throughput::Elements((TURNS * FLUSH_BATCH) as u64));
        g.bench_function(format!("record_requests_{name}"), |b| {
            b.iter_custom(|iters| {
                let seconds: Vec<_> =
                    (0..iters).map(|_| population.turns(&recorder, &mut turn, TURNS, by_turn, &mut seed)).collect();
                let written: usize = seconds.iter().flatten().flatten().map(RequestChunk::len).sum();
                let bytes: usize = seconds.iter().flatten().flatten().map(RequestChunk::bytes).sum();
                let chunks: usize = seconds.iter().flatten().map(Vec::len).sum();
                let (b0, c0) = totals.stored.get();
                totals.stored.set((b0 + bytes as u64, c0 + chunks as u64));
                rows.set(rows.get() + written as u64);
                store_cpu(rt, &mut server, seconds, written as u64, &totals, |second| {
                    for taken in second {
                        write(&taken);
                        drop(taken);
                    }
                })
                .mul_f64((iters as usize * TURNS * FLUSH_BATCH) as f64 / written.max(1) as f64)
            });
        });
        records.push((name, totals));
    }
    let counts = population.counts(today);
    let usage = Totals::default();
    g.throughput(Throughput::Elements(counts.len() as u64));
    g.bench_function("add_usage", |b| {
        b.iter_custom(|iters| {
            let batches = vec![counts.clone(); usize::try_from(iters).unwrap_or(usize::MAX)];
            store_cpu(rt, &mut server, batches, iters * counts.len() as u64, &usage, |batch| {
                rt.block_on(store.add_usage(&batch)).unwrap_or_else(|e| panic!("add_usage: {e}"));
            })
        });
    });
    g.finish();

    let rows_after = rows.get();
    if let Some(counted) = rt.block_on(count_rows(url))
        && u64::try_from(counted).ok() != Some(rows_after)
    {
        println!("{label}: the request log holds {counted} rows, not the {rows_after} written");
    }
    Backend { label, remote: server.is_some(), rows_before, rows_after, records, usage }
}

async fn count_rows(url: &str) -> Option<i64> {
    let query = "SELECT CAST(SUM(count) AS BIGINT) FROM request_log_chunks";
    if url.starts_with("sqlite:") {
        let mut conn = sqlx::SqliteConnection::connect(url).await.ok()?;
        sqlx::query_scalar(query).fetch_one(&mut conn).await.ok()
    } else {
        let mut conn = sqlx::PgConnection::connect(url).await.ok()?;
        sqlx::query_scalar(query).fetch_one(&mut conn).await.ok()
    }
}

// ---- the summary ----

/// The median of one criterion figure, in ns per iteration.
fn median_ns(group: &str, name: &str) -> Option<f64> {
    let dir = std::env::var("CRITERION_HOME").unwrap_or_else(|_| {
        let target = std::env::var("CARGO_TARGET_DIR")
            .unwrap_or_else(|_| format!("{}/../../target", env!("CARGO_MANIFEST_DIR")));
        format!("{target}/criterion")
    });
    let text = std::fs::read_to_string(format!("{dir}/{group}/{name}/new/estimates.json")).ok()?;
    let v: serde_json::Value = serde_json::from_str(&text).ok()?;
    v["median"]["point_estimate"].as_f64()
}

/// 100000 as 100,000.
fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, ch) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(ch);
    }
    out
}

fn us(ns: f64) -> String {
    if ns < 1_000.0 { format!("{ns:.0} ns") } else { format!("{:.2} µs", ns / 1_000.0) }
}

/// Per item: the CPU split, the wall time and the bytes through system calls (means over this
/// run's calls, warm-up included).
fn details(t: &Totals, remote: bool) -> String {
    let (process, thread, server) =
        (t.per_item_ns(t.process.get()), t.per_item_ns(t.thread.get()), t.per_item_ns(t.server.get()));
    let wall = t.per_item_ns(t.wall.get());
    let items = t.items.get().max(1) as f64;
    let (read, written) = (t.io.get().0 as f64 / items / 1024.0, t.io.get().1 as f64 / items / 1024.0);
    let n = thousands(t.items.get());
    if remote {
        format!(
            "means over {n}: CPU {} = this process {} (the flusher's thread {}) + the server's backends {}; \
             client-side wall {} (round trips and the server's work included; CPU/wall {:.2})",
            us(process + server),
            us(process),
            us(thread),
            us(server),
            us(wall),
            t.cpu_per_wall()
        )
    } else {
        format!(
            "means over {n}: CPU {} = the flusher's thread {} + SQLite's connection thread {}; wall {} (CPU/wall \
             {:.2}); {read:.1} KiB read and {written:.1} KiB written through system calls",
            us(process),
            us(thread),
            us(process - thread),
            us(wall),
            t.cpu_per_wall()
        )
    }
}

fn summary(population: &Population, hot_totals: &Totals, backends: &[Backend], postgres_skipped: bool) {
    let Some(hot) = median_ns("request_log", "hot_path_count_and_record") else { return };
    println!(
        "\nrequest log summary (CPU time, criterion medians; traffic from {} keys of {} account{}; target: 1 µs \
         of CPU per record, amortised):",
        thousands(population.callers.len() as u64),
        thousands(population.accounts as u64),
        if population.accounts == 1 { "" } else { "s" }
    );
    let hot_wall = if hot_totals.items.get() > 0 {
        format!("wall {}, mean", us(hot_totals.per_item_ns(hot_totals.wall.get())))
    } else {
        "not run now: the last run's figure".to_owned()
    };
    println!(
        "  hot path (count + encode the record into its chunk): {} of CPU per request, on the request's thread ({hot_wall}) = \
         {:.2}× the target",
        us(hot),
        hot / TARGET_NS
    );
    for b in backends {
        let group = format!("request_log_{}", b.label);
        println!(
            "  {}: the request log held {} rows before these figures, {} after",
            b.label,
            thousands(b.rows_before),
            thousands(b.rows_after)
        );
        for (name, totals) in &b.records {
            let Some(second) = median_ns(&group, &format!("record_requests_{name}")) else { continue };
            if totals.items.get() == 0 {
                continue;
            }
            let per = second / (TURNS * FLUSH_BATCH) as f64;
            let total = hot + per;
            let how = if *name == "by_turn" {
                "written by turn, as keygate writes them"
            } else {
                "every account's chunk written every 100 ms, for comparison"
            };
            println!(
                "  record: {} amortised (hot path {} + {} {} per record, {how}) = {:.2}× the 1 µs target",
                us(total),
                us(hot),
                b.label,
                us(per),
                total / TARGET_NS
            );
            println!("      per record, {}", details(totals, b.remote));
            let (bytes, chunks) = totals.stored.get();
            let records = totals.items.get().max(1) as f64;
            println!(
                "      stored: {:.1} bytes a record (packed records and their chunk's strings), {:.1} records a chunk",
                bytes as f64 / records,
                records / chunks.max(1) as f64
            );
        }
        let counters = population.callers.len() * OUTCOMES.len();
        if let Some(batch) = median_ns(&group, "add_usage")
            && b.usage.items.get() > 0
        {
            let per_request = batch / REQUESTS_PER_SECOND;
            println!(
                "  usage counters on {}: {} per counter row ({} rows: one second's counters, every key × {} \
                 outcomes); at 10,000 req/s {} per request = {:.2}× the 1 µs target",
                b.label,
                us(batch / counters as f64),
                thousands(counters as u64),
                OUTCOMES.len(),
                us(per_request),
                per_request / TARGET_NS
            );
            println!("      per counter row, {}", details(&b.usage, b.remote));
        }
    }
    if postgres_skipped {
        println!("  postgres: not run (set KEYGATE_TEST_POSTGRES_URL to include it)");
    }
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().expect("runtime");
    let keys = usize::try_from(env_number("KEYGATE_BENCH_REQUEST_LOG_KEYS", DEFAULT_KEYS as u64)).expect("keys");
    let population = Population::new(keys);
    let mut c = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(2))
        .sample_size(20)
        .configure_from_args();

    // The flusher's thread, where what the requests queued is freed.
    let (flusher, taken) = mpsc::channel::<Box<dyn Send>>();
    let freeing = std::thread::spawn(move || taken.into_iter().for_each(drop));
    let hot_totals = Totals::default();
    let mut g = c.benchmark_group("request_log");
    let mut seed = 0x9E37_79B9_7F4A_7C15_u64;
    let recorder = RequestRecorder::new(RequestLogMode::All, MAX_PENDING);
    g.bench_function("hot_path_count_and_record", |b| {
        b.iter_custom(|iters| hot_path(&population, &recorder, iters, &mut seed, &flusher, &hot_totals));
    });
    g.finish();
    drop(flusher);
    let _ = freeing.join();
    black_box(&population);

    let mut backends = Vec::new();
    let dir = tempfile::tempdir().expect("tempdir");
    let sqlite = format!("sqlite://{}/bench.db", dir.path().display());
    backends.push(store_figures(&mut c, &rt, &population, "sqlite", &sqlite, None));

    let postgres_skipped = match rt.block_on(common::ScratchDatabase::create()) {
        Some(db) => {
            let server = Server { admin: rt.block_on(db.admin()), database: db.name.clone() };
            backends.push(store_figures(&mut c, &rt, &population, "postgres", &db.url, Some(server)));
            rt.block_on(db.drop());
            false
        }
        None => true,
    };

    c.final_summary();
    summary(&population, &hot_totals, &backends, postgres_skipped);
}
