#!/usr/bin/env bash
# CPU per unit of work on the built-in client's https path, h2 against
# HTTP/1.1, under callgrind (instruction counts: exact where the shared
# machine makes timings noisy).
#
#   origin  build/fake-upstream behind HAProxy terminating TLS with ALPN
#           h2,http/1.1 and a certificate from a CA made for the run (as in
#           bench/https.sh)
#   zephyr  two instances under valgrind --tool=callgrind, one an https://
#           endpoint with [server] http2 = true, one with http2 = false
#
# Rows: instructions per request over N sequential non-streaming requests at
# one connection (bench/zload short --conns 1), and per SSE event: two runs
# of S concurrent streams with E1 and E2 events each, (Ir(E2) - Ir(E1)) /
# (S * (E2 - E1)), so the stream set-up cancels out.  Counting is on only
# around each measured run (callgrind_control -z, then -d).
#
# Knobs: H2PROF_REQUESTS (1000), H2PROF_STREAMS (100), H2PROF_EVENTS1 (10),
# H2PROF_EVENTS2 (110), H2PROF_GAP_MS (20), H2PROF_BUILD (build),
# H2PROF_KEEP=1 (keep the callgrind files; the directory is printed), and
# H2PROF_ONLY (h2 or h1).  Every process started here is stopped on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
B=${H2PROF_BUILD:-$ROOT/build}
NREQ=${H2PROF_REQUESTS:-1000}
NS=${H2PROF_STREAMS:-100}
E1=${H2PROF_EVENTS1:-10}
E2=${H2PROF_EVENTS2:-110}
GAP=${H2PROF_GAP_MS:-20}
export PATH="$PATH:/usr/sbin:/sbin"
say() { printf '[h2prof %4ss] %s\n' "$SECONDS" "$*" >&2; }
die() { say "error: $*"; exit 1; }
for t in haproxy openssl python3 cc curl valgrind callgrind_control; do
    command -v "$t" >/dev/null || die "$t is missing"
done
[ -x "$B/claude-zephyr" ] && [ -x "$B/fake-upstream" ] || die "run 'make' first"
T=$(mktemp -d /tmp/zh2prof.XXXXXX)
ZLOAD=$T/zload
cc -O2 -std=c11 -o "$ZLOAD" bench/zload.c || die "cannot build bench/zload.c"
PIDS=()
cleanup() {
    local p
    set +e
    for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null; done
    for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null; done
    if [ "${H2PROF_KEEP:-0}" = 1 ]; then say "kept $T"; else rm -rf "$T"; fi
}
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

(
    cd "$T"
    ec=(-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes)
    openssl req -x509 "${ec[@]}" -keyout ca.key -out ca.pem -days 30 -subj "/CN=zephyr h2prof CA" \
        -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign
    openssl req "${ec[@]}" -keyout srv.key -out srv.csr -subj "/CN=127.0.0.1"
    printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n' >srv.ext
    openssl x509 -req -in srv.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 30 \
        -extfile srv.ext -out srv.pem
    cat srv.pem srv.key >srv.combined.pem
) >"$T/pki.log" 2>&1 || { cat "$T/pki.log" >&2; die "openssl could not make the certificates"; }

"$B/fake-upstream" --port 0 --bind 127.0.0.1 --name origin >"$T/origin.port" 2>"$T/origin.log" &
PIDS+=($!)
OPORT=
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
    maxconn 4000
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
    server origin 127.0.0.1:$OPORT maxconn 4000
EOF
haproxy -db -f "$T/origin-tls.conf" >"$T/haproxy.log" 2>&1 &
PIDS+=($!)
for ((i = 0; i < 50; i++)); do
    curl -s -o /dev/null -m 0.5 --cacert "$T/ca.pem" "https://127.0.0.1:$TPORT/" && break
    sleep 0.1
done

# One counted run: zero the counters, run the load, dump; prints the dump's Ir.
counted() { # pid out-prefix load-args...
    local pid=$1 out=$2 f; shift 2
    callgrind_control -z "$pid" >/dev/null 2>&1 || die "callgrind_control -z failed"
    timeout -k 2 300 "$ZLOAD" "$@" >"$T/load.last" || die "load failed: $(cat "$T/load.last")"
    grep -q 'failed=0' "$T/load.last" || die "failed requests: $(cat "$T/load.last")"
    callgrind_control -d "$pid" >/dev/null 2>&1 || die "callgrind_control -d failed"
    f=$(ls -t "$out".* | head -1)
    awk '/^totals:/ {print $2}' "$f"
}

for mode in h2 h1; do
    [ -n "${H2PROF_ONLY:-}" ] && [ "$H2PROF_ONLY" != "$mode" ] && continue
    port=$(free_port)
    h2=true; [ "$mode" = h1 ] && h2=false
    cat >"$T/z-$mode.toml" <<EOF
[server]
bind = "127.0.0.1"
port = $port
log_level = "warn"
keepalive_timeout_ms = 120000
http_client = "builtin"
http2 = $h2

[[groups]]
name = "bench"
endpoints = [ { url = "https://127.0.0.1:$TPORT", name = "origin" } ]

[health_check]
method = "count_tokens"
interval_seconds = 3600
timeout_seconds = 10
EOF
    SSL_CERT_FILE=$T/ca.pem valgrind --tool=callgrind --instr-atstart=yes \
        --callgrind-out-file="$T/cg.$mode.out" "$B/claude-zephyr" --config "$T/z-$mode.toml" \
        >"$T/z-$mode.log" 2>&1 &
    pid=$!
    PIDS+=("$pid")
    "$ZLOAD" probe --port "$port" --timeout-s 30 || die "zephyr ($mode) did not start"
    "$ZLOAD" short --port "$port" --conns 1 --requests 100 >/dev/null # warm: pool, TLS, caches
    ir=$(counted "$pid" "$T/cg.$mode.out" short --port "$port" --conns 1 --requests "$NREQ")
    cp "$(ls -t "$T/cg.$mode.out".* | head -1)" "$T/req.$mode.out"
    printf '%-3s per request   %8d  (%d sequential requests at 1 connection)\n' "$mode" $((ir / NREQ)) "$NREQ"
    # Uncounted first: the pool's connections for the streams (h1 needs one
    # per stream; their handshakes would not cancel out otherwise).
    "$ZLOAD" sse --port "$port" --streams "$NS" --events 2 --gap-ms "$GAP" --timeout-s 120 >/dev/null
    a=$(counted "$pid" "$T/cg.$mode.out" sse --port "$port" --streams "$NS" --events "$E1" --gap-ms "$GAP" --timeout-s 120)
    b=$(counted "$pid" "$T/cg.$mode.out" sse --port "$port" --streams "$NS" --events "$E2" --gap-ms "$GAP" --timeout-s 120)
    cp "$(ls -t "$T/cg.$mode.out".* | head -1)" "$T/sse.$mode.out"
    printf '%-3s per SSE event %8d  (%d streams, %d vs %d events, %d ms apart)\n' "$mode" \
        $(((b - a) / (NS * (E2 - E1)))) "$NS" "$E1" "$E2" "$GAP"
    kill -TERM "$pid" 2>/dev/null; wait "$pid" 2>/dev/null || true
done
