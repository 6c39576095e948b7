"""Training the critic as a WGAN-GP critic between clean and degraded patches.

Algorithm 1 of the paper: at each step draw clean patches ``p ~ P_c`` and
degraded patches ``q ~ P_d``, interpolates ``z = t p + (1 - t) q`` with
``t ~ U[0, 1]`` per pair, and take an Adam step on::

    L(theta) = E_p[r(p)] - E_q[r(q)] + mu * E_z[(||grad_z r(z)||_2 - 1)^2]

so ``r`` is low on clean patches, high on degraded ones and close to
1-Lipschitz: ``-L`` without the penalty estimates the Wasserstein-1 distance
``W = E_q[r] - E_p[r]`` between the two patch distributions.

A critic of criterion ``"w2"`` scores ``r = u^2 / 2`` (:func:`alr.critic.patch_scores`); the
penalty holds its potential ``u`` 1-Lipschitz, ``(||grad_z u(z)||_2 - 1)^2``, and the loss
gains an anchor ``anchor / 2 * E_p[u(p)^2]`` that pins u to 0 on clean patches, so u
approximates the distance to the clean patches and r half its square: a regularizer growing
with the squared distance, as the paper proposes for high noise. (Without the anchor the
squared loss ``E_p[r] - E_q[r]`` has no minimum: a constant added to u lowers it without end.)

With ``slope > 0`` (paired patches, :class:`alr.data.PatchPairs` ``paired=True``: each degraded
patch is its clean patch degraded) the loss gains ``slope * E_z[(grad_z u(z) . d - 1)^2]``,
``d = (q - p) / ||q - p||``: on the line from each clean patch to its own degraded version the
potential climbs at unit rate, so that -grad u points back along the degradation. A 1-Lipschitz u
that does so everywhere makes ``E_q[u] - E_p[u] = E||q - p||``, the transport cost of this pairing;
the penalty asks the critic for the pairing's direction where the unpaired loss leaves it free.

The learning rate decays exponentially, ``lr_k = lr0 (lr1 / lr0)^(k / steps)``.
Every ``ckpt_every`` steps a checkpoint (weights, Adam state, sampler RNG,
step, the recipe) is written atomically; ``resume=True`` continues from it and reproduces
the uninterrupted run exactly. A resumed run may ask for more ``steps`` (the learning rate
then follows the new total from the checkpoint on); any other change of the recipe, or fewer
steps than the checkpoint has done, is refused (:class:`alr.errors.AlrError`).

Training is deterministic on the CPU: the same seed, data and options give the same model file,
bit for bit (:func:`new_critic` draws the initial weights from the seed; the patches, noise and
mixing weights come from a generator seeded with it). Under ``torchrun`` the step is data-parallel:
each of the N processes takes its 1/N slice of the same global batch and the
gradients are averaged (gloo on CPU, NCCL on GPU), so N processes compute
the same updates as one.
"""
from __future__ import annotations

import csv
import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import torch
from torch import nn
from tqdm.auto import tqdm

from .critic import PatchCritic, patch_scores
from .device import resolve_device
from .errors import AlrError
from .files import atomic_write
from .modelfile import save_model

Sampler = Callable[[int, torch.Generator], tuple[torch.Tensor, torch.Tensor]]

LOG_FIELDS = ["step", "loss", "wasserstein", "gradient_penalty", "grad_norm_mean",
              "grad_norm_min", "grad_norm_max", "slope_penalty", "lr", "seconds"]


@dataclass
class TrainConfig:
    """Hyper-parameters of the critic training (the options of ``alr train``, docs/usage.md)."""

    steps: int = 20000
    batch_size: int = 128
    lr0: float = 1e-4
    lr1: float = 1e-5
    mu: float = 10.0
    anchor: float = 100.0
    slope: float = 0.0
    betas: tuple[float, float] = (0.5, 0.9)
    seed: int = 0
    ckpt_every: int = 1000
    log_every: int = 10
    max_seconds: float | None = None
    device: str | None = None
    extra: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if len(self.betas) != 2 or not all(0 <= b < 1 for b in self.betas):
            raise ValueError(f"Adam betas must be two numbers in [0, 1), got {self.betas}")
        if self.mu < 0:
            raise ValueError(f"the gradient penalty weight mu must be >= 0, got {self.mu}")
        if self.anchor <= 0:
            raise ValueError(f"the anchor weight of w2 critics must be > 0, got {self.anchor}")
        if self.slope < 0:
            raise ValueError(f"the slope penalty weight must be >= 0, got {self.slope}")

    def lr(self, step: int, elapsed: float = 0.0) -> float:
        """lr0 (lr1/lr0)^f, f the fraction done: of the steps, or of max_seconds if further."""
        f = step / max(1, self.steps)
        if self.max_seconds:
            f = min(1.0, max(f, elapsed / self.max_seconds))
        return self.lr0 * (self.lr1 / self.lr0) ** f


def _dist_info() -> tuple[int, int]:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def init_distributed() -> tuple[int, int]:
    """Join the process group when launched by torchrun (WORLD_SIZE > 1)."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not torch.distributed.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        torch.distributed.init_process_group(backend)
        if backend == "nccl":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
    return _dist_info()


def new_critic(seed: int, **arch) -> PatchCritic:
    """A new :class:`PatchCritic` (``arch``: its keyword arguments) with initial weights drawn
    from ``seed``; torch's global random state is left as it was.

    >>> a, b = new_critic(3, width=8), new_critic(3, width=8)
    >>> all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    True
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return PatchCritic(**arch)


#: Fields of :class:`TrainConfig` that a resumed run may change: its length, and how it logs and saves.
RESUMABLE_CHANGES = ("steps", "ckpt_every", "log_every", "max_seconds", "device", "extra")


def _recipe(config: TrainConfig, critic: nn.Module) -> dict:
    """What a checkpoint records of a run: the fields of ``config`` a resumed run must keep, and
    the training data the critic's metadata names."""
    recipe = {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(config).items()
              if k not in RESUMABLE_CHANGES}
    return {**recipe, "data": (getattr(critic, "meta", None) or {}).get("data")}


def load_checkpoint(path: str | os.PathLike, config: TrainConfig, critic: nn.Module) -> dict:
    """The state saved in the checkpoint ``path``, checked to continue training ``critic`` with ``config``.

    Loaded with ``weights_only=True`` (tensors and plain containers only, nothing executed);
    anything else, a recipe that differs from ``config`` in other than
    :data:`RESUMABLE_CHANGES`, or more steps done than ``config.steps`` raises a one-line
    :class:`AlrError` naming the file.
    """
    path = Path(path)
    if not path.is_file():
        raise AlrError(f"no checkpoint to resume from at {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        assert isinstance(state, dict) and {"model", "optim", "rng", "step"} <= set(state)
    except Exception:  # noqa: BLE001 -- a pickle of anything else, a truncated or foreign file
        raise AlrError(f"{path} is not an alr training checkpoint (or it is damaged); start again "
                       "without --resume") from None
    done, saved = int(state["step"]), state.get("recipe")
    if saved is not None:
        changed = [f"{k}={v!r} (checkpoint: {saved.get(k)!r})" for k, v in _recipe(config, critic).items()
                   if saved.get(k) != v]
        if changed:
            raise AlrError(f"{path}: --resume continues the same training; it differs in " + ", ".join(changed))
    if done > config.steps:
        raise AlrError(f"{path} has done {done} steps, more than --steps {config.steps}: give --steps >= {done}")
    return state


def continue_from(model: nn.Module, source: str) -> nn.Module:
    """Prepare a trained ``model`` (loaded from ``source``) for further training.

    Its lambda tables no longer hold once the weights change, so they are dropped;
    the header records the model, the data and the training it continued from
    (``meta["continued_from"]``, nested when a model is continued twice).
    """
    meta = dict(getattr(model, "meta", None) or {})
    prev = {"model": Path(source).stem, "training": meta.pop("training", {})}  # a name, never a machine path
    if "data" in meta:
        prev["data"] = meta.pop("data")
    if "continued_from" in meta:
        prev["continued_from"] = meta.pop("continued_from")
    meta.pop("lambda", None)
    meta.pop("lambda_calibration", None)
    model.meta = {**meta, "continued_from": prev}
    return model


def wgan_gp_loss(critic: nn.Module, p: torch.Tensor, q: torch.Tensor, t: torch.Tensor,
                 mu: float, anchor: float = 100.0, slope: float = 0.0) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """WGAN-GP critic loss on clean ``p``, degraded ``q`` and mixing weights ``t``.

    ``"w1"`` critics (r = u): ``E_p[u(p)] - E_q[u(q)] + mu * GP``. ``"w2"`` critics (r = u^2 / 2)
    add ``anchor / 2 * E_p[u(p)^2]``, which pins u to 0 on the clean patches (within about
    1 / anchor) while the rest raises it on degraded ones as far as a 1-Lipschitz function
    can: u tends to the distance to the clean patches. GP is the penalty
    ``E_z[(||grad_z u(z)||_2 - 1)^2]`` on the potential u (:meth:`PatchCritic.potential`).
    ``slope > 0`` (``p``, ``q`` paired) adds ``slope * E_z[(grad_z u(z) . d - 1)^2]``,
    ``d = (q - p) / ||q - p||``, at the same interpolates (module docstring).

    Returns the loss and detached statistics (``E_q[r] - E_p[r]``, the Wasserstein estimate
    for "w1"; penalties; norms of grad_z u at the interpolates).
    """
    t = t.view(-1, *([1] * (p.dim() - 1)))
    z = (t * p + (1 - t) * q).requires_grad_(True)
    (g,) = torch.autograd.grad(critic.potential(z).sum(), z, create_graph=True)
    gnorm = g.flatten(1).norm(dim=1)
    gp = ((gnorm - 1) ** 2).mean()
    up, uq = critic.potential(p), critic.potential(q)
    criterion = critic.criterion
    fit = up.mean() - uq.mean() + (0.5 * anchor * (up * up).mean() if criterion == "w2" else 0)
    w = (patch_scores(uq, criterion) - patch_scores(up, criterion)).mean()
    loss = fit + mu * gp
    stats = {"wasserstein": w.detach(), "gradient_penalty": gp.detach(),
             "grad_norm_mean": gnorm.mean().detach(), "grad_norm_min": gnorm.min().detach(),
             "grad_norm_max": gnorm.max().detach()}
    if slope > 0:
        d = (q - p).flatten(1)
        d = d / d.norm(dim=1, keepdim=True).clamp_min(1e-12)
        sp = (((g.flatten(1) * d).sum(1) - 1) ** 2).mean()
        loss = loss + slope * sp
        stats["slope_penalty"] = sp.detach()
    return loss, stats


def train_critic(critic: nn.Module, sampler: Sampler, config: TrainConfig,
                 out: str | os.PathLike | None = None, log_csv: str | os.PathLike | None = None,
                 checkpoint: str | os.PathLike | None = None, resume: bool = False,
                 progress: bool = True) -> nn.Module:
    """Train ``critic`` in place with WGAN-GP on batches from ``sampler(n, generator)``.

    ``out`` receives the final model file (safetensors), ``log_csv`` one row
    per ``log_every`` steps, ``checkpoint`` the resumable state (default
    ``out + '.ckpt'``). Returns the trained critic on the CPU, in eval mode.
    """
    rank, world = _dist_info()
    if config.batch_size % world:
        raise ValueError(f"batch size {config.batch_size} is not divisible by {world} processes")
    device = resolve_device(config.device)
    if device.type == "cuda" and world > 1:
        device = torch.device("cuda", torch.cuda.current_device())
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True
    torch.manual_seed(config.seed)
    critic.to(device).train()
    critic.requires_grad_(True)  # a critic used by alr.restore has its parameters frozen
    opt = torch.optim.Adam(critic.parameters(), lr=config.lr0, betas=config.betas)
    gen = torch.Generator().manual_seed(config.seed)
    if checkpoint is None and out is not None:
        checkpoint = str(out) + ".ckpt"
    start = 0
    if resume:
        state = load_checkpoint(checkpoint, config, critic)
        try:
            critic.load_state_dict(state["model"])
            opt.load_state_dict(state["optim"])
            gen.set_state(state["rng"])
        except (RuntimeError, ValueError, KeyError, TypeError) as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise AlrError(f"{checkpoint}: the checkpoint does not fit this critic ({first})") from None
        start = int(state["step"])
    if world > 1:
        for prm in critic.parameters():
            torch.distributed.broadcast(prm.data, 0)
    lo, hi = rank * config.batch_size // world, (rank + 1) * config.batch_size // world

    logf = writer = None
    if log_csv is not None and rank == 0:
        logf, writer = _open_log(Path(log_csv), start if resume else 0)
    timed = bool(config.max_seconds)  # a wall-clock budget: the bar shows it, the steps go in the postfix
    bar = tqdm(total=config.max_seconds if timed else config.steps, initial=0 if timed else start,
               disable=not progress or rank != 0, desc="train critic", unit="s" if timed else "step",
               dynamic_ncols=True,
               bar_format="{l_bar}{bar}| {n:.0f}/{total:.0f} s [{elapsed}<{remaining}{postfix}]" if timed else None)
    t0 = time.perf_counter()
    done = start
    try:
        for step in range(start, config.steps):
            lr = config.lr(step, time.perf_counter() - t0)
            for grp in opt.param_groups:
                grp["lr"] = lr
            p, q = sampler(config.batch_size, gen)
            t = torch.rand(config.batch_size, generator=gen)
            p, q, t = (v[lo:hi].to(device, non_blocking=True) for v in (p, q, t))
            loss, stats = wgan_gp_loss(critic, p, q, t, config.mu, config.anchor, config.slope)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if world > 1:
                for prm in critic.parameters():
                    torch.distributed.all_reduce(prm.grad)
                    prm.grad /= world
            opt.step()
            done = step + 1
            if done % config.log_every == 0 or done == config.steps:
                vals = {"loss": loss.detach(), **stats}
                if world > 1:
                    packed = torch.stack([vals[k].float() for k in vals])
                    torch.distributed.all_reduce(packed)
                    vals = dict(zip(vals, (packed / world).tolist()))
                else:
                    vals = {k: float(v) for k, v in vals.items()}
                if not all(math.isfinite(v) for v in vals.values()):
                    raise FloatingPointError(f"training diverged at step {done}: {vals}")
                bar.set_postfix(loss=f"{vals['loss']:.3f}", W=f"{vals['wasserstein']:.3f}",
                                gn=f"{vals['grad_norm_mean']:.2f}", **({"step": done} if timed else {}),
                                refresh=False)
                if writer is not None:
                    writer.writerow({"step": done, **{k: f"{v:.6g}" for k, v in vals.items()},
                                     "lr": f"{lr:.6g}",
                                     "seconds": f"{time.perf_counter() - t0:.2f}"})
                    logf.flush()
            if checkpoint is not None and rank == 0 and (done % config.ckpt_every == 0 or done == config.steps):
                _save_checkpoint(checkpoint, critic, opt, gen, done, config)
            elapsed = time.perf_counter() - t0
            bar.update(min(elapsed, config.max_seconds) - bar.n if timed else 1)
            if timed and elapsed > config.max_seconds:
                if checkpoint is not None and rank == 0:
                    _save_checkpoint(checkpoint, critic, opt, gen, done, config)
                break
    finally:
        bar.close()
        if logf is not None:
            logf.close()
    critic.cpu().eval()
    if hasattr(critic, "meta"):
        critic.meta.setdefault("training", {}).update(
            {k: v for k, v in asdict(config).items() if k not in ("device", "extra", "max_seconds")})
        critic.meta["training"].update(config.extra)
        critic.meta["training"]["steps"] = done
        critic.meta["training"]["world_size"] = world
    if out is not None and rank == 0:
        save_model(critic, out)
    return critic


def _open_log(path: Path, start: int):
    """Open the CSV log; on resume drop rows past the checkpoint step."""
    rows = []
    if start > 0 and path.is_file():
        with open(path, newline="") as f:
            rows = [r for r in csv.DictReader(f) if int(r["step"]) <= start]
    path.parent.mkdir(parents=True, exist_ok=True)
    f = open(path, "w", newline="")
    w = csv.DictWriter(f, fieldnames=LOG_FIELDS)
    w.writeheader()
    w.writerows(rows)
    return f, w


def _save_checkpoint(path, critic: nn.Module, opt, gen: torch.Generator, step: int, config: TrainConfig) -> None:
    state = {"model": {k: v.detach().cpu() for k, v in critic.state_dict().items()},
             "optim": opt.state_dict(), "rng": gen.get_state(), "step": step, "recipe": _recipe(config, critic)}
    atomic_write(path, lambda tmp: torch.save(state, tmp))
