"""Calibrate a shipped model's lambda tables on training-side images and write them into it.

    python scripts/calibrate.py gray  [--write]   # 6 crops 160x160 of set12
    python scripts/calibrate.py color [--write]   # 6 crops 160x160 of cbsd432

For every task and noise level: a log-scale line search on lambda (factor 2, then sqrt 2)
maximising the mean PSNR of the model's default solver (its ``solver`` metadata: L-BFGS,
20 iterations, reflect boundary), noise seed 1. Prints every evaluation (the log kept in
docs/calibration_<model>.log) and, with --write, stores the tables in the model file.
Never uses bsd68 / cbsd68.
"""
import argparse
import json
import math
import os
import sys
from pathlib import Path

import torch

import alr
from alr.data import add_noise
from alr.images import list_images, read_image
from alr.metrics import psnr
from alr.physics import Blur, Denoising, Downsampling, Inpainting, gaussian_kernel, random_mask
from alr.pretrained import resolve, solver_options

CROP = 160
SOLVER = {"method": "lbfgs", "iters": 20, "boundary": "reflect"}
# task -> (noise levels, physics factory, starting lambda at each level)
TASKS = {
    "denoise": ([0.05, 0.1, 0.2, 0.3, 0.4], lambda: Denoising(), [0.004, 0.01, 0.035, 0.07, 0.14]),
    "deblur": ([0.01, 0.03], lambda: Blur(gaussian_kernel(1.6)), [2e-4, 6e-4]),
    "inpaint": ([0.01], lambda: Inpainting(random_mask((CROP, CROP), 0.5, 1)), [5e-4]),
    "sr": ([0.01], lambda: Downsampling(2), [2e-4]),
}


def score(model, x, physics, sigma, lam) -> float:
    y = add_noise(physics.A(x), sigma, seed=1)
    xh, _ = alr.restore(y, physics, model, lam, **SOLVER)
    return float(psnr(xh, x).mean())


def line_search(f, lam0: float) -> tuple[float, float]:
    """Maximise f over log(lam): walk by factor 2 while it improves, then try sqrt(2) steps."""
    seen = {}

    def ev(lam):
        key = round(math.log2(lam) * 2)
        if key not in seen:
            seen[key] = (lam, f(lam))
        return seen[key][1]

    best = lam0
    for factor in (2.0, math.sqrt(2.0)):
        for direction in (factor, 1 / factor):
            while ev(best * direction) > ev(best):
                best *= direction
    return best, ev(best)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model", choices=["gray", "color"])
    ap.add_argument("--tasks", default=",".join(TASKS))
    ap.add_argument("--write", action="store_true", help="store the tables in the model file")
    args = ap.parse_args()
    torch.set_num_threads(int(os.environ.get("ALR_THREADS", "1")))
    model = alr.load(args.model)
    root = Path(os.environ["ALR_DATA"])
    folder = root / ("set12" if model.in_channels == 1 else "cbsd432")
    crops = []
    for f in list_images(folder)[:6]:
        x = read_image(f, model.in_channels)
        h, w = x.shape[-2:]
        crops.append(x[..., (h - CROP) // 2:(h - CROP) // 2 + CROP, (w - CROP) // 2:(w - CROP) // 2 + CROP])
    x = torch.cat(crops)
    tables = {}
    for task in args.tasks.split(","):
        sigmas, make, starts = TASKS[task]
        lams = []
        for sigma, lam0 in zip(sigmas, starts):
            physics = make()

            def f(lam, physics=physics, sigma=sigma):
                p = score(model, x, physics, sigma, lam)
                print(f"{args.model} {task} sigma={sigma} lam={lam:.3g} psnr={p:.3f}", flush=True)
                return p

            best, p = line_search(f, lam0)
            print(f"{args.model} {task} sigma={sigma} BEST lam={best:.3g} psnr={p:.3f}", flush=True)
            lams.append(float(f"{best:.3g}"))
        tables[task] = {"sigma": sigmas, "lam": lams}
    print(json.dumps(tables))
    if args.write:
        path = resolve(args.model)
        m = alr.load(path)
        m.meta["lambda"] = {**m.meta.get("lambda", {}), **tables}
        m.meta["solver"] = {"method": SOLVER["method"], "options": {k: v for k, v in SOLVER.items() if k != "method"}}
        m.meta["lambda_calibration"] = (f"scripts/calibrate.py: 6 crops {CROP}x{CROP} of {folder.name}, noise seed 1, "
                                        "default solver, log line search")
        m.save(path)
        assert solver_options(alr.load(path))["boundary"] == "reflect"
        print("written to", path, file=sys.stderr)


if __name__ == "__main__":
    main()
