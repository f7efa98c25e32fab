#!/usr/bin/env bash
# Tests the load-balancer configurations of docs/deployment.md: deploy/haproxy.cfg and
# deploy/nginx.conf, each in turn in front of three `keygate serve` nodes sharing one scratch
# PostgreSQL database and one hash secret, everything on loopback ports this script picks.
#
# Each load balancer runs from its shipped file with only the addresses, the listening port and
# its pid, log and socket paths replaced (sed; a change to any other line of the files is run
# as written). One PASS or FAIL line per check:
#
#   shipped     the file as it stands (example addresses 10.0.0.11-13:8080) passes
#               `haproxy -c` / `nginx -t`;
#   (a) spread  30 GET /v1/api-keys through the load balancer, on one client connection: every
#               one answered 200, and all three nodes served some (each answer's X-Request-Id is
#               found in exactly one node's log);
#   (a) keep-alive  after those, the load balancer holds open connections to the nodes and
#               closed (almost) none: /proc/net/tcp, ESTABLISHED and TIME_WAIT;
#   (b) client  keygate sees the client's address, not the load balancer's: the client talks to
#               the load balancer from 127.0.0.2, the load balancer to the nodes from 127.0.0.1
#               (their trusted_proxies). A key allowed only 127.0.0.2 works through it and the
#               node's log line says client_ip 127.0.0.2; a key allowed only 127.0.0.1 gets 403
#               ip_not_allowed; a client at 127.0.0.3 claiming `X-Forwarded-For: 127.0.0.2` gets
#               403 too;
#   (c) kill    node 2 is stopped (SIGTERM, no drain) under a steady stream of GETs from two
#               clients: no request fails, and none is served by node 2 after it stopped; how
#               long the load balancer took to notice is printed (HAProxy: its health check marks
#               the node DOWN; nginx: its error log records the refused connection);
#   (d) back    node 2 restarted: it serves requests through the load balancer again, and all
#               three nodes share 30 requests;
#   (e) rolling node 3 upgraded as docs/deployment.md says (drain it in the load balancer,
#               SIGTERM, wait, start, wait for /readyz, re-enable) under a stream of GETs and
#               POST /v1/tenants: no request fails, node 3 serves nothing from the drain to the
#               re-enable, and every POST answered 201 made exactly one tenant (none replayed);
#
# and once, before: a node started with another hash_secret refuses to start.
#
# Usage: scripts/deploy_check.sh
#   BIN=/path/to/keygate      use that binary (default: target/debug/keygate, built with
#                             `cargo build -p keygate` if absent)
#   DEPLOY_CHECK_POSTGRES=postgres://user@host:port   where to create the scratch database
#                             (default postgres://postgres@127.0.0.1:5432; the user must be
#                             allowed to create databases)
#   DEPLOY_CHECK_ONLY=haproxy or nginx   one load balancer only
#   DEPLOY_CHECK_KEEP=1       keep the temporary directory (logs, rendered configurations)
# Needs curl (7.84 or later), psql and python3; installs haproxy and nginx with apt-get when
# missing (as root). Exits non-zero if any check failed. About 50 s on two cores, plus the
# build when there is no binary yet.
set -euo pipefail
export LC_ALL=C
cd "$(dirname "$0")/.."
REPO="$PWD"
# keygate refuses KEYGATE_* variables that are not settings: bench/lib.sh clears them, the nodes
# get exactly the ones set below, and this script's own variables are named without that prefix.
# shellcheck source=bench/lib.sh
source bench/lib.sh # free_port, json_key

PG="${DEPLOY_CHECK_POSTGRES:-postgres://postgres@127.0.0.1:5432}"
PG="${PG%/}"
ONLY="${DEPLOY_CHECK_ONLY:-}"
STARTED_AT=$SECONDS
FAILURES=0

pass() { echo "PASS  $*"; }
fail() {
  echo "FAIL  $*"
  FAILURES=$((FAILURES + 1))
}
die() {
  echo "deploy_check: $*" >&2
  exit 1
}

for tool in curl psql python3; do
  command -v "$tool" >/dev/null || die "$tool is needed"
done
# %header{} in curl's --write-out came with curl 7.84.
[ "$(curl -s -o /dev/null -w '%header{x}' file:///dev/null)" != '%header{x}' ] || die "curl 7.84 or later is needed"
need() {
  command -v "$1" >/dev/null && return
  [ "$(id -u)" = 0 ] || die "$1 is missing; install it (apt-get install $1) or run as root"
  echo "installing $1" >&2
  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$1"; } >/dev/null
}
[ "$ONLY" = nginx ] || need haproxy
[ "$ONLY" = haproxy ] || need nginx

if [ -z "${BIN:-}" ]; then
  BIN="${CARGO_TARGET_DIR:-$REPO/target}/debug/keygate"
  if [ ! -x "$BIN" ]; then
    echo "building $BIN" >&2
    nice -n 10 cargo build -p keygate --quiet
  fi
fi
[ -x "$BIN" ] || die "BIN=$BIN is not an executable"
BIN="$(realpath "$BIN")"

WORK="$(mktemp -d "${TMPDIR:-/tmp}/keygate-deploy-check.XXXXXX")"
DB="keygate_deploy_check_$(date +%s)_$$"
DB_URL="$PG/$DB"
SECRET="$(python3 -c 'import secrets; print(secrets.token_hex(32))')"
declare -A NODE_PID NODE_PORT
LB_PID=""
STREAM_PIDS=()
DB_MADE=""

cleanup() {
  local rc=$? p
  trap - EXIT
  for p in "${STREAM_PIDS[@]}" "$LB_PID" "${NODE_PID[@]}"; do
    if [ -n "$p" ]; then kill "$p" 2>/dev/null || true; fi
  done
  wait 2>/dev/null || true
  if [ -n "$DB_MADE" ]; then
    psql -q "$PG/postgres" -c "DROP DATABASE IF EXISTS \"$DB\" WITH (FORCE)" >/dev/null 2>&1 ||
      echo "deploy_check: could not drop the database $DB" >&2
  fi
  if [ "$rc" != 0 ] && [ -d "$WORK" ]; then
    echo "--- the last lines of each log ($WORK) ---" >&2
    for p in "$WORK"/*.log "$WORK"/*/*.log; do
      [ -s "$p" ] && { echo "== $p" && tail -n 15 "$p"; } >&2
    done
  fi
  if [ -n "${DEPLOY_CHECK_KEEP:-}" ]; then echo "kept $WORK" >&2; else rm -rf "$WORK"; fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Ports: below the kernel's ephemeral range (32768-), from a random start, each one free and
# none picked twice.
PICKED=" "
pick_port() { # VAR
  local p
  p="$(free_port $((20000 + RANDOM % 12000)))"
  while [[ "$PICKED" == *" $p "* ]]; do p="$(free_port $((p + 1)))"; done
  PICKED+="$p "
  printf -v "$1" '%s' "$p"
}
for n in 1 2 3; do pick_port "NODE_PORT[$n]"; done

# --- the database and the nodes -------------------------------------------------------------

psql -q "$PG/postgres" -c "CREATE DATABASE \"$DB\"" >/dev/null || die "cannot create a database on $PG"
DB_MADE=1

kg() { KEYGATE_DATABASE_URL="$DB_URL" KEYGATE_HASH_SECRET="$SECRET" "$BIN" "$@"; }

start_node() { # N
  KEYGATE_DATABASE_URL="$DB_URL" KEYGATE_HASH_SECRET="$SECRET" \
    KEYGATE_LISTEN="127.0.0.1:${NODE_PORT[$1]}" KEYGATE_TRUSTED_PROXIES=127.0.0.1 \
    KEYGATE_LOG_FORMAT=json "$BIN" serve >>"$WORK/node$1.log" 2>&1 &
  NODE_PID[$1]=$!
}
wait_ready() { # N: until its /readyz answers 200 (20 s)
  local i
  for ((i = 0; i < 200; i++)); do
    [ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:${NODE_PORT[$1]}/readyz")" = 200 ] && return 0
    kill -0 "${NODE_PID[$1]}" 2>/dev/null || die "node $1 exited: $(tail -n 5 "$WORK/node$1.log")"
    sleep 0.1
  done
  die "node $1 not ready after 20 s"
}
stop_node() { # N: SIGTERM, then wait until it has exited (30 s)
  local pid="${NODE_PID[$1]}" i
  kill -TERM "$pid"
  for ((i = 0; i < 300; i++)); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  kill -0 "$pid" 2>/dev/null && die "node $1 still running 30 s after SIGTERM"
  wait "$pid" || die "node $1 exited with status $? after SIGTERM"
  NODE_PID[$1]=""
}

# As docs/deployment.md: migrate once, create the operator account once, then start the nodes.
kg migrate >"$WORK/migrate.log" 2>&1 || die "keygate migrate failed: $(cat "$WORK/migrate.log")"
kg --json init 2>"$WORK/init.log" | json_key >"$WORK/operator.key" ||
  die "keygate init failed: $(cat "$WORK/init.log")"
# The traffic's account and keys, made with the CLI (no escalation bound): limits well above
# what this script sends, since without Redis each node counts its own.
ACCOUNT="$(kg --json accounts create --name deploy-check --rate-limit 100000 2>"$WORK/cli.log" |
  python3 -c 'import json,sys; print(json.load(sys.stdin)["account"]["id"])')" ||
  die "keygate accounts create failed: $(cat "$WORK/cli.log")"
new_key() { # NAME [keys create flags...]
  local name="$1"
  shift
  kg --json keys create --account "$ACCOUNT" --name "$name" --rate-limit 10000 "$@" 2>>"$WORK/cli.log" | json_key ||
    die "keygate keys create failed: $(cat "$WORK/cli.log")"
}
KEY="$(new_key traffic --scope api_keys:read --scope tenants:write)"
CLIENT_KEY="$(new_key client-ip-only --scope api_keys:read --allow-ip 127.0.0.2)"
LB_ADDR_KEY="$(new_key lb-ip-only --scope api_keys:read --allow-ip 127.0.0.1)"

for n in 1 2 3; do start_node "$n"; done
for n in 1 2 3; do wait_ready "$n"; done

# A node with another hash secret must refuse to start, saying why.
pick_port WRONG_PORT
rc=0
KEYGATE_DATABASE_URL="$DB_URL" KEYGATE_HASH_SECRET="$(python3 -c 'import secrets; print(secrets.token_hex(32))')" \
  KEYGATE_LISTEN="127.0.0.1:$WRONG_PORT" timeout 30 "$BIN" serve >"$WORK/wrong-secret.log" 2>&1 || rc=$?
if [ "$rc" = 0 ] || [ "$rc" = 124 ]; then
  fail "a node with another hash_secret started (exit status $rc)"
elif grep -q 'hash secret does not match' "$WORK/wrong-secret.log"; then
  pass "a node with another hash_secret refuses to start ($(grep -o 'hash secret does not match[^(]*' "$WORK/wrong-secret.log" | head -n 1 | sed 's/ *$//'))"
else
  fail "a node with another hash_secret failed to start, but not for its secret: $(tail -n 2 "$WORK/wrong-secret.log")"
fi

# --- requests and who served them -----------------------------------------------------------

# One request: prints "<status> <X-Request-Id>" (status 000 and id "-" when none came back).
request() { # URL [curl args...]
  local url="$1" out
  shift
  out="$(curl -s -m 15 -o /dev/null -w '%{http_code} %header{x-request-id}' "$@" "$url" || true)"
  out="${out:-000}"
  [[ "$out" == *" "?* ]] || out="${out%% *} -"
  echo "$out"
}
get_keys() { request "$LB/v1/api-keys?limit=1" -H "Authorization: Bearer $KEY"; }

# Which node served each request id: the nodes log one JSON line per request (buffered up to a
# second), with its request_id and client_ip.
id_map() {
  local n
  echo "- 0"
  for n in 1 2 3; do
    grep -o '"request_id":"req_[0-9A-Za-z]*"' "$WORK/node$n.log" | sed "s/.*\"\\(req_[^\"]*\\)\"/\\1 $n/" || true
  done
}
# FILE of lines whose last two fields are "<status> <id>": prints how many each node served
# and how many were found in no log, as "n1 n2 n3 unknown"; waits up to 5 s for the logs.
served_by() { # FILE
  local i counts
  for ((i = 0; i < 25; i++)); do
    counts="$(awk 'NR == FNR { node[$1] = $2; next }
      { id = $NF; if (id in node && node[id] > 0) c[node[id]]++; else miss++ }
      END { printf "%d %d %d %d\n", c[1], c[2], c[3], miss }' <(id_map) "$1")"
    [ "${counts##* }" = 0 ] && break
    sleep 0.2
  done
  echo "$counts"
}
# TCP connections to the nodes' ports, from /proc/net/tcp (no ss needed): "<open> <closed>",
# open = established with a node's port as the remote end (the load balancer's side), closed =
# in TIME_WAIT with a node's port at either end (whichever side closed first keeps it).
node_tcp() {
  python3 - "${NODE_PORT[1]}" "${NODE_PORT[2]}" "${NODE_PORT[3]}" <<'PY'
import sys
ports = {int(p) for p in sys.argv[1:]}
open_, closed = 0, 0
for path in ("/proc/net/tcp", "/proc/net/tcp6"):
    try:
        lines = open(path).read().splitlines()[1:]
    except OSError:
        continue
    for line in lines:
        f = line.split()
        local, remote, state = int(f[1].rsplit(":", 1)[1], 16), int(f[2].rsplit(":", 1)[1], 16), f[3]
        if state == "01" and remote in ports:
            open_ += 1
        elif state == "06" and (local in ports or remote in ports):
            closed += 1
print(open_, closed)
PY
}
statuses() { awk '{ print $(NF - 1) }' "$1" | sort | uniq -c | awk '{ printf "%s%s×%s", sep, $2, $1; sep = ", " }'; }
non_200() { awk '$(NF - 1) != 200' "$1" | wc -l; }

# Up to 30 s: batches of 6 requests until node N serves one of them.
wait_serving() { # N
  local i counts
  for ((i = 0; i < 30; i++)); do
    : >"$WORK/probe.txt"
    for _ in 1 2 3 4 5 6; do get_keys >>"$WORK/probe.txt"; done
    read -r -a counts < <(served_by "$WORK/probe.txt")
    [ "${counts[$(($1 - 1))]}" -gt 0 ] && return 0
    sleep 1
  done
  return 1
}
# 30 GETs through the load balancer, one after another on one client connection (curl keeps
# it open across the URLs of one run); one "<status> <id>" line each.
burst() { # FILE
  local args=() i
  for ((i = 0; i < 30; i++)); do args+=(-o /dev/null "$LB/v1/api-keys?limit=1"); done
  curl -s -m 30 -w '%{http_code} %header{x-request-id}\n' -H "Authorization: Bearer $KEY" "${args[@]}" |
    awk 'NF == 1 { $2 = "-" } { print }' >"$1" || true
}
spread() { # LABEL FILE: 30 requests; PASS when all 200 and every node served some
  local label="$1" file="$2" counts
  burst "$file"
  read -r -a counts < <(served_by "$file")
  if [ "$(wc -l <"$file")" = 30 ] && [ "$(non_200 "$file")" = 0 ] && [ "${counts[0]}" -gt 0 ] && [ "${counts[1]}" -gt 0 ] &&
    [ "${counts[2]}" -gt 0 ] && [ "${counts[3]}" = 0 ]; then
    pass "$label: 30 requests, all 200, served by node 1/2/3: ${counts[0]}/${counts[1]}/${counts[2]}"
  else
    fail "$label: 30 requests ($(statuses "$file")), served by node 1/2/3: ${counts[0]}/${counts[1]}/${counts[2]}, in no node's log: ${counts[3]}"
  fi
}

# Background clients: GET /v1/api-keys (and every third request POST /v1/tenants with a unique
# name, with `post`) through the load balancer, one after another, until STOPFILE exists. Each
# line: "<start time> <method> <status> <request id>".
stream() { # OUT STOPFILE [post]
  local i=0 t
  while [ ! -e "$2" ]; do
    i=$((i + 1))
    t="$EPOCHREALTIME"
    if [ "${3:-}" = post ] && ((i % 3 == 0)); then
      echo "$t POST $(request "$LB/v1/tenants" -X POST -H "Authorization: Bearer $KEY" \
        -H 'Content-Type: application/json' -d "{\"name\":\"$TAG-$BASHPID-$i\"}")"
    else
      echo "$t GET $(get_keys)"
    fi >>"$1"
    sleep 0.02
  done
}
start_streams() { # NAME [post]
  rm -f "$WORK/stop.$1"
  : >"$WORK/stream.$1.txt"
  STREAM_PIDS=()
  for _ in 1 2; do
    stream "$WORK/stream.$1.txt" "$WORK/stop.$1" "${2:-}" &
    STREAM_PIDS+=($!)
  done
}
stop_streams() { # NAME
  touch "$WORK/stop.$1"
  wait "${STREAM_PIDS[@]}" || true
  STREAM_PIDS=()
}
# Of the requests in FILE started between two times (EPOCHREALTIME): how many node N served,
# and how many there were ("<served> <all>").
served_between() { # FILE N FROM TO
  awk -v from="$3" -v to="$4" '$1 >= from && $1 < to' "$1" >"$WORK/between.txt"
  local counts
  read -r -a counts < <(served_by "$WORK/between.txt")
  echo "${counts[$(($2 - 1))]} $(wc -l <"$WORK/between.txt")"
}
# Until FILE holds at least N requests started after SINCE (an EPOCHREALTIME), at most 15 s:
# on a busy machine the streams are slower, and the windows the checks look at must hold enough.
wait_requests() { # FILE SINCE N
  local i
  for ((i = 0; i < 150; i++)); do
    [ "$(awk -v t="$2" '$1 >= t' "$1" | wc -l)" -ge "$3" ] && return 0
    sleep 0.1
  done
}
since() { awk -v a="$1" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }'; }

# --- the load balancers ---------------------------------------------------------------------

# The shipped file with the example addresses replaced by the nodes', and the lines a test run
# must not use (system paths, port 80) by its own. Fails when a replaced line is not found as
# written, or anything else differs.
render() { # haproxy|nginx OUT
  local src="$REPO/deploy/$1.conf" want n
  [ "$1" = haproxy ] && src="$REPO/deploy/haproxy.cfg"
  local expr=(
    -e "s/\\b10\\.0\\.0\\.11:8080\\b/127.0.0.1:${NODE_PORT[1]}/"
    -e "s/\\b10\\.0\\.0\\.12:8080\\b/127.0.0.1:${NODE_PORT[2]}/"
    -e "s/\\b10\\.0\\.0\\.13:8080\\b/127.0.0.1:${NODE_PORT[3]}/"
  )
  if [ "$1" = haproxy ]; then
    expr+=(
      -e "s|^\\( *\\)bind :80\$|\\1bind 127.0.0.1:$LB_PORT|"
      -e "s|^\\( *\\)stats socket /run/haproxy/admin.sock |\\1stats socket $LB_DIR/admin.sock |"
      -e "s|^\\( *\\)log /dev/log local0\$|\\1log stdout format raw local0|"
    )
    want=6
  else
    expr+=(
      -e "s|^\\( *\\)listen 80;\$|\\1listen 127.0.0.1:$LB_PORT;|"
      -e "s|^pid /run/nginx.pid;\$|pid $LB_DIR/nginx.pid;|"
      -e "s|^error_log /var/log/nginx/error.log |error_log $LB_DIR/error.log |"
      -e "s|^\\( *\\)access_log /var/log/nginx/keygate.access.log |\\1access_log $LB_DIR/access.log |"
    )
    want=7
  fi
  sed "${expr[@]}" "$src" >"$2"
  n="$(diff "$src" "$2" | grep -c '^>' || true)"
  [ "$n" = "$want" ] || die "rendering deploy/$(basename "$src"): $n lines replaced, expected $want; have the lines scripts/deploy_check.sh replaces changed? $(diff "$src" "$2" || true)"
}

hap() { # COMMAND: HAProxy's runtime API
  python3 - "$LB_DIR/admin.sock" "$1" <<'PY'
import socket, sys
s = socket.socket(socket.AF_UNIX)
s.connect(sys.argv[1])
s.sendall(sys.argv[2].encode() + b"\n")
out = b""
while True:
    d = s.recv(65536)
    if not d:
        break
    out += d
sys.stdout.write(out.decode())
PY
}
hap_state() { hap "show stat" | awk -F, -v s="node$1" '$1 == "keygate" && $2 == s { print $18 }'; }
wait_hap_state() { # N STATE (prefix): up to 20 s
  local i
  for ((i = 0; i < 200; i++)); do
    [[ "$(hap_state "$1")" == "$2"* ]] && return 0
    sleep 0.1
  done
  return 1
}

start_lb() { # haproxy|nginx
  LB_DIR="$WORK/$1"
  mkdir -p "$LB_DIR"
  pick_port LB_PORT
  LB="http://127.0.0.1:$LB_PORT"
  if [ "$1" = haproxy ]; then
    LB_CONF="$LB_DIR/haproxy.cfg"
    render haproxy "$LB_CONF"
    haproxy -c -q -f "$LB_CONF" || die "the rendered haproxy.cfg is not valid"
    haproxy -db -f "$LB_CONF" >"$LB_DIR/haproxy.log" 2>&1 &
  else
    LB_CONF="$LB_DIR/nginx.conf"
    render nginx "$LB_CONF"
    nginx -q -t -c "$LB_CONF" -p "$LB_DIR" || die "the rendered nginx.conf is not valid"
    nginx -c "$LB_CONF" -p "$LB_DIR" -g 'daemon off;' >"$LB_DIR/nginx.log" 2>&1 &
  fi
  LB_PID=$!
  local i
  for ((i = 0; ; i++)); do
    [ "$(curl -s -o /dev/null -w '%{http_code}' "$LB/healthz")" = 200 ] && break
    kill -0 "$LB_PID" 2>/dev/null || die "$1 exited: $(tail -n 5 "$LB_DIR"/*.log)"
    ((i < 100)) || die "$1 does not answer GET /healthz on port $LB_PORT after 10 s"
    sleep 0.1
  done
  if [ "$1" = haproxy ]; then
    for n in 1 2 3; do wait_hap_state "$n" UP || die "HAProxy does not see node $n UP: $(hap_state "$n")"; done
  fi
}
stop_lb() {
  kill "$LB_PID" 2>/dev/null || true
  wait "$LB_PID" 2>/dev/null || true
  LB_PID=""
}
# Drain node N in the load balancer (no new requests), or put it back.
lb_drain() { # haproxy|nginx N
  if [ "$1" = haproxy ]; then
    hap "set server keygate/node$2 state drain" >/dev/null
  else
    sed -i "s/\\(127\\.0\\.0\\.1:${NODE_PORT[$2]} [^;]*\\);/\\1 down;/" "$LB_CONF"
    kill -HUP "$LB_PID"
  fi
}
lb_enable() { # haproxy|nginx N
  if [ "$1" = haproxy ]; then
    hap "set server keygate/node$2 state ready" >/dev/null
  else
    sed -i "s/\\(127\\.0\\.0\\.1:${NODE_PORT[$2]} [^;]*\\) down;/\\1;/" "$LB_CONF"
    kill -HUP "$LB_PID"
  fi
}
# Until the load balancer has noticed that node N is gone (up to 20 s).
wait_noticed() { # haproxy|nginx N
  local i
  if [ "$1" = haproxy ]; then
    wait_hap_state "$2" DOWN
  else
    for ((i = 0; i < 200; i++)); do
      grep -q "connect() failed .*upstream: \"http://127.0.0.1:${NODE_PORT[$2]}/" "$LB_DIR/error.log" && return 0
      sleep 0.1
    done
    return 1
  fi
}

check_lb() { # haproxy|nginx
  local lb="$1" t0 t1 t2 failed n total after during posts made
  TAG="dc-$lb-$$"

  # shipped: the file as it stands, for the example addresses.
  if [ "$lb" = haproxy ]; then
    if out="$(haproxy -c -f "$REPO/deploy/haproxy.cfg" 2>&1)"; then
      pass "$lb shipped: deploy/haproxy.cfg is valid as it stands (haproxy -c)"
    else
      fail "$lb shipped: haproxy -c deploy/haproxy.cfg: $out"
    fi
  else
    # nginx -t opens the pid and log files: test a copy whose paths are the temporary
    # directory's, the addresses and port left as shipped.
    mkdir -p "$WORK/nginx-shipped"
    sed -e "s|^pid /run/nginx.pid;|pid $WORK/nginx-shipped/nginx.pid;|" \
      -e "s|/var/log/nginx/|$WORK/nginx-shipped/|" "$REPO/deploy/nginx.conf" >"$WORK/nginx-shipped/nginx.conf"
    if out="$(nginx -t -c "$WORK/nginx-shipped/nginx.conf" -p "$WORK/nginx-shipped" 2>&1)"; then
      pass "$lb shipped: deploy/nginx.conf is valid as it stands (nginx -t; pid and log paths moved)"
    else
      fail "$lb shipped: nginx -t deploy/nginx.conf: $out"
    fi
  fi

  start_lb "$lb"

  # (a) Round robin over the three nodes, on connections kept open to them.
  local before after_a
  read -r -a before < <(node_tcp)
  spread "$lb (a) spread" "$WORK/$lb.a.txt"
  read -r -a after_a < <(node_tcp)
  if [ "${after_a[0]}" -gt 0 ] && [ $((after_a[1] - before[1])) -le 10 ]; then
    pass "$lb (a) keep-alive: after those 30 requests, ${after_a[0]} connections to the nodes stay open, $((after_a[1] - before[1])) were closed (health checks included)"
  else
    fail "$lb (a) keep-alive: after those 30 requests, ${after_a[0]} connections to the nodes are open and $((after_a[1] - before[1])) were closed: not kept alive"
  fi

  # (b) The client's address, not the load balancer's.
  local refused wrong forged ip_seen
  : >"$WORK/$lb.b.txt"
  for _ in 1 2 3; do
    request "$LB/v1/api-keys?limit=1" --interface 127.0.0.2 -H "Authorization: Bearer $CLIENT_KEY" >>"$WORK/$lb.b.txt"
  done
  refused="$(non_200 "$WORK/$lb.b.txt")"
  served_by "$WORK/$lb.b.txt" >/dev/null # waits for the log lines
  ip_seen="$(awk '{ print $2 }' "$WORK/$lb.b.txt" | while read -r id; do
    grep -h "\"request_id\":\"$id\"" "$WORK"/node?.log | grep -o '"client_ip":"[^"]*"' | head -n 1
  done | sort | uniq -c | awk '{ printf "%s%s×%s", sep, $2, $1; sep = ", " }')"
  wrong="$(request "$LB/v1/api-keys?limit=1" --interface 127.0.0.2 -H "Authorization: Bearer $LB_ADDR_KEY")"
  forged="$(request "$LB/v1/api-keys?limit=1" --interface 127.0.0.3 -H 'X-Forwarded-For: 127.0.0.2' \
    -H "Authorization: Bearer $CLIENT_KEY")"
  if [ "$refused" = 0 ] && [ "$ip_seen" = '"client_ip":"127.0.0.2"×3' ] && [ "${wrong%% *}" = 403 ] &&
    [ "${forged%% *}" = 403 ]; then
    pass "$lb (b) client IP: from 127.0.0.2, a key allowed 127.0.0.2 works (3×200, node logs: client_ip 127.0.0.2), a key allowed only the LB's 127.0.0.1 is refused (403), 127.0.0.3 forging X-Forwarded-For: 127.0.0.2 is refused (403)"
  else
    fail "$lb (b) client IP: key allowed 127.0.0.2 from 127.0.0.2: $(statuses "$WORK/$lb.b.txt") (node logs: ${ip_seen:-none}); key allowed 127.0.0.1 from 127.0.0.2: ${wrong%% *} (want 403); forged X-Forwarded-For from 127.0.0.3: ${forged%% *} (want 403)"
  fi

  # (c) Node 2 stopped without warning under a stream of GETs.
  start_streams "$lb.c"
  sleep 1.5
  t0="$EPOCHREALTIME"
  stop_node 2
  if wait_noticed "$lb" 2; then
    t1="$EPOCHREALTIME"
    sleep 1
    wait_requests "$WORK/stream.$lb.c.txt" "$(awk -v t="$t0" 'BEGIN { printf "%.6f", t + 0.5 }')" 40
    stop_streams "$lb.c"
    total="$(wc -l <"$WORK/stream.$lb.c.txt")"
    failed="$(non_200 "$WORK/stream.$lb.c.txt")"
    # Requests that reached node 2 within moments of the signal are still answered by it.
    read -r n after < <(served_between "$WORK/stream.$lb.c.txt" 2 "$(awk -v t="$t0" 'BEGIN { printf "%.6f", t + 0.5 }')" 99999999999)
    if [ "$failed" = 0 ] && [ "$n" = 0 ] && [ "$after" -gt 20 ]; then
      pass "$lb (c) node 2 stopped (SIGTERM) under $total GETs: none failed, none of the $after sent after it stopped served by it; noticed after $(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f", b - a }') s"
    else
      fail "$lb (c) node 2 stopped (SIGTERM) under $total GETs: $(statuses "$WORK/stream.$lb.c.txt"); $failed failed, $(awk -v t="$t1" '$1 >= t && $(NF - 1) != 200' "$WORK/stream.$lb.c.txt" | wc -l) of them after the LB noticed; $n of the $after sent after it stopped served by it"
    fi
  else
    stop_streams "$lb.c"
    fail "$lb (c) the load balancer did not notice within 20 s that node 2 had stopped"
  fi

  # (d) Node 2 back.
  start_node 2
  wait_ready 2
  t2="$EPOCHREALTIME"
  if wait_serving 2; then
    pass "$lb (d) node 2 restarted: serving through the load balancer $(since "$t2") s after /readyz"
    spread "$lb (d) spread after node 2's return" "$WORK/$lb.d.txt"
  else
    fail "$lb (d) node 2 restarted, but served nothing through the load balancer within 30 s"
  fi

  # (e) A rolling upgrade of node 3, as docs/deployment.md: drain, SIGTERM, start, /readyz,
  # re-enable; GETs and POSTs all the while.
  start_streams "$lb.e" post
  sleep 1.5
  lb_drain "$lb" 3
  sleep 1 # HAProxy: at once; nginx: the reload's new workers, the old ones finishing
  t0="$EPOCHREALTIME"
  sleep 1 # drained but running: it must get nothing
  wait_requests "$WORK/stream.$lb.e.txt" "$t0" 40
  stop_node 3
  start_node 3
  wait_ready 3
  t1="$EPOCHREALTIME"
  lb_enable "$lb" 3
  if [ "$lb" = haproxy ]; then wait_hap_state 3 UP || true; fi
  sleep 1
  stop_streams "$lb.e"
  total="$(wc -l <"$WORK/stream.$lb.e.txt")"
  failed="$(non_200_nor_201 "$WORK/stream.$lb.e.txt")"
  # A request started just before the re-enable may reach node 3 after it.
  read -r n during < <(served_between "$WORK/stream.$lb.e.txt" 3 "$t0" "$(awk -v t="$t1" 'BEGIN { printf "%.6f", t - 0.5 }')")
  posts="$(awk '$2 == "POST" && $3 == 201' "$WORK/stream.$lb.e.txt" | wc -l)"
  made="$(psql -qtA "$DB_URL" -c "SELECT count(*) FROM tenants WHERE name LIKE '$TAG-%'")"
  if [ "$failed" = 0 ] && [ "$n" = 0 ] && [ "$during" -gt 20 ] && [ "$posts" -gt 5 ] && [ "$posts" = "$made" ]; then
    pass "$lb (e) rolling restart of node 3 under $total requests ($posts POSTs): none failed, none of the $during sent while it was drained served by it, $made tenants for $posts POSTs answered 201"
  else
    fail "$lb (e) rolling restart of node 3 under $total requests: $(statuses "$WORK/stream.$lb.e.txt"); $failed failed; $n of the $during sent while it was drained served by it; $made tenants made for $posts POSTs answered 201"
  fi
  if wait_serving 3; then
    spread "$lb (e) spread after node 3's return" "$WORK/$lb.e2.txt"
  else
    fail "$lb (e) node 3 re-enabled, but served nothing through the load balancer within 30 s"
  fi

  stop_lb
}
non_200_nor_201() { awk '$(NF - 1) != 200 && $(NF - 1) != 201' "$1" | wc -l; }

for lb in haproxy nginx; do
  [ -z "$ONLY" ] || [ "$ONLY" = "$lb" ] || continue
  check_lb "$lb"
done

if [ "$FAILURES" = 0 ]; then
  echo "deploy_check: all checks passed in $((SECONDS - STARTED_AT)) s"
else
  echo "deploy_check: $FAILURES check(s) failed in $((SECONDS - STARTED_AT)) s"
  exit 1
fi
