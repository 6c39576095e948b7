"""Bilevel fine-tuning of a critic on paired clean / noisy images, by Jacobian-free backpropagation.

Adversarial training asks the critic to tell clean patches from noisy ones; what restoration
needs is that the *minimiser* of its energy is close to the clean image. With clean training
crops ``x`` and ``y = x + sigma n`` the bilevel problem is::

    min_theta  E_{x, n} ||x*(theta) - x||^2,    x*(theta) = argmin_z E(z; theta),
    E(z; theta) = 1/(2N) ||z - y||^2 + lam R_theta(z)

(``N`` pixels; ``R_theta`` with the critic's fitted scale and weight, :class:`alr.critic.PatchCritic`).
The exact gradient needs the inverse Hessian of E at x* (implicit differentiation).
Jacobian-free backpropagation (JFB, Fung et al. 2022; the study's "BL+JFB", Hertrich et al. 2025)
replaces it by the identity: x* is computed without a graph, by the solver run to a tolerance
(``method``, ``tol``: :func:`alr.solver.minimize`), then one differentiable gradient step::

    x_out = x* - tau G(x*; theta),    G = N grad_z E = (z - y) + N lam grad R_theta(z)

is taken and ``||x_out - x||^2`` (mean over the pixels) is backpropagated through it alone:
``dL/dtheta = -tau (dG/dtheta)^T 2 (x_out - x) / |x|``. At a converged x*, G = 0 and x_out = x*.
The study steps ``tau = 1/L`` with L its solver's last Lipschitz estimate; Adam's steps do not
depend on the scale of the gradient, so ``tau = 1``, the Lipschitz constant of the data term, is
used here.

``lam`` stays fixed during fine-tuning (the model's table at ``sigma``, or ``--lam``); with
``fit_scale`` the critic's log weight ``a`` and log input scale ``s`` are learned with the weights
(``R~(x) = e^(a - 2s) R(e^s x)``): the learned regularisation weight is ``lam e^a``. With
``weights=False`` only ``a`` and ``s`` are learned: :func:`fit_scale`, the fit the comparative study
runs after adversarial training. A fine-tuned model's lambda table is recalibrated at the end
(:func:`alr.calibration.calibrate_trained`), on training-side crops.

Every ``val_every`` steps the PSNR restored on held-out training crops (a
:class:`alr.calibration.Validator` at the fixed lam) is measured and the best state kept;
checkpoints every ``ckpt_every`` steps resume the run exactly, as :func:`alr.train.train_critic`'s.
"""
from __future__ import annotations

import math
import os
import time
from dataclasses import asdict, dataclass

import torch
from tqdm.auto import tqdm

from .critic import BOUNDARIES, PatchCritic, Regularizer
from .data import ImageStack, random_dihedral
from .device import resolve_device
from .metrics import psnr
from .modelfile import save_model
from .solver import minimize
from .train import (RunLog, StopSignals, _recorded, _validate, decayed_lr, interrupted_at, load_checkpoint,
                    pause_before_end, save_checkpoint, snapshot, stopping)

LOG_FIELDS = ["step", "loss", "psnr", "log_weight", "log_scale", "lr", "seconds", "val_psnr"]
#: Fields of :class:`FinetuneConfig` a resumed fine-tuning may change (the others, and lambda, must stay).
RESUMABLE_CHANGES = ("steps", "ckpt_every", "log_every", "max_seconds", "stop_after", "device", "val_every")


@dataclass
class FinetuneConfig:
    """Hyper-parameters of the bilevel fine-tuning (module docstring).

    The inner problem is solved by ``method`` to the relative change ``tol`` (at most ``iters``
    iterations); ``batch_size`` random ``crop x crop`` crops of the training images (turned by a
    random flip / quarter turn with ``augment``) a step; Adam (0.9, 0.999) with the learning rate
    decaying from ``lr0`` to ``lr1``. The study's bilevel LAR: 8 crops of 128, lr 2e-4 -> 2e-5
    (AdaBelief), solver nmAPG to 1e-4.
    """

    sigma: float
    steps: int = 200
    batch_size: int = 8
    crop: int = 64
    lr0: float = 2e-4
    lr1: float = 2e-5
    weights: bool = True
    fit_scale: bool = True
    method: str = "nmapg"
    iters: int = 200
    tol: float = 1e-4
    boundary: str = "reflect"
    tau: float = 1.0
    augment: bool = True
    val_every: int = 0
    seed: int = 0
    ckpt_every: int = 50
    log_every: int = 1
    max_seconds: float | None = None
    stop_after: float | None = None
    device: str | None = None

    def __post_init__(self) -> None:
        if not self.sigma > 0:
            raise ValueError(f"the noise level sigma must be > 0, got {self.sigma}")
        if not (self.weights or self.fit_scale):
            raise ValueError("nothing to train: the weights, the scale and weight, or both")
        if self.tau <= 0:
            raise ValueError(f"the JFB step tau must be > 0, got {self.tau}")
        if self.boundary not in BOUNDARIES:
            raise ValueError(f"unknown boundary {self.boundary!r}; use {', '.join(BOUNDARIES)}")

    def recipe(self, lam: float) -> dict:
        """What a checkpoint records of the run, and a resumed run must keep: the fields but
        :data:`RESUMABLE_CHANGES`, and ``lam``."""
        return {**{k: v for k, v in asdict(self).items() if k not in RESUMABLE_CHANGES}, "lam": lam}

    def solver(self) -> dict:
        """The inner solver, as keyword options of :func:`alr.solver.minimize`."""
        return {"method": self.method, "iters": self.iters, "tol": self.tol, "boundary": self.boundary}

    def recommendation(self) -> dict:
        """The solver a fine-tuned critic is restored with (its model file's ``solver``): the inner
        solver it was trained through, with at least :data:`alr.pretrained.TASK_ITERS` iterations
        for the other tasks."""
        from .pretrained import TASK_ITERS

        iters = {task: max(n, self.iters) for task, n in TASK_ITERS.items()}
        return {"method": self.method, "options": {"boundary": self.boundary, "tol": self.tol},
                "iters": {**iters, "denoise": self.iters}}


def jfb_output(critic: PatchCritic, x_star: torch.Tensor, y: torch.Tensor, lam: float,
               tau: float = 1.0, boundary: str = "reflect") -> torch.Tensor:
    """``x* - tau G(x*)`` with ``G = (z - y) + N lam grad R(z)``, differentiable with respect to the
    critic (its weights, and its log scale / weight when they are tensors) but not through x*.

    >>> import torch
    >>> critic = PatchCritic(depth=2, width=4)
    >>> y = torch.rand(1, 1, 12, 12)
    >>> bool(torch.allclose(jfb_output(critic, y, y, 0.0), y))
    True
    """
    z = x_star.detach().requires_grad_(True)
    with torch.enable_grad():
        (grad_r,) = torch.autograd.grad(Regularizer(critic, boundary=boundary)(z).sum(), z, create_graph=True)
    return z.detach() - tau * ((z.detach() - y) + z[0].numel() * lam * grad_r)


def finetune(critic: PatchCritic, images: ImageStack, config: FinetuneConfig, lam: float, validator=None,
             out: str | os.PathLike | None = None, log_csv: str | os.PathLike | None = None,
             checkpoint: str | os.PathLike | None = None, resume: bool = False,
             progress: bool = True, started: float | None = None) -> PatchCritic:
    """Fine-tune ``critic`` in place on crops of ``images`` at the fixed ``lam`` (module docstring).

    ``validator(critic) -> (psnr, lambda)`` judges it every ``config.val_every`` steps and at the end,
    the best state is kept. ``out`` receives the model file, ``log_csv`` one row per ``log_every``
    steps, ``checkpoint`` (default ``out + '.ckpt'``) the resumable state; ``config.stop_after``
    counts from ``started`` (a ``time.perf_counter()`` time; default: now). Returns the critic on
    the CPU, its scale and weight as floats.
    """
    device = resolve_device(config.device)
    torch.manual_seed(config.seed)
    gen = torch.Generator().manual_seed(config.seed)
    critic.to(device).train()
    scale = [torch.tensor(float(v), device=device, requires_grad=config.fit_scale)
             for v in (critic.log_weight, critic.log_scale)]  # a, s
    critic.log_weight, critic.log_scale = scale
    params = (list(critic.parameters()) if config.weights else []) + (scale if config.fit_scale else [])
    critic.requires_grad_(config.weights)
    opt = torch.optim.Adam(params, lr=config.lr0, betas=(0.9, 0.999))
    if checkpoint is None and out is not None:
        checkpoint = str(out) + ".ckpt"
    start, best, clock = 0, None, 0.0
    if resume:
        state = load_checkpoint(checkpoint, critic, opt, gen, config.recipe(lam), config.steps)
        start, best, clock = int(state["step"]), state["best"], float(state.get("seconds", 0.0))
        with torch.no_grad():
            for v, saved in zip(scale, state["scale"]):
                v.fill_(float(saved))
    if config.weights:  # restored, validated and calibrated with the solver it is trained through
        critic.meta = {**(critic.meta or {}), "solver": config.recommendation()}
    validate = validator is not None and config.val_every > 0
    done = start
    bar = tqdm(total=config.steps, initial=start, disable=not progress, desc="fine-tune critic", unit="step",
               dynamic_ncols=True)
    paused = interrupted = False
    with RunLog(log_csv, start if resume else 0, LOG_FIELDS, clock, started) as log, bar, StopSignals() as signals:
        if validate and not resume:  # the starting critic competes: fine-tuning never returns a worse one
            score = _validate(critic, validator)[0]
            best = {"step": 0, "val_psnr": score, "scale": [float(v.detach()) for v in scale],
                    "state": snapshot(critic)}
            log.write(0, {"val_psnr": f"{score:.4f}"})
        for step in range(start, config.steps):
            lr = decayed_lr(config, step, log.seconds())
            for grp in opt.param_groups:
                grp["lr"] = lr
            x = images.sample(config.batch_size, config.crop, gen)
            x = random_dihedral(x, gen) if config.augment else x
            y = x + config.sigma * torch.randn(x.shape, generator=gen)
            x, y = x.to(device), y.to(device)
            x_star, _ = minimize(y, None, critic, lam, clip=False, device=device, **config.solver())
            loss = (jfb_output(critic, x_star, y, lam, config.tau, config.boundary) - x).pow(2).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            done = step + 1
            if not math.isfinite(loss.item()):
                raise FloatingPointError(f"fine-tuning diverged at step {done}")
            row: dict = {}
            if done % config.log_every == 0 or done == config.steps:
                row.update(loss=f"{loss.item():.6g}", psnr=f"{float(psnr(x_star.clamp(0, 1), x).mean()):.4f}",
                           log_weight=f"{float(scale[0].detach()):.5g}", log_scale=f"{float(scale[1].detach()):.5g}",
                           lr=f"{lr:.6g}")
                bar.set_postfix(loss=row["loss"], psnr=row["psnr"], refresh=False)
            timeout, paused, interrupted = stopping(config, log, done, signals)
            if validate and (done % config.val_every == 0 or done == config.steps or timeout or paused):
                score = _validate(critic, validator)[0]
                row["val_psnr"] = f"{score:.4f}"
                if best is None or score > best["val_psnr"]:
                    best = {"step": done, "val_psnr": score, "scale": [float(v.detach()) for v in scale],
                        "state": snapshot(critic)}
            log.write(done, row)
            if checkpoint is not None and (done % config.ckpt_every == 0 or done == config.steps or timeout or paused
                                           or interrupted):
                save_checkpoint(checkpoint, critic, opt, gen, done, best=best, scale=[float(v.detach()) for v in scale],
                                recipe=config.recipe(lam), seconds=log.seconds())
            bar.update(1)
            if timeout or paused or interrupted:
                break
    if interrupted:
        raise interrupted_at(done, config.steps, checkpoint)
    paused = paused and done < config.steps  # after the last step the caller's end keeps to the deadline
    critic.cpu().eval()
    final = [float(v.detach()) for v in scale]
    if best is not None:
        critic.load_state_dict(best["state"])
        final = best["scale"]
    critic.log_weight, critic.log_scale = float(final[0]), float(final[1])
    critic.requires_grad_(True)
    record = {k: v for k, v in asdict(config).items() if k not in ("device", "max_seconds", "stop_after")}
    record.update(steps=done, lam=lam, **({"paused": True, "steps_left": config.steps - done} if paused else {}))
    if best is not None:
        record["selected"] = {"step": best["step"], "val_psnr": _recorded(best["val_psnr"]), **validator.describe()}
    critic.meta["finetune" if config.weights else "scale_fit"] = record
    if out is not None:
        save_model(critic, out)
    return critic


#: Steps and learning rates of :func:`fit_scale` (the study fits them with lr 1e-2).
FIT_STEPS, FIT_LR = 60, (1e-2, 1e-3)


def fit_scale(critic: PatchCritic, images: ImageStack, sigma: float, lam: float, device=None,
              steps: int = FIT_STEPS, crop: int = 64, progress: bool = False, **solver) -> PatchCritic:
    """Learn only the critic's log weight ``a`` and log input scale ``s`` (its weights frozen) by
    JFB at the fixed ``lam`` on crops of the training ``images``: the study's parameter fit after
    adversarial training. ``solver``: ``method``, ``iters``, ``tol``, ``boundary`` of the inner solves
    (default: the model's own denoising solver, :func:`alr.pretrained.solver_options`)."""
    if not solver:
        from .pretrained import solver_options

        opts = solver_options(critic, "denoise")
        solver = {k: opts[k] for k in ("method", "iters", "tol", "boundary") if k in opts}
    cfg = FinetuneConfig(sigma=sigma, steps=steps, crop=crop, lr0=FIT_LR[0], lr1=FIT_LR[1], weights=False,
                         device=device, **solver)
    return finetune(critic, images, cfg, lam, progress=progress)


def finetune_folder(init: str, clean_dir: str | os.PathLike, config: FinetuneConfig, out: str | os.PathLike,
                    lam: float | None = None, holdout: int = 4, val_dir: str | os.PathLike | None = None,
                    max_images: int | None = None, calibrate: bool = True, resume: bool = False,
                    log_csv: str | os.PathLike | None = None, progress: bool = True) -> PatchCritic:
    """``alr finetune``: fine-tune the model ``init`` (file or shipped name) on the images of
    ``clean_dir`` and write it to ``out``.

    The last ``holdout`` images of the folder (or those of ``val_dir``) are held out: their centre
    crops validate the run. ``lam`` when omitted: the best of a line search on the validation crops
    under the fine-tuning's solver, from the model's table at ``config.sigma`` (a table is
    calibrated for the model's own solver, which may stop earlier or shape the critic), or the
    table's value when no images are held out. Ends with a lambda calibration on training-side
    crops (``calibrate``).
    """
    from .calibration import TRAIN_CAL_CROP, Validator, calibrate_trained, center_crops
    from .data import Degradation, split_holdout
    from .images import list_images
    from .modelfile import portable_path
    from .errors import MissingTable
    from .pretrained import lam_for, load
    from .train import continue_from

    t0 = time.perf_counter()
    critic = load(init)
    try:
        table = lam_for(critic, "denoise", config.sigma)
    except MissingTable:
        table = None
    continue_from(critic, init)  # its lambda tables no longer hold once the weights change
    critic.meta["solver"] = config.recommendation()  # the lambda search below already uses it
    train_files, held = split_holdout(clean_dir, max_images, 0 if val_dir else holdout)
    val_files = list_images(val_dir) if val_dir else held
    validator = None
    if val_files:
        x_val = center_crops(val_files, critic.in_channels, TRAIN_CAL_CROP)
        source = portable_path(val_dir) if val_dir else f"the last {len(held)} images of {portable_path(clean_dir)}"
        if lam is None:
            search = Validator(x_val, config.sigma, device=config.device, source=source)
            search.lam = table or search.lam
            lam = search(critic)[1]
        validator = Validator(x_val, config.sigma, lam=lam, device=config.device, source=source)
    lam = table if lam is None else lam
    if lam is None:
        raise ValueError(f"model {init} has no denoising lambda table: give --lam, or validation images "
                         "(--val-images N or --val DIR) to find one")
    critic.meta["data"] = {"clean": portable_path(clean_dir), "clean_images": len(train_files),
                           "degradation": f"gaussian noise sigma={config.sigma:g} (paired crops)"}
    stack = ImageStack.from_folder(clean_dir, critic.in_channels, train_files)
    if calibrate:  # what the model file lacks until the end: alr info and alr restore say so
        critic.meta["pending"] = ["calibration"]
    finetune(critic, stack, config, lam, validator, out, log_csv, resume=resume, progress=progress, started=t0)
    if calibrate and not critic.meta["finetune"].get("paused") \
            and not pause_before_end(critic, "finetune", out, config.stop_after, t0):
        critic.meta.pop("pending")
        calibrate_trained(critic, clean_dir, Degradation(config.sigma, config.sigma), out, device=config.device,
                          progress=progress, max_images=max_images)
    return critic
