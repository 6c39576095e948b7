#!/usr/bin/env python3
"""The training-side validation score of models, as ``alr train --val-images 8 --val-every N`` computes it.

For each model: the mean PSNR restoring the centre crops 96x96 of the last ``--images`` images of
``$ALR_DATA/FOLDER`` (``--folder``: ``bsd400``, or ``cbsd432`` read in gray as the LAR chain holds out; noise ``--sigma`` seeded 1, not clipped) with the model's own solver, at the
best lambda of a line search (:class:`alr.calibration.Validator`). So a critic trained with
checkpoint selection and a shipped model can be compared on the same held-out crops.

    PYTHONPATH=src python research/scripts/probe_validation.py gray runs/lar_cpu/lar.safetensors
    PYTHONPATH=src python research/scripts/probe_validation.py --folder cbsd432 gray runs/lar_chain/lar.safetensors
"""
import argparse
import os

from alr.calibration import TRAIN_CAL_CROP, Validator, center_crops
from alr.images import list_images
from alr.pretrained import load


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
    files = list_images(os.path.join(args.data, args.folder))[-args.images:]
    x = center_crops(files, 1, TRAIN_CAL_CROP)
    for name in args.models:
        score, lam = Validator(x, args.sigma)(load(name))
        print(f"{name}: {score:.2f} dB at lambda {lam:.3g} ({len(files)} held-out {args.folder} crops, sigma {args.sigma:g})",
              flush=True)


if __name__ == "__main__":
    main()
