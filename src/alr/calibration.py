"""Calibration: the regularisation weight lambda (and the solver) that restores best, per noise level.

A model's lambda table (:mod:`alr.pretrained`) is fitted on clean *training-side* crops x:
for each noise level sigma the crops are degraded (``y = A x + sigma n``, noise seed 1) and
restored at a series of lambdas, and the lambda with the best mean PSNR is kept
(:func:`line_search`, a walk in log lambda). Optionally the solver's iteration count and the
score shaping are chosen the same way, from candidate values. :func:`calibrate_tables`
writes the results into ``model.meta["lambda"]``, where :func:`alr.restore` finds them.
The test sets (bsd68, cbsd68) are never used here; set12 crops are (so set12 is not a held-out
set for the calibrated tasks, docs/results.md says so).
"""
from __future__ import annotations

import math

import torch
from tqdm.auto import tqdm

from .critic import pad_boundary
from .data import add_noise
from .errors import AlrError
from .fidelity import ClippedGaussian
from .metrics import psnr
from .physics import Blur, Denoising, Downsampling, Inpainting, gaussian_kernel, random_mask
from .pretrained import solver_options, split_table_name, table_name
from .settings import MISSING
from .solver import minimize

#: Std (pixels) of the Gaussian blur of the deblurring table.
BLUR_STD = 1.6


def center_crop(x: torch.Tensor, size: int) -> torch.Tensor:
    """The centre ``size x size`` window of x (..., H, W) (the whole side where it is shorter)."""
    h, w = x.shape[-2:]
    top, left = max(h - size, 0) // 2, max(w - size, 0) // 2
    return x[..., top:top + size, left:left + size]


def alr_options(model, task: str, quick: bool, sigma: float | None = None, clipped: bool = False) -> dict:
    """The model's solver for ``task`` at noise ``sigma`` (``clipped``: for clipped measurements and
    the censored data term, :func:`alr.pretrained.solver_options`); ``quick`` caps the iterations at 20."""
    opts = solver_options(model, task, sigma, clipped)
    if quick and "iters" in opts:
        opts["iters"] = min(opts["iters"], 20)
    return opts


# task -> (noise levels, starting lambda of the line search at each level)
# "denoise-clipped": noisy inputs clipped to [0, 1] (the paper's protocol) restored with the censored
# data term, alr.fidelity.ClippedGaussian; its table serves `alr restore --clipped`
CAL_TASKS = {"denoise": ([0.05, 0.1, 0.2, 0.4], [0.004, 0.01, 0.035, 0.14]),
             table_name("denoise", clipped=True): ([0.05, 0.1, 0.2, 0.4], [0.004, 0.01, 0.035, 0.14]),
             "deblur": ([0.01, 0.03], [2e-4, 6e-4]), "inpaint": ([0.01], [5e-4]), "sr": ([0.01], [2e-4])}


def denoise_start(sigma: float) -> float:
    """Starting lambda of the denoising line search at a noise level outside CAL_TASKS."""
    return 0.01 * (sigma / 0.1) ** 1.5


def _cal_physics(task: str, shape: tuple[int, int]):
    return {"denoise": Denoising, "deblur": lambda: Blur(gaussian_kernel(BLUR_STD)),
            "inpaint": lambda: Inpainting(random_mask(shape, MISSING, 1)), "sr": lambda: Downsampling(2)}[task]()


def line_search(f, lam0: float, max_evals: int | None = None,
                factors: tuple[float, ...] = (2.0, 2 ** 0.5, 2 ** 0.25)) -> tuple[float, dict[float, float]]:
    """Maximise f over log(lam): walk up, then down, by the first of ``factors`` while f improves,
    then likewise by the next (by default 2, then sqrt(2), then 2^(1/4): a critic whose PSNR
    peaks sharply in lambda loses 0.2 dB between sqrt(2) steps). Evaluations are kept on the
    quarter-octave grid (a lambda within 1/8 octave of one seen is not solved again).

    Returns the best lambda and every evaluation. ``max_evals`` caps the evaluations.
    """
    seen: dict[int, tuple[float, float]] = {}

    def ev(lam: float) -> float:
        key = round(math.log2(lam) * 4)
        if key not in seen:
            if max_evals is not None and len(seen) >= max_evals:
                return -math.inf
            seen[key] = (lam, f(lam))
        return seen[key][1]

    best = lam0
    for factor in factors:
        for direction in (factor, 1 / factor):
            while ev(best * direction) > ev(best):
                best *= direction
    return best, dict(seen.values())


def score_reference(model, x: torch.Tensor) -> float:
    """Median critic score over the patches of the clean batch ``x`` (reflect boundary): the
    ``score_ref`` of the patch-score shaping (:func:`alr.critic.shape_scores`)."""
    with torch.no_grad():
        return float(f"{float(model(pad_boundary(x, model.receptive_field, 'reflect')).median()):.4g}")


def solved_psnr(y: torch.Tensor, physics, model, lam: float, x: torch.Tensor, device, opts: dict) -> float:
    """The mean PSNR against ``x`` of ``y`` restored at ``lam`` (:func:`minimize` with ``opts``); a
    diverged solve scores -inf, the worst, so that a lambda search moves away from it."""
    try:
        xh, _ = minimize(y, physics, model, lam, device=device, **opts)
    except FloatingPointError:
        return -math.inf
    score = float(psnr(xh.cpu(), x).mean())
    return score if math.isfinite(score) else -math.inf


def calibrate_lambda(model, task: str, x: torch.Tensor, sigmas: list[float], starts: list[float],
                     quick: bool = False, device=None, iters: list[int] | None = None,
                     concavities: list[float] | None = None, score_ref: float = 0.0,
                     inherit: bool = False) -> tuple[list[float], list[int], list[float], list[dict]]:
    """Per noise level, the lambda maximising the mean PSNR of the model's default solver
    on the clean batch ``x`` (noise seed 1), by :func:`line_search` from ``starts``; with
    ``iters`` and/or ``concavities``, the search runs for each candidate (iterations,
    concavity) pair and the best triple wins (shaping reference ``score_ref``: :func:`score_reference`).

    A ``"TASK-clipped"`` task restores clipped noisy crops with the censored data term. ``inherit``
    (without candidates): keep, at each sigma, the iterations and shaping of the model's TASK table
    (the censored term changes the data term, not the critic), so that only lambda is searched.

    Returns the best lambdas (3 significant digits), their iteration counts and concavities,
    and every evaluation as table rows.
    """
    plain, clipped = split_table_name(task)
    physics = _cal_physics(plain, tuple(x.shape[-2:]))
    best, best_iters, best_kappa, rows = [], [], [], []
    for sigma, lam0 in zip(sigmas, starts):
        base = alr_options(model, plain, quick, sigma if inherit else None)
        ref = base.get("score_ref", 0.0) if inherit else score_ref
        y = add_noise(physics.A(x), sigma, seed=1, clip=clipped)
        found: list[tuple[float, float, int, float]] = []  # (psnr, lambda, iterations, concavity)
        for it in iters or [base.get("iters")]:
            for kappa in concavities or [base.get("concavity", 0.0) if inherit else 0.0]:
                opts = {**base, "iters": it, "concavity": kappa, "score_ref": ref,
                        "fidelity": ClippedGaussian(sigma) if clipped else None}

                lv, evals = line_search(lambda lv: solved_psnr(y, physics, model, lv, x, device, opts),
                                        lam0, 3 if quick else None)
                rows += [dict(task=task, sigma=sigma, iters=it, concavity=kappa, lam=k, psnr=v, best=False)
                         for k, v in sorted(evals.items())]
                found.append((evals[lv], lv, it, kappa))
        score, lv, it, kappa = max(found, key=lambda t: t[0])
        if not math.isfinite(score):
            raise AlrError(f"calibrating {task} at sigma {sigma:g}: every lambda tried diverged (from {lam0:g}); "
                           "the critic or its solver settings are broken")
        next(r for r in rows if (r["sigma"], r["iters"], r["concavity"], r["lam"]) == (sigma, it, kappa, lv))["best"] = True
        best.append(float(f"{lv:.3g}"))
        best_iters.append(it)
        best_kappa.append(kappa)
    return best, best_iters, best_kappa, rows




def calibrate_tables(model, x: torch.Tensor, tasks: list[str] | None = None, sigmas: list[float] | None = None,
                     iters: list[int] | None = None, concavities: list[float] | None = None,
                     quick: bool = False, device=None, source: str = "training-side crops",
                     progress: bool = False) -> list[dict]:
    """Fit the model's lambda tables for ``tasks`` (default: all of :data:`CAL_TASKS`) on the clean
    crops ``x`` and write them into ``model.meta["lambda"]`` (with how, in ``"lambda_calibration"``).

    ``sigmas`` replaces the denoising noise levels; ``iters`` / ``concavities`` are candidate
    iteration counts / shapings chosen per noise level (:func:`calibrate_lambda`). A clipped
    table without candidates inherits the solver of the plain one. Returns every evaluation
    as table rows.
    """
    tasks = tasks or list(CAL_TASKS)
    unknown = [t for t in tasks if t not in CAL_TASKS]
    if unknown:
        raise ValueError(f"unknown task {unknown[0]!r}; choose from {', '.join(CAL_TASKS)}")
    lam = dict(model.meta.get("lambda", {}))
    ref = score_reference(model, x) if concavities else 0.0
    rows: list[dict] = []
    bar = tqdm(tasks, desc="calibrate lambda", unit="table", disable=not progress, leave=False)
    for task in bar:
        levels, starts = CAL_TASKS[task]
        plain, clipped = split_table_name(task)
        if sigmas and plain == "denoise":
            levels, starts = sigmas, [denoise_start(v) for v in sigmas]
        inherit = clipped and not (iters or concavities)
        inherited = lam.get(plain, {}) if inherit else {}
        best, its, kappas, found = calibrate_lambda(model, task, x, levels, starts, quick, device,
                                                    iters, concavities, ref, inherit)
        rows += found
        lam[task] = {"sigma": levels, "lam": best, **({"iters": its} if iters or "iters" in inherited else {})}
        if concavities or "concavity" in inherited:
            lam[task].update(concavity=kappas, score_ref=ref if concavities else inherited["score_ref"])
        model.meta["lambda"] = lam  # a clipped table calibrated next inherits from this one
    how = "the model's solver" + "".join(
        f", the best of {v} {what} per noise level"
        for v, what in ((iters, "iterations"), (concavities, "concavities")) if v)
    model.meta["lambda_calibration"] = (f"{len(x)} centre crops {x.shape[-1]}x{x.shape[-2]} of {source}, "
                                        f"noise seed 1, {how}, log line search")
    return rows


#: Crops used to calibrate a freshly trained critic (``alr train`` without ``--no-calibrate``).
TRAIN_CAL_IMAGES, TRAIN_CAL_CROP = 4, 96
#: Side of the validation crops that judge a run's best checks once more at its end (4x the pixels
#: of a check's: selection among checks a tenth of a dB apart needs the finer judge).
FINAL_VAL_CROP = 192


def training_levels(degradation) -> list[float]:
    """Noise levels at which to calibrate a critic trained on ``degradation`` (an
    :class:`alr.data.Degradation`, or None for real degraded images): its fixed sigma, or up to
    four levels spread log-evenly over its range (from 0.02), or 0.05 / 0.1 / 0.2 without one.
    Poisson noise of gain g counts as its std at mid-grey, sqrt(g / 2), added in quadrature.

    >>> from alr.data import Degradation
    >>> training_levels(Degradation(0.0, 0.4))
    [0.02, 0.054, 0.15, 0.4]
    >>> training_levels(Degradation(0.1, 0.1))
    [0.1]
    >>> training_levels(Degradation(0.0, 0.0, gain=0.02))
    [0.1]
    """
    if degradation is None:
        return [0.05, 0.1, 0.2]
    lo, hi = (math.hypot(s, math.sqrt(degradation.gain / 2)) for s in (degradation.sigma_min, degradation.sigma_max))
    lo = max(lo, 0.02)
    if hi <= lo * 1.01:
        return [float(f"{hi:.3g}")]
    return [float(f"{lo * (hi / lo) ** (k / 3):.2g}") for k in range(4)]


def center_crops(files: list, channels: int, size: int) -> torch.Tensor:
    """Centre crops of the images ``files`` as one batch, ``size x size`` or the side of the
    smallest image if shorter."""
    from .images import read_image

    images = [read_image(f, channels) for f in files]
    side = min(size, *(min(im.shape[-2:]) for im in images))  # one size for the batch
    return torch.cat([center_crop(im, side) for im in images])


class Validator:
    """Restoration PSNR of a critic on clean training-side crops: what checkpoint selection maximises.

    The crops ``x`` are degraded by Gaussian noise of level ``sigma`` (seed 1, not clipped) and
    restored with the critic's solver (:func:`alr.pretrained.solver_options`). With ``lam`` None
    each call searches lambda (:func:`line_search`: the first call from ``denoise_start(sigma)`` to
    the best, the next ones from the last best by :data:`BETWEEN` steps in at most ``max_evals``
    solves: both neighbours, then onwards if one is better), so that every checkpoint is judged at
    its own best lambda; a fixed ``lam`` judges them all at it. Calling it returns
    ``(mean PSNR, lambda)``; the critic given is not changed (:func:`minimize` leaves it as it was).
    :attr:`rule` names the search, so that a resumed training can tell whether its stored best
    was judged the same way.
    """

    #: Steps of the search between checks: sqrt(2), then 2^(1/4) (a sharp critic's PSNR moves by
    #: up to 0.2 dB between sqrt(2) steps, as much as the checkpoints it ranks differ by).
    BETWEEN = (2 ** 0.5, 2 ** 0.25)

    def __init__(self, x: torch.Tensor, sigma: float, lam: float | None = None, device=None,
                 max_evals: int = 6, source: str = "held-out crops") -> None:
        self.x, self.sigma, self.device, self.max_evals, self.source = x, sigma, device, max_evals, source
        self.y = add_noise(x, sigma, seed=1)
        self.search, self.searched = lam is None, False
        self.lam = denoise_start(sigma) if lam is None else lam

    def __call__(self, critic) -> tuple[float, float]:
        opts = solver_options(critic, "denoise", self.sigma)

        def f(lam: float) -> float:
            return solved_psnr(self.y, None, critic, lam, self.x, self.device, opts)

        if not self.search:
            return f(self.lam), self.lam
        if self.searched:  # the best lambda drifts slowly between checks: search close to the last
            self.lam, evals = line_search(f, self.lam, self.max_evals, factors=self.BETWEEN)
        else:
            self.lam, evals = line_search(f, self.lam)
        self.searched = True
        return evals[self.lam], self.lam

    @property
    def rule(self) -> str:
        """How a check judges a critic: its images, noise level and lambda (fixed, or the search's
        steps and budget)."""
        how = (f"lambda {self.lam:g}" if not self.search else
               "lambda searched by " + ", ".join(f"{f:.4g}" for f in self.BETWEEN) + f" in {self.max_evals} solves")
        return f"{self.describe()['images']}, sigma {self.sigma:g}, {how}"

    def describe(self) -> dict:
        """What the model file records of the validation: images, crops, noise, lambda rule."""
        return {"images": f"{len(self.x)} centre crops {self.x.shape[-1]}x{self.x.shape[-2]} of {self.source}",
                "sigma": self.sigma, "lambda": "best of a line search per check" if self.search else self.lam}


def calibrate_trained(model, clean_dir, degradation, out, device=None, progress: bool = False,
                      max_images: int | None = None) -> list[float]:
    """Give a freshly trained critic a denoising lambda table and save it to ``out`` again.

    Calibrated on centre crops (:data:`TRAIN_CAL_CROP`) of the last :data:`TRAIN_CAL_IMAGES`
    images of its training folder ``clean_dir`` (training side, never a test set) at
    :func:`training_levels`. Returns those noise levels.
    """
    from pathlib import Path

    from .images import list_images
    from .modelfile import save_model

    files = list_images(clean_dir)[:max_images][-TRAIN_CAL_IMAGES:]
    x = center_crops(files, model.in_channels, TRAIN_CAL_CROP)
    sigmas = training_levels(degradation)
    calibrate_tables(model, x, ["denoise"], sigmas, device=device, source=f"{Path(clean_dir).name} (training side)",
                     progress=progress)
    save_model(model, out)
    return sigmas
