#!/bin/sh
# TEST HARNESS ONLY: khttp-proxy.exe under Wine, as the black-box suite's KHTTP_PROXY_BIN
# (see wine-app.sh). Its upstream is a Linux server: Wine's sockets are the host's.
KHTTP_WINE_EXE='C:\khttp-pkg\khttp-proxy.exe' exec sh "$(dirname "$0")/wine-app.sh" "$@"
