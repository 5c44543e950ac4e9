#!/usr/bin/env bash
# moqcast-bench through an edge relay fed by an origin (a two-relay cluster on loopback, with
# its Redis registry), against the same load on one relay, in the same run; prints a markdown
# table. See docs/BENCHMARKS.md ("An edge fed by an origin").
#
#   bash scripts/bench-cluster.sh
#   SUBS=300 ROUNDS=3 DURATION=10 SKIP_BUILD=1 bash scripts/bench-cluster.sh
#
# Environment (all optional): SUBS (300), ROUNDS (1; odd rounds run single then cluster, even
# rounds the other way), DURATION (10) and WARMUP (4) seconds, BITRATE FPS GROUP_FRAMES
# (2000000, 60, 60), OUT (target/bench), SKIP_BUILD=1 to use the existing release binaries.
# Needs redis-server (scripts/setup.sh installs it), jq and openssl.
set -euo pipefail

cd "$(dirname "$0")/.."
root=$(pwd)
SUBS=${SUBS:-300}
ROUNDS=${ROUNDS:-1}
DURATION=${DURATION:-10}
WARMUP=${WARMUP:-4}
BITRATE=${BITRATE:-2000000}
FPS=${FPS:-60}
GROUP_FRAMES=${GROUP_FRAMES:-60}
OUT=${OUT:-target/bench}
ORIGIN_PORT=44443
EDGE_PORT=44444
REDIS_PORT=46379

for tool in jq openssl redis-server ss; do
    command -v "$tool" >/dev/null || { echo "bench-cluster: needs $tool" >&2; exit 1; }
done
if [ -z "${SKIP_BUILD:-}" ]; then
    echo "==> building release binaries"
    nice cargo build --release -p moqcast-bench -p moqcast-relay
fi
bench=$root/target/release/moqcast-bench
relay=$root/target/release/moqcast-relay

mkdir -p "$OUT"
work=$(mktemp -d)
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
    -keyout "$work/key.pem" -out "$work/cert.pem" -days 10 -subj /CN=localhost \
    -addext subjectAltName=DNS:localhost,IP:127.0.0.1 2>/dev/null
fp=$(openssl x509 -in "$work/cert.pem" -outform der | sha256sum | cut -d' ' -f1)

redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly no >"$work/redis.log" 2>&1 &
pids+=($!)

# start NAME PORT HTTP_PORT [FLAGS...]: a relay in the background; sets last_pid.
start() {
    local name=$1 port=$2 http=$3
    shift 3
    RUST_LOG=error "$relay" --bind "[::]:$port" --http-bind "127.0.0.1:$http" \
        --tls-cert "$work/cert.pem" --tls-key "$work/key.pem" "$@" >"$work/$name.log" 2>&1 &
    last_pid=$!
    pids+=("$last_pid")
    for _ in $(seq 50); do
        if ss -Hulpn "sport = :$port" 2>/dev/null | grep -q "pid=$last_pid,"; then return 0; fi
        sleep 0.1
    done
    echo "bench-cluster: $name did not bind UDP $port" >&2
    tail -20 "$work/$name.log" >&2
    exit 1
}

stop() {
    for p in "$@"; do kill "$p" 2>/dev/null || true; done
    for p in "$@"; do wait "$p" 2>/dev/null || true; done
}

cluster_flags() {
    local port=$1 role=$2
    echo --cluster-registry "redis://127.0.0.1:$REDIS_PORT" --cluster-advertise "moqt://127.0.0.1:$port" \
        --cluster-role "$role" --cluster-tls-fingerprint "$fp"
}

stamp=$(date -u +%Y%m%dT%H%M%SZ)
results=$OUT/cluster-$stamp.jsonl
: >"$results"

run() {
    local setup=$1 round=$2 report=$work/bench.out
    echo "==> round $round/$ROUNDS, $setup: 1 publisher -> $SUBS subscribers (load $(cut -d' ' -f1 /proc/loadavg))"
    local args=(--subscribers "$SUBS" --bitrate "$BITRATE" --fps "$FPS" --group-frames "$GROUP_FRAMES"
        --duration "$DURATION" --warmup "$WARMUP" --fingerprint "$fp" --json)
    if [ "$setup" = single ]; then
        start single "$ORIGIN_PORT" 48080
        local r=$last_pid
        timeout $((DURATION + WARMUP + 60)) "$bench" --url "moqt://127.0.0.1:$ORIGIN_PORT" \
            --relay-pid "$r" "${args[@]}" >"$report" 2>"$work/bench.err" || true
        stop "$r"
    else
        # shellcheck disable=SC2046 # the flags are words
        start origin "$ORIGIN_PORT" 48080 $(cluster_flags "$ORIGIN_PORT" origin)
        local o=$last_pid
        # shellcheck disable=SC2046
        start edge "$EDGE_PORT" 48081 $(cluster_flags "$EDGE_PORT" edge)
        local e=$last_pid
        timeout $((DURATION + WARMUP + 60)) "$bench" --url "moqt://127.0.0.1:$EDGE_PORT" \
            --publish-url "moqt://127.0.0.1:$ORIGIN_PORT" --relay-pid "$e" --origin-pid "$o" \
            "${args[@]}" >"$report" 2>"$work/bench.err" || true
        stop "$e" "$o"
    fi
    local line
    line=$(tail -n 1 "$report")
    if jq -e . >/dev/null 2>&1 <<<"$line"; then
        jq -c --arg setup "$setup" --argjson round "$round" '{setup: $setup, round: $round} + .' <<<"$line" >>"$results"
    else
        echo "bench-cluster: $setup produced no report:" >&2
        tail -5 "$work/bench.err" >&2
        jq -nc --arg setup "$setup" --argjson round "$round" '{setup: $setup, round: $round, failed: true}' >>"$results"
    fi
}

for round in $(seq "$ROUNDS"); do
    if [ $((round % 2)) -eq 1 ]; then order=(single cluster); else order=(cluster single); fi
    for setup in "${order[@]}"; do run "$setup" "$round"; done
done

echo
echo "machine: $(nproc) cores, $(free -g | awk '/Mem:/ {print $2}') GiB; $SUBS subscribers, ${BITRATE} bit/s per track, ${FPS} fps, ${DURATION} s after ${WARMUP} s warmup, raw QUIC"
echo
echo "| round | setup | Mbit/s recv | delivered | group loss | lat p50 / p99 ms | subscribers' relay CPU-s/Gbit | origin CPU-s/Gbit | relay peak RSS MiB | origin peak RSS MiB |"
echo "|---|---|---|---|---|---|---|---|---|---|"
jq -r '
    def f: if . == null then "-" else tostring end;
    if .failed then "| \(.round) | \(.setup) | failed | | | | | | | |"
    else "| \(.round) | \(if .setup == "single" then "one relay" else "edge <- origin" end) | \(.throughput_mbps|f) | \(((.delivery_ratio // 0) * 1000 | round) / 10)% | \(((.group_loss // 0) * 1000 | round) / 10)% | \(.latency_p50_ms|f) / \(.latency_p99_ms|f) | \(.relay_cpu_per_gbit|f) | \(.origin_cpu_per_gbit|f) | \(.relay_peak_rss_mb|f) | \(.origin_peak_rss_mb|f) |"
    end' "$results"
echo
echo "results: $results"
