#!/usr/bin/env bash
# Runs one fuzz target on the stable toolchain (libFuzzer with SanitizerCoverage, no sanitizer;
# cargo-fuzz on nightly adds AddressSanitizer), starting from and adding to its corpus.
#   fuzz/run.sh TARGET [SECONDS]       targets: token_decode forwarded_for host verify_response head_scan
set -euo pipefail
cd "$(dirname "$0")"
target=${1:?target}
seconds=${2:-60}
export RUSTFLAGS="--cfg fuzzing -Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 \
-Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table \
-Cllvm-args=-sanitizer-coverage-trace-compares -Cdebug-assertions -Coverflow-checks"
triple=$(rustc -vV | sed -n "s/^host: //p")
# With --target, RUSTFLAGS reach only the fuzzed code, not build scripts and proc macros.
cargo build --release --target "$triple" --bin "$target"
corpus=corpus/$target
mkdir -p "$corpus"
# token_decode's corpus predates this script and lives in seeds/.
[ "$target" = token_decode ] && corpus=seeds
mkdir -p artifacts
exec target/"$triple"/release/"$target" "$corpus" -artifact_prefix=artifacts/ -max_total_time="$seconds" -print_final_stats=1
