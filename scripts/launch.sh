#!/usr/bin/env bash
# Starts NPROC data-parallel processes of a command on this machine, the way torchrun does: each gets RANK,
# LOCAL_RANK (= its GPU), WORLD_SIZE, MASTER_ADDR and MASTER_PORT. Output lines are prefixed with the rank.
# When one process fails, the others are stopped and the exit status is that first failure's.
# Ctrl-C is passed to every process (each checkpoints and stops at the same step).
#
# Usage: scripts/launch.sh NPROC -- COMMAND [ARGS...]
#   e.g. scripts/launch.sh 2 -- build/elman-train --model e61 --params 100m --time 2m
# Environment: MASTER_PORT (default: a free port), MASTER_ADDR (default 127.0.0.1).
set -uo pipefail
usage() { echo "usage: scripts/launch.sh NPROC -- COMMAND [ARGS...]" >&2; exit 2; }
[ $# -ge 3 ] || usage
nproc="$1"; shift
[[ "$nproc" =~ ^[1-9][0-9]*$ ]] || usage
[ "$1" = "--" ] || usage
shift

if [ -z "${MASTER_PORT:-}" ]; then
  MASTER_PORT="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
fi
export MASTER_ADDR="${MASTER_ADDR:-127.0.0.1}" MASTER_PORT WORLD_SIZE="$nproc"

pids=()
for ((r = 0; r < nproc; r++)); do
  # Each rank in its own process group, so that stopping it also stops what it started.
  RANK=$r LOCAL_RANK=$r setsid bash -c 'exec "$@" > >(sed -u "s/^/[rank '"$r"'] /") 2> >(sed -u "s/^/[rank '"$r"'] /" >&2)' _ "$@" &
  pids+=($!)
done

stop_all() {  # signal every rank still running
  for p in "${pids[@]}"; do kill "-$1" -- "-$p" 2>/dev/null; done
}
trap 'stop_all INT' INT
trap 'stop_all TERM' TERM

status=0
remaining=$nproc
declare -A done_pid=()
while [ "$remaining" -gt 0 ]; do
  for ((r = 0; r < nproc; r++)); do
    p=${pids[$r]}
    [ -n "${done_pid[$p]:-}" ] && continue
    kill -0 "$p" 2>/dev/null && continue
    wait "$p"
    rc=$?
    done_pid[$p]=1
    remaining=$((remaining - 1))
    if [ "$rc" -ne 0 ] && [ "$status" -eq 0 ]; then
      status=$rc
      echo "launch: rank $r exited with status $rc; stopping the other ranks" >&2
      stop_all TERM
      ( sleep 15; stop_all KILL ) &  # ranks that ignore TERM (stuck in a collective) are killed
      killer=$!
    fi
  done
  [ "$remaining" -gt 0 ] && sleep 0.2
done
[ -n "${killer:-}" ] && kill "$killer" 2>/dev/null
exit "$status"
