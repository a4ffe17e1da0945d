"""The byte vocabulary, the weight-only RMSNorm (eps 1e-5) and the training step with its timing, shared by
scripts/bench_torch_llama.py and scripts/bench_torch_peers.py, so that both measure what elman-train's step
does: fp32 master weights, bf16 autocast (CUDA only), cross-entropy over all positions, backward,
clip_grad_norm_(1.0), AdamW(lr 3e-4, betas (0.9, 0.95), weight decay 0.01 on every parameter, fused on CUDA).
Input is fresh uniform random bytes each step, shape batch x (chunk+1): inputs [:, :-1], targets [:, 1:].

Timing: `warmup` untimed steps (they include compilation and autotuning), then `steps` steps between two device
synchronizations, on a host clock; a non-finite last loss is an error. With profile N > 0, 3 more steps are
profiled and the N kernels with the most device time are printed to stderr.
"""

import math
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

VOCAB = 256
NORM_EPS = 1e-5


class RMSNorm(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x):
        return F.rms_norm(x, (x.shape[-1],), self.weight, NORM_EPS)


def count_params(model):
    return sum(p.numel() for p in model.parameters())



def add_step_args(ap):
    """The options of the step and its timing (args.batch, chunk, steps, warmup, profile)."""
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--chunk", type=int, default=512)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--profile", type=int, default=0, metavar="N",
                    help="after timing, print the N kernels with the most device time over 3 steps")


def time_training(model, forward, device, args, tag):
    """Times args.steps training steps of `forward` (model, or its compiled version) and returns
    (tok/s, ms/step). `tag` prefixes the messages on stderr."""
    on_cuda = device.type == "cuda"
    opt = torch.optim.AdamW(model.parameters(), lr=3e-4, betas=(0.9, 0.95), weight_decay=0.01, fused=on_cuda)

    def train_step():
        batch = torch.randint(0, VOCAB, (args.batch, args.chunk + 1), device=device)
        inputs, targets = batch[:, :-1], batch[:, 1:]
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=on_cuda):
            logits = forward(inputs)
            loss = F.cross_entropy(logits.reshape(-1, VOCAB).float(), targets.reshape(-1))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss

    def sync():
        if on_cuda:
            torch.cuda.synchronize(device)

    for _ in range(args.warmup):
        loss = train_step()
    sync()
    if args.warmup:
        print(f"{tag}: warmup done, loss={loss.item():.4f} (ln 256 = {math.log(VOCAB):.4f})", file=sys.stderr)

    t0 = time.perf_counter()
    for _ in range(args.steps):
        loss = train_step()
    sync()
    seconds = time.perf_counter() - t0
    if not math.isfinite(loss.item()):
        sys.exit(f"{tag}: error: non-finite loss {loss.item()}")

    if args.profile > 0:
        from torch.profiler import ProfilerActivity, profile
        acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if on_cuda else [])
        with profile(activities=acts) as prof:
            for _ in range(3):
                train_step()
            sync()
        key = "self_device_time_total" if on_cuda else "self_cpu_time_total"
        print(prof.key_averages().table(sort_by=key, row_limit=args.profile), file=sys.stderr)
    return args.batch * args.chunk * args.steps / seconds, 1000.0 * seconds / args.steps
