#!/usr/bin/env python3
"""Renders a sweep directory (scripts/sweep.sh) as a report in the shape of the seed reports.

Usage: scripts/report.py SWEEP_DIR [--elman-train PATH]

Reads every SWEEP_DIR/<run>/results.json (with config.yaml and metrics.jsonl beside it) and writes
  SWEEP_DIR/report.md   header (date, GPU, budget, batch, chunk, lr, precision, data), the best-models table
                        sorted by loss (last-100 train loss), one table per family, failed/unstable runs with
                        their reasons, and the throughput-vs-quality bar chart as text;
  SWEEP_DIR/report.csv  one row per run;
  SWEEP_DIR/report.png  loss vs tok/s, and the training-loss curves (needs matplotlib).
Model descriptions come from `elman-train --list-models`. Python 3 standard library plus matplotlib.
"""
import argparse
import csv
import datetime
import json
import os
import subprocess
import sys

# Families for the per-family tables; a model not listed here goes under "other".
FAMILIES = [
    ("Gated-diagonal Elman", {"e61", "e62", "e64", "e65", "e67", "e68"}),
    ("Diagonal delta rule (e74 --state diagonal)", {"e74-diagonal"}),
    ("Dense-recurrence Elman", {"e1", "e42", "e56", "e63", "e66"}),
    ("Matrix-state delta rule", {"e74", "e75", "e87"}),
    ("Matrix-state Elman", {"e63m", "e70", "e71", "e72", "e73"}),
    ("Baselines", {"llama", "mamba2", "gdn"}),
]


def read_config(path):
    """The run's config.yaml as a dict of strings (the file is flat `key: value` lines)."""
    out = {}
    if os.path.exists(path):
        for line in open(path):
            if ":" in line and not line.startswith("#"):
                key, value = line.split(":", 1)
                out[key.strip()] = value.strip().strip('"')
    return out


def family_key(r):
    """The name a run is grouped by: e74 with a diagonal state is an elementwise cell, not a matrix state."""
    if r.get("model") == "e74" and r["cfg"].get("state") == "diagonal":
        return "e74-diagonal"
    return r.get("model")


def read_losses(path):
    losses = []
    if os.path.exists(path):
        for line in open(path):
            rec = json.loads(line)
            if "loss" in rec:
                losses.append(rec["loss"])
    return losses


def descriptions(exe):
    try:
        text = subprocess.run([exe, "--list-models"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError) as e:
        sys.exit(f"report: cannot list models with '{exe}' ({e}); build it (scripts/setup.sh) or pass --elman-train")
    return {parts[0]: parts[1] for parts in (l.split(None, 1) for l in text.splitlines()) if len(parts) == 2}


def fmt(v, digits):
    return "-" if v is None else f"{v:.{digits}f}"


def main():
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    venv_py = os.path.join(root, ".venv", "bin", "python")
    try:
        import matplotlib  # noqa: F401  (checked first: the project venv has it when python3 does not)
    except ImportError:
        if os.path.exists(venv_py) and os.path.realpath(sys.prefix) != os.path.realpath(os.path.join(root, ".venv")):
            os.execv(venv_py, [venv_py] + sys.argv)
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("sweep_dir")
    ap.add_argument("--elman-train", default=os.path.join(os.environ.get("ELMAN_BUILD_DIR", os.path.join(root, "build")), "elman-train"))
    args = ap.parse_args()
    runs = []
    for name in sorted(os.listdir(args.sweep_dir)):
        run_dir = os.path.join(args.sweep_dir, name)
        res_path = os.path.join(run_dir, "results.json")
        if not os.path.isfile(res_path):
            continue
        r = json.load(open(res_path))
        r["name"] = name
        r["cfg"] = read_config(os.path.join(run_dir, "config.yaml"))
        r["losses"] = read_losses(os.path.join(run_dir, "metrics.jsonl"))
        runs.append(r)
    if not runs:
        sys.exit(f"report: no runs with results.json in '{args.sweep_dir}' (run scripts/sweep.sh first)")
    desc = descriptions(args.elman_train)
    ok = sorted((r for r in runs if r.get("status") == "ok" and r.get("last100_loss") is not None),
                key=lambda r: r["last100_loss"])
    bad = [r for r in runs if r.get("status") != "ok"]

    def common(key):
        values = sorted({r["cfg"].get(key, "") for r in runs if r["cfg"].get(key)})
        return ", ".join(values) if values else "-"

    def row(r):
        n = r.get("params", 0)
        size = f"{n / 1e6:.1f}M" if n >= 1e6 else f"{n / 1e3:.0f}K"
        return (f"| {r['name']} | {size} | {fmt(r.get('last100_loss'), 3)} | "
                f"{fmt(r.get('eval_bpb'), 3)} | {(r.get('tok_s') or 0):,.0f} tok/s | {r.get('impl', '-')} | "
                f"{desc.get(r.get('model'), '')} |")

    head = "| Model | Params | Loss | Eval bpb | Throughput | Impl | Description |\n|---|---|---|---|---|---|---|"
    md = [f"# Benchmark: {os.path.basename(os.path.abspath(args.sweep_dir))}", "",
          f"**Date:** {datetime.date.today().isoformat()}  ",
          f"**GPU:** {', '.join(sorted({r.get('gpu', '-') for r in runs if r.get('gpu')})) or '-'}  ",
          f"**Budget:** {common('time')} (steps: {common('steps')}), batch={common('batch')}, chunk={common('chunk')}, "
          f"lr={common('lr')}, warmup={common('warmup')}, precision={common('precision')}  ",
          f"**Data:** {common('data')}  ",
          f"**Commit:** {', '.join(sorted({r.get('commit', '-') for r in runs if r.get('commit')})) or '-'}", "",
          "Loss = mean training loss of the last 100 steps (the seed reports' metric); Eval bpb = bits per byte "
          "on the held-out tail of the data file.", "", "## Best models", "", head]
    md += [row(r) for r in ok]
    for family, members in FAMILIES + [("Other", None)]:
        known = set().union(*(m for _, m in FAMILIES))
        rows = [r for r in ok if (family_key(r) in members if members else family_key(r) not in known)]
        if rows:
            md += ["", f"### {family}", "", head] + [row(r) for r in rows]
    if bad:
        md += ["", "## Failed / unstable", "", "| Model | Steps | Issue |", "|---|---|---|"]
        md += [f"| {r['name']} | {r.get('steps', '-')} | {r.get('status')} |" for r in bad]
    if ok:
        top = max(r.get("tok_s") or 0 for r in ok) or 1
        md += ["", "## Throughput vs quality", "", "```", "Loss    Model                Throughput"]
        md += [f"{r['last100_loss']:.2f}    {r['name']:<20} {(r.get('tok_s') or 0) / 1e3:>5.0f}K tok/s  "
               f"{'█' * max(1, round(36 * (r.get('tok_s') or 0) / top))}" for r in ok]
        md += ["```"]
    md += ["", "![loss vs throughput and loss curves](report.png)", ""]
    open(os.path.join(args.sweep_dir, "report.md"), "w").write("\n".join(md))

    fields = ["name", "model", "params", "steps", "tokens", "wall_s", "tok_s", "last100_loss", "eval_loss", "eval_bpb",
              "peak_mem_gib", "impl", "precision", "status", "gpu", "libtorch", "commit", "date"]
    with open(os.path.join(args.sweep_dir, "report.csv"), "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields, extrasaction="ignore")
        w.writeheader()
        for r in runs:
            w.writerow(r)

    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        sys.exit("report: report.md and report.csv written, but report.png needs matplotlib (pip install matplotlib)")
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(13, 5))
    cycle = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    color = {r["name"]: cycle[i % len(cycle)] for i, r in enumerate(runs)}  # one color per run in both panels
    for r in ok:
        ax1.scatter(r.get("tok_s") or 0, r["last100_loss"], color=color[r["name"]])
        ax1.annotate(r["name"], (r.get("tok_s") or 0, r["last100_loss"]), fontsize=8, xytext=(3, 3), textcoords="offset points")
    ax1.set_xlabel("tokens / s (training step)")
    ax1.set_ylabel("last-100 train loss (nats/byte)")
    ax1.set_title("Quality vs throughput")
    for r in runs:
        ls = r["losses"]
        if ls:
            k = max(1, len(ls) // 200)  # smooth with a moving mean over ~0.5% of the run
            sm = [sum(ls[max(0, i - k + 1):i + 1]) / len(ls[max(0, i - k + 1):i + 1]) for i in range(len(ls))]
            ax2.plot(range(1, len(sm) + 1), sm, label=r["name"], linewidth=1, color=color[r["name"]])
    ax2.set_xlabel("step")
    ax2.set_ylabel("train loss")
    ax2.set_title("Training loss")
    ax2.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(os.path.join(args.sweep_dir, "report.png"), dpi=110)
    print(f"report: {os.path.join(args.sweep_dir, 'report.md')} ({len(ok)} ok, {len(bad)} failed), report.csv, report.png")


if __name__ == "__main__":
    main()
