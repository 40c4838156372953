#!/bin/bash
# claude-stub.sh: stands in for the Claude CLI in the health-check tests
# (tests/integration/test_health.py).  The proxy runs it as
#
#     claude-stub.sh [cli_args...] -p PROMPT
#
# with a minimal environment, so everything the stub needs comes from its
# arguments (the test puts them in health_check.cli_args):
#
#   --record BASE    write what it was given to BASE-<ANTHROPIC_BASE_URL made
#                    file-safe>: "ARG <arg>" lines, then "ENV <name>=<value>"
#                    lines; written to a temporary file and renamed, so a
#                    reader never sees half of it; also appends one line per
#                    run to that file name plus ".runs"
#   --mode MODE      what to do (default ok):
#                      ok     print a greeting, exit 0
#                      empty  print nothing, exit 0
#                      fail   print an API error on stderr, exit 1
#                      auth   print a 401 authentication_error on stderr, exit 1
#                      leak   print the token it was given on stderr, exit 1
#                      flood  print 1 MiB on stdout and 64 KiB on stderr, exit 0
#                      json   print a result like --output-format json (with
#                             usage 7 in / 2 out), exit 0
#                      json-error  the same with is_error true and a 401, exit 0
#                      hang   ignore SIGTERM, start a grandchild sleeper and
#                             sleep; both carry the marker in their argv[0]
#   --mode-file F    when F exists, its first word overrides --mode
#   --marker M       a unique word the test looks for in the process table
#
# Unknown arguments are ignored, like flags a real CLI would understand.

record="" mode="ok" modefile="" marker="zt-stub-nomarker"
args=("$@")
while [ $# -gt 0 ]; do
    case "$1" in
    --record) record=$2; shift 2 ;;
    --mode) mode=$2; shift 2 ;;
    --mode-file) modefile=$2; shift 2 ;;
    --marker) marker=$2; shift 2 ;;
    *) shift ;;
    esac
done
if [ -n "$modefile" ] && [ -f "$modefile" ]; then
    read -r mode _ < "$modefile"
fi

if [ -n "$record" ]; then
    safe=$(printf '%s' "${ANTHROPIC_BASE_URL:-none}" | tr -c 'A-Za-z0-9' '_')
    out="$record-$safe"
    {
        for a in "${args[@]}"; do printf 'ARG %s\n' "$a"; done
        env | sed 's/^/ENV /'
    } > "$out.tmp.$$"
    mv "$out.tmp.$$" "$out"
    echo "run $$ mode=$mode" >> "$out.runs"
fi

case "$mode" in
ok)
    echo "Hello from the stub CLI."
    ;;
empty)
    ;;
fail)
    echo "API Error: 500 {\"type\":\"error\",\"error\":{\"type\":\"api_error\",\"message\":\"stub upstream down\"}}" >&2
    exit 1
    ;;
auth)
    echo "API Error: 401 {\"type\":\"error\",\"error\":{\"type\":\"authentication_error\",\"message\":\"invalid x-api-key\"}}" >&2
    exit 1
    ;;
leak)
    echo "the token ${ANTHROPIC_AUTH_TOKEN} was refused" >&2
    exit 1
    ;;
flood)
    head -c 1048576 /dev/zero | tr '\0' 'x'
    head -c 65536 /dev/zero | tr '\0' 'e' >&2
    echo
    ;;
json)
    echo '{"type":"result","subtype":"success","is_error":false,"result":"hi","usage":{"input_tokens":7,"output_tokens":2}}'
    ;;
json-error)
    echo '{"type":"result","subtype":"success","is_error":true,"api_error_status":401,"result":"Invalid API key · Please run /login"}'
    ;;
hang)
    trap '' TERM INT HUP
    (exec -a "$marker-grandchild" sleep 1000) &
    exec -a "$marker-child" sleep 1000
    ;;
*)
    echo "claude-stub: unknown mode $mode" >&2
    exit 2
    ;;
esac
exit 0
