#!/bin/sh
# claude-zephyr's two commands on a fresh Debian 12 machine (run as root, or
# with sudo available):
#
#   ./run.sh [proxy options]   install what is missing, build, run the proxy
#                              (./config.toml if present, else the built-in demo)
#   ./run.sh test              install what is missing, build, run the whole
#                              test suite, plain and under ASan+UBSan
set -eu
cd "$(dirname "$0")"

# Build and run-time packages, plus what the tests drive: python3 for the
# integration suite, tmux for the terminal dashboard, clang for the fuzzers,
# clang-tidy, clang-format and cppcheck for make lint,
# promtool (package prometheus) for /metrics, redis-server for the fleet tests
# ([cluster]; the tests start their own on a free port), chromium for the web page, and
# node + npm for the real clients (Claude Code, the SDK) and Playwright.
PKGS="gcc g++ make pkg-config ca-certificates curl libuv1-dev libcurl4-openssl-dev \
libcjson-dev libtomlplusplus-dev libncurses-dev libcmocka-dev zlib1g-dev libssl-dev libhiredis-dev \
libnghttp2-dev"
TEST_PKGS="python3 tmux clang libclang-rt-14-dev clang-tidy clang-format cppcheck prometheus chromium chromium-driver redis-server \
haproxy python3-h2"

want=$PKGS
if [ "${1:-}" = "test" ]; then
    want="$PKGS $TEST_PKGS"
    # An installed node (Debian's or NodeSource's) is kept; only a machine
    # without one gets Debian's nodejs and npm.
    command -v npm >/dev/null 2>&1 || want="$want nodejs npm"
fi
missing=""
for p in $want; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" ||
        missing="$missing $p"
done
if [ -n "$missing" ]; then
    sudo=""
    [ "$(id -u)" = 0 ] || sudo=sudo
    echo "run.sh: installing:$missing" >&2
    $sudo sh -c "apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends$missing"
fi

# Quiet builds: compiler command lines only with V=1 (errors always show).
V=${V:-0}
jobs=$(nproc 2>/dev/null || echo 2)
if [ "${1:-}" = "test" ]; then
    shift
    make V="$V" -j"$jobs" all
    make V="$V" -j"$jobs" asan
    exec make V="$V" check
fi
# Running the proxy needs the proxy only: no unit tests, no fake upstream.
# --no-print-directory: no "Entering directory" lines when run.sh itself
# runs under make (the test suite does that).
if ! make --no-print-directory V="$V" -q build/claude-zephyr 2>/dev/null; then
    echo "run.sh: building build/claude-zephyr (V=1 ./run.sh shows the commands)" >&2
    make --no-print-directory V="$V" -j"$jobs" build/claude-zephyr
fi
exec build/claude-zephyr "$@"
