"""DeepInverse interop: ``alr`` critics as DeepInverse priors, physics in both directions,
DeepInverse forward models as the degradation that trains a critic.

Importable only where DeepInverse is installed (``make test-deepinv`` builds such an
environment; docs/deepinverse.md).

**The lambda scaling.** ``alr`` minimises the per-pixel energy::

    E(x) = 1/(2n) ||A x - y||^2 + lam R(x),        n = C * H * W pixels of x

DeepInverse's ``optim`` minimises ``f(x) + lambda g(x)``, with the data term
``deepinv.optim.L2(sigma=s)``: ``f(x) = 1/(2 s^2) ||A x - y||^2`` (``s = 1`` by default).
Multiplying E by ``n / s^2`` changes nothing to its minimisers, so with ``g = R``
(:class:`CriticPrior`) both solve the same problem when::

    lambda = n * lam / s^2                                  (deepinv_lambda)

The gradient steps differ by the same factor: DeepInverse's ``stepsize`` ``gamma`` on ``f + lambda g``
is the step ``gamma`` of ``alr.solver.minimize(..., method="gd", step=gamma)`` when ``s = 1``. Likewise
``prox_{gamma R}`` (:meth:`CriticPrior.prox`) minimises ``alr``'s denoising energy with ``lam = gamma / n``.

Example
-------
>>> import torch, deepinv as dinv, alr
>>> from alr.integrations.deepinv import CriticPrior, deepinv_lambda
>>> prior = CriticPrior("gray", sigma=0.1)                 # R with gray's shaping at sigma 0.1
>>> x = torch.rand(1, 1, 32, 32)
>>> prior(x).shape, prior.grad(x).shape
(torch.Size([1]), torch.Size([1, 1, 32, 32]))
>>> deepinv_lambda(prior.lam, x[0].numel()) == x[0].numel() * prior.lam
True
"""
from __future__ import annotations

from typing import Callable

import deepinv
import torch

from ..critic import PatchCritic, Regularizer
from ..errors import AlrError
from ..physics import LinearOperator, as_operator
from ..pretrained import lam_for, load, shaping, solver_options
from ..solver import minimize
from ..solver import restore as _alr_restore
from ..solver import task_of as _alr_task_of


def deepinv_lambda(lam: float, pixels: int, l2_sigma: float = 1.0) -> float:
    """DeepInverse's ``lambda`` for ``alr``'s ``lam`` on images of ``pixels`` = C*H*W values, with the
    data term ``deepinv.optim.L2(sigma=l2_sigma)``: ``pixels * lam / l2_sigma^2`` (module docstring).

    >>> round(deepinv_lambda(1e-4, 3 * 64 * 64), 6)
    1.2288
    """
    return pixels * lam / l2_sigma ** 2


class CriticPrior(deepinv.optim.Prior):
    """An ``alr`` critic's regulariser as an explicit DeepInverse prior: ``g(x) = R(x)``.

    ``fn(x)`` is :class:`alr.Regularizer` (the model's boundary and score shaping), one value per
    image; ``grad(x)`` comes from autograd: under ``torch.no_grad()`` (how DeepInverse runs an
    algorithm for inference) it is :meth:`alr.Regularizer.value_and_grad`, exact and tiled under
    ``max_memory``; with gradients enabled (unrolled training) it is DeepInverse's autograd
    gradient with its graph. ``prox`` is solved by ``alr``'s L-BFGS (:meth:`prox`), so PGD, HQS,
    ADMM... take the prior whatever their step.

    Parameters
    ----------
    model : a shipped model name (``"gray"``, ``"color"``), a model file or a :class:`alr.PatchCritic`.
    sigma : noise level whose table entry sets the shaping (``concavity``, ``score_ref``) and
        :attr:`lam`; None: R without shaping, ``lam`` None. The boundary is the model's.
    task : which of the model's tables (``"denoise"``, ``"deblur"``, ``"inpaint"``, ``"sr"``).
    lam : ``alr``'s per-pixel weight (default: the table's at ``sigma``); give DeepInverse
        ``deepinv_lambda(prior.lam, x[0].numel())``.
    boundary, concavity, symmetric, per_channel, max_memory : as in :class:`alr.Regularizer`
        (None: the table's or the default). A ``concavity`` > 0 shapes around the table's
        ``score_ref``, whatever ``sigma``; a model without one is refused (:class:`alr.AlrError`).
    prox_iters : L-BFGS iterations of :meth:`prox` (DeepInverse's algorithms pass it no options).

    ``fn``, ``grad`` and ``prox`` take any floating dtype (``fn`` and ``grad`` computed in the critic's
    dtype, ``prox`` in float32; returned in the input's).
    """

    def __init__(self, model: "str | PatchCritic" = "gray", sigma: float | None = None, task: str = "denoise",
                 lam: float | None = None, *, boundary: str | None = None, concavity: float | None = None,
                 symmetric: bool = False, per_channel: bool = False, max_memory: float | None = None,
                 prox_iters: int = 50) -> None:
        super().__init__()
        self.explicit_prior, self.prox_iters = True, prox_iters
        self.critic = model if isinstance(model, PatchCritic) else load(model)  # a submodule: .to() moves it
        opts = solver_options(self.critic, task, sigma)
        self.lam = lam if lam is not None or sigma is None else lam_for(self.critic, task, sigma)
        kappa, score_ref = shaping(self.critic, task, sigma, concavity)
        self.reg = Regularizer(self.critic, per_channel=per_channel, max_memory=max_memory,
                               boundary=boundary or opts.get("boundary", "reflect"), concavity=kappa,
                               score_ref=score_ref, symmetric=symmetric)

    def fn(self, x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        """R(x), shape (B,)."""
        return self.reg(x.to(self.reg.dtype)).to(x.dtype)

    def grad(self, x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        """grad_x R(x), shape of ``x``; ``x.requires_grad`` is left as it was."""
        if torch.is_grad_enabled():
            return super().grad(x if x.requires_grad else x.detach(), *args, **kwargs)
        return self.reg.value_and_grad(x.to(self.reg.dtype))[1].to(x.dtype)

    def prox(self, x: torch.Tensor, *args, gamma: float | torch.Tensor = 1.0, **kwargs) -> torch.Tensor:
        """``prox_{gamma R}(x) = argmin_z 1/2 ||z - x||^2 + gamma R(z)`` per image (``gamma`` a scalar or one
        per image), DeepInverse's signature: ``alr``'s denoising energy ``1/(2n) ||z - x||^2 + (gamma / n) R(z)``
        (n = C*H*W) minimised from ``z = x`` by :func:`alr.solver.minimize` (``prox_iters`` L-BFGS iterations)
        with this prior's boundary, shaping and symmetry; not clipped. R is not convex: a local minimiser.
        DeepInverse's inner-loop options (``stepsize_inter``...) are ignored. The result keeps no graph: an
        ``x`` that requires grad under autograd is refused (:class:`alr.AlrError`; unroll GD, whose
        :meth:`grad` keeps its graph).
        """
        if torch.is_grad_enabled() and x.requires_grad:
            raise AlrError("CriticPrior.prox keeps no graph (alr's solver): to train through the prior, unroll GD")
        reg = self.reg
        z, _ = minimize(x, None, self.critic, torch.as_tensor(gamma).detach().flatten() / x[0].numel(),
                        method="lbfgs", iters=self.prox_iters, clip=False, per_channel=reg.per_channel,
                        max_memory=reg.max_memory, boundary=reg.boundary, score_ref=reg.score_ref,
                        concavity=0.0 if reg.kappa is None else reg.kappa, symmetric=reg.symmetric)
        return z.to(x.device, x.dtype)


class AlrPhysics(deepinv.physics.LinearPhysics):
    """An ``alr`` operator (or any object with ``A`` and ``A_adjoint``) as a DeepInverse
    ``LinearPhysics``, with an optional DeepInverse ``noise_model`` (:func:`to_deepinv`).

    DeepInverse's methods built on ``A`` and ``A_adjoint`` (``A_dagger``, ``prox_l2``,
    ``compute_norm``...) then work on it; :attr:`op` is the ``alr`` operator.
    """

    def __init__(self, op, noise_model: deepinv.physics.NoiseModel | None = None, **kwargs) -> None:
        super().__init__(noise_model=noise_model or deepinv.physics.ZeroNoise(), **kwargs)
        self.op = as_operator(op)

    def A(self, x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        return self.op.A(x)

    def A_adjoint(self, y: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        return self.op.A_adjoint(y)


def to_deepinv(op, noise_model: deepinv.physics.NoiseModel | None = None) -> AlrPhysics:
    """``op`` (an :mod:`alr.physics` operator) as a DeepInverse ``LinearPhysics`` whose ``physics(x)``
    is ``noise_model(A x)``. Note that ``alr``'s blur is circular (periodic boundary), DeepInverse's
    ``Blur`` defaults to ``padding="valid"``.

    >>> import torch
    >>> from alr.physics import Blur, gaussian_kernel
    >>> blur = to_deepinv(Blur(gaussian_kernel(1.0)), deepinv.physics.GaussianNoise(0.05))
    >>> blur(torch.rand(1, 1, 16, 16)).shape
    torch.Size([1, 1, 16, 16])
    """
    return AlrPhysics(op, noise_model)


def from_deepinv(physics) -> LinearOperator:
    """A DeepInverse physics as an ``alr`` operator: the ``alr`` operator itself for :func:`to_deepinv`'s,
    else :func:`alr.physics.as_operator` (``A`` and ``A_adjoint`` called as they are)."""
    return physics.op if isinstance(physics, AlrPhysics) else as_operator(physics)


#: DeepInverse physics classes and the ``alr`` table (task) that fits them.
TASKS = ((deepinv.physics.Denoising, "denoise"), (deepinv.physics.Blur, "deblur"),
         (deepinv.physics.BlurFFT, "deblur"), (deepinv.physics.Inpainting, "inpaint"),
         (deepinv.physics.Downsampling, "sr"))


def task_of(physics) -> str | None:
    """The ``alr`` lambda table that fits a DeepInverse physics (or an ``alr`` operator); None for
    an operator ``alr`` has no table for (tomography, MRI, upsampling...: give ``lam``)."""
    if isinstance(physics, AlrPhysics):
        return _alr_task_of(physics.op)
    if isinstance(physics, getattr(deepinv.physics, "Upsampling", ())):  # a Downsampling subclass: A upsamples
        return None
    return next((task for cls, task in TASKS if isinstance(physics, cls)), _alr_task_of(physics))


def noise_sigma(physics) -> float | list[float] | None:
    """The standard deviation of a physics' ``GaussianNoise``: one value, or one per image when
    they differ (a batched ``sigma``); None for another noise model (then estimated by :func:`restore`).
    DeepInverse's ``Denoising()`` without a noise model holds ``GaussianNoise(sigma=0.1)``: 0.1, not None.

    >>> noise_sigma(deepinv.physics.Denoising())
    0.1000...
    >>> noise_sigma(deepinv.physics.Denoising(deepinv.physics.PoissonNoise())) is None
    True
    """
    noise = getattr(physics, "noise_model", None)
    if not isinstance(noise, deepinv.physics.GaussianNoise):
        return None
    s = torch.as_tensor(noise.sigma).flatten().tolist()
    return s[0] if len(set(s)) == 1 else s


def restore(y: torch.Tensor, physics, model: "str | PatchCritic | None" = None, sigma: float | None = None,
            task: str | None = None, **kwargs) -> torch.Tensor:
    """:func:`alr.restore` of measurements ``y = physics(x)`` of a DeepInverse physics, its table
    (:func:`task_of`) and noise level (:func:`noise_sigma`) read from the physics unless given.

    For an operator ``alr`` has no table for, give ``lam=`` (``alr``'s per-pixel weight). A
    ``Denoising()`` built without a noise model reads sigma 0.1 (DeepInverse's default noise): give
    ``sigma=`` when that is not its noise. Other keyword arguments: those of :func:`alr.restore`.
    """
    sigma = noise_sigma(physics) if sigma is None else sigma
    return _alr_restore(y, model, sigma=sigma, task=task or task_of(physics), physics=from_deepinv(physics),
                        **kwargs)


class PhysicsDegradation:
    """Degraded training patches made by a DeepInverse physics with its noise model:
    ``q = crop(to_image(physics(p)))``, for :class:`alr.data.PatchPairs` / :func:`alr.data.make_patch_pairs`.

    ``physics(p)`` is ``noise_model(A p)`` on patches of side ``s + 2 * margin``; ``margin`` is
    what the operator needs beyond the patch for its centre to be exact (the kernel's radius for a
    blur). Measurements of another shape (downsampling, tomography) are brought back to the
    image by ``to_image`` (for instance ``physics.A_dagger`` or ``physics.A_adjoint``), so that the
    critic learns what the degraded images that the solver starts from look like. The noise is
    drawn from the global RNG seeded by the batch's ``generator`` (a seed fixes the stream), unless
    the noise model has its own ``rng``.

    >>> import torch, deepinv as dinv
    >>> physics = dinv.physics.Denoising(dinv.physics.PoissonGaussianNoise(gain=0.05, sigma=0.02))
    >>> deg = PhysicsDegradation(physics)
    >>> q = deg(torch.rand(4, 1, 13, 13), torch.Generator().manual_seed(0))
    >>> q.shape, deg.describe()
    (torch.Size([4, 1, 13, 13]), 'DeepInverse Denoising with PoissonGaussianNoise(gain=0.05, sigma=0.02)')
    """

    def __init__(self, physics, margin: int = 0,
                 to_image: Callable[[torch.Tensor], torch.Tensor] | None = None) -> None:
        if margin < 0:
            raise ValueError(f"margin must be >= 0, got {margin}")
        self.physics, self.margin, self.to_image = physics, int(margin), to_image

    def __call__(self, patches: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Degrade patches of side ``s + 2 * margin``; returns the centre ``s x s`` of each."""
        seed = int(torch.randint(2 ** 62, (1,), generator=generator))
        gpus = range(torch.cuda.device_count()) if torch.cuda.is_initialized() else []  # seeded below too
        with torch.random.fork_rng(devices=gpus), torch.no_grad():
            torch.manual_seed(seed)
            y = self.physics(patches)
            q = y if self.to_image is None else self.to_image(y)
        if q.shape[:2] != patches.shape[:2] or min(q.shape[-2:]) < patches.shape[-1] - 2 * self.margin:
            raise ValueError(f"PhysicsDegradation: the physics turns patches {tuple(patches.shape)} into "
                             f"{tuple(q.shape)}: give margin= (what it trims on each side, e.g. a valid blur's "
                             "kernel radius) or to_image= (e.g. physics.A_dagger, measurements of another shape)")
        s = patches.shape[-1] - 2 * self.margin
        top, left = (q.shape[-2] - s) // 2, (q.shape[-1] - s) // 2
        return q[..., top:top + s, left:left + s]

    def describe(self) -> str:
        """One line naming the physics and its noise, for the model's metadata."""
        noise = getattr(self.physics, "noise_model", None)
        buffers = noise.named_buffers(recurse=False) if isinstance(noise, torch.nn.Module) else ()
        params = ", ".join(f"{k}={float(v.flatten()[0]):g}" for k, v in buffers
                           if v.numel() and k != "initial_random_state")
        return (f"DeepInverse {type(self.physics).__name__} with {type(noise).__name__}"
                + (f"({params})" if params else ""))
