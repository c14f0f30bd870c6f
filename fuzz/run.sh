#!/usr/bin/env bash
# Runs every fuzz target for N seconds (default 60) each and prints the execution counts.
# Needs a nightly toolchain and cargo-fuzz (`cargo install cargo-fuzz`).
set -euo pipefail
cd "$(dirname "$0")"
secs=${1:-60}
for target in $(cargo +nightly fuzz list); do
    mkdir -p "corpus/$target"
    log=$(mktemp)
    cargo +nightly fuzz run "$target" "corpus/$target" -- -max_total_time="$secs" -max_len=4096 2>&1 | tee "$log" | grep -E '^#[0-9]+ +DONE|ERROR|panicked' || true
    runs=$(grep -oE 'stat::number_of_executed_units: [0-9]+' "$log" | awk '{print $2}' | tail -1)
    echo "$target: ${runs:-?} executions in ${secs}s"
    if grep -q -E '==ERROR|panicked|deadly signal' "$log"; then
        echo "$target: FOUND A CRASH, see fuzz/artifacts/$target" >&2
        exit 1
    fi
done
