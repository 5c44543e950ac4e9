#!/usr/bin/env bash
# Soak: a relay under moderate load for a long time, its memory sampled every 10 s. Publishers
# of the test pattern (`moqcast-publish --input testsrc`, H.264 + Opus) stay on air while viewers
# (`moqcast-subscribe`) join and leave in a loop, each watching a random broadcast for a random
# 5-20 s; optionally `moqcast-sidecar` captions the first broadcast. Prints one row per sample
# (relay RSS, subscriptions, cached bytes) and a summary with the relay's RSS at the start (the
# first sample after WARMUP), at the end and at its largest, and writes them to OUT. See
# docs/BENCHMARKS.md ("Soak").
#
#   bash scripts/soak.sh                        # 30 minutes
#   DURATION=300 bash scripts/soak.sh           # 5 minutes
#   SIDECAR=1 DURATION=600 bash scripts/soak.sh
#
# Environment (all optional): DURATION (seconds, 1800), PUBLISHERS (2), VIEWERS (concurrent
# viewer loops, 4), WARMUP (seconds before the start figure, 20), SIDECAR (1: caption
# broadcast soak-0, which then carries looped espeak-ng speech, in English and Spanish with
# moqcast-sidecar; needs the Whisper model (scripts/fetch-model.sh), espeak-ng and sox),
# PORT (34443), HTTP_PORT (38080), SIDECAR_METRICS_PORT (39465), OUT (target/soak), BIN (target/release),
# SKIP_BUILD=1 to use the binaries in BIN as they are.
set -euo pipefail

cd "$(dirname "$0")/.."

DURATION=${DURATION:-1800}
PUBLISHERS=${PUBLISHERS:-2}
VIEWERS=${VIEWERS:-4}
WARMUP=${WARMUP:-20}
SIDECAR=${SIDECAR:-0}
PORT=${PORT:-34443}
HTTP_PORT=${HTTP_PORT:-38080}
OUT=${OUT:-target/soak}
BIN=${BIN:-target/release}
INTERVAL=10

log() { echo "soak: $*" >&2; }

if [ -z "${SKIP_BUILD:-}" ]; then
    log "building release binaries"
    packages=(-p moqcast-relay -p moqcast-publisher)
    [ "$SIDECAR" = 1 ] && packages+=(-p moqcast-sidecar)
    cargo build --release "${packages[@]}"
    BIN=target/release
fi
for b in moqcast-relay moqcast-publish moqcast-subscribe; do
    [ -x "$BIN/$b" ] || { log "$BIN/$b is missing (build it, or set BIN)"; exit 1; }
done

mkdir -p "$OUT"
stamp=$(date -u +%Y%m%dT%H%M%SZ)
samples=$OUT/soak-$stamp.tsv
summary=$OUT/soak-$stamp.md
joins=$OUT/soak-$stamp.joins
: >"$joins"
url="moqt://127.0.0.1:$PORT"
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
}
trap cleanup EXIT

metric() { # NAME: a value from the relay's /metrics (0 if absent)
    curl -fs "http://127.0.0.1:$HTTP_PORT/metrics" 2>/dev/null |
        awk -v n="$1" '$1 == n {print $2; found=1} END {if (!found) print 0}'
}

RUST_LOG=warn "$BIN/moqcast-relay" --bind "127.0.0.1:$PORT" --http-bind "127.0.0.1:$HTTP_PORT" \
    --tls-generate localhost,127.0.0.1 >"$OUT/soak-relay-$stamp.log" 2>&1 &
relay=$!
pids+=("$relay")
for _ in $(seq 100); do
    curl -fs "http://127.0.0.1:$HTTP_PORT/healthz" >/dev/null 2>&1 && break
    kill -0 "$relay" 2>/dev/null || { log "the relay did not start"; tail "$OUT/soak-relay-$stamp.log" >&2; exit 1; }
    sleep 0.1
done

# With the sidecar, broadcast soak-0 carries speech (espeak-ng sentences over a test pattern,
# looped), so the sidecar has something to caption and translate the whole time.
speech=$OUT/soak-speech.mp4
if [ "$SIDECAR" = 1 ] && [ ! -s "$speech" ]; then
    log "making $speech (espeak-ng speech over a test pattern)"
    lines=(
        "Welcome to the long run of the relay."
        "Viewers come and go while the publishers stay on the air."
        "The sidecar listens to this voice and writes captions in English and in Spanish."
        "Memory should stay flat for the whole half hour."
    )
    parts=()
    sox -n -r 16000 -c 1 -b 16 "$OUT/soak-gap.wav" trim 0 1.5
    for i in "${!lines[@]}"; do
        espeak-ng -v en-us -s 160 -w "$OUT/soak-s$i-raw.wav" "${lines[$i]}"
        sox "$OUT/soak-s$i-raw.wav" -r 16000 -c 1 -b 16 "$OUT/soak-s$i.wav"
        parts+=("$OUT/soak-s$i.wav" "$OUT/soak-gap.wav")
    done
    sox "${parts[@]}" "$OUT/soak-speech.wav"
    ffmpeg -hide_banner -loglevel error -y -f lavfi -i testsrc2=size=640x360:rate=30 \
        -i "$OUT/soak-speech.wav" -shortest -c:v libx264 -preset veryfast -g 30 -pix_fmt yuv420p \
        -c:a aac -b:a 64k -ar 48000 "$speech"
fi
for i in $(seq 0 $((PUBLISHERS - 1))); do
    input=(--input testsrc)
    [ "$SIDECAR" = 1 ] && [ "$i" = 0 ] && input=(--input "$speech" --loop)
    RUST_LOG=warn "$BIN/moqcast-publish" --url "$url" --broadcast "soak-$i" "${input[@]}" \
        --tls-disable-verify >"$OUT/soak-publish-$i-$stamp.log" 2>&1 &
    pids+=("$!")
done
sidecar=""
SIDECAR_METRICS=127.0.0.1:${SIDECAR_METRICS_PORT:-39465}
if [ "$SIDECAR" = 1 ]; then
    model=${MOQCAST_WHISPER_MODEL:-$(bash scripts/fetch-model.sh)}
    MOQCAST_WHISPER_MODEL=$model RUST_LOG=warn "$BIN/moqcast-sidecar" --url "$url" \
        --broadcast soak-0 --translate es --metrics-addr "$SIDECAR_METRICS" --tls-disable-verify \
        >"$OUT/soak-sidecar-$stamp.log" 2>&1 &
    sidecar=$!
    pids+=("$sidecar")
    # The sidecar captions and translates only what is watched: two viewers read the English
    # and the Spanish captions for the whole run.
    for lang in en es; do
        RUST_LOG=error "$BIN/moqcast-subscribe" --url "$url" --broadcast soak-0 --tls-disable-verify \
            --duration "$((DURATION > 20 ? DURATION - 10 : 10))" --captions "$OUT/soak-captions-$lang-$stamp.vtt" \
            --caption-lang "$lang" --wait 30 >"$OUT/soak-captions-$lang-$stamp.log" 2>&1 &
        pids+=("$!")
    done
fi
sidecar_metric() { # NAME: the sum of a sidecar metric's samples (0 if absent)
    [ -n "$sidecar" ] || { echo 0; return; }
    curl -fs "http://$SIDECAR_METRICS/metrics" 2>/dev/null |
        awk -v n="$1" '$1 == n || index($1, n "{") == 1 {s += $2} END {print s + 0}'
}

end=$(($(date +%s) + DURATION))
viewer_loop() { # SLOT: join, watch 5-20 s, leave, again, until the end
    local slot=$1
    while [ "$(date +%s)" -lt "$end" ]; do
        local b=$((RANDOM % (PUBLISHERS > 0 ? PUBLISHERS : 1))) secs=$((5 + RANDOM % 16))
        RUST_LOG=error "$BIN/moqcast-subscribe" --url "$url" --broadcast "soak-$b" \
            --tls-disable-verify --duration "$secs" --reconnect-for 0 >/dev/null 2>&1 &&
            echo "ok $slot" >>"$joins" || echo "failed $slot" >>"$joins"
    done
}
for v in $(seq 1 "$VIEWERS"); do
    viewer_loop "$v" &
    pids+=("$!")
done

log "relay pid $relay, $PUBLISHERS publishers, $VIEWERS viewer loops, sidecar=$SIDECAR, ${DURATION}s; samples every ${INTERVAL}s in $samples"
printf 't_s\trss_kib\tsubscriptions\tcache_bytes\tsessions\tsidecar_rss_kib\tinferences\ttranslated_cues\n' | tee "$samples"
t0=$(date +%s)
while :; do
    sleep "$INTERVAL"
    kill -0 "$relay" 2>/dev/null || { log "the relay died"; tail "$OUT/soak-relay-$stamp.log" >&2; exit 1; }
    t=$(($(date +%s) - t0))
    rss=$(awk '/^VmRSS:/ {print $2}' "/proc/$relay/status")
    srss=0
    if [ -n "$sidecar" ]; then
        kill -0 "$sidecar" 2>/dev/null || { log "the sidecar died"; tail "$OUT/soak-sidecar-$stamp.log" >&2; exit 1; }
        srss=$(awk '/^VmRSS:/ {print $2}' "/proc/$sidecar/status")
    fi
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$t" "$rss" "$(metric moqcast_subscriptions)" \
        "$(metric moqcast_cache_bytes)" "$(metric moqcast_sessions)" "$srss" \
        "$(sidecar_metric moqcast_sidecar_inferences_total)" \
        "$(sidecar_metric moqcast_sidecar_translated_cues_total)" | tee -a "$samples"
    [ "$t" -ge "$DURATION" ] && break
done

ok=$(grep -c '^ok' "$joins" || true)
failed=$(grep -c '^failed' "$joins" || true)
awk -F'\t' -v warmup="$WARMUP" -v ok="$ok" -v failed="$failed" -v dur="$DURATION" \
    -v pubs="$PUBLISHERS" -v viewers="$VIEWERS" -v sidecar="$SIDECAR" '
    NR == 1 { next }
    $1 >= warmup && start == "" { start = $2; start_t = $1; sstart = $6 }
    { last = $2; last_t = $1; if ($2 > max) { max = $2; max_t = $1 } if ($4 > cache) cache = $4
      slast = $6; if ($6 > smax) smax = $6; inf = $7; cues = $8 }
    END {
        mib = 1024
        printf "Soak: %d s, %d publishers (testsrc; with the sidecar, soak-0 speech), %d viewer loops (5-20 s each), sidecar %s\n\n", dur, pubs, viewers, (sidecar == 1 ? "on" : "off")
        printf "| relay RSS | MiB |\n|---|---|\n"
        printf "| start (t = %d s) | %.1f |\n", start_t, start / mib
        printf "| end (t = %d s) | %.1f |\n", last_t, last / mib
        printf "| max (t = %d s) | %.1f |\n", max_t, max / mib
        printf "| end - start | %+.1f |\n\n", (last - start) / mib
        printf "largest cache: %.1f MiB; viewer sessions: %d completed, %d failed\n", cache / 1048576, ok, failed
        if (sidecar == 1)
            printf "sidecar RSS: start %.1f MiB, end %.1f MiB, max %.1f MiB; %d inferences, %d translated cues\n", sstart / mib, slast / mib, smax / mib, inf, cues
    }' "$samples" | tee "$summary"
if [ "$SIDECAR" = 1 ]; then
    # The caption viewers write their WebVTT files when their --duration ends, just before this.
    for _ in $(seq 30); do
        [ -s "$OUT/soak-captions-es-$stamp.vtt" ] && [ -s "$OUT/soak-captions-en-$stamp.vtt" ] && break
        sleep 1
    done
    for lang in en es; do
        f="$OUT/soak-captions-$lang-$stamp.vtt"
        printf 'captions %s: %s cues\n' "$lang" "$(grep -c -- '-->' "$f" 2>/dev/null || echo 0)" | tee -a "$summary"
    done
fi
log "samples: $samples; summary: $summary"
