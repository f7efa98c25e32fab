#!/usr/bin/env bash
# Checks the layout ARCHITECTURE.md describes, and fails on the first breach:
#   1. each of keygate's crates depends (normal dependencies) only on the crates below it;
#   2. keygate-engine has no HTTP framework in its dependency tree (axum, hyper, tower);
#   3. no library crate has a module cycle (cargo-modules' graph, checked by
#      scripts/module_cycles.py; cargo-modules 0.27 is installed if missing).
# Usage: scripts/architecture.sh
set -euo pipefail
cd "$(dirname "$0")/.."

echo "--- crate layers"
python3 - <<'PY'
import json, subprocess, sys
# Each crate and the crates of ours it may depend on (ARCHITECTURE.md's table).
allowed = {
    "keygate-domain": set(),
    "keygate-store": {"keygate-domain"},
    "keygate-engine": {"keygate-domain", "keygate-store"},
    "keygate-http": {"keygate-domain", "keygate-store", "keygate-engine"},
    "keygate-api": {"keygate-domain", "keygate-store", "keygate-engine", "keygate-http"},
    "keygate-gateway": {"keygate-domain", "keygate-engine", "keygate-http"},
    "keygate-dashboard": {"keygate-domain", "keygate-store", "keygate-engine", "keygate-http"},
    "keygate-cluster": {"keygate-domain", "keygate-store", "keygate-engine"},
    "keygate": {"keygate-domain", "keygate-store", "keygate-engine", "keygate-http", "keygate-api", "keygate-gateway", "keygate-dashboard", "keygate-cluster"},
}
meta = json.loads(subprocess.check_output(["cargo", "metadata", "--format-version", "1", "--no-deps"]))
failed = False
for pkg in meta["packages"]:
    name = pkg["name"]
    if name not in allowed:
        if name.startswith("keygate"):
            print(f"{name}: not in the table of layers; add it to ARCHITECTURE.md and this script", file=sys.stderr)
            failed = True
        continue
    ours = {d["name"] for d in pkg["dependencies"] if d["name"].startswith("keygate") and d.get("kind") is None}
    extra = ours - allowed[name]
    if extra:
        print(f"{name} depends on {', '.join(sorted(extra))}, which its layer may not", file=sys.stderr)
        failed = True
    else:
        print(f"{name}: {', '.join(sorted(ours)) or 'nothing of ours'}")
sys.exit(1 if failed else 0)
PY

echo "--- keygate-engine without an HTTP framework"
frameworks="$(cargo tree -p keygate-engine -e normal --prefix none --format '{p}' | awk '{print $1}' | grep -xE 'axum|axum-core|hyper|hyper-util|tower|tower-http|tower-layer|tower-service' | sort -u || true)"
if [ -n "$frameworks" ]; then
    echo "keygate-engine's dependency tree holds: $frameworks" >&2
    exit 1
fi
echo "cargo tree -p keygate-engine -e normal: no axum, hyper or tower"

echo "--- module cycles"
if ! cargo modules --version 2>/dev/null | grep -q '0\.27'; then
    cargo install cargo-modules --version 0.27.0 --locked
fi
status=0
for crate in $(cargo metadata --format-version 1 --no-deps | python3 -c '
import json, sys
for p in json.load(sys.stdin)["packages"]:
    if any("lib" in t["kind"] for t in p["targets"]):
        print(p["name"])'); do
    graph="$(cargo modules dependencies -p "$crate" --lib --no-externs --no-sysroot)"
    python3 scripts/module_cycles.py "$crate" <<<"$graph" || status=1
done
exit "$status"
