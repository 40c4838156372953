#!/usr/bin/env bash
# The https rows of `make bench` (after bench/run.sh): the proxies in front of
# one origin reached over TLS.
#
#   origin-tls  build/fake-upstream behind HAProxy terminating TLS (1 thread,
#               ALPN h2 and http/1.1), with a certificate for 127.0.0.1 from
#               a CA this run generates
#   nginx       proxy_pass https://, upstream keepalive 256,
#               proxy_ssl_session_reuse on, proxy_ssl_verify on, 1 worker,
#               proxy_ssl_protocols TLSv1.2 TLSv1.3 (nginx before 1.23.4
#               stops at TLS 1.2 by default, whose resumption skips the
#               ECDHE that a TLS 1.3 resumption does: not the same work)
#   haproxy     server ... ssl verify required, http-reuse always, 1 thread
#   zephyr      an https:// endpoint (built-in client; BENCH_ZEPHYR_CLIENT=
#               libcurl for the libcurl path), trusting the CA via SSL_CERT_FILE;
#               it takes h2 from the origin (ALPN), nginx and HAProxy http/1.1
#   zephyr-h1   the same with [server] http2 = false (BENCH_ZEPHYR_H1=1, the
#               default; 0 leaves the column out): what h2 changes
#
# The load tool (bench/zload) speaks plain HTTP to each proxy; TLS is on the
# proxy's upstream side, as for a real endpoint.  Rows: requests per second
# (non-streaming POST /v1/messages) at 50 and 256 connections, p50 latency at
# 1 connection (and the same through the plain origin: "added" is the
# difference, so the origin's own TLS hop is in every proxy's figure alike),
# and the resident memory after the load (pooled connections open).
#
# Knobs: BENCH_REPS (3), BENCH_SHORT_S (5), BENCH_QUICK=1 (1 repetition, 3 s),
# BENCH_OUT (build/bench), BENCH_BUILD (build), BENCH_ZEPHYR_H1 (1),
# BENCH_HTTPS_STREAMS (1000 SSE streams; 9000 needs an open-file limit of
# 20,000), BENCH_HTTPS_RAMP_MS (1000), BENCH_SKIP_SHORT=1 (only the SSE, idle
# and CPU rows), BENCH_SKIP_IDLE, BENCH_SKIP_SSE, BENCH_SKIP_CPU.  Bounded: every load phase
# has a timeout and every process started here is stopped on exit.
# shellcheck disable=SC2086
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
B=${BENCH_BUILD:-$ROOT/build}
OUT=${BENCH_OUT:-$ROOT/build/bench}
REPS=${BENCH_REPS:-3}
DUR=${BENCH_SHORT_S:-5}
if [ "${BENCH_QUICK:-0}" = 1 ]; then REPS=1 DUR=3; fi
NSTREAMS=${BENCH_HTTPS_STREAMS:-1000}
RAMP_MS=${BENCH_HTTPS_RAMP_MS:-1000}
# The origin front and nginx hold a descriptor per stream on each side.
MAXC=$((NSTREAMS + 1000 > 4000 ? NSTREAMS + 1000 : 4000))
NOFILE=$(ulimit -Hn); [ "$NOFILE" = unlimited ] && NOFILE=1048576
[ $((2 * MAXC + 100)) -le "$NOFILE" ] || MAXC=$(((NOFILE - 100) / 2)) # HAProxy wants 2 x maxconn descriptors
ZCOLS="zephyr"
[ "${BENCH_ZEPHYR_H1:-1}" = 1 ] && ZCOLS="zephyr zephyr-h1"
export PATH="$PATH:/usr/sbin:/sbin"

say() { printf '[https %5ss] %s\n' "$SECONDS" "$*" >&2; }
die() { say "error: $*"; exit 1; }
for t in nginx haproxy openssl python3 cc curl; do command -v "$t" >/dev/null || die "$t is missing (bench/run.sh installs it)"; done
[ -x "$B/claude-zephyr" ] && [ -x "$B/fake-upstream" ] || die "run 'make' first"
mkdir -p "$OUT"
ZLOAD=$OUT/zload
if [ ! -x "$ZLOAD" ] || [ bench/zload.c -nt "$ZLOAD" ]; then
    cc -O2 -g -std=c11 -Wall -Wextra -o "$ZLOAD" bench/zload.c || die "cannot build bench/zload.c"
fi
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

T=$(mktemp -d /tmp/zhttps.XXXXXX)
chmod 755 "$T"
PIDS=()
cleanup() {
    local p
    set +e
    for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null; done
    for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null; done
    [ "${BENCH_KEEP:-0}" = 1 ] || rm -rf "$T"
}
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
tree_rss() { # a process and its children, kB
    local p r=0
    for p in "$1" $(ps -o pid= --ppid "$1" 2>/dev/null); do
        r=$((r + $(awk '/^VmRSS/ {print $2}' "/proc/$p/status" 2>/dev/null || echo 0)))
    done
    echo "$r"
}
start_cmd() { # name port command... -> STARTED_PID
    local name=$1 port=$2 i; shift 2
    "$@" >>"$T/$name.log" 2>&1 &
    STARTED_PID=$!
    PIDS+=("$STARTED_PID")
    for ((i = 0; i < 30; i++)); do
        if [ "$name" = origin-tls ]; then # TLS: any HTTP answer over https
            curl -s -o /dev/null -m 0.5 --cacert "$T/ca.pem" "https://127.0.0.1:$port/" && return 0
            sleep 0.1
        else
            "$ZLOAD" probe --port "$port" --timeout-s 0.5 && return 0
        fi
    done
    cat "$T/$name.log" >&2
    die "$name did not answer on port $port"
}

# ---- certificates ------------------------------------------------------------
(
    cd "$T"
    ec=(-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes)
    openssl req -x509 "${ec[@]}" -keyout ca.key -out ca.pem -days 30 -subj "/CN=zephyr bench CA" \
        -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign
    openssl req "${ec[@]}" -keyout srv.key -out srv.csr -subj "/CN=127.0.0.1"
    printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n' >srv.ext
    openssl x509 -req -in srv.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 30 \
        -extfile srv.ext -out srv.pem
    cat srv.pem srv.key >srv.combined.pem
) >"$T/pki.log" 2>&1 || { cat "$T/pki.log" >&2; die "openssl could not make the test certificates"; }

# ---- the origin and its TLS front ---------------------------------------------
"$B/fake-upstream" --port 0 --bind 127.0.0.1 --name origin >"$T/origin.port" 2>"$T/origin.log" &
PIDS+=($!)
for ((i = 0; i < 100; i++)); do
    OPORT=$(awk '/^PORT/ {print $2}' "$T/origin.port")
    [ -n "$OPORT" ] && break
    sleep 0.05
done
[ -n "$OPORT" ] || die "fake-upstream did not start"
TPORT=$(free_port)
cat >"$T/origin-tls.conf" <<EOF
global
    nbthread 1
    maxconn $MAXC
defaults
    mode http
    option http-no-delay
    http-reuse always
    timeout connect 5s
    timeout client 300s
    timeout server 300s
    timeout http-keep-alive 300s
frontend fe
    bind 127.0.0.1:$TPORT ssl crt $T/srv.combined.pem alpn h2,http/1.1
    default_backend be
backend be
    server origin 127.0.0.1:$OPORT maxconn $MAXC
EOF
start_cmd origin-tls "$TPORT" haproxy -db -f "$T/origin-tls.conf"

# ---- the proxies -----------------------------------------------------------------
declare -A PORT PID
PORT[nginx]=$(free_port)
mkdir -p "$T/nginx"
cat >"$T/nginx.conf" <<EOF
worker_processes 1;
daemon off;
master_process off;
pid $T/nginx/nginx.pid;
error_log $T/nginx.log warn;
worker_rlimit_nofile $(ulimit -n);
events { worker_connections $((2 * MAXC)); }
http {
    access_log off;
    client_body_temp_path $T/nginx/body;
    proxy_temp_path $T/nginx/proxy;
    keepalive_requests 10000000;
    keepalive_timeout 120s;
    upstream origin {
        server 127.0.0.1:$TPORT;
        keepalive 256;
        keepalive_requests 10000000;
        keepalive_timeout 120s;
    }
    server {
        listen 127.0.0.1:${PORT[nginx]} backlog=4096;
        location / {
            proxy_pass https://origin;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_buffering off;
            proxy_ssl_session_reuse on;
            proxy_ssl_protocols TLSv1.2 TLSv1.3;
            proxy_ssl_verify on;
            proxy_ssl_trusted_certificate $T/ca.pem;
            proxy_ssl_name localhost;
            proxy_read_timeout 300s;
        }
    }
}
EOF
start_cmd nginx "${PORT[nginx]}" nginx -p "$T/nginx/" -e "$T/nginx.log" -c "$T/nginx.conf"
PID[nginx]=$STARTED_PID

PORT[haproxy]=$(free_port)
cat >"$T/haproxy.conf" <<EOF
global
    nbthread 1
    maxconn $MAXC
defaults
    mode http
    option http-no-delay
    http-reuse always
    timeout connect 5s
    timeout client 300s
    timeout server 300s
    timeout http-keep-alive 120s
frontend fe
    bind 127.0.0.1:${PORT[haproxy]}
    default_backend be
backend be
    server origin 127.0.0.1:$TPORT ssl verify required ca-file $T/ca.pem maxconn $MAXC
EOF
start_cmd haproxy "${PORT[haproxy]}" haproxy -db -f "$T/haproxy.conf"
PID[haproxy]=$STARTED_PID

for zc in $ZCOLS; do
PORT[$zc]=$(free_port)
h2=true; [ "$zc" = zephyr-h1 ] && h2=false
cat >"$T/$zc.toml" <<EOF
[server]
bind = "127.0.0.1"
port = ${PORT[$zc]}
log_level = "warn"
max_connections = 40000
keepalive_timeout_ms = 120000
http_client = "${BENCH_ZEPHYR_CLIENT:-builtin}"
http2 = $h2

[[groups]]
name = "bench"
endpoints = [ { url = "https://127.0.0.1:$TPORT", name = "origin" } ]

[health_check]
method = "count_tokens"
interval_seconds = 3600
timeout_seconds = 10
EOF
SSL_CERT_FILE=$T/ca.pem CURL_CA_BUNDLE=$T/ca.pem start_cmd "$zc" "${PORT[$zc]}" "$B/claude-zephyr" --config "$T/$zc.toml"
PID[$zc]=$STARTED_PID
done
sleep 1 # the start-up health check (bounded; not a synchronisation)
declare -A ZIDLE
for zc in $ZCOLS; do ZIDLE[$zc]=$(tree_rss "${PID[$zc]}"); done

# ---- measurements --------------------------------------------------------------------
RES=$OUT/https.tsv
: >"$RES"
field() { sed -n "s/.*\b$1=\([0-9.]*\).*/\1/p" <<<"$2"; }
PCOLS="nginx haproxy $ZCOLS"
for col in $PCOLS; do
    "$ZLOAD" short --port "${PORT[$col]}" --conns 8 --requests 500 >/dev/null || true
done
[ "${BENCH_SKIP_SHORT:-0}" = 1 ] && REPS=0
for ((rep = 1; rep <= REPS; rep++)); do
    printf 'load\t0\tall\t%s\tload1=%s\n' "$rep" "$(cut -d' ' -f1 /proc/loadavg)" >>"$RES"
    for c in 50 256; do
        for col in $PCOLS; do
            out=$(timeout -k 2 60 "$ZLOAD" short --port "${PORT[$col]}" --conns $c --duration-s "$DUR" || echo "rps=0 failed=-1")
            printf 'rps\t%s\t%s\t%s\t%s\n' "$c" "$col" "$rep" "$out" >>"$RES"
        done
    done
    for col in direct $PCOLS; do
        port=${PORT[$col]:-$OPORT}
        out=$(timeout -k 2 60 "$ZLOAD" short --port "$port" --conns 1 --duration-s "$DUR" || echo "lat_p50_us=0")
        printf 'c1\t1\t%s\t%s\t%s\n' "$col" "$rep" "$out" >>"$RES"
    done
    say "repetition $rep/$REPS done"
done
for col in $PCOLS; do
    printf 'rss\t0\t%s\t1\trss_kb=%s\n' "$col" "$(tree_rss "${PID[$col]}")" >>"$RES"
done
# One TLS handshake per pooled connection, not per request: zephyr's count.
for zc in $ZCOLS; do
    printf 'rss_start\t0\t%s\t1\trss_kb=%s\n' "$zc" "${ZIDLE[$zc]}" >>"$RES"
    hs=$(curl -s -m 5 "http://127.0.0.1:${PORT[$zc]}/metrics" | awk '/^zephyr_upstream_tls_handshakes_total/ {n += $2} END {print n + 0}')
    printf 'handshakes\t0\t%s\t1\tn=%s\n' "$zc" "$hs" >>"$RES"
done

# The first request after a pause longer than zephyr's pool idle timeout
# (50 s): with warm connections it finds a verified connection; without, it
# pays a connect and a (resumed) handshake.  One request per proxy, then a
# second one for comparison.
IDLE_S=${BENCH_IDLE_S:-65}
if [ "${BENCH_SKIP_IDLE:-0}" != 1 ]; then
    say "idle for ${IDLE_S}s before the first-request-after-idle row"
    sleep "$IDLE_S" # the pause being measured, not a synchronisation
    for col in direct $PCOLS; do # direct: the plain origin, no TLS
        a=$("$ZLOAD" short --port "${PORT[$col]:-$OPORT}" --conns 1 --requests 1 || echo "lat_p50_us=0")
        b=$("$ZLOAD" short --port "${PORT[$col]:-$OPORT}" --conns 1 --requests 1 || echo "lat_p50_us=0")
        printf 'idle\t%s\t%s\t1\tfirst_us=%s next_us=%s\n' "$IDLE_S" "$col" "$(field lat_p50_us "$a")" "$(field lat_p50_us "$b")" >>"$RES"
    done
fi

# Concurrent SSE streams through a fresh proxy (a cold pool: every stream
# needs a new TLS connection, or over h2 a stream on one of few): memory per
# stream from the peak over the idle resident size, and the time to the first
# event; then the same streams again at once (a warm pool: what the first
# pass left open, up to nginx's keepalive 256).
if [ "${BENCH_SKIP_SSE:-0}" != 1 ]; then
    for col in nginx $ZCOLS; do
        port=$(free_port)
        case $col in
        nginx) sed "s/listen 127.0.0.1:${PORT[nginx]} /listen 127.0.0.1:$port /; s#pid $T/nginx/nginx.pid#pid $T/nginx/sse.pid#" "$T/nginx.conf" >"$T/nginx-sse.conf"
               set -- nginx -p "$T/nginx/" -e "$T/nginx.log" -c "$T/nginx-sse.conf" ;;
        zephyr*) sed "s/^port = .*/port = $port/" "$T/$col.toml" >"$T/$col-sse.toml"
                set -- "$B/claude-zephyr" --config "$T/$col-sse.toml" ;;
        esac
        SSL_CERT_FILE=$T/ca.pem start_cmd "$col-sse" "$port" "$@"
        pid=$STARTED_PID
        sleep 0.5 # the start-up check (bounded; not a synchronisation)
        idle=$(awk '/^VmRSS/ {print $2}' "/proc/$pid/status")
        # The resident size in the middle of the streams (all open, the
        # handshakes over) besides the peak, which includes the ramp's
        # concurrent handshakes.
        ( sleep 7; awk '/^VmRSS/ {print $2}' "/proc/$pid/status" >"$T/mid.$col" ) &
        mid_pid=$!
        out=$(timeout -k 2 120 "$ZLOAD" sse --port "$port" --streams "$NSTREAMS" --events 10 \
            --gap-ms 1000 --ramp-ms "$RAMP_MS" --timeout-s 60 || echo "failed=1")
        wait "$mid_pid" 2>/dev/null || true
        peak=$(awk '/^VmHWM/ {print $2}' "/proc/$pid/status")
        printf 'sse\t%s\t%s\t1\t%s idle_kb=%s peak_kb=%s mid_kb=%s\n' "$NSTREAMS" "$col" "$out" "$idle" "$peak" "$(cat "$T/mid.$col" 2>/dev/null || echo 0)" >>"$RES"
        say "$NSTREAMS streams via $col: $out idle_kb=$idle peak_kb=$peak"
        out=$(timeout -k 2 120 "$ZLOAD" sse --port "$port" --streams "$NSTREAMS" --events 10 \
            --gap-ms 1000 --ramp-ms "$RAMP_MS" --timeout-s 60 || echo "failed=1")
        printf 'ssewarm\t%s\t%s\t1\t%s\n' "$NSTREAMS" "$col" "$out" >>"$RES"
        say "again, warm pool: $out"
        kill -TERM "$pid" 2>/dev/null; wait "$pid" 2>/dev/null || true
    done
fi

# CPU cost: instructions per proxied request (callgrind; exact where the
# shared machine makes req/s noisy).  Each proxy runs again under valgrind
# on its own port, instrumented only around the measured requests.
NREQ=${BENCH_CPU_REQUESTS:-1000}
if [ "${BENCH_SKIP_CPU:-0}" != 1 ] && command -v valgrind >/dev/null; then
    for col in $PCOLS; do
        port=$(free_port)
        case $col in
        nginx) sed "s/listen 127.0.0.1:${PORT[nginx]} /listen 127.0.0.1:$port /; s#pid $T/nginx/nginx.pid#pid $T/nginx/cg.pid#" "$T/nginx.conf" >"$T/nginx-cg.conf"
               set -- nginx -p "$T/nginx/" -e "$T/nginx.log" -c "$T/nginx-cg.conf" ;;
        haproxy) sed "s/bind 127.0.0.1:${PORT[haproxy]}/bind 127.0.0.1:$port/" "$T/haproxy.conf" >"$T/haproxy-cg.conf"
                 set -- haproxy -db -f "$T/haproxy-cg.conf" ;;
        zephyr*) sed "s/^port = .*/port = $port/" "$T/$col.toml" >"$T/$col-cg.toml"
                set -- "$B/claude-zephyr" --config "$T/$col-cg.toml" ;;
        esac
        SSL_CERT_FILE=$T/ca.pem CURL_CA_BUNDLE=$T/ca.pem start_cmd "$col-cg" "$port" valgrind --tool=callgrind --instr-atstart=no \
            --callgrind-out-file="$T/cg.$col.out" "$@" || continue
        pid=$STARTED_PID
        "$ZLOAD" short --port "$port" --conns 8 --requests 200 >/dev/null || true
        timeout 20 callgrind_control -i on "$pid" >/dev/null 2>&1 || true
        timeout -k 2 180 "$ZLOAD" short --port "$port" --conns 8 --requests "$NREQ" >/dev/null || true
        timeout 20 callgrind_control -d "$pid" >/dev/null 2>&1 || true
        ir=$(awk '/^totals:/ {print $2}' "$T/cg.$col.out"* 2>/dev/null | sort -n | tail -1)
        printf 'cpu\t8\t%s\t1\tir_per_req=%s\n' "$col" "$(( ${ir:-0} / NREQ ))" >>"$RES"
        if [ "${col%-h1}" = zephyr ]; then
            f=$(ls -S "$T/cg.$col.out"* | head -1)
            cp "$f" "$OUT/callgrind.$col-https.out"
            callgrind_annotate --inclusive=no "$f" 2>/dev/null | head -60 >"$OUT/profile-$col-https.txt" || true
        fi
        kill -TERM "$pid" 2>/dev/null; wait "$pid" 2>/dev/null || true
        say "CPU cost via $col: $(( ${ir:-0} / NREQ )) instructions per request"
    done
fi

python3 - "$RES" <<'EOF'
import re, statistics, sys
rows = [l.rstrip("\n").split("\t") for l in open(sys.argv[1])]
def val(kv, k):
    m = re.search(r"\b%s=([0-9.]+)" % k, kv)
    return float(m.group(1)) if m else None
def vals(kind, lv, col, k):
    v = [val(r[4], k) for r in rows if r[0] == kind and r[1] == lv and r[2] == col]
    return [x for x in v if x is not None]
def med(kind, lv, col, k):
    v = vals(kind, lv, col, k)
    return statistics.median(v) if v else None
cols = ["nginx", "haproxy"] + [c for c in ("zephyr", "zephyr-h1") if any(r[2] == c for r in rows)]
nrep = max([int(r[3]) for r in rows if r[0] == "rps"] or [0])
W = "%-28s" + " %12s" * len(cols)
def f(x, fmt):
    return fmt % x if x is not None else "-"
load = vals("load", "0", "all", "load1")
print("https rows (TLS between proxy and origin), medians of %d run(s); load1 at each repetition: %s"
      % (nrep, " ".join("%.2f" % x for x in load)))
print((W + "  z/nginx (per run)") % ("", *cols))
for c in ("50", "256"):
    v = [med("rps", c, col, "rps") for col in cols]
    per = [round(z / n, 2) for z, n in zip(vals("rps", c, "zephyr", "rps"), vals("rps", c, "nginx", "rps")) if n]
    print((W + "  %s") % ("req/s, %s connections" % c, *[f(x, "%.0f") for x in v], per))
d = med("c1", "1", "direct", "lat_p50_us")
if d is not None:
    v = [med("c1", "1", col, "lat_p50_us") for col in cols]
    per = [round((z - n) / 1000, 3) for z, n in zip(vals("c1", "1", "zephyr", "lat_p50_us"), vals("c1", "1", "nginx", "lat_p50_us"))]
    print((W + "  z-nginx ms %s") % ("added p50 at c=1, ms", *[f((x - d) / 1000.0, "%.3f") for x in v], per))
    print("%-28s %12.3f   (plain origin, no TLS)" % ("direct p50 at c=1, ms", d / 1000.0))
v = [med("rss", "0", col, "rss_kb") for col in cols]
if any(v):
    print(W % ("RSS after the load, MB", *[f(x / 1024.0 if x else None, "%.1f") for x in v]))
for col in cols:
    x = med("rss_start", "0", col, "rss_kb")
    if x:
        print("%-28s %s: %.1f MB" % ("RSS at start", col, x / 1024.0))
for kind, what in (("sse", "cold pool"), ("ssewarm", "warm pool")):
    for col in cols:
        r = [x for x in rows if x[0] == kind and x[2] == col]
        if not r:
            continue
        kv, n = r[0][4], int(r[0][1])
        extra = ""
        if kind == "sse":
            pk, idle, mid = val(kv, "peak_kb"), val(kv, "idle_kb"), val(kv, "mid_kb")
            extra = "%.1f KB/stream mid (%.1f at peak %.1f MB), " % (
                (mid - idle) / n if mid and idle else 0, (pk - idle) / n if pk and idle else 0, (pk or 0) / 1024.0)
        print("%-28s %-9s %sTTFE p50/p99 %.1f/%.1f ms, event delay p50/p99 %.2f/%.2f ms, ok %s failed %s"
              % ("%d SSE streams, %s" % (n, what), col, extra,
                 (val(kv, "ttfe_p50_us") or 0) / 1000.0, (val(kv, "ttfe_p99_us") or 0) / 1000.0,
                 (val(kv, "ev_p50_us") or 0) / 1000.0, (val(kv, "ev_p99_us") or 0) / 1000.0,
                 val(kv, "ok"), val(kv, "failed")))
for x in rows:
    if x[0] == "handshakes":
        print("%-28s %s: %d" % ("TLS handshakes, run", x[2], val(x[4], "n")))
r = {x[2]: x for x in rows if x[0] == "idle"}
if r:
    if "direct" in r:
        print("%-28s %12s   (plain origin, then the next)" % ("direct after the same idle", "%.2f/%.2f ms" % (
              (val(r["direct"][4], "first_us") or 0) / 1000.0, (val(r["direct"][4], "next_us") or 0) / 1000.0)))
    print(W % ("first request after %ss idle" % list(r.values())[0][1],
          *["%.2f ms" % ((val(r[c][4], "first_us") or 0) / 1000.0) if c in r else "-" for c in cols]))
    print(W % ("  the request after it",
          *["%.2f ms" % ((val(r[c][4], "next_us") or 0) / 1000.0) if c in r else "-" for c in cols]))
v = [med("cpu", "8", col, "ir_per_req") for col in cols]
if any(v):
    print(W % ("instructions per request", *[f(x, "%.0f") for x in v]))
fails = [r for r in rows if r[0] in ("rps", "c1") and (val(r[4], "failed") or 0) != 0]
if fails:
    print("failed requests in %d measurement(s): %s" % (len(fails), "; ".join("%s %s %s" % (r[0], r[1], r[2]) for r in fails)))
EOF
