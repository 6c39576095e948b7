"""The toy experiment of the paper's Figure 1: a critic learns the distance to a circle.

Clean points lie on the unit circle, degraded points are clean points plus
Gaussian perturbations of std ``sigma``. A small MLP critic is trained with
the same WGAN-GP trainer as the patch critic. The optimal critic is the
distance to the clean set ``d(x) = | ||x|| - 1 |`` up to a constant, so we
report the Pearson correlation between ``r`` and ``d`` on a grid covering the
region the degraded points reach (``d <= 2 sigma``), and plot the level lines
of ``r`` with its (negative) gradient field, which points toward the circle.
A ``"w2"`` critic (:func:`alr.critic.patch_scores`) should instead score ``d^2 / 2``:
its correlation is taken with that, and its mean absolute error to it is reported.
"""
from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..critic import _activation, check_criterion, patch_scores
from ..images import pyplot
from ..train import TrainConfig, train_critic


class PointCritic(nn.Module):
    """Small MLP critic on points of R^d, used by the toy circle experiment."""

    kind = "mlp"

    def __init__(self, in_features: int = 2, width: int = 64, depth: int = 3,
                 activation: str = "relu", criterion: str = "w1") -> None:
        super().__init__()
        self.criterion = check_criterion(criterion)
        self.in_features, self.width, self.depth, self.activation = in_features, width, depth, activation
        layers: list[nn.Module] = []
        d = in_features
        for _ in range(depth):
            layers += [nn.Linear(d, width), _activation(activation)]
            d = width
        layers.append(nn.Linear(d, 1))
        self.net = nn.Sequential(*layers)
        self.meta: dict[str, Any] = {}

    def config(self) -> dict[str, Any]:
        return {"kind": self.kind, "in_features": self.in_features, "depth": self.depth,
                "width": self.width, "activation": self.activation, "criterion": self.criterion}

    def potential(self, x: torch.Tensor) -> torch.Tensor:
        """The 1-Lipschitz potential u(x), one value per point."""
        return self.net(x).squeeze(-1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Score r(x) of each point (see :func:`patch_scores`)."""
        return patch_scores(self.potential(x), self.criterion)


def circle_sampler(sigma: float):
    """Sampler of (clean, degraded) point batches, unpaired (independent angles)."""
    def sample(n: int, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        a = 2 * math.pi * torch.rand(n, generator=g)
        b = 2 * math.pi * torch.rand(n, generator=g)
        clean = torch.stack([a.cos(), a.sin()], 1)
        deg = torch.stack([b.cos(), b.sin()], 1) + sigma * torch.randn(n, 2, generator=g)
        return clean, deg
    return sample


def distance_correlation(critic: PointCritic, sigma: float, n: int = 121, extent: float = 1.6) -> dict:
    """Correlation of r with its target on a grid (near band and full grid): the distance d to the
    circle for a "w1" critic, ``d^2 / 2`` for a "w2" one, whose mean absolute error to it is added."""
    t = torch.linspace(-extent, extent, n)
    xx, yy = torch.meshgrid(t, t, indexing="xy")
    pts = torch.stack([xx.flatten(), yy.flatten()], 1)
    with torch.no_grad():
        r = critic(pts)
    d = (pts.norm(dim=1) - 1).abs()
    target, band = patch_scores(d, critic.criterion), d <= 2 * sigma

    def corr(a, b):
        a, b = a - a.mean(), b - b.mean()
        return float((a * b).sum() / (a.norm() * b.norm()))

    res = {"criterion": critic.criterion, "target": "d^2 / 2" if critic.criterion == "w2" else "d",
           "corr_band": corr(r[band], target[band]), "corr_grid": corr(r, target), "band": f"d <= {2 * sigma:g}",
           "grid": f"{n}x{n} on [-{extent}, {extent}]^2"}
    if critic.criterion == "w2":  # its level is fixed too (zero on the circle), not only its shape
        res["mae_band"] = float((r[band] - target[band]).abs().mean())
    return res


def plot(critic: PointCritic, sigma: float, path: str | os.PathLike, extent: float = 1.6) -> None:
    """Contour plot of r with the field -grad r, clean circle and degraded samples."""
    plt = pyplot()

    n = 161
    t = torch.linspace(-extent, extent, n)
    xx, yy = torch.meshgrid(t, t, indexing="xy")
    pts = torch.stack([xx.flatten(), yy.flatten()], 1).requires_grad_(True)
    r = critic(pts)
    (g,) = torch.autograd.grad(r.sum(), pts)
    r = r.detach().view(n, n)
    fig, ax = plt.subplots(figsize=(6, 6))
    cs = ax.contourf(xx, yy, r, levels=30, cmap="viridis")
    fig.colorbar(cs, ax=ax, fraction=0.046, label="critic r(x)")
    ax.contour(xx, yy, r, levels=15, colors="k", linewidths=0.4)
    s = slice(None, None, 10)
    gx, gy = -g[:, 0].view(n, n), -g[:, 1].view(n, n)
    ax.quiver(xx[s, s], yy[s, s], gx[s, s], gy[s, s], color="w", scale=30)
    a = torch.linspace(0, 2 * math.pi, 200)
    ax.plot(a.cos(), a.sin(), "r-", lw=2, label="clean data (circle)")
    deg = circle_sampler(sigma)(300, torch.Generator().manual_seed(1))[1]
    ax.scatter(deg[:, 0], deg[:, 1], s=3, c="orange", label=f"degraded (sigma={sigma:g})")
    ax.set_aspect("equal")
    ax.set_xlim(-extent, extent)
    ax.set_ylim(-extent, extent)
    ax.legend(loc="upper right", fontsize=8)
    ax.set_title("Learned critic r and -grad r (paper Fig. 1)" if critic.criterion == "w1" else
                 "w2 critic r = u^2 / 2 and -grad r")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def run_toy(out_dir: str | os.PathLike, sigma: float = 0.2, steps: int = 3000, seed: int = 0,
            criterion: str = "w1", progress: bool = True) -> dict:
    """Train the toy critic, write ``toy.png``, ``toy_critic.safetensors`` and ``toy.json``
    (``toy_w2.png`` ... for ``criterion="w2"``)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    stem = "toy" if criterion == "w1" else f"toy_{criterion}"
    torch.manual_seed(seed)
    critic = PointCritic(2, width=64, depth=3, criterion=criterion)  # lr 1e-2: smaller rates stall on the linear part
    cfg = TrainConfig(steps=steps, batch_size=1024, lr0=1e-2, lr1=1e-4, seed=seed, device="cpu",
                      ckpt_every=steps, log_every=50)
    model = out / f"{stem}_critic.safetensors"
    train_critic(critic, circle_sampler(sigma), cfg, out=model, log_csv=out / f"{stem}_log.csv", progress=progress)
    res = {"sigma": sigma, "steps": steps, **distance_correlation(critic, sigma), "figure": f"{stem}.png"}
    plot(critic, sigma, out / f"{stem}.png")
    Path(f"{model}.ckpt").unlink(missing_ok=True)
    (out / f"{stem}.json").write_text(json.dumps(res, indent=2))
    return res
