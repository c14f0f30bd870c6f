#!/usr/bin/env bash
# Checks dist/khttpd.service and the renewal timer with `systemd-analyze verify`, against the khttpd this tree builds
# (the unit names /usr/bin/khttpd, which is only there once installed: a copy of the unit with
# that path replaced is what is verified; its man pages are checked by dist/deb/test.sh, once the
# package installed them). Installs systemd's tools if missing.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v systemd-analyze >/dev/null || { apt-get update -qq && apt-get install -y -qq systemd >/dev/null; }
cargo build -q -p khttp-host -p khttpctl
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
for unit in khttpd.service khttp-renew.service khttp-renew.timer; do
    sed -e "s|/usr/bin/khttpd|$PWD/target/debug/khttpd|" -e "s|/usr/bin/khttpctl|$PWD/target/debug/khttpctl|" \
        "dist/$unit" > "$work/$unit"
done
out=$(cd "$work" && SYSTEMD_LOG_LEVEL=notice systemd-analyze verify --man=no khttpd.service \
    khttp-renew.service khttp-renew.timer 2>&1 || echo "FAILED: $?")
echo "$out"
if echo "$out" | grep -qiE 'FAILED|error|unknown|invalid|ignoring'; then
    echo "verify: dist's units have errors" >&2
    exit 1
fi
echo "verify: dist/khttpd.service, khttp-renew.service and khttp-renew.timer are valid (systemd $(systemd-analyze --version | head -1 | awk '{print $2}'))"
