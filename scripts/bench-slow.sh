#!/usr/bin/env bash
# Does one slow subscriber hurt the others? Paired moqcast-bench runs against a fresh release
# moqcast-relay per run on loopback: N subscribers, without and with SLOW of them behind a
# SLOW_RATE_KBPS link (the bench's in-process UDP shaper), interleaved, REPEATS pairs. Compares
# the other subscribers' latency and the relay's memory. See docs/BENCHMARKS.md ("Slow subscribers").
#
#   bash scripts/bench-slow.sh
#   RELAY_FLAGS="--cache-total-bytes 2097152 --cache-bytes 1048576" bash scripts/bench-slow.sh
#
# Environment (all optional):
#   N (50) subscribers in all; SLOW (1) of them slow in the "slow" runs; SLOW_RATE_KBPS (200)
#   BROADCASTS (1) the subscribers are spread over (round-robin; the slow ones come first)
#   REPEATS (5) pairs; the order within a pair alternates, so drift in the machine's load
#   falls on both sides
#   BITRATE (2000000) FPS (60) GROUP_FRAMES (60) DURATION (10) WARMUP (3) JOIN_SPREAD (1)
#   DRAIN (2)
#   RELAY_FLAGS  extra moqcast-relay flags for every run (e.g. a tight cache budget)
#   PORT (44443) HTTP_PORT (48080) OUT (target/bench) SKIP_BUILD=1 to use existing binaries
set -euo pipefail

cd "$(dirname "$0")/.."
root=$(pwd)

N=${N:-50}
BROADCASTS=${BROADCASTS:-1}
SLOW=${SLOW:-1}
SLOW_RATE_KBPS=${SLOW_RATE_KBPS:-200}
REPEATS=${REPEATS:-5}
BITRATE=${BITRATE:-2000000}
FPS=${FPS:-60}
GROUP_FRAMES=${GROUP_FRAMES:-60}
DURATION=${DURATION:-10}
WARMUP=${WARMUP:-3}
JOIN_SPREAD=${JOIN_SPREAD:-1}
DRAIN=${DRAIN:-2}
RELAY_FLAGS=${RELAY_FLAGS:-}
PORT=${PORT:-44443}
HTTP_PORT=${HTTP_PORT:-48080}
OUT=${OUT:-target/bench}

command -v jq >/dev/null || { echo "bench-slow: needs jq" >&2; exit 1; }
if [ -z "${SKIP_BUILD:-}" ]; then
    echo "==> building release binaries"
    nice cargo build --release -p moqcast-relay -p moqcast-bench --bin moqcast-relay --bin moqcast-bench
fi
relay=$root/target/release/moqcast-relay
bench=$root/target/release/moqcast-bench

mkdir -p "$OUT"
stamp=$(date -u +%Y%m%dT%H%M%SZ)
results=$OUT/slow-$stamp.jsonl
table=$OUT/slow-$stamp.md
: >"$results"
relay_pid=
trap '[ -n "$relay_pid" ] && kill "$relay_pid" 2>/dev/null || true' EXIT

start_relay() {
    # shellcheck disable=SC2086 # RELAY_FLAGS are words on purpose
    RUST_LOG=error "$relay" --bind "127.0.0.1:$PORT" --http-bind "127.0.0.1:$HTTP_PORT" \
        --tls-generate localhost,127.0.0.1 $RELAY_FLAGS >"$OUT/slow-relay-$stamp.log" 2>&1 &
    relay_pid=$!
    for _ in $(seq 50); do
        if curl -fs "http://127.0.0.1:$HTTP_PORT/healthz" >/dev/null 2>&1; then return 0; fi
        kill -0 "$relay_pid" 2>/dev/null || break
        sleep 0.1
    done
    echo "bench-slow: the relay did not start:" >&2
    tail -20 "$OUT/slow-relay-$stamp.log" >&2
    exit 1
}

stop_relay() {
    kill "$relay_pid" 2>/dev/null || true
    for _ in $(seq 30); do kill -0 "$relay_pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$relay_pid" 2>/dev/null || true
    wait "$relay_pid" 2>/dev/null || true
    relay_pid=
}

# run LABEL SLOW_COUNT REPEAT
run() {
    local label=$1 slow=$2 repeat=$3
    start_relay
    echo "==> $label $repeat/$REPEATS: $N subscribers, $slow slow (load $(cut -d' ' -f1 /proc/loadavg))"
    local report=$OUT/slow-bench-$stamp.out
    timeout 120 "$bench" --url "moqt://127.0.0.1:$PORT" --tls-disable-verify \
        --subscribers "$N" --broadcasts "$BROADCASTS" --slow-subscribers "$slow" --slow-rate-kbps "$SLOW_RATE_KBPS" \
        --bitrate "$BITRATE" --fps "$FPS" --group-frames "$GROUP_FRAMES" \
        --duration "$DURATION" --warmup "$WARMUP" --join-spread "$JOIN_SPREAD" --drain "$DRAIN" \
        --relay-pid "$relay_pid" --relay-metrics "http://127.0.0.1:$HTTP_PORT/metrics" \
        --json >"$report" 2>>"$OUT/slow-bench-$stamp.err" || true
    stop_relay
    local line
    line=$(tail -n 1 "$report")
    if jq -e . >/dev/null 2>&1 <<<"$line"; then
        jq -c --arg l "$label" --argjson r "$repeat" '{"label": $l, "repeat": $r} + .' <<<"$line" >>"$results"
        jq -r '"    others: p50 \(.latency_p50_ms) p99 \(.latency_p99_ms) ms, group loss \(.group_loss); relay rss max \(.relay_rss_max_mb) MiB, cache max \(.relay_cache_bytes_max_mb) MiB"' <<<"$line"
    else
        echo "bench-slow: $label $repeat produced no report" >&2
    fi
}

for r in $(seq "$REPEATS"); do
    if [ $((r % 2)) -eq 1 ]; then
        run baseline 0 "$r"
        run slow "$SLOW" "$r"
    else
        run slow "$SLOW" "$r"
        run baseline 0 "$r"
    fi
done

{
    echo "| run | others' lat p50 / p99 / max ms | others' group loss | slow link: recv kbit/s, lat p50 ms, group loss | relay skips / groups dropped / budget evictions | relay RSS max MiB | cache max MiB (budget) | load |"
    echo "|---|---|---|---|---|---|---|---|"
    jq -r 'def f: if . == null then "-" else tostring end;
        def d(k): (.relay_metrics_delta[k] // 0);
        "| \(.label) \(.repeat) | \(.latency_p50_ms|f) / \(.latency_p99_ms|f) / \(.latency_max_ms|f) | \(.group_loss|f) | \(if .slow_subscribers then "\(.slow_throughput_kbps|f), \(.slow_latency_p50_ms|f), \(.slow_group_loss|f)" else "-" end) | \(d("moqcast_slow_subscriber_skips_total")) / \(d("moqcast_groups_dropped_total")) / \(d("moqcast_cache_budget_evictions_total")) | \(.relay_rss_max_mb|f) | \(.relay_cache_bytes_max_mb|f) (\(.relay_cache_budget_mb|f)) | \(.loadavg_start|f) |"' "$results"
    echo
    echo "Medians over the runs:"
    echo
    echo "| | runs | others' p50 ms | others' p90 ms | others' p99 ms | relay RSS max MiB |"
    echo "|---|---|---|---|---|---|"
    jq -rs 'def median: sort | if length == 0 then null elif length % 2 == 1 then .[length / 2 | floor] else (.[length / 2 - 1] + .[length / 2]) / 2 end;
        def r3: if . == null then null else . * 1000 | round / 1000 end;
        def row($l): map(select(.label == $l)) | "| \($l) | \(length) | \(map(.latency_p50_ms) | median | r3) | \(map(.latency_p90_ms) | median | r3) | \(map(.latency_p99_ms) | median | r3) | \(map(.relay_rss_max_mb) | median | r3) |";
        row("baseline"), row("slow"),
        ([group_by(.repeat)[] | select(length == 2) | (map(select(.label == "slow"))[0].latency_p99_ms) / (map(select(.label == "baseline"))[0].latency_p99_ms)] | median | . * 1000 | round / 10
            | "\nothers'"'"' p99, slow run over baseline run of the same pair, median over the pairs: \(.) %"),
        ((map(select(.label == "slow") | .latency_p99_ms) | median) / (map(select(.label == "baseline") | .latency_p99_ms) | median) * 1000 | round / 10 | "\nothers'"'"' p99 with the slow subscriber: \(.) % of without")' "$results"
} >"$table"

echo
echo "machine: $(nproc) cores; $N subscribers over $BROADCASTS broadcast(s) at ${BITRATE} bit/s, $SLOW slow at ${SLOW_RATE_KBPS} kbit/s; relay flags: ${RELAY_FLAGS:-defaults}"
cat "$table"
echo
echo "results: $results"
echo "table:   $table"
