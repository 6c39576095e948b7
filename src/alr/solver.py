"""Restoration by minimising the variational energy with the learned regularizer.

For measurements ``y = A x + n`` we solve (eq. 2 of the paper)::

    x_hat = argmin_x  E(x),   E(x) = 1/(2 n) ||A x - y||^2 + lam * R(x)

where ``n`` is the number of pixels of ``x`` (C * H * W). This is the paper's
``1/2 ||Ax - y||^2 + lambda R(x)`` divided by ``n``, i.e. ``lambda = n * lam``:
the normalisation makes ``lam`` independent of the image size, so one value
per noise level serves every image. The gradient is::

    grad E(x) = (A^T (A x - y) + n lam grad R(x)) / n

The data term is Gaussian by default; ``fidelity=`` replaces it, for instance by the
censored likelihood of measurements clipped to [0, 1] (:mod:`alr.fidelity`), and
``A^T (A x - y)`` becomes ``A^T F'(A x)``.

Methods (``method=``):

* ``"adam"``: the paper's solver (sec. 3.3): Adam on the pixels with betas (0.9, 0.999),
  learning rate decaying exponentially from ``lr0`` to ``lr1`` (default 300 iterations,
  0.01 -> 1e-4; the authors' released code uses 50 iterations, 0.1 -> 0.01, which restores
  0.3-0.5 dB worse than the default L-BFGS with our critics, docs/negative-results.md).
* ``"gd"``: explicit gradient steps of eq. (5),
  ``x <- x - tau (A^T(Ax - y) + n lam grad R(x))``, with a fixed ``step`` or an
  Armijo backtracking line search when ``step`` is None.
* ``"agd"``: Nesterov-accelerated gradient with backtracking and adaptive
  restart (O'Donoghue & Candes 2015) on the same smooth objective.
* ``"lbfgs"``: limited-memory BFGS with a strong-Wolfe line search.
* ``"nmapg"``: the nonmonotone accelerated proximal gradient method of Li & Lin (2015, Alg. 2
  with the line search of their Alg. 4), whose prox is the identity here (E is smooth):
  Nesterov extrapolation, a Barzilai-Borwein step with backtracking that accepts the
  extrapolated step against a running average of past energies, and a plain gradient step
  from the last iterate as a safeguard; converges to a critical point of the nonconvex E. The
  solver of the comparative study of learned regularizers (Hertrich et al. 2025).

With ``tol > 0`` every method stops an image once ``||x_{k+1} - x_k|| / ||x_k|| < tol``, so that
with enough ``iters`` the minimiser of the energy, not an early stop, decides the result
(``nmapg`` or ``lbfgs`` with ``tol`` 1e-5 and a few hundred iterations).

Boundary (``boundary=``): the paper's R averages the scores of the patches that
lie inside the image (``"valid"``), so a pixel k < s - 1 pixels from the border is
seen by fewer patches and gets less regularisation: on 180x180 images at sigma 0.1
the 12-pixel border band ends 4-5 dB worse than the interior. The default
``"reflect"`` evaluates R on the image mirrored by s - 1 pixels on each side,
``R(x) = mean_{p in P(pad(x))} r(p)``, so that every pixel is seen by at least s^2
patches; its gradient is the adjoint of the padding applied to the gradient on the
padded image (measured: +0.8 dB at the same lam, +1.7 dB with lam recalibrated).
``"replicate"`` pads with repeated edge pixels instead (measured 0.05-0.19 dB below
``"reflect"``, docs/negative-results.md).

Shaping (``concavity=``, ``score_ref=``): ``R(x) = mean_p psi(r(p))`` with the concave
``psi`` of :func:`alr.critic.shape_scores`, ``psi'(r) = exp(-kappa (r - c))``: each patch's
gradient is weighted by how clean the critic finds it, so flat areas are smoothed more and
the edges and textures that the critic scores like noise less. ``kappa = 0`` (default) is the
paper's R; the shipped tables choose kappa per noise level (0.7 at sigma 0.1 for ``gray``).

The critic's weights are frozen; only the image is optimised. Gradients of R
are computed in tiles when the image is large (``max_memory``): R is a mean of
local scores, so summing tile contributions with a (s - 1)-pixel halo gives
exactly the full-image gradient.
"""
from __future__ import annotations

import contextlib
import itertools
import math
import numbers
import threading
from dataclasses import dataclass, field
from typing import Callable, Sequence

import torch
from tqdm.auto import tqdm

from .critic import PatchCritic, Regularizer, check_image_size
from .device import available_memory, resolve_device
from .errors import AlrError
from .fidelity import Gaussian
from .images import check_image
from .modelfile import METHODS
from .physics import LinearOperator, as_operator

#: Device types on which the L-BFGS of a batch solves its images one after another instead of
#: evaluating their energies together (:func:`_lbfgs`): on the CPU a batched critic call is no
#: faster per image (benchmarks/batched_energy.py).
SEQUENTIAL_DEVICES = ("cpu",)
#: Image-sized float32 vectors a solve keeps besides the critic's activations (which ``max_memory``
#: bounds): L-BFGS its 10 pairs of curvature vectors and about 10 work vectors, the others about 10.
SOLVER_VECTORS = {"lbfgs": 30, "adam": 10, "gd": 10, "agd": 12, "nmapg": 14}


def check_solve_memory(x: torch.Tensor, method: str, max_memory: float | None) -> None:
    """Refuse (:class:`AlrError`) a solve of the images ``x`` whose vectors
    (:data:`SOLVER_VECTORS`) and activation budget ``max_memory`` need more memory than is
    available now on ``x``'s device: it would fail or swap after a long start, not restore."""
    need = x.numel() * 4 * SOLVER_VECTORS[method] + (max_memory or 0)
    free = available_memory(x.device)
    if free is not None and need > free:
        raise AlrError(f"restoring {x.shape[0]} image(s) of {x.shape[-1]}x{x.shape[-2]} pixels needs about "
                       f"{need / 2 ** 30:.1f} GiB ({SOLVER_VECTORS[method]} image-sized vectors of {method} and "
                       f"the activation budget); {free / 2 ** 30:.1f} GiB are available on {x.device}")


@dataclass
class History:
    """Per-iteration trace of the solver (means over the batch)."""

    objective: list[float] = field(default_factory=list)
    data: list[float] = field(default_factory=list)
    reg: list[float] = field(default_factory=list)
    grad_norm: list[float] = field(default_factory=list)
    iterations: int = 0
    converged: bool = False
    callback: Callable[[int, torch.Tensor], None] | None = field(default=None, repr=False)

    def record(self, e: "Energy") -> None:
        """Append the batch means of one evaluation ``e``."""
        self.objective.append(float(e.value.mean()))
        self.data.append(float(e.data.mean()))
        self.reg.append(float(e.reg.mean()))
        self.grad_norm.append(float(e.grad.flatten(1).norm(dim=1).mean()))


@dataclass
class Energy:
    """E(x) per image, its two terms, and ``n * grad E(x)`` (the scaled gradient)."""

    value: torch.Tensor
    data: torch.Tensor
    reg: torch.Tensor
    grad: torch.Tensor

    def select(self, j: int) -> "Energy":
        """The energy of image ``j`` of the batch, as a batch of one."""
        return Energy(*(t[j:j + 1] for t in (self.value, self.data, self.reg, self.grad)))

    def where(self, ok: torch.Tensor, other: "Energy") -> "Energy":
        """This energy for the images where ``ok`` (B,) holds, ``other``'s for the rest."""
        return Energy(*(torch.where(ok.view(-1, *[1] * (a.dim() - 1)), a, b)
                        for a, b in zip((self.value, self.data, self.reg, self.grad),
                                        (other.value, other.data, other.reg, other.grad))))


class Problem:
    """The variational energy E(x) for measurements ``y`` of ``physics`` (data term ``fidelity``)."""

    def __init__(self, y: torch.Tensor, physics: LinearOperator, reg: Regularizer,
                 lam: torch.Tensor, fidelity=None) -> None:
        self.y, self.physics, self.reg, self.lam = y, physics, reg, lam
        self.fidelity = fidelity or Gaussian()

    def select(self, idx: list[int]) -> "Problem":
        """The energy of the images ``idx`` alone (the images of a batch are independent)."""
        return Problem(self.y[idx], self.physics.select(idx, len(self.y)), self.reg.select(idx), self.lam[idx],
                       self.fidelity.select(idx))

    def energy(self, x: torch.Tensor, need_grad: bool = True) -> Energy:
        """E(x) per image, its terms and ``n grad E(x)`` (``need_grad=False``: no gradient)."""
        n = x[0].numel()
        ax = self.physics.A(x)
        data, g = self.fidelity(ax, self.y)
        data = data * (ax[0].numel() / n)  # the fidelity divides by the measurement's size, E by the image's
        r, gr = self.reg.value_and_grad(x, need_grad)
        lam = self.lam
        grad = None
        if need_grad:
            grad = self.physics.A_adjoint(g) + (n * lam).view(-1, 1, 1, 1) * gr
        return Energy(data + lam * r, data, r, grad)


def _per_image_weight(lam: float | torch.Tensor, b: int, x: torch.Tensor, name: str = "lam") -> torch.Tensor:
    """A per-image weight (``lam``, ``concavity``): a scalar or B values, finite and >= 0, as (B,)."""
    lam = torch.as_tensor(lam, dtype=x.dtype, device=x.device).flatten()
    if lam.numel() == 1:
        lam = lam.expand(b)
    if lam.numel() != b:
        raise ValueError(f"{name} must be a scalar or have one value per image ({b}), got {lam.numel()}")
    if not torch.isfinite(lam).all() or (lam < 0).any():
        raise ValueError(f"{name} must be finite and >= 0")
    return lam.contiguous()


def minimize(y: torch.Tensor, physics: LinearOperator | None, model: PatchCritic,
            lam: float | torch.Tensor, method: str = "adam", iters: int | None = None,
            lr0: float = 0.01, lr1: float = 1e-4, step: float | list[float] | None = None, tol: float = 0.0,
            x0: torch.Tensor | None = None, per_channel: bool = False,
            max_memory: float | None = None, precision: str = "fp32", boundary: str = "reflect",
            compile: bool = False, concavity: float | torch.Tensor = 0.0, score_ref: float = 0.0,
            symmetric: bool = False, clip: bool = True, fidelity=None,
            progress: bool = False, device: str | torch.device | None = None,
            callback: Callable[[int, torch.Tensor], None] | None = None) -> tuple[torch.Tensor, History]:
    """Minimise ``E(x) = 1/(2n) ||A x - y||^2 + lam R(x)`` with every setting explicit.

    The low-level solver: :func:`restore` resolves ``lam`` and the solver settings from the
    model's tables and calls this. See the module docstring for the methods.

    Parameters
    ----------
    y : measurements (B, C, h, w).
    physics : forward operator (None: denoising): an :class:`alr.physics.LinearOperator`, or any
        object with ``A`` and ``A_adjoint`` (a DeepInverse physics), see :func:`alr.physics.as_operator`.
    model : the critic defining R.
    lam : regularisation weight, scalar or one per image.
    method : ``"adam"`` (paper), ``"gd"``, ``"agd"``, ``"lbfgs"`` or ``"nmapg"``.
    iters : maximum iterations (default: 300 for adam, 100 otherwise).
    lr0, lr1 : Adam learning rate schedule (exponential decay).
    step : fixed gradient step for ``gd`` (None: backtracking), or one step per iteration
        (a list of ``iters`` values: the schedule of an unrolled, fine-tuned model).
    tol : stop an image when ``||x_{k+1} - x_k|| / ||x_k|| < tol`` (0: never; adam, gd and agd stop
        once every image meets it).
    x0 : starting point (default ``physics.init(y)``, i.e. A^T y or better).
    max_memory : activation budget in bytes; larger images are solved in exact tiles.
    precision : ``"fp32"`` or ``"bf16"`` for the critic's forward/backward.
    boundary : ``"reflect"`` (default), ``"replicate"`` or ``"valid"`` (the paper's R); see the
        module docstring.
    compile : compile the critic with ``torch.compile`` (see :class:`Regularizer`).
    concavity, score_ref : concave shaping of the patch scores (:func:`alr.critic.shape_scores`);
        0 (default) is the paper's R. A calibrated model's table supplies both per noise level;
        ``concavity`` is a scalar or one value per image, like ``lam``.
    symmetric : average R over the 8 flips and quarter turns of the image (:class:`Regularizer`):
        8 times slower, about +0.1 dB at sigma 0.1 / 0.2 with the shipped ``gray`` and its table.
    clip : clip the result to [0, 1].
    fidelity : the data term (:mod:`alr.fidelity`); default the Gaussian ``1/2 ||Ax - y||^2``,
        ``ClippedGaussian(sigma)`` for measurements clipped to [0, 1].
    progress : show a progress bar of the iterations.
    device : where to solve (``"cpu"``, ``"cuda"``, ``"cuda:1"``; default: the model's device);
        a device this machine lacks raises ``ValueError``. The result stays there.
    callback : called as ``callback(k, x_k)`` with the point evaluated at each iteration (for
        L-BFGS, at each round of energy evaluations, see ``_lbfgs``).

    Returns the restored image (B, C, H, W) and the :class:`History`.

    Example
    -------
    >>> import torch, alr
    >>> critic = alr.PatchCritic(width=8)
    >>> y = torch.rand(1, 1, 32, 32)
    >>> x, hist = alr.solver.minimize(y, alr.physics.Denoising(), critic, lam=0.01, iters=5)
    >>> x.shape, len(hist.objective)
    (torch.Size([1, 1, 32, 32]), 5)
    """
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
    if iters is not None and not (float(iters).is_integer() and iters >= 1):
        raise AlrError(f"iters must be an integer >= 1, got {iters!r}")
    _check_steps(lr0, lr1, step)
    check_measurement(y, physics)
    physics = as_operator(physics)
    physics.check_measurement(y)
    dev = resolve_device(device) if device else next(model.parameters()).device
    with _held(model, physics, dev):
        y = y.to(dev, torch.float32).contiguous()
        b = y.shape[0]
        x = (physics.init(y) if x0 is None else x0.to(dev, torch.float32)).clone().contiguous()
        if x0 is not None and hasattr(physics, "estimate_lipschitz"):  # a wrapped operator estimates it at init
            physics.estimate_lipschitz(x)
        if not torch.isfinite(x).all():
            raise ValueError("starting point contains NaN or infinite values")
        check_solve_memory(x, method, max_memory)
        prob = Problem(y, physics, Regularizer(model, per_channel, max_memory, precision, boundary, compile,
                                             _per_image_weight(concavity, b, x, "concavity"), score_ref, symmetric),
                       _per_image_weight(lam, b, x), fidelity)
        iters = int(iters) if iters is not None else (300 if method == "adam" else 100)
        if isinstance(step, (list, tuple)) and (method != "gd" or len(step) != iters):
            raise ValueError(f"a step schedule needs method 'gd' and one step per iteration ({iters}), "
                             f"got {len(step)} steps for {method!r}")
        check_image_size(x, model.receptive_field)  # before the progress bar: fail at once
        hist = History(callback=callback)
        lbfgs = method == "lbfgs"  # one bar step per iteration of each image; energy evaluations in the postfix
        bar = tqdm(total=b * iters if lbfgs else iters, disable=not progress, desc=f"restore ({method})",
                   unit="it", dynamic_ncols=True, leave=False)
        solver = {"adam": _adam, "gd": _gd, "agd": _agd, "lbfgs": _lbfgs, "nmapg": _nmapg}[method]
        with torch.no_grad():
            x = solver(prob, x, iters, hist, bar, tol=tol, lr0=lr0, lr1=lr1, step=step)
        bar.close()
        if not torch.isfinite(x).all():
            raise FloatingPointError("restoration diverged (NaN); try a smaller step or lam")
        return (x.clamp(0, 1) if clip else x), hist


def _check_steps(lr0: float, lr1: float, step: float | list[float] | None) -> None:
    """Refuse (:class:`AlrError`, naming the option) a learning rate or step that is not finite and > 0."""
    steps = [] if step is None else list(step) if isinstance(step, (list, tuple)) else [step]

    def ok(v) -> bool:
        try:
            return not isinstance(v, bool) and math.isfinite(float(v)) and float(v) > 0
        except (TypeError, ValueError, RuntimeError):  # not a number, or a tensor of several
            return False

    for name, values in (("lr0", [lr0]), ("lr1", [lr1]), ("step", steps)):
        if not all(ok(v) for v in values):
            raise AlrError(f"{name} must be a finite number > 0, got {values[0] if len(values) == 1 else values!r}")


@contextlib.contextmanager
def _held(model: torch.nn.Module, physics, dev: torch.device):
    """``model`` and ``physics`` as a solve needs them (on ``dev``; the critic in eval mode, channels_last,
    its parameters without gradients), given back as they came (device, modes, gradient flags, layout)
    when the solve ends: a critic being trained, or a user's operator, is not changed by a restore."""
    params = list(model.parameters())
    modes = [m.training for m in model.modules()]
    kept = [(p.requires_grad, p.device, _layout(p)) for p in params]
    op = [*physics.parameters(), *physics.buffers()] if isinstance(physics, torch.nn.Module) else []
    op_homes = {t.device for t in op}
    model.to(dev, memory_format=torch.channels_last).eval().requires_grad_(False)
    if op:
        physics.to(dev)
    try:
        yield
    finally:
        for m, mode in zip(model.modules(), modes):  # parents first: each module ends in its own mode
            m.train(mode)
        for p, (grad, home, layout) in zip(params, kept):
            p.requires_grad_(grad)
            if p.device != home or _layout(p) != layout:
                p.data = p.data.to(home, memory_format=layout)
                if p.grad is not None:
                    p.grad = p.grad.to(home, memory_format=layout)
        if len(op_homes) == 1:
            physics.to(op_homes.pop())


def _layout(p: torch.Tensor) -> torch.memory_format:
    """How a parameter is laid out: channels_last for a 4-D one stored so (and not also contiguous)."""
    if p.dim() == 4 and not p.is_contiguous() and p.is_contiguous(memory_format=torch.channels_last):
        return torch.channels_last
    return torch.contiguous_format


def _relative_change(x_new: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``||x_new - x|| / ||x||`` per image, shape (B,)."""
    return (x_new - x).flatten(1).norm(dim=1) / x.flatten(1).norm(dim=1).clamp_min(1e-12)


def _small_change(x_new: torch.Tensor, x: torch.Tensor, tol: float) -> bool:
    return tol > 0 and bool((_relative_change(x_new, x) < tol).all())


def _tick(hist: History, e: Energy, bar, x: torch.Tensor) -> None:
    if hist.callback is not None:
        hist.callback(hist.iterations, x)
    hist.record(e)
    hist.iterations += 1
    bar.update(1)
    bar.set_postfix(E=f"{hist.objective[-1]:.5g}")


def _adam(prob: Problem, x, iters, hist, bar, tol, lr0, lr1, **_) -> torch.Tensor:
    b1, b2, eps = 0.9, 0.999, 1e-8
    m = torch.zeros_like(x)
    v = torch.zeros_like(x)
    for k in range(iters):
        e = prob.energy(x)
        _tick(hist, e, bar, x)
        g = e.grad
        lr = lr0 * (lr1 / lr0) ** (k / max(1, iters - 1))
        m.mul_(b1).add_(g, alpha=1 - b1)
        v.mul_(b2).addcmul_(g, g, value=1 - b2)
        mh = m / (1 - b1 ** (k + 1))
        vh = v / (1 - b2 ** (k + 1))
        x_new = x - lr * mh / (vh.sqrt() + eps)
        if _small_change(x_new, x, tol):
            hist.converged = True
            return x_new
        x = x_new
    return x


def _per_image(t: torch.Tensor) -> torch.Tensor:
    return t.view(-1, 1, 1, 1)


def _gd(prob: Problem, x, iters, hist, bar, tol, step, **_) -> torch.Tensor:
    n = x[0].numel()
    steps = step if isinstance(step, (list, tuple)) else [step] * iters  # one per iteration
    tau = x.new_full((x.shape[0],), _largest_step(prob.physics))  # backtracking's first trial
    e = prob.energy(x)
    for k in range(iters):
        _tick(hist, e, bar, x)
        ok = True
        if step is None:  # Armijo backtracking on each image's energy
            x_new, e_new, tau, found = _backtrack(prob, x, e, tau, n)
            ok = bool(found.all())  # an image that found no descent stayed put: not converged
        else:
            x_new = x - steps[k] * e.grad
            e_new = prob.energy(x_new)
        if ok and _small_change(x_new, x, tol):
            hist.converged = True
            return x_new
        x, e = x_new, e_new
        if step is None:
            tau = tau * 1.5  # let the step grow back
    return x


def _largest_step(physics) -> float:
    """``1 / ||A^T A||``, the data term's largest safe gradient step; an operator that measures
    nothing (zero bound: an empty mask, a zero kernel) is refused in one line."""
    bound = float(physics.lipschitz())
    if not (math.isfinite(bound) and bound > 0):
        raise AlrError(f"the forward operator {type(physics).__name__} has ||A^T A|| = {bound:g}: it measures "
                       "nothing to restore from (an empty mask, a zero kernel?)")
    return 1.0 / bound


def _backtrack(prob: Problem, x, e: Energy, tau, n):
    """Armijo: shrink tau until E(x - tau g) <= E(x) - tau/(2n) ||g||^2, per image. Returns the new
    point, its energy, the steps and where a step was accepted; an image whose step is not accepted
    after 30 halvings stays at ``x`` (never the last trial)."""
    g2 = e.grad.flatten(1).pow(2).sum(1) / n
    for _ in range(30):
        x_new = x - _per_image(tau) * e.grad
        e_new = prob.energy(x_new)
        ok = e_new.value <= e.value - 0.5 * tau * g2 + 1e-12 * e.value.abs()
        if ok.all():
            return x_new, e_new, tau, ok
        tau = torch.where(ok, tau, tau * 0.5)
    return torch.where(_per_image(ok), x_new, x), e_new.where(ok, e), tau, ok


def _agd(prob: Problem, x, iters, hist, bar, tol, step, **_) -> torch.Tensor:
    """Nesterov acceleration with backtracking and gradient-based adaptive restart."""
    n = x[0].numel()
    tau = x.new_full((x.shape[0],), step if step is not None else _largest_step(prob.physics))
    z = x.clone()
    t = x.new_ones(x.shape[0])
    e_z = prob.energy(z)
    for _k in range(iters):
        _tick(hist, e_z, bar, z)
        x_new, e_new, tau, ok = _backtrack(prob, z, e_z, tau, n)
        x_new = torch.where(_per_image(ok), x_new, x)  # no descent from z: back to the last iterate, restarted
        # restart momentum where the step goes uphill
        restart = ((e_z.grad * (x_new - x)).flatten(1).sum(1) > 0) | ~ok
        t_new = 0.5 * (1 + torch.sqrt(1 + 4 * t * t))
        beta = torch.where(restart, torch.zeros_like(t), (t - 1) / t_new)
        t_new = torch.where(restart, torch.ones_like(t), t_new)
        z = x_new + _per_image(beta) * (x_new - x)
        if bool(ok.all()) and _small_change(x_new, x, tol):
            hist.converged = True
            return x_new
        x, t = x_new, t_new
        e_z = prob.energy(z) if bool((beta != 0).any()) or not bool(ok.all()) else e_new
        tau = tau * 1.2
    return x


def _dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (a * b).flatten(1).sum(1)


def _nmapg(prob: Problem, x, iters, hist, bar, tol, step, **_) -> torch.Tensor:
    """Nonmonotone APG with line search (Li & Lin 2015, Alg. 2 / 4), per image, on F = n E.

    Each iteration extrapolates ``y = x + t'/t (z - x) + (t' - 1)/t (x - x')``, takes the gradient
    step ``z = y - a G(y)`` (``G = n grad E``, ``a`` from a Barzilai-Borwein guess shrunk until
    ``F(z) <= max(F(y), c) - delta ||z - y||^2``), and keeps ``x <- z`` when ``F(z) <= c -
    delta ||z - y||^2``, where ``c`` is the running average ``c <- (eta q c + F(x)) / (eta q + 1)``
    of the energies of the iterates. Otherwise the safeguard ``v = x - a' G(x)`` (with
    ``F(v) <= c - delta ||v - x||^2``) is taken if it is lower than ``z``. Steps start at ``step``
    (default ``1 / ||A^T A||``) and never exceed it; an image stops once its relative change is
    below ``tol``, the others go on.
    """
    delta, eta, shrink = 0.1, 0.8, 0.5
    b = x.shape[0]
    a_max = x.new_full((b,), step if step is not None else _largest_step(prob.physics))
    a_min = 1e-8 * a_max

    def bb(s_: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
        """Barzilai-Borwein step |<s, r>| / <r, r> (the short one), within [a_min, a_max]."""
        return torch.minimum(_dot(s_, r).abs() / _dot(r, r).clamp_min(1e-30), a_max).clamp_min(a_min)

    def descend(base: torch.Tensor, grad: torch.Tensor, a: torch.Tensor, bound: torch.Tensor, todo: torch.Tensor):
        """Backtrack ``base - a grad`` until ``F <= bound - delta ||step||^2`` (images in ``todo``);
        the last point tried, F there, and where it was accepted."""
        for _ in range(40):
            new = base - _per_image(a) * grad
            f = prob.energy(new, need_grad=False).value * n
            ok = (f <= bound - delta * _dot(new - base, new - base)) | ~todo
            if ok.all():
                break
            a = torch.where(ok, a, a * shrink)
        return new, f, ok

    n = x[0].numel()
    x_old, z = x.clone(), x.clone()
    t_old, t, q = 0.0, 1.0, 1.0
    c = prob.energy(x, need_grad=False).value * n
    active = torch.ones(b, dtype=torch.bool, device=x.device)
    stalled = torch.zeros_like(active)  # images whose line searches found no descent: stopped, not converged
    y_old = g_old = None
    for _k in range(iters):
        y = x + (t_old / t) * (z - x) + ((t_old - 1) / t) * (x - x_old)
        e_y = prob.energy(y)
        _tick(hist, e_y, bar, y)
        a = a_max.clone() if y_old is None else bb(y - y_old, e_y.grad - g_old)
        z_new, f_z, _ = descend(y, e_y.grad, a, torch.maximum(e_y.value * n, c), active)
        x_new, f_x = z_new, f_z
        fallback = active & (f_z > c - delta * _dot(z_new - y, z_new - y))
        if fallback.any():  # the safeguard: a monotone step from the last iterate
            e_x = prob.energy(x)
            a = a_max.clone() if y_old is None else bb(x - y_old, e_x.grad - g_old)
            v, f_v, ok_v = descend(x, e_x.grad, a, c, fallback)
            take_v = fallback & (f_v < f_z)
            x_new, f_x = torch.where(_per_image(take_v), v, z_new), torch.where(take_v, f_v, f_z)
            stay = fallback & ~ok_v & (f_x > e_x.value * n)  # neither step descends: never uphill
            x_new, f_x = torch.where(_per_image(stay), x, x_new), torch.where(stay, e_x.value * n, f_x)
            stalled = stalled | stay
        x_new = torch.where(_per_image(active), x_new, x)
        z = torch.where(_per_image(active), z_new, z)
        if tol > 0:
            active = active & (_relative_change(x_new, x) >= tol)
        x_old, x = x, x_new
        y_old, g_old = y, e_y.grad
        c = torch.where(active, (eta * q * c + f_x) / (eta * q + 1), c)
        q = eta * q + 1
        t_old, t = t, 0.5 * (1 + (1 + 4 * t * t) ** 0.5)
        if not active.any():
            hist.converged = not bool(stalled.any())
            break
    return x


def _lbfgs(prob: Problem, x, iters, hist, bar, tol, **_) -> torch.Tensor:
    """L-BFGS on each image of the batch as if it were alone (on accelerators, in lockstep).

    One L-BFGS on the sum of the energies would couple the images through its shared line
    search and curvature pairs, so that an image's result would depend on the rest of its
    batch. Here each image runs its own :func:`_lbfgs_one`. On an accelerator,
    :class:`_Lockstep` evaluates the energies they ask for in one batched call: each image
    follows the iterates of a batch of one (up to the rounding of the batched convolutions),
    and the batch keeps the speed of batched critic evaluations. On the CPU a batched critic
    call is no faster per image (benchmarks/batched_energy.py), so there the images are solved
    one after another. The history holds, per evaluation, the mean over the images;
    ``hist.callback(k, x)`` sees the whole batch at each round k of evaluations, counted per
    group solved together (the batch, or each image in turn on the CPU); an image outside the
    round shows its start or the last point it evaluated.
    """
    b = x.shape[0]
    traces = [History() for _ in range(b)]
    steps, evals = [0] * b, [0]  # L-BFGS iterations of each image, energy evaluations in all
    current = x.clone()

    def solve(group: list[int]) -> list[torch.Tensor]:
        def on_round(k: int, idx: list[int], z: torch.Tensor, e: Energy) -> None:
            current[[group[j] for j in idx]] = z
            if hist.callback is not None:
                hist.callback(k, current)
            evals[0] += len(idx)
            bar.update(min(sum(steps), bar.total) - bar.n)
            bar.set_postfix(E=f"{float(e.value.mean()):.5g}", evals=evals[0])

        return _Lockstep(prob.select(group), len(group)).run(
            lambda j, energy: _lbfgs_one(energy, x[group[j]:group[j] + 1], iters, traces[group[j]],
                                         lambda k, i=group[j]: steps.__setitem__(i, k), tol), on_round)

    groups = [[i] for i in range(b)] if x.device.type in SEQUENTIAL_DEVICES else [list(range(b))]
    out = [xi for group in groups for xi in solve(group)]
    hist.iterations = min(h.iterations for h in traces)
    hist.converged = all(h.converged for h in traces)
    for name in ("objective", "data", "reg", "grad_norm"):
        setattr(hist, name, [sum(getattr(h, name)[k] for h in traces) / b for k in range(hist.iterations)])
    return torch.cat(out)


class _Stopped(Exception):
    """Raised in a per-image solver when the batch has failed elsewhere."""


class _Lockstep:
    """Batched energies for per-image solvers that run in threads.

    ``run(solve, on_round)`` calls ``solve(i, energy)`` for every image ``i`` in a thread of
    its own, where ``energy(z)`` blocks until every unfinished solver has asked for an energy;
    those are then evaluated in one call of ``prob.select(idx).energy`` (the images of a
    batch are independent, so each gets what it would get alone) and handed back. An
    exception in any solver or evaluation stops all of them and is raised by ``run``.
    """

    def __init__(self, prob: Problem, b: int) -> None:
        self.prob, self.b = prob, b
        self.cond = threading.Condition()
        self.asked: dict[int, torch.Tensor] = {}
        self.answers: dict[int, Energy] = {}
        self.finished = 0
        self.error: BaseException | None = None

    def _energy(self, i: int, z: torch.Tensor) -> Energy:
        with self.cond:
            self.asked[i] = z
            self.cond.notify_all()
            self.cond.wait_for(lambda: i in self.answers or self.error is not None)
            if i not in self.answers:
                raise _Stopped
            return self.answers.pop(i)

    def _work(self, i: int, solve, out: list) -> None:
        try:
            out[i] = solve(i, lambda z: self._energy(i, z))
        except _Stopped:
            pass
        except BaseException as exc:  # noqa: BLE001 -- handed to the caller's thread by run()
            with self.cond:
                self.error = self.error or exc
        finally:
            with self.cond:
                self.finished += 1
                self.cond.notify_all()

    def run(self, solve: Callable[[int, Callable[[torch.Tensor], Energy]], torch.Tensor],
            on_round: Callable[[int, list[int], torch.Tensor, Energy], None]) -> list[torch.Tensor]:
        out: list = [None] * self.b
        threads = [threading.Thread(target=self._work, args=(i, solve, out), daemon=True) for i in range(self.b)]
        for t in threads:
            t.start()
        try:
            for k in itertools.count():
                with self.cond:
                    self.cond.wait_for(lambda: self.error is not None or len(self.asked) + self.finished == self.b)
                    if self.error is not None or self.finished == self.b:
                        break
                    asked, self.asked = self.asked, {}
                idx = sorted(asked)
                z = torch.cat([asked[i] for i in idx])
                prob = self.prob if len(idx) == self.b else self.prob.select(idx)
                e = prob.energy(z)
                with self.cond:
                    self.answers.update((i, e.select(j)) for j, i in enumerate(idx))
                    self.cond.notify_all()
                on_round(k, idx, z, e)
        except BaseException as exc:
            with self.cond:
                self.error = self.error or exc
                self.cond.notify_all()
        for t in threads:
            t.join()
        if self.error is not None:
            raise self.error
        return out


def _lbfgs_one(energy: Callable[[torch.Tensor], Energy], x, iters, hist,
               on_iter: Callable[[int], None] = lambda k: None, tol: float = 0.0) -> torch.Tensor:
    """torch.optim.LBFGS on the energy of one image (``energy(z)``), traced in ``hist``.

    torch's L-BFGS makes its first step of unit L1 length, which is tiny for images; we
    optimise ``u`` with ``x = x0 + c u`` where ``c = 0.5 ||n grad E(x0)||_1``, so that the first
    step is the gradient step ``x0 - 0.5 n grad E(x0)`` of the un-normalised energy.
    ``on_iter(k)`` is told the iteration count k at each evaluation (for the progress bar).
    At most ``iters`` iterations and ``1.25 iters + 1`` energy evaluations. With ``tol > 0`` the
    optimiser is stepped one iteration at a time (its state carries over, and the energy of the
    point it resumes from is reused, so the iterates are those of one uninterrupted run) and
    stops once ``||x_{k+1} - x_k|| / ||x_k|| < tol``.
    """
    n = x[0].numel()
    x0 = x
    e0 = energy(x0)
    c = float(0.5 * e0.grad.abs().sum()) or 1.0
    var = torch.zeros_like(x0).requires_grad_(True)
    max_eval = int(iters * 1.25) + 1
    opt = torch.optim.LBFGS([var], lr=1, max_iter=1 if tol > 0 else iters, max_eval=max_eval,
                            tolerance_grad=0.0, tolerance_change=0.0, history_size=10,
                            line_search_fn="strong_wolfe")
    seen = [(var.detach().clone(), e0)]  # stepped by iterations: the points evaluated in this one, with their energy
    evals = [1]
    hist.record(e0)
    hist.iterations += 1

    def closure():
        u = var.detach()
        e = next((e for v, e in seen if torch.equal(v, u)), None)
        if e is None:
            e = energy(x0 + c * u)
            evals[0] += 1
            if tol > 0:
                seen.append((u.clone(), e))
            if hist.iterations < iters:
                hist.record(e)
                hist.iterations += 1
        var.grad = c * e.grad / n
        on_iter(opt.state[var].get("n_iter", 0))
        return e.value.sum()

    with torch.enable_grad():
        if tol <= 0:
            opt.step(closure)
        else:
            for _ in range(iters):
                start = var.detach().clone()
                seen[:] = [(v, e) for v, e in seen if torch.equal(v, start)]
                opt.step(closure)
                step = c * (var.detach() - start)
                if step.norm() < tol * (x0 + c * start).norm():  # 0 too: L-BFGS found no lower energy
                    hist.converged = True
                    break
                if evals[0] >= max_eval:
                    break
    return x0 + c * var.detach()


# ---------------------------------------------------------------------------- one-call restoration
def check_measurement(y, physics) -> torch.Tensor:
    """``y`` checked as the measurements of ``physics`` (:func:`alr.images.check_image`): those of
    alr's operators (denoising, blur, inpainting, downsampling) are images, in [0, 1] up to noise;
    those of another operator (a tomograph's sinogram) need only be finite floats."""
    return check_image(y, "y", bounded=task_of(physics) is not None)


def task_of(physics) -> str | None:
    """The lambda table that fits an operator: ``"denoise"`` for None or the identity, ``"deblur"``,
    ``"inpaint"``, ``"sr"`` for alr's blur, mask and downsampling; None for another operator."""
    from .physics import Blur, Denoising, Downsampling, Inpainting

    kinds = {Denoising: "denoise", Blur: "deblur", Inpainting: "inpaint", Downsampling: "sr"}
    return "denoise" if physics is None else kinds.get(type(physics))


def unchanged(y: torch.Tensor, device: str | torch.device | None = None) -> torch.Tensor:
    """An image a restore leaves alone (too little noise to restore) as every restore returns one:
    float32, in [0, 1], on ``device`` (None: where it is)."""
    return y.to(resolve_device(device) if device else y.device, torch.float32).clamp(0, 1)


def solve(y: torch.Tensor, physics, model: PatchCritic, settings: list, device: str | torch.device | None = None,
          progress: bool = False, callback: Callable[[int, torch.Tensor], None] | None = None
          ) -> tuple[torch.Tensor, History]:
    """Restore the batch ``y`` with one :class:`alr.settings.Settings` per image (equal
    ``batch_key()``; lam, concavity and sigma may differ). Images whose settings say ``skip``
    are returned as they are."""
    from .fidelity import ClippedGaussian

    s0 = settings[0]
    if any(s.batch_key() != s0.batch_key() for s in settings):
        raise ValueError("the images of one solve need the same solver settings")
    keep = [i for i, s in enumerate(settings) if not s.skip]
    dev = resolve_device(device) if device else y.device
    if not keep:
        return unchanged(y, dev), History()
    ys = y if len(keep) == len(settings) else y[keep]
    op = as_operator(physics)
    op = op if len(keep) == len(settings) else op.select(keep, len(settings))
    picked = [settings[i] for i in keep]
    fidelity = ClippedGaussian([s.sigma for s in picked]) if s0.clipped else None
    x, hist = minimize(ys, op, model, torch.tensor([s.lam for s in picked]),
                       concavity=torch.tensor([s.concavity for s in picked]), fidelity=fidelity,
                       device=device, progress=progress, callback=callback, **s0.solver_kwargs())
    if len(keep) == len(settings):
        return x, hist
    out = y.to(x.device, x.dtype).clamp(0, 1)  # only denoising skips images, so x and y have one shape
    out[keep] = x
    return out, hist


def restore(y: torch.Tensor, model: "str | PatchCritic | None" = None,
            sigma: "float | Sequence[float] | torch.Tensor | None" = None,
            task: str | None = None, physics=None, lam: float | None = None, *, clipped: bool = False,
            method: str | None = None, iters: int | None = None, concavity: float | None = None,
            boundary: str | None = None, symmetric: bool = False, per_channel: bool = False,
            color_space: str = "auto", max_memory: float | None = None,
            device: str | torch.device | None = None, progress: bool = False) -> torch.Tensor:
    """Restore ``y`` in one call, with the model's calibrated settings for everything not given.

    Solves ``min_x 1/(2n) ||A x - y||^2 + lam R(x)`` (module docstring) with lambda, solver,
    iterations and score shaping from the model's table for ``task`` at noise level ``sigma``
    (:func:`alr.settings.resolve`), the same resolution as ``alr restore``.

    Parameters
    ----------
    y : measurements (B, C, H, W), float, in [0, 1] up to the noise.
    model : a shipped model name (``"gray"``, ``"color"``), a model file, or a critic;
        default ``"gray"`` for 1 channel, ``"color"`` for 3.
    sigma : noise level (std in [0, 1] units), or one per image (a sequence or tensor of B values);
        None: estimated from each image for denoising.
    task : which calibrated table to use: ``"denoise"``, ``"deblur"``, ``"inpaint"``, ``"sr"``;
        default: the one of ``physics`` (:func:`task_of`).
    physics : the forward operator A (None: denoising): an :mod:`alr.physics` operator or any
        object with ``A`` and ``A_adjoint``, such as a DeepInverse ``LinearPhysics``. For an
        operator alr has no table for, give ``lam`` (its solver settings are those of ``deblur``)
        or ``task``.
    lam, clipped, method, iters, concavity, boundary, symmetric, per_channel, max_memory :
        overrides, see :func:`alr.settings.resolve` and :func:`minimize`.
    color_space : ``"rgb"``; ``"opponent"``: denoise a colour image with a gray model in the
        opponent space of :func:`alr.images.to_opponent` (:func:`restore_opponent`); ``"auto"``
        (default): ``"opponent"`` with the default model for colour denoising at noise levels
        outside :data:`alr.settings.RGB_BAND`, else ``"rgb"``
        (:func:`alr.settings.pick_color_space`), chosen per image.
    device : where to solve (default: CUDA when available, else the CPU); the result stays there.
    progress : show a progress bar.

    Returns the restored images (B, C, H, W) in [0, 1].

    Example
    -------
    >>> import torch, alr
    >>> from alr.data import add_noise
    >>> clean = torch.linspace(0, 1, 48).repeat(48, 1)[None, None]
    >>> noisy = add_noise(clean, 0.1, seed=0)
    >>> restored = alr.restore(noisy, "gray", sigma=0.1)
    >>> bool(alr.metrics.psnr(restored, clean) > alr.metrics.psnr(noisy, clean) + 5)
    True
    """
    from .settings import check_color_space, match_channels, pick_model, resolve

    check_measurement(y, physics)
    sigma = _one_sigma(sigma, y.shape[0])

    def one(i: int, s, space: str, critic: PatchCritic) -> torch.Tensor:  # image i alone, at level s, in `space`
        return restore(y[i:i + 1], critic, s, task, _rows(physics, i, y.shape[0]), lam, clipped=clipped, method=method,
                       iters=iters, concavity=concavity, boundary=boundary, symmetric=symmetric,
                       per_channel=per_channel, color_space=space, max_memory=max_memory, device=device,
                       progress=progress)

    loaded: dict = {}  # each model named loaded once
    levels = sigma if isinstance(sigma, list) else [sigma] * y.shape[0]
    picks = [pick_model(y[i:i + 1], model, task or task_of(physics), s, clipped, per_channel, color_space, loaded)
             for i, s in enumerate(levels)]
    if isinstance(sigma, list) or len({(id(c), s) for c, s in picks}) > 1:  # image by image: noise levels that
        return torch.cat([one(i, levels[i], s, c) for i, (c, s) in enumerate(picks)])  # differ, or both colour sides
    critic, color_space = picks[0]
    check_color_space(color_space, critic, y, task or task_of(physics), clipped)
    if color_space == "opponent":
        return restore_opponent(y, critic, sigma, lam, method=method, iters=iters, concavity=concavity,
                                boundary=boundary, symmetric=symmetric, max_memory=max_memory, device=device,
                                progress=progress)
    y = match_channels(critic, y, per_channel)
    task = task or task_of(physics)
    if task is None:
        if lam is None:
            raise AlrError(f"alr has no lambda table for a {type(physics).__name__} operator: give lam= (or task=)")
        task = "deblur"
    dev = resolve_device(device)
    sets = [resolve(critic, y[i:i + 1], task, sigma, lam, clipped=clipped, method=method, iters=iters,
                    concavity=concavity, boundary=boundary, symmetric=symmetric, per_channel=per_channel,
                    max_memory=max_memory, device=dev) for i in range(y.shape[0])]
    groups: dict[tuple, list[int]] = {}
    for i, s in enumerate(sets):
        groups.setdefault(s.batch_key(), []).append(i)
    op = as_operator(physics)
    out: torch.Tensor | None = None
    for idx in groups.values():
        part = op.select(idx, len(sets)) if len(idx) < len(sets) else op
        x = solve(y[idx], part, critic, [sets[i] for i in idx], dev, progress)[0]
        out = x.new_empty((y.shape[0], *x.shape[1:])) if out is None else out
        out[idx] = x
    return out


#: Chroma lambda of :func:`restore_opponent`: the gray table's lambda at the chroma channel's noise
#: level times this (chosen on cbsd432 crops, research/scripts/probe_opponent.py).
CHROMA_LAMBDA = 8.0


def _one_sigma(sigma, batch: int) -> "float | list[float] | None":
    """``sigma`` as one number when every image shares it (or None), else the list of the B values."""
    if sigma is None or isinstance(sigma, numbers.Real):
        return sigma
    values = torch.as_tensor(sigma, dtype=torch.float64).flatten().tolist()
    if len(values) != batch:
        raise AlrError(f"sigma holds {len(values)} noise levels for {batch} images: give one, or one per image")
    return values[0] if len(set(values)) == 1 else values


def _rows(physics, i: int, batch: int):
    """The operator of image ``i`` of a batch of ``batch`` (None stays None: denoising)."""
    return None if physics is None else as_operator(physics).select([i], batch)


def restore_opponent(y: torch.Tensor, model: "str | PatchCritic" = "gray", sigma: float | None = None,
                     lam: float | None = None, chroma_lambda: float = CHROMA_LAMBDA, **options) -> torch.Tensor:
    """Denoise colour images with a gray model in an opponent colour space.

    ``z = T y`` (:func:`alr.images.to_opponent`: luminance and two chroma channels, white noise of
    std ``sigma_c = sigma ||T_c||``); each channel is denoised alone by :func:`restore`,
    the luminance at its table's lambda for ``sigma_c``, each chroma channel at ``chroma_lambda``
    times it (chroma is smooth: a stronger prior pays), every channel with the iterations of the
    table at ``sigma`` (unless ``iters`` is given); then ``x = T^-1 z``. It is CBM3D's colour
    transform with the gray critic in place of BM3D.

    Parameters
    ----------
    y : noisy colour images (B, 3, H, W).
    model : a gray model (name, file or critic).
    sigma : noise std of ``y`` in RGB; None: estimated from each image, which is returned
        unchanged when the estimate says there is little or no noise (as :func:`restore` does:
        :func:`alr.settings.resolve`), unless ``lam`` is given.
    lam : the luminance's lambda (None: the table's at its noise level); each chroma channel's
        is ``chroma_lambda`` times ``lam`` (None: times the table's at its noise level).
    options : passed to :func:`restore` (method, iters, concavity, boundary, symmetric,
        max_memory, device, progress).

    Returns the restored images (B, 3, H, W) in [0, 1].
    """
    from .images import from_opponent, opponent_noise, to_opponent
    from .pretrained import lam_for, load, solver_options
    from .settings import check_color_space, resolve

    critic = model if isinstance(model, PatchCritic) else load(model)
    check_image(y, "y", bounded=False)
    check_color_space("opponent", critic, y, "denoise", False)
    if sigma is None:  # one estimate per image (each may differ), from the RGB channels
        found = [resolve(critic, y[i:i + 1], "denoise", None, lam, per_channel=True, color_space="opponent")
                 for i in range(y.shape[0])]
        dev = resolve_device(options.get("device"))
        return torch.cat([unchanged(y[i:i + 1], dev) if s.skip
                          else restore_opponent(y[i:i + 1], critic, s.sigma, lam, chroma_lambda, **options)
                          for i, s in enumerate(found)])
    z = to_opponent(y)
    table = solver_options(critic, "denoise", sigma)  # its iterations are for its method only (as resolve's)
    if options.get("iters") is None and options.get("method") in (None, table["method"]):
        options["iters"] = table.get("iters")  # a chroma channel's own (lower) level stops too early for its prior
    out = []
    for c, s in enumerate(opponent_noise(sigma)):
        lam_c = lam if lam is not None else lam_for(critic, "denoise", s)
        out.append(restore(z[:, c:c + 1], critic, s, lam=lam_c * (chroma_lambda if c else 1.0), **options))
    return from_opponent(torch.cat(out, 1)).clamp(0, 1)
