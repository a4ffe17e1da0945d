#!/usr/bin/env python3
"""PyTorch reference benchmark of one Llama training step, for comparison
with elman-train's C++ trainer on the same GPU.

Usage:
    python3 scripts/bench_torch_llama.py [--compile] [--batch 32] [--chunk 512]
        [--dim 640] [--depth 20] [--steps 30] [--warmup 5] [--device cuda] [--profile N]
    python3 scripts/bench_torch_llama.py --params-only   # count, no training

Model (written here in plain PyTorch): byte vocabulary (256), embedding
N(0, 0.02) tied to the output head, `depth` pre-norm blocks
    x = x + attn(rmsnorm(x));  x = x + swiglu(rmsnorm(x))
and a final RMSNorm (eps 1e-5, weight only).  Attention: fused qkv
projection, head_dim 64, RoPE (theta 10000, rotate-half layout) on q and k,
F.scaled_dot_product_attention(is_causal=True), output projection.  SwiGLU:
hidden = 8/3*dim rounded up to a multiple of 256, fused gate/up projection.
No biases; xavier_uniform init on every projection.  The default config has
101,770,880 parameters (asserted).

Step and timing: scripts/torch_step.py (the step elman-train runs: bf16 autocast,
fp32 master weights, clip 1.0, fused AdamW; warmup untimed steps, which include
torch.compile's compilation, then `steps` steps between two synchronizations).
Last line printed (stdout):
    torch-llama-{eager|compile}  params=N  tok/s=X  ms/step=Y
with tok/s = batch*chunk*steps/seconds.  Other messages go to stderr.
--profile N: the N kernels with the most device time over 3 more steps (the breakdown that
says which small ops a fused path has to absorb).
"""

import argparse
import sys

import torch
import torch.nn as nn
import torch.nn.functional as F

from torch_step import NORM_EPS, VOCAB, RMSNorm, add_step_args, count_params, time_training
HEAD_DIM = 64
ROPE_THETA = 10000.0
DEFAULT_DIM, DEFAULT_DEPTH = 640, 20
DEFAULT_PARAMS = 101_770_880


def swiglu_hidden(dim):
    """8/3 * dim rounded up to a multiple of 256 (exact integer arithmetic)."""
    return -(-8 * dim // (3 * 256)) * 256


def rope_tables(seq_len, head_dim, device):
    """cos/sin tables of shape (seq_len, head_dim) for the rotate-half layout."""
    inv_freq = 1.0 / (ROPE_THETA ** (
        torch.arange(0, head_dim, 2, device=device, dtype=torch.float32) / head_dim))
    pos = torch.arange(seq_len, device=device, dtype=torch.float32)
    angles = torch.outer(pos, inv_freq)            # (T, head_dim/2)
    angles = torch.cat((angles, angles), dim=-1)   # (T, head_dim)
    return angles.cos(), angles.sin()


def apply_rope(x, cos, sin):
    """Rotate pairs (i, i + head_dim/2) of x (B, H, T, D) by position angles."""
    half = x.shape[-1] // 2
    rotated = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
    return x * cos + rotated * sin


class Attention(nn.Module):
    def __init__(self, dim):
        super().__init__()
        assert dim % HEAD_DIM == 0, "dim must be a multiple of head_dim (64)"
        self.heads = dim // HEAD_DIM
        self.qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.out = nn.Linear(dim, dim, bias=False)

    def forward(self, x, cos, sin):
        b, t, d = x.shape
        qkv = self.qkv(x).view(b, t, 3, self.heads, HEAD_DIM)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)       # each (B, H, T, head_dim)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.out(y.transpose(1, 2).reshape(b, t, d))


class SwiGLU(nn.Module):
    def __init__(self, dim):
        super().__init__()
        hidden = swiglu_hidden(dim)
        self.gate_up = nn.Linear(dim, 2 * hidden, bias=False)
        self.down = nn.Linear(hidden, dim, bias=False)

    def forward(self, x):
        gate, up = self.gate_up(x).chunk(2, dim=-1)
        return self.down(F.silu(gate) * up)


class Block(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.attn_norm = RMSNorm(dim)
        self.attn = Attention(dim)
        self.mlp_norm = RMSNorm(dim)
        self.mlp = SwiGLU(dim)

    def forward(self, x, cos, sin):
        x = x + self.attn(self.attn_norm(x), cos, sin)
        return x + self.mlp(self.mlp_norm(x))


class Llama(nn.Module):
    def __init__(self, dim, depth, max_seq_len):
        super().__init__()
        self.embed = nn.Embedding(VOCAB, dim)
        self.blocks = nn.ModuleList(Block(dim) for _ in range(depth))
        self.norm = RMSNorm(dim)
        cos, sin = rope_tables(max_seq_len, HEAD_DIM, self.embed.weight.device)
        # Constant tables, not parameters (and not saved in a state dict).
        self.register_buffer("rope_cos", cos, persistent=False)
        self.register_buffer("rope_sin", sin, persistent=False)
        nn.init.normal_(self.embed.weight, mean=0.0, std=0.02)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)

    def forward(self, idx):
        t = idx.shape[1]
        # q and k come out of autocast in its compute dtype; cast the tables
        # once here rather than in every layer.
        dev = idx.device.type
        dt = (torch.get_autocast_dtype(dev) if torch.is_autocast_enabled(dev)
              else self.rope_cos.dtype)
        cos, sin = self.rope_cos[:t].to(dt), self.rope_sin[:t].to(dt)
        x = self.embed(idx)
        for block in self.blocks:
            x = block(x, cos, sin)
        # Output head tied to the embedding matrix.
        return F.linear(self.norm(x), self.embed.weight)


def check_default_params(args, n):
    if (args.dim, args.depth) == (DEFAULT_DIM, DEFAULT_DEPTH):
        assert n == DEFAULT_PARAMS, f"expected {DEFAULT_PARAMS:,} params, got {n:,}"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dim", type=int, default=DEFAULT_DIM)
    ap.add_argument("--depth", type=int, default=DEFAULT_DEPTH)
    ap.add_argument("--compile", action="store_true", help="use torch.compile")
    ap.add_argument("--device", default="cuda", help="cuda (default) or cpu")
    ap.add_argument("--params-only", action="store_true",
                    help="build on the meta device, print the count, exit")
    add_step_args(ap)
    args = ap.parse_args()
    if min(args.batch, args.chunk, args.dim, args.depth, args.steps) < 1 \
            or args.warmup < 0:
        ap.error("sizes and --steps must be positive, --warmup non-negative")

    if args.params_only:
        with torch.device("meta"):
            n = count_params(Llama(args.dim, args.depth, args.chunk))
        check_default_params(args, n)
        print(f"torch-llama  params={n:,}  (dim={args.dim} depth={args.depth})")
        return 0

    device = torch.device(args.device)
    on_cuda = device.type == "cuda"
    if on_cuda and not torch.cuda.is_available():
        sys.exit("bench_torch_llama: error: CUDA is not available (use --device cpu)")
    torch.manual_seed(0)

    with device:  # build (and initialize) directly on the target device
        model = Llama(args.dim, args.depth, args.chunk)
    n_params = count_params(model)
    check_default_params(args, n_params)
    forward = torch.compile(model) if args.compile else model
    mode = "compile" if args.compile else "eager"
    print(f"bench_torch_llama: {mode} on {device}"
          f"{' (' + torch.cuda.get_device_name(device) + ')' if on_cuda else ''}, "
          f"torch {torch.__version__}, params={n_params:,}, batch={args.batch}, "
          f"chunk={args.chunk}, dim={args.dim}, depth={args.depth}",
          file=sys.stderr)
    tok_s, ms_step = time_training(model, forward, device, args, "bench_torch_llama")
    print(f"torch-llama-{mode}  params={n_params}  tok/s={tok_s:.0f}  "
          f"ms/step={ms_step:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
