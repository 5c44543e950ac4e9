#!/usr/bin/env bash
# Run every cargo-fuzz target in fuzz/ for a while; exit non-zero if any of them crashes.
#
#   scripts/fuzz.sh                      # every target, FUZZ_SECONDS (default 10) seconds each
#   FUZZ_SECONDS=600 scripts/fuzz.sh catalog
#   FUZZ_RUNS=10000000 scripts/fuzz.sh   # every target for a number of executions instead (the
#                                        # recorded runs in docs/security.md)
#   FUZZ_SANITIZER=none scripts/fuzz.sh  # without AddressSanitizer (cargo fuzz -s none): 1.5-2x
#                                        # the executions a second; panics, overflow checks and
#                                        # debug assertions still count as crashes
#
# Uses the nightly toolchain if installed, else stable with RUSTC_BOOTSTRAP=1; installs cargo-fuzz when
# `cargo fuzz` is missing. New interesting inputs go to fuzz/corpus/TARGET (git-ignored); the
# checked-in seeds in fuzz/seeds/TARGET are read as a second corpus. A crash leaves its input in
# fuzz/artifacts/TARGET; reproduce it with `cargo +nightly fuzz run --fuzz-dir fuzz TARGET FILE`.
set -euo pipefail

cd "$(dirname "$0")/.."
seconds="${FUZZ_SECONDS:-10}"
runs="${FUZZ_RUNS:-}"
if [ -n "$runs" ]; then
    budget=(-runs="$runs")
    what="$runs executions"
else
    budget=(-max_total_time="$seconds")
    what="${seconds}s"
fi
# cargo-fuzz needs nightly features (sanitizers). Use the nightly toolchain when there is one;
# otherwise the stable one with RUSTC_BOOTSTRAP=1, which unlocks the same flags (machines where
# no second toolchain can be fetched).
if [ -n "${FUZZ_TOOLCHAIN:-}" ]; then
    cargo_fuzz=(cargo "+$FUZZ_TOOLCHAIN")
elif cargo +nightly --version >/dev/null 2>&1; then
    cargo_fuzz=(cargo +nightly)
else
    echo "fuzz.sh: no nightly toolchain: using stable with RUSTC_BOOTSTRAP=1" >&2
    export RUSTC_BOOTSTRAP=1
    cargo_fuzz=(cargo)
fi

if ! "${cargo_fuzz[@]}" fuzz --version >/dev/null 2>&1; then
    echo "fuzz.sh: installing cargo-fuzz" >&2
    cargo install cargo-fuzz --locked
fi

if [ "$#" -gt 0 ]; then
    targets=("$@")
else
    mapfile -t targets < <("${cargo_fuzz[@]}" fuzz list --fuzz-dir fuzz)
fi

failed=()
for target in "${targets[@]}"; do
    echo "fuzz.sh: running $target for $what" >&2
    mkdir -p "fuzz/corpus/$target"
    seeds=()
    if [ -d "fuzz/seeds/$target" ]; then
        seeds=("fuzz/seeds/$target")
    fi
    if ! "${cargo_fuzz[@]}" fuzz run --fuzz-dir fuzz ${FUZZ_SANITIZER:+-s "$FUZZ_SANITIZER"} "$target" \
        "fuzz/corpus/$target" "${seeds[@]}" \
        -- "${budget[@]}" -timeout=10; then
        failed+=("$target")
    fi
done

if [ "${#failed[@]}" -gt 0 ]; then
    echo "fuzz.sh: FAILED: ${failed[*]} (inputs in fuzz/artifacts/)" >&2
    exit 1
fi
echo "fuzz.sh: all ${#targets[@]} target(s) ran $what without a crash" >&2
