#!/usr/bin/env bash
# Sourced by the build scripts: `need_apt PKG...` installs the Debian packages not yet installed
# (quietly; the caller runs as root on a fresh Debian 12, as CI does). `log` is the caller's.
need_apt() {
    local missing=() p
    for p in "$@"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
    [ ${#missing[@]} -eq 0 ] && return 0
    if declare -F log >/dev/null; then log "installing ${missing[*]}"; fi
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
}
