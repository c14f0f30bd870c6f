#!/bin/sh
# TEST HARNESS ONLY: khttpctl.exe under Wine, as the black-box suite's KHTTPCTL_BIN.
# Unix paths in arguments resolve through Wine's Z: drive (the current directory is on it).
WINEDEBUG=-all exec wine "${KHTTP_WINE_CTL:?KHTTP_WINE_CTL names khttpctl.exe}" "$@"
