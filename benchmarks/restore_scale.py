"""Time and peak memory of one restoration as the image grows (512^2 ... 4096^2), tiled under a budget.

    python benchmarks/restore_scale.py [--sizes 512,1024,2048,4096] [--max-memory 2G] [--iters 3]

Each size runs in a fresh subprocess so that its peak RSS (and CUDA peak) is its own.
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

from _common import print_table, write_json


def child(size: int, max_memory: float, iters: int) -> None:
    import torch

    import alr
    model = alr.load("gray")
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    y = torch.rand(1, 1, size, size)
    t0 = time.perf_counter()
    alr.solver.minimize(y, None, model, 0.01, method="adam", iters=iters, max_memory=max_memory, device=dev)
    dt = time.perf_counter() - t0
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20  # KiB -> GiB
    cuda = torch.cuda.max_memory_allocated() / 2 ** 30 if dev == "cuda" else None
    print(json.dumps({"seconds_per_iter": dt / iters, "peak_rss_gib": rss, "cuda_peak_gib": cuda}))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="512,1024,2048,4096")
    ap.add_argument("--max-memory", default="1G")
    ap.add_argument("--iters", type=int, default=2)
    ap.add_argument("--child", type=int, default=None)
    args = ap.parse_args()
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
    from alr.cli import _parse_memory
    mem = _parse_memory(args.max_memory)
    if args.child:
        return child(args.child, mem, args.iters)
    rows = []
    for s in (int(v) for v in args.sizes.split(",")):
        out = subprocess.run([sys.executable, __file__, "--child", str(s), "--max-memory", args.max_memory,
                              "--iters", str(args.iters)], capture_output=True, text=True, check=True)
        r = json.loads(out.stdout.strip().splitlines()[-1])
        rows.append({"size": f"{s}x{s}", "megapixels": s * s / 1e6, **r,
                     "seconds_per_iter_per_MP": r["seconds_per_iter"] / (s * s / 1e6)})
    print_table(f"restore_scale: gradient steps under --max-memory {args.max_memory}", rows)
    write_json("restore_scale", rows, {"max_memory": args.max_memory})


if __name__ == "__main__":
    main()
