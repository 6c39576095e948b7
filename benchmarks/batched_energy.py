"""Time per image of one energy-and-gradient evaluation of the shipped gray critic, the images of
a batch evaluated together vs one after another, and of a whole L-BFGS restoration of that batch.

    python benchmarks/batched_energy.py [--sizes 96,256] [--batch 8] [--repeats 3] [--device D]

This decides how ``alr.restore`` runs the L-BFGS of a batch (``alr.solver.SEQUENTIAL_DEVICES``):
in lockstep, one batched critic call per round of evaluations, where a batched call is cheaper per
image (GPUs), else one image after another (the CPU). Both orders are timed side by side, alternating,
on the same random images; the restoration rows force each mode.
"""
from __future__ import annotations

import argparse
import time

import torch
from _common import print_table, write_json

import alr
import alr.solver
from alr.physics import Denoising
from alr.critic import Regularizer
from alr.solver import Problem


def _timed(f, device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    f()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="96,256")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--iters", type=int, default=8, help="L-BFGS iterations of the restoration rows")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = ap.parse_args()
    dev = torch.device(args.device)
    model = alr.load("gray").to(dev).requires_grad_(False)
    rows = []
    for size in (int(s) for s in args.sizes.split(",")):
        b = args.batch
        y = torch.rand(b, 1, size, size, generator=torch.Generator().manual_seed(0)).to(dev)
        prob = Problem(y, Denoising(), Regularizer(model), torch.full((b,), 0.01, device=dev))
        prob.energy(y)  # warm-up
        together, alone = [], []
        for _ in range(args.repeats):
            together.append(_timed(lambda: prob.energy(y), dev))
            alone.append(_timed(lambda: [prob.select([i]).energy(y[i:i + 1]) for i in range(b)], dev))
        t, a = min(together) / b, min(alone) / b
        rows.append({"size": size, "batch": b, "what": "energy + gradient", "ms_per_image_together": 1e3 * t,
                     "ms_per_image_one_by_one": 1e3 * a, "together_speedup": a / t})
        modes, default = {}, alr.solver.SEQUENTIAL_DEVICES
        try:
            for mode, seq in (("together", ()), ("one_by_one", (dev.type,))):
                alr.solver.SEQUENTIAL_DEVICES = seq
                modes[mode] = _timed(lambda: alr.solver.minimize(y, None, model, 0.01, method="lbfgs", iters=args.iters,
                                                         device=dev), dev) / b
        finally:
            alr.solver.SEQUENTIAL_DEVICES = default
        rows.append({"size": size, "batch": b, "what": f"restore (L-BFGS {args.iters})",
                     "ms_per_image_together": 1e3 * modes["together"],
                     "ms_per_image_one_by_one": 1e3 * modes["one_by_one"],
                     "together_speedup": modes["one_by_one"] / modes["together"]})
    print_table("batched_energy: the images of a batch evaluated together vs one by one", rows)
    write_json("batched_energy", rows, {"threads": torch.get_num_threads()})


if __name__ == "__main__":
    main()
