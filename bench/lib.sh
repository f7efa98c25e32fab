# Helpers of bench/data_plane.sh and bench/cluster.sh (sourced, not run). They expect
# set -euo pipefail, and $WORK, $RESULTS, $DURATION, $CONNECTIONS set by the caller.
#
# wrk_run LABEL "PIDS" URL [wrk args...]: one wrk run (2 threads, $CONNECTIONS connections,
#   $DURATION seconds) while reading the CPU time of PIDS (every process of the server under
#   test) before and after, and how often their threads were preempted; appends
#   "LABEL req/s p99_ms cpu_us_per_request requests preemptions_per_request" to $RESULTS. Fails
#   on any non-2xx answer.
# syscalls_run LABEL "PIDS" URL [wrk args...]: a short wrk run (1 thread, 8 connections, 3 s)
#   with `strace -c -f` attached to PIDS; writes strace's summary to $WORK/strace.LABEL and
#   "calls requests" to $WORK/strace.LABEL.count.
# cpu_ticks PID...: utime+stime (fields 14 and 15 of /proc/<pid>/stat, clock ticks, all
#   threads of each process) summed over PIDS.
# preemptions PID...: involuntary context switches (`nonvoluntary_ctxt_switches` of
#   /proc/<pid>/task/*/status: a runnable thread descheduled for another) summed over every
#   thread of PIDS. On two cores shared with wrk and the upstream, a server thread preempted
#   while connections wait on it adds to their latency; the count alone does not rank p99s
#   (docs/benchmarks.md, session 15).
# free_port BASE: BASE, or the first port above it that nothing on 127.0.0.1 listens on.
# start_keygate NAME BIN PORT CONFIG: `init` then `serve` of BIN in $WORK/NAME with the config
#   file CONFIG; waits for /healthz; sets KG_PID[NAME] and KG_OPERATOR[NAME] (operator key).
# create_key PORT OPERATOR JSON: creates a key; prints its plaintext.

# keygate reads KEYGATE_* from the environment, over the config file, and refuses unknown ones:
# every keygate a benchmark starts gets exactly its config file (and what the script sets itself).
while read -r v; do unset "$v"; done < <(compgen -e | grep '^KEYGATE_' || true)

CLK_TCK="$(getconf CLK_TCK)"
declare -gA KG_PID KG_OPERATOR

cpu_ticks() {
  local total=0 p s f
  for p in "$@"; do
    s="$(<"/proc/$p/stat")"
    s="${s##*) }"          # drop "pid (comm) ": comm may hold spaces; field 3 is now index 0
    read -r -a f <<<"$s"
    total=$((total + f[11] + f[12]))
  done
  echo "$total"
}

preemptions() {
  local p
  for p in "$@"; do cat /proc/"$p"/task/*/status 2>/dev/null || true; done |
    awk '$1 == "nonvoluntary_ctxt_switches:" { n += $2 } END { print n + 0 }'
}

# wrk's latency ("850.00us", "3.40ms", "1.20s") in milliseconds.
wrk_p99_ms() {
  awk '$1=="99%" { v=$2
    if (v ~ /ms$/) { sub(/ms$/, "", v); print v+0 }
    else if (v ~ /us$/) { sub(/us$/, "", v); print v/1000 }
    else if (v ~ /s$/) { sub(/s$/, "", v); print v*1000 }
    else if (v ~ /m$/) { sub(/m$/, "", v); print v*60000 } }'
}

wrk_check() {
  local label="$1" url="$2" out="$3" non2xx errors
  non2xx="$(awk '/Non-2xx/ {print $NF}' <<<"$out")"
  [ -z "$non2xx" ] || { echo "$label: $non2xx non-2xx answers from $url" >&2; echo "$out" >&2; exit 1; }
  errors="$(awk '/Socket errors/' <<<"$out")"
  [ -z "$errors" ] || echo "  note: $label: $errors" >&2
}

wrk_run() {
  local label="$1" pids="$2" url="$3" out before after pre0 pre1 requests rps p99 cpu pre
  shift 3
  # shellcheck disable=SC2086
  before="$(cpu_ticks $pids)"
  # shellcheck disable=SC2086
  pre0="$(preemptions $pids)"
  out="$(wrk -t2 -c"$CONNECTIONS" -d"${DURATION}s" --latency "$@" "$url")"
  # shellcheck disable=SC2086
  pre1="$(preemptions $pids)"
  # shellcheck disable=SC2086
  after="$(cpu_ticks $pids)"
  wrk_check "$label" "$url" "$out"
  requests="$(awk '/ requests in / {print $1}' <<<"$out")"
  rps="$(awk '/Requests\/sec/ {print $2}' <<<"$out")"
  p99="$(wrk_p99_ms <<<"$out")"
  [ "${requests:-0}" -gt 0 ] || { echo "$label: no requests completed against $url" >&2; echo "$out" >&2; exit 1; }
  cpu="$(awk -v t="$((after - before))" -v hz="$CLK_TCK" -v n="$requests" 'BEGIN { printf "%.2f", t * 1e6 / hz / n }')"
  pre="$(awk -v p="$((pre1 - pre0))" -v n="$requests" 'BEGIN { printf "%.3f", p / n }')"
  echo "$label $rps $p99 $cpu $requests $pre" >>"$RESULTS"
  printf '  %-14s %9.0f req/s  p99 %6.2f ms  %6.1f us CPU/request  %5.3f preemptions/request\n' \
    "$label" "$rps" "$p99" "$cpu" "$pre" >&2
}

syscalls_run() {
  local label="$1" pids="$2" url="$3" out st p args=() requests calls
  shift 3
  for p in $pids; do args+=(-p "$p"); done
  strace -c -f -o "$WORK/strace.$label" "${args[@]}" 2>"$WORK/strace.$label.err" &
  st=$!
  # strace says "Process N attached" per thread once it holds it; wait for the first, then a
  # moment for the rest (threads are attached one by one).
  for _ in $(seq 1 50); do grep -q attached "$WORK/strace.$label.err" 2>/dev/null && break; sleep 0.1; done
  sleep 0.5
  out="$(wrk -t1 -c8 -d3s "$@" "$url")"
  kill -INT "$st"
  wait "$st" || true
  wrk_check "$label (strace)" "$url" "$out"
  requests="$(awk '/ requests in / {print $1}' <<<"$out")"
  # The summary's last line: "100.00  seconds  usecs/call  CALLS  [ERRORS]  total".
  calls="$(awk '$NF=="total" {print $4}' "$WORK/strace.$label")"
  [ -n "$calls" ] && [ "${requests:-0}" -gt 0 ] || {
    echo "$label: no strace summary or no requests" >&2; cat "$WORK/strace.$label" "$WORK/strace.$label.err" >&2; exit 1; }
  echo "$calls $requests" >"$WORK/strace.$label.count"
  printf '  %-14s %6.2f system calls/request (%s calls, %s requests)\n' "$label" \
    "$(awk -v c="$calls" -v n="$requests" 'BEGIN { print c / n }')" "$calls" "$requests" >&2
}

free_port() {
  local p="$1"
  while (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; do p=$((p + 1)); done
  echo "$p"
}

json_key() { python3 -c 'import json,sys; print(json.load(sys.stdin)["key"])'; }

start_keygate() {
  local name="$1" bin="$2" port="$3" config="$4" dir="$WORK/$1"
  mkdir -p "$dir"
  KG_OPERATOR[$name]="$(KEYGATE_CONFIG="$config" "$bin" --json init 2>"$dir/init.log" | json_key)" ||
    { echo "$name: keygate init failed:" >&2; cat "$dir/init.log" >&2; exit 1; }
  KEYGATE_CONFIG="$config" "$bin" serve --listen "127.0.0.1:$port" >/dev/null 2>"$dir/keygate.log" &
  KG_PID[$name]=$!
  for _ in $(seq 1 150); do
    curl -sf "http://127.0.0.1:$port/healthz" >/dev/null && return
    kill -0 "${KG_PID[$name]}" 2>/dev/null || break
    sleep 0.1
  done
  echo "$name: keygate did not start:" >&2; cat "$dir/keygate.log" >&2; exit 1
}

create_key() {
  curl -sf -X POST "http://127.0.0.1:$1/v1/api-keys" -H "Authorization: Bearer $2" \
    -H "Content-Type: application/json" -d "$3" | json_key
}

# Installs Debian package $2 when command $1 is missing.
need() { command -v "$1" >/dev/null || { apt-get update -qq && apt-get install -y -qq "$2"; }; }

# The HTTP status of a curl request (000 when nothing answered).
status() { curl -s -o /dev/null -w '%{http_code}' "$@"; }

expect() {  # WHAT WANTED GOT: stops the run when a check fails
  [ "$2" = "$3" ] || { echo "check failed: $1: expected $2, got $3" >&2; exit 1; }
}

# The upstream every proxy forwards to: its own nginx on 127.0.0.1:$1 in $WORK, answering a small
# JSON body over keep-alive (never the bottleneck; its CPU is counted for no one). Its PID joins
# STARTED.
start_upstream() {
  cat >"$WORK/upstream.conf" <<NGINX
daemon off;
worker_processes auto;
pid $WORK/upstream.pid;
error_log $WORK/upstream-error.log;
events { worker_connections 4096; }
http {
  access_log off;
  server {
    listen 127.0.0.1:$1;
    keepalive_requests 1000000;
    location / { default_type application/json; return 200 '{"calls":[],"ok":true}'; }
  }
}
NGINX
  nginx -e "$WORK/upstream-error.log" -c "$WORK/upstream.conf" -p "$WORK" &
  STARTED+=($!)
}
