#!/usr/bin/env bash
# Live captions end to end, as a viewer gets them: a relay, `moqcast-publish` of espeak-ng speech
# (the caption benchmark's corpus, clips joined with pauses, H.264 + AAC), `moqcast-sidecar`, and
# `moqcast-subscribe --captions --caption-latency`, all release builds on this machine. Prints the
# captions' WER against the spoken text, the caption latency (end of utterance in the audio to
# the final cue's arrival, p50/p95), and the sidecar's real-time factor, and writes them to
# target/bench-captions/live.md. See docs/BENCHMARKS.md ("Captions: live, end to end").
#
#   bash scripts/bench-captions-live.sh
#   CLIPS=40 BEAM=1 THREADS=2 bash scripts/bench-captions-live.sh
#   RECORDING=news bash scripts/bench-captions-live.sh     # a long recording of ai-sidecar/bench/long.py
#
# Environment (all optional): CLIPS (first N clips of the corpus, 24), GAP (seconds of silence
# between clips, 1.5), RECORDING (instead of clips: one of ai-sidecar/bench/long.py's recordings,
# news, panel, sport or science, or `all` for the four in a row), BEAM (final-cue beam size, 5,
# the sidecar's default), THREADS (sidecar inference threads, 2), SIDECAR_ARGS (more
# moqcast-sidecar flags), OUT (target/bench-captions), SKIP_BUILD=1, MOQCAST_WHISPER_MODEL.
set -euo pipefail

cd "$(dirname "$0")/.."

CLIPS=${CLIPS:-24}
RECORDING=${RECORDING:-}
read -r -a SIDECAR_ARGS <<<"${SIDECAR_ARGS:-}"
GAP=${GAP:-1.5}
BEAM=${BEAM:-5}
THREADS=${THREADS:-2}
OUT=${OUT:-target/bench-captions}
QUIC_PORT=${QUIC_PORT:-24443}
HTTP_PORT=${HTTP_PORT:-28080}
METRICS_PORT=${METRICS_PORT:-29465}
BIN=target/release
LIVE=$OUT/live

log() { echo "bench-captions-live: $*" >&2; }

model=${MOQCAST_WHISPER_MODEL:-$(bash scripts/fetch-model.sh)}
export MOQCAST_WHISPER_MODEL=$model

if [ -z "${SKIP_BUILD:-}" ]; then
    log "building release binaries"
    cargo build --release -p moqcast-relay -p moqcast-publisher -p moqcast-sidecar
fi

mkdir -p "$LIVE"
python3 ai-sidecar/bench/corpus.py --out "$OUT/corpus" >&2
manifest=$OUT/corpus/manifest.json

if [ -n "$RECORDING" ]; then
    # The speech: one or all of the long recordings (each starts with 1 s of silence), after 2 s
    # of silence.
    python3 ai-sidecar/bench/long.py --out "$OUT/long" >&2
    python3 - "$OUT/long/manifest.json" "$RECORDING" "$LIVE" <<'EOF'
import json, sys, os
manifest, which, live = sys.argv[1], sys.argv[2], sys.argv[3]
m = json.load(open(manifest))
recs = m["clips"] if which == "all" else [c for c in m["clips"] if c["id"] == which]
if not recs:
    sys.exit(f"bench-captions-live: no recording {which!r} (news, panel, sport, science, all)")
base = os.path.dirname(manifest)
with open(os.path.join(live, "clips.txt"), "w") as f:
    for c in recs:
        f.write(os.path.join(base, c["file"]) + "\n")
with open(os.path.join(live, "reference.txt"), "w") as f:
    f.write("\n".join(c["text"] for c in recs) + "\n")
EOF
    sox -n -r 16000 -c 1 -b 16 "$LIVE/lead.wav" trim 0 2
    parts=("$LIVE/lead.wav")
    while IFS= read -r rec; do parts+=("$rec"); done <"$LIVE/clips.txt"
    CLIPS="recording $RECORDING"
else
# The speech: 2 s of silence, then the first CLIPS clips, each followed by GAP s of silence.
python3 - "$manifest" "$CLIPS" "$LIVE" <<'EOF'
import json, sys, os
manifest, n, live = sys.argv[1], int(sys.argv[2]), sys.argv[3]
m = json.load(open(manifest))
clips = m["clips"][:n]
base = os.path.dirname(manifest)
with open(os.path.join(live, "clips.txt"), "w") as f:
    for c in clips:
        f.write(os.path.join(base, c["file"]) + "\n")
with open(os.path.join(live, "reference.txt"), "w") as f:
    f.write("\n".join(c["text"] for c in clips) + "\n")
EOF
sox -n -r 16000 -c 1 -b 16 "$LIVE/lead.wav" trim 0 2
sox -n -r 16000 -c 1 -b 16 "$LIVE/gap.wav" trim 0 "$GAP"
parts=("$LIVE/lead.wav")
while IFS= read -r clip; do parts+=("$clip" "$LIVE/gap.wav"); done <"$LIVE/clips.txt"
CLIPS="$CLIPS clips"
fi
sox "${parts[@]}" -r 16000 -c 1 -b 16 "$LIVE/speech.wav"
speech_s=$(soxi -D "$LIVE/speech.wav")
ffmpeg -hide_banner -loglevel error -y -f lavfi -i testsrc2=size=640x360:rate=30 -i "$LIVE/speech.wav" \
    -shortest -c:v libx264 -preset veryfast -g 30 -pix_fmt yuv420p -c:a aac -b:a 64k -ar 48000 "$LIVE/speech.mp4"
log "speech: $CLIPS, $(printf %.1f "$speech_s") s"

pids=()
cleanup() { [ "${#pids[@]}" -gt 0 ] && kill "${pids[@]}" 2>/dev/null; wait 2>/dev/null || true; }
trap cleanup EXIT

"$BIN/moqcast-relay" --bind "[::]:$QUIC_PORT" --http-bind "127.0.0.1:$HTTP_PORT" --tls-generate localhost \
    >"$LIVE/relay.log" 2>&1 &
pids+=($!)
for _ in $(seq 1 50); do curl -sf -o /dev/null "http://127.0.0.1:$HTTP_PORT/healthz" && break; sleep 0.2; done
fp=$(curl -sf "http://127.0.0.1:$HTTP_PORT/certificate.sha256")
url="https://localhost:$QUIC_PORT/"

"$BIN/moqcast-sidecar" --url "$url" --tls-fingerprint "$fp" --broadcast bench --beam-size "$BEAM" \
    --threads "$THREADS" --metrics-addr "127.0.0.1:$METRICS_PORT" "${SIDECAR_ARGS[@]}" >"$LIVE/sidecar.log" 2>&1 &
pids+=($!)
for _ in $(seq 1 100); do curl -sf -o /dev/null "http://127.0.0.1:$METRICS_PORT/healthz" && break; sleep 0.2; done

# The subscriber first (it waits for the broadcast), so the captions start with the speech.
"$BIN/moqcast-subscribe" --url "$url" --tls-fingerprint "$fp" --broadcast bench --wait 60 \
    --captions "$LIVE/captions.vtt" --caption-latency --json >"$LIVE/subscribe.json" 2>"$LIVE/subscribe.log" &
sub_pid=$!
pids+=($sub_pid)
sleep 1
"$BIN/moqcast-publish" --url "$url" --tls-fingerprint "$fp" --broadcast bench --input "$LIVE/speech.mp4" \
    >"$LIVE/publish.log" 2>&1 &
pids+=($!)

log "publishing; the subscriber ends 10 s after the media"
wait "$sub_pid" || { log "the subscriber failed"; tail -n 20 "$LIVE/subscribe.log" >&2; exit 1; }
curl -sf "http://127.0.0.1:$METRICS_PORT/metrics" >"$LIVE/sidecar-metrics.txt"
curl -sf "http://127.0.0.1:$METRICS_PORT/status" >"$LIVE/sidecar-status.json"

python3 - "$LIVE" "$speech_s" "$CLIPS" "$BEAM" "$THREADS" <<'EOF' | tee "$LIVE/../live.md"
import json, re, sys, os
sys.path.insert(0, "ai-sidecar/bench")
from score import normalise, edit_distance
live, speech_s, clips, beam, threads = sys.argv[1], float(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5]
ref = normalise(open(os.path.join(live, "reference.txt")).read())
vtt = open(os.path.join(live, "captions.vtt")).read()
hyp_lines = [l for l in vtt.splitlines()[1:] if l and "-->" not in l and not re.fullmatch(r"u\d+", l)]
hyp = normalise(" ".join(hyp_lines))
wer = 100.0 * edit_distance(ref, hyp) / max(1, len(ref))
sub = json.loads(open(os.path.join(live, "subscribe.json")).read().strip().splitlines()[-1])["captions"]
metrics = {}
for line in open(os.path.join(live, "sidecar-metrics.txt")):
    if line.startswith("#"):
        continue
    k, v = line.rsplit(" ", 1)
    metrics[k] = float(v)
inference = metrics.get("moqcast_sidecar_inference_seconds_total", 0.0)
audio = metrics.get('moqcast_sidecar_audio_seconds_total{broadcast="bench"}', 0.0)
finals = metrics.get('moqcast_sidecar_inferences_total{kind="final"}', 0)
partials = metrics.get('moqcast_sidecar_inferences_total{kind="partial"}', 0)
skipped = metrics.get('moqcast_sidecar_audio_skipped_seconds_total{broadcast="bench"}', 0.0)
merged = metrics.get('moqcast_sidecar_utterances_merged_total{broadcast="bench"}', 0)
load = open("/proc/loadavg").read().split()[:3]
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
print(f"Live captions, {clips}, {speech_s:.1f} s of audio; {os.cpu_count()} CPUs ({cpu}), sidecar {threads} threads, final beam {beam}; load after {' '.join(load)}.\n")
print("| WER % | final cues | partial cues | caption latency p50 | p95 | inference s / audio s | recognitions (final + partial) | merged | skipped s |")
print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
p50 = sub.get("caption_latency_p50_ms")
p95 = sub.get("caption_latency_p95_ms")
f = lambda v: "-" if v is None else f"{v/1000:.2f} s"
print(f"| {wer:.1f} | {sub['final_cues']} | {sub['partial_cues']} | {f(p50)} | {f(p95)} | {inference / max(audio, 1e-9):.3f} | {int(finals)} + {int(partials)} | {int(merged)} | {skipped:.1f} |")
EOF
