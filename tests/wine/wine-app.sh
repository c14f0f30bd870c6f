#!/bin/sh
# TEST HARNESS ONLY: hello-app.exe under Wine, as the black-box suite's HELLO_APP_BIN (and, as
# wine-proxy.sh, khttp-proxy.exe as KHTTP_PROXY_BIN): an application attached through the
# driver's application device. `exec`, so that the test's kill reaches the Windows process
# itself (Wine runs it in this Unix process), whose handle the driver then sees closed.
exe=${KHTTP_WINE_EXE:-'C:\khttp-pkg\hello-app.exe'}
export KHTTP_APP_ENDPOINT='device:\\.\KHttpApp'
WINEDEBUG=-all exec wine "$exe" "$@"
