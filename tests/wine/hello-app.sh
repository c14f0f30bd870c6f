#!/bin/sh
# TEST HARNESS ONLY: hello-app.exe under Wine, as the black-box suite's HELLO_APP_BIN: the
# example application attached through the driver's application device. `exec`, so that the
# test's kill reaches the Windows process itself (Wine runs it in this Unix process), whose
# handle the driver then sees closed.
app="${KHTTP_WINE_APP:?KHTTP_WINE_APP names hello-app.exe}"
export KHTTP_APP_ENDPOINT='device:\\.\KHttpApp'
WINEDEBUG=-all exec wine "$app" "$@"
