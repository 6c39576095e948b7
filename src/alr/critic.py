"""The patch critic r_theta and the regularizer R(x) it defines.

A :class:`PatchCritic` is a fully convolutional network with 3x3 kernels and
no padding, so its receptive field is one ``s x s`` patch with
``s = 2 * depth + 1``. Applied to an ``H x W`` image it returns an
``(H - s + 1) x (W - s + 1)`` map holding one score ``r_theta(p)`` per patch
``p``, and the regularizer of eq. (3) of the paper is the mean of that map::

    R(x) = 1 / |P(x)| * sum_{p in P(x)} r_theta(p)

It is low on clean images and high on degraded ones. The paper's critic (criterion
``"w1"``) is a WGAN-GP critic, ``r_theta = u_theta`` with ``u_theta`` about 1-Lipschitz, so
r grows like the distance to the clean patches. Criterion ``"w2"``, the squared-distance
variant the authors suggest, scores ``r_theta = u_theta^2 / 2`` with the same 1-Lipschitz
``u_theta`` (:func:`patch_scores`), trained so that ``u_theta`` vanishes on clean patches:
then r grows like half the squared distance. An optional concave shaping of
the scores, ``R_kappa(x) = mean_p psi_kappa(r_theta(p))`` (:func:`shape_scores`), weights
the patches' gradients by ``exp(-kappa (r_theta(p) - c))``; ``kappa = 0`` is the paper's R.
Model files are a single
``.safetensors`` file whose header metadata holds the architecture and a JSON
description (training data, noise range, lambda table); loading never
unpickles anything.

Example
-------
>>> import torch, alr
>>> critic = alr.PatchCritic(in_channels=1, depth=6, width=16)
>>> critic.receptive_field
13
>>> critic(torch.rand(2, 1, 20, 30)).shape
torch.Size([2, 1, 8, 18])
>>> critic.regularizer(torch.rand(2, 1, 20, 30)).shape
torch.Size([2])
"""
from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from . import __version__

ACTIVATIONS = {
    "relu": nn.ReLU,
    "leaky_relu": lambda: nn.LeakyReLU(0.2),
    "softplus": nn.Softplus,
    "silu": nn.SiLU,
    "elu": nn.ELU,
}


CRITERIA = ("w1", "w2")


def check_criterion(criterion: str) -> str:
    """``criterion`` itself if it is one of :data:`CRITERIA`, else ValueError."""
    if criterion not in CRITERIA:
        raise ValueError(f"unknown criterion {criterion!r}; choose one of {', '.join(CRITERIA)}")
    return criterion


def patch_scores(u: torch.Tensor, criterion: str) -> torch.Tensor:
    """Scores r from the critic's 1-Lipschitz potential u: ``r = u`` ("w1") or ``u^2 / 2`` ("w2").

    With u the distance d to the clean patches (what training approximates), "w1" gives
    ``r = d`` and "w2" ``r = d^2 / 2``, whose gradient ``d grad d`` fades near clean patches.

    >>> import torch
    >>> patch_scores(torch.tensor([-2.0, 1.0]), "w2").tolist()
    [2.0, 0.5]
    """
    return 0.5 * u * u if criterion == "w2" else u


def _activation(name: str) -> nn.Module:
    try:
        return ACTIVATIONS[name]()
    except KeyError:
        raise ValueError(f"unknown activation {name!r}; choose one of {sorted(ACTIVATIONS)}") from None


class PatchCritic(nn.Module):
    """Fully convolutional patch critic r_theta (paper sec. 3.1).

    Parameters
    ----------
    in_channels : 1 (grayscale) or 3 (RGB).
    depth : number of 3x3 convolutions; receptive field ``2 * depth + 1``.
    width : channels of the hidden layers.
    activation : ``"relu"`` (paper), or a smooth one (``"softplus"``, ``"silu"``,
        ``"elu"``) that makes R differentiable everywhere, as the convergence
        argument of eq. (5) wants.
    criterion : ``"w1"`` (paper, ``r = u``) or ``"w2"`` (``r = u^2 / 2``), see :func:`patch_scores`.
    """

    kind = "patch"

    def __init__(self, in_channels: int = 1, depth: int = 6, width: int = 64,
                 activation: str = "relu", criterion: str = "w1") -> None:
        super().__init__()
        self.criterion = check_criterion(criterion)
        if in_channels not in (1, 3):
            raise ValueError(f"in_channels must be 1 or 3, got {in_channels}")
        if depth < 1 or width < 1:
            raise ValueError("depth and width must be positive")
        self.in_channels, self.depth, self.width, self.activation = in_channels, depth, width, activation
        layers: list[nn.Module] = []
        ch = in_channels
        for i in range(depth):
            last = i == depth - 1
            layers.append(nn.Conv2d(ch, 1 if last else width, 3, padding=0))
            if not last:
                layers.append(_activation(activation))
            ch = width
        self.net = nn.Sequential(*layers)
        self.meta: dict[str, Any] = {}

    @property
    def receptive_field(self) -> int:
        """Side ``s`` of the square patch one output score sees."""
        return 2 * self.depth + 1

    def config(self) -> dict[str, Any]:
        return {"kind": self.kind, "in_channels": self.in_channels, "depth": self.depth,
                "width": self.width, "activation": self.activation, "criterion": self.criterion}

    def _check(self, x: torch.Tensor) -> None:
        if x.dim() != 4:
            raise ValueError(f"expected a (B, C, H, W) tensor, got shape {tuple(x.shape)}")
        if x.shape[1] != self.in_channels:
            raise ValueError(f"critic expects {self.in_channels} channel(s), got {x.shape[1]}")
        check_image_size(x, self.receptive_field)

    def potential(self, x: torch.Tensor) -> torch.Tensor:
        """Map of the 1-Lipschitz potential u_theta(p) (the network's output), same shape as forward's."""
        self._check(x)
        return self.net(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Score map r_theta(p) of every patch: (B, 1, H - s + 1, W - s + 1)."""
        return patch_scores(self.potential(x), self.criterion)

    def regularizer(self, x: torch.Tensor, boundary: str = "reflect", concavity: float = 0.0,
                    score_ref: float = 0.0, symmetric: bool = False) -> torch.Tensor:
        """R(x): the mean (shaped) patch score of each image, shape (B,).

        ``boundary="valid"`` averages the patches inside the image (the paper's R);
        ``"reflect"`` those of the image mirrored by s - 1 pixels (see :func:`pad_boundary`).
        ``concavity`` and ``score_ref`` shape the scores first (:func:`shape_scores`).
        ``symmetric``: ``R_sym(x) = 1/8 sum_g R(g x)`` over the 8 flips and quarter turns g
        (:func:`dihedral`), a regulariser invariant to them.
        """
        if symmetric:
            return sum(self.regularizer(dihedral(x, k), boundary, concavity, score_ref)
                       for k in range(DIHEDRAL)) / DIHEDRAL
        r = self(pad_boundary(x, self.receptive_field, boundary))
        return shape_scores(r, concavity, score_ref).mean(dim=(1, 2, 3))

    # ---- model files -------------------------------------------------------------
    def save(self, path: str | os.PathLike) -> None:
        """Write weights and metadata to one ``.safetensors`` file, atomically."""
        save_model(self, path)


BOUNDARIES = ("reflect", "valid")


def shape_scores(r: torch.Tensor, concavity: float | torch.Tensor = 0.0, score_ref: float = 0.0) -> torch.Tensor:
    """Concave shaping of patch scores, ``psi(r) = c + (1 - exp(-kappa (r - c))) / kappa``.

    With ``kappa = concavity > 0`` and ``c = score_ref``, ``psi'(r) = exp(-kappa (r - c))``:
    the gradient of a patch the critic scores far above ``c`` (an edge or a texture that
    it partly confuses with noise) is damped, that of a patch scored near or below ``c``
    (a flat area) kept or amplified. ``psi`` is increasing and concave, equals ``r`` at
    ``kappa = 0`` (the paper's R, returned unchanged) and tends to it as kappa -> 0.
    ``c`` is a typical clean score of the critic (the calibration stores the median
    over its clean crops), so that lambda keeps its scale across kappa. ``concavity``
    may be a tensor broadcastable against ``r`` (one value per image: shape (B, 1, 1, 1)).

    >>> import torch
    >>> r = torch.tensor([1.0, 2.0, 3.0])
    >>> shape_scores(r, 0.0).tolist()
    [1.0, 2.0, 3.0]
    >>> [round(v, 3) for v in shape_scores(r, 0.5, 2.0).tolist()]
    [0.703, 2.0, 2.787]
    """
    k = check_concavity(torch.as_tensor(concavity, dtype=r.dtype, device=r.device))
    return shape_scores_unchecked(r, k, score_ref) if k.any() else r


DIHEDRAL = 8  # the symmetries of the square: 4 quarter turns, each with or without a mirror


def dihedral(x: torch.Tensor, k: int, inverse: bool = False) -> torch.Tensor:
    """The k-th of the 8 flips / quarter turns of the pixel grid, ``g_k(x) = rot90^(k mod 4)(flip^(k >= 4)(x))``
    (``inverse``: ``g_k^-1``). Each is a permutation of the pixels, so ``g_k^-1 = g_k^T`` and the
    gradient of ``x -> f(g_k x)`` is ``g_k^-1`` of the gradient of ``f`` at ``g_k x``.

    >>> import torch
    >>> x = torch.arange(6.0).view(1, 1, 2, 3)
    >>> all(torch.equal(dihedral(dihedral(x, k), k, inverse=True), x) for k in range(DIHEDRAL))
    True
    >>> dihedral(x, 1).shape
    torch.Size([1, 1, 3, 2])
    """
    turns, mirror = k % 4, k >= 4
    if inverse:
        x = torch.rot90(x, -turns, (-2, -1))
        return x.flip(-1) if mirror else x
    return torch.rot90(x.flip(-1) if mirror else x, turns, (-2, -1))


def check_concavity(k: torch.Tensor) -> torch.Tensor:
    """``k`` itself if every concavity is finite and >= 0, else ValueError."""
    if not (torch.isfinite(k).all() and (k >= 0).all()):
        raise ValueError(f"concavity must be finite and >= 0, got {k.tolist()}")
    return k


def shape_scores_unchecked(r: torch.Tensor, k: torch.Tensor, score_ref: float) -> torch.Tensor:
    """:func:`shape_scores` without the checks (hot path: ``k`` validated once by the caller)."""
    safe = torch.where(k > 0, k, torch.ones_like(k))  # no 0/0, even in the unused branch of where
    return torch.where(k > 0, score_ref - torch.expm1(-safe * (r - score_ref)) / safe, r)


def boundary_padding(s: int, boundary: str) -> int:
    """Pixels added on each side by :func:`pad_boundary` (s - 1 for "reflect", 0 for "valid")."""
    if boundary not in BOUNDARIES:
        raise ValueError(f"unknown boundary {boundary!r}; use {' or '.join(BOUNDARIES)}")
    return s - 1 if boundary == "reflect" else 0


def check_image_size(x: torch.Tensor, s: int) -> None:
    """Raise ValueError unless the image x (..., H, W) holds at least one s x s patch."""
    if min(x.shape[-2:]) < s:
        raise ValueError(f"image {tuple(x.shape[-2:])} is smaller than the critic's {s}x{s} receptive field")


def pad_boundary(x: torch.Tensor, s: int, boundary: str) -> torch.Tensor:
    """The image on which R averages s x s patch scores.

    ``"valid"``: x itself, so pixels near the border lie in fewer patches (down to one
    at a corner) and get less regularisation. ``"reflect"``: x mirrored by s - 1 pixels
    on each side (without repeating the edge), so every pixel lies in at least s^2
    patches. Differentiable; needs an image of at least s x s pixels.
    """
    p = boundary_padding(s, boundary)
    check_image_size(x, s)
    return F.pad(x, (p, p, p, p), mode="reflect") if p else x


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

    def save(self, path: str | os.PathLike) -> None:
        save_model(self, path)


def atomic_write(path: str | os.PathLike, write) -> None:
    """Call ``write(tmp_path)`` then rename onto ``path``: readers never see a partial file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        write(str(tmp))
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def save_model(model: PatchCritic | PointCritic, path: str | os.PathLike) -> None:
    """Save ``model`` as safetensors; architecture and ``model.meta`` go to the header."""
    from safetensors.torch import save_file

    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    header = {"alr_version": __version__, "config": json.dumps(model.config()),
              "meta": json.dumps(model.meta)}
    if hasattr(model, "receptive_field"):
        header["receptive_field"] = str(model.receptive_field)
    atomic_write(path, lambda tmp: save_file(state, tmp, metadata=header))


def load_file(path: str | os.PathLike) -> PatchCritic | PointCritic:
    """Load a critic from a ``.safetensors`` model file (no pickle involved)."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"model file not found: {path}")
    try:
        with safe_open(str(path), framework="pt") as f:
            header = f.metadata() or {}
            state = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as e:  # corrupt or not a safetensors file
        raise ValueError(f"{path} is not a valid alr model file ({e})") from None
    if "config" not in header:
        raise ValueError(f"{path} has no alr metadata; was it written by alr?")
    cfg = json.loads(header["config"])
    kind = cfg.pop("kind")
    cls = {"patch": PatchCritic, "mlp": PointCritic}[kind]
    model = cls(**cfg)
    model.load_state_dict(state)
    model.meta = json.loads(header.get("meta", "{}"))
    model.eval()
    return model
