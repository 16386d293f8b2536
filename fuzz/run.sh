#!/usr/bin/env bash
# Runs every fuzz target for a fixed number of executions and reports, per target,
# executions, coverage, speed and crashes.
#
#   fuzz/run.sh                   # 10 million executions each (or 20 minutes, whichever first)
#   RUNS=100000 fuzz/run.sh       # a quick pass
#   fuzz/run.sh wire_messages     # only these targets
#
# Needs the nightly toolchain and cargo-fuzz; installs both when missing. The corpus grows in
# fuzz/corpus/TARGET (not in git); what is worth keeping is minimised into fuzz/seeds/TARGET
# (in git, small) at the end. Crashes land in fuzz/artifacts/TARGET; the script then exits 1.
set -uo pipefail
cd "$(dirname "$0")"

RUNS=${RUNS:-10000000}
MAX_SECONDS=${MAX_SECONDS:-1200}
JOBS=${JOBS:-1}
SEEDS=${SEEDS:-100}
# -jobs makes libFuzzer run workers that log to files of their own: only when asked for.
jobs_flag=()
[ "$JOBS" -gt 1 ] && jobs_flag=(-jobs="$JOBS")

if ! rustup toolchain list | grep -q '^nightly'; then
    echo "==> installing the nightly toolchain (fuzzing needs it)"
    rustup toolchain install nightly --profile minimal
fi
if ! command -v cargo-fuzz >/dev/null 2>&1; then
    echo "==> installing cargo-fuzz"
    cargo install cargo-fuzz --locked
fi

targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    mapfile -t targets < <(cargo +nightly fuzz list)
fi

report=$(mktemp)
status=0
for t in "${targets[@]}"; do
    mkdir -p "corpus/$t" "seeds/$t" "artifacts/$t"
    log="target/fuzz-$t.log"
    mkdir -p target
    echo "==> $t: up to $RUNS executions or $MAX_SECONDS s"
    start=$(date +%s)
    cargo +nightly fuzz run "$t" "corpus/$t" "seeds/$t" -- \
        -runs="$RUNS" -max_total_time="$MAX_SECONDS" -print_final_stats=1 "${jobs_flag[@]}" \
        -max_len=65536 -timeout=10 -rss_limit_mb=2048 >"$log" 2>&1
    rc=$?
    secs=$(( $(date +%s) - start ))
    execs=$(grep -Eo 'stat::number_of_executed_units: *[0-9]+' "$log" | tail -1 | grep -Eo '[0-9]+$')
    cov=$(grep -Eo 'cov: [0-9]+ ft: [0-9]+' "$log" | tail -1)
    crashes=$(find "artifacts/$t" -type f | wc -l)
    if [ "$rc" -ne 0 ] || [ "$crashes" -gt 0 ]; then
        status=1
        echo "    FAILED (exit $rc, $crashes artifact(s)); see fuzz/$log"
        grep -E 'panicked|ERROR|SUMMARY' "$log" | head -5 | sed 's/^/    /'
    fi
    printf '%-16s %12s execs %6s s  %-22s crashes %s\n' "$t" "${execs:-?}" "$secs" "${cov:-cov: ?}" "$crashes" | tee -a "$report"
    # Keep a small corpus in git: of the inputs that reach all the coverage found (cmin), the
    # $SEEDS smallest.
    if cargo +nightly fuzz cmin "$t" "corpus/$t" -- -max_len=65536 >/dev/null 2>&1; then
        rm -rf "seeds/$t" && mkdir -p "seeds/$t"
        find "corpus/$t" -type f -printf '%s %p\n' | sort -n | head -n "$SEEDS" | cut -d' ' -f2- |
            xargs -r cp -t "seeds/$t"/
    fi
done
echo
echo "target           executions    time   coverage               crashes"
cat "$report"
rm -f "$report"
exit "$status"
