"""The patch critic r_theta and the regularizer R(x) it defines.

A :class:`PatchCritic` is a fully convolutional network with 3x3 kernels and
no padding, so its receptive field is one ``s x s`` patch with
``s = 2 * depth + 1`` (its hidden layers all of one width, or of the widths given,
such as the 128-64-64-64-32-32 of the comparative study's local adversarial regularizer).
Applied to an ``H x W`` image it returns an
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
>>> alr.PatchCritic(widths=[128, 64, 64, 64, 32, 32], activation="silu").receptive_field
15

A fitted input scale ``s`` and weight ``a`` (``log_scale``, ``log_weight``; both 0 by default)
make the scores ``r~(p) = e^(a - 2s) r(e^s p)``, so that, the boundary padding being linear,

    R~(x) = e^(a - 2s) R(e^s x),    grad R~(x) = e^(a - s) (grad R)(e^s x),

the rescaled regularizer of the comparative study (Hertrich et al. 2025). ``s`` changes what the
critic sees (an image of contrast e^s: noise of level sigma looks like e^s sigma to it); ``a`` only
weighs R, like lambda, and is fitted with ``s`` so that the pair is well posed.
"""
from __future__ import annotations

import copy
import math
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from .errors import AlrError


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
    depth : number of 3x3 convolutions; receptive field ``2 * depth + 1`` (default 6).
    width : channels of every hidden layer (default 64).
    activation : ``"relu"`` (paper), or a smooth one (``"softplus"``, ``"silu"``,
        ``"elu"``) that makes R differentiable everywhere, as the convergence
        argument of eq. (5) wants.
    criterion : ``"w1"`` (paper, ``r = u``) or ``"w2"`` (``r = u^2 / 2``), see :func:`patch_scores`.
    widths : channels of each hidden layer instead of one ``width`` (``depth - 1`` of them;
        ``depth`` follows from them when omitted).
    log_scale, log_weight : the fitted input scale ``s`` and weight ``a`` of the scores,
        ``r~(p) = e^(a - 2s) r(e^s p)`` (module docstring); floats, or scalar tensors while they
        are being fitted (:mod:`alr.finetune`).
    """

    kind = "patch"

    def __init__(self, in_channels: int = 1, depth: int | None = None, width: int | None = None,
                 activation: str = "relu", criterion: str = "w1", widths: list[int] | None = None,
                 log_scale: float | torch.Tensor = 0.0, log_weight: float | torch.Tensor = 0.0) -> None:
        super().__init__()
        self.criterion = check_criterion(criterion)
        if in_channels not in (1, 3):
            raise ValueError(f"in_channels must be 1 or 3, got {in_channels}")
        if widths is None:
            depth, width = (6 if depth is None else depth), (64 if width is None else width)
            hidden = [width] * max(depth - 1, 0)
        else:
            if width is not None:
                raise ValueError("give one width or the widths of the layers, not both")
            hidden = list(widths)
            if depth is not None and depth != len(hidden) + 1:
                raise ValueError(f"{len(hidden)} widths make {len(hidden) + 1} layers, not depth {depth}")
            depth = len(hidden) + 1
            width = hidden[0] if len(set(hidden)) == 1 else None
        if depth < 1 or (width is not None and width < 1) or any(w < 1 for w in hidden):
            raise ValueError("depth and widths must be positive")
        self.in_channels, self.depth, self.width, self.activation = in_channels, depth, width, activation
        self.widths = tuple(hidden)
        self.log_scale, self.log_weight = log_scale, log_weight
        layers: list[nn.Module] = []
        ch = in_channels
        for out in self.widths:
            layers += [nn.Conv2d(ch, out, 3, padding=0), _activation(activation)]
            ch = out
        layers.append(nn.Conv2d(ch, 1, 3, padding=0))
        self.net = nn.Sequential(*layers)
        self.meta: dict[str, Any] = {}

    @property
    def receptive_field(self) -> int:
        """Side ``s`` of the square patch one output score sees."""
        return 2 * self.depth + 1

    def config(self) -> dict[str, Any]:
        """The architecture as the model file stores it (``width`` when the hidden layers share
        one, else ``widths``; the input scale and weight when fitted)."""
        cfg: dict[str, Any] = {"kind": self.kind, "in_channels": self.in_channels, "depth": self.depth}
        cfg.update({"width": self.width} if self.width is not None else {"widths": list(self.widths)})
        cfg.update(activation=self.activation, criterion=self.criterion)
        for key in ("log_scale", "log_weight"):
            v = float(getattr(self, key))
            if v:
                cfg[key] = v
        return cfg

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
        """Score map r_theta(p) of every patch: (B, 1, H - s + 1, W - s + 1), with the fitted
        scale and weight, ``e^(a - 2s) r(e^s p)``, where the model has them."""
        s, a = self.log_scale, self.log_weight
        if not (torch.is_tensor(s) or torch.is_tensor(a) or s or a):
            return patch_scores(self.potential(x), self.criterion)
        s, a = torch.as_tensor(s, dtype=x.dtype, device=x.device), torch.as_tensor(a, dtype=x.dtype, device=x.device)
        return torch.exp(a - 2 * s) * patch_scores(self.potential(x * torch.exp(s)), self.criterion)

    def regularizer(self, x: torch.Tensor, boundary: str = "reflect", concavity: float = 0.0,
                    score_ref: float = 0.0, symmetric: bool = False) -> torch.Tensor:
        """R(x): the mean (shaped) patch score of each image, shape (B,).

        ``boundary="valid"`` averages the patches inside the image (the paper's R);
        ``"reflect"`` / ``"replicate"`` those of the image padded by s - 1 mirrored /
        repeated pixels (see :func:`pad_boundary`).
        ``concavity`` and ``score_ref`` shape the scores first (:func:`shape_scores`).
        ``symmetric``: ``R_sym(x) = 1/8 sum_g R(g x)`` over the 8 flips and quarter turns g
        (:func:`dihedral`), a regulariser invariant to them.
        """
        return Regularizer(self, boundary=boundary, concavity=concavity, score_ref=score_ref, symmetric=symmetric)(x)


#: Boundaries of R: the image padded by s - 1 pixels mirrored ("reflect") or repeated
#: ("replicate"), or only the patches inside it ("valid", the paper's).
BOUNDARIES = ("reflect", "replicate", "valid")


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


#: Largest exponent of the shaping; beyond it psi goes on linearly, with slope e^30: finite in float32
#: even summed over the patches of a large image (the shipped tables never come near: kappa <= 0.7).
SHAPE_EXP_MAX = 30.0


def shape_scores_unchecked(r: torch.Tensor, k: torch.Tensor, score_ref: float) -> torch.Tensor:
    """:func:`shape_scores` without the checks (hot path: ``k`` validated once by the caller)."""
    safe = torch.where(k > 0, k, torch.ones_like(k))  # no 0/0, even in the unused branch of where
    z = -safe * (r - score_ref)
    zc = z.clamp(max=SHAPE_EXP_MAX)  # far below score_ref: the tangent line there, not an overflow
    return torch.where(k > 0, score_ref - torch.expm1(zc) / safe - torch.exp(zc) * (z - zc) / safe, r)


def boundary_padding(s: int, boundary: str) -> int:
    """Pixels added on each side by :func:`pad_boundary` (s - 1, or 0 for "valid")."""
    if boundary not in BOUNDARIES:
        raise ValueError(f"unknown boundary {boundary!r}; use {', '.join(BOUNDARIES)}")
    return 0 if boundary == "valid" else s - 1


def check_image_size(x: torch.Tensor, s: int) -> None:
    """Raise ValueError unless the image x (..., H, W) holds at least one s x s patch."""
    if min(x.shape[-2:]) < s:
        raise ValueError(f"image {tuple(x.shape[-2:])} is smaller than the critic's {s}x{s} receptive field")


def pad_boundary(x: torch.Tensor, s: int, boundary: str) -> torch.Tensor:
    """The image on which R averages s x s patch scores.

    ``"valid"``: x itself, so pixels near the border lie in fewer patches (down to one
    at a corner) and get less regularisation. ``"reflect"``: x mirrored by s - 1 pixels
    on each side (without repeating the edge); ``"replicate"``: its edge pixels repeated
    s - 1 times. With either, every pixel lies in at least s^2 patches. Differentiable
    (the gradient of a padded pixel flows back to the pixel it copies); needs an image
    of at least s x s pixels.
    """
    p = boundary_padding(s, boundary)
    check_image_size(x, s)
    return F.pad(x, (p, p, p, p), mode=boundary) if p else x


class Regularizer:
    """R(x) of a critic, with its boundary, score shaping, symmetry and per-channel use.

    The one implementation of R: :meth:`PatchCritic.regularizer` and the solvers both use it.
    Calling it, ``reg(x)``, gives R(x) of shape (B,), differentiable with respect to ``x`` and
    to the critic's weights (for training through the solver, or as a DeepInverse prior);
    :meth:`value_and_grad` gives R(x) and grad_x R(x) without keeping a graph, in exact tiles
    when the image is large.

    Parameters
    ----------
    model : a :class:`PatchCritic`.
    per_channel : apply a 1-channel critic to each channel of a colour image,
        ``R(x) = mean_c R(x_c)``.
    max_memory : bytes allowed for the activations of one gradient evaluation;
        larger images are processed in exact tiles. None: no tiling.
    precision : ``"fp32"`` or ``"bf16"`` (autocast: about 2x faster on CPU, gradient
        relative error about 2%; see benchmarks/restore_speed.py for its PSNR cost).
    boundary : ``"reflect"`` (R on the image mirrored by s - 1 pixels), ``"replicate"``
        (its edge pixels repeated s - 1 times) or ``"valid"``
        (the paper's: only patches inside the image); see :func:`pad_boundary`.
    compile : run the critic through ``torch.compile`` (one-off compilation of about
        25 s on CPU; measured no faster there, see benchmarks/restore_speed.py).
    concavity, score_ref : shape the patch scores before averaging,
        ``R(x) = mean_p psi(r(p))`` (:func:`shape_scores`; 0: the paper's R);
        ``concavity`` may hold one value per image.
    symmetric : ``R_sym(x) = 1/8 sum_g R(g x)`` over the flips and quarter turns g of the
        pixel grid (:func:`dihedral`); 8 times the cost of R.

    Example
    -------
    >>> import torch
    >>> reg = Regularizer(PatchCritic(width=8))
    >>> x = torch.rand(2, 1, 24, 24)
    >>> value, grad = reg.value_and_grad(x)
    >>> bool(torch.allclose(value, reg(x))), grad.shape
    (True, torch.Size([2, 1, 24, 24]))
    """

    def __init__(self, model: PatchCritic, per_channel: bool = False,
                 max_memory: float | None = None, precision: str = "fp32",
                 boundary: str = "reflect", compile: bool = False,
                 concavity: float | torch.Tensor = 0.0, score_ref: float = 0.0,
                 symmetric: bool = False) -> None:
        kappa = check_concavity(torch.as_tensor(concavity, dtype=torch.float64).flatten())
        if precision not in ("fp32", "bf16"):
            raise ValueError(f"unknown precision {precision!r}; use fp32 or bf16")
        self.pad = boundary_padding(model.receptive_field, boundary)  # validates the boundary name
        self.model, self.per_channel, self.max_memory = model, per_channel, max_memory
        self.precision, self.boundary = precision, boundary
        self.kappa = kappa if kappa.any() else None  # None: the paper's R, nothing to shape
        self.score_ref, self.symmetric = score_ref, symmetric
        self.net = torch.compile(model) if compile else model
        self.s = model.receptive_field

    @property
    def dtype(self) -> torch.dtype:
        """The critic's dtype now (it follows ``model.double()``): images are cast to it."""
        return next(self.model.parameters()).dtype

    def _prepare(self, x: torch.Tensor) -> torch.Tensor:
        c = self.model.in_channels
        if x.dim() != 4:
            raise ValueError(f"expected a (B, C, H, W) tensor, got shape {tuple(x.shape)}")
        if self.kappa is not None and self.kappa.numel() not in (1, x.shape[0]):
            raise AlrError(f"concavity holds {self.kappa.numel()} values for a batch of {x.shape[0]} images: "
                           "give one, or one per image")
        if x.shape[1] == c:
            return x
        if self.per_channel and c == 1:
            return x.reshape(-1, 1, *x.shape[-2:])
        raise ValueError(f"the model expects {c} channel(s) but the image has {x.shape[1]}"
                         + ("; use per_channel=True (--per-channel) to apply it to each channel"
                            if c == 1 else ""))

    def bytes_per_pixel(self) -> float:
        """Rough activation memory of forward + backward per output pixel (float32)."""
        return 4.0 * 3 * max(sum(self.model.widths), 1)

    def tile_size(self, x: torch.Tensor) -> int | None:
        """Output tile side under ``max_memory``, or None if the image fits whole."""
        if self.max_memory is None:
            return None
        xb = self._prepare(x)
        per_px = self.bytes_per_pixel() * xb.shape[0] * x.element_size() / 4
        side = int(math.sqrt(self.max_memory / per_px)) - (self.s - 1)
        if side >= max(xb.shape[-2:]) + 2 * self.pad - self.s + 1:
            return None
        return max(side, 16)

    def select(self, idx: list[int]) -> "Regularizer":
        """The regulariser of the images ``idx`` of a batch (their own shaping)."""
        out = copy.copy(self)
        if self.kappa is not None and self.kappa.numel() > 1:
            out.kappa = self.kappa[idx]
        return out

    def _kappa(self, nb: int, like: torch.Tensor) -> torch.Tensor | None:
        """The concavity of each of the ``nb`` critic inputs (repeated over channels under per_channel)."""
        if self.kappa is None:
            return None
        return self.kappa.to(like).repeat_interleave(nb // self.kappa.numel()).view(-1, 1, 1, 1)

    def _mean_scores(self, sub: torch.Tensor, kappa: torch.Tensor | None, count: int) -> torch.Tensor:
        """Sum of the (shaped) scores of the patches of ``sub``, divided by ``count``, per input."""
        with torch.autocast(sub.device.type, dtype=torch.bfloat16, enabled=self.precision == "bf16"):
            r = self.net(sub.to(self.dtype)).to(sub.dtype)  # a float64 image: the critic in its own dtype
        if kappa is not None:
            r = shape_scores_unchecked(r, kappa, self.score_ref)
        return r.sum(dim=(1, 2, 3)) / count

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """R(x), shape (B,), differentiable (no tiling)."""
        if self.symmetric:
            return sum(self._plain(dihedral(x, k)) for k in range(DIHEDRAL)) / DIHEDRAL
        return self._plain(x)

    def _plain(self, x: torch.Tensor) -> torch.Tensor:
        xb = pad_boundary(self._prepare(x), self.s, self.boundary)
        count = (xb.shape[-2] - self.s + 1) * (xb.shape[-1] - self.s + 1)
        return self._mean_scores(xb, self._kappa(xb.shape[0], xb), count).view(x.shape[0], -1).mean(1)

    def value_and_grad(self, x: torch.Tensor, need_grad: bool = True) -> tuple[torch.Tensor, torch.Tensor | None]:
        """R(x) of shape (B,) and grad_x R(x) (or None), exact under tiling."""
        if not self.symmetric:
            return self._value_and_grad(x, need_grad)
        r, grad = 0.0, None
        for k in range(DIHEDRAL):  # grad R_sym(x) = 1/8 sum_g g^-1 grad R(g x)
            rk, gk = self._value_and_grad(dihedral(x, k), need_grad)
            r = r + rk
            if need_grad:
                gk = dihedral(gk, k, inverse=True)
                grad = gk if grad is None else grad + gk
        return r / DIHEDRAL, None if grad is None else grad / DIHEDRAL

    def _value_and_grad(self, x: torch.Tensor, need_grad: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
        b = x.shape[0]
        s, p = self.s, self.pad
        with torch.enable_grad():
            leaf = self._prepare(x).detach().requires_grad_(need_grad and p > 0)
            xb = pad_boundary(leaf, s, self.boundary)
        nb = xb.shape[0]
        kappa = self._kappa(nb, xb)
        ho, wo = xb.shape[-2] - s + 1, xb.shape[-1] - s + 1
        tile = self.tile_size(x)
        total = xb.new_zeros(nb)
        grad = torch.zeros(xb.shape, dtype=xb.dtype, device=xb.device) if need_grad else None
        steps = [(0, ho, 0, wo)] if tile is None else [
            (i, min(i + tile, ho), j, min(j + tile, wo))
            for i in range(0, ho, tile) for j in range(0, wo, tile)]
        for i0, i1, j0, j1 in steps:
            sub = xb[..., i0:i1 + s - 1, j0:j1 + s - 1].detach().contiguous(memory_format=torch.channels_last)
            with torch.enable_grad():
                sub.requires_grad_(need_grad)
                score = self._mean_scores(sub, kappa, ho * wo)
                if need_grad:
                    (g,) = torch.autograd.grad(score.sum(), sub)
                    grad[..., i0:i1 + s - 1, j0:j1 + s - 1] += g.to(xb.dtype)
            total += score.detach()
        r = total.view(b, -1).mean(1)
        if grad is not None:
            if p:  # adjoint of the padding: fold the mirrored border back onto the image
                (grad,) = torch.autograd.grad(xb, leaf, grad)
            grad = grad.reshape(x.shape) / (nb // b)
        return r, grad
