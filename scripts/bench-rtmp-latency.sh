#!/usr/bin/env bash
# The latency RTMP and SRT ingest add: FFmpeg pushes a 640x360 30 fps test pattern (libx264
# zerolatency, a keyframe every 2 s) with AAC over RTMP into moqcast-relay --rtmp-bind, and
# moqcast-subscribe reads the broadcast over MoQ (raw QUIC) on the same machine. The relay stamps
# each frame's LOC SEND_TIME when its RTMP message has been read, so the subscriber's one-way
# latency is the relay's share: RTMP message in -> repackaged, cached, fanned out -> MoQ viewer.
# The same media in MPEG-TS over SRT into --srt-bind (libsrt caller, default 120 ms latency
# window, which libsrt's receiver holds each packet for before the relay sees it): SEND_TIME is
# stamped when the relay's demuxer completes a frame, so the figure is the relay's share after
# SRT has delivered (not the SRT window, nor the wait for the end of a video PES, which FFmpeg
# leaves unbounded: it ends when the next frame's PES starts).
# The same media (Opus audio, no B-frames) over WHIP from FFmpeg 9's whip muxer into
# --webrtc-addr: SEND_TIME is stamped when str0m has handed the relay a whole frame (after SRTP,
# the jitter buffer and depacketization), so again the relay's share after the WebRTC hop.
# For comparison, the same subscriber reads moqcast-publish's test source published over MoQ
# (SEND_TIME stamped by the publisher). Prints the subscriber's JSON lines. See
# docs/BENCHMARKS.md ("RTMP and SRT ingest latency").
#
#   bash scripts/bench-rtmp-latency.sh
#
# Environment: SECONDS_ (20) of media per run, PROFILE (release; "debug" uses the dev build),
# SKIP_BUILD=1 to use existing binaries, PORT (44443), RTMP_PORT (41935), SRT_PORT (49000),
# HTTP_PORT (48080), SRT_LATENCY_MS (120: the caller's SRT latency), WEBRTC_PORT (44445),
# PATHS ("rtmp srt whip moq": which paths to measure), WHIP_FFMPEG (FFmpeg with the whip muxer).
set -euo pipefail
cd "$(dirname "$0")/.."

DUR=${SECONDS_:-20}
PROFILE=${PROFILE:-release}
PORT=${PORT:-44443}
RTMP_PORT=${RTMP_PORT:-41935}
SRT_PORT=${SRT_PORT:-49000}
SRT_LATENCY_MS=${SRT_LATENCY_MS:-120}
HTTP_PORT=${HTTP_PORT:-48080}
WEBRTC_PORT=${WEBRTC_PORT:-44445}
# Which paths to measure (any of rtmp srt whip moq).
PATHS=${PATHS:-rtmp srt whip moq}
# FFmpeg with the whip muxer (scripts/setup.sh installs it); the WHIP path is skipped without it.
WHIP_FFMPEG=${WHIP_FFMPEG:-$(ls "$HOME"/.cache/moqcast/imageio-ffmpeg/imageio_ffmpeg/binaries/ffmpeg-* 2>/dev/null | head -n1 || true)}
want() { [[ " $PATHS " == *" $1 "* ]]; }
flag=(); [ "$PROFILE" = release ] && flag=(--release)
if [ -z "${SKIP_BUILD:-}" ]; then
    cargo build "${flag[@]}" -p moqcast-relay -p moqcast-publisher --bins
fi
bin=target/$PROFILE
out=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$out"' EXIT

RUST_LOG=warn "$bin/moqcast-relay" --bind "127.0.0.1:$PORT" --http-bind "127.0.0.1:$HTTP_PORT" \
    --tls-generate localhost,127.0.0.1 --rtmp-bind "127.0.0.1:$RTMP_PORT" \
    --srt-bind "127.0.0.1:$SRT_PORT" --srt-latency-ms "$SRT_LATENCY_MS" \
    --webrtc-addr "127.0.0.1:$WEBRTC_PORT" 2>"$out/relay.log" &
sleep 1
sub() {
    "$bin/moqcast-subscribe" --url "moqt://127.0.0.1:$PORT" --broadcast "$1" \
        --tls-disable-verify --duration "$((DUR - 4))" --wait 20 --json | tail -1
}

if want rtmp; then
echo "# RTMP (ffmpeg -> relay --rtmp-bind -> moqcast-subscribe)"
ffmpeg -hide_banner -v error -re -f lavfi -i testsrc2=size=640x360:rate=30 \
    -f lavfi -i sine=frequency=440:sample_rate=48000 -t "$DUR" \
    -c:v libx264 -preset veryfast -tune zerolatency -pix_fmt yuv420p -g 60 \
    -c:a aac -b:a 128k -f flv "rtmp://127.0.0.1:$RTMP_PORT/live/rtmp-latency" &
ff=$!
sleep 2
sub rtmp-latency
wait "$ff"
fi

if want srt; then
echo "# SRT (ffmpeg -f mpegts srt://...?latency=${SRT_LATENCY_MS}ms -> relay --srt-bind -> moqcast-subscribe)"
ffmpeg -hide_banner -v error -re -f lavfi -i testsrc2=size=640x360:rate=30 \
    -f lavfi -i sine=frequency=440:sample_rate=48000 -t "$DUR" \
    -c:v libx264 -preset veryfast -tune zerolatency -pix_fmt yuv420p -g 60 \
    -c:a aac -b:a 128k -f mpegts \
    "srt://127.0.0.1:$SRT_PORT?streamid=srt-latency&latency=$((SRT_LATENCY_MS * 1000))" &
ff=$!
sleep 2
sub srt-latency
wait "$ff"
fi

if want whip && [ -n "$WHIP_FFMPEG" ]; then
echo "# WHIP (ffmpeg 9 -f whip -> relay --webrtc-addr -> moqcast-subscribe)"
"$WHIP_FFMPEG" -hide_banner -v error -re -f lavfi -i testsrc2=size=640x360:rate=30 \
    -f lavfi -i sine=frequency=440:sample_rate=48000 -t "$DUR" \
    -c:v libx264 -preset veryfast -tune zerolatency -pix_fmt yuv420p -g 60 -bf 0 \
    -c:a libopus -b:a 128k -ac 2 -f whip "http://127.0.0.1:$HTTP_PORT/whip/whip-latency" &
ff=$!
sleep 2
sub whip-latency
wait "$ff" || true
fi

want moq || exit 0
echo "# MoQ publisher (moqcast-publish --input testsrc -> relay -> moqcast-subscribe)"
RUST_LOG=warn "$bin/moqcast-publish" --url "moqt://127.0.0.1:$PORT" --broadcast moq-latency \
    --input testsrc --tls-disable-verify --duration "$DUR" &
pub=$!
sleep 2
sub moq-latency
wait "$pub"
