#!/usr/bin/env bash
# Usage: fuzz/run.sh [SECONDS] ["TARGET ..."]. Runs each fuzz target (default: all) for SECONDS
# (default 60), starting from the committed seeds (fuzz/seeds/TARGET) and the local corpus
# (fuzz/corpus/TARGET, where new inputs go), and prints executions and coverage.
# Debug assertions are on, so the engine's invariants are checked on every input.
# Needs a nightly toolchain and cargo-fuzz (`cargo install cargo-fuzz`).
set -uo pipefail
cd "$(dirname "$0")"
secs=${1:-60}
status=0
targets=${2:-$(cargo +nightly fuzz list)}
for target in $targets; do
    mkdir -p "corpus/$target" "seeds/$target"
    log=$(mktemp)
    cargo +nightly fuzz run --debug-assertions "$target" "corpus/$target" "seeds/$target" -- \
        -max_total_time="$secs" -max_len=4096 -print_final_stats=1 >"$log" 2>&1
    rc=$?
    runs=$(grep -oE 'stat::number_of_executed_units: *[0-9]+' "$log" | grep -oE '[0-9]+$' | tail -1)
    cov=$(grep -oE '(DONE|pulse|NEW|REDUCE) +cov: [0-9]+ ft: [0-9]+' "$log" | tail -1 | grep -oE 'cov: [0-9]+ ft: [0-9]+')
    echo "$target: ${runs:-?} executions in ${secs}s, ${cov:-cov: ?}, corpus $(ls "corpus/$target" | wc -l) inputs, exit $rc"
    if [ "$rc" != 0 ] || grep -qE '==ERROR|panicked|deadly signal' "$log"; then
        echo "$target: FOUND A CRASH (fuzz/artifacts/$target):" >&2
        grep -E 'panicked|ERROR|SUMMARY' -A1 "$log" | head -8 >&2
        status=1
    fi
    rm -f "$log"
done
exit "$status"
