#!/usr/bin/env bash
# What cluster mode costs a gateway request: keygate with its limits in process against the same
# binary with every limit decided in Redis (one script call per request), side by side, in
# alternating rounds; and how many Redis commands one request makes. Every figure is printed as a
# ratio against the in-process keygate measured in the same run, on the same machine.
#
# What runs (everything on 127.0.0.1, on free ports, in a temporary directory, stopped on exit):
#   - upstream: nginx returning a small JSON body over keep-alive (as bench/data_plane.sh). It is
#     never the bottleneck, and its CPU is counted for no one.
#   - a private redis-server started here (`--save "" --appendonly no`, no persistence), never the
#     machine's own Redis: its figures must be this run's requests and nothing else.
#   - two keygates (release build, the same binary), each on its own scratch PostgreSQL database
#     created on $PG_URL (default postgres://postgres@127.0.0.1:5432, the database dropped on
#     exit; SQLite files instead when PostgreSQL cannot be reached, or with PG_URL=none; the
#     results say which):
#       local: no Redis, every limit decided in this process (the in-process GCRA);
#       redis: KEYGATE_REDIS_URL=redis://127.0.0.1:<the private Redis> — cluster mode: every limit
#              a request spends decided by one EVALSHA of the GCRA script (crates/keygate-cluster/
#              src/limiter.rs), Redis's clock, cache evictions published on a Redis channel.
#     Each has one gateway route GET /v1/calls (scope calls:read) to the upstream with
#     `ip_rate_limit_per_minute` set, and a key whose limit (as its account's) is never reached,
#     so each request spends three limits — key, route+IP, account — in one limiter call (one
#     script call in Redis) and the run measures checking limits, never hitting them. The limits
#     are 60,000,000 a minute (1,000,000 a second, far above the 30,000 a second this machine
#     serves): the script counts in microseconds, and 60,000,000 a minute is the highest limit
#     whose interval is still a whole microsecond there (above it the script's interval rounds
#     down to 0 µs and a request spends nothing).
#
# How:
#   1. wrk -t2, $CONNECTIONS connections, $DURATION s per run, against both keygates in turn;
#      $ROUNDS rounds, each starting at the other target, and medians over the rounds (on two
#      cores shared with wrk, single runs of the same target differ by up to 30%; alternating
#      spreads a slow minute over both). Any non-2xx answer fails the run. Per run: req/s, p99,
#      and CPU per request (utime+stime from /proc/<pid>/stat, all threads, divided by the
#      requests wrk counted) of keygate, of redis-server — reported separately and summed, since
#      Redis's work is part of what cluster mode costs — and, for information, of the PostgreSQL
#      backends of that keygate's database (the request log and usage; the same work in both).
#      redis-server's CPU is read during the local runs too: it should be about 0 there.
#   2. Redis commands per request: `INFO commandstats` and `INFO stats` read before and after
#      every measured run (the after read once in-flight requests have settled), divided by the
#      requests wrk counted and by keygate's own count (keygate_requests_total for /v1/calls,
#      from /metrics). Redis counts the commands a script runs (redis.call) in commandstats as if
#      clients had sent them: one request's EVALSHA runs TIME, then GET and SET per limit, 7 more.
#      So the figures are: EVALSHA per request; commands keygate sent per request (every
#      cmdstat_* but those the script runs — TIME, GET, SET, which keygate never sends itself —
#      and this script's own INFO); and every cmdstat_* call per request, for the record. A
#      separate short run under `redis-cli MONITOR` (which shows each command with its origin: a
#      client's address, or "lua" inside a script) counts what clients sent directly. Also bytes
#      to and from Redis per request, and keygate_redis_errors_total (a Redis call that failed or
#      outlasted redis_timeout_ms, 50 ms by default, sends that node to in-process limits and a
#      PING every 250 ms until Redis answers: it must stay 0 for the figures to be cluster mode's).
#   3. System calls per forwarded request: one more short run per target (wrk -t1 -c8, 3 s) with
#      `strace -c -f` attached to keygate (all threads), and one with it attached to redis-server
#      during a run of the Redis keygate; total calls / requests (strace slows the servers a lot:
#      only the counts matter).
#   4. Where keygate's system calls go: one more such run per keygate under `strace -f -yy`, each
#      call counted by thread (the request workers, one current-thread runtime per core, or the
#      main runtime, whose threads run the Redis connection) and by descriptor (client, upstream,
#      Redis, store socket; an eventfd, written to wake another thread; the epoll set).
#
# Checks (printed PASS/MISS at the end; the script exits 0 either way unless something broke):
#   = 1.00 EVALSHA per request; <= 1.01 Redis commands sent by keygate per request; no Redis
#   error during the measured runs. The costs themselves are reported, not judged.
#
# Usage: bench/cluster.sh [seconds per run, default 5] [connections, default 32] [rounds, default 3]
#   BIN=/path/to/keygate   measure that binary (default: nice -n 10 cargo build --release -p keygate)
#   PG_URL=postgres://user@host:port   where to create the scratch databases; PG_URL=none: SQLite
# Needs wrk, nginx, redis-server, redis-cli, strace (Debian packages; installed if missing) and
# psql for PostgreSQL. Run it on an otherwise idle machine: the load average at the start is
# printed with the results.
set -euo pipefail
[ -n "${BENCH_DEBUG:-}" ] && set -x
cd "$(dirname "$0")/.."
REPO="$PWD"
DURATION="${1:-5}"
CONNECTIONS="${2:-32}"
ROUNDS="${3:-3}"
PG_URL="${PG_URL:-postgres://postgres@127.0.0.1:5432}"
source bench/lib.sh

need wrk wrk
need nginx nginx
need redis-server redis-server
need redis-cli redis-tools
need strace strace
if [ -z "${BIN:-}" ]; then
  nice -n 10 cargo build --release -p keygate --quiet
  BIN="${CARGO_TARGET_DIR:-$REPO/target}/release/keygate"
fi
[ -x "$BIN" ] || { echo "BIN=$BIN is not an executable" >&2; exit 1; }
BIN="$(realpath "$BIN")"
LOADAVG="$(cut -d' ' -f1-3 /proc/loadavg)"

# The store: scratch PostgreSQL databases when the server answers, else SQLite.
DATABASES=()
if [ "$PG_URL" != none ] && command -v psql >/dev/null &&
  psql "$PG_URL/postgres" -qtAc 'SELECT 1' >/dev/null 2>&1; then
  STORE=postgresql
  PG_VERSION="$(psql "$PG_URL/postgres" -qtAc 'SHOW server_version')"
  PG_PORT="$(psql "$PG_URL/postgres" -qtAc 'SHOW port')"
else
  STORE=sqlite
  PG_VERSION=""
  PG_PORT=""
fi
psql_admin() { psql "$PG_URL/postgres" -qtA -v ON_ERROR_STOP=1 -c "$1"; }

WORK="$(mktemp -d)"
STARTED=()
cleanup() {
  local p d
  for p in "${STARTED[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  for d in "${DATABASES[@]}"; do psql_admin "DROP DATABASE IF EXISTS \"$d\" WITH (FORCE)" >/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT
cd "$WORK"
RESULTS="$WORK/results"
: >"$RESULTS"

UP_PORT="$(free_port 19100)"
REDIS_PORT="$(free_port 19600)"
LOCAL_PORT="$(free_port $((REDIS_PORT + 1)))"
CLUSTER_PORT="$(free_port $((LOCAL_PORT + 1)))"
[ "$REDIS_PORT" != 6379 ] || { echo "refusing to use port 6379" >&2; exit 1; }

# The upstream.
start_upstream "$UP_PORT"

# The private Redis: no persistence, nothing else connects to it.
redis-server --bind 127.0.0.1 --port "$REDIS_PORT" --save "" --appendonly no --daemonize no \
  --dir "$WORK" --logfile "$WORK/redis.log" &
REDIS_PID=$!
STARTED+=("$REDIS_PID")
rcli() { redis-cli -p "$REDIS_PORT" "$@"; }
for _ in $(seq 1 50); do [ "$(rcli PING 2>/dev/null)" = PONG ] && break; sleep 0.1; done
[ "$(rcli PING 2>/dev/null)" = PONG ] || { echo "redis-server did not start:" >&2; cat "$WORK/redis.log" >&2; exit 1; }
REDIS_VERSION="$(rcli INFO server | tr -d '\r' | awk -F: '$1=="redis_version" {print $2}')"

LIMIT=60000000
HASH_SECRET="$(head -c 36 /dev/urandom | base64 | tr -d '/+=\n')"
keygate_config() {  # NAME: writes its config, prints its path
  local dir="$WORK/$1" db
  mkdir -p "$dir"
  if [ "$STORE" = postgresql ]; then
    db="keygate_bench_cluster_$$_$1"
    psql_admin "CREATE DATABASE \"$db\"" >/dev/null
    DATABASES+=("$db")
    echo "$db" >"$dir/database"
    db="$PG_URL/$db"
  else
    db="sqlite://$dir/keygate.db"
  fi
  cat >"$dir/keygate.toml" <<TOML
database_url = "$db"
hash_secret = "$HASH_SECRET"
[limits]
max_key_rate_limit_per_minute = $LIMIT
default_account_rate_limit_per_minute = $LIMIT
[gateway]
upstream = "http://127.0.0.1:$UP_PORT"
[[gateway.routes]]
method = "GET"
path = "/v1/calls"
scope = "calls:read"
ip_rate_limit_per_minute = $LIMIT
TOML
  echo "$dir/keygate.toml"
}
GATEWAY_KEY="{\"name\":\"bench\",\"scopes\":[\"calls:read\"],\"rate_limit_per_minute\":$LIMIT}"
declare -A KEYS PORTS
# Not in a $(…): DATABASES must grow in this shell.
keygate_config local >/dev/null
keygate_config redis >/dev/null
start_keygate local "$BIN" "$LOCAL_PORT" "$WORK/local/keygate.toml"
STARTED+=("${KG_PID[local]}")
KEYGATE_REDIS_URL="redis://127.0.0.1:$REDIS_PORT" start_keygate redis "$BIN" "$CLUSTER_PORT" "$WORK/redis/keygate.toml"
STARTED+=("${KG_PID[redis]}")
PORTS[local]="$LOCAL_PORT"
PORTS[redis]="$CLUSTER_PORT"
for t in local redis; do KEYS[$t]="$(create_key "${PORTS[$t]}" "${KG_OPERATOR[$t]}" "$GATEWAY_KEY")"; done

# The Redis keygate must be in cluster mode and see Redis before anything is measured.
readyz() { curl -s "http://127.0.0.1:${PORTS[$1]}/readyz"; }
for _ in $(seq 1 100); do readyz redis | grep -q '"status":"ready"' && break; sleep 0.1; done
expect "the Redis keygate is ready with Redis" '{"status":"ready","store":"ok","redis":"ok"}' "$(readyz redis)"
expect "the local keygate is ready, without Redis" '{"status":"ready","store":"ok"}' "$(readyz local)"

cmdstats() {  # "command calls usec" per cmdstat_* line of the private Redis
  rcli INFO commandstats | tr -d '\r' | awk -F'[:,=]' '/^cmdstat_/ { sub(/^cmdstat_/, "", $1); print $1, $3, $5 }'
}
netstats() {  # "bytes_in bytes_out" of the private Redis
  rcli INFO stats | tr -d '\r' | awk -F: '$1=="total_net_input_bytes" {i=$2} $1=="total_net_output_bytes" {o=$2} END {print i, o}'
}
cmd_delta() {  # BEFORE AFTER: "command calls usec" grown between two cmdstats files
  awk 'NR==FNR { c[$1]=$2; u[$1]=$3; next } $2 - c[$1] > 0 { print $1, $2 - c[$1], $3 - u[$1] }' "$1" "$2"
}
for t in local redis; do
  url="http://127.0.0.1:${PORTS[$t]}/v1/calls"
  expect "$t forwards a valid key" 200 "$(status "$url" -H "Authorization: Bearer ${KEYS[$t]}")"
  expect "$t returns the upstream's body" '{"calls":[],"ok":true}' "$(curl -s "$url" -H "Authorization: Bearer ${KEYS[$t]}")"
  expect "$t refuses an unknown key" 401 "$(status "$url" -H "Authorization: Bearer ${KEYS[$t]}x")"
  expect "$t refuses no key" 401 "$(status "$url")"
  # The three limits apply: the tightest of equal limits is announced with the limit set here.
  limit="$(curl -s -D - -o /dev/null "$url" -H "Authorization: Bearer ${KEYS[$t]}" | tr -d '\r' |
    awk -F': ' 'tolower($1)=="x-ratelimit-limit" {print $2}')"
  expect "$t announces the limit" "$LIMIT" "$limit"
done
# One request of the Redis keygate is one EVALSHA; one of the local keygate touches no Redis.
rcli SCRIPT FLUSH >/dev/null  # the first measured call then also shows the NOSCRIPT path (warm-up)
for t in local redis; do
  cmdstats >"cmd.check.before"
  curl -s -o /dev/null "http://127.0.0.1:${PORTS[$t]}/v1/calls" -H "Authorization: Bearer ${KEYS[$t]}"
  cmdstats >"cmd.check.after"
  cmd_delta cmd.check.before cmd.check.after | grep -v '^info ' >"cmd.check.$t" || true
done
[ ! -s cmd.check.local ] || { echo "check failed: the local keygate touched Redis:" >&2; cat cmd.check.local >&2; exit 1; }
grep -q '^evalsha ' cmd.check.redis || { echo "check failed: no EVALSHA for a request of the Redis keygate:" >&2; cat cmd.check.redis >&2; exit 1; }
FIRST_CALL="$(awk '{printf "%s%s %s", (NR>1 ? ", " : ""), $1, $2}' cmd.check.redis)"

kg_count() {  # keygate's own count of /v1/calls requests
  curl -s "http://127.0.0.1:${PORTS[$1]}/metrics" |
    awk '/^keygate_requests_total\{/ && /route="\/v1\/calls"/ { n += $NF } END { printf "%d\n", n }'
}
redis_errors() {
  curl -s "http://127.0.0.1:${PORTS[redis]}/metrics" |
    awk '/^keygate_redis_errors_total/ { n += $NF } END { printf "%d\n", n }'
}
pg_backends() {  # the PostgreSQL backends serving a keygate's database (none on SQLite)
  [ "$STORE" = postgresql ] || return 0
  psql_admin "SELECT pid FROM pg_stat_activity WHERE datname = '$(cat "$WORK/$1/database")'" | tr '\n' ' '
}
ticks_of() {  # PIDS: "pid ticks" per process still alive
  local p
  for p in "$@"; do [ -r "/proc/$p/stat" ] && echo "$p $(cpu_ticks "$p" 2>/dev/null || echo 0)"; done || true
}

# One measured run: like lib.sh's wrk_run, with keygate's, redis-server's and the PostgreSQL
# backends' CPU apart, and Redis's command counts around it. Appends to $RESULTS:
#   LABEL req/s p99_ms kg_cpu_us redis_cpu_us pg_cpu_us wrk_requests kg_requests run_id
RUN=0
measure() {
  local t="$1" url="http://127.0.0.1:${PORTS[$1]}/v1/calls" out kg0 kg1 rd0 rd1 pg1 n0 n1 requests rps p99 pids
  RUN=$((RUN + 1))
  pids="$(pg_backends "$t")"
  # shellcheck disable=SC2086
  ticks_of $pids >"pg.$RUN.before"
  cmdstats >"cmd.$RUN.before"
  netstats >"net.$RUN.before"
  redis_errors >"err.$RUN.before"
  n0="$(kg_count "$t")"
  kg0="$(cpu_ticks "${KG_PID[$t]}")"
  rd0="$(cpu_ticks "$REDIS_PID")"
  out="$(wrk -t2 -c"$CONNECTIONS" -d"${DURATION}s" --latency -H "Authorization: Bearer ${KEYS[$t]}" "$url")"
  kg1="$(cpu_ticks "${KG_PID[$t]}")"
  rd1="$(cpu_ticks "$REDIS_PID")"
  # shellcheck disable=SC2086
  ticks_of $pids >"pg.$RUN.after"
  sleep 0.2  # requests in flight when wrk stopped finish: keygate's count and Redis's agree
  n1="$(kg_count "$t")"
  cmdstats >"cmd.$RUN.after"
  netstats >"net.$RUN.after"
  redis_errors >"err.$RUN.after"
  cmd_delta "cmd.$RUN.before" "cmd.$RUN.after" >"cmd.$RUN"
  wrk_check "$t" "$url" "$out"
  requests="$(awk '/ requests in / {print $1}' <<<"$out")"
  rps="$(awk '/Requests\/sec/ {print $2}' <<<"$out")"
  p99="$(wrk_p99_ms <<<"$out")"
  [ "${requests:-0}" -gt 0 ] || { echo "$t: no requests completed against $url" >&2; echo "$out" >&2; exit 1; }
  # Backends that appeared during the run count from 0; one that exited is lost (none should).
  pg1="$(awk 'NR==FNR {b[$1]=$2; next} {s += $2 - ($1 in b ? b[$1] : 0)} END {print s + 0}' "pg.$RUN.before" "pg.$RUN.after")"
  echo "$t $rps $p99 $(awk -v k="$((kg1 - kg0))" -v r="$((rd1 - rd0))" -v p="$pg1" -v hz="$CLK_TCK" -v n="$requests" \
    'BEGIN { printf "%.2f %.2f %.2f", k * 1e6 / hz / n, r * 1e6 / hz / n, p * 1e6 / hz / n }') $requests $((n1 - n0)) $RUN" >>"$RESULTS"
  tail -n1 "$RESULTS" | awk '{ printf "  %-6s %9.0f req/s  p99 %6.2f ms  CPU/request: keygate %6.1f us, redis %5.1f us, PostgreSQL %5.1f us\n", $1, $2, $3, $4, $5, $6 }' >&2
}

# Warm-up: caches, connection pools, the script loaded into Redis, the request log's first batches.
echo "warming up local redis" >&2
for t in local redis; do
  wrk -t1 -c4 -d1s -H "Authorization: Bearer ${KEYS[$t]}" "http://127.0.0.1:${PORTS[$t]}/v1/calls" >/dev/null
done

TARGETS=(local redis)
n=${#TARGETS[@]}
for ((r = 0; r < ROUNDS; r++)); do
  echo "round $((r + 1)) of $ROUNDS" >&2
  for ((i = 0; i < n; i++)); do measure "${TARGETS[$(((i + r) % n))]}"; done
done

# What clients sent, from redis-cli MONITOR ("<time> [<db> <client address>|lua] "<command>" …"),
# during a short run of the Redis keygate.
echo "commands by origin (redis-cli MONITOR; wrk -t1 -c8 3s)" >&2
# Line-buffered, so that nothing is lost when it is stopped; the requests as keygate counted them
# (all of them finished within the window).
stdbuf -oL redis-cli -p "$REDIS_PORT" MONITOR >monitor.log 2>monitor.err &
MONITOR_PID=$!
STARTED+=("$MONITOR_PID")
for _ in $(seq 1 50); do [ -s monitor.log ] && break; sleep 0.1; done
n0="$(kg_count redis)"
out="$(wrk -t1 -c8 -d3s -H "Authorization: Bearer ${KEYS[redis]}" "http://127.0.0.1:$CLUSTER_PORT/v1/calls")"
sleep 0.2
n1="$(kg_count redis)"
kill "$MONITOR_PID"
wait "$MONITOR_PID" 2>/dev/null || true
wrk_check "redis (MONITOR)" "http://127.0.0.1:$CLUSTER_PORT/v1/calls" "$out"
echo "$((n1 - n0))" >monitor.requests
# "origin command count": origin is "lua" or "client"; the MONITOR connection's own OK line skipped.
awk '$2 ~ /^\[/ { origin = ($3 == "lua]") ? "lua" : "client"; c = $4; gsub(/"/, "", c); n[origin " " tolower(c)]++ }
  END { for (k in n) print k, n[k] }' monitor.log >monitor.counts

echo "system calls per request (strace -c -f; wrk -t1 -c8 3s)" >&2
syscalls_run local "${KG_PID[local]}" "http://127.0.0.1:$LOCAL_PORT/v1/calls" -H "Authorization: Bearer ${KEYS[local]}"
syscalls_run redis "${KG_PID[redis]}" "http://127.0.0.1:$CLUSTER_PORT/v1/calls" -H "Authorization: Bearer ${KEYS[redis]}"
syscalls_run redis-server "$REDIS_PID" "http://127.0.0.1:$CLUSTER_PORT/v1/calls" -H "Authorization: Bearer ${KEYS[redis]}"

# Where the system calls go: one more short run per keygate under `strace -f -yy` (each call
# with its thread, each descriptor named), counted by thread (the request workers, one per core;
# the main runtime, whose threads run the Redis connection, the store's pool and background work)
# and by what the descriptor is (the client's or the upstream's socket, Redis's, the store's, an
# eventfd — one thread waking another —, the epoll set). Appends "group call kind count" to
# $WORK/calls.LABEL, the requests to $WORK/calls.LABEL.requests.
calls_run() {
  local t="$1" pid="${KG_PID[$1]}" url="http://127.0.0.1:${PORTS[$1]}/v1/calls" st out tid
  strace -f -yy -o "$WORK/calls.$t.log" -e trace=read,write,writev,recvfrom,sendto,futex,epoll_wait \
    -p "$pid" 2>"$WORK/calls.$t.err" &
  st=$!
  for _ in $(seq 1 50); do grep -q attached "$WORK/calls.$t.err" 2>/dev/null && break; sleep 0.1; done
  sleep 0.5
  out="$(wrk -t1 -c8 -d3s -H "Authorization: Bearer ${KEYS[$t]}" "$url")"
  kill -INT "$st"
  wait "$st" || true
  wrk_check "$t (strace -yy)" "$url" "$out"
  awk '/ requests in / {print $1}' <<<"$out" >"$WORK/calls.$t.requests"
  for tid in /proc/"$pid"/task/*; do echo "${tid##*/} $(<"$tid/comm")"; done >"$WORK/calls.$t.threads"
  # "<tid> <call>(<fd><<what>>, …": a call's first line (a "<... resumed>" line repeats none).
  awk -v redis=":$REDIS_PORT]" -v up=":$UP_PORT]" -v me="TCP:[127.0.0.1:${PORTS[$t]}->" -v pg=":$PG_PORT]" '
    NR == FNR { name[$1] = $2; next }
    $2 ~ /^<\.\.\./ || $2 !~ /^[a-z_0-9]+\(/ { next }
    {
      call = $2; sub(/\(.*/, "", call)
      g = name[$1] ~ /^keygate-worker/ ? "workers" : name[$1] ~ /^tokio-rt-worker/ ? "main" : "other"
      k = "other"
      if (call == "futex") k = "-"
      else if (index($2, "eventfd")) k = "eventfd"
      else if (index($2, "eventpoll")) k = "epoll"
      else if (index($2, redis)) k = "redis"
      else if (index($2, up)) k = "upstream"
      else if (index($2, me)) k = "client"
      else if (pg != ":]" && index($2, pg)) k = "store"
      n[g " " call " " k]++
    }
    END { for (x in n) print x, n[x] }' "$WORK/calls.$t.threads" "$WORK/calls.$t.log" >"$WORK/calls.$t"
  rm -f "$WORK/calls.$t.log"
}
echo "system calls by thread and descriptor (strace -f -yy; wrk -t1 -c8 3s)" >&2
calls_run local
calls_run redis

# Every server must still be up, and the Redis keygate still with Redis.
for p in "${STARTED[@]}"; do
  [ "$p" = "$MONITOR_PID" ] || kill -0 "$p" 2>/dev/null || { echo "process $p exited during the run" >&2; exit 1; }
done
expect "the Redis keygate is still ready with Redis" '{"status":"ready","store":"ok","redis":"ok"}' "$(readyz redis)"
grep -h -i -E 'warn|error' "$WORK/redis/keygate.log" | grep -i redis >redis-warnings.log || true

echo
DURATION="$DURATION" CONNECTIONS="$CONNECTIONS" ROUNDS="$ROUNDS" LOADAVG="$LOADAVG" NPROC="$(nproc)" \
  BIN="$BIN" WORK="$WORK" STORE="$STORE" PG_URL="$PG_URL" PG_VERSION="$PG_VERSION" REDIS_VERSION="$REDIS_VERSION" \
  FIRST_CALL="$FIRST_CALL" python3 - "$RESULTS" <<'PY'
import os, statistics, sys

env = os.environ
work = env["WORK"]
runs = {}
for line in open(sys.argv[1]):
    label, rps, p99, kg, rd, pg, n, kn, run = line.split()
    runs.setdefault(label, []).append(dict(rps=float(rps), p99=float(p99), kg=float(kg), rd=float(rd), pg=float(pg),
                                           sum=float(kg) + float(rd), n=int(n), kn=int(kn), run=int(run)))
med = {k: {f: statistics.median(r[f] for r in v) for f in ("rps", "p99", "kg", "rd", "pg", "sum")} for k, v in runs.items()}

def read_pairs(path):
    return [line.split() for line in open(path) if line.strip()]

# Commands inside the GCRA script (redis.call): Redis counts them in commandstats too.
SCRIPT_INNER = {"time", "get", "set"}
OURS = {"info"}  # this script's own INFO reads

def commands(run):
    calls = {}
    usec = {}
    for name, c, u in read_pairs(f"{work}/cmd.{run}"):
        calls[name] = int(c)
        usec[name] = int(u)
    return calls, usec

def net(run):
    b = list(map(int, open(f"{work}/net.{run}.before").read().split()))
    a = list(map(int, open(f"{work}/net.{run}.after").read().split()))
    return a[0] - b[0], a[1] - b[1]

def errors(run):
    return int(open(f"{work}/err.{run}.after").read()) - int(open(f"{work}/err.{run}.before").read())

def syscalls(label):
    path = f"{work}/strace.{label}"
    calls, requests = map(int, open(path + ".count").read().split())
    rows = []
    for line in open(path):
        f = line.split()
        if len(f) >= 5 and f[0][0].isdigit() and f[-1] != "total":
            rows.append((f[-1], int(f[3])))
    rows.sort(key=lambda r: -r[1])
    return calls / requests, requests, rows

checks = []
def check(name, value, ok):
    checks.append((ok, name, value))

store = (f"PostgreSQL {env['PG_VERSION']} (a scratch database each)" if env["STORE"] == "postgresql"
         else "SQLite (PG_URL=none)" if env["PG_URL"] == "none" else f"SQLite (no PostgreSQL at {env['PG_URL']})")
print(f"Cluster mode: {env['ROUNDS']} alternating rounds of {env['DURATION']} s per target, "
      f"{env['CONNECTIONS']} connections, wrk -t2, all on one {env['NPROC']}-core machine "
      f"(load average before: {env['LOADAVG']}); medians over the rounds.")
print(f"keygate: {env['BIN']}; store: {store}; Redis {env['REDIS_VERSION']} (private, no persistence).")
print("GET /v1/calls through the gateway, one nginx upstream; each request spends three limits "
      "(key, route+IP, account), never reached.")

print("\n1. Throughput, latency and CPU per request")
print(f"  {'':<24}{'req/s':>9}{'p99 ms':>8}   {'CPU µs per request':^44}   req/s of each round")
print(f"  {'':<24}{'':>9}{'':>8}   {'keygate':>9}{'redis':>8}{'kg+redis':>10}{'PostgreSQL':>12}")
for label, name in [("local", "(a) in-process limits"), ("redis", "(b) limits in Redis")]:
    m = med[label]
    print(f"  {name:<24}{m['rps']:>9,.0f}{m['p99']:>8.2f}   {m['kg']:>9.1f}{m['rd']:>8.1f}{m['sum']:>10.1f}"
          + (f"{m['pg']:>12.1f}" if env["STORE"] == "postgresql" else f"{'-':>12}")
          + "     " + " ".join(f"{r['rps']:,.0f}" for r in runs[label]))
a, b = med["local"], med["redis"]
print(f"  (b) / (a): throughput {b['rps'] / a['rps']:.2f}x   p99 {b['p99'] / a['p99']:.2f}x   "
      f"CPU per request: keygate {b['kg'] / a['kg']:.2f}x, keygate+redis {b['sum'] / a['sum']:.2f}x "
      f"(vs (a)'s keygate alone)")
print(f"  cluster mode costs {b['kg'] - a['kg']:+.1f} µs of keygate's CPU and {b['rd']:.1f} µs of Redis's per request "
      f"({b['sum'] - a['sum']:+.1f} µs in all); redis-server during (a)'s runs: {a['rd']:.1f} µs per request (idle)")

print("\n2. Redis commands per request of (b), each measured run")
print("   sent: every cmdstat_* but the script's own TIME, GET and SET (Redis counts a script's redis.call as")
print("   commands) and this script's INFO; all cmdstat: with the script's own; µs/EVALSHA: Redis's own timing")
print("   of one call, the script included (wall time: preemption on a shared machine counts)")
print(f"  {'run':<5}{'wrk req':>9}{'keygate req':>12}{'EVALSHA':>9}{'/req':>7}{'sent':>8}{'/req':>7}"
      f"{'all cmdstat':>12}{'/req':>7}{'bytes in/out per req':>22}{'µs/EVALSHA':>12}{'errors':>8}")
per_evalsha, per_sent, per_all, err_total = [], [], [], 0
extra = {}
for r in runs["redis"]:
    calls, usec = commands(r["run"])
    evalsha = calls.get("evalsha", 0)
    sent = sum(c for k, c in calls.items() if k not in SCRIPT_INNER and k not in OURS)
    every = sum(c for k, c in calls.items() if k not in OURS)
    for k, c in calls.items():
        if k not in SCRIPT_INNER and k not in OURS and k != "evalsha":
            extra[k] = extra.get(k, 0) + c
    bi, bo = net(r["run"])
    e = errors(r["run"])
    err_total += e
    n = r["n"]
    per_evalsha.append(evalsha / n)
    per_sent.append(sent / n)
    per_all.append(every / n)
    print(f"  {r['run']:<5}{n:>9,}{r['kn']:>12,}{evalsha:>9,}{evalsha / n:>7.3f}{sent:>8,}{sent / n:>7.3f}"
          f"{every:>12,}{every / n:>7.2f}{f'{bi / n:.0f} / {bo / n:.0f}':>22}"
          f"{usec.get('evalsha', 0) / max(evalsha, 1):>12.2f}{e:>8}")
    inner = {k: calls.get(k, 0) for k in sorted(SCRIPT_INNER)}
    print(f"       per keygate-counted request: EVALSHA {evalsha / max(r['kn'], 1):.4f}; inside the script "
          + ", ".join(f"{k.upper()} {c / max(evalsha, 1):.2f}" for k, c in inner.items()) + " per EVALSHA")
for r in runs["local"]:
    calls, _ = commands(r["run"])
    seen = {k: c for k, c in calls.items() if k not in OURS}
    if seen:
        print(f"  note: during (a)'s run {r['run']} Redis saw " + ", ".join(f"{k} {c}" for k, c in seen.items()))
print(f"  the first request after SCRIPT FLUSH: {env['FIRST_CALL']}")
if extra:
    print("  commands sent besides EVALSHA, all runs: " + ", ".join(f"{k} {c}" for k, c in sorted(extra.items())))
else:
    print("  commands sent besides EVALSHA, all runs: none")
mon = {}
for origin, name, c in read_pairs(f"{work}/monitor.counts"):
    mon.setdefault(origin, {})[name] = int(c)
mon_n = int(open(f"{work}/monitor.requests").read())
for origin in ("client", "lua"):
    got = mon.get(origin, {})
    print(f"  MONITOR, {mon_n:,} requests (keygate's count): from {'clients' if origin == 'client' else 'inside scripts'}: "
          + (", ".join(f"{k.upper()} {c / mon_n:.3f}" for k, c in sorted(got.items(), key=lambda x: -x[1])) or "none")
          + " per request")
e_med, s_med = statistics.median(per_evalsha), statistics.median(per_sent)
check("EVALSHA per request = 1.00", f"{e_med:.3f} (median; runs " + ", ".join(f"{x:.3f}" for x in per_evalsha) + ")",
      abs(e_med - 1) < 0.005)
check("Redis commands sent per request <= 1.01", f"{s_med:.3f} (median; all cmdstat_* incl. the script's own: "
      f"{statistics.median(per_all):.2f})", s_med <= 1.01)
check("no Redis error during the measured runs (keygate_redis_errors_total)", f"{err_total}", err_total == 0)
warnings = open(f"{work}/redis-warnings.log").read().strip()
if warnings:
    print("  keygate's log mentions Redis:\n    " + "\n    ".join(warnings.splitlines()[:5]))

print("\n3. System calls per forwarded request (strace -c -f, wrk -t1 -c8 3 s; counts only)")
sc = {l: syscalls(l) for l in ("local", "redis", "redis-server")}
for label, name in [("local", "(a) keygate"), ("redis", "(b) keygate"), ("redis-server", "(b) redis-server")]:
    per, requests, rows = sc[label]
    top = ", ".join(f"{c} {k / requests:.2f}" for c, k in rows[:7])
    print(f"  {name:<18}{per:>7.2f} per request ({requests:,} requests): {top}")
s_a, s_b, s_r = sc["local"][0], sc["redis"][0], sc["redis-server"][0]
print(f"  (b) / (a): keygate {s_b / s_a:.2f}x ({s_b - s_a:+.2f} per request); keygate+redis {(s_b + s_r) / s_a:.2f}x "
      f"({s_b + s_r:.2f} per request)")
da = dict(sc["local"][2]); db = dict(sc["redis"][2])
na, nb = sc["local"][1], sc["redis"][1]
diff = sorted(((c, db.get(c, 0) / nb - da.get(c, 0) / na) for c in set(da) | set(db)), key=lambda x: -abs(x[1]))
print("  keygate's added calls per request, (b) - (a): "
      + ", ".join(f"{c} {d:+.2f}" for c, d in diff[:6] if abs(d) >= 0.01))

print("\n4. Where keygate's system calls go (strace -f -yy, wrk -t1 -c8 3 s): per request, by thread and descriptor")
print("   workers: the request threads, one per core; main: the main runtime's threads, which run the Redis")
print("   connection, the store's pool and background work; eventfd: a write that wakes another thread")
grid = {}
for label in ("local", "redis"):
    requests = int(open(f"{work}/calls.{label}.requests").read())
    for group, call, kind, c in read_pairs(f"{work}/calls.{label}"):
        grid.setdefault((kind, call), {})[(label, group)] = int(c) / requests
cols = [("local", "workers"), ("local", "main"), ("redis", "workers"), ("redis", "main")]
print(f"  {'descriptor':<12}{'call':<12}{'(a) workers':>12}{'main':>7}{'(b) workers':>13}{'main':>7}{'(b) - (a)':>11}")
rows = []
for (kind, call), v in grid.items():
    a_ = sum(x for (l, _), x in v.items() if l == "local")
    b_ = sum(x for (l, _), x in v.items() if l == "redis")
    if max(a_, b_) >= 0.01:
        rows.append((kind, call, v, a_, b_))
rows.sort(key=lambda r: (-abs(r[4] - r[3]), r[0], r[1]))
for kind, call, v, a_, b_ in rows:
    print(f"  {kind:<12}{call:<12}" + "".join(f"{v.get(c, 0):>{w}.2f}" for c, w in zip(cols, (12, 7, 13, 7)))
          + f"{b_ - a_:>+11.2f}")
tot = {l: sum(r[3] if l == "local" else r[4] for r in rows) for l in ("local", "redis")}
print(f"  all of these: (a) {tot['local']:.2f}, (b) {tot['redis']:.2f} per request, (b) - (a) {tot['redis'] - tot['local']:+.2f}")

print("\nchecks")
for ok, name, value in checks:
    print(f"  {'PASS' if ok else 'MISS'}  {name:<70} {value}")
PY
