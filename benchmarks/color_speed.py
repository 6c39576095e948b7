"""Wall time and PSNR per CBSD68 image: the default colour denoising vs the `color` model vs CBM3D, same inputs.

    python benchmarks/color_speed.py [--images N] [--sigma S] [--data DIR]

Outside sigma 0.084-0.14 (``alr.settings.RGB_BAND``) the default (``alr.restore`` without a
model) denoises a colour image with ``gray`` in the opponent colour space (three gray solves);
``color`` on RGB is one solve of a three-channel critic. The ratio to CBM3D's time says what the default costs.
The models are loaded once, and every method runs once on the first image of each size before the
timings (the ALR solves for one iteration), so no row pays a model load or a cold first call.
"""
from __future__ import annotations

import argparse

import torch
from _common import Method, bm3d, compare, dataset, default_restore, mean_rows, print_table, warm_up, write_json

import alr
from alr.data import add_noise
from alr.device import resolve_device
from alr.images import read_image


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", type=int, default=2)
    ap.add_argument("--sigma", type=float, default=0.2)
    ap.add_argument("--data", default=None)
    args = ap.parse_args()
    files = dataset("cbsd68", args.data, args.images)
    clean = [read_image(f, 3) for f in files]
    noisy = [add_noise(x, args.sigma, seed=i) for i, x in enumerate(clean)]
    default, color = default_restore(), alr.load("color")
    methods: dict[str, Method] = {
        "alr default (auto colour space)": lambda y, iters=None: default(y, args.sigma, iters=iters),
        "alr color model, RGB": lambda y, iters=None: alr.restore(y, color, sigma=args.sigma, color_space="rgb",
                                                                  iters=iters),
        "cbm3d": bm3d(args.sigma)}
    warm_up(methods, noisy)
    acc: dict[str, list[tuple[float, float]]] = {}
    for x, y in zip(clean, noisy):
        compare(methods, x, y, acc, resolve_device(None))  # where alr.restore solves by default
    rows = mean_rows(acc, "cbm3d", "time_vs_cbm3d")
    print_table(f"color_speed: {len(files)} CBSD68 images, sigma {args.sigma:g}", rows)
    write_json("color_speed", rows, {"images": [f.name for f in files], "sigma": args.sigma,
                                     "threads": torch.get_num_threads()})


if __name__ == "__main__":
    main()
