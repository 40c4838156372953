#!/usr/bin/env bash
# Runs the whole test suite against one build directory:
#
#   tests/run.sh [BUILD_DIR]        (default: build)
#
# 1. every unit test binary BUILD_DIR/tests/test_* (cmocka),
# 2. the Python integration tests in tests/integration (ZEPHYR_BUILD=BUILD_DIR),
#    in parallel shards, then the modules marked serial (see below).
#
# Counts passes, failures and skips across both, prints skip reasons, and ends
# with one line:  tests: N passed, M failed[, K skipped]
# Exits non-zero if anything failed (or nothing ran at all).

set -u

root=$(cd "$(dirname "$0")/.." && pwd)
build=${1:-build}
case $build in
    /*) ;;
    *) build=$(cd "$build" 2>/dev/null && pwd || echo "$root/$build") ;;
esac
cd "$root" || exit 2

passed=0
failed=0
skipped=0
failed_names=()
skip_notes=()
work=$(mktemp -d "${TMPDIR:-/tmp}/zephyr-tests.XXXXXX")
trap 'rm -rf "$work"' EXIT

# ---- unit tests --------------------------------------------------------------
# cmocka prints per-group summaries on stderr:
#   [  PASSED  ] N test(s).
#   [  FAILED  ] N test(s), listed below:
#   [  SKIPPED ] N test(s), listed below:
# and one "[  SKIPPED ] name" / "[  FAILED  ] name" line per test.

shopt -s nullglob
units=("$build"/tests/test_*)
shopt -u nullglob
if [ ${#units[@]} -eq 0 ]; then
    echo "!!! no unit test binaries in $build/tests (build them with make)"
fi
for t in "${units[@]}"; do
    [ -f "$t" ] && [ -x "$t" ] || continue
    name=$(basename "$t")
    echo "=== unit: $name"
    out="$work/$name.out"
    ASAN_OPTIONS=detect_leaks=1:abort_on_error=0 UBSAN_OPTIONS=print_stacktrace=1 \
        timeout -k 5 300 "$t" >"$out" 2>&1
    rc=$?
    cat "$out"
    p=$(sed -n 's/^\[  PASSED  \] \([0-9][0-9]*\) test(s)\..*/\1/p' "$out" | awk '{s+=$1} END {print s+0}')
    f=$(sed -n 's/^\[  FAILED  \] \([0-9][0-9]*\) test(s), listed below:.*/\1/p' "$out" | awk '{s+=$1} END {print s+0}')
    s=$(sed -n 's/^\[  SKIPPED \] \([0-9][0-9]*\) test(s), listed below:.*/\1/p' "$out" | awk '{s+=$1} END {print s+0}')
    if [ "$p" -eq 0 ] && [ "$f" -eq 0 ] && [ "$s" -eq 0 ]; then
        # no cmocka summary: judge the binary by its exit status
        if [ $rc -eq 0 ]; then p=1; else f=1; fi
    elif [ $rc -ne 0 ] && [ "$f" -eq 0 ]; then
        # all tests passed but the binary failed (sanitizer at exit, crash ...)
        echo "!!! $name: exit status $rc although no test failed"
        f=1
    fi
    passed=$((passed + p))
    failed=$((failed + f))
    skipped=$((skipped + s))
    if [ "$f" -gt 0 ]; then
        failed_names+=("unit $name (exit $rc)")
    fi
    while IFS= read -r sk; do
        [ -n "$sk" ] && skip_notes+=("unit $name: $sk (skipped)")
    done < <(sed -n 's/^\[  SKIPPED \] \(.*\)$/\1/p' "$out" | grep -v 'test(s)' | sort -u)
done

# ---- integration tests -----------------------------------------------------
# The modules run in parallel shards (ZEPHYR_TEST_SHARDS worker processes,
# default: the number of CPUs plus one, at most 3), each a `python3 -m unittest -v`
# over its modules with its own log, then the modules marked "serial" in
# tests/integration/durations.txt run alone (timing-sensitive ones).  Modules
# go to shards by a greedy balance on the durations in that file (longest
# first, to the least loaded shard; a module not listed counts 20 s).
# ZEPHYR_TEST_MODULES="test_faults test_logs" runs only those modules.
# Every test picks its own ephemeral ports and temporary directory, so shards
# cannot collide.

idir=tests/integration
table=$idir/durations.txt
if [ -n "${ZEPHYR_TEST_MODULES:-}" ]; then
    read -r -a imods <<<"$ZEPHYR_TEST_MODULES"
else
    imods=()
    for f in "$idir"/test_*.py; do imods+=("$(basename "$f" .py)"); done
fi
nshards=${ZEPHYR_TEST_SHARDS:-}
if [ -z "$nshards" ]; then
    # One more than the CPUs, at most 3: the tests mostly wait on the
    # proxy's timers, so on 2 cores 3 shards still gain (plain suite ~150 s
    # instead of ~210-290 s with 2, ~400 s serially).
    nshards=$(($(nproc 2>/dev/null || echo 1) + 1))
    [ "$nshards" -gt 3 ] && nshards=3
fi
[ "$nshards" -ge 1 ] 2>/dev/null || nshards=1

# "shard-index module" lines; index 0 is the serial phase.
plan=$(printf '%s\n' "${imods[@]}" | awk -v n="$nshards" -v table="$table" '
    BEGIN {
        while ((getline line < table) > 0) {
            if (line ~ /^[ \t]*(#|$)/) continue
            split(line, f, /[ \t]+/)
            secs[f[1]] = f[2] + 0
            if (f[3] == "serial") serial[f[1]] = 1
        }
    }
    $1 != "" { m[++k] = $1; w[k] = ($1 in secs) ? secs[$1] : 20 }
    END {
        # longest first (insertion sort: a few dozen modules)
        for (i = 2; i <= k; i++)
            for (j = i; j > 1 && w[j] > w[j - 1]; j--) {
                t = w[j]; w[j] = w[j - 1]; w[j - 1] = t
                t = m[j]; m[j] = m[j - 1]; m[j - 1] = t
            }
        for (i = 1; i <= k; i++) {
            if (m[i] in serial) { print 0, m[i]; continue }
            best = 1
            for (s = 2; s <= n; s++) if (load[s] < load[best]) best = s
            load[best] += w[i]
            print best, m[i]
        }
    }')

run_shard() {  # index, modules...: one unittest process, log in $work
    local k=$1
    shift
    ZEPHYR_BUILD="$build" PYTHONDONTWRITEBYTECODE=1 PYTHONPATH="$root/$idir" \
        timeout -k 10 900 python3 -m unittest -v "$@" >"$work/integration-$k.out" 2>&1
    echo $? >"$work/integration-$k.rc"
}

shard_mods() { echo "$plan" | awk -v k="$1" '$1 == k { printf "%s%s", sep, $2; sep = " " }'; }

serial_mods=$(shard_mods 0)
echo "=== integration tests (ZEPHYR_BUILD=$build, $nshards parallel shards${serial_mods:+, then serially: $serial_mods})"
ishards=()
declare -A ipids=()
for k in $(seq 1 "$nshards"); do
    mods=$(shard_mods "$k")
    [ -n "$mods" ] || continue
    echo "=== integration shard $k: $mods"
    # shellcheck disable=SC2086
    run_shard "$k" $mods &
    ipids[$!]=$k
    ishards+=("$k")
done
while [ ${#ipids[@]} -gt 0 ]; do
    done_pid=
    wait -n -p done_pid || [ -n "$done_pid" ] || break
    k=${ipids[$done_pid]:-}
    [ -n "$k" ] || continue
    unset "ipids[$done_pid]"
    echo "=== integration shard $k (log):"
    cat "$work/integration-$k.out"
done
if [ -n "$serial_mods" ]; then
    echo "=== integration serial phase: $serial_mods"
    # shellcheck disable=SC2086
    run_shard 0 $serial_mods
    cat "$work/integration-0.out"
    ishards+=(0)
fi

for k in "${ishards[@]}"; do
    ilog="$work/integration-$k.out"
    irc=$(cat "$work/integration-$k.rc" 2>/dev/null || echo 125)
    ran=$(sed -n 's/^Ran \([0-9][0-9]*\) tests\{0,1\} in .*/\1/p' "$ilog" | tail -n 1)
    if [ -z "$ran" ]; then
        echo "!!! integration shard $k did not finish (exit $irc)"
        failed=$((failed + 1))
        failed_names+=("integration shard $k: $(shard_mods "$k") (exit $irc, no summary)")
        continue
    fi
    last=$(grep -E '^(OK|FAILED)( \(.*\))?$' "$ilog" | tail -n 1)
    count() { echo "$last" | sed -En "s/.*(\(|, )$1=([0-9]+).*/\2/p"; }
    if_f=$(count failures); if_e=$(count errors); if_s=$(count skipped)
    if_x=$(count 'expected failures'); if_u=$(count 'unexpected successes')
    if_f=${if_f:-0}; if_e=${if_e:-0}; if_s=${if_s:-0}; if_x=${if_x:-0}; if_u=${if_u:-0}
    bad=$((if_f + if_e + if_u))
    good=$((ran - bad - if_s - if_x))
    if [ "$irc" -ne 0 ] && [ $bad -eq 0 ]; then
        echo "!!! integration shard $k: python exited $irc although no test failed"
        bad=1
    fi
    passed=$((passed + good))
    failed=$((failed + bad))
    skipped=$((skipped + if_s))
    while IFS= read -r ln; do
        failed_names+=("$ln")
    done < <(grep -E '^(FAIL|ERROR): ' "$ilog")
    while IFS= read -r ln; do
        skip_notes+=("$ln")
    done < <(grep -E " \.\.\. skipped " "$ilog")
done

# ---- summary -----------------------------------------------------------------

echo
if [ ${#failed_names[@]} -gt 0 ]; then
    echo "failed:"
    for n in "${failed_names[@]}"; do echo "  $n"; done
fi
if [ ${#skip_notes[@]} -gt 0 ]; then
    echo "!!! SKIPPED TESTS (each says why):"
    for n in "${skip_notes[@]}"; do echo "!!!   $n"; done
fi
if [ "$skipped" -gt 0 ]; then
    echo "tests: $passed passed, $failed failed, $skipped skipped"
else
    echo "tests: $passed passed, $failed failed"
fi
if [ "$failed" -gt 0 ] || [ $((passed + skipped)) -eq 0 ]; then
    exit 1
fi
exit 0
