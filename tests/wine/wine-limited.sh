#!/bin/sh
# TEST HARNESS ONLY: hello-app.exe under Wine as a process that is not an administrator's
# (limited.exe: BUILTIN\Administrators for deny only), the black-box suite's
# KHTTP_TEST_LIMITED_APP, for the driver's URL ACL check. `exec`, as wine-app.sh: the test's
# kill ends limited.exe, whose job then ends hello-app.exe.
export KHTTP_APP_ENDPOINT='device:\\.\KHttpApp'
WINEDEBUG=-all exec wine 'C:\khttp-pkg\limited.exe' 'C:\khttp-pkg\hello-app.exe' "$@"
