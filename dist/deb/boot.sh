#!/usr/bin/env bash
# Boots the package's unit under systemd for real, on a machine whose PID 1 is not systemd (CI):
# systemd runs as PID 1 of a new PID and mount namespace, chrooted into an overlay of this
# machine's root filesystem, so nothing it does (tmpfiles cleaning /tmp, units it starts, the
# package it finds installed) reaches the machine itself: the overlay's upper layer is thrown
# away at the end. The network namespace is shared, so the host's curl reaches the service.
#
# Checks: the package installs into the overlay and its postinst enables khttpd.service;
# systemd starts it (Type=notify: READY=1 arrives) as a dynamic user with the unit's hardening;
# the welcome page answers on port 80; `systemctl reload` runs khttpctl apply and changes
# nothing; logrotate's postrotate reopens the log; `systemctl stop` drains and khttpd exits 0.
#
# Usage: dist/deb/boot.sh PACKAGE.deb. Needs root, unshare(1) and overlayfs. When the machine
# cannot do that (no overlayfs, no namespaces), it says so and exits 0: dist/deb/test.sh has
# already run the unit's commands by hand.
set -euo pipefail
deb=$(realpath "$1")
[ "$(id -u)" = 0 ] || { echo "boot: needs root" >&2; exit 1; }
work=$(mktemp -d /var/tmp/khttp-boot.XXXXXX)
root=$work/root
mkdir -p "$work/upper" "$work/work" "$root"
cleanup() {
    [ -n "${init:-}" ] && kill -9 "$init" 2>/dev/null || true
    sleep 0.5
    umount -l "$root" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

skip() { echo "boot: SKIP: $* (dist/deb/test.sh ran the unit's commands by hand)"; exit 0; }
mount -t overlay overlay -o "lowerdir=/,upperdir=$work/upper,workdir=$work/work" "$root" 2>/dev/null \
    || skip "this machine cannot mount an overlay of /"
# The package, installed inside the overlay only.
cp "$deb" "$root/var/tmp/khttp.deb"
chroot "$root" dpkg -i /var/tmp/khttp.deb >/dev/null 2>&1 || { echo "boot: dpkg -i failed in the overlay" >&2; exit 1; }
[ -L "$root/etc/systemd/system/multi-user.target.wants/khttpd.service" ] \
    || { echo "boot: the postinst did not enable khttpd.service" >&2; exit 1; }

in_ns() { nsenter -t "$init" -m -p chroot "$root" "$@"; }
# /run as systemd mounts it on a real machine: root's, 0755. khttpctl and applications trust
# the service's dynamic user because root made /run/khttp for it there (a tmpfs's default
# mode, 1777, would let anyone have made it: local/src/socket.rs).
unshare --pid --fork --mount --propagation private sh -c "
    mount --rbind /dev '$root/dev' && mount --rbind /sys '$root/sys' && mount -t proc proc '$root/proc'
    mount -t tmpfs -o mode=0755 tmpfs '$root/run' && mount -t tmpfs -o mode=1777 tmpfs '$root/tmp'
    exec chroot '$root' env container=khttp-boot /lib/systemd/systemd --system --unit=khttpd.service --log-target=kmsg
" > "$work/systemd.log" 2>&1 &
unshare_pid=$!
for _ in $(seq 50); do
    init=$(pgrep -P "$unshare_pid" -x systemd || true)
    [ -n "$init" ] && break
    sleep 0.1
done
[ -n "${init:-}" ] || skip "systemd did not start in a PID namespace: $(cat "$work/systemd.log")"
state=
for _ in $(seq 300); do
    state=$(in_ns systemctl is-active khttpd.service 2>/dev/null || true)
    case $state in active|failed) break ;; esac
    sleep 0.1
done
fail() {
    echo "boot: $*" >&2
    in_ns systemctl --no-pager status khttpd.service >&2 || true
    in_ns journalctl --no-pager -u khttpd.service >&2 || true
    exit 1
}
[ "$state" = active ] || fail "khttpd.service is $state, not active"
echo "boot: systemd $(in_ns systemctl --version | head -1 | awk '{print $2}') started khttpd.service: $state"
user=$(in_ns ps -o user= -C khttpd | head -1)
echo "boot: khttpd runs as $user (DynamicUser)"
[ "$user" != root ] || fail "khttpd runs as root"
curl -fsS http://127.0.0.1/ | grep -q 'Welcome to khttp' || fail "the welcome page does not answer on port 80"
in_ns systemctl reload khttpd.service || fail "systemctl reload failed"
in_ns journalctl --no-pager -u khttpd.service | grep -q 'no changes' || fail "reload changed something"
sleep 0.3
in_ns logrotate -f /etc/logrotate.d/khttpd || fail "logrotate failed"
curl -fsS -o /dev/null http://127.0.0.1/index.html
sleep 0.3
in_ns grep -q 'GET /index.html' /var/log/khttp/access.log || fail "khttpd did not reopen its log after logrotate"
# This boot's target is khttpd.service alone (--unit), so timers.target is not reached: the
# timer is checked as enabled by the postinst, then started by hand.
[ -L "$root/etc/systemd/system/timers.target.wants/khttp-renew.timer" ] \
    || fail "the postinst did not enable khttp-renew.timer"
in_ns systemctl start khttp-renew.timer || fail "khttp-renew.timer does not start"
timer=$(in_ns systemctl is-active khttp-renew.timer 2>/dev/null || true)
[ "$timer" = active ] || fail "khttp-renew.timer is $timer, not active"
in_ns systemctl start khttp-renew.service || fail "khttp-renew.service failed"
in_ns journalctl --no-pager -u khttp-renew.service | grep -q 'No certificates from ACME to renew' \
    || fail "khttp-renew.service did not run sslcert renew"
echo "boot: khttp-renew.timer is enabled and starts; khttp-renew.service ran sslcert renew (nothing to renew)"
in_ns systemctl stop khttpd.service
result=$(in_ns systemctl show -p Result --value khttpd.service)
[ "$result" = success ] || fail "khttpd stopped with result $result"
echo "boot: served the welcome page on port 80, reloaded with no changes, rotated its log, stopped cleanly"
