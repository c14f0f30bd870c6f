#!/usr/bin/env bash
# What a remote client and another local user can make khttpd hold (issue #21), measured with
# the release binaries, for SECURITY.md:
# 1. CLIENTS connections (1,000, then 10,000) each announcing a 1 MiB body to an application's
#    prefix and sending all of it but the last byte: khttpd's resident memory before, while
#    they hold on, and after they close; how many were answered 503; `body-bytes-held`.
# 2. As `nobody`: 5,000 connections to the application socket (khttpd's threads and file
#    descriptors while they are open), then a frame announcing 64 MiB, 24 times.
# Needs root (setpriv) for part 2; part 1 runs as anyone. Prints one line per measurement.
#
#   bench/tenancy.sh
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -q -p khttp-host -p khttpctl -p hello-app -p khttp-tests --bins
work=$(mktemp -d)
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    sleep 0.3
    rm -rf "$work"
}
trap cleanup EXIT
chmod 755 "$work"
P=18490
ulimit -n "$(ulimit -Hn)"
target/release/khttpd --workers 2 --state-dir "$work/s" --control "$work/ctl.sock" >"$work/khttpd.log" 2>&1 &
KPID=$!
pids+=("$KPID")
sleep 0.5
ctl() { target/release/khttpctl --endpoint "unix:$work/ctl.sock" "$@"; }
ctl urlacl add "http://+:$P/app/" >/dev/null
KHTTP_APP_ENDPOINT="unix:$work/app.sock" target/release/hello-app "http://+:$P/app/" >"$work/app.log" 2>&1 &
pids+=($!)
sleep 0.5
rss() { awk '/^VmRSS:/ { print $2 }' "/proc/$KPID/status"; }
field() { awk -v k="$1" '$1 == k":" { print $2 }' "/proc/$KPID/status"; }
held() { ctl stats | awk '$1 == "body-bytes-held" { print $2 }'; }
budget=$(ctl limits show | awk '$1 == "body-buffer-bytes" { print $2 }')
echo "khttpd: RSS $(rss) kB at start; body-buffer-bytes $budget"

for clients in 1000 10000; do
    before=$(rss)
    coproc FLOOD { target/release/khttp-flood "$P" /app/x "$clients" 1048576; }
    read -r line <&"${FLOOD[0]}"
    sleep 1
    during=$(rss)
    h=$(held)
    peak=$(field VmHWM)
    exec {FLOOD[1]}>&-
    wait "$FLOOD_PID" 2>/dev/null || true
    sleep 5
    after=$(rss)
    echo "$clients unfinished 1 MiB bodies: $line; RSS ${before} -> ${during} kB while held (body-bytes-held $h, peak $peak kB), ${after} kB 5 s after they closed"
done

if [ "$(id -u)" = 0 ]; then
    threads0=$(field Threads); fds0=$(ls "/proc/$KPID/fd" | wc -l)
    coproc APPS { setpriv --reuid=nobody --regid=nogroup --clear-groups target/release/khttp-attach "$work/app.sock" flood 5000; }
    read -r line <&"${APPS[0]}"
    sleep 0.5
    echo "5,000 application connections from nobody: $line; threads ${threads0} -> $(field Threads), descriptors ${fds0} -> $(ls "/proc/$KPID/fd" | wc -l)"
    exec {APPS[1]}>&-
    wait "$APPS_PID" 2>/dev/null || true
    before=$(rss)
    announcers=()
    for _ in $(seq 24); do
        setpriv --reuid=nobody --regid=nogroup --clear-groups target/release/khttp-attach "$work/app.sock" announce 67108864 >>"$work/announce.out" &
        announcers+=($!)
    done
    wait "${announcers[@]}" 2>/dev/null || true
    sleep 1
    echo "24 frames announcing 64 MiB from nobody: answered $(sort -u "$work/announce.out" | tr '\n' ' '); RSS ${before} -> $(rss) kB"
fi
