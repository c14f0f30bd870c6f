#!/usr/bin/env python3
"""Scale and system-call checks for khttpd (issue #5).

1. 1 KiB keep-alive throughput (wrk -t1 -c64) with no idle connections;
2. 10,000 idle keep-alive connections opened (each made one request first), and khttpd's
   memory per connection measured from VmRSS;
3. the same wrk run with the 10,000 connections still open;
4. system calls per cache hit, counted with strace -c over a short wrk run.

Usage: python3 bench/scale.py [--connections 10000] [--duration 10]
Needs: a release khttpd (cargo build --release -p khttp-host), wrk, strace.
"""
import argparse, os, re, resource, socket, subprocess, sys, tempfile, time

ap = argparse.ArgumentParser()
ap.add_argument("--connections", type=int, default=10_000)
ap.add_argument("--duration", type=int, default=10)
ap.add_argument("--port", type=int, default=18480)
args = ap.parse_args()

root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
khttpd = os.path.join(root, "target/release/khttpd")
need = args.connections + 1000
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, need)), hard))

work = tempfile.mkdtemp()
os.makedirs(f"{work}/www")
with open(f"{work}/www/1k.bin", "wb") as f:
    f.write(os.urandom(1024))
srv = subprocess.Popen(
    ["taskset", "-c", "0", khttpd, "--site", f"{work}/www", "--prefix", f"http://+:{args.port}/",
     "--workers", "1", "--state-dir", f"{work}/state", "--control", f"{work}/ctl.sock"],
    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (need, max(hard, need))) if hard >= need else None,
)
url = f"http://127.0.0.1:{args.port}/1k.bin"
for _ in range(100):
    try:
        socket.create_connection(("127.0.0.1", args.port), timeout=1).close()
        break
    except OSError:
        time.sleep(0.05)

def rss_kib():
    with open(f"/proc/{srv.pid}/status") as f:
        return int(re.search(r"VmRSS:\s+(\d+)", f.read()).group(1))

def wrk(duration):
    out = subprocess.run(["taskset", "-c", "1", "wrk", "-t1", "-c64", f"-d{duration}s", url],
                         capture_output=True, text=True).stdout
    m = re.search(r"Requests/sec:\s+([\d.]+)", out)
    return float(m.group(1)) if m else 0.0

REQ = f"GET /1k.bin HTTP/1.1\r\nHost: 127.0.0.1:{args.port}\r\n\r\n".encode()
try:
    base = wrk(args.duration)
    rss0 = rss_kib()
    conns = []
    for i in range(args.connections):
        s = socket.create_connection(("127.0.0.1", args.port))
        s.sendall(REQ)
        conns.append(s)
    # Read every response so that the connections are idle keep-alive ones.
    for s in conns:
        got = b""
        while b"\r\n\r\n" not in got or len(got) < got.index(b"\r\n\r\n") + 4 + 1024:
            chunk = s.recv(65536)
            if not chunk:
                raise SystemExit("a connection closed early")
            got += chunk
    time.sleep(1)
    rss1 = rss_kib()
    loaded = wrk(args.duration)
    alive = 0
    for s in conns:
        s.setblocking(False)
        try:
            alive += 1 if s.recv(1) != b"" else 0
        except BlockingIOError:
            alive += 1
    per_conn = (rss1 - rss0) * 1024 / args.connections
    print(f"idle connections: {args.connections} opened, {alive} still open after the loaded run")
    print(f"khttpd RSS: {rss0} KiB before, {rss1} KiB with them open: {per_conn:.0f} bytes per connection")
    print(f"1 KiB c=64: {base:,.0f} req/s without, {loaded:,.0f} req/s with them open ({loaded / base:.2f}x)")
    for s in conns:
        s.close()

    # System calls per hit: strace counts over a short run.
    st = subprocess.Popen(["strace", "-c", "-f", "-p", str(srv.pid), "-o", f"{work}/strace.txt"],
                          stderr=subprocess.DEVNULL)
    time.sleep(0.5)
    out = subprocess.run(["taskset", "-c", "1", "wrk", "-t1", "-c64", "-d3s", url], capture_output=True, text=True).stdout
    st.terminate()
    st.wait()
    reqs = int(re.search(r"(\d+) requests in", out).group(1))
    calls = {}
    for line in open(f"{work}/strace.txt"):
        parts = line.split()
        if len(parts) >= 5 and parts[-1].isidentifier() and parts[3].isdigit():
            calls[parts[-1]] = int(parts[3])
    shown = {k: v for k, v in calls.items() if k in ("read", "recvfrom", "writev", "write", "sendmsg", "epoll_wait", "accept4")}
    print(f"system calls per request over {reqs} requests under strace: " +
          ", ".join(f"{k} {v / reqs:.2f}" for k, v in sorted(shown.items())))
finally:
    srv.terminate()
    srv.wait()
