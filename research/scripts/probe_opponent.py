"""The gray critic in an opponent colour space (CBM3D's idea) against the colour critic.

`alr.solver.restore_opponent` (luminance and two chroma channels of `alr.images.to_opponent`, each
denoised by `gray` at its own noise level with the iterations of the RGB level; the chroma at
--chroma-lambda (default 8, the shipped CHROMA_LAMBDA) times its table's lambda)
beside `color` and beside `gray` on each RGB channel (`--per-channel`), on centre crops 128x128 of the first 8 cbsd432 images (training side), noise seeded,
not clipped; mean PSNR. One CPU thread, about 5-10 minutes per noise level.

    PYTHONPATH=src python research/scripts/probe_opponent.py [--chroma-lambda 4,8] [--sigmas 0.1,0.2]
"""
import argparse

import torch

import alr
from alr.images import data_root, list_images, read_image
from alr.metrics import psnr
from alr.solver import restore_opponent

p = argparse.ArgumentParser()
p.add_argument("--data", default=None)
p.add_argument("--sigmas", default="0.02,0.05,0.07,0.1,0.2,0.4")
p.add_argument("--chroma-lambda", default="8", help="comma-separated factors")
p.add_argument("--images", type=int, default=8)
args = p.parse_args()
torch.set_num_threads(1)
crops = []
for f in list_images(data_root(args.data) / "cbsd432")[:args.images]:
    x = read_image(f, channels=3)
    h, w = x.shape[-2:]
    crops.append(x[..., (h - 128) // 2:(h + 128) // 2, (w - 128) // 2:(w + 128) // 2])
x = torch.cat(crops)
for sigma in (float(s) for s in args.sigmas.split(",")):
    y = x + sigma * torch.randn(x.shape, generator=torch.Generator().manual_seed(1))
    out = {"color": alr.restore(y, model="color", sigma=sigma),
           "gray on each RGB channel": alr.restore(y, model="gray", sigma=sigma, per_channel=True, color_space="rgb")}
    for factor in (float(f) for f in args.chroma_lambda.split(",")):
        out[f"gray, opponent space, chroma lambda x{factor:g}"] = restore_opponent(y, "gray", sigma,
                                                                                   chroma_lambda=factor)
    print(f"sigma {sigma:g}: " + ", ".join(f"{k} {float(psnr(v, x).mean()):.2f}" for k, v in out.items()),
          flush=True)
