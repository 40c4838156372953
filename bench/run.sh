#!/usr/bin/env bash
# claude-zephyr benchmark: `make bench` (or bench/run.sh after `make`).
#
# Measures, in one run on this machine and against the same origin (the
# project's fake upstream, build/fake-upstream):
#   direct      the load tool talks to the origin itself (the limit)
#   nginx       Debian nginx-light, proxy_pass + upstream keep-alive, 1 worker
#   haproxy     Debian haproxy, mode http, option http-no-delay, nbthread 1
#   zephyr      build/claude-zephyr (one thread)
# and prints one table (medians over BENCH_REPS runs, and per-run ratios).
# Everything listens on 127.0.0.1, every phase is bounded in time, and every
# process started here is stopped on exit.  BENCHMARKS.md explains the rows.
#
# Knobs (environment): BENCH_REPS (3), BENCH_SHORT_S (3), BENCH_QUICK=1
# (one repetition, shorter phases), BENCH_SKIP="phase ..." (short sse big idle
# failover cpu), BENCH_NGINX_AUTO=0 (drop the informational 2-worker nginx
# column), BENCH_OUT (build/bench), BENCH_BUILD (build), BENCH_ZEPHYR_CLIENT
# (builtin; "libcurl" measures claude-zephyr's libcurl path instead).
# Proxy commands are kept as strings and split into words on purpose (the
# paths are mktemp's and build/, without spaces).
# shellcheck disable=SC2046,SC2086
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
B=${BENCH_BUILD:-$ROOT/build}
OUT=${BENCH_OUT:-$ROOT/build/bench}
REPS=${BENCH_REPS:-3}
SHORT_S=${BENCH_SHORT_S:-3}
NGINX_AUTO=${BENCH_NGINX_AUTO:-1}
SKIP=" ${BENCH_SKIP:-} "
SSE_EVENTS=20 SSE_GAP_MS=100
BIG_EVENTS=10 BIG_GAP_MS=1000 BIG_RAMP_MS=3000
IDLE_REPS=5 FAILOVER_REPS=3 CPU_REQUESTS=2000
if [ "${BENCH_QUICK:-0}" = 1 ]; then
    REPS=1 SHORT_S=2 IDLE_REPS=2 FAILOVER_REPS=1 CPU_REQUESTS=1000
fi
MAX_S=${BENCH_MAX_S:-900}

say() { printf '[bench %5ss] %s\n' "$SECONDS" "$*" >&2; }
die() { say "error: $*"; exit 1; }
skip() { case "$SKIP" in *" $1 "*) return 0 ;; esac; return 1; }

# ---- packages and tools -------------------------------------------------
want=""
command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || want="$want nginx-light"
command -v haproxy >/dev/null || [ -x /usr/sbin/haproxy ] || want="$want haproxy"
command -v wrk >/dev/null || want="$want wrk"
command -v valgrind >/dev/null || want="$want valgrind"
command -v curl >/dev/null || want="$want curl"
command -v python3 >/dev/null || want="$want python3"
if [ -n "$want" ]; then
    say "installing:$want"
    sudo=""; [ "$(id -u)" = 0 ] || sudo=sudo
    $sudo sh -c "apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends$want" >&2
fi
export PATH="$PATH:/usr/sbin:/sbin"
for t in nginx haproxy wrk valgrind callgrind_control curl python3 cc; do
    command -v "$t" >/dev/null || die "$t is missing"
done
[ -x "$B/claude-zephyr" ] && [ -x "$B/fake-upstream" ] || die "run 'make' first (or 'make bench')"
mkdir -p "$OUT"
ZLOAD=$OUT/zload
if [ ! -x "$ZLOAD" ] || [ bench/zload.c -nt "$ZLOAD" ]; then
    cc -O2 -g -std=c11 -Wall -Wextra -o "$ZLOAD" bench/zload.c || die "cannot build bench/zload.c"
fi

# 10,000 streams need two descriptors each in a proxy (client and upstream
# connection).  Raise the soft limit to the hard one, and the hard one too when
# allowed (root with CAP_SYS_RESOURCE); children inherit it.  Where the hard
# limit is lower (containers), the big row runs as many streams as fit.
ulimit -Hn 200000 2>/dev/null || true
NOFILE=$(ulimit -Hn)
[ "$NOFILE" = unlimited ] && NOFILE=1048576
ulimit -n "$NOFILE"
FIT=$(((NOFILE - 2000) / 2)) # headroom: nginx also counts cached and closing connections
BIG_STREAMS=${BENCH_BIG_STREAMS:-$((FIT < 10000 ? FIT : 10000))}
[ "$BIG_STREAMS" -ge 10000 ] || say "note: open-file limit $NOFILE (hard) allows $BIG_STREAMS streams per proxy, not 10,000"
MAXCONN=$(((NOFILE - 100) / 2)) # HAProxy sizes its descriptors from maxconn

# ---- process bookkeeping ----------------------------------------------
T=$(mktemp -d /tmp/zbench.XXXXXX)
chmod 755 "$T" # nginx workers run as nobody
PIDS=()
RES=$OUT/results.tsv
: >"$RES"

forget_pid() { # drop a stopped pid from PIDS so that a reused number is never signalled
    local q keep=()
    for q in "${PIDS[@]}"; do [ "$q" = "$1" ] || keep+=("$q"); done
    PIDS=("${keep[@]}")
}
stop_pid() { # pid: TERM, then KILL (with its children) after 3 s
    local p=$1 i
    [ -n "$p" ] || return 0
    forget_pid "$p"
    kill -0 "$p" 2>/dev/null || { wait "$p" 2>/dev/null || true; return 0; }
    kill -TERM "$p" 2>/dev/null || true
    for i in $(seq 30); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    if kill -0 "$p" 2>/dev/null; then
        local kids; kids=$(ps -o pid= --ppid "$p" 2>/dev/null || true)
        kill -KILL "$p" $kids 2>/dev/null || true
    fi
    wait "$p" 2>/dev/null || true
}
cleanup() {
    local rc=$? p
    set +e
    trap - EXIT INT TERM
    for p in "${PIDS[@]}"; do stop_pid "$p"; done
    if [ -n "${WATCHDOG:-}" ]; then kill "$WATCHDOG" 2>/dev/null; fi
    rm -rf "$OUT/last"
    mkdir -p "$OUT/last"
    cp "$T"/*.conf "$T"/*.toml "$T"/*.log "$OUT/last/" 2>/dev/null || true
    [ "${BENCH_KEEP:-0}" = 1 ] || rm -rf "$T"
    exit "$rc"
}
trap cleanup EXIT
trap 'say "interrupted"; exit 130' INT TERM
# The whole run is bounded: the watchdog interrupts it after MAX_S seconds.
(
    trap 'kill "$s" 2>/dev/null; exit 0' TERM
    sleep "$MAX_S" & s=$!
    wait "$s"
    say "time limit ${MAX_S}s reached"
    kill -TERM $$
) &
WATCHDOG=$!

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}
rss_kb() { awk '/^VmRSS/ {print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }
hwm_kb() { awk '/^VmHWM/ {print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }
tree_mem() { # a process and its children: resident, proportional and private kB
    local p
    for p in "$1" $(ps -o pid= --ppid "$1" 2>/dev/null); do cat "/proc/$p/smaps_rollup" 2>/dev/null; done |
        awk '/^Rss:/ {r += $2} /^Pss:/ {s += $2} /^Private_(Clean|Dirty):/ {v += $2}
             END {printf "rss_kb=%d pss_kb=%d priv_kb=%d", r, s, v}'
}
dead_flag() { kill -0 "$1" 2>/dev/null || echo "crashed=1"; }
worker_pid() { # nginx: the (first) worker of a master; others: the process itself
    local w; w=$(ps -o pid= --ppid "$1" 2>/dev/null | head -1 | tr -d ' ')
    echo "${w:-$1}"
}
rec() { # phase level column rep key=value...
    local ph=$1 lv=$2 col=$3 rep=$4; shift 4
    printf '%s\t%s\t%s\t%s\t%s\n' "$ph" "$lv" "$col" "$rep" "$*" >>"$RES"
}

# ---- the origin -------------------------------------------------------
start_origin() { # name -> ORIGIN_PID ORIGIN_PORT
    local name=$1 i
    "$B/fake-upstream" --port 0 --bind 127.0.0.1 --name "$name" >"$T/origin-$name.port" 2>"$T/origin-$name.log" &
    ORIGIN_PID=$!
    PIDS+=("$ORIGIN_PID")
    for i in $(seq 100); do
        ORIGIN_PORT=$(awk '/^PORT/ {print $2}' "$T/origin-$name.port")
        [ -n "$ORIGIN_PORT" ] && return 0
        sleep 0.05
    done
    die "fake-upstream did not start"
}

# ---- proxy configurations ----------------------------------------------
# nginx_conf name port workers master upstream-lines
nginx_conf() {
    local name=$1 port=$2 workers=$3 master=$4 ups=$5 extra=${6:-}
    mkdir -p "$T/nginx-$name"
    cat >"$T/nginx-$name.conf" <<EOF
worker_processes $workers;
daemon off;
master_process $master;
pid $T/nginx-$name/nginx.pid;
error_log $T/nginx-$name.log warn;
worker_rlimit_nofile $NOFILE;
events { worker_connections $NOFILE; }
http {
    access_log off;
    client_body_temp_path $T/nginx-$name/body;
    proxy_temp_path $T/nginx-$name/proxy;
    keepalive_requests 10000000;
    keepalive_timeout 120s;
    upstream origin {
$ups
        keepalive 256;
        keepalive_requests 10000000;
        keepalive_timeout 120s;
    }
    server {
        listen 127.0.0.1:$port backlog=4096;
        location / {
            proxy_pass http://origin;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_buffering off;
            proxy_request_buffering on;
            proxy_read_timeout 300s;
            proxy_send_timeout 300s;
$extra
        }
    }
}
EOF
    echo "$T/nginx-$name.conf"
}
nginx_cmd() { echo "nginx -p $T/nginx-$1/ -e $T/nginx-$1.log -c $2"; }

# haproxy_conf name port server-lines [extra backend lines]
haproxy_conf() {
    local name=$1 port=$2 servers=$3 extra=${4:-}
    cat >"$T/haproxy-$name.conf" <<EOF
global
    nbthread 1
    maxconn $MAXCONN
defaults
    mode http
    option http-no-delay
    http-reuse always
    maxconn $MAXCONN
    timeout connect 5s
    timeout client 300s
    timeout server 300s
    timeout http-request 30s
    timeout http-keep-alive 120s
frontend fe
    bind 127.0.0.1:$port
    default_backend be
backend be
$extra
$servers
EOF
    echo "$T/haproxy-$name.conf"
}
haproxy_cmd() { echo "haproxy -db -f $1"; }

# zephyr_conf name port endpoint-lines
zephyr_conf() {
    local name=$1 port=$2 eps=$3
    cat >"$T/zephyr-$name.toml" <<EOF
[server]
bind = "127.0.0.1"
port = $port
log_level = "warn"
max_connections = 40000
keepalive_timeout_ms = 120000
http_client = "${BENCH_ZEPHYR_CLIENT:-builtin}"

[[groups]]
name = "bench"
endpoints = [
$eps
]

[health_check]
method = "count_tokens"
interval_seconds = 3600
timeout_seconds = 10
failed_interval_seconds = 1
EOF
    echo "$T/zephyr-$name.toml"
}
zephyr_cmd() { echo "$B/claude-zephyr --config $1"; }

# start_cmd name port command... -> STARTED_PID (waits until it answers)
start_cmd() {
    local name=$1 port=$2; shift 2
    # shellcheck disable=SC2068
    $@ >>"$T/$name.log" 2>&1 &
    STARTED_PID=$!
    PIDS+=("$STARTED_PID")
    local i
    for ((i = 0; i < ${PROBE_S:-15} * 2; i++)); do
        "$ZLOAD" probe --port "$port" --timeout-s 0.5 && return 0
        kill -0 "$STARTED_PID" 2>/dev/null || break
    done
    cat "$T/$name.log" >&2
    die "$name did not answer on port $port"
}

# The standing proxies for the short and SSE rows, all in front of one origin.
declare -A PORT PID CMD
# A standing proxy that died during a measurement is restarted (the crash is
# recorded with that measurement, which the report leaves out of the medians).
ensure_alive() { # column -> CRASHED="crashed=1" when it had died, else ""
    local col=$1
    CRASHED=""
    [ "$col" = direct ] && col=origin
    [ -n "${PID[$col]:-}" ] || return 0
    kill -0 "${PID[$col]}" 2>/dev/null && return 0
    wait "${PID[$col]}" 2>/dev/null || true
    forget_pid "${PID[$col]}"
    say "$col died (see $OUT/last/$col-main.log); restarting it"
    CRASHED="crashed=1"
    [ "$col" = origin ] && die "the origin died"
    start_cmd "$col-main" "${PORT[$col]}" "${CMD[$col]}"
    PID[$col]=$STARTED_PID
}
start_standing() {
    start_origin origin
    PORT[direct]=$ORIGIN_PORT
    PID[origin]=$ORIGIN_PID
    local ups="        server 127.0.0.1:$ORIGIN_PORT;" c
    PORT[nginx]=$(free_port)
    c=$(nginx_conf main "${PORT[nginx]}" 1 on "$ups"); CMD[nginx]=$(nginx_cmd main "$c")
    start_cmd nginx-main "${PORT[nginx]}" "${CMD[nginx]}"; PID[nginx]=$STARTED_PID
    if [ "$NGINX_AUTO" = 1 ]; then
        PORT[nginx2]=$(free_port)
        c=$(nginx_conf auto "${PORT[nginx2]}" auto on "$ups"); CMD[nginx2]=$(nginx_cmd auto "$c")
        start_cmd nginx2-main "${PORT[nginx2]}" "${CMD[nginx2]}"; PID[nginx2]=$STARTED_PID
    fi
    PORT[haproxy]=$(free_port)
    c=$(haproxy_conf main "${PORT[haproxy]}" "    server origin 127.0.0.1:$ORIGIN_PORT maxconn $MAXCONN"); CMD[haproxy]=$(haproxy_cmd "$c")
    start_cmd haproxy-main "${PORT[haproxy]}" "${CMD[haproxy]}"; PID[haproxy]=$STARTED_PID
    PORT[zephyr]=$(free_port)
    c=$(zephyr_conf main "${PORT[zephyr]}" "  { url = \"http://127.0.0.1:$ORIGIN_PORT\", name = \"origin\" },"); CMD[zephyr]=$(zephyr_cmd "$c")
    start_cmd zephyr-main "${PORT[zephyr]}" "${CMD[zephyr]}"; PID[zephyr]=$STARTED_PID
}

# The 1-connection rows measure the work on a request's path.  Unpinned, the
# processes ping-pong between CPUs and each hop pays the (virtual) CPU's wake
# from idle, which varied 4x between identical runs here; pinned to one CPU
# the figure is stable.  LAST_CPU runs the origin, the proxies and the client.
LAST_CPU=$(($(nproc) - 1))
pin_all() { # cpu list: every standing process (and its threads and children)
    local p q
    for p in "${PID[@]}"; do
        for q in "$p" $(ps -o pid= --ppid "$p" 2>/dev/null); do
            taskset -apc "$1" "$q" >/dev/null 2>&1 || true
        done
    done
}

COLS=(direct nginx haproxy zephyr)
rotate() { # rep -> the columns, starting at a different one each repetition
    local r=$1 n=${#COLS[@]} i
    for ((i = 0; i < n; i++)); do echo "${COLS[$(((i + r) % n))]}"; done
}

# ---- machine ----------------------------------------------------------
{
    echo "date: $(date -u '+%Y-%m-%d %H:%M UTC')"
    echo "cpu: $(nproc) x $(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo)"
    echo "memory: $(awk '/MemTotal/ {printf "%.1f GiB", $2/1048576}' /proc/meminfo)"
    echo "kernel: $(uname -r); $(. /etc/os-release; echo "$PRETTY_NAME")"
    echo "nginx: $(nginx -v 2>&1 | sed 's/.*\///'); haproxy: $(haproxy -v | head -1 | awk '{print $3}'); wrk: $(dpkg-query -W -f='${Version}' wrk 2>/dev/null); valgrind: $(valgrind --version)"
    echo "claude-zephyr: $(git -C "$ROOT" describe --always --dirty 2>/dev/null || echo unknown); libcurl $(curl-config --version 2>/dev/null | awk '{print $2}' || true)"
    echo "load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
} >"$OUT/machine.txt"
say "$(tr '\n' ';' <"$OUT/machine.txt")"

# ---- short non-streaming requests --------------------------------------
phase_short() {
    local rep c col out pin
    for ((rep = 1; rep <= REPS; rep++)); do
        for c in 1 50 256; do
            pin=""
            if [ "$c" = 1 ]; then pin="taskset -c $LAST_CPU"; pin_all "$LAST_CPU"; fi
            for col in $(rotate "$rep") $([ "$NGINX_AUTO" = 1 ] && [ "$c" != 1 ] && echo nginx2); do
                ensure_alive "$col"
                [ "$c" = 1 ] && pin_all "$LAST_CPU" # a restarted proxy too
                out=$(timeout -k 2 $((SHORT_S + 20)) $pin wrk -t1 -c"$c" -d"${SHORT_S}s" --timeout 5s \
                    -s bench/post.lua "http://127.0.0.1:${PORT[$col]}/v1/messages" 2>&1 |
                    grep '^RESULT' || echo "RESULT failed=1")
                ensure_alive "$col"
                rec short "$c" "$col" "$rep" "${out#RESULT } $CRASHED"
            done
            [ "$c" = 1 ] && pin_all "0-$LAST_CPU"
        done
        say "short requests: repetition $rep/$REPS done"
    done
}

# ---- SSE streams ---------------------------------------------------------
phase_sse() {
    local rep n col out ramp
    for ((rep = 1; rep <= REPS; rep++)); do
        for n in 1 100 1000; do
            ramp=$((n >= 1000 ? 1000 : n))
            [ "$n" = 1 ] && ramp=0
            for col in $(rotate "$rep"); do
                ensure_alive "$col"
                out=$(timeout -k 2 60 "$ZLOAD" sse --port "${PORT[$col]}" --streams "$n" \
                    --events $SSE_EVENTS --gap-ms $SSE_GAP_MS --ramp-ms "$ramp" --timeout-s 40 ||
                    echo "failed=1")
                ensure_alive "$col"
                rec sse "$n" "$col" "$rep" "$out $CRASHED"
            done
        done
        say "SSE streams: repetition $rep/$REPS done"
    done
}

# ---- 10,000 concurrent long-lived streams ----------------------------------
# Each proxy is started fresh so that its peak resident memory (VmHWM) belongs
# to this phase alone; memory per stream = (peak - idle before) / streams.
phase_big() {
    local col port c pid wpid idle out peak ups="        server 127.0.0.1:${PORT[direct]};"
    for col in direct nginx haproxy zephyr; do
        pid="" wpid=""
        case $col in
        direct) port=${PORT[direct]} ;;
        nginx)
            port=$(free_port); c=$(nginx_conf big "$port" 1 on "$ups")
            start_cmd nginx-big "$port" "$(nginx_cmd big "$c")"; pid=$STARTED_PID ;;
        haproxy)
            port=$(free_port); c=$(haproxy_conf big "$port" "    server origin 127.0.0.1:${PORT[direct]} maxconn $MAXCONN")
            start_cmd haproxy-big "$port" "$(haproxy_cmd "$c")"; pid=$STARTED_PID ;;
        zephyr)
            port=$(free_port); c=$(zephyr_conf big "$port" "  { url = \"http://127.0.0.1:${PORT[direct]}\", name = \"origin\" },")
            start_cmd zephyr-big "$port" "$(zephyr_cmd "$c")"; pid=$STARTED_PID ;;
        esac
        idle=0
        if [ -n "$pid" ]; then
            sleep 0.5
            wpid=$(worker_pid "$pid")
            idle=$(rss_kb "$wpid")
        fi
        out=$(timeout -k 2 90 "$ZLOAD" sse --port "$port" --streams "$BIG_STREAMS" --events $BIG_EVENTS \
            --gap-ms $BIG_GAP_MS --ramp-ms $BIG_RAMP_MS --timeout-s 60 || echo "failed=1")
        peak=0 dead=""
        if [ -n "$wpid" ]; then peak=$(hwm_kb "$wpid"); dead=$(dead_flag "$pid"); fi
        rec big "$BIG_STREAMS" "$col" 1 "$out idle_kb=$idle peak_kb=$peak $dead"
        say "$BIG_STREAMS streams via $col: $out peak_kb=$peak idle_kb=$idle"
        if [ -n "$pid" ]; then stop_pid "$pid"; fi
    done
}

# ---- idle memory and start-up time -----------------------------------------
phase_idle() {
    local rep col port c out pid
    local ups="        server 127.0.0.1:${PORT[direct]};"
    for ((rep = 1; rep <= IDLE_REPS; rep++)); do
        for col in nginx haproxy zephyr; do
            port=$(free_port)
            case $col in
            nginx) c=$(nginx_conf idle "$port" 1 on "$ups"); set -- $(nginx_cmd idle "$c") ;;
            haproxy) c=$(haproxy_conf idle "$port" "    server origin 127.0.0.1:${PORT[direct]}"); set -- $(haproxy_cmd "$c") ;;
            zephyr) c=$(zephyr_conf idle "$port" "  { url = \"http://127.0.0.1:${PORT[direct]}\", name = \"origin\" },"); set -- $(zephyr_cmd "$c") ;;
            esac
            out=$("$ZLOAD" startup --port "$port" --timeout-s 15 --log "$T/$col-idle.log" -- "$@" || true)
            pid=$(sed -n 's/.*pid=\([0-9]*\).*/\1/p' <<<"$out")
            if [ -z "$pid" ] || [ "$pid" = 0 ]; then
                rec idle 0 "$col" "$rep" "$out rss_kb=0"
                continue
            fi
            PIDS+=("$pid")
            sleep 1
            rec idle 0 "$col" "$rep" "$out $(tree_mem "$pid")"
            stop_pid "$pid"
        done
    done
    say "idle memory and start-up: done"
}

# ---- failover under load -------------------------------------------------
# Two origins "a" and "b"; the proxy sends to one of them; 1.5 s into a 5 s
# run at 50 connections that origin is killed (SIGKILL) by the load client.
phase_failover() {
    local rep col port c pid pa pb porta portb active apid out
    for ((rep = 1; rep <= FAILOVER_REPS; rep++)); do
        for col in nginx haproxy zephyr; do
            start_origin a; pa=$ORIGIN_PID porta=$ORIGIN_PORT
            start_origin b; pb=$ORIGIN_PID portb=$ORIGIN_PORT
            disown "$pa" "$pb" # no "Killed" notice for the origin the client kills
            port=$(free_port)
            case $col in
            nginx)
                c=$(nginx_conf fo "$port" 1 on "        server 127.0.0.1:$porta max_fails=1 fail_timeout=10s;
        server 127.0.0.1:$portb backup;" "            proxy_next_upstream error timeout http_502 http_503 http_504 non_idempotent;")
                start_cmd nginx-fo "$port" "$(nginx_cmd fo "$c")" ;;
            haproxy)
                c=$(haproxy_conf fo "$port" "    server a 127.0.0.1:$porta check inter 1s fall 1 rise 2
    server b 127.0.0.1:$portb check inter 1s backup" "    retries 3
    option redispatch 1
    retry-on all-retryable-errors")
                start_cmd haproxy-fo "$port" "$(haproxy_cmd "$c")" ;;
            zephyr)
                c=$(zephyr_conf fo "$port" "  { url = \"http://127.0.0.1:$porta\", name = \"a\" },
  { url = \"http://127.0.0.1:$portb\", name = \"b\" },")
                start_cmd zephyr-fo "$port" "$(zephyr_cmd "$c")" ;;
            esac
            pid=$STARTED_PID
            "$ZLOAD" short --port "$port" --conns 8 --requests 500 >/dev/null || true
            active=$(curl -s -m 5 -D - -o /dev/null -X POST -H 'content-type: application/json' \
                -d '{"model":"m","max_tokens":1,"messages":[]}' "http://127.0.0.1:$port/v1/messages" |
                tr -d '\r' | awk 'tolower($1) == "x-fake-name:" {print $2}' || true)
            apid=$pa; [ "$active" = b ] && apid=$pb
            out=$(timeout -k 2 30 "$ZLOAD" short --port "$port" --conns 50 --duration-s 5 \
                --kill-pid "$apid" --kill-at-ms 1500 --bad-name "${active:-a}" || echo "failed=1")
            rec failover 50 "$col" "$rep" "$out active=${active:-?} $(dead_flag "$pid")"
            stop_pid "$pid"; stop_pid "$pa"; stop_pid "$pb"
        done
        say "failover: repetition $rep/$FAILOVER_REPS done"
    done
}

# ---- CPU cost: instructions per proxied request (callgrind) -----------------
# perf's hardware counters are often unavailable in VMs; callgrind counts
# instructions exactly.  Instrumentation is switched on only around the
# measured requests (after start-up and a warm-up).
phase_cpu() {
    local col port c pid ir out
    local ups="        server 127.0.0.1:${PORT[direct]};"
    for col in nginx haproxy zephyr; do
        port=$(free_port)
        case $col in
        nginx) c=$(nginx_conf cg "$port" 1 off "$ups"); set -- $(nginx_cmd cg "$c") ;;
        haproxy) c=$(haproxy_conf cg "$port" "    server origin 127.0.0.1:${PORT[direct]}"); set -- $(haproxy_cmd "$c") ;;
        zephyr) c=$(zephyr_conf cg "$port" "  { url = \"http://127.0.0.1:${PORT[direct]}\", name = \"origin\" },"); set -- $(zephyr_cmd "$c") ;;
        esac
        rm -f "$T/cg.$col".*
        PROBE_S=90 start_cmd "$col-cg" "$port" valgrind --tool=callgrind --instr-atstart=no \
            --callgrind-out-file="$T/cg.$col.out" "$@"
        pid=$STARTED_PID
        "$ZLOAD" short --port "$port" --conns 8 --requests 200 >/dev/null || true
        timeout 20 callgrind_control -i on "$pid" >/dev/null 2>&1 || true
        out=$(timeout -k 2 120 "$ZLOAD" short --port "$port" --conns 8 --requests "$CPU_REQUESTS" || echo "ok=0")
        timeout 20 callgrind_control -d "$pid" >/dev/null 2>&1 || true
        ir=$(awk '/^totals:/ {print $2}' "$T/cg.$col.out".* 2>/dev/null | tail -1)
        rec cpu 8 "$col" 1 "$out ir=${ir:-0} requests=$CPU_REQUESTS $(dead_flag "$pid")"
        if [ "$col" = zephyr ]; then
            cp "$(ls "$T/cg.$col.out".* | tail -1)" "$OUT/callgrind.zephyr.out" 2>/dev/null || true
            callgrind_annotate --inclusive=no "$OUT/callgrind.zephyr.out" 2>/dev/null | head -60 >"$OUT/profile-zephyr.txt" || true
        fi
        stop_pid "$pid"
        say "CPU cost via $col: $((${ir:-0} / CPU_REQUESTS)) instructions per request"
    done
}

say "starting origin and proxies"
start_standing
say "ports: direct=${PORT[direct]} nginx=${PORT[nginx]} haproxy=${PORT[haproxy]} zephyr=${PORT[zephyr]}"
skip short || phase_short
skip sse || phase_sse
skip big || phase_big
skip idle || phase_idle
skip failover || phase_failover
skip cpu || phase_cpu
say "load average at end: $(cut -d' ' -f1-3 /proc/loadavg)"

python3 bench/report.py "$RES" "$OUT/machine.txt" "$OUT"
