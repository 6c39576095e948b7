"""Baselines run in the same harness as ALR: BM3D, EPLL and total variation.

* :func:`bm3d_restore`: BM3D (Dabov et al. 2007) through the ``bm3d`` package,
  for denoising (gray and colour) and deblurring (``bm3d_deblurring``).
* :class:`GMM` and :func:`epll_restore`: EPLL (Zoran & Weiss 2011). A Gaussian
  mixture on zero-mean 8x8 patches is fitted by EM; restoration alternates,
  for an increasing penalty ``beta`` (half-quadratic splitting), a Wiener
  step on every overlapping patch with its most likely component and an
  exact quadratic ``x``-step solved in the Fourier domain (patches wrap
  around the borders, so every pixel is covered by exactly 64 patches).
* :func:`tv_restore`: isotropic total variation,
  ``min_x 1/2 ||A x - y||^2 + lam_tv * sum_i ||(grad x)_i||_2``, solved by the
  primal-dual algorithm of Condat-Vu (Chambolle-Pock with an explicit step on
  the smooth data term), for any operator of :mod:`alr.physics`.
"""
from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..physics import Blur, Denoising, LinearOperator


# --------------------------------------------------------------------------- BM3D
def bm3d_restore(y: torch.Tensor, sigma: float, physics: LinearOperator | None = None,
                 per_channel: bool = False) -> torch.Tensor:
    """BM3D of each image of ``y`` (B, C, H, W); deblurring when ``physics`` is a Blur.

    Colour images go through CBM3D (``bm3d_rgb``: grouping on the luminance of the opponent colour
    transform); ``per_channel=True`` denoises each channel alone with grayscale BM3D instead, which
    ignores the correlation between the channels."""
    import bm3d

    if not hasattr(np, "trapz"):  # bm4d <= 4.2.5 calls np.trapz, removed in NumPy 2.4
        np.trapz = np.trapezoid
    physics = physics or Denoising()
    out = []
    for img in y.detach().cpu().double().numpy():
        if isinstance(physics, Blur):
            if img.shape[0] != 1:
                raise ValueError("BM3D deblurring is grayscale only")
            res = _bm3d_deblur(img[0], sigma, physics)[None]
        elif isinstance(physics, Denoising):
            res = (np.stack([bm3d.bm3d(c, sigma) for c in img]) if img.shape[0] == 1 or per_channel
                   else bm3d.bm3d_rgb(img.transpose(1, 2, 0), sigma).transpose(2, 0, 1))
        else:
            raise ValueError("BM3D supports denoising and deblurring only")
        out.append(torch.from_numpy(np.ascontiguousarray(res)).float())
    return torch.stack(out).clamp(0, 1)


def _bm3d_deblur(z: np.ndarray, sigma: float, physics: Blur) -> np.ndarray:
    """BM3D deblurring (Dabov et al. 2008): regularised inverse + BM3D hard thresholding,
    then regularised Wiener inverse + BM3D Wiener filtering, with the coloured noise PSDs.
    Same steps as ``bm3d.bm3d_deblurring``, whose 4.0.3 release fails on a shape check."""
    import bm3d

    h, w = z.shape
    v = _kernel_fft(physics.kernel.double(), h, w).numpy()
    psd = np.full((h, w), sigma ** 2 * h * w)
    fz = np.fft.fft2(z)
    ri = np.conj(v) / (np.abs(v) ** 2 + 4e-4 * psd + 1e-12)
    y_ht = bm3d.bm3d(np.real(np.fft.ifft2(fz * ri)), psd * np.abs(ri) ** 2,
                     stage_arg=bm3d.BM3DStages.HARD_THRESHOLDING)
    pilot = np.abs(np.fft.fft2(np.squeeze(y_ht))) ** 2
    rwi = np.conj(v) * pilot / (pilot * np.abs(v) ** 2 + 5e-3 * psd + 1e-12)
    return bm3d.bm3d(np.real(np.fft.ifft2(fz * rwi)), psd * np.abs(rwi) ** 2,
                     stage_arg=np.squeeze(y_ht).reshape(h, w))


# --------------------------------------------------------------------------- TV
def _grad(x: torch.Tensor) -> torch.Tensor:
    """Forward differences with Neumann boundary, (B, C, 2, H, W)."""
    gx = F.pad(x[..., :, 1:] - x[..., :, :-1], (0, 1))
    gy = F.pad(x[..., 1:, :] - x[..., :-1, :], (0, 0, 0, 1))
    return torch.stack([gy, gx], 2)


def _div(p: torch.Tensor) -> torch.Tensor:
    """Negative adjoint of :func:`_grad`: <grad x, p> = -<x, div p>."""
    py, px = p[:, :, 0], p[:, :, 1]
    dx = torch.cat([px[..., :, :1], px[..., :, 1:-1] - px[..., :, :-2], -px[..., :, -2:-1]], -1)
    dy = torch.cat([py[..., :1, :], py[..., 1:-1, :] - py[..., :-2, :], -py[..., -2:-1, :]], -2)
    return dx + dy


#: Dual step of :func:`tv_restore` per unit of ``lam_tv``, below its cap 0.5 (set12/01 at the bench's
#: settings: within 0.03% of the minimum energy after 300 iterations for deblurring and 1,000 for
#: inpainting and super-resolution, where the step 0.5 was 1.3%, 0.1% and 55% above it; denoising
#: weights, 0.03 and up, keep the step 0.5, which converges faster there).
TV_DUAL_STEP = 25.0


def tv_restore(y: torch.Tensor, physics: LinearOperator | None, lam_tv: float, iters: int = 300,
               x0: torch.Tensor | None = None) -> torch.Tensor:
    """Isotropic TV restoration (colour: vectorial TV, norms over channels too).

    Minimises ``1/2 ||Ax - y||^2 + lam_tv TV(x)`` by the Condat-Vu primal-dual iteration with
    dual step ``sigma = min(TV_DUAL_STEP * lam_tv, 0.5)`` and primal step
    ``tau = 0.99 / (L/2 + 8 sigma)`` (``L = ||A||^2``, ``8`` bounds ``||grad||^2``). The dual
    variable lives in the ball of radius ``lam_tv``, so a small weight (deblurring, inpainting,
    super-resolution) wants a small dual step: the fixed step 0.5 converged about 10x slower there.
    """
    physics = physics or Denoising()
    physics.check_measurement(y)
    x = (physics.init(y) if x0 is None else x0).clone().float()
    lip = physics.lipschitz()
    sigma = min(TV_DUAL_STEP * lam_tv, 0.5)
    tau = 0.99 / (lip / 2 + 8 * sigma)
    p = torch.zeros_like(_grad(x))
    for _ in range(iters):
        x_new = x - tau * (physics.A_adjoint(physics.A(x) - y) - _div(p))
        q = p + sigma * _grad(2 * x_new - x)
        norm = q.pow(2).sum(dim=(1, 2), keepdim=True).sqrt()
        p = q / torch.clamp(norm / max(lam_tv, 1e-12), min=1.0)
        x = x_new
    return x.clamp(0, 1)


# --------------------------------------------------------------------------- EPLL
class GMM:
    """Gaussian mixture on zero-mean ``p x p`` patches with C channels.

    Attributes: ``weights`` (K,), ``means`` (K, d), ``covs`` (K, d, d) with
    ``d = C p^2``. Saved as safetensors (no pickle).
    """

    def __init__(self, weights: torch.Tensor, means: torch.Tensor, covs: torch.Tensor, patch: int = 8) -> None:
        self.weights, self.means, self.covs, self.patch = weights, means, covs, patch

    @property
    def dim(self) -> int:
        return self.means.shape[1]

    def save(self, path: str | os.PathLike) -> None:
        from safetensors.torch import save_file

        from ..files import atomic_write
        tensors = {"weights": self.weights.contiguous(), "means": self.means.contiguous(),
                   "covs": self.covs.contiguous()}
        atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata={"patch": str(self.patch)}))

    @classmethod
    def load(cls, path: str | os.PathLike) -> "GMM":
        from safetensors import safe_open
        with safe_open(str(path), framework="pt") as f:
            t = {k: f.get_tensor(k) for k in f.keys()}
            patch = int((f.metadata() or {}).get("patch", 8))
        return cls(t["weights"], t["means"], t["covs"], patch)

    @classmethod
    def fit(cls, patches: torch.Tensor, k: int = 20, iters: int = 30, seed: int = 0,
            patch: int = 8, progress: bool = False) -> "GMM":
        """EM on ``patches`` (N, d) made zero-mean per patch; covariances get a 1e-6 ridge."""
        from tqdm.auto import tqdm

        x = patches.double()
        n, d = x.shape
        g = torch.Generator().manual_seed(seed)
        resp = torch.rand(n, k, generator=g, dtype=torch.float64)
        resp = resp / resp.sum(1, keepdim=True)
        eye = torch.eye(d, dtype=torch.float64)
        for _ in tqdm(range(iters), desc="EM", disable=not progress):
            nk = resp.sum(0) + 1e-10
            w = nk / n
            mu = resp.T @ x / nk[:, None]
            covs = torch.stack([((resp[:, j:j + 1] * (x - mu[j])).T @ (x - mu[j])) / nk[j] for j in range(k)])
            covs = covs + 1e-6 * eye
            logp = _gauss_logpdf(x, mu, covs) + w.log()
            resp = torch.softmax(logp, dim=1)
        return cls(w.float(), mu.float(), covs.float(), patch)


def _gauss_logpdf(x: torch.Tensor, mu: torch.Tensor, covs: torch.Tensor) -> torch.Tensor:
    """log N(x_i; mu_k, covs_k) for all i, k: (N, K)."""
    d = x.shape[1]
    chol = torch.linalg.cholesky(covs)
    out = []
    for j in range(mu.shape[0]):
        z = torch.linalg.solve_triangular(chol[j], (x - mu[j]).T, upper=False)
        logdet = 2 * torch.log(torch.diagonal(chol[j])).sum()
        out.append(-0.5 * (z.pow(2).sum(0) + logdet + d * math.log(2 * math.pi)))
    return torch.stack(out, 1)


def _patches(x: torch.Tensor, p: int) -> torch.Tensor:
    """All p x p patches with periodic wrap: (B, H*W, C*p*p)."""
    xp = F.pad(x, (0, p - 1, 0, p - 1), mode="circular")
    return F.unfold(xp, p).transpose(1, 2)


def _fold(cols: torch.Tensor, shape: torch.Size, p: int) -> torch.Tensor:
    """Adjoint of :func:`_patches` (sum of patches, wrapped back)."""
    b, c, h, w = shape
    big = F.fold(cols.transpose(1, 2), (h + p - 1, w + p - 1), p)
    big[..., :p - 1, :] += big[..., h:, :]
    big[..., :, :p - 1] += big[..., :, w:]
    return big[..., :h, :w]


def zero_mean_patches(stack, n: int, p: int = 8, seed: int = 0) -> torch.Tensor:
    """``n`` random p x p patches of an :class:`alr.data.ImageStack`, each made zero-mean per
    channel: (N, C p^2), the data the EPLL mixture models."""
    x = stack.sample(n, p, torch.Generator().manual_seed(seed)).flatten(1)
    return x - x.view(n, stack.channels, -1).mean(2).repeat_interleave(p * p, 1)


def epll_restore(y: torch.Tensor, physics: LinearOperator | None, sigma: float, gmm: GMM,
                 betas: tuple[float, ...] | None = None, chunk: int = 65536) -> torch.Tensor:
    """EPLL by half-quadratic splitting for denoising or (circular) deblurring.

    Stage k solves ``min_x lam/2 ||Ax - y||^2 + beta/2 sum_i ||P_i x - z_i||^2`` after the
    Wiener/MAP patch step ``z_i``, with ``lam = p^2 / sigma^2`` as Zoran & Weiss (a pixel
    lies in p^2 patches).

    ``betas`` are the penalties of the successive stages in units of 1/sigma^2
    for denoising (default 1, 4, 8, 16, 32, 64 as Zoran & Weiss) and of
    1/0.1^2 for deblurring (default 1, 2, ..., 256), started from a Tikhonov inverse
    filter: the deblurring stages must start loose enough to leave the blurred start
    (schedule tuned on bsd400 crops, blur std 1.6, noise 0.01 and 0.03).
    """
    physics = physics or Denoising()
    if not isinstance(physics, (Denoising, Blur)):
        raise ValueError("EPLL supports denoising and deblurring")
    p = gmm.patch
    b, c, h, w = y.shape
    if c * p * p != gmm.dim:
        raise ValueError(f"GMM is for {gmm.dim // (p * p)} channel(s), image has {c}")
    dev = y.device
    wts, mus, covs = gmm.weights.to(dev), gmm.means.to(dev), gmm.covs.to(dev)
    eye = torch.eye(gmm.dim, device=dev)
    s2 = max(sigma, 1e-3) ** 2
    deblur = isinstance(physics, Blur)
    if betas is None:
        betas = tuple(2.0 ** i for i in range(9)) if deblur else (1, 4, 8, 16, 32, 64)
    unit = 1 / 0.1 ** 2 if deblur else 1 / s2
    x = physics.init(y).clone()
    if deblur:  # start from a Tikhonov-regularised inverse filter rather than A^T y
        kf = _kernel_fft(physics.kernel.to(dev), h, w)
        aty_f = torch.fft.fft2(physics.A_adjoint(y))
        x = torch.fft.ifft2(aty_f / (kf.abs() ** 2 + 10 * s2)).real
    for beta_rel in betas:
        beta = beta_rel * unit
        cov_n = covs + eye / beta
        chol = torch.linalg.cholesky(cov_n)
        logdet = 2 * torch.log(torch.diagonal(chol, dim1=1, dim2=2)).sum(1)
        gain = covs @ torch.cholesky_inverse(chol)  # Sigma_k (Sigma_k + I/beta)^-1
        whiten = torch.linalg.solve_triangular(chol, eye.expand_as(chol), upper=False).transpose(1, 2)  # L_k^-T
        pt = _patches(x, p)  # (B, N, d)
        dc = pt.view(b, -1, c, p * p).mean(3, keepdim=True)
        z0 = (pt.view(b, -1, c, p * p) - dc).view(b, -1, gmm.dim)
        flat = z0.reshape(-1, gmm.dim)
        out = torch.empty_like(flat)
        for i in range(0, flat.shape[0], chunk):
            v = flat[i:i + chunk]
            best = None
            score = None
            for j in range(mus.shape[0]):
                zz = (v - mus[j]) @ whiten[j]  # rows L_k^-1 (v - mu_k): Mahalanobis by a matmul
                sc = -0.5 * (zz.pow(2).sum(1) + logdet[j]) + torch.log(wts[j])
                if score is None:
                    score, best = sc, torch.zeros_like(sc, dtype=torch.long)
                else:
                    upd = sc > score
                    score = torch.where(upd, sc, score)
                    best = torch.where(upd, torch.full_like(best, j), best)
            o = out[i:i + chunk]
            for j in best.unique().tolist():  # Wiener filter of each patch's component
                sel = best == j
                o[sel] = mus[j] + (v[sel] - mus[j]) @ gain[j].T
        zhat = (out.view(b, -1, c, p * p) + dc).view(b, -1, gmm.dim)
        # data weight p^2 / sigma^2 (Zoran & Weiss), both sides divided by p^2; measured on bsd400
        # crops: +1.4 dB (denoising, sigma 0.1) and +1.6 / +3.9 dB (deblurring, noise 0.01 / 0.03)
        # over weight 1 / sigma^2
        rhs_p = _fold(zhat, y.shape, p) / (p * p)  # sum_i P_i^T z_i / p^2 ; sum_i P_i^T P_i = p^2 I
        if deblur:
            x = torch.fft.ifft2((aty_f / s2 + beta * torch.fft.fft2(rhs_p)) / (kf.abs() ** 2 / s2 + beta)).real
        else:
            x = (y / s2 + beta * rhs_p) / (1 / s2 + beta)
    return x.clamp(0, 1)


def _kernel_fft(k: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """FFT of the circular convolution operator of :class:`alr.physics.Blur`."""
    kh, kw = k.shape
    big = torch.zeros(h, w, device=k.device, dtype=k.dtype)
    big[:kh, :kw] = k
    big = torch.roll(big, shifts=(-(kh // 2), -(kw // 2)), dims=(0, 1))
    return torch.fft.fft2(big)


def fit_gmm_from_folder(folder: str | os.PathLike, channels: int, out: str | os.PathLike,
                        n_patches: int = 100000, k: int = 20, iters: int = 30, seed: int = 0) -> GMM:
    """Fit the EPLL GMM on random patches of a training folder and save it."""
    from ..data import ImageStack
    x = zero_mean_patches(ImageStack.from_folder(folder, channels), n_patches, 8, seed)
    gmm = GMM.fit(x, k=k, iters=iters, seed=seed, progress=True)
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    gmm.save(out)
    return gmm
