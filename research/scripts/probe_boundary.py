"""The boundary of R on training-side images (issue 26): `reflect`, `replicate`, `valid`.

The shipped `gray` restores the first 8 images of bsd400 (full 180x180, where the border band is a
large share of the pixels) at sigma 0.1 and 0.2 (noise seeded, not clipped), with its own solver,
at its table's lambda and at 0.8x / 1.25x of it (the tables were calibrated with `reflect`), and
prints the mean PSNR of each. One CPU thread, about 25 minutes.

    PYTHONPATH=src python research/scripts/probe_boundary.py          # data folder: $ALR_DATA
"""
import sys

import torch

import alr
from alr.critic import BOUNDARIES
from alr.images import data_root, list_images, read_image
from alr.metrics import psnr
from alr.settings import resolve

torch.set_num_threads(1)
folder = data_root(sys.argv[1] if len(sys.argv) > 1 else None) / "bsd400"
xs = torch.cat([read_image(f, channels=1) for f in list_images(folder)[:8]])
model = alr.load("gray")
for sigma in (0.1, 0.2):
    y = xs + sigma * torch.randn(xs.shape, generator=torch.Generator().manual_seed(0))
    lam = resolve(model, y, sigma=sigma).lam
    for boundary in BOUNDARIES:
        row = [float(psnr(alr.restore(y, model=model, sigma=sigma, boundary=boundary, lam=lam * f), xs).mean())
               for f in (0.8, 1.0, 1.25)]
        print(f"sigma {sigma} {boundary:9s} lambda x0.8 / x1 / x1.25: " + " / ".join(f"{v:.2f}" for v in row),
              flush=True)
