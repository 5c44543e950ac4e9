#!/usr/bin/env bash
# Caption accuracy and speed: moqcast-sidecar's Whisper (candle) against faster-whisper
# (CTranslate2) on the same model, the same espeak-ng corpus and the same thread count. Prints a
# markdown table and writes it to target/bench-captions/results.md. See docs/BENCHMARKS.md
# ("Captions: accuracy and speed").
#
#   bash scripts/bench-captions.sh
#   LIMIT=10 SYSTEMS=sidecar bash scripts/bench-captions.sh     # quick look
#   LONG=1 bash scripts/bench-captions.sh                        # long recordings
#
# LONG=1 runs the long recordings instead (ai-sidecar/bench/long.py: 4 programmes, 418 s, several
# voices, pauses): the sidecar through its live pipeline (segmentation, audio context; config
# default:5:live) against faster-whisper on each whole file as a new user runs it (its defaults,
# Silero VAD, beam 5: float32:5:whole, int8:5:whole), writing OUT/long-results.md. A pass takes
# 15-25 minutes on 2 cores (faster-whisper float32 over whole files is the slow part).
#
# Environment (all optional):
#   SYSTEMS        which to run, in order: "sidecar faster-whisper"
#   THREADS        compute threads for both systems (2)
#   SIDECAR_CONFIGS  moqcast-caption-bench PRECISION:BEAM[:WINDOW] list
#                  ("default:1,default:5,default:1:full,default:5:full"). PRECISION: default (the
#                  library's, float32 encoder + int8 decoder), float32, int8, q8_0, q4_0 or
#                  ENCODER+DECODER; WINDOW: the library's default (fitted to the audio) or full,
#                  fit:PAD_MS[:nofallback]; or live[:CONTEXT_MS] (the live pipeline over each clip,
#                  moqcast-caption-bench --live, with the sidecar's or the given audio context)
#   FW_CONFIGS     faster-whisper COMPUTE:BEAM[:openai] list ("float32:1,int8:1,float32:5,int8:5");
#                  :openai feeds CTranslate2 features padded as OpenAI's whisper and the sidecar
#                  do (see ai-sidecar/bench/faster_whisper_ref.py); :whole a whole file with
#                  faster-whisper's own defaults and VAD, :whole-novad the same without VAD
#   LIMIT          only the first N clips of the corpus (all)
#   REPEAT         passes over the corpus, each running every configuration of both systems
#                  (interleaved, alternate passes reversed); each clip's fastest pass is reported,
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
LONG=${LONG:-}
if [ -n "$LONG" ]; then
    SIDECAR_CONFIGS=${SIDECAR_CONFIGS:-"default:5:live"}
    FW_CONFIGS=${FW_CONFIGS:-"float32:5:whole,int8:5:whole"}
else
    SIDECAR_CONFIGS=${SIDECAR_CONFIGS:-"default:1,default:5,default:1:full,default:5:full"}
    FW_CONFIGS=${FW_CONFIGS:-"float32:1,int8:1,float32:5,int8:5"}
fi
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
    cargo build --release -p moqcast-sidecar --bin moqcast-caption-bench
fi
bench=target/release/moqcast-caption-bench

mkdir -p "$OUT"
if [ -n "$LONG" ]; then
    python3 ai-sidecar/bench/long.py --out "$OUT/long"
    manifest=$OUT/long/manifest.json
    runs=$OUT/long-runs
    md=$OUT/long-results.md
else
    python3 ai-sidecar/bench/corpus.py --out "$OUT/corpus"
    manifest=$OUT/corpus/manifest.json
    runs=$OUT/runs
    md=$OUT/results.md
fi

load() { cut -d' ' -f1-3 /proc/loadavg; }

# One job per system and configuration, the two systems interleaved (sidecar's first config,
# faster-whisper's first, ...) so that other work on the machine falls on both alike.
sidecar_jobs=() fw_jobs=() jobs=()
for system in $SYSTEMS; do
    case $system in
    sidecar) for c in ${SIDECAR_CONFIGS//,/ }; do sidecar_jobs+=("sidecar:$c"); done ;;
    faster-whisper) for c in ${FW_CONFIGS//,/ }; do fw_jobs+=("faster-whisper:$c"); done ;;
    *)
        log "unknown system $system (sidecar, faster-whisper)"
        exit 1
        ;;
    esac
done
for ((i = 0; i < ${#sidecar_jobs[@]} || i < ${#fw_jobs[@]}; i++)); do
    [ "$i" -lt "${#sidecar_jobs[@]}" ] && jobs+=("${sidecar_jobs[$i]}")
    [ "$i" -lt "${#fw_jobs[@]}" ] && jobs+=("${fw_jobs[$i]}")
done

job_file() { # PASS SYSTEM:CONFIG
    local name=${2//:/-}
    echo "$runs/pass$1-${name//+/-}.jsonl"
}

run_job() { # PASS SYSTEM:COMPUTE:BEAM[:REST]
    local pass=$1 system compute rest beam extra f
    IFS=: read -r system compute rest <<<"$2"
    beam=${rest%%:*}
    extra=${rest#"$beam"}
    extra=${extra#:}
    f=$(job_file "$pass" "$2")
    log "pass $pass/$REPEAT: $system $compute beam $beam${extra:+ $extra} (load $(load))"
    case $system in
    sidecar)
        local args=(--beam "$beam")
        [ "$compute" = default ] || args+=(--precision "$compute")
        case $extra in
        "") ;;
        live) args+=(--live) ;;
        live:*) args+=(--live --audio-context-ms "${extra#live:}") ;;
        *) args+=(--window "$extra") ;;
        esac
        "$bench" --manifest "$manifest" --model "$model" --threads "$THREADS" "${args[@]}" \
            --limit "${LIMIT:-0}" --out "$f"
        ;;
    faster-whisper)
        python3 ai-sidecar/bench/faster_whisper_ref.py --manifest "$manifest" --model "$model" \
            --threads "$THREADS" --configs "$compute:$rest" --limit "${LIMIT:-0}" --out "$f"
        ;;
    esac
}

rm -rf "$runs"
mkdir -p "$runs"
load_before=$(load)
started=$(date -u +%Y-%m-%dT%H:%MZ)
# Every pass runs every job; later passes go in reverse order. score.py keeps each clip's
# fastest pass per configuration (and checks that its transcript did not change).
for ((pass = 1; pass <= REPEAT; pass++)); do
    if ((pass % 2)); then order=("${jobs[@]}"); else order=(); for ((k = ${#jobs[@]} - 1; k >= 0; k--)); do order+=("${jobs[$k]}"); done; fi
    for job in "${order[@]}"; do
        run_job "$pass" "$job"
    done
done
load_after=$(load)
results=()
for job in "${jobs[@]}"; do
    for ((pass = 1; pass <= REPEAT; pass++)); do
        results+=("$(job_file "$pass" "$job")")
    done
done

corpus=$(python3 -c '
import json, sys
m = json.load(open(sys.argv[1]))
print("%s (%d clips, %.1f s of speech)" % (m["corpus"], len(m["clips"]), sum(c["seconds"] for c in m["clips"])))
' "$manifest")
{
    echo "Caption benchmark, $started: $(nproc) CPUs ($(lscpu | sed -n 's/^Model name: *//p' | head -1)),"
    echo "$THREADS threads per system, fastest of $REPEAT pass(es) per clip (systems interleaved);"
    echo "load average (1, 5, 15 min) $load_before at the start, $load_after at the end."
    echo "Corpus: $corpus${LIMIT:+, first $LIMIT clips}; model: $model."
    echo
    python3 ai-sidecar/bench/score.py --manifest "$manifest" --pair-diffs "${results[@]}"
} >"$md.tmp"
mv "$md.tmp" "$md"
cat "$md"
log "wrote $md"
