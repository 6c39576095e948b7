"""Time and peak memory of one default restoration as the image grows, beside the unbounded solve.

    python benchmarks/restore_scale.py [--sizes 512,1024,2048,4096] [--baseline-sizes 512,1024,2048]

Row ``default``: ``alr.restore(y, "gray", sigma=0.1)`` with default flags, i.e. the activation budget
picked from the memory available (alr.device.memory_budget: at most 128 MiB on the CPU, 1 GiB on a
GPU) and the model's own solver (L-BFGS, 8 iterations at sigma 0.1). Row ``unbounded``: the same
solve with no budget (the previous default), which at 4096x4096 was killed by the kernel at 24 GiB.
Both rows solve on the same device (CUDA when available, else the CPU); the model is loaded, the
settings resolved (unbounded row) and a 32x32 warm-up solve run before the clock starts. Each run
is a fresh subprocess so that its peak RSS (and CUDA peak) is its own.
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys

from _common import print_table, timed, write_json


def child(size: int, mode: str) -> None:
    import torch

    import alr
    from alr.data import add_noise
    from alr.device import resolve_device
    from alr.settings import resolve

    dev = resolve_device(None)  # both rows solve here: CUDA when available, else the CPU
    model = alr.load("gray")
    y = add_noise(torch.rand(1, 1, size, size) * 0.6 + 0.2, 0.1, seed=0)
    if mode == "default":
        run = lambda z: alr.restore(z, model, sigma=0.1, device=dev)  # noqa: E731
    else:  # the same solve without an activation budget
        s = resolve(model, y, sigma=0.1, device=dev)
        run = lambda z: alr.solver.minimize(z, None, model, s.lam, concavity=s.concavity, device=dev,  # noqa: E731
                                            **{**s.solver_kwargs(), "max_memory": None})
    run(y[..., :32, :32])  # warm-up (first-call set-up), too small to move the peaks
    dt, _ = timed(lambda: run(y), dev)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20  # KiB -> GiB
    cuda = torch.cuda.max_memory_allocated() / 2 ** 30 if dev.type == "cuda" else None
    print(json.dumps({"seconds": dt, "peak_rss_gib": rss, "cuda_peak_gib": cuda}))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="512,1024,2048,4096")
    ap.add_argument("--baseline-sizes", default="512,1024,2048")
    ap.add_argument("--child", type=int, default=None)
    ap.add_argument("--mode", default="default")
    args = ap.parse_args()
    if args.child:
        return child(args.child, args.mode)
    rows = []
    runs = [(int(s), "default") for s in args.sizes.split(",") if s] + \
           [(int(s), "unbounded") for s in args.baseline_sizes.split(",") if s]
    for s, mode in runs:
        out = subprocess.run([sys.executable, __file__, "--child", str(s), "--mode", mode],
                             capture_output=True, text=True)
        if out.returncode:
            rows.append({"size": f"{s}x{s}", "mode": mode, "error": f"exit {out.returncode}"})
            continue
        r = json.loads(out.stdout.strip().splitlines()[-1])
        rows.append({"size": f"{s}x{s}", "mode": mode, "megapixels": s * s / 1e6, **r})
        print(rows[-1], flush=True)
    print_table("restore_scale: alr.restore(y, 'gray', sigma=0.1), default flags vs no activation budget", rows)
    write_json("restore_scale", rows)


if __name__ == "__main__":
    main()
