#!/usr/bin/env python3
"""Does a larger GMM close our EPLL's gap to the paper's EPLL row? EPLL denoising of the first N BSD68
images (the noisy inputs of `alr bench table2`, seeded per image) with a GMM of K components fitted on
P bsd400 patches, beside the shipped 20-component GMM on the same inputs.

    python research/scripts/probe_epll.py --k 100 --patches 300000 --sigma 0.1 --max-images 20 -o runs/epll_k100

Writes the GMM (OUT/gmm.safetensors, reused when present) and OUT/per_image.csv; prints the means.
"""
import argparse
import csv
import time
from pathlib import Path

from alr.bench.baselines import GMM, epll_restore, fit_gmm_from_folder
from alr.bench.experiments import EPLL_DIR, _images, _seed
from alr.data import add_noise
from alr.images import data_root
from alr.metrics import psnr
from alr.physics import Denoising

p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
p.add_argument("--k", type=int, default=100)
p.add_argument("--patches", type=int, default=300000)
p.add_argument("--sigma", type=float, default=0.1)
p.add_argument("--protocol", choices=("paper", "standard"), default="paper")
p.add_argument("--max-images", type=int, default=20)
p.add_argument("-o", "--out", required=True)
args = p.parse_args()
out = Path(args.out)
out.mkdir(parents=True, exist_ok=True)
root = data_root()
gmm_file = out / "gmm.safetensors"
t0 = time.perf_counter()
big = GMM.load(gmm_file) if gmm_file.is_file() else \
    fit_gmm_from_folder(root / "bsd400", 1, gmm_file, n_patches=args.patches, k=args.k)
print(f"GMM: {big.weights.numel()} components ({time.perf_counter() - t0:.0f} s)", flush=True)
shipped = GMM.load(EPLL_DIR / "epll_gmm_1ch.safetensors")
rows = []
for name, x in _images(root / "bsd68", 1, False, args.max_images):
    y = add_noise(x, args.sigma, seed=_seed(name, args.sigma, 0), clip=args.protocol == "paper")
    row = {"image": name, "sigma": args.sigma, "protocol": args.protocol}
    for label, gmm in (("shipped", shipped), (f"k{args.k}", big)):
        t = time.perf_counter()
        row[label] = float(psnr(epll_restore(y, Denoising(), args.sigma, gmm), x))
        row[f"{label}_seconds"] = time.perf_counter() - t
    rows.append(row)
    print(name, *(f"{k} {v:.2f}" for k, v in row.items() if isinstance(v, float) and k != "sigma"), flush=True)
    with open(out / "per_image.csv", "w", newline="") as f:  # rewritten after every image
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
n = len(rows)
for label in ("shipped", f"k{args.k}"):
    print(f"{label}: {sum(r[label] for r in rows) / n:.2f} dB, "
          f"{sum(r[label + '_seconds'] for r in rows) / n:.1f} s per image ({n} images)")
