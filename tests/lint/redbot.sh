#!/usr/bin/env bash
# The HTTP linter: REDbot (redbot.org's checker, installed from PyPI into target/redbot) against
# khttpd serving the example site, as `--site` serves it and as `cache load --compress gzip,br
# --immutable` serves it. Every note REDbot raises is printed; the run fails on any note of
# level BAD and on FRESHNESS_HEURISTIC (a response without an explicit freshness policy, issue
# #13). WARN notes are printed and allowed: REDbot's RANGE_CL_FULL, for one, warns when a
# range it picked at random covers a whole small body and the 206 is as long as the 200, which
# RFC 9110 §14.2 allows.
set -euo pipefail
cd "$(dirname "$0")/../.."
venv=target/redbot
if ! [ -x "$venv/bin/redbot" ]; then
    python3 -m venv "$venv" 2>/dev/null || {
        apt-get update -qq && apt-get install -y -qq python3-venv >/dev/null
        rm -rf "$venv" && python3 -m venv "$venv"
    }
    "$venv/bin/pip" install -q redbot==2.7.1
fi
cargo build -q -p khttp-host -p khttpctl

work=$(mktemp -d)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
target/debug/khttpd --state-dir "$work/state" --control "$work/ctl.sock" --workers 1 \
    --site examples/site --prefix "http://+:$port/" > "$work/out" 2>&1 &
pid=$!
trap 'kill $pid 2>/dev/null; rm -rf "$work"' EXIT
for _ in $(seq 100); do
    curl -s -o /dev/null "http://127.0.0.1:$port/" && break
    sleep 0.05
done
target/debug/khttpctl --endpoint "unix:$work/ctl.sock" cache load examples/site \
    --prefix "http://+:$port/z/" --compress gzip,br --immutable > /dev/null

failed=0
for path in / /index.html /docs/ /hello.txt /css/site.css /missing /z/ /z/css/site.css /z/hello.txt; do
    url="http://127.0.0.1:$port$path"
    "$venv/bin/redbot" -o har "$url" > "$work/har.json"
    python3 - "$url" "$work/har.json" <<'PY' || failed=1
import json, sys
url, path = sys.argv[1], sys.argv[2]
entries = json.load(open(path))["log"]["entries"]
bad = []
for e in entries:
    status = e["response"]["status"]
    notes = e.get("_red_messages", [])
    shown = [f"{n['note_id']}({n['level']})" for n in notes if n["level"] not in ("GOOD", "INFO")]
    print(f"redbot: {url} {status}: {len(notes)} notes" + (f"; {' '.join(shown)}" if shown else ""))
    bad += [n for n in notes if n["level"] == "BAD" or n["note_id"] == "FRESHNESS_HEURISTIC"]
for n in bad:
    print(f"redbot: {url}: {n['note_id']}: {n['summary']}")
sys.exit(1 if bad or not entries else 0)
PY
done
if [ "$failed" != 0 ]; then
    echo "redbot: the linter found problems (above)" >&2
    exit 1
fi
echo "redbot: no BAD note and no FRESHNESS_HEURISTIC on the example site"
