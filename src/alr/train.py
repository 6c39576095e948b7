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

``penalty="one-sided"`` penalises only gradients steeper than 1, ``mu * E_z[relu(||grad_z u(z)||_2 - 1)^2]``
(the comparative study's local adversarial regularizer, Hertrich et al. 2025, with mu = 0.1); with
paired patches its interpolates lie on the segment from each clean patch to its own noisy version,
along the noise direction. :data:`RECIPES` bundles the study's choices as ``"lar"`` beside the
paper's ``"paper"``.

With a ``validator`` (:class:`alr.calibration.Validator`) and ``val_every > 0``, the critic is judged
every ``val_every`` steps (and at the end) by the PSNR it restores on held-out training-side crops;
the best one is kept and returned (checkpoint selection), its step and score recorded in the model
file (``meta["training"]["selected"]``) and each check in the log (``val_psnr``, ``val_lambda``).
The :data:`TOP_CHECKS` best checks are kept with their weights; given a ``final_validator`` (larger
crops), they are judged again when the run ends and its choice wins. A pause checks the critic
too (the paused model file holds the best so far), so a paused run may keep a check that an
uninterrupted run would not make; the weights trained are the same.

The learning rate decays exponentially, ``lr_k = lr0 (lr1 / lr0)^(k / steps)`` (with a time
budget ``max_seconds``, by the fraction of it spent when that is further along).
Every ``ckpt_every`` steps a checkpoint (weights, Adam state, sampler RNG,
step, the seconds trained, the recipe) is written atomically; ``resume=True`` continues from it and reproduces
the uninterrupted run exactly: the clock goes on from the checkpoint's seconds, so ``max_seconds``
budgets the whole run. ``stop_after`` pauses a run after that many seconds of one process (a
checkpoint written, the model marked ``meta["training"]["paused"]``) without touching the
schedule, for jobs under a wall-clock limit that resume each other; a stop signal (Ctrl-C, SIGTERM)
ends the step in progress, writes the checkpoint and raises :class:`alr.errors.Interrupted`
(:class:`StopSignals`). A resumed run may ask for more ``steps`` (the learning rate
then follows the new total from the checkpoint on); any other change of the recipe, or fewer
steps than the checkpoint has done, is refused (:class:`alr.errors.AlrError`).

Training is deterministic on the CPU: the same seed, data and options give the same model file,
bit for bit (:func:`new_critic` draws the initial weights from the seed; the patches, noise and
mixing weights come from a generator seeded with it). On the CPU a batch whose activations would
pass :data:`CPU_CHUNK_BYTES` goes through the network in chunks whose gradients add up to the
batch's (:func:`accumulate_gradients`). Under ``torchrun`` the step is data-parallel:
each of the N processes takes its 1/N slice of the same global batch and the
gradients are averaged (gloo on CPU, NCCL on GPU), so N processes compute
the same updates as one.

:func:`train_folder` is ``alr train`` in one call: the command's options (:class:`TrainOptions`,
the recipe filling those not given), patch sampling, training, the scale fit and the lambda
calibration.
"""
from __future__ import annotations

import copy
import csv
import math
import os
import signal
import threading
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Callable

import torch
from torch import nn
from tqdm.auto import tqdm

from .critic import PatchCritic, patch_scores
from .device import resolve_device
from .errors import AlrError, Interrupted
from .files import atomic_write
from .modelfile import save_model

Sampler = Callable[[int, torch.Generator], tuple[torch.Tensor, torch.Tensor]]

#: The largest activation one CPU forward pass of training makes. glibc serves every block above
#: 32 MiB with its own mmap, so a larger tensor is mapped, faulted in and unmapped at every step:
#: 512 patches of the LAR critic (59 MB for its first layer) train 1.35x faster in two chunks
#: (``benchmarks/train_speed.py``; the CLI's :func:`alr.device.keep_freed_memory` gains 1.17x more).
CPU_CHUNK_BYTES = 32 * 2**20

LOG_FIELDS = ["step", "loss", "wasserstein", "gradient_penalty", "grad_norm_mean",
              "grad_norm_min", "grad_norm_max", "slope_penalty", "lr", "seconds", "val_psnr", "val_lambda"]

PENALTIES = ("two-sided", "one-sided")

#: Training recipes of ``alr train --recipe``: the architecture of a new critic and the defaults of
#: the training options (each option given explicitly wins). ``"paper"``: the paper's unpaired
#: WGAN-GP critic. ``"lar"``: the local adversarial regularizer of the comparative study of learned
#: regularizers (Hertrich et al. 2025, github.com/johertrich/LearnedRegularizers): a 15x15 SiLU critic
#: 128-64-64-64-32-32, paired clean / noisy patches, a one-sided gradient penalty of weight 0.1 at
#: points between each patch and its noisy version, Adam (0.9, 0.999) at 1e-3 decaying to 1e-4,
#: 512 patches a step, flips and quarter turns, the checkpoint restoring best on held-out training
#: images, then a fitted input scale and weight; restored by L-BFGS run to a tolerance.
RECIPES: dict[str, dict] = {
    "paper": {"arch": {"depth": 6, "width": 64, "activation": "relu"},
              "options": {"batch_size": 128, "lr0": 1e-4, "lr1": 1e-5, "mu": 10.0, "betas": (0.5, 0.9),
                          "penalty": "two-sided", "paired": False, "augment": False, "val_every": 0,
                          "val_images": 0, "fit_scale": False}},
    "lar": {"arch": {"widths": [128, 64, 64, 64, 32, 32], "activation": "silu"},
            "options": {"batch_size": 512, "lr0": 1e-3, "lr1": 1e-4, "mu": 0.1, "betas": (0.9, 0.999),
                        "penalty": "one-sided", "paired": True, "augment": True, "val_every": 1000,
                        "val_images": 8, "fit_scale": True},
            "solver": {"method": "lbfgs", "options": {"boundary": "reflect", "tol": 1e-4},
                       "iters": {"denoise": 200, "deblur": 300, "inpaint": 300, "sr": 300}}},
}


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
    penalty: str = "two-sided"
    val_every: int = 0
    betas: tuple[float, float] = (0.5, 0.9)
    seed: int = 0
    ckpt_every: int = 1000
    log_every: int = 10
    max_seconds: float | None = None
    stop_after: float | None = None
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
        if self.penalty not in PENALTIES:
            raise ValueError(f"unknown gradient penalty {self.penalty!r}; choose one of {', '.join(PENALTIES)}")

    def lr(self, step: int, elapsed: float = 0.0) -> float:
        """The learning rate at ``step`` (``elapsed`` seconds in): :func:`decayed_lr`."""
        return decayed_lr(self, step, elapsed)


def decayed_lr(config, step: int, elapsed: float = 0.0) -> float:
    """``lr0 (lr1/lr0)^f`` of a config with ``lr0``, ``lr1``, ``steps`` and ``max_seconds``, f the
    fraction done: of the steps, or of max_seconds if further."""
    f = step / max(1, config.steps)
    if config.max_seconds:
        f = min(1.0, max(f, elapsed / config.max_seconds))
    return config.lr0 * (config.lr1 / config.lr0) ** f


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
RESUMABLE_CHANGES = ("steps", "ckpt_every", "log_every", "max_seconds", "stop_after", "device", "extra")


def _recipe(config: TrainConfig, critic: nn.Module) -> dict:
    """What a checkpoint records of a run: the fields of ``config`` a resumed run must keep, and
    the training data the critic's metadata names."""
    recipe = {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(config).items()
              if k not in RESUMABLE_CHANGES}
    return {**recipe, "data": (getattr(critic, "meta", None) or {}).get("data")}


def load_checkpoint(path: str | os.PathLike | None, critic: nn.Module, opt, gen: torch.Generator,
                    recipe: dict | None = None, steps: int | None = None) -> dict:
    """Restore what :func:`save_checkpoint` wrote into ``critic``, ``opt`` and ``gen``; returns the whole
    state (``step`` and the extras).

    Loaded with ``weights_only=True`` (tensors and plain containers only, nothing executed).
    A missing, foreign or damaged file, weights of another critic, a ``recipe`` (what the run must
    keep, e.g. :func:`_recipe`) other than the checkpoint's, and more steps done than ``steps``
    raise a one-line :class:`AlrError` naming the file.
    """
    if path is None or not Path(path).is_file():
        raise AlrError(f"no checkpoint to resume from at {path}")
    path = Path(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        assert isinstance(state, dict) and {"model", "optim", "rng", "step"} <= set(state)
    except Exception:  # noqa: BLE001 -- a pickle of anything else, a truncated or foreign file
        raise AlrError(f"{path} is not an alr training checkpoint (or it is damaged); start again "
                       "without --resume") from None
    done, saved = int(state["step"]), state.get("recipe")
    if recipe is not None and saved is not None:
        changed = [f"{k}={v!r} (checkpoint: {saved.get(k)!r})" for k, v in recipe.items() if saved.get(k) != v]
        if changed:
            raise AlrError(f"{path}: --resume continues the same training; it differs in " + ", ".join(changed))
    if steps is not None and done > steps:
        raise AlrError(f"{path} has done {done} steps, more than --steps {steps}: give --steps >= {done}")
    try:
        critic.load_state_dict(state["model"])
        opt.load_state_dict(state["optim"])
        gen.set_state(state["rng"])
    except (RuntimeError, ValueError, KeyError, TypeError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise AlrError(f"{path}: the checkpoint does not fit this critic ({first})") from None
    return state


def continue_from(model: nn.Module, source: str) -> nn.Module:
    """Prepare a trained ``model`` (loaded from ``source``) for further training.

    Its lambda tables no longer hold once the weights change, so they are dropped;
    the header records the model, the data, the training and fine-tuning it continued from
    (``meta["continued_from"]``, nested when a model is continued twice).
    """
    meta = dict(getattr(model, "meta", None) or {})
    prev = {"model": Path(source).stem, "training": meta.pop("training", {})}  # a name, never a machine path
    for key in ("data", "recipe", "finetune", "scale_fit", "pending"):
        if key in meta:
            prev[key] = meta.pop(key)
    if "continued_from" in meta:
        prev["continued_from"] = meta.pop("continued_from")
    meta.pop("lambda", None)
    meta.pop("lambda_calibration", None)
    model.meta = {**meta, "continued_from": prev}
    return model


def wgan_gp_loss(critic: nn.Module, p: torch.Tensor, q: torch.Tensor, t: torch.Tensor,
                 mu: float, anchor: float = 100.0, slope: float = 0.0,
                 penalty: str = "two-sided") -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """WGAN-GP critic loss on clean ``p``, degraded ``q`` and mixing weights ``t``.

    ``"w1"`` critics (r = u): ``E_p[u(p)] - E_q[u(q)] + mu * GP``. ``"w2"`` critics (r = u^2 / 2)
    add ``anchor / 2 * E_p[u(p)^2]``, which pins u to 0 on the clean patches (within about
    1 / anchor) while the rest raises it on degraded ones as far as a 1-Lipschitz function
    can: u tends to the distance to the clean patches. GP is the penalty
    ``E_z[(||grad_z u(z)||_2 - 1)^2]`` on the potential u (:meth:`PatchCritic.potential`), or with
    ``penalty="one-sided"`` ``E_z[relu(||grad_z u(z)||_2 - 1)^2]``, which lets u be flatter than 1.
    ``slope > 0`` (``p``, ``q`` paired) adds ``slope * E_z[(grad_z u(z) . d - 1)^2]``,
    ``d = (q - p) / ||q - p||``, at the same interpolates (module docstring).

    Returns the loss and detached statistics (``E_q[r] - E_p[r]``, the Wasserstein estimate
    for "w1"; penalties; norms of grad_z u at the interpolates).
    """
    t = t.view(-1, *([1] * (p.dim() - 1)))
    z = (t * p + (1 - t) * q).requires_grad_(True)
    (g,) = torch.autograd.grad(critic.potential(z).sum(), z, create_graph=True)
    gnorm = g.flatten(1).norm(dim=1)
    excess = gnorm - 1 if penalty == "two-sided" else torch.relu(gnorm - 1)
    gp = (excess ** 2).mean()
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


def chunk_count(critic: nn.Module, batch: torch.Tensor, device: torch.device) -> int:
    """How many chunks a CPU training step splits ``batch`` (B, C, H, W) into, so that no
    activation passes :data:`CPU_CHUNK_BYTES` (bounded by the widest layer at H x W); 1 on an
    accelerator."""
    if device.type != "cpu":
        return 1
    widest = max((m.out_channels for m in critic.modules() if isinstance(m, nn.Conv2d)), default=1)
    biggest = batch[:, 0].numel() * widest * batch.element_size()
    return max(1, min(len(batch), math.ceil(biggest / CPU_CHUNK_BYTES)))


def accumulate_gradients(critic: nn.Module, p: torch.Tensor, q: torch.Tensor, t: torch.Tensor,
                         config: TrainConfig, chunks: int = 1) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Add the gradient of :func:`wgan_gp_loss` on the batch ``(p, q, t)`` to the critic's
    parameters, ``chunks`` slices at a time (each slice's loss weighted by its share of the batch,
    so that the gradients add up to the batch's); returns the batch's loss and statistics."""
    if chunks == 1:
        loss, stats = wgan_gp_loss(critic, p, q, t, config.mu, config.anchor, config.slope, config.penalty)
        loss.backward()
        return loss, stats
    parts = []
    for idx in torch.arange(p.shape[0]).tensor_split(chunks):
        loss, stats = wgan_gp_loss(critic, p[idx], q[idx], t[idx], config.mu, config.anchor, config.slope,
                                   config.penalty)
        share = len(idx) / p.shape[0]
        (loss * share).backward()
        parts.append((share, loss.detach(), stats))
    total = {k: sum(w * s[k] for w, _, s in parts) for k in parts[0][2]}  # the means: weighted by share
    total["grad_norm_min"] = min(s["grad_norm_min"] for _, _, s in parts)
    total["grad_norm_max"] = max(s["grad_norm_max"] for _, _, s in parts)
    return sum(w * v for w, v, _ in parts), total


#: How many of the best checks a run keeps (weights included) for the final choice.
TOP_CHECKS = 3


def train_critic(critic: nn.Module, sampler: Sampler, config: TrainConfig,
                 out: str | os.PathLike | None = None, log_csv: str | os.PathLike | None = None,
                 checkpoint: str | os.PathLike | None = None, resume: bool = False,
                 progress: bool = True, validator: Callable[[nn.Module], tuple[float, float]] | None = None,
                 final_validator: Callable[[nn.Module], tuple[float, float]] | None = None,
                 started: float | None = None) -> nn.Module:
    """Train ``critic`` in place with WGAN-GP on batches from ``sampler(n, generator)``.

    ``out`` receives the final model file (safetensors), ``log_csv`` one row
    per ``log_every`` steps, ``checkpoint`` the resumable state (default
    ``out + '.ckpt'``). ``validator(critic) -> (psnr, lambda)`` judges the critic every
    ``config.val_every`` steps and the best one is kept (module docstring); with a
    ``final_validator`` (larger crops: a finer judge, too slow for every check) the
    :data:`TOP_CHECKS` best checks are judged again when the run ends and its best is kept.
    ``config.stop_after`` counts from ``started`` (a ``time.perf_counter()`` time; default: now).
    Returns the trained critic on the CPU, in eval mode.
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
    critic.requires_grad_(True)  # every parameter trains, whatever flags the critic came with
    opt = torch.optim.Adam(critic.parameters(), lr=config.lr0, betas=config.betas)
    gen = torch.Generator().manual_seed(config.seed)
    if checkpoint is None and out is not None:
        checkpoint = str(out) + ".ckpt"
    start, clock = 0, 0.0  # clock: seconds the run has trained before this process (a resumed run)
    top: list[dict] = []  # the best checks so far, best first: step, val_psnr, val_lambda, state
    validate = validator is not None and config.val_every > 0
    if resume:
        state = load_checkpoint(checkpoint, critic, opt, gen, _recipe(config, critic), config.steps)
        start, clock = int(state["step"]), float(state.get("seconds", 0.0))
        top = state.get("top") or ([state["best"]] if state.get("best") else [])
        if validate and top and state.get("val_rule") != getattr(validator, "rule", None):
            top = _ranked([_rescore(c, critic, validator, rank, world, device, progress) for c in top])
        if validate and state.get("val_lam") is not None and state.get("val_searched", True):
            validator.lam, validator.searched = state["val_lam"], True  # the search goes on from where it was
    if world > 1:
        for prm in critic.parameters():
            torch.distributed.broadcast(prm.data, 0)
    lo, hi = rank * config.batch_size // world, (rank + 1) * config.batch_size // world

    timed = bool(config.max_seconds)  # a wall-clock budget: the bar shows it, the steps go in the postfix
    done = start
    bar = tqdm(total=config.max_seconds if timed else config.steps,
               initial=min(clock, config.max_seconds) if timed else start,
               disable=not progress or rank != 0, desc="train critic", unit="s" if timed else "step",
               dynamic_ncols=True,
               bar_format="{l_bar}{bar}| {n:.0f}/{total:.0f} s [{elapsed}<{remaining}{postfix}]" if timed else None)
    paused = interrupted = False
    with RunLog(log_csv if rank == 0 else None, start if resume else 0, LOG_FIELDS, clock, started) as log, bar, \
            StopSignals() as signals:
        for step in range(start, config.steps):
            lr = config.lr(step, log.seconds())
            for grp in opt.param_groups:
                grp["lr"] = lr
            p, q = sampler(config.batch_size, gen)
            t = torch.rand(config.batch_size, generator=gen)
            p, q, t = (v[lo:hi].to(device, non_blocking=True) for v in (p, q, t))
            opt.zero_grad(set_to_none=True)
            loss, stats = accumulate_gradients(critic, p, q, t, config, chunk_count(critic, p, device))
            if world > 1:
                for prm in critic.parameters():
                    torch.distributed.all_reduce(prm.grad)
                    prm.grad /= world
            opt.step()
            done = step + 1
            row: dict = {}
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
                row.update({k: f"{v:.6g}" for k, v in vals.items()}, lr=f"{lr:.6g}")
            timeout, paused, interrupted = stopping(config, log, done, signals)
            if world > 1:  # rank 0's clock decides, so that every process stops after the same step
                timeout, paused, interrupted = _from_rank0(device, timeout, paused, interrupted)
            if validate and (done % config.val_every == 0 or done == config.steps or timeout or paused):
                score, lam = _validate(critic, validator, rank, world, device)
                row.update(val_psnr=f"{score:.4f}", val_lambda=f"{lam:.4g}")
                if len(top) < TOP_CHECKS or score > top[-1]["val_psnr"]:
                    top = _ranked(top + [{"step": done, "val_psnr": score, "val_lambda": lam, "state": snapshot(critic)}])
                bar.set_postfix(val=f"{score:.2f}", best=f"{top[0]['val_psnr']:.2f}@{top[0]['step']}", refresh=False)
            log.write(done, row)
            if checkpoint is not None and rank == 0 and (done % config.ckpt_every == 0 or done == config.steps
                                                          or timeout or paused or interrupted):
                save_checkpoint(checkpoint, critic, opt, gen, done, top=top, val_lam=getattr(validator, "lam", None),
                                val_searched=getattr(validator, "searched", None),
                                val_rule=getattr(validator, "rule", None),
                                recipe=_recipe(config, critic), seconds=log.seconds())
            elapsed = log.seconds()
            bar.update(min(elapsed, config.max_seconds) - bar.n if timed else 1)
            if timeout or paused or interrupted:
                break
        critic.cpu().eval()
        best = top[0] if top else None
        judge = final_validator is not None and len(top) > 1
        paused = paused and (done < config.steps or judge)  # the caller's end keeps to the deadline itself
        if judge and not (paused or interrupted):
            def halt() -> tuple[bool, bool]:  # between the judgements: the clock of --stop-after, a stop signal
                flags = stopping(replace(config, max_seconds=None), log, done, signals)[1:]
                return _from_rank0(device, *flags) if world > 1 else flags

            best, paused, interrupted = _final_choice(top, critic, final_validator, rank, world, device, progress,
                                                      halt)
    if interrupted:
        raise interrupted_at(done, config.steps, checkpoint)
    if best is not None:
        critic.load_state_dict(best["state"])
    if hasattr(critic, "meta"):
        critic.meta.setdefault("training", {}).update(
            {k: v for k, v in asdict(config).items() if k not in ("device", "extra", "max_seconds", "stop_after")})
        critic.meta["training"].update(config.extra)
        critic.meta["training"]["steps"] = done
        for key in ("paused", "steps_left"):
            critic.meta["training"].pop(key, None)
        if paused:  # --resume goes on: with the steps left, or with only the end of the run
            critic.meta["training"].update(paused=True, steps_left=config.steps - done)
            if judge:
                later = [p for p in critic.meta.get("pending", []) if p != FINAL_CHOICE]
                critic.meta["pending"] = [FINAL_CHOICE, *later]
        critic.meta["training"]["world_size"] = world
        if best is not None:
            critic.meta["training"]["selected"] = {
                "step": best["step"], "val_psnr": _recorded(best["val_psnr"]), "val_lambda": best["val_lambda"],
                **(validator.describe() if hasattr(validator, "describe") else {})}
            if "final_psnr" in best:
                critic.meta["training"]["selected"]["final"] = {
                    **(final_validator.describe() if hasattr(final_validator, "describe") else {}),
                    "psnr": _recorded(best["final_psnr"]), "lambda": best["final_lambda"],
                    "candidates": [{k: _recorded(c[k]) if "psnr" in k else c[k] for k in ("step", "val_psnr", "final_psnr")}
                                   for c in top]}
    if out is not None and rank == 0:
        save_model(critic, out)
    return critic


class RunLog:
    """A training loop's CSV log with columns ``fields``, written a row at a time with the run's
    seconds: ``seconds`` (those of the runs it resumes) plus those since it was opened.
    ``started`` is when this process's command began (default: the opening), the origin of
    ``--stop-after`` (:func:`past_deadline`). On resume
    (``start > 0``) it keeps the rows up to the checkpoint's step and drops the later ones. ``path``
    None: nothing is written; the clock still runs."""

    def __init__(self, path: str | os.PathLike | None, start: int, fields: list[str], seconds: float = 0.0,
                 started: float | None = None) -> None:
        self.t0, self.before = time.perf_counter(), seconds
        self.started = self.t0 if started is None else started
        self.file = self.writer = None
        if path is None:
            return
        path = Path(path)
        rows = []
        if start > 0 and path.is_file():
            try:
                with open(path, newline="") as f:
                    rows = [r for r in csv.DictReader(f) if int(r["step"]) <= start]
            except (KeyError, TypeError, ValueError, UnicodeDecodeError):  # not a log of alr's
                raise ValueError(f"{path} is not the log of the run resumed (no step column): give --log "
                                 "another file") from None
        path.parent.mkdir(parents=True, exist_ok=True)

        def kept(tmp: str) -> None:
            with open(tmp, "w", newline="") as f:
                w = csv.DictWriter(f, fieldnames=fields)
                w.writeheader()
                w.writerows(rows)

        if rows:  # a resumed log is replaced whole: a kill while it is rewritten leaves the old one
            atomic_write(path, kept)
        else:
            kept(str(path))
        self.file = open(path, "a", newline="")
        self.writer = csv.DictWriter(self.file, fieldnames=fields)

    def seconds(self) -> float:
        """Seconds of the whole run: those before the resume and those since the log was opened."""
        return self.before + time.perf_counter() - self.t0

    def write(self, step: int, row: dict) -> None:
        """Write one row for ``step`` (nothing for an empty row)."""
        if self.writer is not None and row:
            self.writer.writerow({"step": step, **row, "seconds": f"{self.seconds():.2f}"})
            self.file.flush()

    def __enter__(self) -> "RunLog":
        return self

    def __exit__(self, *exc) -> None:
        if self.file is not None:
            self.file.close()


class StopSignals:
    """Within ``with StopSignals() as signals:``, the first SIGINT (Ctrl-C) or SIGTERM (a job
    scheduler's notice) only sets ``signals.caught``: the training loop ends after its step with a
    checkpoint written and raises :class:`alr.errors.Interrupted`. A second signal interrupts at
    once. Outside the main thread (where Python cannot catch signals), and for a signal the process
    ignores, nothing changes."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.caught = False
        self.saved: dict = {}

    def __enter__(self) -> "StopSignals":
        if threading.current_thread() is threading.main_thread():  # a signal ignored (nohup) stays ignored
            self.saved = {sig: signal.signal(sig, self._catch) for sig in self.SIGNALS
                          if signal.getsignal(sig) is not signal.SIG_IGN}
        return self

    def _catch(self, signum, frame) -> None:
        if self.caught:
            self._restore()
            raise KeyboardInterrupt
        self.caught = True

    def _restore(self) -> None:
        for sig, handler in self.saved.items():
            signal.signal(sig, handler)
        self.saved = {}

    def __exit__(self, *exc) -> None:
        self._restore()


def stopping(config, log: RunLog, done: int, signals: StopSignals) -> tuple[bool, bool, bool]:
    """``(timeout, paused, interrupted)`` of a training loop after ``done`` steps: the run's
    ``config.max_seconds`` are spent with steps left; or else ``config.stop_after`` seconds of this
    process have passed (the checkpoint then lets ``--resume`` go on, also after the last step,
    when only the end of the run is left); or else a stop signal came (:class:`StopSignals`)."""
    timeout = bool(config.max_seconds) and log.seconds() > config.max_seconds and done < config.steps
    paused = not timeout and past_deadline(config.stop_after, log.started)
    return timeout, paused, not (timeout or paused) and signals.caught


def past_deadline(stop_after: float | None, started: float) -> bool:
    """``--stop-after``: ``stop_after`` seconds (None: never) have passed since ``started``, a
    ``time.perf_counter()`` time."""
    return bool(stop_after) and time.perf_counter() - started > stop_after


def pause_before_end(critic: nn.Module, record: str, out, stop_after: float | None, started: float) -> bool:
    """Before a stage of the end of a run (scale fit, calibration): when ``stop_after`` seconds
    since ``started`` have passed, mark ``critic.meta[record]`` paused with no steps left, write the
    model to ``out`` and return True (``--resume`` then does the end again); otherwise False."""
    if not past_deadline(stop_after, started):
        return False
    critic.meta[record].update(paused=True, steps_left=0)
    save_model(critic, out)
    return True


def interrupted_at(done: int, steps: int, checkpoint) -> Interrupted:
    """The error that ends a run stopped by a signal after ``done`` of ``steps`` steps."""
    where = (f"{checkpoint} holds it: run the same command with --resume to "
             + ("go on" if done < steps else "end the run") if checkpoint is not None
             else "no checkpoint was asked for")
    return Interrupted(f"stopped after step {done} of {steps}; {where}")


def snapshot(module: nn.Module) -> dict[str, torch.Tensor]:
    """A copy of ``module``'s weights on the CPU (the best checkpoint so far)."""
    return {k: v.detach().cpu().clone() for k, v in module.state_dict().items()}


def _from_rank0(device: torch.device, *flags: bool) -> tuple[bool, ...]:
    """``flags`` as rank 0 of a data-parallel run has them."""
    sent = torch.tensor([float(f) for f in flags], device=device)
    torch.distributed.broadcast(sent, 0)
    return tuple(bool(v) for v in sent.tolist())


def _validate(critic: nn.Module, validator, rank: int = 0, world: int = 1,
              device: torch.device | None = None) -> tuple[float, float]:
    """``validator(critic)`` on rank 0, the same (psnr, lambda) handed to every process; a score
    that is not finite (a diverged solve) counts as -inf, so that it is never selected."""
    if world == 1:
        score, lam = validator(critic)
    else:
        sent = torch.zeros(2, dtype=torch.float64, device=device)
        if rank == 0:
            sent[:] = torch.tensor(validator(critic), dtype=torch.float64)
        torch.distributed.broadcast(sent, 0)
        score, lam = float(sent[0]), float(sent[1])
    return (score if math.isfinite(score) else -math.inf), lam


def _recorded(score: float) -> float | None:
    """A validation PSNR as a model file records it: 4 decimals, None for a diverged solve (-inf)."""
    return round(score, 4) if math.isfinite(score) else None


def _ranked(checks: list[dict]) -> list[dict]:
    """The :data:`TOP_CHECKS` best ``checks`` by ``val_psnr``, best first (the earlier of equals)."""
    return sorted(checks, key=lambda c: -c["val_psnr"])[:TOP_CHECKS]


#: What a model file paused before the judgement of its best checks lacks (``meta["pending"]``).
FINAL_CHOICE = "choice among the best checks"


def _final_choice(top: list[dict], critic: nn.Module, final, rank: int, world: int, device,
                  progress: bool, halt) -> tuple[dict, bool, bool]:
    """Each of the ``top`` checks judged by the ``final`` validator (its lambda search starting at the
    check's); ``(the best of them, False, False)``, with ``final_psnr`` and ``final_lambda`` recorded
    in each. Before each judgement ``halt()`` says ``(paused, interrupted)``: when either is set the
    choice stops there and returns ``(top[0], paused, interrupted)``."""
    for c in tqdm(top, desc="judge the best checks", disable=not progress or rank != 0, leave=False):
        paused, interrupted = halt()
        if paused or interrupted:
            for judged in top:
                judged.pop("final_psnr", None)
                judged.pop("final_lambda", None)
            return top[0], paused, interrupted
        c["final_psnr"], c["final_lambda"] = _judge(c, critic, final, rank, world, device)
    return max(top, key=lambda c: c["final_psnr"]), False, False


def _judge(check: dict, critic: nn.Module, validator, rank: int, world: int, device) -> tuple[float, float]:
    """``validator``'s (psnr, lambda) for the weights of a kept ``check``, its lambda search starting
    at the check's own."""
    judged = copy.deepcopy(critic)
    judged.load_state_dict(check["state"])
    validator.lam, validator.searched = check["val_lambda"], True
    return _validate(judged, validator, rank, world, device)


def _rescore(best: dict, critic: nn.Module, validator, rank: int, world: int, device: torch.device,
             progress: bool) -> dict:
    """The stored best checkpoint judged again by the validator of a resumed run whose rule changed
    (:attr:`alr.calibration.Validator.rule`), its search starting at the best's lambda, so that it
    and the checks to come are compared alike."""
    score, lam = _judge(best, critic, validator, rank, world, device)
    if progress and rank == 0:
        tqdm.write(f"validation rule changed: the kept check of step {best['step']} scores {score:.4f} "
                   f"at lambda {lam:.4g} (was {best['val_psnr']:.4f} at {best['val_lambda']:.4g})")
    return {**best, "val_psnr": score, "val_lambda": lam}


def save_checkpoint(path, critic: nn.Module, opt, gen: torch.Generator, step: int, **extra) -> None:
    """Write the resumable state atomically: weights, optimiser, sampler RNG, step and ``extra``
    (tensors, numbers, lists and dicts of them)."""
    state = {"model": {k: v.detach().cpu() for k, v in critic.state_dict().items()},
             "optim": opt.state_dict(), "rng": gen.get_state(), "step": step, **extra}
    atomic_write(path, lambda tmp: torch.save(state, tmp))


@dataclass
class TrainOptions:
    """What ``alr train`` trains: one field per option of the command (docs/usage.md). ``None``
    takes the recipe's default (:data:`RECIPES`), or for the architecture the ``init`` model's."""

    clean: str | os.PathLike
    sigma: float | None = None
    sigma_range: tuple[float, float] | None = None
    degraded: str | os.PathLike | None = None
    blur: float = 0.0
    poisson: float = 0.0
    recipe: str = "paper"
    init: str | None = None
    channels: int | None = None
    depth: int | None = None
    width: int | None = None
    widths: list[int] | None = None
    activation: str | None = None
    criterion: str | None = None
    anchor: float = 100.0
    slope: float = 0.0
    paired: bool | None = None
    penalty: str | None = None
    steps: int = 20000
    batch_size: int | None = None
    lr0: float | None = None
    lr1: float | None = None
    mu: float | None = None
    betas: tuple[float, float] | None = None
    val_images: int | None = None
    val: str | os.PathLike | None = None
    val_every: int | None = None
    val_sigma: float | None = None
    boundary: str | None = None
    fit_scale: bool | None = None
    seed: int = 0
    ckpt_every: int = 1000
    max_seconds: float | None = None
    stop_after: float | None = None
    max_images: int | None = None
    augment: bool | None = None
    device: str | None = None

    def __post_init__(self) -> None:
        if self.recipe not in RECIPES:
            raise ValueError(f"unknown recipe {self.recipe!r}; use {', '.join(sorted(RECIPES))}")
        if (self.sigma is None) + (self.sigma_range is None) + (self.degraded is None) != 2:
            raise ValueError("give one of sigma, sigma_range (synthetic noise) or degraded (real degraded images)")
        for key, value in RECIPES[self.recipe]["options"].items():  # the recipe's defaults of the options not given
            if getattr(self, key) is None:
                setattr(self, key, value)

    def degradation(self):
        """The synthetic degradation (:class:`alr.data.Degradation`), None for real degraded images."""
        from .data import Degradation

        if self.degraded is not None:
            if self.blur or self.poisson:
                raise ValueError("--blur and --poisson apply to synthetic noise (--sigma / --sigma-range), "
                                 "not --degraded")
            return None
        lo, hi = (self.sigma, self.sigma) if self.sigma is not None else tuple(self.sigma_range)
        return Degradation(lo, hi, self.blur, self.poisson)


def train_folder(options: TrainOptions, out: str | os.PathLike, log_csv: str | os.PathLike | None = None,
                 resume: bool = False, calibrate: bool = True, progress: bool = True) -> PatchCritic:
    """``alr train``: train a critic on the images of ``options.clean`` and write it to ``out``.

    Draws clean and degraded patches (:func:`alr.data.make_patch_pairs`: unpaired halves of the
    folder, or paired), trains with :func:`train_critic` (checkpoint selection on held-out images
    when ``val_every``), then, unless the run paused, fits the input scale and weight
    (``fit_scale``, :func:`alr.finetune.fit_scale`) and calibrates the denoising lambda on
    training-side crops (``calibrate``, :func:`alr.calibration.calibrate_trained`). Under ``torchrun``
    every process trains and rank 0 writes. Returns the critic (on every rank).
    """
    from .calibration import calibrate_trained
    from .data import make_patch_pairs, split_holdout
    from .modelfile import portable_path
    from .pretrained import DEFAULT_SOLVER

    o, t0 = options, time.perf_counter()
    rank, _ = init_distributed()
    recipe = RECIPES[o.recipe]
    critic = _training_critic(o, recipe["arch"], resume)
    deg = o.degradation()
    holdout = 0 if o.val else o.val_images
    pairs = make_patch_pairs(o.clean, critic.receptive_field, critic.in_channels, o.degraded, deg, seed=o.seed,
                             max_images=o.max_images, augment=o.augment, paired=o.paired or o.slope > 0,
                             holdout=holdout)
    validator, final, val_sigma = _validator(o, deg, split_holdout(o.clean, o.max_images, holdout)[1],
                                             critic.in_channels)
    critic.meta.update({"recipe": o.recipe,
                        "data": {"clean": portable_path(o.clean), "degraded": portable_path(o.degraded),
                                 **pairs.describe()},
                        "noise_range": ([deg.sigma_min, deg.sigma_max] if deg else None)})
    if "solver" in recipe:
        critic.meta["solver"] = recipe["solver"]
    if o.boundary:
        solver = critic.meta.get("solver") or DEFAULT_SOLVER
        critic.meta["solver"] = {**solver, "options": {**solver.get("options", {}), "boundary": o.boundary}}
    cfg = TrainConfig(steps=o.steps, batch_size=o.batch_size, lr0=o.lr0, lr1=o.lr1, mu=o.mu, anchor=o.anchor,
                      slope=o.slope, penalty=o.penalty, val_every=o.val_every, betas=tuple(o.betas), seed=o.seed,
                      ckpt_every=o.ckpt_every, device=o.device, max_seconds=o.max_seconds, stop_after=o.stop_after)
    pending = [step for step, on in (("scale fit", o.fit_scale), ("calibration", calibrate)) if on]
    if pending:  # what the model file lacks until the end: alr info and alr restore say so
        critic.meta["pending"] = pending
    train_critic(critic, pairs.sample, cfg, out=out, log_csv=log_csv, resume=resume, progress=progress,
                 validator=validator, final_validator=final, started=t0)
    if rank != 0 or critic.meta["training"].get("paused"):
        return critic

    def finished(step: str) -> None:
        pending.remove(step)
        if not pending:
            critic.meta.pop("pending")

    def late() -> bool:
        return pause_before_end(critic, "training", out, o.stop_after, t0)

    if o.fit_scale and late():
        return critic
    if o.fit_scale:
        try:
            _fit_scale_checked(critic, pairs.clean, validator, final, val_sigma, o.device, progress)
        except Interrupted:
            raise Interrupted(f"stopped during the scale fit: {out} holds the trained critic without it; the same "
                              "command with --resume fits and calibrates it") from None
        finished("scale fit")
        save_model(critic, out)
    if calibrate and late():
        return critic
    if calibrate:
        finished("calibration")
        calibrate_trained(critic, o.clean, deg, out, device=o.device, progress=progress, max_images=o.max_images)
    return critic


def _fit_scale_checked(critic: PatchCritic, images, validator, final, sigma: float, device, progress: bool) -> None:
    """Fit the critic's input scale and weight (:func:`alr.finetune.fit_scale`) at the validated
    lambda, and keep the fit only if the validation crops restore at least as well with it (each
    judged at its best lambda near the selected one, by the ``final`` validator when it chose the
    checkpoint); ``meta["scale_fit"]`` records both scores."""
    from .finetune import fit_scale

    sel = critic.meta["training"].get("selected")
    if sel and "final" in sel:
        validator, before, lam = final, sel["final"]["psnr"], sel["final"]["lambda"]
    elif sel:
        before, lam = sel["val_psnr"], sel["val_lambda"]
    else:
        before, lam = _validate(critic, validator)
    before = -math.inf if before is None else before  # every check diverged
    unfitted = (critic.log_weight, critic.log_scale)
    fit_scale(critic, images, sigma, lam, device=device, progress=progress)
    validator.lam, validator.searched = lam, True
    after, lam_after = _validate(critic, validator)
    kept = math.isfinite(after) and (not math.isfinite(before) or round(after, 4) >= round(before, 4))  # as recorded
    if not kept:
        critic.log_weight, critic.log_scale = unfitted
    critic.meta["scale_fit"].update(val_psnr_before=_recorded(before), val_psnr_after=_recorded(after),
                                    val_lambda_after=lam_after, kept=kept)


def _training_critic(o: TrainOptions, arch_defaults: dict, resume: bool) -> PatchCritic:
    """A new critic from the architecture options (``arch_defaults``: the recipe's), or the ``init``
    model prepared to train on."""
    from .pretrained import load

    arch = {"in_channels": o.channels, "depth": o.depth, "width": o.width, "widths": o.widths,
            "activation": o.activation, "criterion": o.criterion}
    weightless = ("activation", "criterion")  # hold no weights: a model trains on with another one
    if o.init is None:
        if o.steps == 0 and not resume:
            raise ValueError("--steps 0 would write an untrained critic; it only converts an --init model")
        given = {k: v for k, v in arch.items() if v is not None}
        if {"depth", "width", "widths"} & set(given):  # an explicit shape replaces the recipe's
            arch_defaults = {k: v for k, v in arch_defaults.items() if k not in ("depth", "width", "widths")}
        critic = new_critic(o.seed, **{"in_channels": 1, "criterion": "w1", **arch_defaults, **given})
        critic.meta = {}
        return critic
    if resume:
        raise ValueError("--init starts from a model and --resume from a checkpoint: give one")
    critic = load(o.init)
    have = {**critic.config(), "widths": list(critic.widths)}
    clash = [f"{k}={v} (model: {have.get(k)})" for k, v in arch.items()
             if k not in weightless and v is not None and v != have.get(k)]
    if clash:
        raise ValueError(f"--init model {o.init} does not match " + ", ".join(clash))
    continue_from(critic, o.init)
    swap = {k: arch[k] for k in weightless if arch[k] is not None and arch[k] != have[k]}
    if swap:  # the same weights under a new nonlinearity or criterion
        keep = {k: v for k, v in critic.config().items() if k != "kind"}
        swapped = PatchCritic(**{**keep, **swap})
        swapped.load_state_dict(critic.state_dict())
        swapped.meta = {**critic.meta, **{f"{k}_from": have[k] for k in swap}}
        critic = swapped
    return critic


def _validator(o: TrainOptions, deg, held: list, channels: int):
    """The checkpoint selection's :class:`alr.calibration.Validator` (None without ``val_every`` or
    ``fit_scale``), the final one on larger crops of the same images (:data:`FINAL_VAL_CROP`; None
    without ``val_every``), and their noise level."""
    from .calibration import FINAL_VAL_CROP, TRAIN_CAL_CROP, Validator, center_crops
    from .images import list_images
    from .modelfile import portable_path

    sigma = o.val_sigma or (deg.sigma_max if deg is not None and deg.sigma_min == deg.sigma_max else 0.1)
    if not (o.val_every or o.fit_scale):
        return None, None, sigma
    files = list_images(o.val) if o.val else held
    if not files:
        raise ValueError("checkpoint selection (--val-every) and --fit-scale need validation images: "
                         "--val-images N (held out of --clean) or --val DIR")
    source = portable_path(o.val) if o.val else f"the last {len(held)} images of {portable_path(o.clean)}"
    validator = Validator(center_crops(files, channels, TRAIN_CAL_CROP), sigma, device=o.device, source=source)
    final = Validator(center_crops(files, channels, FINAL_VAL_CROP), sigma, device=o.device,
                      source=source) if o.val_every else None
    return validator, final, sigma
