#!/usr/bin/env bash
# Dynamic requests (issue #12): khttpd handing misses to hello-app through its request queue,
# against nginx's proxy_pass (upstream keep-alive) to hello-http, the same application logic
# speaking HTTP. Server and application share CPU 0 in both; wrk -t1 -c64 runs on CPU 1; the
# servers are interleaved. CPU per request counts every thread of server and application.
# hello-app runs with its defaults (issue #23): each receive takes up to 16 requests when more
# wait than its other threads could take, and answers go without waiting for their outcome
# (only news of what went wrong comes back). The same application again, one thread with
# --batch 32 (BTHREADS and BATCH change it).
# Then: a cacheable answer after its first miss (hello-app --cache) against a preloaded entry.
#
#   bench/apps.sh                    # 3 repetitions of 10 s
#   REPS=1 DURATION=3 bench/apps.sh  # a quick look
set -euo pipefail
cd "$(dirname "$0")/.."
REPS=${REPS:-3}
DURATION=${DURATION:-10}
THREADS=${THREADS:-4}
BATCH=${BATCH:-32}
BTHREADS=${BTHREADS:-1}
. bench/lib.sh
bench_need_tools
cargo build --release -q -p khttp-host -p khttpctl -p hello-app
work=$(mktemp -d)
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    [ -f "$work/nginx.pid" ] && kill "$(cat "$work/nginx.pid")" 2>/dev/null || true
    sleep 0.3
    rm -rf "$work"
}
trap cleanup EXIT
chmod 755 "$work"
K=18480 N=18481 U=18482 C=18483 B=18484
start() { taskset -c 0 "$@" & pids+=($!); }
start target/release/khttpd --workers 1 --state-dir "$work/s" --control "$work/ctl.sock" >"$work/khttpd.log" 2>&1
KPID=$!
sleep 0.5
ctl() { target/release/khttpctl --endpoint "unix:$work/ctl.sock" "$@" >/dev/null; }
ctl urlacl add "http://+:$K/"
ctl urlacl add "http://+:$C/"
ctl urlacl add "http://+:$B/"
head -c 70 /dev/zero | tr '\0' x > "$work/preloaded.txt"
ctl cache put "http://+:$C/preloaded" "$work/preloaded.txt"
export KHTTP_APP_ENDPOINT="unix:$work/app.sock"
start target/release/hello-app "http://+:$K/" --threads "$THREADS" >"$work/app.log" 2>&1
APID=$!
start target/release/hello-app "http://+:$C/" --queue cached --cache 3600 >"$work/app2.log" 2>&1
start target/release/hello-app "http://+:$B/" --queue batched --threads "$BTHREADS" --batch "$BATCH" >"$work/app3.log" 2>&1
BPID=$!
start target/release/hello-http "$U" >"$work/http.log" 2>&1
HPID=$!
cat > "$work/nginx.conf" <<CONF
worker_processes 1;
pid $work/nginx.pid;
error_log $work/nginx-error.log warn;
daemon on;
events { worker_connections 20000; use epoll; multi_accept on; }
http {
    access_log off;
    tcp_nodelay on;
    keepalive_timeout 120s;
    keepalive_requests 10000000;
    upstream app { server 127.0.0.1:$U; keepalive 64; }
    server {
        listen 127.0.0.1:$N reuseport backlog=4096;
        location / { proxy_pass http://app; proxy_http_version 1.1; proxy_set_header Connection ""; }
    }
}
CONF
taskset -c 0 nginx -c "$work/nginx.conf" -p "$work"
sleep 0.5
NPIDS="$(cat "$work/nginx.pid") $(pgrep -P "$(cat "$work/nginx.pid")" | tr '\n' ' ')"
for p in $NPIDS; do taskset -pc 0 "$p" >/dev/null; done
curl -sf "http://127.0.0.1:$K/warm" >/dev/null && curl -sf "http://127.0.0.1:$N/warm" >/dev/null
curl -sf "http://127.0.0.1:$B/warm" >/dev/null
curl -sf "http://127.0.0.1:$C/cached" >/dev/null   # the miss that fills the cache
run() { # name url pids...
    local name=$1 url=$2; shift 2
    local before after out reqs rps p50
    before=$(cpu_ns "$@")
    out=$(taskset -c 1 wrk -t1 -c64 -d"${DURATION}s" --latency "$url")
    after=$(cpu_ns "$@")
    if echo "$out" | grep -q 'Non-2xx'; then echo "$name answered errors: $out" >&2; exit 1; fi
    reqs=$(echo "$out" | awk '/requests in/ { print $1 }')
    rps=$(echo "$out" | awk '/Requests\/sec/ { print $2 }')
    p50=$(echo "$out" | awk '$1 == "50%" { print $2 }')
    printf '%-34s %10s req/s  p50 %-9s %7.2f us CPU/req\n' "$name" "$rps" "$p50" \
        "$(awk -v a="$before" -v b="$after" -v n="$reqs" 'BEGIN { print (b - a) / 1000 / (n > 0 ? n : 1) }')"
}
for rep in $(seq "$REPS"); do
    echo "rep $rep"
    run "khttpd queue + hello-app" "http://127.0.0.1:$K/dynamic" "$KPID" "$APID"
    run "khttpd queue, 1 thread, batch 32" "http://127.0.0.1:$B/dynamic" "$KPID" "$BPID"
    run "nginx proxy + hello-http" "http://127.0.0.1:$N/dynamic" $NPIDS "$HPID"
    run "khttpd cached after a miss" "http://127.0.0.1:$C/cached" "$KPID"
    run "khttpd preloaded entry" "http://127.0.0.1:$C/preloaded" "$KPID"
done
