#!/bin/sh
# TEST HARNESS ONLY: queue-probe.exe under Wine (tests/wine/probe), the black-box suite's
# KHTTP_TEST_QUEUE_PROBE. `--limited` first: as a process that is not an administrator's
# (limited.exe, as wine-limited.sh). `exec`, so that the test's kill reaches Wine's process.
if [ "${1:-}" = "--limited" ]; then
    shift
    WINEDEBUG=-all exec wine 'C:\khttp-pkg\limited.exe' 'C:\khttp-pkg\queue-probe.exe' "$@"
fi
WINEDEBUG=-all exec wine 'C:\khttp-pkg\queue-probe.exe' "$@"
