#!/usr/bin/env python3
"""GPU time per (launching op, kernel) from the Chrome trace that `elman-train --profile N` writes
(RUN_DIR/profile.json): each kernel, memcpy or memset is charged to the innermost CPU op around its launch, so
copies and casts show where they come from (aten::copy_ under which Function, and so on). Run the profile with
`--cuda-graph off`: a replayed graph launches its kernels without CPU ops around them.

Usage: scripts/profile_by_op.py RUN_DIR/profile.json [--steps N] [--top K]
  --steps: the profile's step count (times are printed per step); --top: rows to print (default 60).
"""
import argparse
import bisect
import collections
import json


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("trace")
    ap.add_argument("--steps", type=float, default=1.0)
    ap.add_argument("--top", type=int, default=60)
    a = ap.parse_args()
    tr = json.load(open(a.trace))
    events = tr["traceEvents"] if isinstance(tr, dict) else tr
    ops = collections.defaultdict(list)  # thread -> [(start, end, name)]
    launches = {}                        # correlation id -> (thread, time)
    kernels = []
    for e in events:
        cat = e.get("cat", "")
        if cat == "cpu_op":
            ops[e["tid"]].append((e["ts"], e["ts"] + e.get("dur", 0), e["name"]))
        elif cat == "cuda_runtime" and "correlation" in e.get("args", {}):
            launches[e["args"]["correlation"]] = (e["tid"], e["ts"])
        elif cat in ("kernel", "gpu_memcpy", "gpu_memset"):
            kernels.append(e)
    for v in ops.values():
        v.sort()
    starts = {t: [o[0] for o in v] for t, v in ops.items()}

    def owner(tid, ts):  # the latest-starting op that still contains ts: the innermost
        v = ops.get(tid, [])
        last = bisect.bisect_right(starts.get(tid, []), ts) - 1
        for j in range(last, max(-1, last - 5000), -1):  # ops nest, so the owner is among the last few
            if v[j][1] >= ts:
                return v[j][2]
        return "?"

    time, calls = collections.Counter(), collections.Counter()
    for k in kernels:
        launch = launches.get(k.get("args", {}).get("correlation"))
        key = (owner(*launch) if launch else "?", k["name"])
        time[key] += k.get("dur", 0)
        calls[key] += 1
    print(f"{'ms/step':>8} {'calls':>6}  {'op':40s} kernel")
    for (op, name), us in time.most_common(a.top):
        print(f"{us / 1000 / a.steps:8.3f} {calls[(op, name)] / a.steps:6.1f}  {op[:40]:40s} {name[:90]}")


if __name__ == "__main__":
    main()
