#!/usr/bin/env bash
# A live moqcast broadcast on this machine, in one command:
#
#   bash scripts/demo.sh
#   MOQCAST_QUIC_PORT=34443 MOQCAST_HTTP_PORT=38080 bash scripts/demo.sh   # other ports
#
# It installs what is missing (scripts/setup.sh, without the test-only tools), builds the
# release binaries, starts a relay with a generated development certificate, publishes a test
# pattern with a tone as the broadcast "demo", and prints how to watch it. Ctrl-C stops all.
# Logs go to target/demo/.
set -euo pipefail

cd "$(dirname "$0")/.."

QUIC_PORT="${MOQCAST_QUIC_PORT:-4443}"
HTTP_PORT="${MOQCAST_HTTP_PORT:-8080}"
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
cargo build --release -p moqcast-relay -p moqcast-publisher

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

# Captions for the demo: a WebVTT file with a cue every 3 s for an hour, published as the
# broadcast's caption track (the AI sidecar, which captions real speech, is a separate issue).
CAPTIONS="$LOGS/demo-captions.vtt"
{
    echo "WEBVTT"
    echo
    for i in $(seq 0 1199); do
        start=$((i * 3))
        printf '%02d:%02d:%02d.000 --> %02d:%02d:%02d.800\n' $((start / 3600)) $((start / 60 % 60)) $((start % 60)) \
            $(((start + 2) / 3600)) $(((start + 2) / 60 % 60)) $(((start + 2) % 60))
        echo "moqcast demo caption $((i + 1)): $((start / 60)) min $((start % 60)) s into the broadcast"
        echo
    done
} >"$CAPTIONS"

say "publishing a test pattern, a tone and captions as \"$BROADCAST\" (log: $LOGS/publish.log)"
"$BIN/moqcast-publish" --url "https://localhost:$QUIC_PORT/" --broadcast "$BROADCAST" --input testsrc \
    --captions "$CAPTIONS" --captions-lang en \
    --tls-fingerprint "$FINGERPRINT" >"$LOGS/publish.log" 2>&1 &
publish_pid=$!
pids+=("$publish_pid")

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

if [ -f web/dist/watch.html ]; then
    VIEWER_NOTE="Open it in Chromium (it pins the certificate itself); pick captions from the CC menu. The captions come from a WebVTT file; live AI captions arrive with their own issue."
else
    VIEWER_NOTE="Not built: the browser viewer and live AI captions arrive with their own issues."
fi

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

 Logs: $LOGS/relay.log  $LOGS/publish.log
 Ctrl-C stops the relay and the publisher.
================================================================================
EOF

# Run until Ctrl-C, or until the relay or the publisher stops on its own.
rc=0
wait -n "$relay_pid" "$publish_pid" || rc=$?
if ! kill -0 "$relay_pid" 2>/dev/null; then
    fail "the relay stopped (exit $rc)" "$LOGS/relay.log"
fi
fail "the publisher stopped (exit $rc)" "$LOGS/publish.log"
