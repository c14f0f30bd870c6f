# Helpers the benchmark scripts share (sourced by bench/run.sh and bench/apps.sh).

# Installs nginx and wrk when missing (Debian).
bench_need_tools() {
    if ! command -v nginx >/dev/null 2>&1 || ! command -v wrk >/dev/null 2>&1; then
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx wrk >/dev/null
    fi
}

# Total on-CPU nanoseconds of every thread of the given pids (/proc/PID/task/*/schedstat).
cpu_ns() {
    local total=0
    for p in "$@"; do
        for f in /proc/"$p"/task/*/schedstat; do
            read -r ns _ < "$f" && total=$((total + ns))
        done
    done
    echo "$total"
}
