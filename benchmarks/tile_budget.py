"""Seconds of one exact value-and-gradient of R (the solver's inner call) under activation budgets,
the whole image (no budget) beside tiles of decreasing size.

    python benchmarks/tile_budget.py [--model gray] [--sizes 321x481,1024x1024] [--budgets none,1G,256M,128M,64M]

``321x481`` is a BSD68 image. The default budget of a restore is ``alr.device.memory_budget()``
(a quarter of the available memory, at most 1 GiB); the tiles are exact (the same value and
gradient), so only time and memory change.
"""
from __future__ import annotations

import argparse
import time

import torch
from _common import print_table, write_json

import alr
from alr.argtypes import memory
from alr.critic import Regularizer


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="gray")
    ap.add_argument("--sizes", default="321x481,1024x1024")
    ap.add_argument("--budgets", default="none,1G,256M,128M,64M")
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    model = alr.load(args.model)
    rows = []
    for size in args.sizes.split(","):
        h, w = (int(v) for v in size.split("x"))
        x = torch.rand(1, model.in_channels, h, w, generator=torch.Generator().manual_seed(0))
        base = None
        for budget in args.budgets.split(","):
            reg = Regularizer(model, max_memory=None if budget == "none" else memory(budget))
            reg.value_and_grad(x)  # warm-up
            t0 = time.perf_counter()
            for _ in range(args.repeats):
                reg.value_and_grad(x)
            dt = (time.perf_counter() - t0) / args.repeats
            base = base or dt
            rows.append({"image": size, "budget": budget, "tile": reg.tile_size(x) or "whole",
                         "seconds": dt, "vs_whole": base / dt})
    print_table(f"tile_budget: value and gradient of R ({args.model})", rows)
    write_json("tile_budget", rows)


if __name__ == "__main__":
    main()
