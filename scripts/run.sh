#!/usr/bin/env bash
# The main job: set up, build, prepare the default corpus, train the default model for a short
# budget, print the results table.
#   With a GPU: E61 at 100M (dim 640, depth 20) for 2 minutes in bf16 with our CUDA kernels.
#   Without one: a small E61 (dim 256, depth 4, batch 8) for 1 minute on the CPU reference.
# Usage: scripts/run.sh [extra elman-train flags, e.g. --model llama --time 5m]
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
build="${ELMAN_BUILD_DIR:-$root/build}"
out="${ELMAN_OUT:-$root/runs}"
"$root/scripts/setup.sh"
"$root/scripts/prepare_corpus.sh" "$root/data/default_corpus.bin"
if command -v nvidia-smi >/dev/null && nvidia-smi -L >/dev/null 2>&1; then
  defaults=(--params 100m --time 2m)
else
  echo "run: no GPU found: training a small model on the CPU instead of the 100M config"
  defaults=(--model e61 --dim 256 --depth 4 --batch 8 --chunk 256 --time 1m --eval-bytes 262144 --device cpu)
fi
"$build/elman-train" "${defaults[@]}" --data "$root/data/default_corpus.bin" --out "$out" "$@"
echo
echo "Results table ($out/results.md):"
cat "$out/results.md"
