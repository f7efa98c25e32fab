# Shared by the HTTP load scripts (sourced, not run).
#
# start_keygate PORT: `keygate init` in the current directory (sets OPERATOR to the operator
# key), then `keygate serve` on 127.0.0.1:PORT in the background (sets KG_PID; its stderr goes to
# keygate.log), and waits until /healthz answers. Uses $BIN and the KEYGATE_* environment.
# create_key PORT JSON: creates a key with the operator key; prints its plaintext.
# measure LABEL URL [wrk args...]: one wrk run (2 threads, $CONNECTIONS connections,
# $DURATION seconds); appends "LABEL req/s p99-in-ms" to $RESULTS. Fails on any non-2xx answer.
# summarize: the median throughput and median p99 of each label over its runs, as a table.
# The scripts measure in ROUNDS, each running every target once, and compare medians: on a
# 2-core machine shared with wrk, one run can land 30% off another of the same target.

measure() {
  local label="$1" url="$2" out rps p99 non2xx
  shift 2
  out="$(wrk -t2 -c"$CONNECTIONS" -d"${DURATION}s" --latency "$@" "$url")"
  rps="$(awk '/Requests\/sec/ {print $2}' <<<"$out")"
  p99="$(awk '$1=="99%" {print $2}' <<<"$out")"
  non2xx="$(awk '/Non-2xx/ {print $NF}' <<<"$out")"
  [ -z "$non2xx" ] || { echo "unexpected non-2xx responses from $url: $non2xx" >&2; exit 1; }
  p99="$(python3 -c "
v='$p99'
print(float(v[:-2]) if v.endswith('ms') else float(v[:-2])/1000 if v.endswith('us') else float(v[:-1])*1000)")"
  echo "$label $rps $p99" >>"$RESULTS"
}

# summarize: prints "label median_rps median_p99_ms runs" per label, in first-seen order.
summarize() {
  python3 - "$RESULTS" <<'PY'
import statistics, sys
runs = {}
for line in open(sys.argv[1]):
    label, rps, p99 = line.split()
    runs.setdefault(label, []).append((float(rps), float(p99)))
for label, rs in runs.items():
    print(label, statistics.median(r for r, _ in rs), statistics.median(p for _, p in rs),
          " ".join(f"{r:.0f}" for r, _ in rs))
PY
}

json_key() { python3 -c 'import json,sys; print(json.load(sys.stdin)["key"])'; }

start_keygate() {
  local port="$1"
  OPERATOR="$("$BIN" --json init 2>/dev/null | json_key)"
  "$BIN" serve --listen "127.0.0.1:$port" >/dev/null 2>keygate.log &
  KG_PID=$!
  for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:$port/healthz" >/dev/null && return; sleep 0.1; done
  echo "keygate did not start:" >&2; cat keygate.log >&2; exit 1
}

create_key() {
  curl -sf -X POST "http://127.0.0.1:$1/v1/api-keys" -H "Authorization: Bearer $OPERATOR" -H "Content-Type: application/json" -d "$2" | json_key
}
