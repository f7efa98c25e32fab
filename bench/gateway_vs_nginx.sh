#!/usr/bin/env bash
# HTTP load run of keygate's gateway, in one go, against two baselines measured in the same run:
#   1. the upstream called directly (what a proxy costs at all),
#   2. nginx configured as an equivalent key-checking proxy: a `map` of valid keys, `limit_req`
#      per key, `proxy_pass` with keep-alive to the same upstream; once with an access log
#      (buffered, as nginx is run in production: keygate too logs a line and writes a
#      request-log record per request) and once with no log at all.
# The upstream is nginx returning a small JSON body, so it is never the bottleneck.
# Goal: keygate ≥ 1.0× nginx's throughput with p99 ≤ 1.2× nginx's.
#
# Usage: bench/gateway_vs_nginx.sh [seconds per run, default 10] [connections, default 32]
# Needs nginx and wrk (Debian packages; installed if missing). Everything listens on 127.0.0.1
# and is stopped afterwards. On a 2-core machine wrk shares the cores with the proxy under test.
set -euo pipefail
[ -n "${BENCH_DEBUG:-}" ] && set -x
cd "$(dirname "$0")/.."
DURATION="${1:-10}"
CONNECTIONS="${2:-32}"
UP_PORT=19100; NGINX_PORT=19200; NGINX_LOG_PORT=19201; KG_PORT=19300

need() { command -v "$1" >/dev/null || { apt-get update -qq && apt-get install -y -qq "$2"; }; }
need wrk wrk
need nginx nginx
cargo build --release -p keygate --quiet
BIN="${CARGO_TARGET_DIR:-$PWD/target}/release/keygate"
WORK="$(mktemp -d)"
cleanup() {
  [ -n "${KG_PID:-}" ] && kill "$KG_PID" 2>/dev/null
  [ -f "$WORK/nginx.pid" ] && kill "$(cat "$WORK/nginx.pid")" 2>/dev/null
  wait 2>/dev/null; rm -rf "$WORK"
}
trap cleanup EXIT
cd "$WORK"

# keygate: a gateway route to the upstream; limits far above what one machine can send, so the
# run measures checking them, never hitting them.
cat > keygate.toml <<TOML
database_url = "sqlite://$WORK/keygate.db"
[limits]
max_key_rate_limit_per_minute = 4000000000
default_account_rate_limit_per_minute = 4000000000
[gateway]
upstream = "http://127.0.0.1:$UP_PORT"
[[gateway.routes]]
method = "GET"
path = "/v1/calls"
scope = "calls:read"
TOML
export KEYGATE_CONFIG="$WORK/keygate.toml"
OPERATOR="$("$BIN" --json init 2>/dev/null | python3 -c 'import json,sys; print(json.load(sys.stdin)["key"])')"
"$BIN" serve --listen "127.0.0.1:$KG_PORT" >/dev/null 2>"$WORK/keygate.log" &
KG_PID=$!
for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:$KG_PORT/healthz" >/dev/null && break; sleep 0.1; done
KEY="$(curl -sf -X POST "http://127.0.0.1:$KG_PORT/v1/api-keys" -H "Authorization: Bearer $OPERATOR" \
  -d '{"name":"bench","scopes":["calls:read"],"rate_limit_per_minute":4000000000}' \
  | python3 -c 'import json,sys; print(json.load(sys.stdin)["key"])')"

# nginx: the upstream and the key-checking proxy, in one master with two servers.
cat > nginx.conf <<NGINX
worker_processes auto;
pid $WORK/nginx.pid;
error_log $WORK/nginx-error.log;
events { worker_connections 4096; }
http {
  access_log off;
  map_hash_bucket_size 128;
  map \$http_authorization \$api_key_valid { "Bearer $KEY" 1; default 0; }
  limit_req_zone \$http_authorization zone=per_key:10m rate=60000000r/m;
  upstream api { server 127.0.0.1:$UP_PORT; keepalive 64; }
  server {
    listen 127.0.0.1:$UP_PORT;
    keepalive_requests 1000000;
    location / { default_type application/json; return 200 '{"calls":[],"ok":true}'; }
  }
  server {
    listen 127.0.0.1:$NGINX_PORT;
    location /v1/calls { include proxy.conf; }
  }
  server {
    listen 127.0.0.1:$NGINX_LOG_PORT;
    access_log $WORK/access.log combined buffer=64k flush=1s;
    location /v1/calls { include proxy.conf; }
  }
}
NGINX
cat > proxy.conf <<NGINX
if (\$api_key_valid = 0) { return 401; }
limit_req zone=per_key burst=1000000 nodelay;
proxy_http_version 1.1;
proxy_set_header Connection "";
proxy_set_header Authorization "";
proxy_set_header X-Forwarded-For \$remote_addr;
proxy_pass http://api;
NGINX
nginx -c "$WORK/nginx.conf" -p "$WORK"
sleep 0.5

run() { # url -> "rps p99"
  local out rps p99 non2xx
  out="$(wrk -t2 -c"$CONNECTIONS" -d"${DURATION}s" --latency -H "Authorization: Bearer $KEY" "$1")"
  rps="$(awk '/Requests\/sec/ {print $2}' <<<"$out")"
  p99="$(awk '$1=="99%" {print $2}' <<<"$out")"
  non2xx="$(awk '/Non-2xx/ {print $NF}' <<<"$out")"
  [ -z "$non2xx" ] || { echo "unexpected non-2xx responses from $1: $non2xx" >&2; exit 1; }
  echo "$rps $p99"
}
ms() { python3 -c "
v='$1'
print(float(v[:-2]) if v.endswith('ms') else float(v[:-2])/1000 if v.endswith('us') else float(v[:-1])*1000)"; }

curl -sf "http://127.0.0.1:$KG_PORT/v1/calls" -H "Authorization: Bearer $KEY" >/dev/null
curl -sf "http://127.0.0.1:$NGINX_PORT/v1/calls" -H "Authorization: Bearer $KEY" >/dev/null
curl -sf "http://127.0.0.1:$NGINX_LOG_PORT/v1/calls" -H "Authorization: Bearer $KEY" >/dev/null
[ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$NGINX_PORT/v1/calls" -H 'Authorization: Bearer nope')" = 401 ]
wrk -t1 -c4 -d2s -H "Authorization: Bearer $KEY" "http://127.0.0.1:$KG_PORT/v1/calls" >/dev/null

read -r UP_RPS UP_P99 < <(run "http://127.0.0.1:$UP_PORT/v1/calls")
read -r NG_RPS NG_P99 < <(run "http://127.0.0.1:$NGINX_PORT/v1/calls")
read -r NL_RPS NL_P99 < <(run "http://127.0.0.1:$NGINX_LOG_PORT/v1/calls")
read -r KG_RPS KG_P99 < <(run "http://127.0.0.1:$KG_PORT/v1/calls")

printf '\nGateway load, %ss per run, %s connections, 2 wrk threads, same machine and run:\n' "$DURATION" "$CONNECTIONS"
printf '  upstream directly          %10.0f req/s   p99 %s\n' "$UP_RPS" "$UP_P99"
printf '  nginx, access log         %10.0f req/s   p99 %s\n' "$NL_RPS" "$NL_P99"
printf '  nginx, no log              %10.0f req/s   p99 %s\n' "$NG_RPS" "$NG_P99"
printf '  keygate gateway            %10.0f req/s   p99 %s\n' "$KG_RPS" "$KG_P99"
python3 -c "
print(f'  keygate / upstream directly: {$KG_RPS/$UP_RPS:.2f}x throughput')
print(f'  keygate / nginx, access log: {$KG_RPS/$NL_RPS:.2f}x throughput (goal >= 1.0x), p99 {$(ms "$KG_P99")/$(ms "$NL_P99"):.2f}x (goal <= 1.2x)')
print(f'  keygate / nginx, no log:     {$KG_RPS/$NG_RPS:.2f}x throughput, p99 {$(ms "$KG_P99")/$(ms "$NG_P99"):.2f}x')"
