"""Seconds of one exact value-and-gradient of R (the solver's inner call) under activation budgets,
the whole image (no budget) beside tiles of decreasing size; then whole restores of a BSD68-sized
image under the default budget beside the 1 GiB one.

    python benchmarks/tile_budget.py [--model gray] [--sizes 321x481,1024x1024] [--budgets none,1G,256M,128M,64M]

``321x481`` is a BSD68 image. The default budget of a restore is ``alr.device.memory_budget()``
(a quarter of the available memory, at most 128 MiB on the CPU); the tiles are exact (the same
value and gradient), so only time and memory change. The restores (``alr.restore`` with default
settings: gray at sigma 0.1, and colour at 0.2, which the auto colour space solves as three gray
problems) use crops of scikit-image's camera and astronaut, the models loaded once. Each time is
the mean of ``--repeats`` calls (half as many restores) after one untimed call; ``vs_whole`` is
relative to the whole image (budget ``none``, timed even when ``--budgets`` omits it).
"""
from __future__ import annotations

import argparse

import torch
from _common import default_restore, print_table, seconds_per_call, write_json

import alr
from alr.argtypes import memory
from alr.critic import Regularizer
from alr.data import add_noise
from alr.device import memory_budget


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="gray")
    ap.add_argument("--sizes", default="321x481,1024x1024")
    ap.add_argument("--budgets", default="none,1G,256M,128M,64M")
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    model = alr.load(args.model)
    budgets = args.budgets.split(",")
    budgets = budgets if "none" in budgets else ["none", *budgets]  # the whole image: the reference
    rows = []
    for size in args.sizes.split(","):
        h, w = (int(v) for v in size.split("x"))
        x = torch.rand(1, model.in_channels, h, w, generator=torch.Generator().manual_seed(0))
        timings: dict[str, tuple[int | str, float]] = {}  # budget -> (tile, seconds)
        for budget in budgets:
            reg = Regularizer(model, max_memory=None if budget == "none" else memory(budget))
            dt = seconds_per_call(lambda: reg.value_and_grad(x), args.repeats)
            timings[budget] = (reg.tile_size(x) or "whole", dt)
        rows += [{"image": size, "budget": b, "tile": tile, "seconds": dt, "vs_whole": timings["none"][1] / dt}
                 for b, (tile, dt) in timings.items()]
    print_table(f"tile_budget: value and gradient of R ({args.model})", rows)
    restores = restore_rows(args.repeats)
    print_table("tile_budget: whole restores, default budget vs 1 GiB", restores)
    write_json("tile_budget", rows, {"restores": restores})


def restore_rows(repeats: int) -> list[dict]:
    """Seconds of ``alr.restore`` on 321x481 crops (gray at sigma 0.1, colour at 0.2) under the
    default budget and under 1 GiB, side by side."""
    from skimage import data
    gray = torch.from_numpy(data.camera()[:321, :481]).float()[None, None] / 255
    color = torch.from_numpy(data.astronaut()[:321, :481]).float().permute(2, 0, 1)[None] / 255
    rows, runs, restore = [], max(1, repeats // 2), default_restore()
    for name, clean, sigma in (("gray", gray, 0.1), ("colour (auto: opponent)", color, 0.2)):
        y = add_noise(clean, sigma, seed=0)
        for label, budget in (("default", memory_budget("cpu")), ("1G", float(1 << 30))):
            dt = seconds_per_call(lambda: restore(y, sigma, max_memory=budget, device="cpu"), runs)
            rows.append({"restore": name, "budget": f"{label} ({budget / 2 ** 20:.0f} MiB)", "seconds": dt})
    return rows


if __name__ == "__main__":
    main()
