#!/usr/bin/env bash
# TEST HARNESS ONLY. Runs khttp.sys under Wine and the black-box suite against it
# (tests/wine/README.md). Exits 0 only when everything passed; the last line is
# "N passed, M failed".
#
#   tests/wine/run.sh                 # everything
#   KHTTP_WINE_SEED=123 tests/wine/run.sh   # a given completion seed (default: random, printed)
#   KHTTP_WINE_TESTS="--test http" tests/wine/run.sh   # a subset of the suite
#   tests/wine/run.sh --inject skip-linger   # a driver with a known defect: passes only when
#                                            # the run catches it (a test fails or the
#                                            # verifier reports it); one fault per class:
#                                            # skip-linger, sequential-apps, hold-uncancelable,
#                                            # lock-outside-critical-region, wait-at-dispatch,
#                                            # unchecked-alloc, plain-completion
#   tests/wine/run.sh --low-resources 20     # 20 in 1,000 of the driver's allocations fail
#                                            # (seeded): passes with no bugcheck, no leak and
#                                            # no verifier finding; suite failures are counted
#                                            # apart (the injected failures' 503s and resets)
#   tests/wine/run.sh --perturb 30           # 30% of framework points sleep 0-2 ms first
#   tests/wine/run.sh --bench                # wrk against the driver instead of the suite
#                                            # (1 KiB, c=64; a figure for Wine, not Windows)
#
# Steps: build (tests/wine/build.sh) → fresh Wine prefix → install the driver from its INF with
# setupapi's InstallHinfSection → start it (sc start) → the black-box suite (tests/, external
# mode) with khttpctl.exe under Wine → stop it (sc stop) → the verifier log must hold no FAIL and
# the unload check must say clean.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
work=$root/target/wine
bin=$work/bin
passed=0
failed=0
inject=""
bench=0
low_resources=0
perturb=0
while [ $# -gt 0 ]; do
    case $1 in
        --bench) bench=1 ;;
        --inject) inject=${2:?"--inject FAULT"}; shift ;;
        --low-resources) low_resources=${2:?"--low-resources PER-MILLE"}; shift ;;
        --perturb) perturb=${2:?"--perturb PERCENT"}; shift ;;
        *) echo "wine-run: unknown option $1" >&2; exit 2 ;;
    esac
    shift
done
if [ -n "$inject" ]; then
    export KHTTP_DRIVER_FEATURES=fault-$inject
    # The part of the suite that reaches each fault's class (tests/wine/README.md).
    case $inject in
        skip-linger) subset="--test http" ;;
        sequential-apps | hold-uncancelable | lock-outside-critical-region) subset="--test apps" ;;
        wait-at-dispatch | plain-completion) subset="--test http" ;;
        unchecked-alloc) subset="--test http"; low_resources=${low_resources/#0/20} ;;
        *) echo "wine-run: unknown fault $inject" >&2; exit 2 ;;
    esac
    KHTTP_WINE_TESTS=${KHTTP_WINE_TESTS:-$subset}
fi
ok() { passed=$((passed + 1)); echo "wine-run: PASS $*"; }
bad() { failed=$((failed + 1)); echo "wine-run: FAIL $*"; }
say() { echo "wine-run: $*"; }
finish() {
    if [ -n "$inject" ]; then
        # The run must have failed, in the suite or the verifier: that is the fault caught.
        caught=$(grep -E '^test .* FAILED$' "$work/suite.log" 2>/dev/null | sed 's/^test //; s/ \.\.\. FAILED$//')
        # These classes are the verifier's to find, each by its own finding.
        pattern=""
        case $inject in
            hold-uncancelable) pattern="not cancelable" ;;
            lock-outside-critical-region) pattern="outside a critical region" ;;
            wait-at-dispatch) pattern="at IRQL 2" ;;
            unchecked-alloc) pattern="KeBugCheckEx" ;;
            plain-completion) pattern="set with IoSetCompletionRoutine" ;;
        esac
        if [ -n "$pattern" ]; then
            caught=$(grep -h '^FAIL' "$work/verifier.log" 2>/dev/null | grep -F "$pattern" | cut -c1-140 | sort -u | head -n 2)
        fi
        if [ -n "$caught" ]; then
            echo "wine-run: injected fault '$inject' caught by: $(echo $caught)"
            echo "1 passed, 0 failed"
            exit 0
        fi
        echo "wine-run: injected fault '$inject' was NOT caught"
        echo "0 passed, 1 failed"
        exit 1
    fi
    echo "$passed passed, $failed failed"
    [ "$failed" -eq 0 ] && [ "$passed" -gt 0 ]
    exit $?
}

bash "$here/build.sh" >/dev/null || { bad "build"; finish; }
ok "build: the signed package (khttp.sys, khttp.inf, khttp.cat), netio.sys, WdfLdr.sys, bcryptprimitives.dll, khttpctl.exe"

# Wine wants an absolute prefix owned by the user running it (WINE-FACTS §8.2).
export WINEPREFIX=$work/prefix
export WINEDEBUG=-all,err+ntoskrnl,err+module,warn+debugstr
# The override must be in the environment of the session's first process (WINE-FACTS §1.6);
# it is also written to the registry below. mscoree/mshtml: no Mono or Gecko prompts.
export WINEDLLOVERRIDES="netio.sys=n;mscoree,mshtml="
harness=$WINEPREFIX/drive_c/khttp-harness
session_log=$work/session.log
seed=${KHTTP_WINE_SEED:-$(( (RANDOM << 15) | RANDOM ))}

wine() { command wine "$@"; }
quiet() { WINEDEBUG=-all command wine "$@"; }
start_session() {
    # Debian's wineserver exits (unloading the driver) when the last user process exits unless
    # it is persistent (WINE-FACTS §8.1). Its stderr, and winedevice's, go to the session log.
    wineserver -p
    wine wineboot >>"$session_log" 2>&1
}
stop_session() {
    wineserver -k 2>/dev/null || true
    wineserver -w 2>/dev/null || true
}

stop_session
rm -rf "$WINEPREFIX"
mkdir -p "$WINEPREFIX" "$work"
: >"$session_log"
say "creating the Wine prefix $WINEPREFIX"
wineserver -p
wine wineboot -i >>"$session_log" 2>&1
quiet reg add 'HKCU\Software\Wine\DllOverrides' /v netio.sys /d native /f >/dev/null
quiet reg add 'HKCU\Software\Wine\Drivers' /v Graphics /d null /f >/dev/null

# The stand-ins go where khttp.sys's imports are searched (WINE-FACTS §2.2); the ProcessPrng
# stand-in where every Rust program finds it.
drivers=$WINEPREFIX/drive_c/windows/system32/drivers
cp "$bin/netio.sys" "$bin/WdfLdr.sys" "$drivers/"
cp "$bin/bcryptprimitives.dll" "$WINEPREFIX/drive_c/windows/system32/"
mkdir -p "$harness" "$WINEPREFIX/drive_c/khttp-pkg"
cp "$bin/khttp.sys" "$bin/khttp.inf" "$bin/khttp.cat" "$bin/khttpctl.exe" "$bin/hello-app.exe" "$bin/khttp-proxy.exe" \
    "$bin/limited.exe" "$bin/queue-probe.exe" "$WINEPREFIX/drive_c/khttp-pkg/"
printf 'seed=%s\ninline=50\nfail-permille=%s\nperturb=%s\n' "$seed" "$low_resources" "$perturb" >"$harness/config"
say "completion seed $seed (KHTTP_WINE_SEED=$seed reproduces the inline/async choices)"
[ "$low_resources" != 0 ] && say "low resources: $low_resources in 1,000 of the driver's allocations fail (seed $seed)"
[ "$perturb" != 0 ] && say "schedule perturbation: $perturb% of framework points delayed (seed $seed)"

# install.ps1's path, as far as Wine allows (WINE-FACTS §5.4): certutil (a stub in Wine; no
# signature checks to satisfy) and pnputil (absent) cannot run. setupapi's InstallHinfSection
# does what pnputil /install does for this primitive driver: CopyFiles, AddService and the
# service's AddReg (the Parameters key).
say "installing from khttp.inf: InstallHinfSection DefaultInstall (pnputil and certutil cannot run under Wine)"
quiet rundll32 setupapi.dll,InstallHinfSection DefaultInstall 128 'C:\khttp-pkg\khttp.inf'
if quiet reg query 'HKLM\System\CurrentControlSet\Services\khttp\Parameters' >/dev/null 2>&1 &&
    [ -f "$WINEPREFIX/drive_c/windows/system32/unknown/khttp.sys" ]; then
    ok "install: service key, Parameters key and the copied khttp.sys (DIRID 13 is system32\\unknown in Wine)"
else
    bad "install from the INF"
    finish
fi
# services.exe reads services at start-up: restart the session, as a reboot would.
stop_session
start_session

driver_state() { quiet sc query khttp | sed -n 's/.*STATE *: *[0-9]* *\([A-Z_]*\).*/\1/p'; }
if quiet sc start khttp >/dev/null && [ "$(driver_state)" = RUNNING ]; then
    ok "sc start khttp: RUNNING"
else
    bad "sc start khttp: $(driver_state)"
    tail -n 30 "$session_log"
    finish
fi
# The generator TLS is to draw from (driver/src/random.rs): CNG through Wine's cng.sys, opened
# at the end of DriverEntry, drawn from twice and compared.
for _ in $(seq 50); do grep -q "khttp: kernel random numbers" "$session_log" && break; sleep 0.1; done
rng=$(grep -o "khttp: kernel random numbers ready ([^)]*)" "$session_log" | tail -n 1)
if [ -n "$rng" ]; then
    ok "${rng#khttp: }"
else
    bad "kernel random numbers: $(grep -o 'khttp: no kernel random numbers.*' "$session_log" | tail -n 1)"
fi

# Lifecycle hooks for the suite: stop (sc stop: unload, after a drain), kill (SIGKILL to the
# winedevice.exe that has khttp.sys mapped: a crash, as far as Wine can have one), start.
hooks=$work/hooks
mkdir -p "$hooks"
cat >"$hooks/state.sh" <<HOOK
#!/bin/sh
# The driver's service state; with an argument, wait up to 30 s for that state.
state() { WINEDEBUG=-all wine sc query khttp | sed -n 's/.*STATE *: *[0-9]* *\\([A-Z_]*\\).*/\\1/p'; }
[ -z "\$1" ] && { state; exit 0; }
for i in \$(seq 1 300); do
    [ "\$(state)" = "\$1" ] && exit 0
    sleep 0.1
done
exit 1
HOOK
cat >"$hooks/stop.sh" <<HOOK
#!/bin/sh
WINEDEBUG=-all wine sc stop khttp >/dev/null 2>&1
exec sh $hooks/state.sh STOPPED
HOOK
# A killed winedevice leaves services.exe unable to start the driver again (error 6), so a
# crash is the whole session killed (SIGKILL to every Wine process, as a power cut would), and a
# new session started: what the driver acknowledged must be in the registry.
# khttpctl.exe runs under a shared lock and the crash under an exclusive one: a wine process
# started while the session is down would start a server of its own, whose stale registry
# could overwrite the saved one. So the crash falls between two commands.
export KHTTP_WINE_LOCK=$work/session.lock
: >"$KHTTP_WINE_LOCK"
cat >"$hooks/kill.sh" <<HOOK
#!/bin/sh
exec flock -x -o "$KHTTP_WINE_LOCK" sh -c '
wineserver -k 2>/dev/null
wineserver -w 2>/dev/null
wineserver -p
WINEDEBUG=$WINEDEBUG wine wineboot >>"$session_log" 2>&1
exit 0'
HOOK
cat >"$hooks/start.sh" <<HOOK
#!/bin/sh
WINEDEBUG=-all wine sc start khttp >/dev/null 2>&1
exec sh $hooks/state.sh RUNNING
HOOK
export KHTTP_TEST_STOP="sh $hooks/stop.sh" KHTTP_TEST_KILL="sh $hooks/kill.sh"
export KHTTP_TEST_START="sh $hooks/start.sh"
export KHTTP_TEST_CRASH_ROUNDS=${KHTTP_TEST_CRASH_ROUNDS:-10}
# The harness's provider polls every socket per event (O(n) Wine server work): 1,000, not 10,000.
export KHTTP_TEST_CROWD=${KHTTP_TEST_CROWD:-1000}
skips=$work/skipped.txt
: >"$skips"
export KHTTP_TEST_SKIP_LOG=$skips
if [ "$bench" = 1 ]; then
    # wrk 1 KiB, 64 connections, 2 threads, 10 s, three times (bench/RESULTS.md).
    command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk >/dev/null; }
    port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
    head -c 1024 /dev/urandom >"$work/1k.bin"
    ctl() { KHTTP_WINE_CTL='C:\khttp-pkg\khttpctl.exe' "$here/khttpctl.sh" --endpoint 'device:\\.\KHttp' "$@"; }
    ctl urlacl add "http://+:$port/" >/dev/null
    ctl cache put "http://+:$port/1k.bin" "$work/1k.bin" >/dev/null
    for i in 1 2 3; do
        say "wrk run $i: 1 KiB, c=64, 10 s"
        wrk -t2 -c64 -d10s --latency "http://127.0.0.1:$port/1k.bin" | grep -E "Requests/sec|Transfer/sec|50%|99%|requests in|Socket errors|Non-2xx"
    done
    ok "wrk against the driver"
    quiet sc stop khttp >/dev/null
    stop_session
    finish
fi

export KHTTP_TEST_EXTERNAL=1
export KHTTP_ENDPOINT='device:\\.\KHttp'
export KHTTPCTL_BIN=$here/khttpctl.sh
export KHTTP_WINE_CTL='C:\khttp-pkg\khttpctl.exe'
export HELLO_APP_BIN=$here/wine-app.sh KHTTP_PROXY_BIN=$here/wine-proxy.sh
export KHTTP_TEST_LIMITED_APP=$here/wine-limited.sh
export KHTTP_TEST_QUEUE_PROBE=$here/wine-probe.sh
export KHTTP_WINE_HARNESS=$harness
suite_log=$work/suite.log
say "black-box suite against the driver (log: $suite_log)"
# shellcheck disable=SC2086 # KHTTP_WINE_TESTS is a list of cargo arguments
(cd "$root" && cargo test --no-fail-fast -p khttp-tests ${KHTTP_WINE_TESTS:-} -- --include-ignored --test-threads=1) >"$suite_log" 2>&1
suite_rc=$?
while read -r line; do
    p=$(sed -n 's/.* \([0-9]*\) passed;.*/\1/p' <<<"$line")
    f=$(sed -n 's/.* \([0-9]*\) failed;.*/\1/p' <<<"$line")
    passed=$((passed + ${p:-0}))
    failed=$((failed + ${f:-0}))
done < <(grep '^test result:' "$suite_log")
if [ "$low_resources" != 0 ]; then
    # Failed allocations answer 503 or reset connections: tests see that, and fail. What the
    # run must show is no bugcheck, no leak and no verifier finding (below), and that the
    # injection explains every failure: with it off (the stand-in stops at its next tick once
    # the disarm file exists), each failed test passes against the same driver, still loaded.
    mapfile -t failed_tests < <(sed -n 's/^test \(.*\) \.\.\. FAILED$/\1/p' "$suite_log" | sort -u)
    say "low resources: ${#failed_tests[@]} suite tests failed under injected allocation failures"
    failed=$((failed - $(grep '^test result:' "$suite_log" | sed -n 's/.* \([0-9]*\) failed;.*/\1/p' | awk '{ s += $1 } END { print s + 0 }')))
    # (Not for an injected fault: that run stops at its finding, and its driver may be gone.)
    if [ ${#failed_tests[@]} -gt 0 ] && [ -z "$inject" ]; then
        : >"$harness/disarm"
        for _ in $(seq 1 50); do
            grep -q "allocation failures disarmed" "$harness/verifier.log" 2>/dev/null && break
            sleep 0.2
        done
        # shellcheck disable=SC2086 # KHTTP_WINE_TESTS is a list of cargo arguments
        if (cd "$root" && cargo test --no-fail-fast -p khttp-tests ${KHTTP_WINE_TESTS:-} -- \
            --include-ignored --test-threads=1 --exact "${failed_tests[@]}") >"$work/suite-rerun.log" 2>&1; then
            ok "low resources: the ${#failed_tests[@]} tests that failed under injection pass with it off, against the same driver"
        else
            grep -E '^test .* FAILED$' "$work/suite-rerun.log" | sed 's/^/wine-run: FAIL not explained by the injection: /'
            bad "low resources: tests fail with the injection off (see $work/suite-rerun.log)"
        fi
    fi
else
    grep -E '^test .* (FAILED|ok)$' "$suite_log" | grep FAILED | sed 's/^/wine-run: FAIL suite: /'
fi
# A test that does not apply to the driver said so: count it as skipped, not passed.
nskip=$(sort -u "$skips" | grep -c . || true)
passed=$((passed - nskip))
if [ "$nskip" -gt 0 ]; then
    say "$nskip tests do not apply to the driver:"
    sort -u "$skips" | sed 's/^/wine-run:   SKIP /'
fi
if [ "$suite_rc" -ne 0 ] && ! grep -q FAILED "$suite_log"; then
    bad "suite did not run (see $suite_log)"
    tail -n 20 "$suite_log"
fi

# The driver listens on [::] dual-stack; the suite reached it over IPv4. The HTTP tests again,
# over IPv6 loopback.
if [ -z "$inject" ] && [ -z "${KHTTP_WINE_TESTS:-}" ]; then
    if (cd "$root" && KHTTP_TEST_HOST=::1 cargo test -p khttp-tests --test http -- --test-threads=1) \
        >"$work/suite-ipv6.log" 2>&1; then
        ok "the HTTP tests over IPv6 (::1): $(grep -o '[0-9]* passed' "$work/suite-ipv6.log" | tail -1)"
    else
        bad "the HTTP tests over IPv6 (::1) (see $work/suite-ipv6.log)"
    fi
fi

if [ "$(driver_state)" = RUNNING ]; then
    ok "driver RUNNING after the suite"
else
    bad "driver is $(driver_state) after the suite (winedevice died?)"
    grep -E "KeBugCheck|unimplemented|panicked" "$session_log" | tail -n 5
fi

say "stopping the driver"
quiet sc stop khttp >/dev/null
for _ in $(seq 1 300); do
    [ "$(driver_state)" = STOPPED ] && break
    sleep 0.1
done
if [ "$(driver_state)" = STOPPED ]; then
    ok "sc stop khttp: STOPPED (unload ran)"
else
    bad "sc stop khttp: still $(driver_state) after 30 s"
fi
if grep -q '^unload: clean' "$harness/verifier.log" 2>/dev/null; then
    ok "unload: no pool, IRP, MDL, socket, NPI or WDF object left"
else
    bad "unload check did not report clean"
fi
fails=$(grep -c '^FAIL' "$harness/verifier.log" 2>/dev/null)
if [ "${fails:-0}" -eq 0 ]; then
    ok "verifier silent"
else
    bad "verifier: $fails FAIL lines; the first ones:"
    grep '^FAIL' "$harness/verifier.log" | sort | uniq -c | sort -rn | head -n 10
fi
cp "$harness/verifier.log" "$work/verifier.log" 2>/dev/null
stop_session
finish
