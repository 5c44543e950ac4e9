#!/usr/bin/env bash
# Memory of moqcast-relay per idle session and per cached track, measured with moqcast-bench
# against a fresh release relay per run on loopback. See docs/BENCHMARKS.md ("Relay memory").
#
#   bash scripts/bench-memory.sh
#   IDLE_CASES="1000" TRACK_BITRATES="500000" bash scripts/bench-memory.sh
#
# Idle sessions: the bench connects N sessions that complete SETUP and then do nothing; the
# relay's VmRSS is read before the first and 1 s after the last: per session = delta / N.
# Cached tracks: BROADCASTS subscribers, each subscribed to every track of its own broadcast,
# once with TRACKS_LOW and once with TRACKS_HIGH tracks per broadcast; the relay's largest
# VmRSS and moqcast_cache_bytes over the window (after WARMUP s, long enough for every cache
# to fill to its 10 s age limit) give, per extra cached track, delta RSS / delta tracks, and how
# much of it is cached payload. BROADCASTS x TRACKS_HIGH stays below 128: the bench's one
# publisher session carries every track, and moq-transport 0.17 (on both ends) serves at most
# 128 requests of one session at once, so the relay's upstream SUBSCRIBE for a 129th track of
# that session would go unanswered.
#
# Environment (all optional):
#   IDLE_CASES       idle runs, each N or N:FLAGS (relay flags, '=' for spaces, ',' between
#                    flags): "250 1000 1000:--max-streams=128"
#   TRACK_BITRATES   bit/s per track for the track runs: "8000 500000 2000000"
#   BROADCASTS (10) TRACKS_LOW (1) TRACKS_HIGH (12) FPS (60) GROUP_FRAMES (60)
#   WARMUP (12) DURATION (5)
#   PORT (44443) HTTP_PORT (48080) OUT (target/bench) SKIP_BUILD=1 to use existing binaries
set -euo pipefail

cd "$(dirname "$0")/.."
root=$(pwd)

IDLE_CASES=${IDLE_CASES:-"250 1000 1000:--max-streams=128"}
TRACK_BITRATES=${TRACK_BITRATES:-"8000 500000 2000000"}
BROADCASTS=${BROADCASTS:-10}
TRACKS_LOW=${TRACKS_LOW:-1}
TRACKS_HIGH=${TRACKS_HIGH:-12}
FPS=${FPS:-60}
GROUP_FRAMES=${GROUP_FRAMES:-60}
WARMUP=${WARMUP:-12}
DURATION=${DURATION:-5}
PORT=${PORT:-44443}
HTTP_PORT=${HTTP_PORT:-48080}
OUT=${OUT:-target/bench}

command -v jq >/dev/null || { echo "bench-memory: needs jq" >&2; exit 1; }
if [ -z "${SKIP_BUILD:-}" ]; then
    echo "==> building release binaries"
    nice cargo build --release -p moqcast-relay -p moqcast-bench --bin moqcast-relay --bin moqcast-bench
fi
relay=$root/target/release/moqcast-relay
bench=$root/target/release/moqcast-bench

mkdir -p "$OUT"
stamp=$(date -u +%Y%m%dT%H%M%SZ)
results=$OUT/memory-$stamp.jsonl
table=$OUT/memory-$stamp.md
: >"$results"
relay_pid=
trap '[ -n "$relay_pid" ] && kill "$relay_pid" 2>/dev/null || true' EXIT

start_relay() {
    RUST_LOG=error "$relay" --bind "127.0.0.1:$PORT" --http-bind "127.0.0.1:$HTTP_PORT" \
        --tls-generate localhost,127.0.0.1 "$@" >"$OUT/memory-relay-$stamp.log" 2>&1 &
    relay_pid=$!
    for _ in $(seq 50); do
        if curl -fs "http://127.0.0.1:$HTTP_PORT/healthz" >/dev/null 2>&1; then return 0; fi
        kill -0 "$relay_pid" 2>/dev/null || break
        sleep 0.1
    done
    echo "bench-memory: the relay did not start:" >&2
    tail -20 "$OUT/memory-relay-$stamp.log" >&2
    exit 1
}

stop_relay() {
    kill "$relay_pid" 2>/dev/null || true
    for _ in $(seq 30); do kill -0 "$relay_pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$relay_pid" 2>/dev/null || true
    wait "$relay_pid" 2>/dev/null || true
    relay_pid=
}

# run LABEL RELAY_FLAGS -- BENCH_FLAGS...
run() {
    local label=$1 flags=$2
    shift 3
    # shellcheck disable=SC2086 # flags are words on purpose
    start_relay $flags
    echo "==> $label (relay flags: ${flags:-none}; load $(cut -d' ' -f1 /proc/loadavg))"
    local report=$OUT/memory-bench-$stamp.out
    timeout 120 "$bench" --url "moqt://127.0.0.1:$PORT" --tls-disable-verify \
        --relay-pid "$relay_pid" --relay-metrics "http://127.0.0.1:$HTTP_PORT/metrics" \
        --json "$@" >"$report" 2>>"$OUT/memory-bench-$stamp.err" || true
    stop_relay
    grep -v '^{' "$report" >&2 || true
    local line
    line=$(tail -n 1 "$report")
    if jq -e . >/dev/null 2>&1 <<<"$line"; then
        jq -c --arg l "$label" --arg f "$flags" '{"label": $l, "relay_flags": $f} + .' <<<"$line" >>"$results"
    else
        echo "bench-memory: $label produced no report" >&2
    fi
}

for case in $IDLE_CASES; do
    n=${case%%:*}
    flags=
    [ "$case" != "$n" ] && flags=$(tr '=,' '  ' <<<"${case#*:}")
    run "idle" "$flags" -- --subscribers 0 --idle-sessions "$n" --warmup 0 --duration 1 --drain 0
done

for bitrate in $TRACK_BITRATES; do
    for tracks in $TRACKS_LOW $TRACKS_HIGH; do
        run "tracks" "" -- --subscribers "$BROADCASTS" --broadcasts "$BROADCASTS" --tracks "$tracks" \
            --bitrate "$bitrate" --fps "$FPS" --group-frames "$GROUP_FRAMES" \
            --warmup "$WARMUP" --duration "$DURATION" --drain 1
    done
done

{
    echo "Idle sessions (connected, SETUP done, no subscription):"
    echo
    echo "| idle sessions | relay flags | connected | relay RSS before -> after MiB | KiB per idle session |"
    echo "|---|---|---|---|---|"
    jq -r 'select(.label == "idle") | def f: if . == null then "-" else tostring end;
        "| \(.idle_sessions) | \(if .relay_flags == "" then "defaults" else .relay_flags end) | \(.idle_sessions_connected) | \(.relay_rss_before_idle_mb|f) -> \(.relay_rss_after_idle_mb|f) | \(.relay_rss_per_idle_session_kb|f) |"' "$results"
    echo
    echo "Cached tracks ($BROADCASTS subscribers, each on every track of its own broadcast; window maxima):"
    echo
    echo "| bit/s per track | cached tracks | relay RSS MiB | cached payload MiB | load |"
    echo "|---|---|---|---|---|"
    jq -r 'select(.label == "tracks") | def f: if . == null then "-" else tostring end;
        "| \(.bitrate) | \(.broadcasts * .tracks) | \(.relay_rss_max_mb|f) | \(.relay_cache_bytes_max_mb|f) | \(.loadavg_start|f) |"' "$results"
    echo
    echo "Per extra cached track (with its one subscription), between the two track counts:"
    echo
    echo "| bit/s per track | RSS KiB per track | of which cached payload KiB | other KiB |"
    echo "|---|---|---|---|"
    jq -rs 'map(select(.label == "tracks")) | group_by(.bitrate)[] | select(length == 2)
        | sort_by(.tracks) as [$lo, $hi]
        | (($hi.broadcasts * $hi.tracks) - ($lo.broadcasts * $lo.tracks)) as $dm
        | ((($hi.relay_rss_max_mb - $lo.relay_rss_max_mb) * 1024 / $dm * 10 | round) / 10) as $rss
        | ((($hi.relay_cache_bytes_max_mb - $lo.relay_cache_bytes_max_mb) * 1024 / $dm * 10 | round) / 10) as $cache
        | "| \($lo.bitrate) | \($rss) | \($cache) | \((($rss - $cache) * 10 | round) / 10) |"' "$results"
} >"$table"

echo
echo "machine: $(nproc) cores, $(free -g | awk '/Mem:/ {print $2}') GiB"
cat "$table"
echo
echo "results: $results"
echo "table:   $table"
