#!/usr/bin/env bash
# Runs every config of a directory through elman-train, one job per GPU at a time.
#
# Usage: scripts/sweep.sh CONFIG_DIR [--time 2m] [--data PATH] [--gpus 0,1 | --gpus cpu] [--out DIR] [-- FLAGS...]
#   CONFIG_DIR  *.yaml files, one run each; the run is named after the file (E61.yaml -> OUT/E61)
#   --time      overrides each config's budget (default: the config's own)
#   --data      training data (default: data/default_corpus.bin, made if missing)
#   --gpus      GPU ids to use in parallel (default: all that nvidia-smi lists), or cpu
#   --out       sweep directory (default: runs/sweep-<CONFIG_DIR name>)
#   FLAGS       passed to every run
# Resumable: a run with results.json is done (ok, diverged or failed) and is skipped; a run that was
# interrupted or killed resumes from its checkpoint, or restarts if it had none. A run that crashes without
# writing results.json (e.g. killed by the system) gets a results.json with status "failed: <last log line>",
# and the sweep goes on. Render the report with scripts/report.py OUT.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
exe="${ELMAN_TRAIN:-${ELMAN_BUILD_DIR:-$root/build}/elman-train}"
[ $# -ge 1 ] || { echo "usage: scripts/sweep.sh CONFIG_DIR [--time T] [--data PATH] [--gpus LIST|cpu] [--out DIR] [-- FLAGS]" >&2; exit 2; }
config_dir="$1"; shift
time_flag=() data="$root/data/default_corpus.bin" gpus="" out="" extra=()
while [ $# -gt 0 ]; do
  case "$1" in
    --time) time_flag=(--time "$2"); shift ;;
    --data) data="$2"; shift ;;
    --gpus) gpus="$2"; shift ;;
    --out) out="$2"; shift ;;
    --) shift; extra=("$@"); break ;;
    *) echo "sweep: unknown argument '$1'" >&2; exit 2 ;;
  esac
  shift
done
[ -d "$config_dir" ] || { echo "sweep: no config directory '$config_dir'" >&2; exit 2; }
[ -x "$exe" ] || { echo "sweep: no elman-train at '$exe' (run scripts/setup.sh)" >&2; exit 2; }
mapfile -t configs < <(find "$config_dir" -maxdepth 1 -name '*.yaml' | LC_ALL=C sort)
[ ${#configs[@]} -gt 0 ] || { echo "sweep: no *.yaml in '$config_dir'" >&2; exit 2; }
[ -n "$out" ] || out="$root/runs/sweep-$(basename "$config_dir")"
if [ -z "$gpus" ]; then
  gpus="$(nvidia-smi --query-gpu=index --format=csv,noheader 2>/dev/null | paste -sd, || true)"
  [ -n "$gpus" ] || gpus=cpu
fi
[ -s "$data" ] || [ "$data" != "$root/data/default_corpus.bin" ] || "$root/scripts/prepare_corpus.sh" "$data"
mkdir -p "$out"
rm -rf "$out/.claims" && mkdir -p "$out/.claims"  # claims of an earlier, stopped sweep
total=${#configs[@]}

status_of() { python3 -c 'import json,sys; print(json.load(open(sys.argv[1])).get("status",""))' "$1" 2>/dev/null || true; }
summary_of() {
  python3 - "$1" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
print(f"{r.get('status')}, {(r.get('tok_s') or 0) / 1e3:.0f}K tok/s, last-100 loss {r.get('last100_loss')}")
PY
}
record_failure() {  # run dir, log: a results.json for a run that died without writing one
  python3 - "$1" "$2" <<'PY'
import json, os, sys
run, log = sys.argv[1], sys.argv[2]
lines = [l.strip() for l in open(log, errors="replace") if l.strip()] if os.path.exists(log) else []
os.makedirs(run, exist_ok=True)
json.dump({"model": os.path.basename(run), "status": "failed: " + (lines[-1][:300] if lines else "no output"),
           "run_dir": run}, open(os.path.join(run, "results.json"), "w"), indent=2)
PY
}

worker() {
  local gpu="$1" i=0
  for cfg in "${configs[@]}"; do
    i=$((i + 1))
    local name run log status args
    name="$(basename "$cfg" .yaml)" run="$out/$name" log="$out/$name.log"
    mkdir "$out/.claims/$name" 2>/dev/null || continue  # another worker has it
    status=""
    if [ -f "$run/results.json" ]; then status="$(status_of "$run/results.json")"; fi
    if [ -n "$status" ] && [ "$status" != interrupted ] && [[ "$status" != stopped* ]]; then
      echo "[sweep] ($i/$total) $name: done before ($status), skipped"
      continue
    fi
    if [ -f "$run/checkpoint.pt" ]; then
      args=(--resume "$run")
    else
      rm -rf "$run"
      args=(--config "$cfg" "${time_flag[@]}" --data "$data" --out "$out" --name "$name" "${extra[@]}")
      [ "$gpu" = cpu ] && args+=(--device cpu)
    fi
    local where="gpu $gpu"
    [ "$gpu" = cpu ] && where=cpu
    echo "[sweep] ($i/$total) $name: start on $where"
    local rc=0
    if [ "$gpu" = cpu ]; then "$exe" "${args[@]}" >>"$log" 2>&1 || rc=$?
    else CUDA_VISIBLE_DEVICES="$gpu" "$exe" "${args[@]}" >>"$log" 2>&1 || rc=$?; fi
    [ -f "$run/results.json" ] || record_failure "$run" "$log"
    echo "[sweep] ($i/$total) $name: $(summary_of "$run/results.json") (exit $rc, log $log)"
  done
}

echo "[sweep] $total configs from $config_dir -> $out on ${gpus}"
pids=()
trap 'kill -INT "${pids[@]}" 2>/dev/null; wait; exit 130' INT TERM
IFS=, read -ra gpu_list <<<"$gpus"
for gpu in "${gpu_list[@]}"; do worker "$gpu" & pids+=($!); done
wait "${pids[@]}"
echo "[sweep] finished: scripts/report.py $out"
