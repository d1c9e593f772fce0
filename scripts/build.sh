#!/usr/bin/env bash
# scripts/build.sh [BUILD_DIR] [cmake args...]: configures and builds strata (Release, Ninja,
# ccache when present). Used by demo.sh, test.sh and the benchmark drivers.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
build="${1:-$root/build}"
shift || true
jobs="$(nproc)"
cmake -S "$root" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release "$@" >"$build.configure.log" 2>&1 || {
  cat "$build.configure.log" >&2
  exit 1
}
cmake --build "$build" -j "$jobs"
