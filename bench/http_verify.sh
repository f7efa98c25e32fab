#!/usr/bin/env bash
# HTTP load run of POST /v1/verify against GET /healthz (a trivial 200 route) on the same
# server in the same run, so the ratio says what key verification costs over serving HTTP at
# all. Target: verify ≥ 0.85× the trivial route's throughput.
#
# Reading the ratio: GET /healthz is about the cheapest request an HTTP server can answer (about
# 11 µs of CPU here, most of it in the kernel's loopback TCP), so every microsecond verify adds
# shows. A profile of the verify run puts about a fifth of keygate's CPU into the request log
# (each verify call is one authenticated request, recorded in the database in batches), a tenth
# into the per-request log line (healthz pays that too), and the rest into HTTP and the kernel;
# the two key checks, the four rate-limit checks and the JSON in and out are a few percent each.
# Without the request log the ratio was about 0.61x.
#
# Usage: bench/http_verify.sh [seconds per run, default 5] [connections, default 32] [rounds, default 3]
# Needs wrk (Debian package; installed here if missing). Builds keygate in release mode, runs it
# on SQLite in a temporary directory on 127.0.0.1, and stops it afterwards.
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION="${1:-5}"
CONNECTIONS="${2:-32}"
ROUNDS="${3:-3}"
source bench/lib.sh
PORT="${KEYGATE_BENCH_PORT:-18088}"

command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk; }
cargo build --release -p keygate --quiet
BIN="${CARGO_TARGET_DIR:-$PWD/target}/release/keygate"
WORK="$(mktemp -d)"
cleanup() { [ -n "${KG_PID:-}" ] && kill "$KG_PID" 2>/dev/null; wait 2>/dev/null; rm -rf "$WORK"; }
trap cleanup EXIT
cd "$WORK"

export KEYGATE_DATABASE_URL="sqlite://$WORK/keygate.db"
# Limits far above what one machine can send, so the run measures checking them, never hitting
# them (verify spends the operator key's and the verified key's allowances on every call).
export KEYGATE_LIMITS__MAX_KEY_RATE_LIMIT_PER_MINUTE=4000000000
export KEYGATE_LIMITS__DEFAULT_ACCOUNT_RATE_LIMIT_PER_MINUTE=4000000000
start_keygate "$PORT"
KEY="$(create_key "$PORT" '{"name":"bench","scopes":["calls:write"],"allowed_ips":["127.0.0.0/8"],"rate_limit_per_minute":4000000000}')"

cat > verify.lua <<LUA
wrk.method = "POST"
wrk.body = '{"key":"$KEY","scope":"calls:write","ip":"127.0.0.1"}'
wrk.headers["Authorization"] = "Bearer $OPERATOR"
wrk.headers["Content-Type"] = "application/json"
LUA

# Warm up both paths (cache fill, connection pools), then measure in alternating rounds.
wrk -t1 -c4 -d2s -s verify.lua "http://127.0.0.1:$PORT/v1/verify" >/dev/null
RESULTS="$WORK/results"
for _ in $(seq 1 "$ROUNDS"); do
  measure healthz "http://127.0.0.1:$PORT/healthz"
  measure verify "http://127.0.0.1:$PORT/v1/verify" -s verify.lua
done
VALID="$(curl -s -X POST "http://127.0.0.1:$PORT/v1/verify" -H "Authorization: Bearer $OPERATOR" \
  -d "{\"key\":\"$KEY\",\"scope\":\"calls:write\",\"ip\":\"127.0.0.1\"}" | python3 -c 'import json,sys; print(json.load(sys.stdin)["code"])')"
[ "$VALID" = valid ] || { echo "verify did not answer valid: $VALID" >&2; exit 1; }

printf '\nHTTP load, %s rounds of %ss per target, %s connections, 2 wrk threads, same server (medians):\n' \
  "$ROUNDS" "$DURATION" "$CONNECTIONS"
summarize | python3 -c "
import sys
rows = {l.split()[0]: l.split() for l in sys.stdin}
names = {'healthz': 'GET  /healthz  ', 'verify': 'POST /v1/verify'}
for label in ('healthz', 'verify'):
    r = rows[label]
    print(f'  {names[label]} {float(r[1]):10.0f} req/s   p99 {float(r[2]):.2f} ms   (runs: {\" \".join(r[3:])})')
ratio = float(rows['verify'][1]) / float(rows['healthz'][1])
print(f'  ratio verify/healthz throughput: {ratio:.2f}x (target >= 0.85x)')"
