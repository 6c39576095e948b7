"""Data fidelity F(Ax, y): the noise model of the variational problem.

The paper's data term is the Gaussian one, ``F = 1/2 ||A x - y||^2`` (sigma^2 times the negative
log-likelihood of ``y = A x + n``). Photographs, and the paper's own protocol, also *clip* the
measurement to the sensor range, ``y = clip(A x + n, 0, 1)``: a pixel read as 0 only says that
``(A x)_i + n_i <= 0``. Its likelihood is the censored (Tobit) one::

    -log p(y_i | u_i) = (y_i - u_i)^2 / (2 sigma^2)     if 0 < y_i < 1
                      = -log Phi(-u_i / sigma)           if y_i <= 0
                      = -log Phi((u_i - 1) / sigma)      if y_i >= 1

with ``u = A x`` and Phi the standard normal CDF. :class:`ClippedGaussian` is sigma^2 times it, so
it equals :class:`Gaussian` on unclipped pixels and the Gaussian lambda table is a sensible start;
a model may also hold a table calibrated for it (``denoise-clipped``, ``alr.lam_for(..., clipped=True)``). It is convex in
``u`` (Phi is log-concave); at a clipped pixel it pulls ``u`` only towards the clipped side, and
less and less once ``u`` is past the bound, instead of pulling it back to the bound as the
Gaussian term does. Values are per image and divided by the number of pixels ``n`` (the solver's
normalisation); ``grad`` is the derivative with respect to ``u``, not divided by ``n``.

Example
-------
>>> import torch
>>> from alr.fidelity import ClippedGaussian, Gaussian
>>> y = torch.tensor([[[[0.0, 0.5, 1.0]]]])
>>> u = torch.tensor([[[[0.1, 0.4, 0.9]]]])
>>> [round(v, 4) for v in Gaussian()(u, y)[1].flatten().tolist()]
[0.1, -0.1, -0.1]
>>> [round(v, 4) for v in ClippedGaussian(0.1)(u, y)[1].flatten().tolist()]
[0.1525, -0.1, -0.1525]
"""
from __future__ import annotations

import math

import torch


class Gaussian:
    """``F(u, y) = 1/(2n) ||u - y||^2`` per image; gradient ``u - y``."""

    def __call__(self, u: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        res = u - y
        return 0.5 * res.flatten(1).pow(2).sum(1) / res[0].numel(), res

    def select(self, idx: list[int]) -> "Gaussian":
        """The data term of the images ``idx`` of a batch."""
        return self


class ClippedGaussian:
    """Censored Gaussian likelihood of ``y = clip(u + n, low, high)``, times sigma^2 (module docstring).

    Parameters
    ----------
    sigma : noise standard deviation (> 0) before clipping: a number, or one per image of the batch.
    low, high : the clipping bounds; pixels with ``y <= low`` or ``y >= high`` are censored.
    """

    def __init__(self, sigma: float | torch.Tensor, low: float = 0.0, high: float = 1.0) -> None:
        sigma = torch.as_tensor(sigma, dtype=torch.float32).flatten()
        if sigma.numel() == 0 or not (torch.isfinite(sigma).all() and (sigma > 0).all()):
            raise ValueError(f"the clipped data term needs noise levels sigma > 0, got {sigma.tolist()}")
        if not low < high:
            raise ValueError(f"low ({low}) must be below high ({high})")
        self.sigma, self.low, self.high = sigma, float(low), float(high)

    def select(self, idx: list[int]) -> "ClippedGaussian":
        """The data term of the images ``idx`` of a batch."""
        return self if self.sigma.numel() == 1 else ClippedGaussian(self.sigma[idx], self.low, self.high)

    def __call__(self, u: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.sigma.numel() not in (1, u.shape[0]):
            raise ValueError(f"{self.sigma.numel()} noise levels for a batch of {u.shape[0]} images")
        s = self.sigma.to(u.device, u.dtype).view(-1, 1, 1, 1)
        lo, hi = y <= self.low, y >= self.high
        # t: the standardised margin on the censored side; -log Phi(t) and its derivative
        t = torch.where(lo, (self.low - u) / s, (u - self.high) / s)
        log_phi = torch.special.log_ndtr(t)
        mills = math.sqrt(2 / math.pi) / torch.special.erfcx(-t / math.sqrt(2))  # phi(t) / Phi(t), stable for t << 0
        res = u - y
        val = torch.where(lo | hi, -s * s * log_phi, 0.5 * res * res)
        grad = torch.where(lo, s * mills, torch.where(hi, -s * mills, res))
        return val.flatten(1).sum(1) / u[0].numel(), grad

