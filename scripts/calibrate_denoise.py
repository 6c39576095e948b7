"""Denoising lambda grid for a shipped model (the calibration recorded in docs/calibration_denoise.log).

    python scripts/calibrate_denoise.py gray 0.1,0.2,0.4 0.006,0.012,0.025 [iters]

lambda values are given for sigma 0.1 and scaled by sigma / 0.1; 4 crops 96x96 of set12 (gray) or
cbsd432 (color), noise seed 1, L-BFGS.
"""
import os
import torch, time, json, sys, alr
ROOT = os.environ["ALR_DATA"]
from alr.images import read_image, list_images
from alr.data import add_noise
from alr.metrics import psnr
torch.set_num_threads(1)
name = sys.argv[1]; sig = [float(v) for v in sys.argv[2].split(',')]; lams = [float(v) for v in sys.argv[3].split(',')]
m = alr.load(f'{name}')
folder = f"{ROOT}/set12" if m.in_channels == 1 else f"{ROOT}/cbsd432"
files = list_images(folder)[:4]
x = torch.cat([read_image(f, m.in_channels)[..., 64:160, 64:160] for f in files])
for s in sig:
    y = add_noise(x, s, seed=1)
    for lam in lams:
        xh, _ = alr.restore(y, None, m, lam * s / 0.1, method='lbfgs', iters=int(sys.argv[4]) if len(sys.argv) > 4 else 50)
        print(name, s, round(lam * s / 0.1, 5), round(psnr(xh, x).mean().item(), 2), flush=True)
