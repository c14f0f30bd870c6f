#!/usr/bin/env bash
# Checks a built khttp.sys (driver/linux/build.sh): a PE32+ image for the native subsystem that
# imports only from ntoskrnl.exe, NETIO.SYS, WdfLdr.sys and cng.sys, and exactly the functions listed in
# driver/linux/imports.txt, so that every new kernel API shows up in review.
#   driver/linux/check-imports.sh [PATH/TO/khttp.sys]
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
sys=${1:-$here/../../target/linux-driver/khttp.sys}
objdump=$(command -v llvm-objdump-22 || command -v llvm-objdump)
dump=$("$objdump" -p "$sys")
fail=0
grep -qE '^Magic\s+020b' <<<"$dump" || { echo "check-imports: $sys is not PE32+"; fail=1; }
grep -qE '^Subsystem\s+0+1\b' <<<"$dump" || { echo "check-imports: the subsystem is not native"; fail=1; }
got=$(awk '/DLL Name:/ { dll = $3; next }
           dll != "" && NF == 2 && $1 ~ /^[0-9]+$/ { print dll "!" $2; next }
           NF == 0 { dll = "" }' <<<"$dump" | sort -u)
bad=$(cut -d'!' -f1 <<<"$got" | sort -u | grep -vxE 'ntoskrnl\.exe|NETIO\.SYS|WdfLdr\.sys|cng\.sys' || true)
if [ -n "$bad" ]; then
    echo "check-imports: imports from other modules: $bad"
    fail=1
fi
if ! diff <(grep -v '^#' "$here/imports.txt" | sed '/^$/d' | sort -u) <(echo "$got") >/dev/null; then
    echo "check-imports: the imports differ from driver/linux/imports.txt (< listed, > imported):"
    diff <(grep -v '^#' "$here/imports.txt" | sed '/^$/d' | sort -u) <(echo "$got") | grep '^[<>]' || true
    fail=1
fi
[ "$fail" = 0 ] && echo "check-imports: $(wc -l <<<"$got") imports, all listed; native PE32+"
exit "$fail"
