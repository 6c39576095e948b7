#!/usr/bin/env python3
"""The training-side validation score of models, as ``alr train --val-images 8 --val-every N`` computes it.

For each model: the mean PSNR restoring the centre crops 96x96 of the last ``--images`` images of
``$ALR_DATA/FOLDER`` (``--folder``: ``bsd400``, or ``cbsd432`` read in gray as the LAR chain holds out; noise ``--sigma`` seeded 1, not clipped) with the model's own solver, at the
best lambda of a line search (:class:`alr.calibration.Validator`). So a critic trained with
checkpoint selection and a shipped model can be compared on the same held-out crops.

    PYTHONPATH=src python research/scripts/probe_validation.py gray runs/lar_cpu/lar.safetensors
    PYTHONPATH=src python research/scripts/probe_validation.py --folder cbsd432 gray runs/lar_chain/lar.safetensors
"""
from __future__ import annotations

import argparse
import os

from alr.calibration import TRAIN_CAL_CROP, Validator, center_crops
from alr.images import list_images
from alr.pretrained import load


def held_out_scores(models: list, folder: str = "bsd400", images: int = 8, sigma: float = 0.1,
                    data: str | None = None):
    """Yield ``(model, PSNR, lambda)`` for each model on the held-out crops (module docstring)."""
    files = list_images(os.path.join(data or os.environ["ALR_DATA"], folder))[-images:]
    x = center_crops(files, 1, TRAIN_CAL_CROP)
    for name in models:  # a Validator each: each model's lambda search starts afresh
        yield (name, *Validator(x, sigma)(load(name)))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("models", nargs="+", help="model names or files")
    ap.add_argument("--sigma", type=float, default=0.1)
    ap.add_argument("--images", type=int, default=8, help="the last N images of the folder (alr train --val-images N)")
    ap.add_argument("--folder", default="bsd400", help="the training folder of the data (bsd400; cbsd432 is read in gray)")
    ap.add_argument("--data", default=os.environ.get("ALR_DATA"), help="data folder (default: $ALR_DATA)")
    args = ap.parse_args()
    if not args.data:
        ap.error("give --data or set ALR_DATA")
    for name, score, lam in held_out_scores(args.models, args.folder, args.images, args.sigma, args.data):
        print(f"{name}: {score:.2f} dB at lambda {lam:.3g} ({args.images} held-out {args.folder} crops, sigma {args.sigma:g})",
              flush=True)


if __name__ == "__main__":
    main()
