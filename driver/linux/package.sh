#!/usr/bin/env bash
# Makes the signed driver package on Linux, as `cargo make` makes khttp_package on Windows
# (Makefile.toml, and wdk-build 0.6.0's rust-driver-makefile.toml: stampinf, inf2cat /os:10_X64,
# signtool sign /fd SHA256 with the WDRLocalTestCert test certificate, signtool verify). Prints
# the package folder's path as its last line:
#
#   target/linux-driver/khttp_package/
#     khttp.sys              driver/linux/build.sh's khttp.sys, Authenticode-signed (SHA-256)
#     khttp.inf              inf/khttp.inx stamped (driver/linux/stampinf.sh); CatalogFile = khttp.cat
#     khttp.cat              the catalog (tools/catalog, khttp-catalog), signed likewise
#     WDRLocalTestCert.cer   the test certificate, DER, for the test machine's Root and
#                            TrustedPublisher stores (inf/install.ps1)
#
#   driver/linux/package.sh                  # builds khttp.sys first (driver/linux/build.sh)
#   driver/linux/package.sh path/khttp.sys   # packages a khttp.sys built already
#
# The test certificate (self-signed RSA 3072, code signing EKU, CN=WDRLocalTestCert, as the WDK
# flow's makecert call makes it) and its key are generated once into target/linux-driver/test-cert
# and never leave target/. The signatures carry no timestamp (as KHTTP_SIGN_OFFLINE=true on
# Windows; test signing does not need one). Then it checks: osslsigncode verifies both
# signatures against the certificate, osslsigncode finds khttp.sys's Authenticode hash in the
# signed catalog, and khttp-catalog reads the catalog back and finds both files under their
# names with their current hashes. What Windows checks beyond this: docs/driver.md, "The
# driver package, made on Linux".
#
# KHTTP_DRIVER_FEATURES (the Wine harness's injected faults): the faulty build is packaged as
# khttp.sys in khttp_package-<features>/, never in khttp_package/. Installs what it needs (apt).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
out=$root/target/linux-driver
log() { echo "package: $*" >&2; }

pkgs=(osslsigncode openssl)
# shellcheck source=../../tools/need-apt.sh
. "$root/tools/need-apt.sh"
need_apt "${pkgs[@]}"

# 1. khttp.sys.
if [ -n "${1:-}" ]; then
    sys=$1
    [ -f "$sys" ] || { log "no such file: $sys"; exit 1; }
else
    log "building khttp.sys${KHTTP_DRIVER_FEATURES:+ with $KHTTP_DRIVER_FEATURES} (driver/linux/build.sh)"
    sys=$(bash "$here/build.sh" | tail -n 1)
fi
pkg=$out/khttp_package${KHTTP_DRIVER_FEATURES:+-${KHTTP_DRIVER_FEATURES//,/-}}
rm -rf "$pkg"
mkdir -p "$pkg"
cp "$sys" "$pkg/khttp.sys"

# 2. khttp.inf (stampinf).
bash "$here/stampinf.sh" "$root/inf/khttp.inx" "$pkg/khttp.inf" khttp.cat

# 3. The test certificate (makecert -r -pe -a SHA256 -eku 1.3.6.1.5.5.7.3.3 -n CN=WDRLocalTestCert),
#    kept while it has more than 30 days left.
certs=$out/test-cert
cert=$certs/WDRLocalTestCert.pem
key=$certs/WDRLocalTestCert.key
if ! { [ -f "$cert" ] && [ -f "$key" ] && openssl x509 -in "$cert" -noout -checkend 2592000 >/dev/null; }; then
    log "generating the test certificate CN=WDRLocalTestCert in $certs"
    mkdir -p "$certs"
    (umask 077 && openssl req -x509 -newkey rsa:3072 -sha256 -nodes -days 3650 \
        -subj "/CN=WDRLocalTestCert" \
        -addext "extendedKeyUsage=codeSigning" \
        -addext "keyUsage=critical,digitalSignature" \
        -addext "basicConstraints=critical,CA:FALSE" \
        -keyout "$key" -out "$cert" 2>/dev/null)
fi
openssl x509 -in "$cert" -outform DER -out "$pkg/WDRLocalTestCert.cer"

sign() { # signtool sign /fd SHA256, without /t (no timestamp server)
    local file=$1 signed
    signed=$(mktemp "$pkg/.signing.XXXXXX")
    rm -f "$signed"
    if ! osslsigncode sign -certs "$cert" -key "$key" -h sha256 -in "$file" -out "$signed" >/dev/null; then
        rm -f "$signed"
        log "osslsigncode could not sign $file"
        exit 1
    fi
    chmod 644 "$signed"
    mv "$signed" "$file"
}

# 4. Sign khttp.sys. Its Authenticode hash leaves out the checksum and the certificate table, so
#    the catalog lists the same hash for it before and after (inf2cat runs before signtool on
#    Windows; here the catalog is made from the signed file, which the check below then reads).
sign "$pkg/khttp.sys"

# 5. khttp.cat (inf2cat), then sign it.
tdir=${CARGO_TARGET_DIR:-target}
case $tdir in /*) ;; *) tdir=$root/$tdir ;; esac
(cd "$root" && cargo build -q --locked -p khttp-catalog)
catalog=$tdir/debug/khttp-catalog
"$catalog" write "$pkg/khttp.cat" "$pkg/khttp.inf" "$pkg/khttp.sys" | sed 's/^/package: catalog: /' >&2
sign "$pkg/khttp.cat"

# 6. Verify (signtool verify): both signatures, khttp.sys's membership, both members' hashes.
verify() { # label, osslsigncode verify arguments
    local label=$1 result
    shift
    if ! result=$(osslsigncode verify -CAfile "$cert" "$@" 2>&1); then
        echo "$result" >&2
        log "$label: verification FAILED"
        exit 1
    fi
    echo "$result" | grep -E '^(Message digest algorithm|Current message digest|Calculated message digest|Signature verification|Catalog verification|Number of verified signatures|Succeeded)' |
        sed "s/^/$label: /"
}
verify "khttp.sys" -in "$pkg/khttp.sys"
verify "khttp.cat" -in "$pkg/khttp.cat"
help=$(osslsigncode -h 2>&1 || true)
if [[ $help == *"-catalog"* ]]; then
    verify "khttp.sys in khttp.cat" -catalog "$pkg/khttp.cat" -in "$pkg/khttp.sys"
else
    log "this osslsigncode has no verify -catalog; khttp-catalog's check below stands alone"
fi
"$catalog" verify "$pkg/khttp.cat" "$pkg/khttp.inf" "$pkg/khttp.sys" | sed 's/^/khttp-catalog: /'
echo "$pkg"
