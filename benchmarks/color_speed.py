"""Wall time and PSNR per CBSD68 image: the default colour denoising vs the `color` model vs CBM3D, same inputs.

    python benchmarks/color_speed.py [--images N] [--sigma S] [--data DIR]

Outside sigma 0.084-0.14 (``alr.settings.RGB_BAND``) the default (``alr.restore`` without a
model) denoises a colour image with ``gray`` in the opponent colour space (three gray solves);
``color`` on RGB is one solve of a three-channel critic. The ratio to CBM3D's time says what the default costs.
"""
from __future__ import annotations

import argparse
import time

import torch
from _common import mean_rows, print_table, write_json

import alr
from alr.bench.baselines import bm3d_restore
from alr.data import add_noise
from alr.images import data_root, list_images, read_image
from alr.metrics import psnr


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", type=int, default=2)
    ap.add_argument("--sigma", type=float, default=0.2)
    ap.add_argument("--data", default=None)
    args = ap.parse_args()
    files = list_images(data_root(args.data) / "cbsd68")[: args.images]
    methods = {"alr default (auto colour space)": lambda y: alr.restore(y, sigma=args.sigma),
               "alr color model, RGB": lambda y: alr.restore(y, "color", sigma=args.sigma, color_space="rgb"),
               "cbm3d": lambda y: bm3d_restore(y, args.sigma)}
    acc: dict[str, list[tuple[float, float]]] = {m: [] for m in methods}
    for i, f in enumerate(files):
        x = read_image(f, 3)
        y = add_noise(x, args.sigma, seed=i)
        for name, run in methods.items():
            t0 = time.perf_counter()
            xh = run(y)
            acc[name].append((time.perf_counter() - t0, float(psnr(xh, x))))
    rows = mean_rows(acc, "cbm3d", "time_vs_cbm3d")
    print_table(f"color_speed: {len(files)} CBSD68 images, sigma {args.sigma:g}", rows)
    write_json("color_speed", rows, {"images": [f.name for f in files], "sigma": args.sigma,
                                     "threads": torch.get_num_threads()})


if __name__ == "__main__":
    main()
