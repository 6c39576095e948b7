"""``alr demo``: restore a noisy sample image with the shipped model.

Uses scikit-image's bundled 'camera' image, adds Gaussian noise of std 0.1
(seeded), restores it with the shipped ``gray`` model and its calibrated
lambda, and writes ``noisy.png``, ``restored.png`` and ``comparison.png``.
If no shipped model is found, a small critic is first trained for about a
minute on scikit-image's other sample images.
"""
from __future__ import annotations

import time
from pathlib import Path

import torch


def _fallback_model(out: Path):
    from skimage import color, data

    from .critic import PatchCritic
    from .data import Degradation, ImageStack, PatchPairs, split_unpaired
    from .train import TrainConfig, train_critic

    ims = [data.moon(), data.text(), data.brick(), (color.rgb2gray(data.astronaut()) * 255).astype("uint8"),
           (color.rgb2gray(data.coffee()) * 255).astype("uint8"), data.grass(), data.gravel()]
    stack = ImageStack([torch.from_numpy(i)[None] for i in ims])
    ci, di = split_unpaired(len(stack), 0)
    pairs = PatchPairs(stack.subset(ci), stack.subset(di), 13, Degradation(0.0, 0.4))
    critic = PatchCritic(width=32)
    train_critic(critic, pairs.sample, TrainConfig(steps=1500, batch_size=64, lr0=1e-3, lr1=1e-5, device="cpu",
                                                   max_seconds=60), out=out / "demo_critic.safetensors")
    critic.meta["lambda"] = {"denoise": {"sigma": [0.1], "lam": [0.006]}}
    return critic


def run_demo(output: str | Path) -> float:
    """Denoise scikit-image's camera (sigma 0.1) into ``output``; returns the restored PSNR (dB)."""
    from skimage import data

    from .data import add_noise
    from .images import figure_panels, write_image
    from .metrics import psnr
    from .pretrained import load, shipped_models
    from .solver import restore

    out = Path(output)
    out.mkdir(parents=True, exist_ok=True)
    x = torch.from_numpy(data.camera()).float()[None, None] / 255
    sigma = 0.1
    y = add_noise(x, sigma, seed=0)
    model = load("gray") if "gray" in shipped_models() else _fallback_model(out)
    t0 = time.perf_counter()
    xh = restore(y, model, sigma=sigma, progress=True)
    dt = time.perf_counter() - t0
    write_image(out / "noisy.png", y)
    write_image(out / "restored.png", xh)
    p_in, p_out = float(psnr(y, x)), float(psnr(xh, x))
    figure_panels(out / "comparison.png", [(f"noisy {p_in:.2f} dB", y), (f"ALR {p_out:.2f} dB", xh), ("clean", x)])
    print(f"camera (512x512), sigma {sigma}: noisy {p_in:.2f} dB -> restored {p_out:.2f} dB in {dt:.1f} s "
          f"; see {out}/comparison.png")
    return p_out
