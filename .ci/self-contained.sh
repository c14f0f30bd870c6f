#!/usr/bin/env bash
# Fails when a tracked file cites a document kept outside the repository, which a fresh clone
# does not have. Cite a primary source instead (an RFC section, a Microsoft Learn page), or the
# repository's own restatement: docs/driver-facts.md, docs/http-semantics.md,
# docs/ARCHITECTURE.md, or the module that holds the rule.
set -euo pipefail
cd "$(dirname "$0")/.."

# The patterns are assembled from pieces so that this file does not match them itself.
design=DES
design+=IGN
notes=NOTES
reference=REFERENCE
patterns=(
    "${design}\\.md"
    "${design} §"
    "DRIVER-${notes}"
    "HTTPSYS-${reference}"
    "\\.\\./sha""red/"
)
args=()
for p in "${patterns[@]}"; do
    args+=(-e "$p")
done

self=.ci/self-contained.sh
files=()
while IFS= read -r -d '' f; do
    # Tracked but deleted in the work tree (or a submodule): nothing to read.
    [[ -f $f ]] && files+=("$f")
done < <(git ls-files -z -- . ":(exclude)$self")

set +e
hits=$(grep -nIE "${args[@]}" -- "${files[@]}")
rc=$?
set -e
case $rc in
    0)
        echo "These lines cite documents that are not in the repository:"
        echo "$hits"
        echo "Cite a primary source or a repository document instead (see $self)."
        exit 1
        ;;
    1)
        echo "self-contained: ${#files[@]} tracked files, none cites a document outside the repository"
        ;;
    *)
        echo "self-contained: grep failed (exit $rc)" >&2
        exit 2
        ;;
esac
