#!/usr/bin/env bash
# scripts/test.sh: one command: install dependencies, build, run every test (unit, multi-rank under
# mpirun, end-to-end), then the parser tests under ASan/UBSan and a short libFuzzer run of each
# fuzz target. CI (.ci/run) calls this.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
"$root/scripts/setup.sh"

export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
export CCACHE_DIR="${CCACHE_DIR:-$root/.cache/ccache}"
jobs="$(nproc)"

echo "== build (warnings are errors)"
# CUDA for sm_90 machine code and compute_80 PTX: both architectures go through the front end (so sm_80-only
# breakage still fails here), while ptxas, about half of each architecture's compile, runs once.
"$root/scripts/build.sh" "$root/build" -DSTRATA_WERROR=ON -DSTRATA_IMAGES=ON -DCMAKE_CUDA_ARCHITECTURES="80-virtual;90-real"

echo "== tests"
ctest --test-dir "$root/build" -j "$jobs" --output-on-failure --timeout 900

echo "== parser tests under ASan/UBSan, and fuzzing (clang)"
# Only the parser tests and the fuzz targets build here (the rest of the tree already ran above).
parser_tests=$(cd "$root/tests" && ls runtime/formats/*_test.cpp runtime/tokenizer/*_test.cpp parallel/plan_*_test.cpp \
  runtime/vision/image_test.cpp runtime/vision/preprocess_test.cpp \
  2>/dev/null | xargs -n1 basename | sed 's/\.cpp$//')
fuzzers=$(ls "$root"/fuzz/*_fuzz.cpp 2>/dev/null | xargs -n1 basename | sed 's/\.cpp$//')
cmake -S "$root" -B "$root/build-asan" -G Ninja -DCMAKE_C_COMPILER=clang -DCMAKE_CXX_COMPILER=clang++ \
  -DCMAKE_BUILD_TYPE=RelWithDebInfo -DSTRATA_CUDA=OFF -DSTRATA_IMAGES=ON -DSTRATA_SANITIZE=ON -DSTRATA_FUZZ=ON >"$root/build-asan.configure.log" 2>&1 \
  || { cat "$root/build-asan.configure.log"; exit 1; }
# shellcheck disable=SC2086
cmake --build "$root/build-asan" -j "$jobs" --target $parser_tests $fuzzers
ctest --test-dir "$root/build-asan" -j "$jobs" --output-on-failure --timeout 900 \
  -R "/($(echo $parser_tests | sed 's/ /|/g'))(_np[0-9]+)?\$"  # whole names: image_test, not serve_image_test
fuzz_seconds="${STRATA_FUZZ_SECONDS:-20}"
for fuzzer in "$root"/build-asan/fuzz/*_fuzz; do
  [ -x "$fuzzer" ] || continue
  name="$(basename "$fuzzer")"
  corpus="$root/build-asan/fuzz-corpus/$name"
  mkdir -p "$corpus"
  seeds="$root/fuzz/seeds/${name%_fuzz}"
  echo "-- $name for ${fuzz_seconds}s"
  "$fuzzer" -max_total_time="$fuzz_seconds" -max_len=65536 -rss_limit_mb=2048 "$corpus" \
    $( [ -d "$seeds" ] && echo "$seeds" ) 2>&1 | tail -n 2
done
echo "== all tests passed"
