#!/usr/bin/env bash
# Caption accuracy and speed: moqcast-sidecar's Whisper (candle) against faster-whisper
# (CTranslate2) on the same model, the same espeak-ng corpus and the same thread count. Prints a
# markdown table and writes it to target/bench-captions/results.md. See docs/BENCHMARKS.md
# ("Captions: accuracy and speed").
#
#   bash scripts/bench-captions.sh
#   LIMIT=10 SYSTEMS=sidecar bash scripts/bench-captions.sh     # quick look
#
# Environment (all optional):
#   SYSTEMS        which to run, in order: "sidecar faster-whisper"
#   THREADS        compute threads for both systems (2)
#   SIDECAR_CONFIGS  moqcast-caption-bench PRECISION:BEAM list ("float32:1,float32:5,q8_0:1";
#                  precisions float32, q8_0, q4_0)
#   FW_CONFIGS     faster-whisper COMPUTE:BEAM list ("float32:1,int8:1,float32:5,int8:5")
#   LIMIT          only the first N clips of the corpus (all)
#   REPEAT         passes over the corpus per configuration; each clip's fastest pass is reported,
#                  which filters out other work's bursts on a shared machine (1)
#   MOQCAST_WHISPER_MODEL  model directory (default: what scripts/fetch-model.sh installs)
#   MOQCAST_BENCH_VENV     faster-whisper venv (~/.cache/moqcast/venv-bench; made if missing)
#   OUT            output folder (target/bench-captions); SKIP_BUILD=1 uses the existing binary
#
# Idempotent: the corpus (OUT/corpus) and the venv are made once and reused; the model is
# fetched once; every run measures afresh. Needs espeak-ng, sox, python3 (with venv and pip).
set -euo pipefail

cd "$(dirname "$0")/.."

SYSTEMS=${SYSTEMS:-"sidecar faster-whisper"}
THREADS=${THREADS:-2}
SIDECAR_CONFIGS=${SIDECAR_CONFIGS:-"float32:1,float32:5,q8_0:1"}
FW_CONFIGS=${FW_CONFIGS:-"float32:1,int8:1,float32:5,int8:5"}
LIMIT=${LIMIT:-}
REPEAT=${REPEAT:-1}
OUT=${OUT:-target/bench-captions}

log() { echo "bench-captions: $*" >&2; }

for tool in espeak-ng sox python3; do
    command -v "$tool" >/dev/null || { log "needs $tool (apt-get install espeak-ng sox python3-venv)"; exit 1; }
done

model=${MOQCAST_WHISPER_MODEL:-}
if [ -z "$model" ]; then
    model=$(bash scripts/fetch-model.sh)
fi
[ -f "$model/model.bin" ] || [ -n "$(ls "$model"/*.safetensors 2>/dev/null)" ] ||
    { log "no model in $model"; exit 1; }
export MOQCAST_WHISPER_MODEL=$model

if [ -z "${SKIP_BUILD:-}" ]; then
    log "building moqcast-caption-bench (release)"
    cargo build --release -p moqcast-bench --bin moqcast-caption-bench
fi
bench=target/release/moqcast-caption-bench

mkdir -p "$OUT"
python3 bench/captions/corpus.py --out "$OUT/corpus"
manifest=$OUT/corpus/manifest.json

load() { cut -d' ' -f1-3 /proc/loadavg; }
loads=()
load_before=$(load)
started=$(date -u +%Y-%m-%dT%H:%MZ)
results=()
diffs=()
for system in $SYSTEMS; do
    case $system in
    sidecar)
        for config in ${SIDECAR_CONFIGS//,/ }; do
            precision=${config%%:*} beam=${config#*:}
            f=$OUT/sidecar-$precision-beam$beam.jsonl
            log "moqcast-sidecar $precision beam $beam -> $f"
            "$bench" --manifest "$manifest" --model "$model" --threads "$THREADS" \
                --precision "$precision" --beam "$beam" --repeat "$REPEAT" --limit "${LIMIT:-0}" \
                --out "$f"
            results+=("$f")
            loads+=("after sidecar $precision beam $beam: $(load)")
        done
        ;;
    faster-whisper)
        f=$OUT/faster-whisper.jsonl
        log "faster-whisper $FW_CONFIGS -> $f"
        python3 bench/captions/faster_whisper_ref.py --manifest "$manifest" --model "$model" \
            --threads "$THREADS" --configs "$FW_CONFIGS" --repeat "$REPEAT" --limit "${LIMIT:-0}" \
            --out "$f"
        results+=("$f")
        loads+=("after faster-whisper: $(load)")
        ;;
    *)
        log "unknown system $system (sidecar, faster-whisper)"
        exit 1
        ;;
    esac
done

# Clip-by-clip differences between the two systems at matching beam sizes.
for config in ${SIDECAR_CONFIGS//,/ }; do
    precision=${config%%:*} beam=${config#*:}
    if [ "$precision" = float32 ] && [[ ",$FW_CONFIGS," == *",float32:$beam,"* ]]; then
        diffs+=(--diff "moqcast-sidecar/float32 beam $beam" "faster-whisper/float32 beam $beam")
    fi
done

corpus=$(python3 -c '
import json, sys
m = json.load(open(sys.argv[1]))
print("%s (%d clips, %.1f s of speech)" % (m["corpus"], len(m["clips"]), sum(c["seconds"] for c in m["clips"])))
' "$manifest")
md=$OUT/results.md
{
    echo "Caption benchmark, $started: $(nproc) CPUs ($(lscpu | sed -n 's/^Model name: *//p' | head -1)),"
    echo "$THREADS threads per system, fastest of $REPEAT pass(es) per clip; load average (1, 5, 15 min):"
    echo "$load_before at the start; $(IFS=';'; echo "${loads[*]}" | sed 's/;/; /g')."
    echo "Corpus: $corpus${LIMIT:+, first $LIMIT clips}; model: $model."
    echo
    python3 bench/captions/score.py --manifest "$manifest" "${diffs[@]}" "${results[@]}"
} >"$md.tmp"
mv "$md.tmp" "$md"
cat "$md"
log "wrote $md"
