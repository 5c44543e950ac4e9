#!/usr/bin/env bash
# Dubbed audio end to end, as a viewer gets it: a relay, `moqcast-publish` of English espeak-ng
# speech (one of ai-sidecar/bench/long.py's recordings, looped, H.264 + AAC), and for each voice
# `moqcast-sidecar --translate es --dub es --synthesize-chain VOICE` with `moqcast-dub-bench`
# listening for SECONDS_PER_VOICE. The voice `piper` has only an English voice in any package
# (NOTES.md), so it dubs the other way: Spanish speech (SVOX Pico, Spanish sentences written for
# this benchmark) -> `moqcast-sidecar --model base --language es --translate en --dub en
# --synthesize-chain piper`. All release builds on this machine. For each voice it prints:
#
#   - the dub's lag behind the source audio as received (p50/p95/p99/max) and its continuity
#     (frames missing, objects out of order);
#   - its intelligibility: the multilingual Whisper base (scripts/fetch-model.sh base, beam 5,
#     language fixed to the dub's) transcribes the dub cue by cue (`moqcast-caption-bench`), and
#     the word error rate is taken against the cue text the sidecar published in that language;
#   - as a ceiling for the voice alone, the same WER on the cue texts spoken by the voice directly
#     (no dub timeline, stretch or Opus), for pico and espeak-ng.
#
# and writes the tables to target/bench-dub/dub.md. See docs/BENCHMARKS.md ("Dubbed audio").
#
#   bash scripts/bench-dub.sh
#   VOICES="pico" SECONDS_PER_VOICE=300 bash scripts/bench-dub.sh
#
# Environment (all optional): VOICES (synthesis providers to measure, one at a time; default
# "pico espeak-ng piper", piper left out with a line where scripts/fetch-piper.sh could not
# install it), SECONDS_PER_VOICE (150), RECORDING (news, panel, sport or science; news),
# DELAY_MS (the sidecar's --dub-delay-ms; its default), THREADS (sidecar inference threads, 2),
# OUT (target/bench-dub), SKIP_BUILD=1.
set -euo pipefail

cd "$(dirname "$0")/.."

VOICES=${VOICES:-pico espeak-ng piper}
SECONDS_PER_VOICE=${SECONDS_PER_VOICE:-150}
RECORDING=${RECORDING:-news}
THREADS=${THREADS:-2}
OUT=${OUT:-target/bench-dub}
QUIC_PORT=${QUIC_PORT:-24453}
HTTP_PORT=${HTTP_PORT:-28090}
METRICS_PORT=${METRICS_PORT:-29475}
BIN=target/release

log() { echo "bench-dub: $*" >&2; }

tiny=$(bash scripts/fetch-model.sh)
base=$(bash scripts/fetch-model.sh base)
export MOQCAST_WHISPER_MODEL=$tiny

if [ -z "${SKIP_BUILD:-}" ]; then
    log "building release binaries"
    cargo build --release -p moqcast-relay -p moqcast-publisher -p moqcast-sidecar
fi

mkdir -p "$OUT"
python3 ai-sidecar/bench/long.py --out target/bench-captions/long >&2
rec=$(python3 - target/bench-captions/long/manifest.json "$RECORDING" <<'EOF'
import json, os, sys
m = json.load(open(sys.argv[1]))
c = [c for c in m["clips"] if c["id"] == sys.argv[2]]
if not c:
    sys.exit(f"bench-dub: no recording {sys.argv[2]!r} (news, panel, sport, science)")
print(os.path.join(os.path.dirname(sys.argv[1]), c[0]["file"]))
EOF
)
sox -n -r 16000 -c 1 -b 16 "$OUT/lead.wav" trim 0 2
sox "$OUT/lead.wav" "$rec" -r 16000 -c 1 -b 16 "$OUT/speech.wav"
ffmpeg -hide_banner -loglevel error -y -f lavfi -i testsrc2=size=640x360:rate=30 -i "$OUT/speech.wav" \
    -shortest -c:v libx264 -preset veryfast -g 30 -pix_fmt yuv420p -c:a aac -b:a 64k -ar 48000 "$OUT/speech.mp4"
log "speech: recording $RECORDING, $(printf %.1f "$(soxi -D "$OUT/speech.wav")") s, looped"

# Spanish speech for the English dub (Piper): written for this benchmark, spoken by SVOX Pico.
if [[ " $VOICES " == *" piper "* ]]; then
    if ! command -v pico2wave >/dev/null || ! piper_voices=$(bash scripts/fetch-piper.sh 2>/dev/null); then
        log "piper: left out (needs pico2wave for the Spanish speech and scripts/fetch-piper.sh's voice)"
        VOICES=${VOICES/piper/}
    else
        python3 - "$OUT" <<'EOF'
import os, subprocess, sys, tempfile
out = sys.argv[1]
SENTENCES = [
    "Buenas tardes y bienvenidos al informativo de la tarde.",
    "Hoy hablamos del tiempo, del tren nuevo y de un pueblo que produce su propia luz.",
    "El verano ha sido largo y seco en todo el norte del país.",
    "Los agricultores esperan la lluvia desde hace más de dos meses.",
    "En la capital, la nueva línea de tren abrirá sus puertas el lunes por la mañana.",
    "El viaje entre las dos estaciones durará solo doce minutos.",
    "Un pueblo pequeño de la montaña construyó su propia central de energía solar.",
    "Ahora los vecinos pagan la mitad por la electricidad.",
    "Mañana tendremos nubes por la mañana y sol por la tarde.",
    "Gracias por su atención y hasta mañana.",
]
parts = []
with tempfile.TemporaryDirectory() as t:
    gap = os.path.join(t, "gap.wav")
    subprocess.run(["sox", "-n", "-r", "16000", "-c", "1", "-b", "16", gap, "trim", "0", "1.2"], check=True)
    for i, text in enumerate(SENTENCES):
        raw = os.path.join(t, f"{i}.wav")
        subprocess.run(["pico2wave", "-l", "es-ES", "-w", raw, text], check=True)
        parts += [raw, gap]
    subprocess.run(["sox", *parts, "-r", "16000", "-c", "1", "-b", "16", os.path.join(out, "speech-es.wav")], check=True)
EOF
        ffmpeg -hide_banner -loglevel error -y -f lavfi -i testsrc2=size=640x360:rate=30 -i "$OUT/speech-es.wav" \
            -shortest -c:v libx264 -preset veryfast -g 30 -pix_fmt yuv420p -c:a aac -b:a 64k -ar 48000 "$OUT/speech-es.mp4"
        log "speech for piper: 10 Spanish sentences (Pico), $(printf %.1f "$(soxi -D "$OUT/speech-es.wav")") s, looped"
    fi
fi

pids=()
sidecar_pid=
cleanup() { [ "${#pids[@]}" -gt 0 ] && kill "${pids[@]}" $sidecar_pid 2>/dev/null; wait 2>/dev/null || true; }
trap cleanup EXIT

"$BIN/moqcast-relay" --bind "[::]:$QUIC_PORT" --http-bind "127.0.0.1:$HTTP_PORT" --tls-generate localhost \
    >"$OUT/relay.log" 2>&1 &
pids+=($!)
for _ in $(seq 1 50); do curl -sf -o /dev/null "http://127.0.0.1:$HTTP_PORT/healthz" && break; sleep 0.2; done
fp=$(curl -sf "http://127.0.0.1:$HTTP_PORT/certificate.sha256")
url="https://localhost:$QUIC_PORT/"
"$BIN/moqcast-publish" --url "$url" --tls-fingerprint "$fp" --broadcast bench --loop --input "$OUT/speech.mp4" \
    >"$OUT/publish.log" 2>&1 &
pids+=($!)
if [[ " $VOICES " == *" piper "* ]]; then
    "$BIN/moqcast-publish" --url "$url" --tls-fingerprint "$fp" --broadcast bench-es --loop \
        --input "$OUT/speech-es.mp4" >"$OUT/publish-es.log" 2>&1 &
    pids+=($!)
fi

delay_args=()
[ -n "${DELAY_MS:-}" ] && delay_args=(--dub-delay-ms "$DELAY_MS")
for voice in $VOICES; do
    dir=$OUT/$voice
    rm -rf "$dir"
    mkdir -p "$dir"
    if [ "$voice" = piper ]; then
        broadcast=bench-es lang=en
        source_args=(--model base --language es --piper-voices "$piper_voices")
    else
        broadcast=bench lang=es
        source_args=()
    fi
    echo "$lang" >"$dir/lang"
    log "$voice: sidecar ${source_args[*]} --translate $lang --dub $lang --synthesize-chain $voice; listening ${SECONDS_PER_VOICE} s"
    "$BIN/moqcast-sidecar" --url "$url" --tls-fingerprint "$fp" --broadcast "$broadcast" --threads "$THREADS" \
        --metrics-addr "127.0.0.1:$METRICS_PORT" "${source_args[@]}" --translate "$lang" --dub "$lang" \
        --synthesize-chain "$voice" "${delay_args[@]}" >"$dir/sidecar.log" 2>&1 &
    sidecar_pid=$!
    "$BIN/moqcast-dub-bench" --url "$url" --tls-fingerprint "$fp" --broadcast "$broadcast" --lang "$lang" \
        --seconds "$SECONDS_PER_VOICE" --out "$dir" >"$dir/dub-bench.txt" 2>"$dir/dub-bench.log" ||
        { log "$voice: moqcast-dub-bench failed"; tail -n 20 "$dir/dub-bench.log" "$dir/sidecar.log" >&2; exit 1; }
    curl -sf "http://127.0.0.1:$METRICS_PORT/metrics" >"$dir/sidecar-metrics.txt" || true
    kill "$sidecar_pid" 2>/dev/null || true
    wait "$sidecar_pid" 2>/dev/null || true
    sidecar_pid=
    cat "$dir/dub-bench.txt" >&2

    # The ceiling: the same cue texts spoken by the voice alone, 16 kHz.
    python3 - "$dir" "$voice" <<'EOF'
import json, os, subprocess, sys, tempfile
d, voice = sys.argv[1], sys.argv[2]
m = json.load(open(os.path.join(d, "manifest.json")))
os.makedirs(os.path.join(d, "direct"), exist_ok=True)
clips = []
for c in m["clips"]:
    f = os.path.join("direct", c["id"] + ".wav")
    with tempfile.TemporaryDirectory() as t:
        raw = os.path.join(t, "raw.wav")
        if voice == "pico":
            cmd = ["pico2wave", "-l", "es-ES", "-w", raw, c["text"]]
        elif voice == "espeak-ng":
            cmd = ["espeak-ng", "-v", "es", "-w", raw, c["text"]]
        else:
            sys.exit(0)
        subprocess.run(cmd, check=True, capture_output=True)
        subprocess.run(["sox", raw, "-r", "16000", "-c", "1", "-b", "16", os.path.join(d, f)], check=True)
    clips.append({"id": c["id"], "file": f, "text": c["text"]})
json.dump({"lang": "es", "clips": clips}, open(os.path.join(d, "direct.json"), "w"), indent=1)
EOF
    log "$voice: Whisper base ($lang, beam 5) on $(python3 -c 'import json,sys; print(len(json.load(open(sys.argv[1]))["clips"]))' "$dir/manifest.json") dubbed cues"
    "$BIN/moqcast-caption-bench" --model "$base" --manifest "$dir/manifest.json" --language "$lang" --beam 5 \
        --threads "$THREADS" --out "$dir/whisper-dub.jsonl"
    if [ -f "$dir/direct.json" ]; then
        "$BIN/moqcast-caption-bench" --model "$base" --manifest "$dir/direct.json" --language es --beam 5 \
            --threads "$THREADS" --out "$dir/whisper-direct.jsonl"
    fi
done

python3 - "$OUT" "$RECORDING" "$SECONDS_PER_VOICE" $VOICES <<'EOF' | tee "$OUT/dub.md"
import json, os, sys
sys.path.insert(0, "ai-sidecar/bench")
from score import normalise, normalise_plain, edit_distance
out, recording, seconds, voices = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:]

def wer(manifest, jsonl, lang):
    if not os.path.exists(jsonl):
        return None
    # English the way the caption benchmark scores it; other languages plainly.
    norm = normalise if lang == "en" else normalise_plain
    refs = {c["id"]: c["text"] for c in json.load(open(manifest))["clips"]}
    hyps = {}
    for line in open(jsonl):
        o = json.loads(line)
        hyps[o["id"]] = o["text"]
    edits = words = 0
    for cid, ref in refs.items():
        r = norm(ref)
        edits += edit_distance(r, norm(hyps.get(cid, "")))
        words += len(r)
    return 100.0 * edits / max(1, words), len(refs), words

print(f"Recording `{recording}` looped (piper: 10 Spanish sentences by Pico, dubbed into English); "
      f"{seconds} s of dub per voice; Whisper base in the dub's language, beam 5.\n")
print("| voice | dub | dub objects | missing | out of order | lag p50 | lag p95 | lag p99 | cues scored | words | WER dubbed | WER voice alone |")
print("|---|---|---|---|---|---|---|---|---|---|---|---|")
for v in voices:
    d = os.path.join(out, v)
    lang = open(os.path.join(d, "lang")).read().strip()
    s = json.loads(open(os.path.join(d, "dub-bench.txt")).read().strip().splitlines()[-1])
    dub = wer(os.path.join(d, "manifest.json"), os.path.join(d, "whisper-dub.jsonl"), lang)
    direct = wer(os.path.join(d, "direct.json"), os.path.join(d, "whisper-direct.jsonl"), lang) if os.path.exists(os.path.join(d, "direct.json")) else None
    lag = s["lag_ms"]
    print(f"| {v} | {'es' if lang == 'es' else 'es -> en'} | {s['objects']} | {s['missing']} | {s['reordered']} | {lag['p50']:.0f} ms | {lag['p95']:.0f} ms | {lag['p99']:.0f} ms "
          f"| {dub[1]} | {dub[2]} | {dub[0]:.1f}% | {'%.1f%%' % direct[0] if direct else 'n/a'} |")
EOF
