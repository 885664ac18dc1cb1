#!/usr/bin/env bash
# The cost of counting without the noise of a shared machine: valgrind (callgrind) counts the
# instructions mitmdump executes for N proxied requests (after a warm-up), bare and with the
# addon. Instruction counts repeat to within a fraction of a percent, unlike requests/s.
#   benchmarks/instructions.sh            (after scripts/test or scripts/bench; needs valgrind)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BIN="$ROOT/.venv/bin"
N=${N:-200}
work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT

port() { "$BIN/python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
requests() {  # requests PORT COUNT: sequential GETs on one keep-alive connection
    "$BIN/python" - "$1" "$2" <<'PY'
import http.client, sys
c = http.client.HTTPConnection("127.0.0.1", int(sys.argv[1]), timeout=120)
for _ in range(int(sys.argv[2])):
    c.request("GET", "/")
    r = c.getresponse(); r.read(); assert r.status == 200, r.status
PY
}

origin=$(port); "$BIN/python" "$ROOT/tests/support/upstream.py" "$origin" > "$work/origin.log" 2>&1 & pids+=($!)
redis=$(port); "$BIN/redis-server" --port "$redis" --save "" --appendonly no > "$work/redis.log" 2>&1 & pids+=($!)
echo "addons = []" > "$work/empty.py"
sleep 1

measure() {  # measure NAME mitmdump-arguments...
    local name=$1 p pid out; shift
    p=$(port)
    valgrind --tool=callgrind --callgrind-out-file="$work/$name.%p" "$BIN/python" "$BIN/mitmdump" \
        -q --listen-host 127.0.0.1 -p "$p" --mode "reverse:http://127.0.0.1:$origin" \
        --set confdir="$work/confdir" "$@" > "$work/$name.log" 2>&1 &
    pid=$!; pids+=($pid)
    for _ in $(seq 300); do requests "$p" 1 2>/dev/null && break; sleep 1; done
    requests "$p" 20
    callgrind_control -z "$pid" > /dev/null
    requests "$p" "$N"
    callgrind_control -d "$pid" > /dev/null
    sleep 1
    out=$(grep -h '^summary' "$work/$name.$pid".1 | awk '{print $2}')
    kill "$pid"
    echo "$name $out"
}

echo "instructions for $N requests (this takes a few minutes)" >&2
{
    measure bare
    measure empty_script -s "$work/empty.py"
    measure counting_addon_hooks -s "$ROOT/counting_addon/addon.py" --set counter_redis_url=redis://127.0.0.1:1/0
    measure counting_addon -s "$ROOT/counting_addon/addon.py" --set "counter_redis_url=redis://127.0.0.1:$redis/0"
} | awk -v n="$N" '
    NR == 1 { bare = $2 }
    { printf "%-22s %8.3f M instructions/request  %+6.2f%% vs bare\n", $1, $2 / n / 1e6, ($2 - bare) / bare * 100 }'
