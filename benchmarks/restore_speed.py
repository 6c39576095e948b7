"""Wall time and PSNR per BSD68 image (sigma 0.1): ALR's default restore (``alr.restore``, the model's
table), fixed solver settings (a long Adam schedule, 20 L-BFGS iterations) and BM3D, same inputs.

    python benchmarks/restore_speed.py [--images N] [--data DIR] [--short]

The row "lar architecture" times the same 20 L-BFGS iterations with a critic of the comparative
study's architecture (``alr train --recipe lar``: 128-64-64-64-32-32, SiLU, 15x15 patches) of
random weights, so the cost of the wider critic per gradient is measured (its PSNR means nothing);
``--short`` runs only the default restore, 20 L-BFGS iterations, that row and BM3D. ``--model``: a shipped
name or a model file (the critic to time).

Every ALR row minimises the energy of the default restore (:func:`alr.settings.resolve` at sigma 0.1:
the table's lambda, boundary and score shaping, concavity and score_ref) under its activation budget;
the variants change only the solver, precision or compilation, except the "valid boundary" row, which
shows what the paper's R (inner patches only) gives with that lambda. Before the timings every row
runs once on the first image of each size (the ALR solves for one iteration: model set-up, imports
and torch.compile's compilation stay out). Also reports, for each ALR variant, the iteration after
which the PSNR of the iterates stays within 0.05 dB of the final PSNR.
"""
from __future__ import annotations

import argparse
import os
from typing import Callable

import torch
from _common import Method, bm3d, dataset, mean_rows, print_table, timed, warm_up, write_json

import alr
from alr.data import add_noise
from alr.images import read_image
from alr.metrics import psnr
from alr.settings import resolve


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
    files = dataset("bsd68", args.data, args.images)
    clean = [read_image(f) for f in files]
    noisy = [add_noise(x, 0.1, seed=0) for x in clean]
    # the energy and activation budget of the default restore: the table's lambda and shaping
    s = resolve(model, noisy[0], "denoise", 0.1, device="cpu")
    energy = {"boundary": s.boundary, "concavity": s.concavity, "score_ref": s.score_ref, "max_memory": s.max_memory,
              "device": "cpu"}
    variants = {"alr lbfgs 20": dict(method="lbfgs", iters=20),
                "lar architecture, random weights: lbfgs 20": dict(method="lbfgs", iters=20, model=lar)}
    if not args.short:
        variants = {"alr adam 300 (lr 0.01 -> 1e-4)": dict(method="adam", iters=300, lr0=0.01, lr1=1e-4), **variants,
                    "alr lbfgs 20 bf16": dict(method="lbfgs", iters=20, precision="bf16"),
                    "alr lbfgs 20 torch.compile": dict(method="lbfgs", iters=20, compile=True),
                    "alr lbfgs 20 valid boundary (paper's R)": dict(method="lbfgs", iters=20, boundary="valid")}

    def variant(kw: dict) -> Callable[..., torch.Tensor]:
        """A method (``_common.Method``) that also takes a ``callback`` of the iterates."""
        critic, kw = kw.get("model", model), {**energy, **{k: v for k, v in kw.items() if k != "model"}}
        return lambda y, iters=None, callback=None: alr.solver.minimize(
            y, None, critic, s.lam, callback=callback, **{**kw, "iters": iters or kw["iters"]})[0]

    restore_row = "alr.restore (the default: the model's table)"
    # what `alr restore --sigma 0.1` runs: the table's solver, iterations and shaping
    methods: dict[str, Method] = {restore_row: lambda y, iters=None: alr.restore(y, model, sigma=0.1, iters=iters,
                                                                                 device="cpu"),
                                  **{name: variant(kw) for name, kw in variants.items()}, "bm3d": bm3d(0.1)}
    warm_up(methods, noisy)  # torch.compile compiles once per shape: about 25 s on CPU
    acc: dict[str, list[tuple[float, float]]] = {k: [] for k in methods}
    traces: dict[str, list[list[float]]] = {k: [] for k in variants}
    for x, y in zip(clean, noisy):
        for name, run in methods.items():
            kept: list[torch.Tensor] = []  # every iterate, copied inside the timing; its PSNR after it
            kw = {"callback": lambda k, z: kept.append(z.detach().clone())} if name in variants else {}
            dt, xh = timed(lambda: run(y, None, **kw))
            acc[name].append((dt, float(psnr(xh, x))))
            if name in variants:
                traces[name].append([float(psnr(z.clamp(0, 1), x)) for z in kept])
    rows = []
    for row in mean_rows(acc, "bm3d", "time_vs_bm3d"):
        if row["method"] in traces:
            t = traces[row["method"]]
            row["iters_to_0.05dB (max over images)"] = max(first_within(tr, tr[-1]) for tr in t)
            row["gradient evaluations"] = max(len(tr) for tr in t)
        rows.append(row)
    print_table(f"restore_speed: {len(files)} BSD68 images, sigma 0.1, lam {s.lam:.4g}, shaping {s.concavity:g}", rows)
    write_json("restore_speed", rows, {"images": [f.name for f in files], "threads": torch.get_num_threads(),
                                       "env_threads": os.environ.get("OMP_NUM_THREADS")})


if __name__ == "__main__":
    main()
