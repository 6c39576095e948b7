"""PSNR and seconds of a model on set12 at one noise level beside BM3D's, same inputs (noise seeded
per image, not clipped).

    python benchmarks/denoise_set12.py --model runs/cpu.safetensors --sigma 0.1 [--lam 0.006]

Both methods run once on the first image of each size before the timings (the ALR solve for one
iteration); ``seconds`` is ALR's time per image, ``bm3d_seconds`` BM3D's.
"""
from __future__ import annotations

import argparse

from _common import bm3d, compare, dataset, mean_of, print_table, warm_up, write_json

import alr
from alr.data import add_noise
from alr.images import read_image
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
    methods = {"alr": lambda y, iters=None: alr.solver.minimize(y, None, model, lam, method="lbfgs",
                                                                iters=iters or args.iters, boundary=args.boundary)[0],
               "bm3d": bm3d(args.sigma)}
    files = dataset("set12", args.data)
    clean = [read_image(f) for f in files]
    noisy = [add_noise(x, args.sigma, seed=i) for i, x in enumerate(clean)]
    warm_up(methods, noisy)
    acc: dict[str, list[tuple[float, float]]] = {}
    rows = []
    for f, x, y in zip(files, clean, noisy):
        compare(methods, x, y, acc)
        (ta, pa), (tb, pb) = acc["alr"][-1], acc["bm3d"][-1]
        rows.append({"image": f.name, "noisy_psnr": float(psnr(y, x)), "alr_psnr": pa, "seconds": ta,
                     "bm3d_psnr": pb, "bm3d_seconds": tb})
    rows.append({"image": "mean", **mean_of(rows, ("noisy_psnr", "alr_psnr", "seconds", "bm3d_psnr", "bm3d_seconds"))})
    print_table(f"set12 denoising, sigma {args.sigma}, model {args.model}, lam {lam:.4g}", rows)
    write_json("denoise_set12", rows, {"model": args.model, "sigma": args.sigma, "lam": lam,
                                       "boundary": args.boundary})


if __name__ == "__main__":
    main()
