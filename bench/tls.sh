#!/usr/bin/env bash
# khttpd vs nginx over HTTPS (issue #24, item 7), side by side on this machine. Both serve the
# same files with one worker pinned to CPU 0, with the same ECDSA P-256 certificate, TLS 1.3
# only; clients run on CPU 1; the servers are interleaved. nginx is Debian's, on OpenSSL 3.
#
#   keep-alive    wrk -t1 -c64 over https: 1 KiB and 256 KiB bodies
#   handshakes    openssl s_time -new (a full handshake and one request per connection),
#                 PARALLEL clients at once; then s_time -reuse (each connection resumes)
#   idle          10,000 TLS connections held open after one request each; the server's
#                 resident memory before and after, per connection
#
# Server CPU per request (or handshake) comes from /proc/PID/task/*/schedstat.
#
#   bench/tls.sh                    # 3 repetitions of 10 s (about 6 minutes)
#   REPS=1 DURATION=3 bench/tls.sh  # a quick look
#   IDLE=0 bench/tls.sh             # without the idle-connection measure
#   QUOTA=25 bench/tls.sh           # each server held to 25% of a core (cgroup v1 cpu.cfs_quota_us),
#                                   # so that the servers, not the one client core, are the limit:
#                                   # the per-second figures then compare the servers themselves
#   PROVIDER=khttp-crypto bench/tls.sh  # khttpd with the driver's provider (--tls-provider)
set -euo pipefail
cd "$(dirname "$0")/.."
REPS=${REPS:-3}
DURATION=${DURATION:-10}
SERVER_CPU=${SERVER_CPU:-0}
CLIENT_CPU=${CLIENT_CPU:-1}
PARALLEL=${PARALLEL:-4}
IDLE=${IDLE:-10000}
PROVIDER=${PROVIDER:-ring}

. bench/lib.sh
bench_need_tools
command -v openssl >/dev/null || { apt-get update -qq && apt-get install -y -qq openssl >/dev/null; }
cargo build --release -q -p khttp-host -p khttpctl

work=$(mktemp -d)
pids=()
QUOTA=${QUOTA:-}
CGROUP=/sys/fs/cgroup/cpu
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    [ -f "$work/nginx.pid" ] && kill "$(cat "$work/nginx.pid")" 2>/dev/null || true
    sleep 0.5
    [ -n "$QUOTA" ] && rmdir "$CGROUP/khttp-bench-khttpd" "$CGROUP/khttp-bench-nginx" 2>/dev/null
    rm -rf "$work"
}
trap cleanup EXIT

mkdir -p "$work/www"
chmod 755 "$work"
head -c 1024 /dev/urandom > "$work/www/1k.bin"
head -c 262144 /dev/urandom > "$work/www/256k.bin"
chmod 644 "$work"/www/*
openssl req -x509 -nodes -newkey ec -pkeyopt ec_paramgen_curve:P-256 -days 30 -subj /CN=localhost \
    -addext subjectAltName=DNS:localhost,IP:127.0.0.1 -keyout "$work/key.pem" -out "$work/cert.pem" 2>/dev/null
chmod 644 "$work/key.pem" "$work/cert.pem"   # nginx's master reads them as root; a bench key
KPORT=${KPORT:-18480}
NPORT=${NPORT:-18481}

taskset -c "$SERVER_CPU" target/release/khttpd --site "$work/www" --prefix "https://+:$KPORT/" --workers 1 \
    --tls-provider "$PROVIDER" --state-dir "$work/kstate" --control "$work/k.sock" > "$work/khttpd.log" 2>&1 &
pids+=($!)
KPID=$!
for _ in $(seq 50); do [ -S "$work/k.sock" ] && break; sleep 0.1; done
target/release/khttpctl --endpoint "unix:$work/k.sock" sslcert add "ipport=0.0.0.0:$KPORT" \
    --cert "$work/cert.pem" --key "$work/key.pem" >/dev/null

# nginx as its documentation recommends for static files, with TLS 1.3 only, the same
# certificate, a session cache and tickets (its defaults keep tickets on).
cat > "$work/nginx.conf" <<CONF
worker_processes 1;
pid $work/nginx.pid;
error_log $work/nginx-error.log warn;
daemon on;
events { worker_connections 30000; use epoll; multi_accept on; }
worker_rlimit_nofile 40000;
http {
    access_log off;
    tcp_nopush on;
    tcp_nodelay on;
    keepalive_timeout 120s;
    keepalive_requests 10000000;
    open_file_cache max=1000 inactive=60s;
    open_file_cache_valid 60s;
    default_type application/octet-stream;
    ssl_protocols TLSv1.3;
    ssl_certificate $work/cert.pem;
    ssl_certificate_key $work/key.pem;
    ssl_session_cache shared:SSL:10m;
    server { listen 127.0.0.1:$NPORT ssl reuseport backlog=4096; root $work/www; sendfile on; }
}
CONF
taskset -c "$SERVER_CPU" nginx -c "$work/nginx.conf" -p "$work"
for _ in $(seq 50); do
    curl -skf -o /dev/null "https://127.0.0.1:$KPORT/1k.bin" && curl -skf -o /dev/null "https://127.0.0.1:$NPORT/1k.bin" && break
    sleep 0.1
done
NPIDS="$(cat "$work/nginx.pid") $(pgrep -P "$(cat "$work/nginx.pid")" | tr '\n' ' ')"
for p in $NPIDS; do taskset -pc "$SERVER_CPU" "$p" >/dev/null; done
NWORKER=$(pgrep -P "$(cat "$work/nginx.pid")" | head -1)
if [ -n "$QUOTA" ]; then
    for server in khttpd nginx; do
        mkdir -p "$CGROUP/khttp-bench-$server"
        echo 100000 > "$CGROUP/khttp-bench-$server/cpu.cfs_period_us"
        echo $((QUOTA * 1000)) > "$CGROUP/khttp-bench-$server/cpu.cfs_quota_us"
    done
    echo "$KPID" > "$CGROUP/khttp-bench-khttpd/cgroup.procs"
    for p in $NPIDS; do echo "$p" > "$CGROUP/khttp-bench-nginx/cgroup.procs"; done
    echo "each server held to $QUOTA% of a core" >&2
fi

results="$work/results.tsv"
measure() { # name server port pids command...: one row (rate, server CPU µs per unit)
    local name=$1 server=$2 spids=$3; shift 3
    local before after out n rate
    before=$(cpu_ns $spids)
    out=$("$@")
    after=$(cpu_ns $spids)
    read -r n rate <<< "$out"
    cpu_us=$(awk -v a="$before" -v b="$after" -v n="$n" 'BEGIN { printf "%.2f", (b - a) / 1000 / (n > 0 ? n : 1) }')
    printf '%s\t%s\t%s\t%s\t%s\n' "$rep" "$name" "$server" "$rate" "$cpu_us" >> "$results"
    echo "rep $rep $name $server: $rate/s, ${cpu_us}us server CPU each" >&2
}
wrk_run() { # port file -> "requests rate"
    local out
    out=$(taskset -c "$CLIENT_CPU" wrk -t1 -c64 -d"${DURATION}s" "https://127.0.0.1:$1/$2")
    if echo "$out" | grep -q 'Non-2xx'; then echo "errors: $out" >&2; exit 1; fi
    echo "$(echo "$out" | awk '/requests in/ { print $1 }') $(echo "$out" | awk '/Requests\/sec/ { print $2 }')"
}
s_time_run() { # port -new|-reuse -> "connections rate", PARALLEL clients summed
    local port=$1 mode=$2 i total=0
    for i in $(seq "$PARALLEL"); do
        taskset -c "$CLIENT_CPU" openssl s_time -connect "127.0.0.1:$port" "$mode" -time "$DURATION" \
            -www /1k.bin > "$work/s_time.$i" 2>&1 &
    done
    wait
    for i in $(seq "$PARALLEL"); do
        n=$(awk '/connections in [0-9.]+s;/ { print $1; exit }' "$work/s_time.$i")
        total=$((total + ${n:-0}))
    done
    echo "$total $(awk -v n="$total" -v d="$DURATION" 'BEGIN { printf "%.0f", n / d }')"
}

for rep in $(seq "$REPS"); do
    for server in khttpd nginx; do
        case $server in
            khttpd) port=$KPORT; spids=$KPID ;;
            nginx) port=$NPORT; spids=$NPIDS ;;
        esac
        measure tls-1KiB-c64 "$server" "$spids" wrk_run "$port" 1k.bin
        measure tls-256KiB-c64 "$server" "$spids" wrk_run "$port" 256k.bin
        measure tls-handshake-new "$server" "$spids" s_time_run "$port" -new
        measure tls-handshake-resume "$server" "$spids" s_time_run "$port" -reuse
    done
done

# Idle connections: RSS of the server process before and after IDLE TLS connections are held.
idle_rows=""
if [ "$IDLE" -gt 0 ]; then
    ulimit -n $((IDLE * 2 + 1000)) 2>/dev/null || true
    for server in khttpd nginx; do
        case $server in
            khttpd) port=$KPORT; mpid=$KPID ;;
            nginx) port=$NPORT; mpid=$NWORKER ;;
        esac
        per=$(taskset -c "$CLIENT_CPU" python3 - "$port" "$mpid" "$IDLE" <<'PY'
import socket, ssl, sys, time
port, pid, n = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
def rss():
    for l in open(f"/proc/{pid}/status"):
        if l.startswith("VmRSS:"):
            return int(l.split()[1]) * 1024
ctx = ssl.create_default_context()
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE
ctx.minimum_version = ssl.TLSVersion.TLSv1_3
before = rss()
held = []
for i in range(n):
    s = ctx.wrap_socket(socket.create_connection(("127.0.0.1", port)), server_hostname="localhost")
    s.sendall(b"GET /1k.bin HTTP/1.1\r\nHost: localhost\r\n\r\n")
    got = b""
    while b"\r\n\r\n" not in got or len(got) < 1024:
        got += s.recv(65536)
    held.append(s)
time.sleep(2)
after = rss()
print(f"{(after - before) / n:.0f}")
PY
)
        echo "idle $server: $per bytes per idle TLS connection" >&2
        idle_rows+="| idle TLS connections ($IDLE) | $server | $per bytes of server RSS each |\n"
    done
fi

python3 - "$results" "$REPS" "$DURATION" "$PARALLEL" <<'PY'
import statistics, sys, collections
rows = [l.rstrip("\n").split("\t") for l in open(sys.argv[1])]
by = collections.defaultdict(list)
for rep, name, server, rate, cpu in rows:
    by[(name, server)].append((float(rate), float(cpu)))
med = {k: [statistics.median(x[i] for x in v) for i in range(2)] for k, v in by.items()}
print(f"Medians of {sys.argv[2]} repetitions of {sys.argv[3]} s; handshakes: {sys.argv[4]} openssl s_time clients.\n")
print("| scenario | server | per second | server CPU µs each |")
print("|---|---|---:|---:|")
for n in dict.fromkeys(r[1] for r in rows):
    k, g = med[(n, "khttpd")], med[(n, "nginx")]
    print(f"| {n} | khttpd | {k[0]:,.0f} | {k[1]:.2f} |")
    print(f"| {n} | nginx | {g[0]:,.0f} | {g[1]:.2f} |")
    print(f"| {n} | **khttpd/nginx** | **{k[0]/g[0]:.2f}×** | **{k[1]/g[1]:.2f}×** |")
PY
printf "%b" "$idle_rows"
