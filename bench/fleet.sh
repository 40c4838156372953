#!/usr/bin/env bash
# claude-zephyr fleet benchmark ([cluster] on Redis): bench/fleet.sh after
# `make`.  Needs redis-server (Debian package redis-server) and python3.
#
# Measures, on this machine, with a redis-server of its own (loopback, a free
# port, no persistence) and the project's fake upstream:
#   checks      check requests an endpoint receives per interval with 1, 2
#               and 3 instances (target: the same for all three)
#   spread      time from a 529 met by instance A to instances B and C
#               marking that endpoint failed, over FLEET_TRIALS trials
#               (target: p99 under 1 s)
#   overhead    per-request latency (zload short, one keep-alive connection,
#               p50) through one instance with [cluster] against the same
#               instance without it, alternating, FLEET_REPS rounds
#               (target: under 0.05 ms added at p50)
# Prints one line per row; docs/FLEET.md and BENCHMARKS.md quote a run.
# Every process started here is stopped on exit (by PID).
#
# Knobs: FLEET_TRIALS (50), FLEET_REPS (5), FLEET_REQUESTS (4000 per round),
# FLEET_INTERVAL_S (2), FLEET_WINDOW_S (10), BENCH_BUILD (build),
# BENCH_OUT (build/bench).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
B=${BENCH_BUILD:-$ROOT/build}
OUT=${BENCH_OUT:-$ROOT/build/bench}
command -v redis-server >/dev/null || [ -x /usr/bin/redis-server ] ||
    { echo "bench/fleet.sh: redis-server is missing (apt-get install redis-server)" >&2; exit 1; }
[ -x "$B/claude-zephyr" ] && [ -x "$B/fake-upstream" ] || { echo "run 'make' first" >&2; exit 1; }
mkdir -p "$OUT"
ZLOAD=$OUT/zload
if [ ! -x "$ZLOAD" ] || [ bench/zload.c -nt "$ZLOAD" ]; then
    cc -O2 -g -std=c11 -Wall -Wextra -o "$ZLOAD" bench/zload.c
fi
export ZEPHYR_BUILD=$B ZLOAD
exec python3 - "$@" <<'EOF'
import os, statistics, subprocess, sys, tempfile, threading, time
sys.path.insert(0, "tests/integration")
from harness import FakeUpstream, Proxy, child_env, http_request, make_config, messages_body, wait_for
from test_fleet import RedisServer, REDIS_BIN

TRIALS = int(os.environ.get("FLEET_TRIALS", 50))
REPS = int(os.environ.get("FLEET_REPS", 5))
REQUESTS = int(os.environ.get("FLEET_REQUESTS", 4000))
INTERVAL = int(os.environ.get("FLEET_INTERVAL_S", 2))
WINDOW = float(os.environ.get("FLEET_WINDOW_S", 10))
ZLOAD = os.environ["ZLOAD"]
tmp = tempfile.mkdtemp(prefix="zfleet-")
procs = []
n_cfg = [0]


def say(*a):
    print(*a, flush=True)


def proxy(groups, hc, redis=None, fleet="bench", lease_ms=3000):
    extra = ""
    if redis:
        extra = ('[cluster]\nredis_url = "redis://127.0.0.1:%d/0"\nfleet = "%s"\nlease_ms = %d\n'
                 % (redis.port, fleet, lease_ms))
    n_cfg[0] += 1
    path = os.path.join(tmp, "c%d.toml" % n_cfg[0])
    with open(path, "w") as f:
        f.write(make_config(groups, {"shutdown_grace_ms": 1000}, hc, extra))
    p = Proxy(path, env=child_env())
    procs.append(p)
    if redis:
        wait_for(lambda: p.status()["cluster"]["redis"] == "connected", 10, desc="connected")
    return p


def status_of(p, name):
    return next(e for e in p.status()["endpoints"] if e["name"] == name)


def served(port):
    return http_request(port, "POST", "/v1/messages", messages_body(),
                        {"content-type": "application/json"}, timeout=10)


def pct(xs, q):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(q / 100 * (len(xs) - 1))))]


redis = RedisServer(tmp)
try:
    # ---- checks per interval with 1, 2, 3 instances ----
    for n in (1, 2, 3):
        fake = FakeUpstream("chk%d" % n)
        procs.append(fake)
        groups = [{"name": "g", "endpoints": [("a", fake.url)]}]
        ps = [proxy(groups, {"interval_seconds": INTERVAL, "timeout_seconds": 1}, redis,
                    fleet="checks%d" % n) for _ in range(n)]
        wait_for(lambda: sum(len(p.status()["cluster"]["checking"]) for p in ps) == 1, 10,
                 desc="one checker")
        fake.reset()
        t0 = time.monotonic()
        time.sleep(WINDOW)  # a measuring window, not a synchronisation
        got = fake.stats()["messages"]
        el = time.monotonic() - t0
        say("checks   instances=%d window_s=%.1f checks=%d per_interval=%.2f"
            % (n, el, got, got / (el / INTERVAL)))
        for p in ps:
            p.stop(10)
        fake.stop(5)

    # ---- spread of a failure ----
    a = FakeUpstream("a")
    b = FakeUpstream("b")
    procs += [a, b]
    b.config(latency_ms=100)
    groups = [{"name": "g", "endpoints": [("a", a.url), ("b", b.url)]}]
    hc = {"interval_seconds": 600, "timeout_seconds": 2, "failed_interval_seconds": 600}
    ps = [proxy(groups, hc, redis, fleet="spread") for _ in range(3)]
    A, B, C = ps
    wait_for(lambda: sum(len(p.status()["cluster"]["checking"]) for p in ps) == 2, 10,
             desc="checkers")
    holder = next(p for p in ps if "a" in p.status()["cluster"]["checking"])
    times = []
    for _ in range(TRIALS):
        for p in ps:
            wait_for(lambda p=p: status_of(p, "a")["status"] == "healthy"
                     and (p.status()["current_endpoint"] or {}).get("name") == "a", 10,
                     interval=0.01, desc="a healthy and current")
        a.config(status=529)
        t0 = time.monotonic()
        # A's request goes on to b (100 ms): B and C are watched meanwhile.
        th = threading.Thread(target=served, args=(A.port,))
        th.start()
        seen = []
        for p in (B, C):
            wait_for(lambda p=p: status_of(p, "a")["status"] == "failed", 5, interval=0.001,
                     desc="failure seen")
            seen.append(time.monotonic() - t0)
        times.append(max(seen) * 1000)
        th.join(10)
        a.config(status=200)
        holder.admin("check")
    say("spread   trials=%d p50_ms=%.2f p99_ms=%.2f max_ms=%.2f (from A's request start to both B and C)"
        % (len(times), pct(times, 50), pct(times, 99), max(times)))
    for p in ps:
        p.stop(10)

    # ---- overhead per request ----
    groups = [{"name": "g", "endpoints": [("a", a.url)]}]
    hc = {"interval_seconds": 600, "timeout_seconds": 2}
    on = proxy(groups, hc, redis, fleet="overhead")
    off = proxy(groups, hc, None)
    rows = {"off": [], "on": []}
    for r in range(REPS):
        for name, p in (("off", off), ("on", on)):
            out = subprocess.run([ZLOAD, "short", "--port", str(p.port), "--conns", "1",
                                  "--requests", str(REQUESTS)], capture_output=True, text=True,
                                 timeout=300).stdout
            kv = dict(x.split("=", 1) for x in out.split() if "=" in x)
            if int(kv.get("failed", 1)) != 0:
                raise SystemExit("overhead: failed requests: %s" % out)
            rows[name].append(int(kv["lat_p50_us"]))
    off_p50 = statistics.median(rows["off"])
    on_p50 = statistics.median(rows["on"])
    say("overhead rounds=%d requests=%d p50_off_us=%d p50_on_us=%d added_us=%d (per round: off %r on %r)"
        % (REPS, REQUESTS, off_p50, on_p50, on_p50 - off_p50, rows["off"], rows["on"]))
    wait_for(lambda: (on.status()["cluster"]["fleet_totals"] or {}).get("requests", 0)
             >= REPS * REQUESTS, 10, desc="fleet counters caught up")
    say("counters fleet_requests=%d (all %d counted in Redis)"
        % (on.status()["cluster"]["fleet_totals"]["requests"], REPS * REQUESTS))
finally:
    for p in reversed(procs):
        try:
            p.stop(10)
        except Exception:  # noqa: BLE001
            pass
    redis.stop()
EOF
