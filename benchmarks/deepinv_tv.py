"""Our TV baseline beside DeepInverse's own TV, on the same inputs (runs in .venv-deepinv only).

Both solve ``min_x 1/2 ||A x - y||^2 + lam_tv TV(x)`` (isotropic TV, forward differences with
Neumann boundary in both libraries) with the bench's ``lam_tv`` (:func:`alr.bench.experiments.tv_lambda`):
ours by :func:`alr.bench.baselines.tv_restore` (Condat-Vu primal-dual, the bench's iterations), DeepInverse's
by its ``TVDenoiser`` (denoising: the exact proximal operator, solved to 1e-8) and by ``optim_builder("PGD")``
with ``TVPrior`` and ``L2`` (deblurring, circular Gaussian blur std 1.6, step 1/||A||^2). The energy of each
result, computed with DeepInverse's ``TVPrior.fn``, says which is nearer the common minimiser; for
deblurring ours is also run 10 times longer (``alr_tv_x10_*``), to see whether it reaches DeepInverse's.

    make test-deepinv   # builds .venv-deepinv once
    ALR_DATA=/path/to/data .venv-deepinv/bin/python benchmarks/deepinv_tv.py [--crop 128] [--images 2]
"""
from __future__ import annotations

import argparse
import time

from _common import dataset, mean_of, print_table, write_json

import deepinv as dinv
import torch

from alr.bench.baselines import tv_restore
from alr.bench.experiments import TV_ITERS, tv_lambda
from alr.calibration import center_crop
from alr.data import add_noise
from alr.images import read_image
from alr.integrations.deepinv import to_deepinv
from alr.metrics import psnr
from alr.physics import Blur, Denoising, gaussian_kernel


def energy(x: torch.Tensor, y: torch.Tensor, op, lam_tv: float) -> float:
    """1/2 ||A x - y||^2 + lam_tv TV(x), with DeepInverse's TV."""
    return float(0.5 * (op.A(x) - y).pow(2).sum() + lam_tv * dinv.optim.TVPrior().fn(x).sum())


def theirs(y: torch.Tensor, op, lam_tv: float, iters: int) -> torch.Tensor:
    if isinstance(op, Denoising):
        return dinv.models.TVDenoiser(crit=1e-8, n_it_max=iters)(y, ths=lam_tv)
    solver = dinv.optim.optim_builder("PGD", prior=dinv.optim.TVPrior(n_it_max=100), data_fidelity=dinv.optim.L2(),
                                      max_iter=iters, early_stop=False,
                                      params_algo={"stepsize": 1.0 / op.lipschitz(), "lambda": lam_tv})
    return solver(y, to_deepinv(op))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=None, help="data folder (default: ALR_DATA)")
    ap.add_argument("--crop", type=int, default=128, help="centre crop side")
    ap.add_argument("--images", type=int, default=2, help="first N images of set12 and of bsd68")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    torch.manual_seed(args.seed)
    files = [f for s in ("set12", "bsd68") for f in dataset(s, args.data, args.images)]
    cases = [("denoise", 0.05, Denoising()), ("denoise", 0.1, Denoising()), ("denoise", 0.2, Denoising()),
             ("deblur", 0.01, Blur(gaussian_kernel(1.6)))]
    rows = []
    for task, sigma, op in cases:
        lam_tv, iters = tv_lambda(sigma, task), TV_ITERS[task]
        for i, f in enumerate(files):
            x = center_crop(read_image(f, 1), args.crop)
            y = add_noise(op.A(x), sigma, seed=args.seed + i)
            t0 = time.perf_counter()
            a = tv_restore(y, op, lam_tv, iters=iters)
            t1 = time.perf_counter()
            with torch.no_grad():
                b = theirs(y, op, lam_tv, iters if task != "denoise" else 1000).clamp(0, 1)
            t2 = time.perf_counter()
            pa, pb = float(psnr(a, x)), float(psnr(b, x))
            rows.append({"task": task, "sigma": sigma, "image": f"{f.parent.name}/{f.stem}", "lam_tv": lam_tv,
                         "alr_tv_psnr": pa, "deepinv_tv_psnr": pb, "diff_db": pa - pb,
                         "max_abs_pixel_diff": float((a - b).abs().max()),
                         "alr_energy": energy(a, y, op, lam_tv), "deepinv_energy": energy(b, y, op, lam_tv),
                         "alr_s": t1 - t0, "deepinv_s": t2 - t1})
            if task != "denoise":
                long = tv_restore(y, op, lam_tv, iters=10 * iters)
                rows[-1].update(alr_tv_x10_psnr=float(psnr(long, x)), alr_tv_x10_energy=energy(long, y, op, lam_tv))
            print(rows[-1], flush=True)
    for task, sigma, _ in cases:
        sel = [r for r in rows if r["task"] == task and r["sigma"] == sigma]
        rows.append({"task": task, "sigma": sigma, "image": "mean",
                     **mean_of(sel, ("alr_tv_psnr", "deepinv_tv_psnr", "diff_db", "max_abs_pixel_diff"))})
    print_table("TV: alr.bench.baselines.tv_restore vs DeepInverse (same inputs, same lam_tv)", rows)
    write_json("deepinv_tv", rows, {"crop": args.crop, "images": args.images, "deepinv": dinv.__version__})


if __name__ == "__main__":
    main()
