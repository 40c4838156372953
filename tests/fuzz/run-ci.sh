#!/usr/bin/env bash
# Runs every built libFuzzer target briefly over its seed corpus, for CI:
#
#   tests/fuzz/run-ci.sh [SECONDS_PER_TARGET] [FUZZ_DIR]
#
# SECONDS_PER_TARGET defaults to 5 (or $FUZZ_SECONDS); FUZZ_DIR defaults to
# build/fuzz (build the targets with `make fuzz` first).  Target
# build/fuzz/fuzz_NAME uses the seeds in tests/fuzz/corpus/NAME/, copied to a
# temporary directory first so the repository is never modified (libFuzzer
# adds the inputs it finds to the corpus directory it is given).
#
# Each target first replays every seed once (a regression check), then
# fuzzes for the given time.  A crash, leak, timeout, sanitizer report or
# failed invariant is a finding: the script prints the reproducer's path and
# base64 form and exits 1 after running the remaining targets.  Exits 2
# when there is nothing to run.

set -u

root=$(cd "$(dirname "$0")/../.." && pwd)
secs=${1:-${FUZZ_SECONDS:-5}}
dir=${2:-$root/build/fuzz}
case $dir in /*) ;; *) dir=$root/$dir ;; esac

shopt -s nullglob
targets=("$dir"/fuzz_*)
shopt -u nullglob
if [ ${#targets[@]} -eq 0 ]; then
    echo "run-ci: no fuzz targets in $dir (run: make fuzz)" >&2
    exit 2
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/zephyr-fuzz.XXXXXX")
keep=0
cleanup() { [ $keep -eq 1 ] || rm -rf "$work"; }
trap cleanup EXIT

export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=0:allocator_may_return_null=0}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}

failed=()
ran=0
for t in "${targets[@]}"; do
    [ -f "$t" ] && [ -x "$t" ] || continue
    name=$(basename "$t")
    short=${name#fuzz_}
    seeds=$root/tests/fuzz/corpus/$short
    corpus=$work/corpus-$short
    art=$work/artifacts-$short/
    mkdir -p "$corpus" "$art"
    if [ -d "$seeds" ]; then
        cp -R "$seeds"/. "$corpus"/
    else
        echo "run-ci: $name: no seed corpus at tests/fuzz/corpus/$short (fuzzing from nothing)"
    fi
    log=$work/$name.log
    echo "=== $name: $(find "$corpus" -type f | wc -l) seeds, ${secs}s"
    # -timeout: one input taking longer is a finding; -rss_limit_mb: so is runaway memory.
    timeout -k 10 $((secs * 3 + 120)) "$t" "$corpus" \
        -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -max_len=65536 \
        -print_final_stats=1 -artifact_prefix="$art" >"$log" 2>&1
    rc=$?
    ran=$((ran + 1))
    grep -E '^(stat::number_of_executed_units|stat::new_units_added|stat::peak_rss_mb)' "$log" | sed 's/^/    /'
    found=$(find "$art" -type f | head -n 5)
    if [ $rc -ne 0 ] || [ -n "$found" ]; then
        keep=1
        echo "!!! $name: finding (exit $rc); log: $log"
        grep -E 'ERROR: |runtime error|SUMMARY|fuzz_[a-z]+: |Test unit written' "$log" | head -n 20 | sed 's/^/    /'
        for f in $found; do
            echo "    reproducer: $f"
            echo "    base64: $(base64 -w0 "$f" | head -c 2000)"
            echo "    replay: $t $f"
        done
        failed+=("$name")
    fi
done

echo
if [ ${#failed[@]} -gt 0 ]; then
    echo "fuzz: $ran target(s) run, findings in: ${failed[*]} (files kept in $work)"
    exit 1
fi
echo "fuzz: $ran target(s) run, no finding"
exit 0
