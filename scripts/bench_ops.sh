#!/usr/bin/env bash
# Times the recurrent ops alone (forward, forward + backward) at the 100M shapes, batch 32 x 512, with
# CUDA events: our kernels and, with --reference, the pure-LibTorch references beside them. For kernel
# tuning; model throughput is scripts/bench.sh. Needs a CUDA GPU and a build (scripts/setup.sh).
# Usage: scripts/bench_ops.sh [--reference] [OP:D ...]   (default: the dense cells at their 100M widths, E70-E73, E87,
# E63m, the gated delta rule (gdn) and Mamba2's SSD scan (ssd), whose LibTorch chunked scans are timed beside their
# kernels, and the Mamba2/GatedDeltaNet layers' short conv and gated norms, whose LibTorch references are timed beside)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
build="${ELMAN_BUILD_DIR:-$root/build}"
ref=0 cases=()
for a in "$@"; do
  if [ "$a" = --reference ]; then ref=1; else cases+=("$a"); fi
done
# D = dim x expansion of the 100M configs: E1/E56 640 x 2, E42 768 x 2, E63 512 x 2, E66 640 x 2.
# matrix-*: E70-E73, the D given is n_state (96 at 100M). sparse-*: E87 (widths from the level name; the D given is
# ignored). slots-n8: E63m (640 x 2). gdn: GatedDeltaNet's scan at H 6, K 128, V 256 (the D given is ignored). ssd:
# Mamba2's scan, the D given is the number of heads (28 at 100M: d_inner 1792 / headdim 64). short_conv: the conv's
# channels (2048: Mamba2's x, B, C at 100M; 3072: GatedDeltaNet's q, k, v). gated_norm: Mamba2's norm, D = d_inner
# (1792). gated_norm_gdn: GatedDeltaNet's per-head norm at H 6, V 256 (the D given is ignored).
[ ${#cases[@]} -gt 0 ] || cases=(dense-tanh:1280 dense-linear:1536 dense-gated:1024 dense-gated:1280 diag-e61:1280
                                 matrix-e70:96 matrix-e71:96 matrix-e72:96 matrix-e73:96
                                 sparse-b4k2:0 sparse-b16k4:0 sparse-b32k8:0 slots-n8:1280 gdn:0 ssd:28
                                 short_conv:2048 short_conv:3072 gated_norm:1792 gated_norm_gdn:0)
for c in "${cases[@]}"; do
  op="${c%%:*}" D="${c#*:}"
  for dtype in bf16 f32; do
    "$build/elman-opbench" "$op" --D "$D" --dtype "$dtype"
    [ "$op" != gdn ] && [ "$op" != ssd ] || "$build/elman-opbench" "$op" --D "$D" --dtype "$dtype" --impl chunked --iters 3
    # The conv's and norms' LibTorch references are fast enough to time beside their kernels on every run.
    ref_iters=2 with_ref=$ref
    case "$op" in short_conv | gated_norm*) ref_iters=10 with_ref=1 ;; esac
    [ "$with_ref" = 0 ] || "$build/elman-opbench" "$op" --D "$D" --dtype "$dtype" --impl reference --iters "$ref_iters"
  done
done
