#!/usr/bin/env bash
# Checks the driver's unsafe code shape (issue #11, item 8): every `unsafe fn` carries a
# `# Safety` section in its documentation, and `unsafe_code` is allowed module by module (in
# the modules that call the kernel), never for the whole crate from lib.rs.
set -euo pipefail
cd "$(dirname "$0")/../src"
status=0
if grep -n 'allow(' lib.rs | grep -q unsafe_code; then
    echo "check-unsafe: lib.rs allows unsafe_code for the whole crate" >&2
    status=1
fi
missing=$(find . -name '*.rs' -print0 | sort -z | xargs -0 awk '
    FNR == 1 { doc = "" }
    /^[[:space:]]*(\/\/\/|#\[)/ { doc = doc $0 "\n"; next }
    /^[[:space:]]*(pub(\((crate|super)\))? )?unsafe (extern "[^"]+" )?fn / {
        if (doc !~ /# Safety/) { printf "%s:%d: %s\n", FILENAME, FNR, $0 }
    }
    { doc = "" }
')
if [ -n "$missing" ]; then
    echo "check-unsafe: unsafe fns without a # Safety section:" >&2
    echo "$missing" >&2
    status=1
fi
modules=$(grep -l 'allow(unsafe_code\|^    unsafe_code,' $(find . -name '*.rs') | sort | tr '\n' ' ')
echo "check-unsafe: every unsafe fn documents its # Safety; unsafe_code allowed in: $modules"
exit "$status"
