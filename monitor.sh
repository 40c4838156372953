#!/bin/sh
# monitor.sh: a compact live summary of a running claude-zephyr, read from
# its /status document (installed as claude-zephyr-monitor).
#
#   monitor.sh [-n SECONDS] [-1] [-e EVENTS] [URL]
#
#   URL         the proxy (default $ZEPHYR_URL, else http://127.0.0.1:8080)
#   -n SECONDS  refresh interval (default 2)
#   -1          print once and exit: 0 on success, 1 when the proxy cannot be
#               reached or does not answer with a /status document
#   -e EVENTS   how many recent events to show (default 5)
#   -h          this help
#
# Needs curl, and jq or python3 to read JSON (jq is used when present;
# ZEPHYR_MONITOR_JSON=jq|python3 chooses).  Sends nothing but GET /status:
# it changes nothing on the proxy.  POSIX sh.
set -u

prog=$(basename "$0")
interval=2
once=0
nevents=5
url=${ZEPHYR_URL:-http://127.0.0.1:8080}

usage() {
    sed -n '5,13s/^# \{0,1\}//p' "$0" | sed "s/monitor\.sh/$prog/"
}

die() {
    printf '%s: %s\n' "$prog" "$1" >&2
    exit "${2:-1}"
}

while [ $# -gt 0 ]; do
    case $1 in
        -n) [ $# -ge 2 ] || die "-n needs a number of seconds" 2
            interval=$2; shift 2 ;;
        -n*) interval=${1#-n}; shift ;;
        -e) [ $# -ge 2 ] || die "-e needs a number of events" 2
            nevents=$2; shift 2 ;;
        -e*) nevents=${1#-e}; shift ;;
        -1) once=1; shift ;;
        -h|--help) usage; exit 0 ;;
        --) shift; break ;;
        -*) usage >&2; die "unknown option $1" 2 ;;
        *) url=$1; shift ;;
    esac
done
[ $# -le 1 ] || die "one URL at most" 2
[ $# -eq 1 ] && url=$1
case $interval in ''|*[!0-9.]*|.|*.*.*) die "-n: \"$interval\" is not a number of seconds" 2 ;; esac
case $nevents in ''|*[!0-9]*) die "-e: \"$nevents\" is not a number" 2 ;; esac
case $url in
    http://*|https://*) ;;
    *) url="http://$url" ;;
esac
url=${url%/}

command -v curl >/dev/null 2>&1 || die "curl is needed (apt-get install curl)"
formatter=${ZEPHYR_MONITOR_JSON:-}
if [ -z "$formatter" ]; then
    if command -v jq >/dev/null 2>&1; then formatter=jq
    elif command -v python3 >/dev/null 2>&1; then formatter=python3
    else die "jq or python3 is needed to read /status (apt-get install jq)"
    fi
fi
case $formatter in
    jq|python3) command -v "$formatter" >/dev/null 2>&1 || die "$formatter not found" ;;
    *) die "ZEPHYR_MONITOR_JSON must be jq or python3" 2 ;;
esac

# Both formatters print the same layout; /status is documented in the README.
# shellcheck disable=SC2016 # a jq program: its $names are jq's, not the shell's
JQ_PROG='
def pad($n): tostring | if length >= $n then .[0:$n] else . + (" " * ($n - length)) end;
def lpad($n): tostring | if length >= $n then . else (" " * ($n - length)) + . end;
def ms: if type == "number" then (. | round | tostring) + "ms" else "-" end;
def cnt: if type == "number" then (if . >= 1e6 then ((. / 1e5 | floor) / 10 | tostring) + "M"
         elif . >= 1e4 then ((. / 1e2 | floor) / 10 | tostring) + "k" else (. | floor | tostring) end)
         else "-" end;
def dur: if type != "number" then "-" else (. | floor) as $s |
         if $s < 60 then "\($s)s" elif $s < 3600 then "\($s / 60 | floor)m\($s % 60)s"
         else "\($s / 3600 | floor)h\(($s % 3600) / 60 | floor)m" end end;
def pct: if type == "number" then ((. * 100 | round | tostring) + "%") else "-" end;
def hms: if type == "number" then (. / 1000 | floor | strflocaltime("%H:%M:%S")) else "--:--:--" end;
if type != "object" or (.endpoints | type) != "array" then error("no endpoints list") else . end |
. as $s |
($s.checks // {}) as $c |
($s.traffic_tokens // {}) as $tt |
($c.tokens_used // {}) as $ct |
"claude-zephyr \($s.version // "?") at \($s.listen // "?")  up \($s.uptime_s | dur)",
("mode \($s.mode // "?")  group \($s.current_group // "-")  current \($s.current_endpoint.name? // "none")"
  + (if $s.pinned_endpoint then "  pinned \($s.pinned_endpoint)" else "" end)
  + (if $s.pin_overridden then " (down: overridden)" else "" end)
  + (if $s.pending_switch then "  switching to \($s.pending_switch.to)" else "" end)),
("checks \($c.method // "?"), every \($c.interval_s | dur), next in \($c.next_check_in_s | dur), load \($c.load_level // "-")"
  + (if $c.paused then ", PAUSED" else "" end) + (if $c.running then ", running" else "" end)),
("requests \($s.requests_total | cnt)  active \($s.active_connections // 0)  retries \($s.retries_total | cnt)"
  + "  tokens in \($tt.input | cnt) out \($tt.output | cnt)  checks spent in \($ct.input | cnt) out \($ct.output | cnt)"),
"",
("  " + ("ENDPOINT" | pad(18)) + " " + ("GROUP" | pad(10)) + " " + ("STATUS" | pad(11)) + ("LATENCY" | lpad(9))
  + ("SMOOTHED" | lpad(10)) + ("SUCCESS" | lpad(9)) + "  " + ("CIRCUIT" | pad(10)) + ("ACTIVE" | lpad(6)) + ("REQS" | lpad(8))),
(($s.endpoints // [])[] |
  (if .current then "* " else "  " end) + (.name | pad(18)) + " " + (.group | pad(10)) + " "
  + (.status | pad(11)) + (.latency_ms | ms | lpad(9)) + (.smoothed_latency_ms | ms | lpad(10))
  + (.success_rate | pct | lpad(9)) + "  " + (.circuit // "-" | pad(10))
  + (.active_connections // 0 | lpad(6)) + (.requests | cnt | lpad(8))
  + (if .error then "  " + (.error | tostring | .[0:60]) else "" end)),
"",
(if (($s.events // []) | length) == 0 or $nev == 0 then empty else "recent events:" end),
(($s.events // [])[0:$nev][] | "  \(.t | hms) \(.kind | pad(9))\(.message)")
'

PY_PROG='
import json, sys, time
n_ev = int(sys.argv[1])
s = json.load(sys.stdin)
if not isinstance(s, dict) or not isinstance(s.get("endpoints"), list):
    sys.exit("no endpoints list")
def pad(v, n):
    v = str(v)
    return v[:n] if len(v) >= n else v + " " * (n - len(v))
def lpad(v, n):
    v = str(v)
    return v if len(v) >= n else " " * (n - len(v)) + v
def num(v):
    return isinstance(v, (int, float)) and not isinstance(v, bool)
def ms(v):
    return "%dms" % int(v + 0.5) if num(v) else "-"
def trim(x):
    return ("%.1f" % x).rstrip("0").rstrip(".")
def cnt(v):
    if not num(v): return "-"
    if v >= 1e6: return trim(int(v / 1e5) / 10) + "M"
    if v >= 1e4: return trim(int(v / 1e2) / 10) + "k"
    return str(int(v))
def dur(v):
    if not num(v): return "-"
    s_ = int(v)
    if s_ < 60: return "%ds" % s_
    if s_ < 3600: return "%dm%ds" % (s_ // 60, s_ % 60)
    return "%dh%dm" % (s_ // 3600, (s_ % 3600) // 60)
def pct(v):
    return "%d%%" % int(v * 100 + 0.5) if num(v) else "-"
def hms(v):
    return time.strftime("%H:%M:%S", time.localtime(v // 1000)) if num(v) else "--:--:--"
c = s.get("checks") or {}
tt = s.get("traffic_tokens") or {}
ct = c.get("tokens_used") or {}
cur = s.get("current_endpoint") or {}
out = []
out.append("claude-zephyr %s at %s  up %s" % (s.get("version", "?"), s.get("listen", "?"), dur(s.get("uptime_s"))))
line = "mode %s  group %s  current %s" % (s.get("mode", "?"), s.get("current_group") or "-", cur.get("name") or "none")
if s.get("pinned_endpoint"): line += "  pinned %s" % s["pinned_endpoint"]
if s.get("pin_overridden"): line += " (down: overridden)"
if s.get("pending_switch"): line += "  switching to %s" % s["pending_switch"].get("to")
out.append(line)
line = "checks %s, every %s, next in %s, load %s" % (c.get("method", "?"), dur(c.get("interval_s")),
        dur(c.get("next_check_in_s")), c.get("load_level") or "-")
if c.get("paused"): line += ", PAUSED"
if c.get("running"): line += ", running"
out.append(line)
out.append("requests %s  active %s  retries %s  tokens in %s out %s  checks spent in %s out %s" % (
    cnt(s.get("requests_total")), s.get("active_connections", 0), cnt(s.get("retries_total")),
    cnt(tt.get("input")), cnt(tt.get("output")), cnt(ct.get("input")), cnt(ct.get("output"))))
out.append("")
out.append("  " + pad("ENDPOINT", 18) + " " + pad("GROUP", 10) + " " + pad("STATUS", 11) + lpad("LATENCY", 9)
           + lpad("SMOOTHED", 10) + lpad("SUCCESS", 9) + "  " + pad("CIRCUIT", 10) + lpad("ACTIVE", 6) + lpad("REQS", 8))
for e in s.get("endpoints") or []:
    line = ("* " if e.get("current") else "  ") + pad(e.get("name"), 18) + " " + pad(e.get("group"), 10) + " " \
        + pad(e.get("status"), 11) + lpad(ms(e.get("latency_ms")), 9) + lpad(ms(e.get("smoothed_latency_ms")), 10) \
        + lpad(pct(e.get("success_rate")), 9) + "  " + pad(e.get("circuit") or "-", 10) \
        + lpad(e.get("active_connections") or 0, 6) + lpad(cnt(e.get("requests")), 8)
    if e.get("error"): line += "  " + str(e["error"])[:60]
    out.append(line)
out.append("")
evs = (s.get("events") or [])[:n_ev]
if evs:
    out.append("recent events:")
    for ev in evs:
        out.append("  %s %s%s" % (hms(ev.get("t")), pad(ev.get("kind"), 9), ev.get("message")))
sys.stdout.write("\n".join(out) + "\n")
'

# Prints one summary; returns non-zero (with a message on stderr) when the
# proxy cannot be reached or the answer is not a /status document.
show() {
    body=$(curl -sS --fail --max-time 5 -H 'accept: application/json' "$url/status" 2>&1) || {
        printf '%s: cannot read %s/status: %s\n' "$prog" "$url" "${body:-no answer}" >&2
        return 1
    }
    if [ "$formatter" = jq ]; then
        text=$(printf '%s' "$body" | jq -r --argjson nev "$nevents" "$JQ_PROG" 2>&1)
    else
        text=$(printf '%s' "$body" | python3 -c "$PY_PROG" "$nevents" 2>&1)
    fi || {
        printf '%s: %s/status did not answer with a status document (%s)\n' "$prog" "$url" \
            "$(printf '%s' "$text" | tail -n 1)" >&2
        return 1
    }
    printf '%s\n' "$text"
}

if [ "$once" = 1 ]; then
    show
    exit $?
fi

clear_screen=0
[ -t 1 ] && clear_screen=1
trap 'exit 0' INT TERM
while :; do
    if [ "$clear_screen" = 1 ]; then
        out=$(show 2>&1)
        printf '\033[H\033[2J%s\n\n(every %ss; Ctrl-C to stop)\n' "$out" "$interval"
    else
        show
        printf -- '--\n'
    fi
    sleep "$interval"
done
