#!/usr/bin/env bash
# khttpd vs nginx on this machine, side by side (issue #5). Installs nginx and wrk if missing,
# builds khttpd in release mode, serves the same files (1 KiB, 16 KiB, 256 KiB) from both on
# loopback with one worker each, pinned to CPU 0, and measures with wrk -t1 pinned to CPU 1,
# interleaving the servers. nginx runs twice, sendfile on and off; khttpd is compared with the
# better of the two. Server CPU per request comes from /proc/PID/task/*/schedstat, because the
# client saturates before the servers do.
#
#   bench/run.sh                    # 3 repetitions of 10 s per scenario (about 8 minutes)
#   REPS=1 DURATION=3 bench/run.sh  # a quick look
#   BASELINE=/tmp/old/khttpd bench/run.sh   # also an earlier build, interleaved in the same run
#                                           # (a change's cost: "khttpd-baseline" rows, and the
#                                           # khttpd/baseline CPU ratio per scenario)
#   ONLY='16KiB|256KiB' SERVERS='khttpd khttpd-baseline' BASELINE=... bench/run.sh
#                                           # some scenarios (a regex), some servers
#
# Writes the table to stdout and to bench/RESULTS.md's "Latest run" section is updated by hand.
set -euo pipefail
cd "$(dirname "$0")/.."
REPS=${REPS:-3}
DURATION=${DURATION:-10}
SERVER_CPU=${SERVER_CPU:-0}
CLIENT_CPU=${CLIENT_CPU:-1}

. bench/lib.sh
bench_need_tools
cargo build --release -q -p khttp-host

work=$(mktemp -d)
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    [ -f "$work/nginx.pid" ] && kill "$(cat "$work/nginx.pid")" 2>/dev/null || true
    sleep 0.5
    rm -rf "$work"
}
trap cleanup EXIT

mkdir -p "$work/www"
chmod 755 "$work"   # nginx's workers run as www-data
head -c 1024 /dev/urandom > "$work/www/1k.bin"
head -c 16384 /dev/urandom > "$work/www/16k.bin"
head -c 262144 /dev/urandom > "$work/www/256k.bin"
chmod 644 "$work"/www/*
KPORT=${KPORT:-18380}
NPORT_ON=${NPORT_ON:-18381}
NPORT_OFF=${NPORT_OFF:-18382}
BPORT=${BPORT:-18383}
BASELINE=${BASELINE:-}
servers=(khttpd nginx-sendfile-on nginx-sendfile-off)

# khttpd: one worker thread.
taskset -c "$SERVER_CPU" target/release/khttpd --site "$work/www" --prefix "http://+:$KPORT/" --workers 1 \
    --state-dir "$work/kstate" --control "$work/k.sock" > "$work/khttpd.log" 2>&1 &
pids+=($!)
KPID=$!
BPID=
if [ -n "$BASELINE" ]; then
    taskset -c "$SERVER_CPU" "$BASELINE" --site "$work/www" --prefix "http://+:$BPORT/" --workers 1 \
        --state-dir "$work/bstate" --control "$work/b.sock" --app-socket "$work/b-app.sock" \
        > "$work/baseline.log" 2>&1 &
    pids+=($!)
    BPID=$!
    servers+=(khttpd-baseline)
fi

# nginx, tuned as its documentation recommends for static files: one worker, reuseport,
# open_file_cache, no access log, long keep-alive; one server block per sendfile setting.
cat > "$work/nginx.conf" <<CONF
worker_processes 1;
pid $work/nginx.pid;
error_log $work/nginx-error.log warn;
daemon on;
events { worker_connections 20000; use epoll; multi_accept on; }
http {
    access_log off;
    tcp_nopush on;
    tcp_nodelay on;
    keepalive_timeout 120s;
    keepalive_requests 10000000;
    open_file_cache max=1000 inactive=60s;
    open_file_cache_valid 60s;
    open_file_cache_errors on;
    default_type application/octet-stream;
    server { listen 127.0.0.1:$NPORT_ON reuseport backlog=4096; root $work/www; sendfile on; }
    server { listen 127.0.0.1:$NPORT_OFF reuseport backlog=4096; root $work/www; sendfile off; }
}
CONF
taskset -c "$SERVER_CPU" nginx -c "$work/nginx.conf" -p "$work"
for _ in $(seq 50); do
    curl -sf -o /dev/null "http://127.0.0.1:$KPORT/1k.bin" && curl -sf -o /dev/null "http://127.0.0.1:$NPORT_ON/1k.bin" \
        && { [ -z "$BPID" ] || curl -sf -o /dev/null "http://127.0.0.1:$BPORT/1k.bin"; } && break
    sleep 0.1
done
NPIDS="$(cat "$work/nginx.pid") $(pgrep -P "$(cat "$work/nginx.pid")" | tr '\n' ' ')"
# The workers of nginx also go on SERVER_CPU.
for p in $NPIDS; do taskset -pc "$SERVER_CPU" "$p" >/dev/null; done


to_us() { # wrk latency ("123.45us", "1.20ms", "2.00s") to microseconds
    awk -v v="$1" 'BEGIN { n = v + 0; if (v ~ /us$/) print n; else if (v ~ /ms$/) print n * 1000; else if (v ~ /s$/) print n * 1000000; else print n }'
}

to_mb() { # wrk transfer ("12.34MB", "800.00KB", "1.20GB") to MB
    awk -v v="$1" 'BEGIN { n = v + 0; if (v ~ /GB$/) print n * 1024; else if (v ~ /MB$/) print n; else if (v ~ /KB$/) print n / 1024; else print n / 1048576 }'
}

results="$work/results.tsv"
# scenario  file  connections  pipeline-depth
scenarios=(
    "1KiB-c64 1k.bin 64 1"
    "1KiB-pipelined16 1k.bin 64 16"
    "1KiB-c1 1k.bin 1 1"
    "16KiB-c64 16k.bin 64 1"
    "256KiB-c64 256k.bin 64 1"
)
for rep in $(seq "$REPS"); do
    for sc in "${scenarios[@]}"; do
        read -r name file conns depth <<< "$sc"
        [[ -n "${ONLY:-}" && ! $name =~ $ONLY ]] && continue
        for server in ${SERVERS:-${servers[@]}}; do
            case $server in
                khttpd) port=$KPORT; spids=$KPID ;;
                khttpd-baseline) port=$BPORT; spids=$BPID ;;
                nginx-sendfile-on) port=$NPORT_ON; spids=$NPIDS ;;
                nginx-sendfile-off) port=$NPORT_OFF; spids=$NPIDS ;;
            esac
            script=()
            [ "$depth" -gt 1 ] && script=(-s bench/pipeline.lua)
            before=$(cpu_ns $spids)
            out=$(DEPTH=$depth taskset -c "$CLIENT_CPU" wrk -t1 -c"$conns" -d"${DURATION}s" --latency "${script[@]}" "http://127.0.0.1:$port/$file")
            after=$(cpu_ns $spids)
            reqs=$(echo "$out" | awk '/requests in/ { print $1 }')
            rps=$(echo "$out" | awk '/Requests\/sec/ { print $2 }')
            mbs=$(to_mb "$(echo "$out" | awk '/Transfer\/sec/ { print $2 }')")
            p50=$(to_us "$(echo "$out" | awk '$1 == "50%" { print $2 }')")
            p99=$(to_us "$(echo "$out" | awk '$1 == "99%" { print $2 }')")
            errors=$(echo "$out" | awk '/Non-2xx|Socket errors/ { print }' | tr '\n' ' ')
            if echo "$out" | grep -q 'Non-2xx'; then
                echo "$server answered errors for $file: $out" >&2
                exit 1
            fi
            cpu_us=$(awk -v a="$before" -v b="$after" -v n="$reqs" 'BEGIN { printf "%.2f", (b - a) / 1000 / (n > 0 ? n : 1) }')
            printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$rep" "$name" "$server" "$rps" "$mbs" "$p50" "$p99" "$cpu_us" "$errors" >> "$results"
            echo "rep $rep $name $server: $rps req/s, $mbs MB/s, p50 ${p50}us, p99 ${p99}us, ${cpu_us}us CPU/req $errors" >&2
        done
    done
done

python3 - "$results" "$REPS" "$DURATION" <<'PY'
import statistics, sys, collections
rows = [l.rstrip("\n").split("\t") for l in open(sys.argv[1])]
by = collections.defaultdict(list)
for rep, name, server, rps, mbs, p50, p99, cpu, err in rows:
    by[(name, server)].append((float(rps), float(mbs), float(p50), float(p99), float(cpu)))
med = {k: [statistics.median(x[i] for x in v) for i in range(5)] for k, v in by.items()}
names = list(dict.fromkeys(r[1] for r in rows))
print(f"Medians of {sys.argv[2]} repetitions of {sys.argv[3]} s; khttpd/nginx ratios use nginx's better sendfile setting per metric.\n")
print("| scenario | server | req/s | MB/s | p50 µs | p99 µs | server CPU µs/req |")
print("|---|---|---:|---:|---:|---:|---:|")
for n in names:
    if (n, "nginx-sendfile-on") not in med:
        k, b = med[(n, "khttpd")], med[(n, "khttpd-baseline")]
        print(f"| {n} | khttpd | {k[0]:,.0f} | {k[1]:,.1f} | {k[2]:,.0f} | | {k[4]:.2f} |")
        print(f"| {n} | khttpd-baseline | {b[0]:,.0f} | {b[1]:,.1f} | {b[2]:,.0f} | | {b[4]:.2f} |")
        print(f"| {n} | **khttpd/baseline** | **{k[0]/b[0]:.3f}×** | | | | **{k[4]/b[4]:.3f}×** |")
        continue
    for s in ("khttpd", "nginx-sendfile-on", "nginx-sendfile-off"):
        m = med[(n, s)]
        p99 = f"{m[3]:,.0f}" if m[3] > 0 else "n/a"
        print(f"| {n} | {s} | {m[0]:,.0f} | {m[1]:,.1f} | {m[2]:,.0f} | {p99} | {m[4]:.2f} |")
    k = med[(n, "khttpd")]
    on, off = med[(n, "nginx-sendfile-on")], med[(n, "nginx-sendfile-off")]
    best_rps = max(on[0], off[0]); best_mb = max(on[1], off[1]); best_p99 = min(on[3], off[3]); best_cpu = min(on[4], off[4])
    # wrk records pipelined latency per batch and prints 0 for the upper percentiles: n/a there.
    p99 = f"**{k[3]/best_p99:.2f}×**" if k[3] > 0 and best_p99 > 0 else "n/a"
    print(f"| {n} | **khttpd/nginx** | **{k[0]/best_rps:.2f}×** | **{k[1]/best_mb:.2f}×** | | {p99} | **{k[4]/best_cpu:.2f}×** |")
    if (n, "khttpd-baseline") in med:
        b = med[(n, "khttpd-baseline")]
        print(f"| {n} | khttpd-baseline | {b[0]:,.0f} | {b[1]:,.1f} | {b[2]:,.0f} | | {b[4]:.2f} |")
        print(f"| {n} | **khttpd/baseline** | **{k[0]/b[0]:.3f}×** | | | | **{k[4]/b[4]:.3f}×** |")
PY
