"""Image quality metrics on (B, C, H, W) tensors in [0, 1].

* :func:`psnr`: ``10 log10(1 / MSE)`` per image (inputs clipped to [0, 1]).
* :func:`ssim`: structural similarity (Wang et al. 2004) per image, Gaussian
  window of std 1.5, through ``skimage.metrics.structural_similarity``.
* :class:`LPIPS`: the learned perceptual metric of Zhang et al. 2018 through
  the ``lpips`` package when it and its backbone weights can be loaded; if not,
  ``LPIPS.available`` is False and ``LPIPS.reason`` says why.
"""
from __future__ import annotations

import numpy as np
import torch


def psnr(x: torch.Tensor, ref: torch.Tensor, clamp: bool = True) -> torch.Tensor:
    """PSNR in dB of each image of ``x`` against ``ref`` (peak 1), shape (B,); ``x`` clipped to
    [0, 1] first (``clamp=False``: as it is, e.g. a noisy input whose noise was not clipped)."""
    if x.shape != ref.shape:
        raise ValueError(f"shape mismatch {tuple(x.shape)} vs {tuple(ref.shape)}")
    x, ref = x.detach(), ref.detach()  # a score, not a loss: no graph
    mse = ((x.clamp(0, 1) if clamp else x).double() - ref.double()).pow(2).flatten(1).mean(1)
    return (10 * torch.log10(1.0 / mse.clamp_min(1e-20))).float()


def ssim(x: torch.Tensor, ref: torch.Tensor, clamp: bool = True) -> torch.Tensor:
    """SSIM of each image (Gaussian window, data range 1), shape (B,); ``clamp`` as for :func:`psnr`."""
    from skimage.metrics import structural_similarity

    if x.shape != ref.shape:
        raise ValueError(f"shape mismatch {tuple(x.shape)} vs {tuple(ref.shape)}")
    xs = (x.detach().clamp(0, 1) if clamp else x.detach()).cpu().double().numpy()
    rs = ref.detach().cpu().double().numpy()
    vals = [structural_similarity(a, b, data_range=1.0, channel_axis=0, gaussian_weights=True,
                                  sigma=1.5, use_sample_covariance=False)
            for a, b in zip(xs, rs)]
    return torch.tensor(np.array(vals), dtype=torch.float32)


class LPIPS:
    """LPIPS distance (AlexNet variant), or unavailable with a reason."""

    def __init__(self, net: str = "alex") -> None:
        self.model = None
        self.reason = ""
        try:
            import lpips  # noqa: F401  (needs torchvision and downloadable backbone weights)

            self.model = lpips.LPIPS(net=net, verbose=False).eval()
        except Exception as e:  # ImportError, missing weights, no network
            self.reason = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}".strip()

    @property
    def available(self) -> bool:
        """Whether LPIPS can be computed here (the lpips package and its weights)."""
        return self.model is not None

    def __call__(self, x: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
        if self.model is None:
            raise RuntimeError(f"LPIPS unavailable: {self.reason}")
        to3 = (lambda t: t.expand(-1, 3, -1, -1)) if x.shape[1] == 1 else (lambda t: t)
        with torch.no_grad():
            d = self.model.to(x.device)(to3(x.clamp(0, 1)) * 2 - 1, to3(ref.to(x.device)) * 2 - 1)
        return d.flatten().cpu()
