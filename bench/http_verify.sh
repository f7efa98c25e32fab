#!/usr/bin/env bash
# HTTP load run of POST /v1/verify against GET /healthz (a trivial 200 route) on the same
# server in the same run, so the ratio says what key verification costs over serving HTTP at
# all. Target: verify ≥ 0.85× the trivial route's throughput.
#
# Reading the ratio: on a 2-core machine wrk takes about half the CPU, and most of the per-request
# cost is HTTP and the kernel. Sending verify's POST body to /healthz (a 405 problem document)
# measures about as slow as the full verify, so the gap to GET /healthz is mostly the cost of a
# request and response that carry JSON documents, not of checking the keys.
#
# Usage: bench/http_verify.sh [seconds per run, default 10] [connections, default 32]
# Needs wrk (Debian package; installed here if missing). Builds keygate in release mode, runs it
# on SQLite in a temporary directory on 127.0.0.1, and stops it afterwards.
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION="${1:-10}"
CONNECTIONS="${2:-32}"
PORT="${KEYGATE_BENCH_PORT:-18088}"

command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk; }
cargo build --release -p keygate --quiet
BIN="${CARGO_TARGET_DIR:-$PWD/target}/release/keygate"
WORK="$(mktemp -d)"
cleanup() { [ -n "${SERVER:-}" ] && kill "$SERVER" 2>/dev/null; wait 2>/dev/null; rm -rf "$WORK"; }
trap cleanup EXIT
cd "$WORK"

export KEYGATE_DATABASE_URL="sqlite://$WORK/keygate.db"
# Limits far above what one machine can send, so the run measures checking them, never hitting
# them (verify spends the operator key's and the verified key's allowances on every call).
export KEYGATE_LIMITS__MAX_KEY_RATE_LIMIT_PER_MINUTE=4000000000
export KEYGATE_LIMITS__DEFAULT_ACCOUNT_RATE_LIMIT_PER_MINUTE=4000000000
OPERATOR="$("$BIN" --json init 2>/dev/null | python3 -c 'import json,sys; print(json.load(sys.stdin)["key"])')"
"$BIN" serve --listen "127.0.0.1:$PORT" >/dev/null 2>"$WORK/serve.log" &
SERVER=$!
for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:$PORT/healthz" >/dev/null && break; sleep 0.1; done
KEY="$(curl -sf -X POST "http://127.0.0.1:$PORT/v1/api-keys" -H "Authorization: Bearer $OPERATOR" \
  -d '{"name":"bench","scopes":["calls:write"],"allowed_ips":["127.0.0.0/8"],"rate_limit_per_minute":4000000000}' \
  | python3 -c 'import json,sys; print(json.load(sys.stdin)["key"])')"

cat > verify.lua <<LUA
wrk.method = "POST"
wrk.body = '{"key":"$KEY","scope":"calls:write","ip":"127.0.0.1"}'
wrk.headers["Authorization"] = "Bearer $OPERATOR"
wrk.headers["Content-Type"] = "application/json"
LUA

run() { # url [script] -> "rps p99_ms"
  local out
  out="$(wrk -t2 -c"$CONNECTIONS" -d"${DURATION}s" --latency ${2:+-s "$2"} "$1")"
  local rps p99 non2xx
  rps="$(awk '/Requests\/sec/ {print $2}' <<<"$out")"
  p99="$(awk '$1=="99%" {print $2}' <<<"$out")"
  non2xx="$(awk '/Non-2xx/ {print $NF}' <<<"$out")"
  [ -z "$non2xx" ] || { echo "unexpected non-2xx responses: $non2xx" >&2; exit 1; }
  echo "$rps $p99"
}

# Warm up both paths (cache fill, connection pools), then measure.
wrk -t1 -c4 -d2s -s verify.lua "http://127.0.0.1:$PORT/v1/verify" >/dev/null
read -r BASE_RPS BASE_P99 < <(run "http://127.0.0.1:$PORT/healthz")
read -r VERIFY_RPS VERIFY_P99 < <(run "http://127.0.0.1:$PORT/v1/verify" verify.lua)
VALID="$(curl -s -X POST "http://127.0.0.1:$PORT/v1/verify" -H "Authorization: Bearer $OPERATOR" \
  -d "{\"key\":\"$KEY\",\"scope\":\"calls:write\",\"ip\":\"127.0.0.1\"}" | python3 -c 'import json,sys; print(json.load(sys.stdin)["code"])')"
[ "$VALID" = valid ] || { echo "verify did not answer valid: $VALID" >&2; exit 1; }

printf '\nHTTP load, %ss per run, %s connections, 2 wrk threads, same server and run:\n' "$DURATION" "$CONNECTIONS"
printf '  GET  /healthz    %10.0f req/s   p99 %s\n' "$BASE_RPS" "$BASE_P99"
printf '  POST /v1/verify  %10.0f req/s   p99 %s\n' "$VERIFY_RPS" "$VERIFY_P99"
python3 -c "print(f'  ratio verify/healthz throughput: {$VERIFY_RPS/$BASE_RPS:.2f}x (target >= 0.85x)')"
