"""Time per image of one energy-and-gradient evaluation of the shipped gray critic, the images of
a batch evaluated together vs one after another, and of a whole L-BFGS restoration of that batch.

    python benchmarks/batched_energy.py [--sizes 96,256] [--batch 8] [--repeats 3] [--device D]

This decides how ``alr.restore`` runs the L-BFGS of a batch (``alr.solver.SEQUENTIAL_DEVICES``):
in lockstep, one batched critic call per round of evaluations, where a batched call is cheaper per
image (GPUs), else one image after another (the CPU). Both orders are timed side by side on the same
random images: after a warm-up of each (the restorations for one iteration), ``--repeats`` rounds
that alternate which goes first; each row reports the best of the rounds. The restoration rows
force each mode.
"""
from __future__ import annotations

import argparse

import torch
from _common import best_times, print_table, write_json

import alr
import alr.solver
from alr.physics import Denoising
from alr.critic import Regularizer
from alr.solver import Problem


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

    def restore_in(sequential: tuple[str, ...], y: torch.Tensor, iters: int) -> None:
        """The L-BFGS restoration of the batch ``y``, its images in lockstep or (``sequential``) one by one."""
        alr.solver.SEQUENTIAL_DEVICES = sequential
        alr.solver.minimize(y, None, model, 0.01, method="lbfgs", iters=iters, device=dev)

    rows, default = [], alr.solver.SEQUENTIAL_DEVICES
    try:
        for size in (int(s) for s in args.sizes.split(",")):
            b = args.batch
            y = torch.rand(b, 1, size, size, generator=torch.Generator().manual_seed(0)).to(dev)
            prob = Problem(y, Denoising(), Regularizer(model), torch.full((b,), 0.01, device=dev))
            energy = {"together": lambda: prob.energy(y),
                      "one_by_one": lambda: [prob.select([i]).energy(y[i:i + 1]) for i in range(b)]}
            for run in energy.values():  # warm-up
                run()
            t = best_times(energy, args.repeats, dev)
            modes = {"together": (), "one_by_one": (dev.type,)}
            for seq in modes.values():  # warm-up: one iteration in each mode
                restore_in(seq, y, 1)
            r = best_times({k: lambda seq=seq: restore_in(seq, y, args.iters) for k, seq in modes.items()},
                           args.repeats, dev)
            for what, m in (("energy + gradient", t), (f"restore (L-BFGS {args.iters})", r)):
                rows.append({"size": size, "batch": b, "what": what, "ms_per_image_together": 1e3 * m["together"] / b,
                             "ms_per_image_one_by_one": 1e3 * m["one_by_one"] / b,
                             "together_speedup": m["one_by_one"] / m["together"]})
    finally:
        alr.solver.SEQUENTIAL_DEVICES = default
    print_table("batched_energy: the images of a batch evaluated together vs one by one", rows)
    write_json("batched_energy", rows, {"threads": torch.get_num_threads()})


if __name__ == "__main__":
    main()
