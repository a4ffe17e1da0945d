#!/usr/bin/env bash
# Throughput of the full training step (forward, backward, clip, AdamW) at 100M, batch 32 x 512,
# bf16 autocast with fp32 master weights, for each model, side by side in one run; with
# --torch, also our plain-PyTorch Llama (scripts/bench_torch_llama.py), eager and torch.compile; with --peers DIR,
# also the peer implementations of our Mamba2 and GatedDeltaNet (mamba_ssm's Triton Mamba2, FLA's GatedDeltaNet,
# with our models' structure and parameter counts: scripts/bench_torch_peers.py) from DIR (scripts/get_peers.sh).
# tok/s excludes the first (warm-up) step. Needs a CUDA GPU and a build (scripts/setup.sh).
# Usage: scripts/bench.sh [--torch] [--peers DIR] [--steps N] [--profile N] [MODEL[@IMPL] | CONFIG.yaml[@IMPL] ...]
#   (default: llama e61). --profile N: after each row, the kernel-time table of N steps (elman-train --profile;
#   the profiled steps run slower, so take tok/s from a run without it).
#   MODEL runs at --params 100m; a CONFIG.yaml (e.g. configs/bench-100m/E74-d-noz-t.yaml) runs its model,
#   sizes and options (the row is named after the file). @reference runs the model's pure-LibTorch cell
#   (per-step cuBLAS GEMMs and pointwise ops) instead of our kernel, to measure the kernel against it in the
#   same run; without @IMPL the model's (or config's) default implementation runs.
#   A failing run (diverged, out of memory, refused) is printed as a failed row and the rest still run.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
build="${ELMAN_BUILD_DIR:-$root/build}"
steps=50 torch=0 peers="" profile=0 failed=0 models=()
while [ $# -gt 0 ]; do
  case "$1" in
    --torch) torch=1 ;;
    --peers) peers="$2"; shift ;;
    --steps) steps="$2"; shift ;;
    --profile) profile="$2"; shift ;;
    *) models+=("$1") ;;
  esac
  shift
done
[ ${#models[@]} -gt 0 ] || models=(llama e61)
data="$root/data/default_corpus.bin"
[ -s "$data" ] || "$root/scripts/prepare_corpus.sh" "$data"
out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT

gpu="$(nvidia-smi --query-gpu=name --format=csv,noheader | head -n 1)"
echo "training-step throughput, batch 32 x 512, bf16 autocast, $steps steps, $gpu"
row() { printf '%-20s %12s %12s %12s %8s\n' "$@"; }
row model params impl tok/s memGiB
# Each row is printed as soon as its run ends, so a sweep cut short still reports what it measured.
n=0
for spec in "${models[@]}"; do
  n=$((n + 1))
  m="${spec%@*}" impl=""
  [ "$m" = "$spec" ] || impl="${spec#*@}"
  if [[ "$m" == *.yaml ]]; then  # a config (model options such as E74's --state): its model and sizes
    [ -f "$m" ] || { echo "bench.sh: no config file $m" >&2; exit 2; }
    label="$(basename "$m" .yaml)" what=(--config "$m")
  else
    label="$m" what=(--model "$m" --params 100m)
  fi
  name="$n-$label-${impl:-auto}"  # the row number: a model may be listed twice (a run directory is never reused)
  # A run that fails (diverges, runs out of memory, is refused) prints its row as failed, its last log lines,
  # and the benchmark goes on to the next model; the script then exits 1.
  if ! "$build/elman-train" "${what[@]}" ${impl:+--impl "$impl"} --steps "$steps" --warmup 5 --batch 32 --chunk 512 \
    --eval-bytes 0 --device cuda --data "$data" --out "$out" --name "$name" --log-every 10 --profile "$profile" \
    >"$out/$name.log" 2>&1; then
    row "$label" - - failed -
    tail -n 3 "$out/$name.log" | sed 's/^/    /'
    failed=1
    continue
  fi
  IFS=$'\t' read -r b c d e < <(python3 -c "import json,sys; r=json.load(open(sys.argv[1])); print(f\"{r['params']}\t{r['impl']}\t{r['tok_s']:.0f}\t{r['peak_mem_gib']:.1f}\")" "$out/$name/results.json")
  row "$label" "$b" "$c" "$d" "$e"
  [ "$profile" = 0 ] || head -n 32 "$out/$name/profile.txt"
done
# One row from a PyTorch benchmark script (scripts/torch_step.py prints its last line: NAME  params=N  tok/s=X ...);
# a script that fails (its kernels on this GPU, a missing package) prints a failed row, as ours do.
script_row() {
  local impl="$1" label="$2" log="$out/script-$n"
  shift 2
  n=$((n + 1))
  if ! python3 "$@" >"$log.out" 2>"$log.log"; then
    row "$label" - - failed -
    tail -n 3 "$log.log" | sed 's/^/    /'
    failed=1
    return 0
  fi
  local line name params toks
  line="$(tail -n 1 "$log.out")"
  name="$(echo "$line" | awk '{print $1}')"
  params="$(echo "$line" | sed -n 's/.*params=\([0-9,]*\).*/\1/p' | tr -d ,)"
  toks="$(echo "$line" | sed -n 's/.*tok\/s=\([0-9.]*\).*/\1/p')"
  row "$name" "$params" "$impl" "$(printf '%.0f' "$toks")" -
}
if [ "$torch" = 1 ]; then
  script_row pytorch torch-llama-eager "$root/scripts/bench_torch_llama.py" --steps "$steps"
  script_row pytorch torch-llama-compile "$root/scripts/bench_torch_llama.py" --steps "$steps" --compile
fi
if [ -n "$peers" ]; then
  for m in mamba2 gdn; do
    script_row triton "peer-$m" "$root/scripts/bench_torch_peers.py" --model "$m" --peers "$peers" --steps "$steps"
  done
fi
exit "$failed"
