#!/usr/bin/env bash
# HTTPS as browsers and scanners see it (issue #24): khttpd --site examples/site --https, then
#   - Chromium (headless) loads the site from the local CA it was told to trust (an NSS
#     database with the CA, as `certutil -A -t C,,` adds it), and refuses it without;
#   - testssl.sh finds no medium, high or critical issue: SSLv2, SSLv3, TLS 1.0 and 1.1 not
#     offered, TLS 1.2 and 1.3 offered, the chain trusted, no known vulnerability. The one
#     finding allowed is cert_revocation: a local CA's certificates name no CRL or OCSP URI.
# Installs chromium, libnss3-tools and testssl.sh when missing (Debian).
#
#   bash tests/tls/clients.sh [KHTTPD]     # default: target/debug/khttpd (cargo build first)
set -euo pipefail
cd "$(dirname "$0")/../.."
khttpd=${1:-target/debug/khttpd}
[ -x "$khttpd" ] || cargo build -q -p khttp-host
need=()
command -v chromium >/dev/null || need+=(chromium)
command -v certutil >/dev/null || need+=(libnss3-tools)
command -v testssl >/dev/null || need+=(testssl.sh)
if [ ${#need[@]} -gt 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi

work=$(mktemp -d)
pid=
cleanup() {
    [ -n "$pid" ] && kill "$pid" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }

port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
"$khttpd" --site examples/site --https --prefix "https://+:$port/" --workers 1 \
    --state-dir "$work/state" --control "$work/ctl.sock" > "$work/khttpd.log" 2>&1 &
pid=$!
for _ in $(seq 100); do
    grep -q "https on port" "$work/khttpd.log" 2>/dev/null && break
    sleep 0.1
done
ca="$work/state/ca/ca.pem"
[ -f "$ca" ] || fail "khttpd did not start: $(cat "$work/khttpd.log")"

# Chromium, with a profile of its own and an NSS database that trusts the CA.
chrome() {
    HOME="$1" timeout 60 chromium --headless=new --no-sandbox --disable-gpu --no-first-run \
        --user-data-dir="$1/profile" --dump-dom "https://localhost:$port/" 2>/dev/null || true
}
mkdir -p "$work/trusting/.pki/nssdb" "$work/untrusting/.pki/nssdb"
certutil -d "sql:$work/trusting/.pki/nssdb" -N --empty-password
certutil -d "sql:$work/trusting/.pki/nssdb" -A -t "C,," -n "khttp local CA" -i "$ca"
page=$(chrome "$work/trusting")
echo "$page" | grep -q "<title>khttp</title>" || fail "Chromium did not load the site: $page"
echo "ok: Chromium loads https://localhost:$port/ from the local CA it trusts"
page=$(chrome "$work/untrusting")
echo "$page" | grep -q "<title>khttp</title>" && fail "Chromium loaded the site without trusting the CA"
echo "ok: Chromium refuses it without the CA"

# testssl.sh: protocols, server defaults, forward secrecy, vulnerabilities, server preference.
testssl --quiet --color 0 --warnings off --add-ca "$ca" -p -s -f -U -S \
    --jsonfile "$work/testssl.json" "https://localhost:$port/" > "$work/testssl.txt" 2>&1 || true
[ -s "$work/testssl.json" ] || fail "testssl.sh wrote nothing: $(tail -5 "$work/testssl.txt")"
python3 - "$work/testssl.json" <<'PY'
import json, sys
findings = json.load(open(sys.argv[1]))
by_id = {f["id"]: f for f in findings}
bad = [f for f in findings
       if f["severity"] in ("MEDIUM", "HIGH", "CRITICAL") and f["id"] != "cert_revocation"]
for f in bad:
    print(f"FAIL: testssl.sh {f['id']} {f['severity']}: {f['finding']}", file=sys.stderr)
want = {"SSLv2": "not offered", "SSLv3": "not offered", "TLS1": "not offered",
        "TLS1_1": "not offered", "TLS1_2": "offered", "TLS1_3": "offered",
        "cert_chain_of_trust": "passed"}
for k, v in want.items():
    got = by_id.get(k, {}).get("finding", "(missing)")
    if not got.startswith(v):
        bad.append(k)
        print(f"FAIL: testssl.sh {k}: {got!r}, want {v!r}", file=sys.stderr)
if bad:
    sys.exit(1)
print(f"ok: testssl.sh, {len(findings)} findings, none medium or worse but cert_revocation (a local CA)")
PY
kill "$pid"
wait "$pid" || fail "khttpd did not stop cleanly"
pid=
echo "ok: khttpd stopped cleanly"
