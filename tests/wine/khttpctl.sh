#!/bin/sh
# TEST HARNESS ONLY: khttpctl.exe under Wine, as the black-box suite's KHTTPCTL_BIN.
# Unix paths in arguments resolve through Wine's Z: drive (the current directory is on it).
# Under the runner's session lock (KHTTP_WINE_LOCK), so that a simulated crash never overlaps it.
ctl="${KHTTP_WINE_CTL:?KHTTP_WINE_CTL names khttpctl.exe}"
if [ -n "${KHTTP_WINE_LOCK:-}" ]; then
    WINEDEBUG=-all exec flock -s -o "$KHTTP_WINE_LOCK" wine "$ctl" "$@"
fi
WINEDEBUG=-all exec wine "$ctl" "$@"
