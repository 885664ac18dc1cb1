#!/usr/bin/env bash
# The cost of counting without the noise of a shared machine: valgrind (callgrind) counts the
# instructions mitmdump executes for N proxied requests (after a warm-up), bare and with the
# addon. Instruction counts repeat to within a fraction of a percent, unlike requests/s.
#   benchmarks/instructions.sh [LOAD]     (after scripts/test or scripts/bench; needs valgrind)
# LOAD: http1 (default) sequential HTTP/1.1 GETs on one connection; h2-http1 and h2-h2: h2load
# over TLS (one connection, 10 streams in flight) toward an HTTP/1.1 origin, or toward nginx
# speaking h2 over TLS (needs h2load and nginx).
# The requests go round REQUEST_PATHS (default: benchmarks/request_paths.txt, four realistic
# paths, each matching one of the 20 templates of benchmarks/routes.txt, none the first).
# Variants: bare mitmdump, an empty -s script, counting_addon with its writes held back (hooks
# only) and as it is (writing); the same two counting by route,method over those routes
# (_by); and writing by route,method with counter_max_series=1, reached in the warm-up, so
# that three of the four combinations count in (other) (_by_capped). SERIES=0 skips the three counting by series. On stderr: the commands
# Redis ran for each variant's measured requests, and the series each left in Redis.
set -euo pipefail
LOAD=${1:-http1}
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BIN="$ROOT/.venv/bin"
N=${N:-200}
SERIES=${SERIES:-1}
read -r -a PATHS <<< "${REQUEST_PATHS:-$(paste -sd ' ' "$ROOT/benchmarks/request_paths.txt")}"
mapfile -t ROUTES < "$ROOT/benchmarks/routes.txt"
work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT

port() { "$BIN/python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
requests() {  # requests PORT COUNT: sequential GETs on one keep-alive connection, round PATHS
    "$BIN/python" - "$1" "$2" "${PATHS[@]}" <<'PY'
import http.client, sys
c = http.client.HTTPConnection("127.0.0.1", int(sys.argv[1]), timeout=120)
paths = sys.argv[3:]
for i in range(int(sys.argv[2])):
    c.request("GET", paths[i % len(paths)])
    r = c.getresponse(); r.read(); assert r.status == 200, r.status
PY
}

h2() {  # h2 PORT COUNT: one TLS connection speaking h2, 10 streams in flight
    local out
    out=$(h2load -n "$2" -c 1 -m 10 "${PATHS[@]/#/https://127.0.0.1:$1}")
    grep -q "Application protocol: h2" <<< "$out" && grep -q "$2 succeeded" <<< "$out"
}

origin=$(port); "$BIN/python" "$ROOT/tests/support/upstream.py" "$origin" > "$work/origin.log" 2>&1 & pids+=($!)
upstream="http://127.0.0.1:$origin"
case "$LOAD" in
    http1) load=requests ;;
    h2-http1) load=h2 ;;
    h2-h2)
        load=h2
        openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=127.0.0.1 \
            -keyout "$work/key.pem" -out "$work/cert.pem" 2> /dev/null
        origin=$(port)
        mkdir -p "$work/nginx"
        cat > "$work/nginx.conf" <<CONF
daemon off; worker_processes 1; pid $work/nginx.pid; error_log $work/nginx/error.log warn;
events {}
http {
    access_log off; client_body_temp_path $work/nginx; proxy_temp_path $work/nginx;
    fastcgi_temp_path $work/nginx; uwsgi_temp_path $work/nginx; scgi_temp_path $work/nginx;
    server {
        listen 127.0.0.1:$origin ssl http2;
        ssl_certificate $work/cert.pem; ssl_certificate_key $work/key.pem;
        location / { default_type text/plain; return 200 "ok\n"; }
    }
}
CONF
        nginx -c "$work/nginx.conf" -e "$work/nginx/error.log" & pids+=($!)
        upstream="https://127.0.0.1:$origin"
        ;;
    *) echo "unknown load $LOAD: http1, h2-http1 or h2-h2" >&2; exit 2 ;;
esac
redis=$(port); "$BIN/redis-server" --port "$redis" --save "" --appendonly no > "$work/redis.log" 2>&1 & pids+=($!)
echo "addons = []" > "$work/empty.py"
sleep 1

evalshas() {  # the batch scripts Redis has run so far
    "$BIN/redis-cli" -p "$redis" info commandstats | awk -F'[=,]' '/^cmdstat_evalsha:/ { print $2; f=1 } END { if (!f) print 0 }'
}

commandstats() {  # the commands Redis has run so far, "name calls" a line, scripts' own too
    "$BIN/redis-cli" -p "$redis" info commandstats | awk -F'[:=,]' '/^cmdstat_/ { print substr($1, 9), $3 }'
}

measure() {  # measure NAME mitmdump-arguments...
    local name=$1 p pid out writes before; shift
    p=$(port)
    valgrind --tool=callgrind --callgrind-out-file="$work/$name.%p" "$BIN/python" "$BIN/mitmdump" \
        -q --listen-host 127.0.0.1 -p "$p" --mode "reverse:$upstream" \
        --set confdir="$work/confdir" --set ssl_insecure=true "$@" > "$work/$name.log" 2>&1 &
    pid=$!; pids+=($pid)
    for _ in $(seq 300); do requests "$p" 1 2>/dev/null && break; sleep 1; done
    $load "$p" 20
    callgrind_control -z "$pid" > /dev/null
    writes=$(evalshas); before=$(commandstats)
    $load "$p" "$N"
    callgrind_control -d "$pid" > /dev/null
    writes=$(( $(evalshas) - writes ))
    # The commands Redis ran for the measured requests (but INFO: these reads), for the record.
    awk -v name="$name" 'NR == FNR { n[$1] -= $2; next } { n[$1] += $2 }
        END { printf "%s, Redis commands:", name
              for (c in n) if (n[c] && c != "info") printf " %s %d", c, n[c]; print "" }' \
        <(echo "$before") <(commandstats) >&2
    sleep 1
    out=$(grep -h '^summary' "$work/$name.$pid".1 | awk '{print $2}')
    kill "$pid"
    echo "$name $out $writes"
}

echo "instructions for $N requests, $LOAD (this takes a few minutes)" >&2
{
    measure bare
    measure empty_script -s "$work/empty.py"
    measure counting_addon_hooks -s "$ROOT/benchmarks/held_writes_addon.py" \
        --set "counter_redis_url=redis://127.0.0.1:$redis/0" --set counter_key=held
    measure counting_addon -s "$ROOT/counting_addon/addon.py" --set "counter_redis_url=redis://127.0.0.1:$redis/0"
    if [ "$SERIES" != 0 ]; then
        by=(--set counter_by=route,method)
        for r in "${ROUTES[@]}"; do by+=(--set "counter_routes=$r"); done
        measure counting_addon_hooks_by -s "$ROOT/benchmarks/held_writes_addon.py" \
            --set "counter_redis_url=redis://127.0.0.1:$redis/0" --set counter_key=held_by \
            "${by[@]}"
        measure counting_addon_by -s "$ROOT/counting_addon/addon.py" \
            --set "counter_redis_url=redis://127.0.0.1:$redis/0" --set counter_key=by "${by[@]}"
        measure counting_addon_by_capped -s "$ROOT/counting_addon/addon.py" \
            --set "counter_redis_url=redis://127.0.0.1:$redis/0" --set counter_key=capped \
            --set counter_max_series=1 "${by[@]}"
        for key in held_by by capped; do  # what each counted by series, for the record
            series=$("$BIN/redis-cli" -p "$redis" hgetall "{$key}:by:route,method" | paste -sd ' ')
            echo "series of $key: $series" >&2
        done
    fi
} | awk -v n="$N" '
    NR == 1 { bare = $2 }
    { printf "%-24s %8.3f M instructions/request  %+6.2f%% vs bare  %.3f Redis writes/request\n", $1, $2 / n / 1e6, ($2 - bare) / bare * 100, $3 / n }'
