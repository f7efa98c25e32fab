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
# Usage: bench/gateway_vs_nginx.sh [seconds per run, default 5] [connections, default 32] [rounds, default 3]
# Needs nginx and wrk (Debian packages; installed if missing). Everything listens on 127.0.0.1
# and is stopped afterwards. On a 2-core machine wrk shares the cores with the proxy under test.
set -euo pipefail
[ -n "${BENCH_DEBUG:-}" ] && set -x
cd "$(dirname "$0")/.."
DURATION="${1:-5}"
CONNECTIONS="${2:-32}"
ROUNDS="${3:-3}"
source bench/lib.sh
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
start_keygate "$KG_PORT"
KEY="$(create_key "$KG_PORT" '{"name":"bench","scopes":["calls:read"],"rate_limit_per_minute":4000000000}')"

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

curl -sf "http://127.0.0.1:$KG_PORT/v1/calls" -H "Authorization: Bearer $KEY" >/dev/null
curl -sf "http://127.0.0.1:$NGINX_PORT/v1/calls" -H "Authorization: Bearer $KEY" >/dev/null
curl -sf "http://127.0.0.1:$NGINX_LOG_PORT/v1/calls" -H "Authorization: Bearer $KEY" >/dev/null
[ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$NGINX_PORT/v1/calls" -H 'Authorization: Bearer nope')" = 401 ]
wrk -t1 -c4 -d2s -H "Authorization: Bearer $KEY" "http://127.0.0.1:$KG_PORT/v1/calls" >/dev/null

RESULTS="$WORK/results"
for _ in $(seq 1 "$ROUNDS"); do
  measure upstream "http://127.0.0.1:$UP_PORT/v1/calls" -H "Authorization: Bearer $KEY"
  measure nginx_log "http://127.0.0.1:$NGINX_LOG_PORT/v1/calls" -H "Authorization: Bearer $KEY"
  measure nginx "http://127.0.0.1:$NGINX_PORT/v1/calls" -H "Authorization: Bearer $KEY"
  measure keygate "http://127.0.0.1:$KG_PORT/v1/calls" -H "Authorization: Bearer $KEY"
done

printf '\nGateway load, %s rounds of %ss per target, %s connections, 2 wrk threads, same machine (medians):\n' \
  "$ROUNDS" "$DURATION" "$CONNECTIONS"
summarize | python3 -c "
import sys
rows = {l.split()[0]: l.split() for l in sys.stdin}
names = {'upstream': 'upstream directly', 'nginx_log': 'nginx, access log', 'nginx': 'nginx, no log', 'keygate': 'keygate gateway'}
for label, name in names.items():
    r = rows[label]
    print(f'  {name:<18} {float(r[1]):10.0f} req/s   p99 {float(r[2]):6.2f} ms   (runs: {\" \".join(r[3:])})')
rps = {k: float(v[1]) for k, v in rows.items()}
p99 = {k: float(v[2]) for k, v in rows.items()}
print(f'  keygate / upstream directly: {rps[\"keygate\"]/rps[\"upstream\"]:.2f}x throughput')
print(f'  keygate / nginx, access log: {rps[\"keygate\"]/rps[\"nginx_log\"]:.2f}x throughput (goal >= 1.0x), p99 {p99[\"keygate\"]/p99[\"nginx_log\"]:.2f}x (goal <= 1.2x)')
print(f'  keygate / nginx, no log:     {rps[\"keygate\"]/rps[\"nginx\"]:.2f}x throughput, p99 {p99[\"keygate\"]/p99[\"nginx\"]:.2f}x')"
