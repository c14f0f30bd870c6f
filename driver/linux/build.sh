#!/usr/bin/env bash
# Builds khttp.sys on Debian 12 from the real wdk, wdk-sys, wdk-alloc and wdk-panic crates,
# against a WDK-shaped include tree made of mingw-w64's DDK headers plus khttp's own KMDF header
# (driver/linux/include), linked by lld-link into a PE32+ native driver. Prints the path of
# khttp.sys as its last line.
#
#   driver/linux/build.sh            # build
#   driver/linux/build.sh --clippy   # also clippy -D warnings on the driver, real bindings
#
# What it proves: the driver compiles and links against bindings generated from real headers by
# the real crates. What it does not: the WDK build on Windows, signing, or loading on Windows.
# Installs what it needs with apt. Works in target/linux-driver/ and changes nothing else: the
# workspace is copied there with wdk-build 0.6.0 patched for a Linux host
# (wdk-build-0.6.0-linux.patch), which is the only third-party change kept in the repository.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
out=$root/target/linux-driver
clippy=0
[ "${1:-}" = "--clippy" ] && clippy=1
LLVM=22
SDK=10.0.22621.0
MINGW=/usr/x86_64-w64-mingw32
log() { echo "linux-driver: $*" >&2; }

# 1. Packages: LLVM 22 (the LLVM of Debian's rustc-web 1.96), Debian's Rust with its sources
#    (build-std), mingw-w64's headers and import libraries.
pkgs=(clang-$LLVM lld-$LLVM libclang-$LLVM-dev llvm-$LLVM rustc-web cargo-web rust-web-src
      rust-web-clippy mingw-w64-x86-64-dev mingw-w64-common patch)
# shellcheck source=../../tools/need-apt.sh
. "$root/tools/need-apt.sh"
need_apt "${pkgs[@]}"

# 2. The WDK-shaped tree (WDF-FACTS.md §5.1).
wdk=$out/wdk
rm -rf "$wdk"
inc=$wdk/Include/$SDK
mkdir -p "$inc/km/ufx/1.1" "$inc/shared" "$wdk/Include/wdf/kmdf/1.33" \
    "$wdk/Lib/$SDK/km/x64" "$wdk/Lib/wdf/kmdf/x64/1.33"
ln -s "$MINGW/include" "$inc/km/crt"
for h in "$MINGW"/include/ddk/*.h; do ln -s "$h" "$inc/km/"; done
# ntstrsafe.h is the last base header wdk-build includes: ours includes mingw's, then what
# mingw lacks.
rm "$inc/km/ntstrsafe.h"
printf '#include "%s"\n#include "%s"\n' "$MINGW/include/ddk/ntstrsafe.h" \
    "$here/include/khttp-kcompat.h" > "$inc/km/ntstrsafe.h"
# Files keep their times (cp -p, touch -r), so that an unchanged tree rebuilds nothing.
touch -r "$here/include/khttp-kcompat.h" "$inc/km/ntstrsafe.h"
cp -p "$here/include/wdf.h" "$wdk/Include/wdf/kmdf/1.33/wdf.h"
# wdk-macros caches what it learns of wdf.h and never invalidates it (WDF-FACTS §5.5): drop the
# cache when our wdf.h is newer, so that a function added to the header is found.
for cache in "$out"/target/*/build/scratch-*/out/wdk_macros_ast_fragments/cached_function_info_map.json \
    "$out"/target/*/*/build/scratch-*/out/wdk_macros_ast_fragments/cached_function_info_map.json; do
    if [ -f "$cache" ] && [ "$here/include/wdf.h" -nt "$cache" ]; then rm -f "$cache"; fi
done
# Our wsk.h, where the WDK keeps its own: only the wsk-layout-check build reads it (issue #9,
# finding 9; the comparison that counts is the Windows CI job's, against the real one).
cp -p "$here/include/wsk.h" "$inc/km/wsk.h"

# 3. Libraries: mingw's import libraries under the names wdk-build links, import libraries for
#    what mingw lacks, and the KMDF entry stub (WDF-FACTS.md §4, §5.1).
lib=$wdk/Lib/$SDK/km/x64
wdflib=$wdk/Lib/wdf/kmdf/x64/1.33
cat > "$out/ntoskrnl-extra.def" <<'DEF'
LIBRARY ntoskrnl.exe
EXPORTS
    ExAllocatePool2
    KeQueryInterruptTimePrecise
    KeQuerySystemTimePrecise
    __chkstk
DEF
llvm-dlltool-$LLVM -m i386:x86-64 -d "$out/ntoskrnl-extra.def" -l "$out/ntoskrnl-extra.lib"
llvm-lib-$LLVM /out:"$lib/ntoskrnl.lib" "$MINGW/lib/libntoskrnl.a" "$out/ntoskrnl-extra.lib"
cp "$MINGW/lib/libhal.a" "$lib/hal.lib"
cp "$MINGW/lib/libwmilib.a" "$lib/wmilib.lib"
cp "$MINGW/lib/libnetio.a" "$lib/netio.lib"
# CNG in kernel mode (the WDK's Cng.lib): the driver's random numbers (driver/src/random.rs).
printf 'LIBRARY cng.sys\nEXPORTS\n    BCryptOpenAlgorithmProvider\n    BCryptGenRandom\n    BCryptCloseAlgorithmProvider\n' > "$out/cng.def"
llvm-dlltool-$LLVM -m i386:x86-64 -d "$out/cng.def" -l "$lib/cng.lib"
printf 'LIBRARY WdfLdr.sys\nEXPORTS\n    WdfVersionBind\n    WdfVersionUnbind\n' > "$out/WdfLdr.def"
llvm-dlltool-$LLVM -m i386:x86-64 -d "$out/WdfLdr.def" -l "$wdflib/WdfLdr.lib"
# Rust code has no /GS cookies: an empty library stands for BufferOverflowFastFailK.lib.
echo 'static int khttp_unused;' > "$out/empty.c"
# mingw's headers under clang in MSVC mode (issue #9's facts): __GNUC__, or mingw blanks its
# __attribute__s; no x86intrin.h (its AMX types defeat bindgen's layout tests).
gnu_flags="-fgnuc-version=4.2.1 -D__X86INTRIN_H"
cflags=(--target=x86_64-pc-windows-msvc /c /GS- /Zl /kernel /O2 /clang:-fgnuc-version=4.2.1
        -D__X86INTRIN_H -D_AMD64_ -DAMD64 -D_WIN64 -Wno-pragma-pack
        -Wno-incompatible-library-redeclaration -Wno-#warnings
        -D_KERNEL_MODE -DKMDF_VERSION_MAJOR=1 -DKMDF_VERSION_MINOR=33
        -I "$inc/km/crt" -I "$inc/km" -I "$wdk/Include/wdf/kmdf/1.33")
clang-cl-$LLVM "${cflags[@]}" /Fo"$out/empty.obj" -- "$out/empty.c"
llvm-lib-$LLVM /out:"$lib/BufferOverflowFastFailK.lib" "$out/empty.obj"
clang-cl-$LLVM "${cflags[@]}" /Fo"$out/fxstub.obj" -- "$here/stub/fxstub.c"
llvm-lib-$LLVM /out:"$wdflib/WdfDriverEntry.lib" "$out/fxstub.obj"

# 4. A build-only copy of the workspace, with wdk-build patched for a Linux host. Copies keep
#    their files' times (cp -a), and the patched wdk-build is made again only when the patch
#    changes, so that cargo rebuilds only what changed (the Wine harness builds many times).
ws=$out/ws
rm -rf "$ws"
mkdir -p "$ws"
cp -a "$root"/Cargo.toml "$root"/Cargo.lock "$root"/clippy.toml "$root"/engine "$root"/crypto "$root"/proto "$root"/driver "$ws/"
rm -rf "$ws/driver/linux"
# On an empty cargo home nothing matches: `ls` fails, which `pipefail` must not take for the
# script's failure, so that the fetch below runs.
reg=$({ ls -d "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/wdk-build-0.6.0 2>/dev/null || true; } | head -1)
if [ -z "$reg" ]; then
    (cd "$root" && cargo fetch -q)
    reg=$(ls -d "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/wdk-build-0.6.0 | head -1)
fi
# The stamp names the patch and the headers bindgen reads (driver/linux/include): a change to
# either makes wdk-build again, and so the bindings.
stamp="$(cat "$here/wdk-build-0.6.0-linux.patch" "$here"/include/* | sha256sum | cut -d' ' -f1) $reg"
if [ "$(cat "$out/wdk-build-0.6.0/.khttp-patched" 2>/dev/null)" != "$stamp" ]; then
    rm -rf "$out/wdk-build-0.6.0"
    cp -a "$reg" "$out/wdk-build-0.6.0"
    patch -d "$out/wdk-build-0.6.0" -p1 -s < "$here/wdk-build-0.6.0-linux.patch"
    echo "$stamp" > "$out/wdk-build-0.6.0/.khttp-patched"
fi
sed -i 's/^members = .*/members = ["engine", "crypto", "proto", "driver", "driver\/wsk"]/; s/^default-members = .*/default-members = ["driver"]/' "$ws/Cargo.toml"
cat >> "$ws/Cargo.toml" <<TOML

[patch.crates-io]
wdk-build = { path = "$out/wdk-build-0.6.0" }

TOML
mkdir -p "$ws/.cargo"
# The kernel's SIMD rule (Microsoft Learn, "Using Floating Point in a WDM Driver" and "Using
# extended processor features in Windows drivers"): x64 kernel code may use SSE, whose state
# the compiler saves, but AVX only between KeSaveExtendedProcessorState and its restore, and
# RustCrypto's crates choose AVX at run time when the CPU has it (the kernel enables it). So the
# driver's crypto (crypto/, khttp-crypto) is built with the backends that need no AVX: ChaCha20
# on SSE2, and AES, POLYVAL (GHASH), Poly1305 and SHA-512 in portable constant-time Rust.
# Step 6 checks the result for AVX instructions.
kernel_simd=(--cfg 'aes_backend="soft"' --cfg 'polyval_backend="soft"' --cfg 'chacha20_backend="sse2"'
             --cfg 'poly1305_backend="soft"' --cfg 'sha2_512_backend="soft"'
             --cfg 'curve25519_dalek_backend="serial"')
flags='"-C", "target-feature=+crt-static"'
for f in "${kernel_simd[@]}"; do flags+=", \"${f//\"/\\\"}\""; done
cat > "$ws/.cargo/config.toml" <<TOML
[target.x86_64-pc-windows-msvc]
linker = "lld-link-$LLVM"
rustflags = [$flags]
TOML

# 5. Build with Debian's Rust (build-std needs its sources) and LLVM 22.
# /usr/bin first: Debian's cargo-clippy and clippy-driver, not a rustup proxy.
export PATH=/usr/bin:/usr/lib/llvm-$LLVM/bin:$PATH
export RUSTC=/usr/bin/rustc RUSTC_BOOTSTRAP=1
export WDKContentRoot=$wdk Version_Number=$SDK
export LIBCLANG_PATH=/usr/lib/llvm-$LLVM/lib
export CC_x86_64_pc_windows_msvc=clang-cl-$LLVM AR_x86_64_pc_windows_msvc=llvm-lib-$LLVM
# The same for bindgen (with clang 22's own resource directory) and for wdk-sys's wdf.c.
export BINDGEN_EXTRA_CLANG_ARGS_x86_64_pc_windows_msvc="$gnu_flags -resource-dir $(clang-$LLVM -print-resource-dir)"
export CFLAGS_x86_64_pc_windows_msvc="/clang:-fgnuc-version=4.2.1 -D__X86INTRIN_H"
export CARGO_TARGET_DIR=$out/target
cargo_args=(-Zbuild-std=core,alloc --target x86_64-pc-windows-msvc --release -p khttp)
# KHTTP_DRIVER_FEATURES: extra features, for the Wine harness's injected faults only; such a
# build is written to khttp-<features>.sys, never to khttp.sys.
name=khttp.sys
if [ -n "${KHTTP_DRIVER_FEATURES:-}" ]; then
    cargo_args+=(--features "$KHTTP_DRIVER_FEATURES")
    name=khttp-${KHTTP_DRIVER_FEATURES//,/-}.sys
fi
(cd "$ws" && /usr/bin/cargo build "${cargo_args[@]}")
if [ "$clippy" = 1 ]; then
    (cd "$ws" && /usr/bin/cargo clippy "${cargo_args[@]}" -- -D warnings)
fi
dll=$CARGO_TARGET_DIR/x86_64-pc-windows-msvc/release/khttp.dll
cp "$dll" "$out/$name"

# 6. The driver's crypto provider (khttp-crypto, issue #25), built for the kernel target with
#    the driver's flags, and checked: no AVX instruction (a VEX- or EVEX-encoded one, which
#    disassembles with a `v` mnemonic, or any ymm/zmm register) in it or in the crates it uses.
#    Built without LTO, in a directory of its own, so that its libraries hold machine code to
#    read (with LTO they hold only LLVM bitcode).
#    The driver's extra features (the Wine harness's faults, the layout check) do not change it:
#    it is built and checked once, by the plain build.
if [ -z "${KHTTP_DRIVER_FEATURES:-}" ]; then
    crypto_args=(-Zbuild-std=core,alloc --target x86_64-pc-windows-msvc --release -p khttp-crypto
                 --config profile.release.lto=false)
    (cd "$ws" && CARGO_TARGET_DIR=$out/target-crypto /usr/bin/cargo build "${crypto_args[@]}")
    if [ "$clippy" = 1 ]; then
        (cd "$ws" && CARGO_TARGET_DIR=$out/target-crypto /usr/bin/cargo clippy "${crypto_args[@]}" -- -D warnings)
    fi
    deps=$out/target-crypto/x86_64-pc-windows-msvc/release/deps
    avx=0
    for crate in khttp_crypto aes aes_gcm ghash polyval chacha20 chacha20poly1305 poly1305 sha2 hmac \
            p256 p384 primefield primeorder elliptic_curve ecdsa crypto_bigint x25519_dalek curve25519_dalek; do
        for rlib in "$deps"/lib"$crate"-*.rlib; do
            [ -f "$rlib" ] || continue
            n=$(llvm-objdump-$LLVM -d "$rlib" 2>/dev/null | grep -cE '^\s+[0-9a-f]+:\s.*\s(v[a-z0-9]+)\s|%[yz]mm' || true)
            if [ "$n" != 0 ]; then
                log "$(basename "$rlib"): $n AVX instructions, which the kernel cannot run without saving its state"
                avx=1
            fi
        done
    done
    [ "$avx" = 0 ] || exit 1
    log "khttp-crypto for the kernel: no AVX instruction in it or its crates"
fi
echo "$out/$name"
