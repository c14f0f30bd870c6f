#!/usr/bin/env bash
# TEST HARNESS ONLY. Builds what tests/wine/run.sh runs, into target/wine/bin:
#   khttp.sys             the driver (driver/linux/build.sh), from the signed package
#                         (driver/linux/package.sh): Authenticode-signed, otherwise unchanged;
#   netio.sys             the WSK provider stand-in (Rust, tests/wine/netio);
#   WdfLdr.sys            the KMDF loader stand-in (C, tests/wine/wdfldr);
#   bcryptprimitives.dll  ProcessPrng for Rust's std on Wine 8.0 (C);
#   khttpctl.exe          the admin CLI, built for x86_64-pc-windows-gnu;
#   hello-app.exe         the example application (request queues, \\.\KHttpApp), likewise;
#   khttp-proxy.exe       khttp in front of an HTTP upstream, likewise;
#   limited.exe           runs a program as a non-administrator (C, tests/wine/limited);
#   queue-probe.exe       one overlapped handle on two queues (Rust, tests/wine/probe);
#   khttp.inf, khttp.cat  the package's INF (inf/khttp.inx stamped by driver/linux/stampinf.sh;
#                         CatalogFile = khttp.cat) and its signed catalog (Wine checks neither
#                         signature).
# Installs what it needs (apt, rustup targets).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
out=$root/target/wine/bin
log() { echo "wine-build: $*" >&2; }
mkdir -p "$out"

pkgs=(wine64 wine gcc-mingw-w64-x86-64-win32 clang-22 mingw-w64-x86-64-dev)
# shellcheck source=../../tools/need-apt.sh
. "$root/tools/need-apt.sh"
need_apt "${pkgs[@]}"
rustup target add x86_64-pc-windows-gnu >/dev/null 2>&1 || true

# The signed package, as it would be installed on Windows. KHTTP_DRIVER_FEATURES (run.sh
# --inject): a driver with an injected fault, packaged in its place (khttp_package-<features>).
log "the driver package${KHTTP_DRIVER_FEATURES:+ with $KHTTP_DRIVER_FEATURES} (driver/linux/package.sh)"
pkg=$(bash "$root/driver/linux/package.sh" | tail -n 1)
cp "$pkg/khttp.sys" "$pkg/khttp.inf" "$pkg/khttp.cat" "$out/"

log "netio.sys, queue-probe.exe (Rust)"
(cd "$here" && cargo build -q --release --target x86_64-pc-windows-gnu)
cp "$root/target/wine/cargo/x86_64-pc-windows-gnu/release/netio.dll" "$out/netio.sys"
cp "$root/target/wine/cargo/x86_64-pc-windows-gnu/release/queue-probe.exe" "$out/"

log "WdfLdr.sys, bcryptprimitives.dll, limited.exe (C)"
MINGW_INC=/usr/share/mingw-w64/include
clang-22 --target=x86_64-w64-mingw32 -fdeclspec -fms-extensions -O2 -Wall -Wextra -Werror \
    -Wno-unused-parameter -Wno-\#warnings -isystem "$MINGW_INC/ddk" -isystem "$MINGW_INC" \
    -I"$root/driver/linux/include" -c -o "$out/wdfldr.o" "$here/wdfldr/wdfldr.c"
x86_64-w64-mingw32-gcc -shared -o "$out/WdfLdr.sys" "$out/wdfldr.o" \
    -lhal -lntoskrnl -lkernel32 -lmsvcrt
x86_64-w64-mingw32-gcc -O2 -Wall -Werror -shared -o "$out/bcryptprimitives.dll" \
    "$here/bcryptprimitives/bcryptprimitives.c" -ladvapi32
x86_64-w64-mingw32-gcc -municode -O2 -Wall -Werror -o "$out/limited.exe" \
    "$here/limited/limited.c" -ladvapi32

log "khttpctl.exe, hello-app.exe, khttp-proxy.exe"
(cd "$root" && cargo build -q --release -p khttpctl -p hello-app -p khttp-proxy --target x86_64-pc-windows-gnu)
for exe in khttpctl hello-app khttp-proxy; do
    cp "$root/target/x86_64-pc-windows-gnu/release/$exe.exe" "$out/"
done

echo "$out"
