#!/usr/bin/env bash
# Installs the package built by build.sh on this machine, starts khttpd as its unit does, and
# checks what a user would: the default site answers on port 80, the man pages and completions
# are there, `systemctl reload`'s command changes nothing, logrotate rotates the access log and
# khttpd writes a new one, and the package removes and purges cleanly. Needs root.
#
# First without systemd: the unit's ExecStart and ExecReload lines are run by this script, as
# root, after making the directories systemd would make (StateDirectory, RuntimeDirectory,
# LogsDirectory). Then dist/deb/boot.sh boots the unit under systemd as PID 1 of a namespace
# (CI's own PID 1 is not systemd), with its dynamic user and hardening.
set -euo pipefail
cd "$(dirname "$0")/../.."
[ "$(id -u)" = 0 ] || { echo "deb test: needs root (it installs a package)" >&2; exit 1; }
for pkg in curl logrotate lintian; do
    command -v "$pkg" >/dev/null || { apt-get update -qq && apt-get install -y -qq "$pkg" >/dev/null; }
done

deb=$(bash dist/deb/build.sh)
echo "deb test: $deb ($(du -k "$deb" | cut -f1) KiB)"
# Debian's own package checker: no error and no warning (but the archive's upload bookkeeping).
lintian --fail-on error,warning --suppress-tags initial-upload-closes-no-bugs "$deb" 2>&1 \
    | grep -v 'running with root privileges' || true
lintian --fail-on error,warning --suppress-tags initial-upload-closes-no-bugs "$deb" >/dev/null 2>&1 \
    || { echo "deb test: lintian found problems (above)" >&2; exit 1; }
dpkg-deb --info "$deb" | sed -n 's/^ *\(Depends\|Installed-Size\):/  &/p'
if dpkg -s khttp >/dev/null 2>&1; then dpkg -P khttp >/dev/null; fi
dpkg -i "$deb" >/dev/null

fail() { echo "deb test: $*" >&2; [ -f "$log" ] && tail -20 "$log" >&2; exit 1; }
log=$(mktemp)
pid=
cleanup() {
    [ -n "$pid" ] && kill "$pid" 2>/dev/null || true
    dpkg -P khttp >/dev/null 2>&1 || true
    rm -f "$log"
}
trap cleanup EXIT

for f in /usr/bin/khttpd /usr/bin/khttpctl /lib/systemd/system/khttpd.service /etc/khttp/khttp.toml \
    /lib/systemd/system/khttp-renew.service /lib/systemd/system/khttp-renew.timer \
    /etc/logrotate.d/khttpd /usr/share/khttp/site/index.html /usr/share/bash-completion/completions/khttpctl \
    /usr/share/zsh/vendor-completions/_khttpd /usr/share/fish/vendor_completions.d/khttpctl.fish; do
    [ -e "$f" ] || fail "$f is not installed"
done
zcat /usr/share/man/man8/khttpctl.8.gz | grep -q 'apply' || fail "khttpctl.8 does not describe apply"
zcat /usr/share/man/man8/khttpctl-apply.8.gz | grep -q 'prune' || fail "khttpctl-apply.8 does not describe --prune"
for page in $(zcat /usr/share/man/man8/khttpctl.8.gz | grep -o 'khttpctl\\-[a-z\\-]*' | sed 's/\\-/-/g' | sort -u); do
    [ -f "/usr/share/man/man8/$page.8.gz" ] || fail "khttpctl.8 names $page(8), which is not installed"
done
zcat /usr/share/man/man8/khttpd.8.gz | grep -q 'config' || fail "khttpd.8 does not describe --config"
grep -q 'apply' /usr/share/bash-completion/completions/khttpctl || fail "no bash completion for apply"
if command -v systemd-analyze >/dev/null; then
    # The installed unit, its binaries and its man pages (Documentation=man:...) all in place.
    out=$(SYSTEMD_LOG_LEVEL=notice systemd-analyze verify /lib/systemd/system/khttpd.service 2>&1) \
        || fail "systemd-analyze verify: $out"
fi

unit=/lib/systemd/system/khttpd.service
start=$(sed -n 's/^ExecStart=//p' "$unit")
reload=$(sed -n 's/^ExecReload=//p' "$unit")
mkdir -p /var/lib/khttp /run/khttp /var/log/khttp
$start > "$log" 2>&1 &
pid=$!
for _ in $(seq 100); do
    curl -fsS -o /dev/null http://127.0.0.1/ 2>/dev/null && break
    kill -0 "$pid" 2>/dev/null || fail "khttpd exited"
    sleep 0.1
done
page=$(curl -fsS http://127.0.0.1/) || fail "the default site does not answer on port 80"
grep -q 'Welcome to khttp' <<<"$page" || fail "the default site is not the welcome page"
curl -fsS -D - -o /dev/null http://127.0.0.1/ | grep -qi '^cache-control: max-age=60' \
    || fail "no Cache-Control on the default site"
curl -fsS --compressed -o /dev/null -w '%{size_download}\n' -H 'Accept-Encoding: br' http://127.0.0.1/index.html >/dev/null
grep -q 'changes applied' "$log" || fail "khttpd did not apply /etc/khttp/khttp.toml"
$reload | grep -q 'no changes' || fail "ExecReload (khttpctl apply) changed something on an unchanged file"

# logrotate: the old log keeps the requests so far; khttpd writes the next ones to a new file.
sleep 0.3
grep -q 'GET /' /var/log/khttp/access.log || fail "no access log lines"
logrotate -f --state "$(mktemp)" /etc/logrotate.d/khttpd
[ -s /var/log/khttp/access.log.1 ] || fail "logrotate did not rotate access.log"
for _ in $(seq 50); do [ -e /var/log/khttp/access.log ] && break; sleep 0.1; done
curl -sS -o /dev/null http://127.0.0.1/after-rotation
sleep 0.3
grep -q '/after-rotation' /var/log/khttp/access.log || fail "khttpd did not reopen its log after logrotate"
grep -q '/after-rotation' /var/log/khttp/access.log.1 && fail "a request after rotation went to the old log"

kill -TERM "$pid"
wait "$pid" || fail "khttpd did not exit 0 on SIGTERM"
pid=
dpkg -r khttp >/dev/null
[ -e /usr/bin/khttpd ] && fail "dpkg -r left /usr/bin/khttpd"
[ -e /etc/khttp/khttp.toml ] || fail "dpkg -r removed a conffile (only purge should)"
dpkg -P khttp >/dev/null
[ -e /etc/khttp/khttp.toml ] && fail "dpkg -P left /etc/khttp/khttp.toml"
[ -e /var/lib/khttp ] && fail "dpkg -P left /var/lib/khttp"
echo "deb test: installed, served the default site on port 80, reloaded with no changes, rotated its log, removed and purged"

# Then the same under systemd itself, booted in a namespace over an overlay of /.
bash dist/deb/boot.sh "$deb"
