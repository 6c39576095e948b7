#!/usr/bin/env python3
"""Probe: does restoring on a CUDA device give the CPU's answer?

PyTorch lets cuDNN run float32 convolutions in TF32 (10-bit mantissa) by default. This probe
restores the same noisy crop (scikit-image's camera, 256x256, sigma 0.1, seed 0) with the shipped
``gray`` on the CPU and on the GPU with TF32 allowed and forbidden, and prints the largest pixel
difference to the CPU result, the PSNR of each, and the relative error of one gradient of R.

    python research/scripts/probe_gpu_precision.py        # needs a CUDA device
"""
import torch
from skimage import data

import alr
from alr.critic import Regularizer
from alr.data import add_noise
from alr.metrics import psnr
from alr.pretrained import lam_for, solver_options


def set_tf32(on: bool) -> None:
    torch.backends.cudnn.allow_tf32 = on
    torch.backends.cuda.matmul.allow_tf32 = on


def run(model: alr.PatchCritic, y: torch.Tensor, device: str) -> tuple[torch.Tensor, torch.Tensor]:
    model = model.to(device)
    x, _ = alr.solver.minimize(y.to(device), None, model, lam_for(model, "denoise", 0.1),
                               **solver_options(model, "denoise", 0.1))
    _, g = Regularizer(model)._value_and_grad(y.to(device), True)
    return x.cpu(), g.cpu()


def main() -> None:
    clean = torch.from_numpy(data.camera()[128:384, 128:384] / 255.0).float()[None, None]
    y = add_noise(clean, 0.1, seed=0)
    model = alr.load("gray")
    x_cpu, g_cpu = run(model, y, "cpu")
    print(f"cpu: psnr {float(psnr(x_cpu, clean)):.3f} dB")
    for on in (True, False):
        set_tf32(on)
        x, g = run(model, y, "cuda")
        rel = float((g - g_cpu).norm() / g_cpu.norm())
        print(f"cuda tf32={on}: psnr {float(psnr(x, clean)):.3f} dB, max |x - x_cpu| {float((x - x_cpu).abs().max()):.2e}, "
              f"grad R relative error {rel:.2e}")


if __name__ == "__main__":
    main()
