#!/usr/bin/env bash
# The data plane in one run: keygate's gateway against two equivalent key-checking proxies,
# its system calls per request, POST /v1/verify against GET /healthz, and a large route table
# against a small one. Every figure is printed as a ratio against a baseline measured in the
# same run, on the same machine, in alternating rounds.
#
# What runs (everything on 127.0.0.1, in a temporary directory, stopped on exit):
#   - upstream: nginx returning a small JSON body over keep-alive, shared by all proxies below.
#     It is never the bottleneck, and its CPU is counted for no one.
#   - nginx as the key-checking proxy: a `map` of valid keys (401 otherwise), `limit_req` per
#     key with a rate far above what one machine can send, keep-alive `proxy_pass`, and an access
#     log buffered as nginx is run in production (`buffer=64k flush=1s`): keygate too writes a
#     log line and a request-log record per request.
#   - HAProxy as the same proxy: the SHA-256 of the Authorization header looked up in a map of
#     key digests (401 otherwise), a stick-table counting `http_req_rate` per key with a deny
#     above a limit never reached, keep-alive to the upstream (`http-reuse always`),
#     `nbthread 2`; other paths 404, as nginx's `location`. No log is configured (HAProxy logs to
#     a syslog target, not to a buffered file).
#   - the stack's floor: `bare_proxy` (crates/keygate-gateway/examples/bare_proxy.rs), a reverse
#     proxy on keygate's own HTTP stack and threading (hyper server and client, one
#     current-thread Tokio runtime per core, one upstream pool per thread) doing nothing else: no
#     router, middleware, key, limit or log. keygate over it is what keygate's own work costs; it
#     over nginx is what the stack costs before keygate does anything.
#   - keygate (release build, SQLite): one gateway route GET /v1/calls (scope calls:read) to the
#     upstream, a key with a rate limit (and account limit) never reached, so the run measures
#     checking limits, never hitting them. The same server answers GET /healthz and
#     POST /v1/verify. Two more keygates serve 10 and 1,000 routes (/v1/calls last among
#     /v1/r{n}/items/{id}, /v1/r{n}/items/{id}/events/{event_id}, POST /v1/r{n}/items,
#     PUT /v1/r{n}/settings). With KEYGATE_BASE_BIN set, one more serves the one-route config
#     with that binary (keygate_base), for an A/B of two builds.
#
# How:
#   1. wrk -t2, $CONNECTIONS connections, $DURATION s per run, against every target in turn;
#      $ROUNDS rounds, each starting one target later than the one before, and medians over the
#      rounds: on two cores shared with wrk, single runs of the same target differ by up to 30%,
#      and alternating spreads a slow minute over every target. Any non-2xx answer fails the run.
#      Per run: req/s, p99, and the server's own CPU per request: the growth of utime+stime
#      (fields 14 and 15 of /proc/<pid>/stat, in clock ticks) summed over all its processes
#      (nginx master and workers; HAProxy; keygate, all threads) divided by the requests wrk
#      counted. CPU per request moves less than req/s with how busy the machine is, but it does
#      move (preemption, caches): compare figures of one run, never across runs. And how often
#      the server's threads were preempted per request (`nonvoluntary_ctxt_switches` of each
#      thread in /proc): a thread descheduled while its connections wait adds to their latency,
#      and it grows with the CPU a request takes (the count alone does not rank p99s:
#      docs/benchmarks.md).
#   2. System calls per forwarded request: one more short run per proxy (wrk -t1 -c8, 3 s) with
#      `strace -c -f` attached (nginx: its workers; HAProxy and keygate: the process, all its
#      threads); total calls / requests. strace slows the servers a lot: only the counts matter.
#      The window includes about a second around the run; an idle keygate makes about 100
#      calls a second (timers, the request log's flusher), under 0.1% of the count.
#   3. POST /v1/verify (the operator key verifying a restricted key with an IP allowlist,
#      answered `valid`) against GET /healthz on the same keygate: what key verification costs
#      over serving HTTP at all. GET /healthz is about the cheapest request an HTTP server can
#      answer (most of its CPU is the kernel's loopback TCP), so every microsecond verify adds
#      shows. Earlier profiles put about a fifth of verify's CPU into the request log (each call
#      is one authenticated request, written to the database in batches) and a tenth into the
#      per-request log line (healthz pays that too).
#   4. The gateway with 1,000 routes against 10: route matching must not grow with the table.
#
# Goals (printed PASS/MISS at the end; the script exits 0 either way unless something broke):
#   keygate ≥ 0.8× the throughput of nginx and of HAProxy, p99 ≤ 1.3× theirs, CPU per request
#   ≤ 1.4× nginx's; ≤ 6 system calls per forwarded request; verify ≥ 0.8× healthz's
#   throughput; 1,000 routes ≥ 0.9× the throughput of 10.
#
# Usage: bench/data_plane.sh [seconds per run, default 5] [connections, default 32] [rounds, default 3]
#   BIN=/path/to/keygate      measure that binary (default: cargo build --release -p keygate)
#   BARE_BIN=/path/to/bare_proxy   (default: cargo build --release --example bare_proxy)
#   KEYGATE_BASE_BIN=/path    also measure that binary's gateway as keygate_base: head/base ratios
# Needs wrk, nginx, haproxy, strace (Debian packages; installed if missing). Run it on an
# otherwise idle machine: the load average at the start is printed with the results.
set -euo pipefail
[ -n "${BENCH_DEBUG:-}" ] && set -x
cd "$(dirname "$0")/.."
REPO="$PWD"
DURATION="${1:-5}"
CONNECTIONS="${2:-32}"
ROUNDS="${3:-3}"
BASE_BIN="${KEYGATE_BASE_BIN:-}"
source bench/lib.sh

need wrk wrk
need nginx nginx
need haproxy haproxy
need strace strace
if [ -z "${BIN:-}" ]; then
  cargo build --release -p keygate --quiet
  BIN="${CARGO_TARGET_DIR:-$REPO/target}/release/keygate"
fi
if [ -z "${BARE_BIN:-}" ]; then
  cargo build --release -p keygate-gateway --example bare_proxy --quiet
  BARE_BIN="${CARGO_TARGET_DIR:-$REPO/target}/release/examples/bare_proxy"
fi
[ -x "$BIN" ] || { echo "BIN=$BIN is not an executable" >&2; exit 1; }
[ -x "$BARE_BIN" ] || { echo "BARE_BIN=$BARE_BIN is not an executable" >&2; exit 1; }
[ -z "$BASE_BIN" ] || [ -x "$BASE_BIN" ] || { echo "KEYGATE_BASE_BIN=$BASE_BIN is not an executable" >&2; exit 1; }
BIN="$(realpath "$BIN")"
BARE_BIN="$(realpath "$BARE_BIN")"
[ -z "$BASE_BIN" ] || BASE_BIN="$(realpath "$BASE_BIN")"
LOADAVG="$(cut -d' ' -f1-3 /proc/loadavg)"

WORK="$(mktemp -d)"
STARTED=()
cleanup() {
  local p
  for p in "${STARTED[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT
cd "$WORK"
RESULTS="$WORK/results"
: >"$RESULTS"

UP_PORT="$(free_port 19100)"
NGINX_PORT="$(free_port 19200)"
HAPROXY_PORT="$(free_port 19250)"
KG_PORT="$(free_port 19300)"
R10_PORT="$(free_port $((KG_PORT + 10)))"
R1000_PORT="$(free_port $((R10_PORT + 10)))"
BASE_PORT="$(free_port $((R1000_PORT + 10)))"
BARE_PORT="$(free_port 19400)"

# The upstream: its own nginx, so the proxy nginx's processes do nothing but proxy.
start_upstream "$UP_PORT"

# keygate configs: limits far above what one machine can send; N routes, /v1/calls the last.
keygate_config() {
  local dir="$WORK/$1" routes="$2" n
  mkdir -p "$dir"
  {
    echo "database_url = \"sqlite://$dir/keygate.db\""
    echo "[limits]"
    echo "max_key_rate_limit_per_minute = 4000000000"
    echo "default_account_rate_limit_per_minute = 4000000000"
    echo "[gateway]"
    echo "upstream = \"http://127.0.0.1:$UP_PORT\""
    for ((n = 0; n < routes - 1; n++)); do
      case $((n % 4)) in
        0) printf '[[gateway.routes]]\nmethod = "GET"\npath = "/v1/r%d/items/{id}"\nscope = "calls:read"\n' "$n" ;;
        1) printf '[[gateway.routes]]\nmethod = "POST"\npath = "/v1/r%d/items"\nscope = "calls:write"\n' "$n" ;;
        2) printf '[[gateway.routes]]\nmethod = "GET"\npath = "/v1/r%d/items/{id}/events/{event_id}"\nscope = "calls:read"\n' "$n" ;;
        3) printf '[[gateway.routes]]\nmethod = "PUT"\npath = "/v1/r%d/settings"\nscope = "calls:write"\n' "$n" ;;
      esac
    done
    printf '[[gateway.routes]]\nmethod = "GET"\npath = "/v1/calls"\nscope = "calls:read"\n'
  } >"$dir/keygate.toml"
  echo "$dir/keygate.toml"
}
GATEWAY_KEY='{"name":"bench","scopes":["calls:read"],"rate_limit_per_minute":4000000000}'
declare -A KEYS PORTS
start_gateway() {  # NAME BIN PORT ROUTES
  start_keygate "$1" "$2" "$3" "$(keygate_config "$1" "$4")"
  STARTED+=("${KG_PID[$1]}")
  PORTS[$1]="$3"
  KEYS[$1]="$(create_key "$3" "${KG_OPERATOR[$1]}" "$GATEWAY_KEY")"
}
start_gateway keygate "$BIN" "$KG_PORT" 1
start_gateway routes_10 "$BIN" "$R10_PORT" 10
start_gateway routes_1000 "$BIN" "$R1000_PORT" 1000
[ -z "$BASE_BIN" ] || start_gateway keygate_base "$BASE_BIN" "$BASE_PORT" 1
KEY="${KEYS[keygate]}"
VERIFIED="$(create_key "$KG_PORT" "${KG_OPERATOR[keygate]}" \
  '{"name":"bench-verify","scopes":["calls:write"],"allowed_ips":["127.0.0.0/8"],"rate_limit_per_minute":4000000000}')"
cat >verify.lua <<LUA
wrk.method = "POST"
wrk.body = '{"key":"$VERIFIED","scope":"calls:write","ip":"127.0.0.1"}'
wrk.headers["Authorization"] = "Bearer ${KG_OPERATOR[keygate]}"
wrk.headers["Content-Type"] = "application/json"
LUA

# The stack's floor: forwards everything, checks nothing.
"$BARE_BIN" "127.0.0.1:$BARE_PORT" "127.0.0.1:$UP_PORT" "$(nproc)" &
BARE_PID=$!
STARTED+=("$BARE_PID")

# nginx as the key-checking proxy.
cat >nginx.conf <<NGINX
daemon off;
worker_processes auto;
pid $WORK/nginx.pid;
error_log $WORK/nginx-error.log;
events { worker_connections 4096; }
http {
  access_log $WORK/nginx-access.log combined buffer=64k flush=1s;
  map_hash_bucket_size 128;
  map \$http_authorization \$api_key_valid { "Bearer $KEY" 1; default 0; }
  limit_req_zone \$http_authorization zone=per_key:10m rate=60000000r/m;
  upstream api { server 127.0.0.1:$UP_PORT; keepalive 64; keepalive_requests 1000000; }
  server {
    listen 127.0.0.1:$NGINX_PORT;
    keepalive_requests 1000000;
    location /v1/calls {
      if (\$api_key_valid = 0) { return 401; }
      limit_req zone=per_key burst=1000000 nodelay;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Authorization "";
      proxy_set_header X-Forwarded-For \$remote_addr;
      proxy_pass http://api;
    }
  }
}
NGINX
nginx -e "$WORK/nginx-error.log" -c "$WORK/nginx.conf" -p "$WORK" &
NGINX_MASTER=$!
STARTED+=("$NGINX_MASTER")

# HAProxy as the same proxy. The map holds SHA-256 digests of the whole header ("Bearer <key>",
# as nginx's map matches it), upper-case hex as the `hex` converter writes them.
printf '%s 1\n' "$(printf 'Bearer %s' "$KEY" | sha256sum | cut -d' ' -f1 | tr a-f A-F)" >keys.map
cat >haproxy.cfg <<HAPROXY
global
  nbthread 2
  maxconn 4096
defaults
  mode http
  timeout connect 5s
  timeout client 30s
  timeout server 30s
  option http-keep-alive
frontend gateway
  bind 127.0.0.1:$HAPROXY_PORT
  stick-table type string len 64 size 100k expire 60s store http_req_rate(60s)
  http-request deny deny_status 404 unless { path /v1/calls }
  http-request set-var(txn.key_digest) req.fhdr(authorization),sha2(256),hex
  http-request deny deny_status 401 unless { var(txn.key_digest),map($WORK/keys.map) -m found }
  http-request track-sc0 var(txn.key_digest)
  http-request deny deny_status 429 if { sc_http_req_rate(0) gt 4000000000 }
  http-request del-header authorization
  option forwardfor
  default_backend upstream
backend upstream
  http-reuse always
  server up1 127.0.0.1:$UP_PORT
HAPROXY
haproxy -c -q -f haproxy.cfg
haproxy -db -f haproxy.cfg >haproxy.log 2>&1 &
HAPROXY_PID=$!
STARTED+=("$HAPROXY_PID")

# Wait for the three, then check that each proxy forwards a valid key and refuses another.
for port in "$UP_PORT" "$NGINX_PORT" "$HAPROXY_PORT" "$BARE_PORT"; do
  for _ in $(seq 1 50); do [ "$(status "http://127.0.0.1:$port/v1/calls")" != 000 ] && break; sleep 0.1; done
done
NGINX_PIDS="$NGINX_MASTER $(pgrep -P "$NGINX_MASTER" | tr '\n' ' ')"
NGINX_WORKERS="$(pgrep -P "$NGINX_MASTER" | tr '\n' ' ')"
[ -n "$NGINX_WORKERS" ] || { echo "nginx started no workers" >&2; cat nginx-error.log >&2; exit 1; }
for t in "nginx $NGINX_PORT $KEY" "haproxy $HAPROXY_PORT $KEY" "keygate $KG_PORT $KEY" \
  "routes_10 $R10_PORT ${KEYS[routes_10]}" "routes_1000 $R1000_PORT ${KEYS[routes_1000]}" \
  ${BASE_BIN:+"keygate_base $BASE_PORT ${KEYS[keygate_base]:-}"}; do
  read -r name port key <<<"$t"
  expect "$name forwards a valid key" 200 "$(status "http://127.0.0.1:$port/v1/calls" -H "Authorization: Bearer $key")"
  body="$(curl -s "http://127.0.0.1:$port/v1/calls" -H "Authorization: Bearer $key")"
  expect "$name returns the upstream's body" '{"calls":[],"ok":true}' "$body"
  expect "$name refuses an unknown key" 401 "$(status "http://127.0.0.1:$port/v1/calls" -H "Authorization: Bearer ${key}x")"
  expect "$name refuses no key" 401 "$(status "http://127.0.0.1:$port/v1/calls")"
done
expect "bare_proxy forwards" '{"calls":[],"ok":true}' "$(curl -s "http://127.0.0.1:$BARE_PORT/v1/calls")"
expect "routes_10 forwards a path-parameter route" 200 \
  "$(status "http://127.0.0.1:$R10_PORT/v1/r0/items/42" -H "Authorization: Bearer ${KEYS[routes_10]}")"
expect "routes_1000 forwards a path-parameter route" 200 \
  "$(status "http://127.0.0.1:$R1000_PORT/v1/r998/items/42/events/7" -H "Authorization: Bearer ${KEYS[routes_1000]}")"
expect "routes_1000 has no route /v1/r1000/settings" 404 \
  "$(status -X PUT "http://127.0.0.1:$R1000_PORT/v1/r1000/settings" -H "Authorization: Bearer ${KEYS[routes_1000]}")"
VALID="$(curl -s -X POST "http://127.0.0.1:$KG_PORT/v1/verify" -H "Authorization: Bearer ${KG_OPERATOR[keygate]}" \
  -H "Content-Type: application/json" -d "{\"key\":\"$VERIFIED\",\"scope\":\"calls:write\",\"ip\":\"127.0.0.1\"}" |
  python3 -c 'import json,sys; print(json.load(sys.stdin).get("code"))')"
expect "POST /v1/verify answers" valid "$VALID"

measure() {
  case "$1" in
    nginx) wrk_run nginx "$NGINX_PIDS" "http://127.0.0.1:$NGINX_PORT/v1/calls" -H "Authorization: Bearer $KEY" ;;
    haproxy) wrk_run haproxy "$HAPROXY_PID" "http://127.0.0.1:$HAPROXY_PORT/v1/calls" -H "Authorization: Bearer $KEY" ;;
    bare) wrk_run bare "$BARE_PID" "http://127.0.0.1:$BARE_PORT/v1/calls" -H "Authorization: Bearer $KEY" ;;
    healthz) wrk_run healthz "${KG_PID[keygate]}" "http://127.0.0.1:$KG_PORT/healthz" ;;
    verify) wrk_run verify "${KG_PID[keygate]}" "http://127.0.0.1:$KG_PORT/v1/verify" -s verify.lua ;;
    *) wrk_run "$1" "${KG_PID[$1]}" "http://127.0.0.1:${PORTS[$1]}/v1/calls" -H "Authorization: Bearer ${KEYS[$1]}" ;;
  esac
}
TARGETS=(nginx haproxy bare keygate ${BASE_BIN:+keygate_base} healthz verify routes_10 routes_1000)

# Warm-up: caches, connection pools, the request log's first batches.
echo "warming up ${TARGETS[*]}" >&2
for t in "${TARGETS[@]}"; do
  case "$t" in
    verify) wrk -t1 -c4 -d1s -s verify.lua "http://127.0.0.1:$KG_PORT/v1/verify" >/dev/null ;;
    healthz) wrk -t1 -c4 -d1s "http://127.0.0.1:$KG_PORT/healthz" >/dev/null ;;
    nginx) wrk -t1 -c4 -d1s -H "Authorization: Bearer $KEY" "http://127.0.0.1:$NGINX_PORT/v1/calls" >/dev/null ;;
    haproxy) wrk -t1 -c4 -d1s -H "Authorization: Bearer $KEY" "http://127.0.0.1:$HAPROXY_PORT/v1/calls" >/dev/null ;;
    bare) wrk -t1 -c4 -d1s "http://127.0.0.1:$BARE_PORT/v1/calls" >/dev/null ;;
    *) wrk -t1 -c4 -d1s -H "Authorization: Bearer ${KEYS[$t]}" "http://127.0.0.1:${PORTS[$t]}/v1/calls" >/dev/null ;;
  esac
done

n=${#TARGETS[@]}
for ((r = 0; r < ROUNDS; r++)); do
  echo "round $((r + 1)) of $ROUNDS" >&2
  for ((i = 0; i < n; i++)); do measure "${TARGETS[$(((i + r) % n))]}"; done
done

echo "system calls per request (strace -c -f; wrk -t1 -c8 3s)" >&2
syscalls_run nginx "$NGINX_WORKERS" "http://127.0.0.1:$NGINX_PORT/v1/calls" -H "Authorization: Bearer $KEY"
syscalls_run haproxy "$HAPROXY_PID" "http://127.0.0.1:$HAPROXY_PORT/v1/calls" -H "Authorization: Bearer $KEY"
syscalls_run bare "$BARE_PID" "http://127.0.0.1:$BARE_PORT/v1/calls" -H "Authorization: Bearer $KEY"
syscalls_run keygate "${KG_PID[keygate]}" "http://127.0.0.1:$KG_PORT/v1/calls" -H "Authorization: Bearer $KEY"
[ -z "$BASE_BIN" ] || syscalls_run keygate_base "${KG_PID[keygate_base]}" \
  "http://127.0.0.1:$BASE_PORT/v1/calls" -H "Authorization: Bearer ${KEYS[keygate_base]}"

# Every server must still be up: a crash mid-run would make its figures meaningless.
for p in "${STARTED[@]}"; do kill -0 "$p" 2>/dev/null || { echo "process $p exited during the run" >&2; exit 1; }; done

echo
DURATION="$DURATION" CONNECTIONS="$CONNECTIONS" ROUNDS="$ROUNDS" LOADAVG="$LOADAVG" NPROC="$(nproc)" \
  BIN="$BIN" BASE_BIN="$BASE_BIN" WORK="$WORK" python3 - "$RESULTS" <<'PY'
import os, statistics, sys

env = os.environ
runs = {}
for line in open(sys.argv[1]):
    label, rps, p99, cpu, n, pre = line.split()
    runs.setdefault(label, []).append((float(rps), float(p99), float(cpu), float(pre)))
med = {k: tuple(statistics.median(r[i] for r in v) for i in range(4)) for k, v in runs.items()}
rps = {k: v[0] for k, v in med.items()}
p99 = {k: v[1] for k, v in med.items()}
cpu = {k: v[2] for k, v in med.items()}
pre = {k: v[3] for k, v in med.items()}
base = bool(env["BASE_BIN"])

def syscalls(label):
    path = f"{env['WORK']}/strace.{label}"
    if not os.path.exists(path + ".count"):
        return None, None, []
    calls, requests = map(int, open(path + ".count").read().split())
    rows = []
    for line in open(path):
        f = line.split()
        if len(f) >= 5 and f[0][0].isdigit() and f[-1] != "total":
            rows.append((f[-1], int(f[3])))
    rows.sort(key=lambda r: -r[1])
    return calls / requests, requests, rows

def row(label, name):
    r = runs[label]
    print(f"  {name:<24}{rps[label]:>10,.0f}{p99[label]:>9.2f}{cpu[label]:>12.1f}{pre[label]:>8.3f}    "
          + " ".join(f"{x[0]:,.0f}" for x in r))

goals = []
def goal(name, value, target, ok):
    goals.append((ok, name, value, target))

print(f"Data plane: {env['ROUNDS']} alternating rounds of {env['DURATION']} s per target, "
      f"{env['CONNECTIONS']} connections, wrk -t2, all on one {env['NPROC']}-core machine "
      f"(load average before: {env['LOADAVG']}); medians over the rounds.")
print(f"keygate: {env['BIN']}" + (f"; keygate_base: {env['BASE_BIN']}" if base else ""))
head = f"  {'':<24}{'req/s':>10}{'p99 ms':>9}{'CPU µs/req':>12}{'preempt':>8}  req/s of each round"

print("\n1. Key-checking proxies, GET /v1/calls, one nginx upstream")
print(head)
for label, name in [("nginx", "nginx (access log)"), ("haproxy", "HAProxy (nbthread 2)"),
                    ("bare", "bare_proxy (the floor)"), ("keygate", "keygate gateway")] + ([("keygate_base", "keygate_base gateway")] if base else []):
    row(label, name)
for other in ("nginx", "haproxy"):
    t, l, c = rps["keygate"] / rps[other], p99["keygate"] / p99[other], cpu["keygate"] / cpu[other]
    print(f"  keygate / {other:<8} throughput {t:.2f}x (goal >= 0.8x)   p99 {l:.2f}x (goal <= 1.3x)   "
          f"CPU per request {c:.2f}x" + (" (goal <= 1.4x)" if other == "nginx" else ""))
    goal(f"throughput keygate / {other} >= 0.8x", f"{t:.2f}x", 0.8, t >= 0.8)
    goal(f"p99 keygate / {other} <= 1.3x", f"{l:.2f}x", 1.3, l <= 1.3)
    if other == "nginx":
        goal("CPU per request keygate / nginx <= 1.4x", f"{c:.2f}x", 1.4, c <= 1.4)
print("  preempt: times a thread of the proxy was descheduled for another (involuntary context"
      " switches), per request")
print(f"  bare_proxy / nginx  throughput {rps['bare'] / rps['nginx']:.2f}x   CPU per request {cpu['bare'] / cpu['nginx']:.2f}x"
      "   (what the HTTP stack costs before keygate does anything)")
print(f"  keygate / bare_proxy throughput {rps['keygate'] / rps['bare']:.2f}x   CPU per request {cpu['keygate'] / cpu['bare']:.2f}x"
      f"   (keygate's own work: {cpu['keygate'] - cpu['bare']:.1f} µs per request)")

print("\n2. System calls per forwarded request (strace -c -f, wrk -t1 -c8 3 s; counts only)")
sc = {}
for label, name in [("nginx", "nginx (workers)"), ("haproxy", "HAProxy"), ("bare", "bare_proxy"), ("keygate", "keygate")] \
        + ([("keygate_base", "keygate_base")] if base else []):
    per, requests, rows = syscalls(label)
    sc[label] = (per, requests, rows)
    print(f"  {name:<24}{per:>8.2f} per request   ({requests:,} requests under strace)")
print(f"  keygate / nginx {sc['keygate'][0] / sc['nginx'][0]:.2f}x, keygate / HAProxy {sc['keygate'][0] / sc['haproxy'][0]:.2f}x")
for label in ["keygate", "bare", "nginx", "haproxy"]:
    per, requests, rows = sc[label]
    top = ", ".join(f"{name} {calls / requests:.2f}" for name, calls in rows[:8])
    print(f"  {label}'s top calls per request: {top}")
goal("system calls per forwarded request (keygate) <= 6", f"{sc['keygate'][0]:.2f}", 6, sc["keygate"][0] <= 6)

print("\n3. keygate POST /v1/verify vs GET /healthz, same server")
print(head)
row("healthz", "GET /healthz")
row("verify", "POST /v1/verify")
t, c = rps["verify"] / rps["healthz"], cpu["verify"] / cpu["healthz"]
print(f"  verify / healthz: throughput {t:.2f}x (goal >= 0.8x), CPU per request {c:.2f}x, p99 {p99['verify'] / p99['healthz']:.2f}x")
goal("throughput verify / healthz >= 0.8x", f"{t:.2f}x", 0.8, t >= 0.8)

print("\n4. Gateway route table: GET /v1/calls, 1,000 routes vs 10 (a keygate each)")
print(head)
row("routes_10", "10 routes")
row("routes_1000", "1,000 routes")
t, c = rps["routes_1000"] / rps["routes_10"], cpu["routes_1000"] / cpu["routes_10"]
print(f"  1,000 / 10 routes: throughput {t:.2f}x (goal >= 0.9x), CPU per request {c:.2f}x, p99 {p99['routes_1000'] / p99['routes_10']:.2f}x")
goal("throughput 1,000 routes / 10 routes >= 0.9x", f"{t:.2f}x", 0.9, t >= 0.9)

if base:
    print("\n5. A/B: keygate (head) / keygate_base, gateway")
    print(f"  throughput {rps['keygate'] / rps['keygate_base']:.2f}x   CPU per request "
          f"{cpu['keygate'] / cpu['keygate_base']:.2f}x   p99 {p99['keygate'] / p99['keygate_base']:.2f}x   "
          f"system calls per request {sc['keygate'][0] / sc['keygate_base'][0]:.2f}x")

print("\ngoals")
for ok, name, value, _ in goals:
    print(f"  {'PASS' if ok else 'MISS'}  {name:<52} {value}")
PY
