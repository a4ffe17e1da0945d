#!/usr/bin/env python3
"""PyTorch benchmark of one training step of the peer Python implementations of our Mamba2 and GatedDeltaNet
baselines, mamba_ssm's Triton Mamba2 and flash-linear-attention (FLA) 0.4.2's GatedDeltaNet, for comparison
with elman-train's C++ trainer on the same GPU (scripts/bench.sh --peers runs both after our rows).

Usage:
    bash scripts/get_peers.sh            # once, with network: the peers' code into .peers/ (ignored by git)
    python3 scripts/bench_torch_peers.py --model mamba2|gdn [--peers DIR] [--batch 32] [--chunk 512]
        [--steps 30] [--warmup 5] [--device cuda] [--profile N]
    python3 scripts/bench_torch_peers.py --model gdn --params-only   # build (meta device), count, exit

--peers DIR (default: .peers at the repository root) is put first on sys.path: it holds mamba_ssm/, fla/ and
einops/ as scripts/get_peers.sh leaves them (mamba_ssm with a stub __init__, since its CUDA extensions and
causal_conv1d are not built; fla.layers reduced to GatedDeltaNet, since the other layers import transformers).
Needs torch, triton and packaging beside them; the step needs CUDA (the peers' scans are Triton kernels).

The LMs are written here around the peers' layers with the structure and the exact parameter counts of our
models (models/lm.cpp, models/mixers/{mamba2,gated_deltanet}.cpp, configs/bench-100m/{Mamba2,FLA-GDN}.yaml,
spec models.md 2.22 H1): byte vocabulary (256), embedding N(0, 0.02) tied to the output head, `depth`
pre-norm residual blocks  x = x + mixer(norm(x))  with no MLP, and a final norm (eps 1e-5). As in ours, the
residual stream stays fp32 and the mixer reads the normed stream in the autocast dtype.
  mamba2: dim 896, depth 20, LayerNorm (weight and bias), mixer
      mamba_ssm.modules.mamba2.Mamba2(d_model=896, d_state=128, d_conv=4, expand=2, headdim=64, ngroups=1,
      use_mem_eff_path=False) -- the library's defaults otherwise, which are ours: in/out_proj without bias,
      conv with bias, one D per head, gated RMSNorm y*silu(z) then norm (norm_before_gate=False) over all
      1792 channels, A_log = log U[1, 16], dt ~ log-uniform [1e-3, 1e-1]. 101,936,528 params (asserted).
  gdn: dim 768, depth 20, RMSNorm (weight only), mixer fla.layers.GatedDeltaNet(hidden_size=768, num_heads=6,
      head_dim=128, expand_v=2, use_gate=True, use_short_conv=True, conv_size=4, conv_bias=False, mode='chunk',
      norm_eps=1e-5) -- the library's defaults for the rest are ours (no bias anywhere, no conv bias,
      allow_neg_eigval=False, q/k L2-normalised in the kernel with scale 1/sqrt(128), output norm
      RMSNorm_V(o) * weight * silu(gate) per head). 95,020,016 params (asserted).
No layer needed a setting that differs from the library's defaults to reach our count; both layers initialise
their own parameters with the same distributions as ours (torch's Linear/Conv1d defaults for the projections
and convs).

What differs from our layers (the same parameters and the same maths, computed another way):
  mamba2: the peer's in_proj, depthwise conv (cuDNN nn.Conv1d, then SiLU: causal_conv1d, which the fused path
      use_mem_eff_path=True needs, is absent), SSD chunk scan (Triton, chunk 256, dt bias + softplus inside),
      gated RMSNorm (Triton) and out_proj run as separate ops; ours runs the conv + SiLU and the gated norm as
      our fused kernels and the scan in 64-step chunks.
  gdn: the peer has six projections (q, k, v, g, a, b) and three convs (q, k, v) where ours stacks them into
      one in_proj GEMM and one conv; its beta = sigmoid(b) is computed in the autocast dtype (ours in fp32);
      its scan is FLA's Triton chunk_gated_delta_rule (chunk 64).

Step and timing: scripts/torch_step.py, as for scripts/bench_torch_llama.py (the warm-up steps include the
peers' Triton autotuning and compilation). Last line printed (stdout):
    torch-{mamba_ssm|fla-gdn}  params=N  tok/s=X  ms/step=Y
with tok/s = batch*chunk*steps/seconds. Other messages go to stderr. --profile N: the N kernels with the most
device time over 3 more steps.
"""

import argparse
import os
import sys

import torch
import torch.nn as nn
import torch.nn.functional as F

from torch_step import NORM_EPS, VOCAB, RMSNorm, add_step_args, count_params, time_training
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# name printed, dim, depth, our parameter count (configs/bench-100m/*.yaml)
MODELS = {
    "mamba2": ("torch-mamba_ssm", 896, 20, 101_936_528),
    "gdn": ("torch-fla-gdn", 768, 20, 95_020_016),
}


def make_mixer(model, dim, layer_idx):
    if model == "mamba2":
        from mamba_ssm.modules.mamba2 import Mamba2
        return Mamba2(d_model=dim, d_state=128, d_conv=4, expand=2, headdim=64, ngroups=1,
                      use_mem_eff_path=False, layer_idx=layer_idx)
    from fla.layers import GatedDeltaNet
    return GatedDeltaNet(hidden_size=dim, num_heads=6, head_dim=128, expand_v=2, use_gate=True,
                         use_short_conv=True, conv_size=4, conv_bias=False, mode="chunk", norm_eps=NORM_EPS,
                         layer_idx=layer_idx)


def make_norm(model, dim):
    return nn.LayerNorm(dim, eps=NORM_EPS) if model == "mamba2" else RMSNorm(dim)


class Block(nn.Module):
    def __init__(self, model, dim, layer_idx):
        super().__init__()
        self.norm = make_norm(model, dim)
        self.mixer = make_mixer(model, dim, layer_idx)

    def forward(self, x):
        h = self.norm(x)
        dev = h.device.type
        if torch.is_autocast_enabled(dev):  # the mixer reads the normed stream in the autocast dtype, as ours
            h = h.to(torch.get_autocast_dtype(dev))
        y = self.mixer(h)
        if isinstance(y, tuple):  # FLA's layers return (output, attentions, past_key_values)
            y = y[0]
        return x + y  # the residual stream stays fp32


class PeerLM(nn.Module):
    def __init__(self, model, dim, depth):
        super().__init__()
        self.embed = nn.Embedding(VOCAB, dim)
        self.blocks = nn.ModuleList(Block(model, dim, i) for i in range(depth))
        self.norm = make_norm(model, dim)
        nn.init.normal_(self.embed.weight, mean=0.0, std=0.02)

    def forward(self, idx):
        x = self.embed(idx)
        for block in self.blocks:
            x = block(x)
        # Output head tied to the embedding matrix.
        return F.linear(self.norm(x), self.embed.weight)


def check_params(model, n):
    expected = MODELS[model][3]
    assert n == expected, f"{model}: expected {expected:,} params (ours), got {n:,}"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", required=True, choices=sorted(MODELS))
    ap.add_argument("--peers", default=os.path.join(ROOT, ".peers"), metavar="DIR",
                    help="the folder scripts/get_peers.sh filled (default: .peers at the repository root)")
    ap.add_argument("--device", default="cuda", help="cuda (default); the peers' kernels need it")
    ap.add_argument("--params-only", action="store_true",
                    help="build on the meta device, print the count, exit (no GPU needed)")
    add_step_args(ap)
    args = ap.parse_args()
    if min(args.batch, args.chunk, args.steps) < 1 or args.warmup < 0:
        ap.error("sizes and --steps must be positive, --warmup non-negative")
    if not os.path.isdir(os.path.join(args.peers, "mamba_ssm")) or \
            not os.path.isdir(os.path.join(args.peers, "fla")):
        sys.exit(f"bench_torch_peers: error: no mamba_ssm/ and fla/ in {args.peers} "
                 "(run scripts/get_peers.sh [DIR] where there is network, then pass --peers DIR)")
    sys.path.insert(0, os.path.abspath(args.peers))
    name, dim, depth, _ = MODELS[args.model]

    if args.params_only:
        with torch.device("meta"):
            n = count_params(PeerLM(args.model, dim, depth))
        check_params(args.model, n)
        print(f"{name}  params={n:,}  (dim={dim} depth={depth})")
        return 0

    device = torch.device(args.device)
    on_cuda = device.type == "cuda"
    if not on_cuda or not torch.cuda.is_available():
        sys.exit("bench_torch_peers: error: CUDA is not available (the peers' Triton kernels need it; "
                 "--params-only runs without)")
    torch.manual_seed(0)

    with device:  # build (and initialize) directly on the target device
        model = PeerLM(args.model, dim, depth)
    n_params = count_params(model)
    check_params(args.model, n_params)
    layer = type(model.blocks[0].mixer)
    print(f"bench_torch_peers: {name} ({layer.__module__}.{layer.__name__} from {args.peers}) on {device} "
          f"({torch.cuda.get_device_name(device)}), torch {torch.__version__}, params={n_params:,}, "
          f"batch={args.batch}, chunk={args.chunk}, dim={dim}, depth={depth}", file=sys.stderr)
    tok_s, ms_step = time_training(model, model, device, args, f"bench_torch_peers: {name}")
    print(f"{name}  params={n_params}  tok/s={tok_s:.0f}  ms/step={ms_step:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
