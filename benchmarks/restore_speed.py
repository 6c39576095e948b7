"""Wall time and PSNR per BSD68 image (sigma 0.1): ALR's default restore (``alr.restore``, the model's
table), fixed solver settings (a long Adam schedule, 20 L-BFGS iterations) and BM3D, same inputs.

    python benchmarks/restore_speed.py [--images N] [--data DIR] [--short]

The row "lar architecture" times the same 20 L-BFGS iterations with a critic of the comparative
study's architecture (``alr train --recipe lar``: 128-64-64-64-32-32, SiLU, 15x15 patches) of
random weights, so the cost of the wider critic per gradient is measured (its PSNR means nothing);
``--short`` runs only the default restore, 20 L-BFGS iterations, that row and BM3D. ``--model``: a shipped
name or a model file (the critic to time).

The lambda is the model's table value for the default (reflect) boundary; the "valid boundary"
row shows what the paper's R (inner patches only) gives with it. Also reports, for each ALR variant, the iteration after which the PSNR of the iterates stays
within 0.05 dB of the final PSNR.
"""
from __future__ import annotations

import argparse
import os
import time

import torch
from _common import mean_rows, print_table, write_json

import alr
from alr.data import add_noise
from alr.images import data_root, list_images, read_image
from alr.metrics import psnr


def first_within(trace: list[float], final: float, tol: float = 0.05) -> int:
    """1-based iteration after which the PSNR stays within ``tol`` dB of ``final``."""
    k = len(trace)
    while k > 0 and abs(trace[k - 1] - final) <= tol:
        k -= 1
    return k + 1


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", type=int, default=2)
    ap.add_argument("--data", default=None)
    ap.add_argument("--model", default="gray")
    ap.add_argument("--short", action="store_true", help="only the default restore, 20 L-BFGS iterations, the lar architecture and BM3D")
    args = ap.parse_args()
    model = alr.load(args.model)
    torch.manual_seed(0)
    lar = alr.PatchCritic(widths=[128, 64, 64, 64, 32, 32], activation="silu")
    lam = alr.lam_for(model, "denoise", 0.1)
    files = list_images(data_root(args.data) / "bsd68")[: args.images]
    variants = {"alr lbfgs 20": dict(method="lbfgs", iters=20),
                "lar architecture, random weights: lbfgs 20": dict(method="lbfgs", iters=20, model=lar)}
    if not args.short:
        # torch.compile compiles once per shape: warm it up outside the timings (about 25 s on CPU)
        alr.solver.minimize(add_noise(read_image(files[0]), 0.1, seed=0), None, model, lam, method="lbfgs", iters=1,
                            compile=True)
        variants = {"alr adam 300 (lr 0.01 -> 1e-4)": dict(method="adam", iters=300, lr0=0.01, lr1=1e-4), **variants,
                    "alr lbfgs 20 bf16": dict(method="lbfgs", iters=20, precision="bf16"),
                    "alr lbfgs 20 torch.compile": dict(method="lbfgs", iters=20, compile=True),
                    "alr lbfgs 20 valid boundary (paper's R)": dict(method="lbfgs", iters=20, boundary="valid")}
    rows = []
    restore_row = "alr.restore (the default: the model's table)"
    acc = {k: [] for k in [restore_row, *variants, "bm3d"]}
    traces: dict[str, list[list[float]]] = {}
    for f in files:
        x = read_image(f)
        y = add_noise(x, 0.1, seed=0)
        t0 = time.perf_counter()  # what `alr restore --sigma 0.1` runs: the table's solver, iterations and shaping
        xh = alr.restore(y, model, sigma=0.1, device="cpu")
        acc[restore_row].append((time.perf_counter() - t0, float(psnr(xh, x))))
        for name, kw in variants.items():
            tr: list[float] = []  # PSNR of every iterate (about 1 ms each, inside the timing)
            t0 = time.perf_counter()
            kw = {"model": model, **kw}
            xh, _ = alr.solver.minimize(y, None, kw.pop("model"), lam,
                                        callback=lambda k, z: tr.append(float(psnr(z.clamp(0, 1), x))), **kw)
            acc[name].append((time.perf_counter() - t0, float(psnr(xh, x))))
            traces.setdefault(name, []).append(tr)
        from alr.bench.baselines import bm3d_restore
        t0 = time.perf_counter()
        xb = bm3d_restore(y, 0.1)
        acc["bm3d"].append((time.perf_counter() - t0, float(psnr(xb, x))))
    for row in mean_rows(acc, "bm3d", "time_vs_bm3d"):
        if row["method"] in traces:
            t = traces[row["method"]]
            row["iters_to_0.05dB (max over images)"] = max(first_within(tr, tr[-1]) for tr in t)
            row["gradient evaluations"] = max(len(tr) for tr in t)
        rows.append(row)
    print_table(f"restore_speed: {len(files)} BSD68 images, sigma 0.1, lam {lam:.4g}", rows)
    write_json("restore_speed", rows, {"images": [f.name for f in files], "threads": torch.get_num_threads(),
                                       "env_threads": os.environ.get("OMP_NUM_THREADS")})


if __name__ == "__main__":
    main()
