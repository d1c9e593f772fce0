#!/usr/bin/env bash
# scripts/bench-scaling.sh: runs a scaling sweep (`strata bench scaling`) and keeps its report, plots,
# per-point logs and the machine's measured memory bandwidth in bench/results/scaling-<sweep>-<host>-<date>/.
# Usage: scripts/bench-scaling.sh [SWEEP.yaml (default bench/scaling/cpu-tiny.yaml)] [extra bench scaling flags]
#   STRATA=path/to/strata  use that binary instead of building build/
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
sweep="${1:-bench/scaling/cpu-tiny.yaml}"
shift || true
if [ -z "${STRATA:-}" ]; then
  "$root/scripts/setup.sh"
  export CCACHE_DIR="${CCACHE_DIR:-$root/.cache/ccache}"
  "$root/scripts/build.sh" "$root/build" >/dev/null
  STRATA="$root/build/strata"
fi
# mpirun as root in containers, and ranks sharing cores.
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_rmaps_base_oversubscribe=1
name="$(basename "$sweep" .yaml)"
out="bench/results/scaling-$name-$(hostname)-$(date +%Y%m%d-%H%M%S)"
mkdir -p "$out"
"$STRATA" bench memory --mib 512 >"$out/memory.json"   # refill bench/hardware/cpu-local.yaml from this
echo "$STRATA bench scaling --sweep $sweep --out $out $*" >"$out/command.txt"
status=0
"$STRATA" bench scaling --sweep "$sweep" --out "$out" "$@" | tee "$out/summary.txt" || status=$?
rm -rf "$out/model"   # a preset model is remade on demand; keep results small
echo "results: $out"
exit $status
