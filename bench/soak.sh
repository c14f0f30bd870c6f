#!/usr/bin/env bash
# A bounded soak of khttpd (issue #8): mixed load with control churn, slow readers and a
# slowloris crowd, for 10 minutes by default. wrk drives raw throughput on a 1 KiB entity while
# khttp-soak (tests/src/bin/khttp-soak.rs) verifies every body byte it fetches, churns the
# control plane, reads a churned 1 MiB entity slowly and keeps the crowd at strength. It reports
# errors (must be 0), bytes verified, and khttpd's RSS and open descriptors at the start, after
# warm-up and at the end, and exits non-zero on an error, on RSS growth, or on a descriptor leak.
#
#   bench/soak.sh                   # 600 s
#   SECONDS_TOTAL=60 bench/soak.sh  # a quick look
#
# Installs wrk if missing. Traffic stays on 127.0.0.1.
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${SECONDS_TOTAL:-600}
CROWD=${CROWD:-2000}

command -v wrk >/dev/null 2>&1 || {
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null
}
cargo build --release -q -p khttp-host -p khttpctl -p khttp-tests --bins

work=$(mktemp -d)
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    sleep 0.5
    rm -rf "$work"
}
trap cleanup EXIT

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
mkdir -p "$work/www"
head -c 1024 /dev/urandom > "$work/www/1k.bin"
target/release/khttpd --site "$work/www" --prefix "http://+:$port/w/" --workers 2 \
    --state-dir "$work/state" --control "$work/ctl.sock" > "$work/khttpd.log" 2>&1 &
kpid=$!
pids+=($kpid)
for _ in $(seq 100); do grep -q "control socket" "$work/khttpd.log" && break; sleep 0.1; done
ctl() { target/release/khttpctl --endpoint "unix:$work/ctl.sock" "$@"; }
ctl urlacl add "http://+:$port/"
ctl limits set header-timeout 30   # the crowd is timed out (and replaced) during the run

echo "soak: ${DURATION}s against khttpd pid $kpid on port $port (crowd $CROWD, wrk c=32 on 1 KiB)"
wrk -t1 -c32 -d"${DURATION}s" --latency "http://127.0.0.1:$port/w/1k.bin" > "$work/wrk.txt" 2>&1 &
wpid=$!
pids+=($wpid)
status=0
KHTTPCTL_BIN=target/release/khttpctl target/release/khttp-soak --port "$port" \
    --endpoint "unix:$work/ctl.sock" --pid "$kpid" --seconds "$DURATION" --crowd "$CROWD" \
    --dir "$work/soak" || status=$?
wait "$wpid" || true
echo "soak: wrk on the 1 KiB entity:"
grep -E "Requests/sec|requests in|Socket errors|Non-2xx|99%" "$work/wrk.txt" | sed 's/^/  /'
if grep -q "Non-2xx" "$work/wrk.txt"; then
    echo "soak: wrk saw non-2xx responses"
    status=1
fi
kill -0 "$kpid" 2>/dev/null || { echo "soak: khttpd died"; tail -5 "$work/khttpd.log"; status=1; }
echo "soak: $( [ "$status" = 0 ] && echo PASSED || echo FAILED )"
exit "$status"
