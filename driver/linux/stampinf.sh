#!/usr/bin/env bash
# stampinf's job on Linux, by sed: an INX in, a stamped INF out. Used by driver/linux/package.sh
# and tests/wine/build.sh.
#
#   driver/linux/stampinf.sh <in.inx> <out.inf> [catalog.cat]
#
# The WDK flow (wdk-build's rust-driver-makefile.toml, task stampinf) runs
#   stampinf -f khttp.inf -d * -a amd64 -c khttp.cat -v * -k 1.33
# which, per Microsoft's "Stampinf command options": replaces $ARCH$ with amd64 (-a); writes
# DriverVer = <today as MM/DD/YYYY>,<the time now as hours.minutes.seconds.milliseconds> (-d *,
# -v *); writes CatalogFile = khttp.cat in [Version] (-c); and replaces $KMDFVERSION$ with 1.33
# (-k; inf/khttp.inx has none, a primitive driver has no [*.Wdf] section). Like stampinf, the
# STAMPINF_DATE and STAMPINF_VERSION environment variables, when set, give the date and the
# version; SOURCE_DATE_EPOCH, when set, gives the moment (reproducible builds).
set -euo pipefail
inx=${1:?usage: stampinf.sh <in.inx> <out.inf> [catalog.cat]}
inf=${2:?usage: stampinf.sh <in.inx> <out.inf> [catalog.cat]}
cat=${3:-khttp.cat}
if [ -n "${SOURCE_DATE_EPOCH:-}" ]; then
    now=(date -u -d "@$SOURCE_DATE_EPOCH")
else
    now=(date -u)
fi
day=${STAMPINF_DATE:-$("${now[@]}" +%m/%d/%Y)}
# hours.minutes.seconds.milliseconds, without leading zeros (each field is a 16-bit number).
version=${STAMPINF_VERSION:-$("${now[@]}" +'%-H.%-M.%-S.%N' | awk -F. '{ printf "%d.%d.%d.%d", $1, $2, $3, substr($4, 1, 3) }')}
grep -qi '^ *CatalogFile *=' "$inx" || { echo "stampinf.sh: $inx has no CatalogFile= line to stamp" >&2; exit 1; }
grep -qi '^ *DriverVer *=' "$inx" || { echo "stampinf.sh: $inx has no DriverVer= line to stamp" >&2; exit 1; }
tmp=$(mktemp "$(dirname "$inf")/.stampinf.XXXXXX")
sed -e 's/\$ARCH\$/amd64/g' -e 's/\$KMDFVERSION\$/1.33/g' \
    -e "s|^\( *\)DriverVer\( *\)=[^[:cntrl:]]*|\1DriverVer\2= $day,$version|I" \
    -e "s|^\( *\)CatalogFile\( *\)=[^[:cntrl:]]*|\1CatalogFile\2= $cat|I" "$inx" >"$tmp"
chmod 644 "$tmp"
mv "$tmp" "$inf"
