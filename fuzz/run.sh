#!/usr/bin/env bash
# Usage: fuzz/run.sh [SECONDS] ["TARGET ..."]. Runs each fuzz target (default: all) for SECONDS
# (default 60) and prints the execution counts.
# Needs a nightly toolchain and cargo-fuzz (`cargo install cargo-fuzz`).
set -uo pipefail
cd "$(dirname "$0")"
secs=${1:-60}
status=0
targets=${2:-$(cargo +nightly fuzz list)}
for target in $targets; do
    mkdir -p "corpus/$target"
    log=$(mktemp)
    cargo +nightly fuzz run "$target" "corpus/$target" -- \
        -max_total_time="$secs" -max_len=4096 -print_final_stats=1 >"$log" 2>&1
    rc=$?
    runs=$(grep -oE 'stat::number_of_executed_units: *[0-9]+' "$log" | grep -oE '[0-9]+$' | tail -1)
    echo "$target: ${runs:-?} executions in ${secs}s, exit $rc"
    if [ "$rc" != 0 ] || grep -qE '==ERROR|panicked|deadly signal' "$log"; then
        echo "$target: FOUND A CRASH (fuzz/artifacts/$target):" >&2
        grep -E 'panicked|ERROR|SUMMARY' "$log" | head -5 >&2
        status=1
    fi
    rm -f "$log"
done
exit "$status"
