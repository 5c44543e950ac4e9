#!/usr/bin/env bash
# Every check of the workspace: the one command, the same for developers and CI (.ci/run).
#
#   bash scripts/check.sh
#   FUZZ_SECONDS=60 bash scripts/check.sh    # fuzz each target longer (default 10 s)
#
# Steps, in order, stopping at the first failure:
#   setup   scripts/setup.sh (apt packages, Rust, the viewer's build, chromium, cargo-nextest,
#           nightly, the draft-18 interop peers)
#   fmt     cargo fmt --all -- --check
#   clippy  cargo clippy --workspace --all-targets -- -D warnings
#   build   cargo build --workspace --bins (the end-to-end tests spawn these binaries)
#   web     npm --prefix web test: the viewer's type check and unit tests (when web/ has a viewer;
#           setup has built it into web/dist for the browser tests)
#   test    cargo nextest run --workspace --profile ci (.config/nextest.toml)
#   fuzz    scripts/fuzz.sh, FUZZ_SECONDS per target
#
# Lean by default, so that a fresh machine's small disk is enough: no incremental compilation
# (CARGO_INCREMENTAL=0), and the workspace's debug build (several GB) is removed once the tests
# have passed, before the fuzz step builds its own. MOQCAST_CHECK_LEAN=0 keeps both (faster
# re-runs for a developer). Each step prints the free disk space, so a full disk shows in the log.
set -euo pipefail

cd "$(dirname "$0")/.."

if [ -d "$HOME/.cargo/bin" ]; then
    case ":$PATH:" in *":$HOME/.cargo/bin:"*) ;; *) export PATH="$HOME/.cargo/bin:$PATH" ;; esac
fi

started=$SECONDS
lean=${MOQCAST_CHECK_LEAN:-1}
if [ "$lean" = 1 ]; then
    export CARGO_INCREMENTAL=0
fi

free_disk() {
    df -Pk . | awk 'NR == 2 { printf "%.1f GiB free", $4 / 1048576 }'
}

# step NAME COMMAND...: runs COMMAND with a header and its elapsed time; exits on failure.
step() {
    local name=$1
    shift
    local t0=$SECONDS
    echo
    echo "==> check: $name: $* ($(free_disk))"
    local rc=0
    "$@" || rc=$?
    if [ "$rc" -ne 0 ]; then
        echo "==> check: $name FAILED (exit $rc) after $((SECONDS - t0))s ($(free_disk))" >&2
        exit "$rc"
    fi
    echo "==> check: $name ok in $((SECONDS - t0))s"
}

# The test suite needs every peer: never let MOQCAST_SKIP_PEERS (a demo-only switch) leak in.
step setup env -u MOQCAST_SKIP_PEERS bash scripts/setup.sh
step fmt cargo fmt --all -- --check
step clippy cargo clippy --workspace --all-targets -- -D warnings
step build cargo build --workspace --bins
if [ -f web/package.json ]; then
    step web npm --prefix web test
fi
step test cargo nextest run --workspace --profile ci
if [ "$lean" = 1 ] && [ -d target/debug ]; then
    echo "==> check: lean: removing target/debug ($(du -sh target/debug | cut -f1)) before the fuzz build"
    rm -rf target/debug
fi
step fuzz env FUZZ_SECONDS="${FUZZ_SECONDS:-10}" bash scripts/fuzz.sh

echo
echo "==> check: all checks passed in $((SECONDS - started))s"
