#!/usr/bin/env bash
# ACME against Pebble (issue #24): `khttpctl sslcert acme` gets a certificate for a name from
# Pebble, Let's Encrypt's test ACME server, answering http-01 from khttpd's own cache; curl
# then trusts it through Pebble's root; the challenge's entries and reservation are gone;
# `sslcert renew` leaves a certificate that is not due and renews one that is. Pebble resolves
# every name to 127.0.0.1 through pebble-challtestsrv's DNS. Installs pebble when missing.
#
#   bash tests/tls/acme.sh [KHTTPD KHTTPCTL]   # default: target/debug/khttpd, target/debug/khttpctl
set -euo pipefail
cd "$(dirname "$0")/../.."
khttpd=${1:-target/debug/khttpd}
khttpctl=${2:-target/debug/khttpctl}
[ -x "$khttpd" ] && [ -x "$khttpctl" ] || cargo build -q -p khttp-host -p khttpctl
command -v pebble >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq pebble >/dev/null; }

work=$(mktemp -d)
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT
fail() { echo "FAIL: $*" >&2; for f in "$work"/*.log; do echo "--- $f" >&2; tail -20 "$f" >&2; done; exit 1; }
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
ctl() { "$khttpctl" --endpoint "unix:$work/ctl.sock" "$@"; }

# Pebble's own HTTPS: a test CA, and a certificate from it for 127.0.0.1.
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj /CN=pebble-test-ca \
    -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign \
    -keyout "$work/test-ca.key" -out "$work/test-ca.pem" 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj /CN=localhost \
    -keyout "$work/pebble.key" -out "$work/pebble.csr" 2>/dev/null
printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n' > "$work/ext"
openssl x509 -req -in "$work/pebble.csr" -CA "$work/test-ca.pem" -CAkey "$work/test-ca.key" -set_serial 1 \
    -days 2 -extfile "$work/ext" -out "$work/pebble.pem" 2>/dev/null

acme_port=$(free_port); mgmt_port=$(free_port); dns_port=$(free_port); cts_port=$(free_port)
http_port=$(free_port); https_port=$(free_port)
cat > "$work/pebble.json" <<JSON
{"pebble": {"listenAddress": "127.0.0.1:$acme_port", "managementListenAddress": "127.0.0.1:$mgmt_port",
  "certificate": "$work/pebble.pem", "privateKey": "$work/pebble.key",
  "httpPort": $http_port, "tlsPort": $(free_port), "ocspResponderURL": "",
  "externalAccountBindingRequired": false}}
JSON
# Every name is 127.0.0.1 (no AAAA, so that Pebble does not try ::1 first).
pebble-challtestsrv -management "127.0.0.1:$cts_port" -dns01 "127.0.0.1:$dns_port" -http01 "" -https01 "" \
    -tlsalpn01 "" -defaultIPv4 127.0.0.1 -defaultIPv6 "" > "$work/challtestsrv.log" 2>&1 &
pids+=($!)
PEBBLE_VA_NOSLEEP=1 PEBBLE_WFE_NONCEREJECT=0 PEBBLE_AUTHZREUSE=0 \
    pebble -config "$work/pebble.json" -dnsserver "127.0.0.1:$dns_port" > "$work/pebble.log" 2>&1 &
pids+=($!)
"$khttpd" --state-dir "$work/state" --control "$work/ctl.sock" --workers 1 > "$work/khttpd.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do
    curl -sf --cacert "$work/test-ca.pem" -o /dev/null "https://127.0.0.1:$acme_port/dir" && [ -S "$work/ctl.sock" ] && break
    sleep 0.1
done
curl -sf --cacert "$work/test-ca.pem" -o /dev/null "https://127.0.0.1:$acme_port/dir" || fail "pebble did not start"

name=acme.khttp.test
binding="hostnameport=$name:$https_port"
ctl urlacl add "https://+:$https_port/" >/dev/null
ctl cache put "https://+:$https_port/hello.txt" examples/site/hello.txt >/dev/null
acme=(--directory "https://127.0.0.1:$acme_port/dir" --email ops@khttp.test --http-port "$http_port"
      --acme-root "$work/test-ca.pem" --acme-dir "$work/acme")
out=$(ctl sslcert acme "$binding" "${acme[@]}" 2>&1) || fail "sslcert acme: $out"
echo "ok: $out"

curl -sf --cacert "$work/test-ca.pem" "https://127.0.0.1:$mgmt_port/roots/0" > "$work/pebble-root.pem"
body=$(curl -sS --resolve "$name:$https_port:127.0.0.1" --cacert "$work/pebble-root.pem" \
    "https://$name:$https_port/hello.txt") || fail "curl does not trust the certificate from Pebble"
[ "$body" = "$(cat examples/site/hello.txt)" ] || fail "the body: $body"
echo "ok: curl trusts https://$name:$https_port/ through Pebble's root"

ctl urlacl show | grep -q acme-challenge && fail "the challenge's reservation is left"
ctl cache show | grep -q acme-challenge && fail "the challenge's entries are left"
echo "ok: the challenge's entries and reservation are gone"
mode=$(stat -c %a "$work/acme"/account-*.json)
[ "$mode" = 600 ] || fail "the account key's file has mode $mode"
echo "ok: the account key is kept mode 600"

before=$(ctl sslcert show --json | python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["sha256"])')
out=$(ctl sslcert renew --acme-dir "$work/acme")
echo "$out" | grep -q "$binding: not due" || fail "renew of a certificate not due: $out"
out=$(ctl sslcert renew --days 100000 --acme-dir "$work/acme")
echo "$out" | grep -q "$binding: renewed" || fail "renew of a certificate due: $out"
after=$(ctl sslcert show --json | python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["sha256"])')
[ "$before" != "$after" ] || fail "renew left the same certificate"
curl -sf --resolve "$name:$https_port:127.0.0.1" --cacert "$work/pebble-root.pem" -o /dev/null \
    "https://$name:$https_port/hello.txt" || fail "curl after the renewal"
echo "ok: sslcert renew leaves a certificate not due, and renews one that is (same account)"
