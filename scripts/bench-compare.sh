#!/usr/bin/env bash
# Runs the same moqcast-bench matrix against moqcast-relay and Cloudflare's moq-relay-ietf on
# loopback and prints (and writes) a markdown table. See docs/BENCHMARKS.md.
#
#   bash scripts/bench-compare.sh                   # full matrix, both relays
#   RELAYS=moqcast CASES="1 100" bash scripts/bench-compare.sh
#
# Environment (all optional):
#   RELAYS     relays to run, in order: "moqcast ietf"
#   ROUNDS     times to run the whole matrix (1). Each row runs every relay back to back,
#              first-to-last in odd rounds and last-to-first in even ones, so a noisy minute
#              on a shared host lands on both; with ROUNDS > 1 a second table gives each row's
#              medians and how many rounds ours beat the other relay in
#   CASES      matrix rows, each SUBSCRIBERS or SUBSCRIBERSxBROADCASTS (subscribers spread
#              round-robin over the broadcasts): "1 10 100 300 1000 200x50"
#   DURATION   measured seconds per run (10); WARMUP seconds left out first (4)
#   JOIN_SPREAD seconds over which subscribers join (3); DRAIN most seconds to wait for
#              late objects after publishing stops (5)
#   BITRATE FPS GROUP_FRAMES   media shape (2000000, 60, 60)
#   SCHEME     moqt (raw QUIC) or https (WebTransport): moqt
#   PORT       UDP port the relay under test binds (44443); HTTP_PORT for ours (48080)
#   OURS       path of moqcast-relay (target/release/moqcast-relay), e.g. another branch's build;
#              OURS_LABEL names it in the table (moqcast)
#   BASE       path of a second moqcast-relay build (e.g. the commit before a change), run as the
#              relay "base" when RELAYS names it: RELAYS="moqcast base ietf" interleaves an A/B
#              with the peer relay in every round
#   IETF_RELAY path of moq-relay-ietf (~/.cargo/bin/moq-relay-ietf; cargo install --locked moq-relay-ietf)
#   TRACE      1: every received object's times in OUT/trace-RELAY-CASE-rROUND-STAMP.csv
#              (moqcast-bench --latency-trace), for scripts/latency-tail.py
#   OUT        output folder (target/bench); SKIP_BUILD=1 to use the existing release binaries
#   CPU_CAP    run each relay in a cgroup limited to this many cores (e.g. 0.5; needs root and the
#              cgroup cpu controller, v1 or v2), so the bench has the rest of the machine and the
#              row where a relay's latency climbs shows how many subscribers a core carries
#
# Each run starts a fresh relay (so peak memory is that run's), measures it with --relay-pid,
# and stops it. Every run is bounded: warmup + duration + drain + timeouts. Relays log at
# `error` only, so logging costs neither relay CPU during the window.
set -euo pipefail

cd "$(dirname "$0")/.."
root=$(pwd)

RELAYS=${RELAYS:-"moqcast ietf"}
ROUNDS=${ROUNDS:-1}
CASES=${CASES:-"1 10 100 300 1000 200x50"}
DURATION=${DURATION:-10}
WARMUP=${WARMUP:-4}
JOIN_SPREAD=${JOIN_SPREAD:-3}
DRAIN=${DRAIN:-5}
BITRATE=${BITRATE:-2000000}
FPS=${FPS:-60}
GROUP_FRAMES=${GROUP_FRAMES:-60}
SCHEME=${SCHEME:-moqt}
PORT=${PORT:-44443}
HTTP_PORT=${HTTP_PORT:-48080}
IETF_RELAY=${IETF_RELAY:-$HOME/.cargo/bin/moq-relay-ietf}
OUT=${OUT:-target/bench}

for tool in jq openssl; do
    command -v "$tool" >/dev/null || { echo "bench-compare: needs $tool (apt-get install $tool)" >&2; exit 1; }
done
case " $RELAYS " in
*" ietf "*)
    [ -x "$IETF_RELAY" ] || { echo "bench-compare: $IETF_RELAY not found: cargo install --locked moq-relay-ietf" >&2; exit 1; }
    ;;
esac

if [ -z "${SKIP_BUILD:-}" ]; then
    echo "==> building release binaries"
    nice cargo build --release -p moqcast-bench -p moqcast-relay
fi
bench=$root/target/release/moqcast-bench
ours=${OURS:-$root/target/release/moqcast-relay}
OURS_LABEL=${OURS_LABEL:-moqcast}

mkdir -p "$OUT"
work=$(mktemp -d)
relay_pid=
cleanup() {
    if [ -n "$relay_pid" ]; then kill "$relay_pid" 2>/dev/null || true; wait "$relay_pid" 2>/dev/null || true; fi
    if [ -n "${cgroup_procs:-}" ]; then rmdir "$(dirname "$cgroup_procs")" 2>/dev/null || true; fi
    rm -rf "$work"
}
trap cleanup EXIT

# One certificate for both relays (ECDSA P-256, 10 days).
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
    -keyout "$work/key.pem" -out "$work/cert.pem" -days 10 -subj /CN=localhost \
    -addext subjectAltName=DNS:localhost,IP:127.0.0.1 2>/dev/null

# The relays' CPU cap: a cgroup whose CFS quota is CPU_CAP cores, in 10 ms periods (throttling
# in 100 ms periods, the default, would add up to 50 ms of latency by itself at half a core).
cgroup_procs=
if [ -n "${CPU_CAP:-}" ]; then
    quota=$(awk -v c="$CPU_CAP" 'BEGIN { q = int(c * 10000); if (q >= 1000) print q }')
    [ -n "$quota" ] || { echo "bench-compare: CPU_CAP=$CPU_CAP: expected at least 0.1 (cores)" >&2; exit 1; }
    if [ -w /sys/fs/cgroup/cpu/cgroup.procs ]; then
        cg=/sys/fs/cgroup/cpu/moqcast-bench-cap
        mkdir -p "$cg" && echo 10000 >"$cg/cpu.cfs_period_us" && echo "$quota" >"$cg/cpu.cfs_quota_us"
    elif grep -qw cpu /sys/fs/cgroup/cgroup.controllers 2>/dev/null && [ -w /sys/fs/cgroup/cgroup.subtree_control ]; then
        cg=/sys/fs/cgroup/moqcast-bench-cap
        echo +cpu >/sys/fs/cgroup/cgroup.subtree_control
        mkdir -p "$cg" && echo "$quota 10000" >"$cg/cpu.max"
    else
        echo "bench-compare: CPU_CAP needs root and the cgroup cpu controller (v1 at /sys/fs/cgroup/cpu or v2)" >&2
        exit 1
    fi
    cgroup_procs=$cg/cgroup.procs
fi

# Runs a relay command line in the background, inside the CPU cap when there is one.
launch() {
    if [ -n "$cgroup_procs" ]; then
        # shellcheck disable=SC2016 # $$ is the inner shell's pid, which exec hands to the relay
        sh -c 'echo $$ >"$0" && exec "$@"' "$cgroup_procs" "$@" &
    else
        "$@" &
    fi
}

stamp=$(date -u +%Y%m%dT%H%M%SZ)
results=$OUT/compare-$stamp.jsonl
table=$OUT/compare-$stamp.md
: >"$results"

start_relay() {
    local which=$1 log=$2
    case $which in
    moqcast)
        RUST_LOG=error launch "$ours" --bind "[::]:$PORT" --http-bind "127.0.0.1:$HTTP_PORT" \
            --tls-cert "$work/cert.pem" --tls-key "$work/key.pem" >"$log" 2>&1
        ;;
    base)
        [ -x "${BASE:-}" ] || { echo "bench-compare: RELAYS names base but BASE=${BASE:-} is not a binary" >&2; exit 1; }
        RUST_LOG=error launch "$BASE" --bind "[::]:$PORT" --http-bind "127.0.0.1:$HTTP_PORT" \
            --tls-cert "$work/cert.pem" --tls-key "$work/key.pem" >"$log" 2>&1
        ;;
    ietf)
        rm -f "$work/coordinator.json"
        RUST_LOG=error launch "$IETF_RELAY" --bind "[::]:$PORT" --tls-cert "$work/cert.pem" \
            --tls-key "$work/key.pem" --coordinator-file "$work/coordinator.json" >"$log" 2>&1
        ;;
    *)
        echo "bench-compare: unknown relay $which (moqcast, base or ietf)" >&2
        exit 1
        ;;
    esac
    relay_pid=$!
    # Wait (at most 5 s) for the UDP port.
    for _ in $(seq 50); do
        if ss -Hulpn "sport = :$PORT" 2>/dev/null | grep -q "pid=$relay_pid,"; then return 0; fi
        if ! kill -0 "$relay_pid" 2>/dev/null; then break; fi
        sleep 0.1
    done
    echo "bench-compare: $which did not bind UDP $PORT; log:" >&2
    tail -20 "$log" >&2
    exit 1
}

stop_relay() {
    kill "$relay_pid" 2>/dev/null || true
    for _ in $(seq 30); do kill -0 "$relay_pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$relay_pid" 2>/dev/null || true
    wait "$relay_pid" 2>/dev/null || true
    relay_pid=
}

run_one() {
    local relay=$1 case=$2 round=$3
    local subs=${case%%x*} broadcasts=1
    [ "$case" != "$subs" ] && broadcasts=${case#*x}
    local tag=$relay-$case-r$round-$stamp
    local log=$OUT/relay-$tag.log report=$OUT/bench-$tag.out
    start_relay "$relay" "$log"
    echo "==> round $round/$ROUNDS, $relay: 1 publisher -> $subs subscribers, $broadcasts broadcast(s) (load $(cut -d' ' -f1 /proc/loadavg))"
    local limit
    limit=$(awk -v d="$DURATION" -v w="$WARMUP" -v r="$DRAIN" 'BEGIN { print int(d + w + r + 40) }')
    timeout "$limit" "$bench" --url "$SCHEME://127.0.0.1:$PORT" --tls-disable-verify \
        --subscribers "$subs" --broadcasts "$broadcasts" --bitrate "$BITRATE" --fps "$FPS" \
        --group-frames "$GROUP_FRAMES" --duration "$DURATION" --warmup "$WARMUP" \
        --join-spread "$JOIN_SPREAD" --drain "$DRAIN" --relay-pid "$relay_pid" --json \
        ${TRACE:+--latency-trace "$OUT/trace-$tag.csv"} >"$report" 2>"$OUT/bench-$tag.err" || true
    stop_relay
    grep -v '^{' "$report" >&2 || true
    local line label=$relay
    line=$(tail -n 1 "$report")
    [ "$relay" = moqcast ] && label=$OURS_LABEL
    if jq -e . >/dev/null 2>&1 <<<"$line"; then
        jq -c --arg relay "$label" --arg case "$case" --argjson round "$round" --arg cap "${CPU_CAP:-}" \
            '{relay: $relay, case: $case, round: $round, cpu_cap: (if $cap == "" then null else ($cap | tonumber) end)} + .' <<<"$line" >>"$results"
    else
        echo "bench-compare: $relay $case produced no report (see $OUT/bench-$tag.err)" >&2
        jq -nc --arg relay "$label" --arg case "$case" --argjson round "$round" \
            '{relay: $relay, case: $case, round: $round, failed: true}' >>"$results"
    fi
}

# shellcheck disable=SC2086 # RELAYS and CASES are word lists
forward=($RELAYS)
for round in $(seq "$ROUNDS"); do
    order=("${forward[@]}")
    if [ $((round % 2)) -eq 0 ]; then
        order=()
        for ((i = ${#forward[@]} - 1; i >= 0; i--)); do order+=("${forward[$i]}"); done
    fi
    for case in $CASES; do
        for relay in "${order[@]}"; do
            run_one "$relay" "$case" "$round"
        done
    done
done

{
    echo "| round | relay | subs x bcasts | Mbit/s recv | delivered | group loss | lat p50 / p99 / max ms | join p50 / p99 ms | relay CPU % | relay CPU-s/Gbit | relay peak RSS MiB | bench CPU % | load | host steal % (worst s) |"
    echo "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
    jq -r '
        def f: if . == null then "-" else tostring end;
        if .failed then "| \(.round) | \(.relay) | \(.case) | failed | | | | | | | | | | |"
        else "| \(.round) | \(.relay) | \(.subscribers) x \(.broadcasts) | \(.throughput_mbps|f) | \(((.delivery_ratio // 0) * 1000 | round) / 10)% | \(((.group_loss // 0) * 1000 | round) / 10)% | \(.latency_p50_ms|f) / \(.latency_p99_ms|f) / \(.latency_max_ms|f) | \(.join_p50_ms|f) / \(.join_p99_ms|f) | \(.relay_cpu_percent|f) | \(.relay_cpu_per_gbit|f) | \(.relay_peak_rss_mb|f) | \(.bench_cpu_percent|f) | \(.loadavg_start|f) | \(.host_steal_percent|f) (\(.host_steal_worst_second_percent|f)) |"
        end' "$results"
    if [ "$ROUNDS" -gt 1 ]; then
        # Medians per row and relay; the first relay against each other one, round by round.
        echo
        echo "Medians over $ROUNDS rounds; \"wins\": rounds where ${forward[0]} had less CPU per Gbit/s / a lower p99 / no more group loss than that relay in the same round."
        echo
        echo "| relay | subs x bcasts | runs | CPU-s/Gbit | ${forward[0]} as % of it | lat p50 / p99 ms | group loss | host steal % | ${forward[0]} wins CPU / p99 / loss |"
        echo "|---|---|---|---|---|---|---|---|---|"
        jq -rs --arg first "${forward[0]}" '
            def median: sort | if length == 0 then null elif length % 2 == 1 then .[length / 2 | floor] else (.[length / 2 - 1] + .[length / 2]) / 2 end;
            def r(d): if . == null then "-" else (. * pow(10; d) | round) / pow(10; d) | tostring end;
            map(select(.failed | not)) as $ok
            | ($ok | map(.case) | unique) as $cases
            | [$ok[] | .case] as $order
            | ($cases | sort_by(. as $c | $order | index($c))) as $cases
            | $cases[] as $c
            | ($ok | map(select(.case == $c))) as $rows
            | ($rows | map(select(.relay == $first))) as $mine
            | ($rows | map(.relay) | unique | sort_by(. != $first))[] as $rel
            | ($rows | map(select(.relay == $rel))) as $these
            | ($mine | map(.relay_cpu_per_gbit) | median) as $mycpu
            | ($these | map(.relay_cpu_per_gbit) | median) as $cpu
            | [ $these[] as $t | ($mine[] | select(.round == $t.round)) as $m
                | [ ($m.relay_cpu_per_gbit < $t.relay_cpu_per_gbit),
                    ($m.latency_p99_ms < $t.latency_p99_ms),
                    (($m.group_loss // 0) <= ($t.group_loss // 0)) ] ] as $pairs
            | "| \($rel) | \($c) | \($these | length) | \($cpu | r(3)) | "
              + (if $rel == $first then "" else "\(if $cpu > 0 then ($mycpu / $cpu * 100 | round | tostring) + "%" else "-" end)" end)
              + " | \($these | map(.latency_p50_ms) | median | r(3)) / \($these | map(.latency_p99_ms) | median | r(3)) | \($these | map((.group_loss // 0) * 100) | median | r(2))% | \($these | map(.host_steal_percent // 0) | median | r(1)) | "
              + (if $rel == $first then "" else "\($pairs | map(select(.[0])) | length) / \($pairs | map(select(.[1])) | length) / \($pairs | map(select(.[2])) | length) of \($pairs | length)" end)
              + " |"
        ' "$results"
    fi
} >"$table"

echo
echo "machine: $(nproc) cores, $(free -g | awk '/Mem:/ {print $2}') GiB${CPU_CAP:+; each relay capped at $CPU_CAP cores}; bench: ${BITRATE} bit/s per track, ${FPS} fps, ${GROUP_FRAMES}-frame groups, ${DURATION} s after ${WARMUP} s warmup, joins over ${JOIN_SPREAD} s, $SCHEME"
cat "$table"
echo
echo "results: $results"
echo "table:   $table"
