#!/usr/bin/env bash
# Translated captions: (1) the quality of each translation provider on the benchmark's English
# sentences against Spanish references written for the project (ai-sidecar/bench/translation/
# sentences.tsv; chrF and BLEU by sacrebleu), with each provider's per-call latency, and the
# reverse direction: the Spanish references into English (Apertium spa-eng on the text; Whisper
# base's translate task on the Spanish spoken by espeak-ng), scored against the English; (2) live,
# as a viewer gets them: a relay, `moqcast-publish` of the first SENTENCES sentences spoken by
# espeak-ng, `moqcast-sidecar --translate es`, and two `moqcast-subscribe --caption-latency`
# subscribers (captions-en and captions-es): the delay from the end of each utterance in the
# audio to its final cue, p50/p95, in each language, and the live Spanish captions' chrF.
# All release builds on this machine; writes target/bench-translate/report.md.
# See docs/BENCHMARKS.md ("Translated captions").
#
#   bash scripts/bench-translate.sh
#   PROVIDERS=apertium,openai-chat CONFIG=sidecar.toml SENTENCES=30 bash scripts/bench-translate.sh
#
# Environment (all optional): PROVIDERS (en -> es translation providers measured one by one,
# `apertium,marian,openai-chat`: one that cannot serve here is listed with the reason),
# REVERSE_PROVIDERS (es -> en, `apertium,whisper-translate`; empty: no reverse direction),
# REVERSE_MODEL (the multilingual Whisper of whisper-translate, `base`, fetched by
# scripts/fetch-model.sh), CONFIG (a sidecar TOML whose [providers.NAME] tables configure the
# providers; the live run uses it too),
# TRANSLATE_CHAIN (the live run's chain, default the first of PROVIDERS), SENTENCES (spoken in the
# live run, 20), GAP (silence between them, s, 1.5), BEAM (5), THREADS (2), OUT, SKIP_BUILD=1,
# MOQCAST_WHISPER_MODEL.
set -euo pipefail

cd "$(dirname "$0")/.."

PROVIDERS=${PROVIDERS:-apertium,marian,openai-chat}
REVERSE_PROVIDERS=${REVERSE_PROVIDERS-apertium,whisper-translate}
REVERSE_MODEL=${REVERSE_MODEL:-base}
CONFIG=${CONFIG:-}
TRANSLATE_CHAIN=${TRANSLATE_CHAIN:-${PROVIDERS%%,*}}
SENTENCES=${SENTENCES:-20}
GAP=${GAP:-1.5}
BEAM=${BEAM:-5}
THREADS=${THREADS:-2}
OUT=${OUT:-target/bench-translate}
BIN=target/release
DATA=ai-sidecar/bench/translation
VENV=${VENV:-$HOME/.cache/moqcast/venv-sacrebleu}
LIVE=$OUT/live

log() { echo "bench-translate: $*" >&2; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

model=${MOQCAST_WHISPER_MODEL:-$(bash scripts/fetch-model.sh)}
export MOQCAST_WHISPER_MODEL=$model

if [ -z "${SKIP_BUILD:-}" ]; then
    log "building release binaries"
    cargo build --release -p moqcast-relay -p moqcast-publisher -p moqcast-sidecar
fi
if [ ! -x "$VENV/bin/sacrebleu" ]; then
    log "installing sacrebleu into $VENV"
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install -q -r "$DATA/requirements.txt"
fi
rm -rf "$OUT/quality"
mkdir -p "$OUT/quality/en-es" "$LIVE"

# (1) Quality and per-call latency, provider by provider.
log "quality en -> es: $PROVIDERS"
"$BIN/moqcast-translate-bench" --sentences "$DATA/sentences.tsv" --providers "$PROVIDERS" \
    ${CONFIG:+--config "$CONFIG"} --context --out "$OUT/quality/en-es" >/dev/null
if [ -n "$REVERSE_PROVIDERS" ]; then
    # The Spanish references spoken (espeak-ng, voice es) for the engines that translate speech.
    audio=$OUT/quality/es-audio
    mkdir -p "$audio" "$OUT/quality/es-en"
    i=0
    while IFS= read -r line; do
        espeak-ng -v es -w "$audio/$i.wav" "$line"
        sox "$audio/$i.wav" -r 16000 -c 1 -e floating-point -b 32 -t raw "$audio/$i.f32"
        i=$((i + 1))
    done < <(grep -v '^#' "$DATA/sentences.tsv" | grep -v '^[[:space:]]*$' | cut -f2)
    reverse_model=$(bash scripts/fetch-model.sh "$REVERSE_MODEL")
    log "quality es -> en: $REVERSE_PROVIDERS"
    RAYON_NUM_THREADS=$THREADS "$BIN/moqcast-translate-bench" --sentences "$DATA/sentences.tsv" \
        --from es --to en --providers "$REVERSE_PROVIDERS" --model "$reverse_model" \
        --beam-size "$BEAM" --audio "$audio" ${CONFIG:+--config "$CONFIG"} --context \
        --out "$OUT/quality/es-en" >/dev/null
fi

# (2) Live: the first SENTENCES sentences, spoken, captioned and translated.
grep -v '^#' "$DATA/sentences.tsv" | head -n "$SENTENCES" >"$LIVE/sentences.tsv"
cut -f1 "$LIVE/sentences.tsv" >"$LIVE/reference-en.txt"
cut -f2 "$LIVE/sentences.tsv" >"$LIVE/reference-es.txt"
sox -n -r 16000 -c 1 -b 16 "$LIVE/lead.wav" trim 0 2
sox -n -r 16000 -c 1 -b 16 "$LIVE/gap.wav" trim 0 "$GAP"
parts=("$LIVE/lead.wav")
i=0
while IFS= read -r line; do
    espeak-ng -v en-us -w "$LIVE/raw-$i.wav" "$line"
    sox "$LIVE/raw-$i.wav" -r 16000 -c 1 -b 16 "$LIVE/s-$i.wav"
    parts+=("$LIVE/s-$i.wav" "$LIVE/gap.wav")
    i=$((i + 1))
done <"$LIVE/reference-en.txt"
sox "${parts[@]}" "$LIVE/speech.wav"
speech_s=$(soxi -D "$LIVE/speech.wav")
ffmpeg -hide_banner -loglevel error -y -f lavfi -i testsrc2=size=640x360:rate=30 -i "$LIVE/speech.wav" \
    -shortest -c:v libx264 -preset veryfast -g 30 -pix_fmt yuv420p -c:a aac -b:a 64k -ar 48000 "$LIVE/speech.mp4"
log "speech: $SENTENCES sentences, $(printf %.1f "$speech_s") s"

pids=()
cleanup() { [ "${#pids[@]}" -gt 0 ] && kill "${pids[@]}" 2>/dev/null; wait 2>/dev/null || true; }
trap cleanup EXIT
quic=$(free_port)
http=$(free_port)
metrics=$(free_port)
"$BIN/moqcast-relay" --bind "[::]:$quic" --http-bind "127.0.0.1:$http" --tls-generate localhost \
    >"$LIVE/relay.log" 2>&1 &
pids+=($!)
for _ in $(seq 1 50); do curl -sf -o /dev/null "http://127.0.0.1:$http/healthz" && break; sleep 0.2; done
fp=$(curl -sf "http://127.0.0.1:$http/certificate.sha256")
url="https://localhost:$quic/"

"$BIN/moqcast-sidecar" --url "$url" --tls-fingerprint "$fp" --broadcast bench --beam-size "$BEAM" \
    --threads "$THREADS" --metrics-addr "127.0.0.1:$metrics" --translate es \
    --translate-chain "$TRANSLATE_CHAIN" ${CONFIG:+--config "$CONFIG"} >"$LIVE/sidecar.log" 2>&1 &
pids+=($!)
for _ in $(seq 1 100); do curl -sf -o /dev/null "http://127.0.0.1:$metrics/healthz" && break; sleep 0.2; done

# The subscribers first (they wait for the broadcast), so the captions start with the speech.
subs=()
for lang in en es; do
    "$BIN/moqcast-subscribe" --url "$url" --tls-fingerprint "$fp" --broadcast bench --wait 60 \
        --caption-lang "$lang" --captions "$LIVE/captions-$lang.vtt" --caption-latency --json \
        >"$LIVE/subscribe-$lang.json" 2>"$LIVE/subscribe-$lang.log" &
    subs+=($!)
    pids+=($!)
done
sleep 1
"$BIN/moqcast-publish" --url "$url" --tls-fingerprint "$fp" --broadcast bench --input "$LIVE/speech.mp4" \
    >"$LIVE/publish.log" 2>&1 &
pids+=($!)
log "publishing; the subscribers end 10 s after the media"
for s in "${subs[@]}"; do
    wait "$s" || { log "a subscriber failed"; tail -n 20 "$LIVE"/subscribe-*.log >&2; exit 1; }
done
curl -sf "http://127.0.0.1:$metrics/metrics" >"$LIVE/sidecar-metrics.txt"
curl -sf "http://127.0.0.1:$metrics/status" >"$LIVE/sidecar-status.json"

# The live Spanish captions against the references of the sentences spoken (one document each:
# cue boundaries need not match sentence boundaries).
grep -v -e '^WEBVTT' -e ' --> ' -e '^u[0-9]*$' -e '^$' "$LIVE/captions-es.vtt" | tr '\n' ' ' >"$LIVE/live-es.txt"
echo >>"$LIVE/live-es.txt"
tr '\n' ' ' <"$LIVE/reference-es.txt" >"$LIVE/live-ref.txt"
echo >>"$LIVE/live-ref.txt"

python3 - "$OUT" "$VENV/bin/sacrebleu" "$SENTENCES" "$speech_s" "$BEAM" "$THREADS" "$TRANSLATE_CHAIN" <<'EOF' | tee "$OUT/report.md"
import json, os, subprocess, sys
out, sacrebleu, n, speech_s, beam, threads, chain = sys.argv[1:]
q = os.path.join(out, "quality")
def score(ref, hyp):
    r = subprocess.run([sacrebleu, ref, "-i", hyp, "-m", "bleu", "chrf", "-b", "-w", "1"], check=True, capture_output=True, text=True)
    bleu, chrf = json.loads(r.stdout)
    return bleu, chrf
load = open("/proc/loadavg").read().split()[:3]
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
lines = sum(1 for _ in open(os.path.join(q, "en-es", "ref.txt")))
print(f"Translation quality, {lines} sentences (references written for the project); {os.cpu_count()} CPUs ({cpu}); load after {' '.join(load)}.\n")
print("| direction | provider | chrF | BLEU | first call | per caption p50 | p95 |")
print("|---|---|---:|---:|---:|---:|---:|")
for direction in ("en-es", "es-en"):
    d = os.path.join(q, direction)
    if not os.path.exists(os.path.join(d, "latency.json")):
        continue
    arrow = direction.replace("-", " -> ")
    for row in json.load(open(os.path.join(d, "latency.json"))):
        p = row["provider"]
        if "unavailable" in row:
            print(f"| {arrow} | {p} | - | - | unavailable: {row['unavailable']} | | |")
            continue
        bleu, chrf = score(os.path.join(d, "ref.txt"), os.path.join(d, f"{p}.hyp"))
        print(f"| {arrow} | {p} | {chrf:.1f} | {bleu:.1f} | {row['first_call_ms']:.0f} ms | {row['p50_ms']:.1f} ms | {row['p95_ms']:.1f} ms |")
live = os.path.join(out, "live")
def sub(lang):
    return json.loads(open(os.path.join(live, f"subscribe-{lang}.json")).read().strip().splitlines()[-1])["captions"]
en, es = sub("en"), sub("es")
status = json.load(open(os.path.join(live, "sidecar-status.json")))
tr = status["broadcasts"]["bench"]["translations"].get("es", {})
bleu, chrf = score(os.path.join(live, "live-ref.txt"), os.path.join(live, "live-es.txt"))
f = lambda v: "-" if v is None else f"{v/1000:.2f} s"
print(f"\nLive, {n} sentences, {float(speech_s):.1f} s of espeak-ng speech; sidecar {threads} threads, final beam {beam}, translation chain {chain}.\n")
print("| track | final cues | latency p50 | p95 | measured | translated | skipped | failed | live chrF vs references |")
print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
print(f"| captions-en | {en['final_cues']} | {f(en.get('caption_latency_p50_ms'))} | {f(en.get('caption_latency_p95_ms'))} | {en.get('caption_latency_measured')} | | | | |")
print(f"| captions-es | {es['final_cues']} | {f(es.get('caption_latency_p50_ms'))} | {f(es.get('caption_latency_p95_ms'))} | {es.get('caption_latency_measured')} | {tr.get('cues', 0)} | {tr.get('skipped', 0)} | {tr.get('failed', 0)} | {chrf:.1f} |")
EOF
