# tests/gpu/session_lib.sh: the clock and summary of a one-call GPU session script (sourced, not run). Sourcing
# starts the clock; the script sets `budget` (seconds) before calling left(). note KEY VALUE prints a timed line
# and keeps it for the table the script prints last (${summary[@]}), KEY padded to NOTE_WIDTH (default 28).
session_t0=$(date +%s)
elapsed() { echo $(( $(date +%s) - session_t0 )); }
left() { echo $(( budget - $(elapsed) )); }
summary=()
note() { summary+=("$(printf "%-${NOTE_WIDTH:-28}s %s" "$1" "$2")"); echo "[$(elapsed) s] $1 $2"; }
