#!/usr/bin/env bash
# The fuzz step of CI (.ci/run): every cargo-fuzz target for HA_FUZZ_SECONDS seconds each
# (default 30), starting from the checked-in corpus. It needs a nightly toolchain and cargo-fuzz;
# without them it says so and succeeds (CI never installs nightly; the corpus is still replayed
# on stable by tests/fuzz_corpus.rs). HA_FUZZ_SECONDS=0 skips it. A crash fails the step and
# prints how to reproduce it.
set -euo pipefail
cd "$(dirname "$0")"

seconds="${HA_FUZZ_SECONDS:-30}"
if [ "$seconds" = 0 ]; then
    echo "fuzz: skipped (HA_FUZZ_SECONDS=0)"
    exit 0
fi
if ! command -v cargo-fuzz >/dev/null 2>&1; then
    echo "fuzz: skipped (cargo-fuzz is not installed: cargo install cargo-fuzz)"
    exit 0
fi
if ! rustup run nightly rustc --version >/dev/null 2>&1; then
    echo "fuzz: skipped (no nightly toolchain)"
    exit 0
fi

# The code under test forbids unsafe: no sanitizer, so the runs go about 5x faster. Debug
# assertions and overflow checks are on in this crate's release profile.
cargo +nightly fuzz build -a -s none
mkdir -p target/ci
failed=0
for target in $(cargo +nightly fuzz list); do
    work="target/ci/corpus-$target"
    log="target/ci/$target.log"
    mkdir -p "$work"
    if cargo +nightly fuzz run -a -s none "$target" "$work" "corpus/$target" -- \
        -max_total_time="$seconds" -print_final_stats=1 >"$log" 2>&1; then
        runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")
        speed=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log")
        echo "fuzz: $target ok, ${runs:-?} runs in ${seconds}s (${speed:-?}/s)"
    else
        echo "fuzz: $target FAILED; the end of its log:"
        tail -n 60 "$log"
        failed=1
    fi
done
exit "$failed"
