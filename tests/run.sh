#!/usr/bin/env bash
# Runs the whole test suite against one build directory:
#
#   tests/run.sh [BUILD_DIR]        (default: build)
#
# 1. every unit test binary BUILD_DIR/tests/test_* (cmocka),
# 2. the Python integration tests in tests/integration (ZEPHYR_BUILD=BUILD_DIR).
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

echo "=== integration tests (ZEPHYR_BUILD=$build)"
ilog="$work/integration.out"
ZEPHYR_BUILD="$build" PYTHONDONTWRITEBYTECODE=1 timeout -k 10 900 \
    python3 -m unittest discover -s tests/integration -p 'test_*.py' -v 2>&1 | tee "$ilog"
irc=${PIPESTATUS[0]}

ran=$(sed -n 's/^Ran \([0-9][0-9]*\) tests\{0,1\} in .*/\1/p' "$ilog" | tail -n 1)
if [ -z "$ran" ]; then
    echo "!!! the integration suite did not finish (exit $irc)"
    failed=$((failed + 1))
    failed_names+=("integration suite (exit $irc, no summary)")
else
    last=$(grep -E '^(OK|FAILED)( \(.*\))?$' "$ilog" | tail -n 1)
    count() { echo "$last" | sed -En "s/.*(\(|, )$1=([0-9]+).*/\2/p"; }
    if_f=$(count failures); if_e=$(count errors); if_s=$(count skipped)
    if_x=$(count 'expected failures'); if_u=$(count 'unexpected successes')
    if_f=${if_f:-0}; if_e=${if_e:-0}; if_s=${if_s:-0}; if_x=${if_x:-0}; if_u=${if_u:-0}
    bad=$((if_f + if_e + if_u))
    good=$((ran - bad - if_s - if_x))
    if [ $irc -ne 0 ] && [ $bad -eq 0 ]; then
        echo "!!! python exited $irc although no test failed"
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
fi

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
