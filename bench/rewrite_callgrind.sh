#!/usr/bin/env bash
# bench/rewrite_callgrind.sh -- instructions per rw_decide() call, by callgrind.
#
#   bench/rewrite_callgrind.sh [BUILD_DIR]        (default: build)
#
# Runs bench/rewrite_bench under valgrind --tool=callgrind, counting only
# inside rwb_measure() (the loop of rw_decide + rw_decision_release; set-up
# and warm-up excluded), and prints instructions per call for each scenario:
# the whole loop, and tenantguard's own work alone (inside rw_decide and
# rw_decision_release, without the bench loop's ~27 instructions per call).
# Instruction counts do not depend on machine load, unlike timings.
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build}
bin="$build/bench/rewrite_bench"
[ -x "$bin" ] || { echo "missing $bin: run scripts/build" >&2; exit 1; }
command -v valgrind >/dev/null || { echo "valgrind not installed (apt-get install -y valgrind)" >&2; exit 1; }
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT

printf '%-16s %8s %14s %14s\n' scenario calls instr/call "own/call"
for scenario in prefilter prefilter-long hit miss miss-nocache update-miss; do
    n=2000
    case $scenario in miss|miss-nocache|update-miss) n=300 ;; esac
    valgrind --tool=callgrind --toggle-collect=rwb_measure \
        --callgrind-out-file="$out/$scenario.cg" "$bin" "$scenario" "$n" >"$out/$scenario.log" 2>&1
    total=$(awk '/^summary:/ {print $2}' "$out/$scenario.cg")
    # inclusive cost of the two calls inside the counted loop (the larger of
    # callgrind's two names for each function)
    own=$(callgrind_annotate --inclusive=yes --threshold=100 --auto=no "$out/$scenario.cg" | awk '
        /:rw_decide( |$)/ { v = $1; gsub(",", "", v); v += 0; if (v > d) d = v }
        /:rw_decision_release( |$)/ { v = $1; gsub(",", "", v); v += 0; if (v > r) r = v }
        END { print d + r }')
    printf '%-16s %8d %14.0f %14.0f\n' "$scenario" "$n" "$(echo "$total / $n" | bc -l)" "$(echo "$own / $n" | bc -l)"
    if [ "${TG_BENCH_ANNOTATE:-}" = "$scenario" ]; then
        callgrind_annotate --inclusive=yes "$out/$scenario.cg" | head -40
    fi
done
