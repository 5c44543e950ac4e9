#!/usr/bin/env bash
# A live moqcast broadcast on this machine, in one command:
#
#   bash scripts/demo.sh
#   MOQCAST_QUIC_PORT=34443 MOQCAST_HTTP_PORT=38080 bash scripts/demo.sh   # other ports
#
# It installs what is missing (scripts/setup.sh, without the test-only tools), builds the
# release binaries, starts a relay with a generated development certificate, publishes a test
# pattern with spoken English (espeak-ng, looping) as the broadcast "demo", starts the AI
# sidecar, which captions the speech live with Whisper tiny.en (caption track "captions-en" in
# the namespace "demo/ai"), translates the captions into Spanish with Apertium ("captions-es")
# and speaks them as a dubbed audio track ("audio-es": SVOX Pico where setup could install it,
# else espeak-ng), and prints how to watch it and how to publish from a browser or FFmpeg over
# WHIP. Ctrl-C stops all. Logs go to target/demo/.
set -euo pipefail

cd "$(dirname "$0")/.."

QUIC_PORT="${MOQCAST_QUIC_PORT:-4443}"
HTTP_PORT="${MOQCAST_HTTP_PORT:-8080}"
WEBRTC_PORT="${MOQCAST_WEBRTC_PORT:-4445}"
BROADCAST=demo
BIN=target/release
LOGS=target/demo
HTTP="http://127.0.0.1:$HTTP_PORT"

say() { echo "demo: $*"; }

if [ -d "$HOME/.cargo/bin" ]; then
    case ":$PATH:" in *":$HOME/.cargo/bin:"*) ;; *) export PATH="$HOME/.cargo/bin:$PATH" ;; esac
fi

say "setup (packages and Rust; skipping the test-only tools)"
MOQCAST_SKIP_PEERS=1 bash scripts/setup.sh
# setup.sh may just have installed Rust.
[ -d "$HOME/.cargo/bin" ] && export PATH="$HOME/.cargo/bin:$PATH"

say "building release binaries (the first build takes several minutes)"
cargo build --release -p moqcast-relay -p moqcast-publisher -p moqcast-sidecar

mkdir -p "$LOGS"
pids=()
# shellcheck disable=SC2317 # called through the traps below
cleanup() {
    trap - EXIT INT TERM
    if [ "${#pids[@]}" -gt 0 ]; then
        say "stopping (pids ${pids[*]})"
        kill "${pids[@]}" 2>/dev/null || true
        wait "${pids[@]}" 2>/dev/null || true
    fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Prints the last lines of a log and exits.
fail() {
    say "$1" >&2
    if [ -f "${2:-}" ]; then
        echo "---- $2 ----" >&2
        if grep -q '^Error: ' "$2"; then
            # The program's error and its causes, without a backtrace (RUST_BACKTRACE=1).
            sed -n '/^Error: /,/^Stack backtrace:/p' "$2" | grep -v '^Stack backtrace:' >&2
        else
            tail -n 20 "$2" >&2
        fi
    fi
    exit 1
}

if curl -s -o /dev/null --max-time 2 "$HTTP/healthz"; then
    fail "something already answers on $HTTP: stop it, or pick another port with MOQCAST_HTTP_PORT=..."
fi

say "starting moqcast-relay on UDP [::]:$QUIC_PORT and HTTP 127.0.0.1:$HTTP_PORT (log: $LOGS/relay.log)"
"$BIN/moqcast-relay" --bind "[::]:$QUIC_PORT" --http-bind "127.0.0.1:$HTTP_PORT" \
    --webrtc-addr "127.0.0.1:$WEBRTC_PORT" \
    --tls-generate localhost,127.0.0.1,::1 >"$LOGS/relay.log" 2>&1 &
relay_pid=$!
pids+=("$relay_pid")

for _ in $(seq 1 100); do
    curl -sf -o /dev/null --max-time 1 "$HTTP/healthz" && break
    kill -0 "$relay_pid" 2>/dev/null || fail "the relay exited (is UDP $QUIC_PORT in use? try MOQCAST_QUIC_PORT=...)" "$LOGS/relay.log"
    sleep 0.2
done
curl -sf -o /dev/null --max-time 1 "$HTTP/healthz" || fail "the relay did not answer on $HTTP/healthz" "$LOGS/relay.log"
FINGERPRINT="$(curl -sf --max-time 2 "$HTTP/certificate.sha256")"

# The demo's media: a test pattern and a few spoken sentences (espeak-ng), looped by the
# publisher, so the sidecar has speech to caption.
MEDIA="$LOGS/demo-speech.mp4"
if [ ! -s "$MEDIA" ]; then
    say "making $MEDIA (espeak-ng speech over a test pattern)"
    SPEECH=(
        "Welcome to the moqcast demo."
        "This broadcast travels over Media over QUIC, from the publisher through the relay to your browser."
        "The captions you are reading are made live by the AI sidecar, which listens to the audio."
        "It runs the Whisper tiny English model on the CPU of this machine."
        "Captions appear while a sentence is spoken, and are corrected when it ends."
        "Thank you for watching."
    )
    parts=()
    sox -n -r 16000 -c 1 -b 16 "$LOGS/gap.wav" trim 0 1.2
    for i in "${!SPEECH[@]}"; do
        espeak-ng -v en-us -s 160 -w "$LOGS/s$i-raw.wav" "${SPEECH[$i]}"
        sox "$LOGS/s$i-raw.wav" -r 16000 -c 1 -b 16 "$LOGS/s$i.wav"
        parts+=("$LOGS/s$i.wav" "$LOGS/gap.wav")
    done
    sox "${parts[@]}" "$LOGS/demo-speech.wav"
    ffmpeg -hide_banner -loglevel error -y -f lavfi -i testsrc2=size=640x360:rate=30 \
        -i "$LOGS/demo-speech.wav" -shortest -c:v libx264 -preset veryfast -g 30 -pix_fmt yuv420p \
        -c:a aac -b:a 64k -ar 48000 "$MEDIA"
fi

say "publishing a test pattern with speech as \"$BROADCAST\" (log: $LOGS/publish.log)"
"$BIN/moqcast-publish" --url "https://localhost:$QUIC_PORT/" --broadcast "$BROADCAST" --input "$MEDIA" --loop \
    --tls-fingerprint "$FINGERPRINT" >"$LOGS/publish.log" 2>&1 &
publish_pid=$!
pids+=("$publish_pid")

METRICS_ADDR="127.0.0.1:${MOQCAST_SIDECAR_PORT:-9465}"
say "starting moqcast-sidecar: live captions of \"$BROADCAST\", in Spanish, and a Spanish dub (log: $LOGS/sidecar.log)"
"$BIN/moqcast-sidecar" --url "https://localhost:$QUIC_PORT/" --broadcast "$BROADCAST" --translate es --dub es \
    --metrics-addr "$METRICS_ADDR" --tls-fingerprint "$FINGERPRINT" >"$LOGS/sidecar.log" 2>&1 &
sidecar_pid=$!
pids+=("$sidecar_pid")

# The relay lists announced broadcasts at /broadcasts: [{"broadcast":"demo","tracks":[..]}].
announced() {
    local body
    body="$(curl -sf --max-time 1 "$HTTP/broadcasts" || true)"
    [[ $body == *"$BROADCAST\""* ]]
}
for _ in $(seq 1 75); do
    announced && break
    kill -0 "$publish_pid" 2>/dev/null || fail "the publisher exited" "$LOGS/publish.log"
    sleep 0.2
done
announced || fail "the broadcast did not appear on the relay" "$LOGS/publish.log"
for _ in $(seq 1 100); do
    [[ "$(curl -sf --max-time 1 "http://$METRICS_ADDR/status" || true)" == *'"status":"idle"'* ]] && break
    kill -0 "$sidecar_pid" 2>/dev/null || fail "the sidecar exited" "$LOGS/sidecar.log"
    sleep 0.2
done

if [ -f web/dist/watch.html ]; then
    VIEWER_NOTE="Open it in Chromium or Firefox (it pins the certificate itself); live captions show under the picture (caption menu: English (automatic), or Español (traducción automática)); the audio menu has \"Spanish (dubbed)\" (the picture then waits for the dub, about 8 s)."
else
    VIEWER_NOTE="Not built: run scripts/setup.sh to build the browser viewer."
fi

# An FFmpeg with the whip muxer: the one scripts/setup.sh installs for the tests, if it did.
WHIP_FFMPEG="$(ls "$HOME"/.cache/moqcast/imageio-ffmpeg/imageio_ffmpeg/binaries/ffmpeg-* 2>/dev/null | head -n 1 || true)"
WHIP_FFMPEG="${WHIP_FFMPEG:-ffmpeg}"

cat <<EOF

================================================================================
 moqcast demo: broadcast "$BROADCAST" is live
================================================================================
 Relay (one UDP port, both transports):
   WebTransport  https://localhost:$QUIC_PORT/
   raw QUIC      moqt://127.0.0.1:$QUIC_PORT
 HTTP side:      $HTTP/healthz  $HTTP/metrics  $HTTP/broadcasts
 Certificate:    self-signed ECDSA P-256, valid 13 days; SHA-256 fingerprint
                 $FINGERPRINT
                 (also at $HTTP/certificate.sha256)

 Watch it from another terminal (per-track objects, bytes, latency after 10 s):
   $BIN/moqcast-subscribe --url https://localhost:$QUIC_PORT/ --broadcast $BROADCAST \\
       --tls-fingerprint $FINGERPRINT --stats --duration 10

 Record 10 s to an MP4 file (raw QUIC this time; --tls-disable-verify also works locally):
   $BIN/moqcast-subscribe --url moqt://127.0.0.1:$QUIC_PORT --broadcast $BROADCAST \\
       --tls-fingerprint $FINGERPRINT --output demo.mp4 --duration 10

 Browser viewer: $HTTP/watch/$BROADCAST   (index of broadcasts: $HTTP/)
   $VIEWER_NOTE

 Live captions (AI sidecar, Whisper tiny.en on CPU; it recognises only while someone
 subscribes to the captions): 30 s of final cues to a WebVTT file, and caption latency:
   $BIN/moqcast-subscribe --url https://localhost:$QUIC_PORT/ --broadcast $BROADCAST \\
       --tls-fingerprint $FINGERPRINT --captions demo.vtt --caption-latency --duration 30
 The same in Spanish (Apertium; translated only while someone subscribes to it): add
   --caption-lang es
 Sidecar status and metrics: http://$METRICS_ADDR/status  http://$METRICS_ADDR/metrics

 Publish from this machine's browser (camera and microphone over WHIP; media on UDP $WEBRTC_PORT):
   $HTTP/publish/mycam     then watch it at $HTTP/watch/mycam
 or from FFmpeg 7.1+ (it has the whip muxer; OBS: Settings > Stream > WHIP, server
 $HTTP/whip/mycam, keyframe interval 1 s):
   $WHIP_FFMPEG -re -f lavfi -i testsrc2=size=1280x720:rate=30 -f lavfi -i sine=f=440:r=48000 \\
       -c:v libx264 -preset veryfast -tune zerolatency -g 30 -bf 0 -c:a libopus -ar 48000 -ac 2 \\
       -f whip $HTTP/whip/mycam

 Logs: $LOGS/relay.log  $LOGS/publish.log  $LOGS/sidecar.log
 Ctrl-C stops the relay, the publisher and the sidecar.
================================================================================
EOF

# Run until Ctrl-C, or until the relay or the publisher stops on its own.
rc=0
wait -n "$relay_pid" "$publish_pid" "$sidecar_pid" || rc=$?
if ! kill -0 "$relay_pid" 2>/dev/null; then
    fail "the relay stopped (exit $rc)" "$LOGS/relay.log"
fi
if ! kill -0 "$sidecar_pid" 2>/dev/null; then
    fail "the sidecar stopped (exit $rc)" "$LOGS/sidecar.log"
fi
fail "the publisher stopped (exit $rc)" "$LOGS/publish.log"
