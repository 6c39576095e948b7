"""Wall time and PSNR per BSD68 image (sigma 0.1): ALR paper schedule vs ALR default vs BM3D, same inputs.

    python benchmarks/restore_speed.py [--images N] [--data DIR]

Also reports, for each ALR variant, the first iteration whose PSNR is within
0.05 dB of its final PSNR (computed from the iterates).
"""
from __future__ import annotations

import argparse
import os
import time

import torch
from _common import print_table, write_json

import alr
from alr.data import add_noise
from alr.images import data_root, list_images, read_image
from alr.metrics import psnr
from alr.solver import METHODS  # noqa: F401


def psnr_trace(y, x, model, lam, method, iters, **kw):
    """PSNR of the iterate after k iterations, for k along the run (re-solves with growing iters)."""
    out = []
    for k in sorted({max(1, int(iters * f)) for f in (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)}):
        xh, _ = alr.restore(y, None, model, lam, method=method, iters=k, **kw)
        out.append((k, float(psnr(xh, x))))
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", type=int, default=3)
    ap.add_argument("--data", default=None)
    ap.add_argument("--model", default="gray")
    args = ap.parse_args()
    model = alr.load(args.model)
    lam = alr.lam_for(model, "denoise", 0.1)
    files = list_images(data_root(args.data) / "bsd68")[: args.images]
    variants = {"alr adam 300 (paper schedule)": dict(method="adam", iters=300, lr0=0.01, lr1=1e-4),
                "alr lbfgs 40 (default)": dict(method="lbfgs", iters=40)}
    rows = []
    acc = {k: [] for k in list(variants) + ["bm3d"]}
    for f in files:
        x = read_image(f)
        y = add_noise(x, 0.1, seed=0)
        for name, kw in variants.items():
            t0 = time.perf_counter()
            xh, _ = alr.restore(y, None, model, lam, **kw)
            acc[name].append((time.perf_counter() - t0, float(psnr(xh, x))))
        from alr.baselines import bm3d_restore
        t0 = time.perf_counter()
        xb = bm3d_restore(y, 0.1)
        acc["bm3d"].append((time.perf_counter() - t0, float(psnr(xb, x))))
    x = read_image(files[0])
    y = add_noise(x, 0.1, seed=0)
    for name, vals in acc.items():
        row = {"method": name, "seconds_per_image": sum(v[0] for v in vals) / len(vals),
               "psnr": sum(v[1] for v in vals) / len(vals)}
        if name in variants:
            kw = dict(variants[name])
            trace = psnr_trace(y, x, model, lam, kw.pop("method"), kw.pop("iters"), **kw)
            final = trace[-1][1]
            row["iters_to_0.05dB (image 1)"] = next(k for k, p in trace if p >= final - 0.05)
        rows.append(row)
    bm3d_t = rows[-1]["seconds_per_image"]
    for r in rows:
        r["time_vs_bm3d"] = r["seconds_per_image"] / bm3d_t
    print_table(f"restore_speed: {len(files)} BSD68 images, sigma 0.1, lam {lam:.4g}", rows)
    write_json("restore_speed", rows, {"images": [f.name for f in files], "threads": torch.get_num_threads(),
                                       "env_threads": os.environ.get("OMP_NUM_THREADS")})


if __name__ == "__main__":
    main()
