#!/usr/bin/env bash
# The latency RTMP ingest adds: FFmpeg pushes a 640x360 30 fps test pattern (libx264
# zerolatency, a keyframe every 2 s) with AAC over RTMP into moqcast-relay --rtmp-bind, and
# moqcast-subscribe reads the broadcast over MoQ (raw QUIC) on the same machine. The relay stamps
# each frame's LOC SEND_TIME when its RTMP message has been read, so the subscriber's one-way
# latency is the relay's share: RTMP message in -> repackaged, cached, fanned out -> MoQ viewer.
# For comparison, the same subscriber reads moqcast-publish's test source published over MoQ
# (SEND_TIME stamped by the publisher). Prints the subscriber's JSON lines. See
# docs/BENCHMARKS.md ("RTMP ingest latency").
#
#   bash scripts/bench-rtmp-latency.sh
#
# Environment: SECONDS_ (20) of media per run, PROFILE (release; "debug" uses the dev build),
# SKIP_BUILD=1 to use existing binaries, PORT (44443), RTMP_PORT (41935), HTTP_PORT (48080).
set -euo pipefail
cd "$(dirname "$0")/.."

DUR=${SECONDS_:-20}
PROFILE=${PROFILE:-release}
PORT=${PORT:-44443}
RTMP_PORT=${RTMP_PORT:-41935}
HTTP_PORT=${HTTP_PORT:-48080}
flag=(); [ "$PROFILE" = release ] && flag=(--release)
if [ -z "${SKIP_BUILD:-}" ]; then
    cargo build "${flag[@]}" -p moqcast-relay -p moqcast-publisher --bins
fi
bin=target/$PROFILE
out=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$out"' EXIT

RUST_LOG=warn "$bin/moqcast-relay" --bind "127.0.0.1:$PORT" --http-bind "127.0.0.1:$HTTP_PORT" \
    --tls-generate localhost,127.0.0.1 --rtmp-bind "127.0.0.1:$RTMP_PORT" 2>"$out/relay.log" &
sleep 1
sub() {
    "$bin/moqcast-subscribe" --url "moqt://127.0.0.1:$PORT" --broadcast "$1" \
        --tls-disable-verify --duration "$((DUR - 4))" --wait 20 --json | tail -1
}

echo "# RTMP (ffmpeg -> relay --rtmp-bind -> moqcast-subscribe)"
ffmpeg -hide_banner -v error -re -f lavfi -i testsrc2=size=640x360:rate=30 \
    -f lavfi -i sine=frequency=440:sample_rate=48000 -t "$DUR" \
    -c:v libx264 -preset veryfast -tune zerolatency -pix_fmt yuv420p -g 60 \
    -c:a aac -b:a 128k -f flv "rtmp://127.0.0.1:$RTMP_PORT/live/rtmp-latency" &
ff=$!
sleep 2
sub rtmp-latency
wait "$ff"

echo "# MoQ publisher (moqcast-publish --input testsrc -> relay -> moqcast-subscribe)"
RUST_LOG=warn "$bin/moqcast-publish" --url "moqt://127.0.0.1:$PORT" --broadcast moq-latency \
    --input testsrc --tls-disable-verify --duration "$DUR" &
pub=$!
sleep 2
sub moq-latency
wait "$pub"
