#!/usr/bin/env bash
# Fuzzes keygate-domain's pure request-handling functions (docs/fuzzing.md): each cargo-fuzz
# target in fuzz/ for a bounded time, one summary line per target, exit 1 if any crashed.
#
#   scripts/fuzz.sh                        # every target, 60 s each
#   scripts/fuzz.sh 300                    # every target, 300 s each
#   FUZZ_SECONDS=10 scripts/fuzz.sh        # the same through the environment (the argument wins)
#   scripts/fuzz.sh 60 key_parsing         # only the named targets
#
# Toolchain: cargo-fuzz passes nightly-only flags to rustc (-Zsanitizer=address and the
# sanitizer-coverage options). Only the stable toolchain is installed, so this runs cargo-fuzz
# with RUSTC_BOOTSTRAP=1, which lets stable rustc accept them. With rustc 1.95 the
# AddressSanitizer build works that way, so the targets are built with it (cargo-fuzz's
# default); should a later toolchain refuse it, add `-s none` to FUZZ_BUILD_FLAGS below (the
# targets are safe Rust, so the sanitizer mostly guards the libFuzzer harness itself).
# `-a` turns debug assertions (and so integer-overflow checks) on in the fuzzed code.
#
# The corpus is kept in fuzz/corpus/<target> between runs; crashing inputs land in
# fuzz/artifacts/<target>/ (both ignored by git). libFuzzer stops a target at its first crash:
# reproduce it with `RUSTC_BOOTSTRAP=1 cargo fuzz run -a <target> <artifact>`. Logs are in
# fuzz/target/fuzz-logs/<target>.log.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

seconds="${1:-${FUZZ_SECONDS:-60}}"
if ! [[ "$seconds" =~ ^[1-9][0-9]*$ ]]; then
    echo "usage: $0 [SECONDS] [TARGET...]   (or FUZZ_SECONDS=SECONDS; got '$seconds')" >&2
    exit 2
fi
[[ $# -gt 0 ]] && shift
targets=("$@")
if [[ ${#targets[@]} -eq 0 ]]; then
    targets=(key_parsing credential_extraction client_ip gateway_path)
fi

FUZZ_BUILD_FLAGS=(-a)
export RUSTC_BOOTSTRAP=1

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "cargo-fuzz is missing: installing it" >&2
    nice -n 10 cargo install cargo-fuzz --locked
fi

for t in "${targets[@]}"; do
    echo "building $t" >&2
    (cd fuzz && nice -n 10 cargo fuzz build "${FUZZ_BUILD_FLAGS[@]}" "$t" >&2)
done

logs=fuzz/target/fuzz-logs
mkdir -p "$logs"
failed=0
summary=()
for t in "${targets[@]}"; do
    mkdir -p "fuzz/corpus/$t" "fuzz/artifacts/$t"
    before=$(ls "fuzz/artifacts/$t" | sort)
    log="$logs/$t.log"
    echo "fuzzing $t for ${seconds} s (log: $log)" >&2
    status=0
    started=$SECONDS
    # The outer timeout only guards against a hung harness; libFuzzer stops itself at
    # -max_total_time. -timeout makes one input running over 10 s count as a crash.
    (cd fuzz && timeout --signal=INT "$((seconds + 120))" nice -n 10 cargo fuzz run "${FUZZ_BUILD_FLAGS[@]}" "$t" -- \
        -max_total_time="$seconds" -timeout=10 -print_final_stats=1) >"$log" 2>&1 || status=$?
    runs=$(sed -n 's/^stat::number_of_executed_units: *\([0-9]*\).*/\1/p' "$log" | tail -n 1)
    new=$(comm -13 <(echo "$before") <(ls "fuzz/artifacts/$t" | sort) | grep -v '^$' || true)
    crashes=$(printf '%s' "$new" | grep -c . || true)
    line="$t: runs=${runs:-?} crashes=$crashes time=$((SECONDS - started))s"
    if [[ $crashes -gt 0 ]]; then
        failed=1
        first=$(printf '%s\n' "$new" | head -n 1)
        why=$(grep -m 1 -A 1 'panicked at' "$log" | tail -n 1 | cut -c 1-300 || true)
        line="$line first=fuzz/artifacts/$t/$first${why:+ ($why)}"
    elif [[ $status -ne 0 ]]; then
        failed=1
        line="$t: failed (exit $status) without a crash artifact; see $log"
    fi
    echo "$line" >&2
    summary+=("$line")
done

echo
echo "fuzz summary (up to ${seconds} s per target; a target stops at its first crash):"
printf '  %s\n' "${summary[@]}"
exit "$failed"
