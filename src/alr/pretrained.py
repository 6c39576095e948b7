"""Shipped models and their calibrated regularisation weights.

``load("gray")`` / ``load("color")`` return the models that ship inside the
package (``alr/models/*.safetensors``, see their model cards); any other
argument is a path to a model file. A model's metadata may hold a lambda
table per task, ``{"denoise": {"sigma": [...], "lam": [...]}, ...}``,
calibrated on training-side images (optionally with ``"iters"``, the solver
iterations chosen at each sigma, and ``"concavity"`` / ``"score_ref"``, the shaping of
the patch scores); :func:`lam_for` interpolates it
log-linearly in sigma (clamped at the ends). A table named ``"TASK-clipped"`` (for
example ``"denoise-clipped"``) is calibrated for measurements clipped to [0, 1] and the
censored data term (:class:`alr.fidelity.ClippedGaussian`); ``clipped=True`` selects it,
and falls back to the task's own table where the model has none.
"""
from __future__ import annotations

import math
import numbers
import os
from pathlib import Path

from .critic import PatchCritic
from .errors import AlrError, MissingTable
from .modelfile import ModelNotFoundError, load_model

MODEL_DIR = Path(__file__).parent / "models"


def shipped_models() -> list[str]:
    """Names of the models shipped with the package."""
    return sorted(p.stem for p in MODEL_DIR.glob("*.safetensors"))


def resolve(name_or_path: str | os.PathLike) -> Path:
    """Path of a shipped model name or of a model file. A shipped name is the bare name
    (``"gray"``): it wins over a file of that name in the current folder (give ``./gray`` for
    that), and a path ending in it (``runs/gray``) is a path, never the shipped model."""
    if isinstance(name_or_path, str) and name_or_path in shipped_models():
        return MODEL_DIR / f"{name_or_path}.safetensors"
    p = Path(name_or_path)
    if not p.is_file():
        names = ", ".join(shipped_models()) or "none"
        raise ModelNotFoundError(f"model {name_or_path!s} not found (shipped models: {names})")
    return p


def load(name_or_path: str | os.PathLike) -> PatchCritic:
    """Load a shipped model by name (``"gray"``, ``"color"``) or a model file by path.

    >>> import alr
    >>> alr.load("no-such-model")
    Traceback (most recent call last):
    ...
    alr.modelfile.ModelNotFoundError: model no-such-model not found (shipped models: color, gray)
    """
    return load_model(resolve(name_or_path))


CLIPPED_SUFFIX = "-clipped"


def table_name(task: str, clipped: bool = False) -> str:
    """Key of the lambda table for ``task`` (``"TASK-clipped"`` for clipped measurements)."""
    return task + CLIPPED_SUFFIX if clipped else task


def split_table_name(name: str) -> tuple[str, bool]:
    """``(task, clipped)`` of a table key: the inverse of :func:`table_name`."""
    return name.removesuffix(CLIPPED_SUFFIX), name.endswith(CLIPPED_SUFFIX)


def _table(model, task: str, clipped: bool = False) -> dict | None:
    tables = (getattr(model, "meta", None) or {}).get("lambda") or {}
    return (clipped and tables.get(table_name(task, True))) or tables.get(task)


def calibrated_range(model, task: str, clipped: bool = False) -> tuple[float, float] | None:
    """(lowest, highest) noise level of the model's lambda table for ``task``, or None without one;
    outside it :func:`solver_options` uses the nearest level's values, and :func:`lam_for` the nearest
    level's too, but for denoising below the table (:func:`extrapolates_low`)."""
    table = _table(model, task, clipped)
    return (table["sigma"][0], table["sigma"][-1]) if table else None


def _interp_loglog(xs: list[float], ys: list[float], s: float, log_y: bool = True, extrapolate_low: bool = False
                   ) -> float:
    """Piecewise log-log interpolation of the points (xs, ys) at s, clamped at the ends
    (``log_y=False``: linear in y, for values that may be 0). ``extrapolate_low``: below the first
    level, continue the first segment's power law ``y ~ s^p`` instead (0 at s = 0; ``p >= 0``, so
    a table that does not grow with s is held at its first value).

    >>> _interp_loglog([0.1, 0.2], [1.0, 4.0], 0.05), _interp_loglog([0.1, 0.2], [1.0, 4.0], 0.05, extrapolate_low=True)
    (1.0, 0.25)
    """
    if extrapolate_low and log_y and len(xs) > 1 and s < xs[0]:
        if s <= 0:
            return 0.0
        p = max(math.log(ys[1] / ys[0]) / math.log(xs[1] / xs[0]), 0.0)
        return float(ys[0] * (s / xs[0]) ** p)
    if len(xs) == 1:
        return float(ys[0])
    s = min(max(s, xs[0]), xs[-1])
    f, g = (math.log, math.exp) if log_y else (float, float)
    for (x0, y0), (x1, y1) in zip(zip(xs, ys), zip(xs[1:], ys[1:])):
        if s <= x1:
            w = (math.log(s) - math.log(x0)) / (math.log(x1) - math.log(x0))
            return float(g((1 - w) * f(y0) + w * f(y1)))
    return float(ys[-1])


def check_number(value, name: str = "sigma") -> float:
    """``value`` itself if it is a finite real number >= 0 (a noise level, a lambda), else
    :class:`AlrError` naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0 <= value < math.inf:
        raise AlrError(f"{name} must be a finite number >= 0, got {value!r}")
    return value


def lam_for(model: PatchCritic, task: str, sigma: float, clipped: bool = False) -> float:
    """Calibrated lam for ``task`` at noise level ``sigma`` from the model's table
    (``clipped``: the table for clipped measurements and the censored data term, if any):
    log-log interpolated between its levels, the nearest level's outside them, except below the
    lowest level of a denoising table with two levels or more (:func:`extrapolates_low`): there the
    power law of its first two levels (lam ~ sigma^p, about p = 1.5), which restores low noise better
    than the lowest level's lambda (camera + noise 0.02: +2.6 dB) and goes to 0 with the noise. The
    other operators need their prior without noise too: their lambda is held at the lowest level's.

    Raises :class:`alr.errors.MissingTable` (an AlrError and a KeyError) when the model has no
    table for the task: pass lam explicitly; AlrError for a noise level that is not a finite number >= 0.

    >>> lam_for(load("gray"), "denoise", float("nan"))
    Traceback (most recent call last):
    ...
    alr.errors.AlrError: sigma must be a finite number >= 0, got nan
    """
    sigma = float(check_number(sigma))
    table = _table(model, task, clipped)
    if not table:
        raise MissingTable(f"model has no calibrated lambda for task {task!r}; pass lam (--lam), or write one "
                           f"into a copy of the model with: alr bench calibrate --model FILE --tasks {task} -o DIR")
    return _interp_loglog(table["sigma"], table["lam"], sigma, extrapolate_low=extrapolates_low(model, task, clipped))


def extrapolates_low(model, task: str, clipped: bool = False) -> bool:
    """Whether :func:`lam_for` follows the table's power law below its lowest level (a denoising
    table of two levels or more) rather than holding the lowest level's lambda."""
    table = _table(model, task, clipped)
    return task == "denoise" and bool(table) and len(table["sigma"]) > 1


def solver_options(model, task: str = "denoise", sigma: float | None = None, clipped: bool = False) -> dict:
    """The model's recommended solver settings for :func:`alr.restore` on ``task`` at noise ``sigma``.

    Models without a recommendation get :data:`DEFAULT_SOLVER`: L-BFGS with the reflect
    boundary and :data:`TASK_ITERS` iterations, which reaches the PSNR of 300 Adam
    iterations (benchmarks/restore_speed.py). A lambda table calibrated with ``alr bench calibrate --iters``
    also holds the iteration count chosen at each of its noise levels (the solver stopped early
    where that restores better); given ``sigma``, that count is used (log-log interpolated).
    ``clipped``: the settings of the table for clipped measurements, if any (:func:`lam_for`).
    """
    if sigma is not None:
        check_number(sigma)
    rec = (getattr(model, "meta", None) or {}).get("solver") or DEFAULT_SOLVER
    opts = {"method": rec["method"], **rec.get("options", {})}
    if "iters" not in opts and (opts["method"] == "lbfgs" or "iters" in rec):
        iters = rec.get("iters") or TASK_ITERS
        opts["iters"] = iters.get(task, max(iters.values()))
    table = _table(model, task, clipped)
    if sigma is not None and table and "iters" in table:
        opts["iters"] = round(_interp_loglog(table["sigma"], table["iters"], sigma))
    if sigma is not None and table and "concavity" in table:
        opts["concavity"] = _interp_loglog(table["sigma"], table["concavity"], sigma, log_y=False)
        opts["score_ref"] = float(table["score_ref"])
    return opts


def shaping(model, task: str, sigma: float | None = None, concavity: float | None = None,
            clipped: bool = False) -> tuple[float, float]:
    """``(concavity, score_ref)`` of the shaped R of ``task`` at ``sigma``: the table's concavity there
    (0 without one, or without ``sigma``) unless ``concavity`` is given, and the table's score
    reference. A concavity > 0 needs that reference: :class:`AlrError` otherwise."""
    ref = (_table(model, task, clipped) or {}).get("score_ref")
    kappa = solver_options(model, task, sigma, clipped).get("concavity", 0.0) if concavity is None else concavity
    if kappa > 0 and ref is None:
        raise AlrError(f"this model's {task} table has no score reference for concavity {kappa:g} (--concavity); "
                       "calibrate one with alr bench calibrate --concavity ... (or pass concavity 0)")
    return float(kappa), float(ref or 0.0)


# L-BFGS iterations per task: denoising converges in 20; the other operators spread
# information further (inpainting fills holes) and gain 0.3-1.6 dB from 20 to 60
# iterations on bsd400 images, little beyond (research/notebook.md, "Performance")
TASK_ITERS = {"denoise": 20, "deblur": 60, "inpaint": 60, "sr": 60}
DEFAULT_SOLVER = {"method": "lbfgs", "options": {"boundary": "reflect"}, "iters": TASK_ITERS}


def unfinished(model: PatchCritic) -> str | None:
    """What a model file written before the end of its training run lacks (a pause by
    --stop-after, or a run stopped before its scale fit or calibration), or None."""
    meta = model.meta or {}
    lacks = list(meta.get("pending") or [])
    command, run = ("finetune", meta["finetune"]) if "finetune" in meta else ("train", meta.get("training") or {})
    if run.get("paused") and run.get("steps_left", 1):
        lacks.insert(0, "training steps")
    if not lacks:
        return None
    return (f"an unfinished training run (lacks: {', '.join(lacks)}): the same alr {command} command with --resume "
            "ends it")


def describe(model: PatchCritic, name: str = "model") -> str:
    """A readable summary of a model: architecture, training data and recipe, lambda tables."""
    meta = model.meta or {}
    cfg = model.config()
    n = sum(p.numel() for p in model.parameters())
    widths = f"width {cfg['width']}" if "width" in cfg else "widths " + "-".join(map(str, cfg["widths"]))
    lines = [f"{name}: patch critic, {cfg['in_channels']} channel(s), {cfg['depth']} layers of {widths} "
             f"({model.receptive_field}x{model.receptive_field} patches), {cfg['activation']}, {cfg['criterion']}; "
             f"{n:,} parameters"]
    if "log_scale" in cfg or "log_weight" in cfg:
        s, a = cfg.get("log_scale", 0.0), cfg.get("log_weight", 0.0)
        lines.append(f"fitted scale and weight: R(x) = {math.exp(a - 2 * s):.4g} R0({math.exp(s):.4g} x) "
                     f"(log_scale {s:.4g}, log_weight {a:.4g})")
    if meta.get("recipe"):
        lines.append(f"recipe: {meta['recipe']}")
    data, train = meta.get("data") or {}, meta.get("training") or {}
    if data or train:
        steps = train.get("steps")
        lines.append("trained: " + ", ".join(str(v) for v in (
            f"{steps} steps" if steps else None,
            f"batch {train['batch_size']}" if "batch_size" in train else None,
            f"on {data['clean']}" if data.get("clean") else None,
            data.get("degradation")) if v))
    if unfinished(model):
        lines.append(unfinished(model))
    if meta.get("continued_from"):
        lines.append("continued from an earlier model (see --json for its recipe)")
    tables = meta.get("lambda") or {}
    if not tables:
        lines.append("no lambda table: restore with --lam, or calibrate: alr bench calibrate --model FILE")
    for task, t in tables.items():
        cols = [("sigma", t["sigma"]), ("lambda", t["lam"])] + [(k, t[k]) for k in ("iters", "concavity") if k in t]
        lines.append(f"table {task}:")
        lines += [f"  {k:<9} " + " ".join(f"{v:>8.4g}" for v in vals) for k, vals in cols]
    if meta.get("lambda_calibration"):
        lines.append(f"calibrated on: {meta['lambda_calibration']}")
    return "\n".join(lines)
