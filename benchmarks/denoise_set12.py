"""PSNR of a model on set12 at one noise level (noise seeded per image, not clipped).

    python benchmarks/denoise_set12.py --model runs/cpu.safetensors --sigma 0.1 [--lam 0.006]
"""
from __future__ import annotations

import argparse
import time

from _common import print_table, write_json

import alr
from alr.data import add_noise
from alr.images import data_root, list_images, read_image
from alr.metrics import psnr


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="gray")
    ap.add_argument("--sigma", type=float, default=0.1)
    ap.add_argument("--lam", type=float, default=None, help="default: the model's table, else 0.006")
    ap.add_argument("--iters", type=int, default=30)
    ap.add_argument("--boundary", default="reflect", choices=("reflect", "valid"))
    ap.add_argument("--data", default=None)
    args = ap.parse_args()
    model = alr.load(args.model)
    try:
        lam = args.lam if args.lam is not None else alr.lam_for(model, "denoise", args.sigma)
    except KeyError:
        lam = 0.006
    rows = []
    for i, f in enumerate(list_images(data_root(args.data) / "set12")):
        x = read_image(f)
        y = add_noise(x, args.sigma, seed=i)
        t0 = time.perf_counter()
        xh, _ = alr.solver.minimize(y, None, model, lam, method="lbfgs", iters=args.iters, boundary=args.boundary)
        rows.append({"image": f.name, "noisy_psnr": float(psnr(y, x)), "alr_psnr": float(psnr(xh, x)),
                     "seconds": time.perf_counter() - t0})
    rows.append({"image": "mean", **{k: sum(r[k] for r in rows) / len(rows)
                                     for k in ("noisy_psnr", "alr_psnr", "seconds")}})
    print_table(f"set12 denoising, sigma {args.sigma}, model {args.model}, lam {lam:.4g}", rows)
    write_json("denoise_set12", rows, {"model": args.model, "sigma": args.sigma, "lam": lam,
                                       "boundary": args.boundary})


if __name__ == "__main__":
    main()
