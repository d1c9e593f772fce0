#!/usr/bin/env bash
# scripts/gpu-strata.sh: configures (once, or again with REBUILD=1) and builds the CUDA strata binary for the
# GPU benchmark drivers, then prints its path. Build dir: STRATA_GPU_BUILD, else build-cuda.
#   strata=$(scripts/gpu-strata.sh)
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
build="${STRATA_GPU_BUILD:-$root/build-cuda}"
if [ ! -x "$build/strata" ] || [ -n "${REBUILD:-}" ]; then
  cmake -S "$root" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DSTRATA_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=90 \
    -DBUILD_TESTING=OFF >"$build.configure.log" 2>&1 || { cat "$build.configure.log" >&2; exit 1; }
fi
cmake --build "$build" -j "$(nproc)" --target strata >/dev/null
echo "$build/strata"
