"""Restoration settings, resolved once from the model, the input and the user's overrides.

:func:`resolve` turns what a user says (a model, a task, maybe a noise level, maybe an
explicit lambda or solver) into everything the solver needs, using the model's calibrated
tables (:mod:`alr.pretrained`) for whatever was not given. :func:`alr.restore` (Python) and
``alr restore`` (command line) both call it, so the two give the same result for the same
inputs; the notes it returns are what the command line prints.

Rules, in order:

* the noise level ``sigma``: as given, or estimated from the image for denoising
  (:func:`alr.data.estimate_sigma`); other tasks need it (or an explicit ``lam``);
* lambda, iterations and score shaping: as given, else from the model's table for the task at
  ``sigma`` (log-log interpolated, the nearest level's values outside the table's range);
* an estimated noise level below the lowest level of the model's table (below
  :data:`NO_NOISE_SIGMA` without a table) means there is little or nothing to remove, and fine
  texture easily passes for that much noise (a clean JPEG of grass estimates 0.04 and loses 20 dB
  when "denoised"): the image is returned as it is, with a note, unless the user gives
  ``sigma`` or ``lam`` (a constant image estimates 0); with ``clipped``, an estimate below
  :data:`NO_NOISE_SIGMA` is refused instead, since saturated pixels hide the noise from the
  estimator (a sharp 0/1 edge estimates 1e-33);
* the activation memory budget: as given, else a quarter of the memory available now,
  at most 128 MiB on the CPU and 1 GiB on a GPU (:func:`alr.device.memory_budget`);
* before all these, the colour space (:func:`pick_color_space`): without a model named, a colour
  image is denoised by `color` at noise levels inside :data:`RGB_BAND`, and by the `gray` model
  on its luminance and chroma outside it.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from .critic import PatchCritic, check_image_size
from .device import memory_budget
from .errors import AlrError
from .images import check_image
from .pretrained import calibrated_range, check_number, extrapolates_low, lam_for, shaping, solver_options

TASKS = ("denoise", "deblur", "inpaint", "sr")
#: Without a lambda table, estimated noise levels below this (2.5 / 255) count as a clean image.
NO_NOISE_SIGMA = 0.01
#: Fraction of pixels at exactly 0 or 1 above which the input looks clipped.
SATURATION_NOTE = 0.01
#: Largest super-resolution factor ``alr restore`` takes: the tables are calibrated at x2, and a
#: 13-pixel patch prior has nothing left to recover beyond x8 (a 64x64 input would become a
#: 6400x6400 solve at x100).
MAX_SR_FACTOR = 8
#: The super-resolution factor when none is given (the tables' calibrated one).
SR_FACTOR = 2
#: The fraction of missing pixels of an inpainting mask when none is given (the tables' calibrated one).
MISSING = 0.5


@dataclass
class Settings:
    """Everything :func:`alr.solver.minimize` needs besides the image and the operator.

    ``notes`` are one-line messages for the user (the estimated sigma, a range warning);
    ``skip`` is True when the image is to be returned unchanged (no noise to remove); ``steps``:
    the step sizes (``lr0``, ``lr1``, ``step``) the model recommends for its first-order solver.
    """

    task: str
    sigma: float | None
    lam: float
    method: str
    iters: int | None
    boundary: str = "reflect"
    concavity: float = 0.0
    score_ref: float = 0.0
    symmetric: bool = False
    per_channel: bool = False
    color_space: str = "rgb"
    clipped: bool = False
    max_memory: float | None = None
    tol: float = 0.0
    skip: bool = False
    notes: list[str] = field(default_factory=list)
    steps: dict = field(default_factory=dict)

    def solver_kwargs(self) -> dict:
        """Keyword arguments of :func:`alr.solver.minimize` (``lam``, ``concavity`` per image excluded)."""
        kw = {"method": self.method, "boundary": self.boundary, "score_ref": self.score_ref,
              "symmetric": self.symmetric, "per_channel": self.per_channel, "max_memory": self.max_memory}
        if self.iters is not None:
            kw["iters"] = self.iters
        if self.tol:
            kw["tol"] = self.tol
        return {**kw, **self.steps}

    def batch_key(self) -> tuple:
        """Images whose settings share this key can be solved as one batch (lam, concavity and
        sigma may differ per image)."""
        return (self.task, self.method, self.iters, self.tol, self.boundary, self.score_ref, self.symmetric,
                self.per_channel, self.color_space, self.clipped, tuple(sorted(self.steps.items())))

    def describe(self) -> str:
        """One line: the settings that decide the result."""
        if self.color_space == "opponent":  # three gray problems, each with its own table's settings
            return f"task {self.task}, gray model in the opponent colour space at sigma {self.sigma:.4g}"
        parts = [f"task {self.task}", f"lam {self.lam:.4g}", self.method]
        if self.iters is not None:
            parts.append(f"{self.iters} iterations" if not self.tol else f"to tolerance {self.tol:g} (at most {self.iters} iterations)")
        if self.concavity:
            parts.append(f"shaping {self.concavity:g}")
        if self.clipped:
            parts.append("clipped-noise data term")
        return ", ".join(parts)


def match_channels(model: PatchCritic, y: torch.Tensor, per_channel: bool, name: str = "the image") -> torch.Tensor:
    """``y`` made to fit the model's channels: a gray image is repeated for a colour model;
    a colour image needs ``per_channel`` with a gray model (AlrError otherwise)."""
    if model.in_channels == 3 and y.shape[1] == 1:
        return y.expand(-1, 3, -1, -1)
    if model.in_channels == 1 and y.shape[1] == 3 and not per_channel:
        raise AlrError(f"{name} is a colour image and the model is grayscale: use a colour model "
                       "(model=\"color\", --model color), denoise its luminance and chroma "
                       "(color_space=\"opponent\", --color-space opponent) or apply the gray one to each channel "
                       "(per_channel=True, --per-channel)")
    if y.shape[1] not in (1, 3) or (model.in_channels == 3 and y.shape[1] != 3):
        raise AlrError(f"{name} has {y.shape[1]} channels; the model takes {model.in_channels}")
    return y


COLOR_SPACES = ("auto", "rgb", "opponent")
#: With the default model, colour images are denoised in RGB by ``color`` at noise levels
#: ``low <= sigma < high`` and in the opponent space outside: on cbsd432 crops (docs/results.md,
#: "Opponent colour space") ``color`` restores better at 0.1 only, the opponent space at 0.02, 0.05,
#: 0.07, 0.2 and 0.4; each bound is the geometric mean of the two levels around it (0.07 and 0.1,
#: 0.1 and 0.2).
RGB_BAND = (0.084, 0.14)


def opponent_by_default(sigma: float) -> bool:
    """Whether the default colour denoising at noise level ``sigma`` is in the opponent space
    (outside :data:`RGB_BAND`)."""
    return not RGB_BAND[0] <= sigma < RGB_BAND[1]


def pick_color_space(color_space: str, model_given: bool, y: torch.Tensor, task: str | None,
                     sigma: float | None, clipped: bool, per_channel: bool) -> str:
    """``color_space`` with ``"auto"`` made concrete for the image ``y`` (1, C, H, W).

    ``"auto"`` is ``"opponent"`` (the `gray` model on luminance and chroma,
    :func:`alr.solver.restore_opponent`) for denoising a colour image with the default model, no
    clipped-noise data term and no ``per_channel``, at a noise level ``sigma`` (None: estimated)
    outside :data:`RGB_BAND`; otherwise ``"rgb"``. Other values are returned as given.
    """
    if color_space != "auto":
        return color_space
    if model_given or task != "denoise" or clipped or per_channel or y.shape[1] != 3:
        return "rgb"
    from .data import estimate_sigma
    level = sigma if sigma is not None else estimate_sigma(y[:1])
    return "opponent" if opponent_by_default(level) else "rgb"


def pick_model(y: torch.Tensor, model: "str | PatchCritic | None", task: str | None, sigma: float | None,
               clipped: bool, per_channel: bool, color_space: str,
               loaded: dict | None = None) -> tuple[PatchCritic, str]:
    """The critic and the concrete colour space that restore the image ``y`` (1, C, H, W): the colour
    space of :func:`pick_color_space`; ``model`` a critic, a name or file, or None for the default
    (``gray`` for a gray image or the opponent space, ``color`` otherwise); ``loaded`` caches the
    models loaded by name. The one choice :func:`alr.restore` and ``alr restore`` make."""
    from .pretrained import load

    space = pick_color_space(color_space, model is not None, y, task, sigma, clipped, per_channel)
    if isinstance(model, PatchCritic):
        return model, space
    name = model or ("gray" if y.shape[1] == 1 or space == "opponent" else "color")
    loaded = {} if loaded is None else loaded
    if name not in loaded:
        loaded[name] = load(name)
    return loaded[name], space


def check_color_space(color_space: str, model: PatchCritic, y: torch.Tensor, task: str | None, clipped: bool,
                      name: str = "the image") -> None:
    """Raise AlrError unless ``color_space`` applies: ``"rgb"`` always; ``"opponent"``
    (:func:`alr.solver.restore_opponent`) to denoising a colour image with a gray model;
    ``"auto"`` is for :func:`pick_color_space` to make concrete first."""
    if color_space == "auto":
        raise ValueError("make colour space 'auto' concrete with pick_color_space first")
    if color_space not in COLOR_SPACES:
        raise AlrError(f"unknown colour space {color_space!r}; use {', '.join(COLOR_SPACES)}")
    if color_space == "opponent" and (task != "denoise" or clipped or model.in_channels != 1 or y.shape[1] != 3):
        raise AlrError(f"{name}: the opponent colour space is for denoising a colour image with a gray model "
                       "(no other task, no clipped-noise data term)")


def _saturated(y: torch.Tensor) -> float:
    """Fraction of pixels exactly at 0 or 1: what clipping after the noise leaves."""
    return float(((y == 0) | (y == 1)).float().mean())


def resolve(model: PatchCritic, y: torch.Tensor, task: str = "denoise", sigma: float | None = None,
            lam: float | None = None, *, clipped: bool = False, method: str | None = None,
            iters: int | None = None, concavity: float | None = None, boundary: str | None = None,
            symmetric: bool = False, per_channel: bool = False, color_space: str = "rgb",
            max_memory: float | None = None, device: torch.device | str | None = None,
            name: str = "the image") -> Settings:
    """The settings for restoring the measurement ``y`` (B, C, H, W) with ``model``.

    Parameters
    ----------
    task : ``"denoise"``, ``"deblur"``, ``"inpaint"`` or ``"sr"``: which of the model's tables to use.
    sigma : noise level of ``y`` (None: estimated for denoising; for a batch, from its first image).
    lam : regularisation weight (None: the model's table at ``sigma``).
    clipped : ``y`` was clipped to [0, 1] after the noise: censored data term and its table.
    method, iters, concavity, boundary, symmetric : solver overrides (None: the model's).
    per_channel : apply a gray model to each channel of a colour image.
    color_space : ``"rgb"``, or ``"opponent"``: a gray model denoises the luminance and chroma
        channels (:func:`check_color_space`; the settings then hold the RGB noise level).
    max_memory : activation memory budget in bytes (None: from the memory available on ``device``).
    name : how messages name the input (a file name on the command line).
    """
    from .data import estimate_sigma

    check_image(y, name, bounded=False)  # the measurements of any operator; alr.restore bounds its own
    if task not in TASKS:
        raise AlrError(f"unknown task {task!r}; choose one of {', '.join(TASKS)}")
    check_color_space(color_space, model, y, task, clipped, name)
    for opt, v in (("sigma", sigma), ("lam", lam), ("concavity", concavity)):
        if v is not None:
            check_number(v, opt)
    if iters is not None and iters < 1:
        raise AlrError(f"iters must be >= 1, got {iters}")
    notes: list[str] = []
    estimated = False
    if sigma is None:
        if task != "denoise" and (lam is None or clipped):
            raise AlrError(f"task {task} needs sigma (--sigma, the noise level)"
                           + ("" if clipped else " or lam (--lam)"))
        if task == "denoise":
            check_image_size(y, model.receptive_field)  # a smaller image has no noise level to estimate
            sigma = estimate_sigma(y[:1])
            estimated = True
            if not math.isfinite(sigma):
                raise AlrError(f"{name}: the noise level cannot be estimated from this image; give sigma (--sigma)")
            notes.append(f"{name}: estimated noise sigma = {sigma:.4f}")
    if clipped and estimated and sigma < NO_NOISE_SIGMA:
        raise AlrError(f"{name}: clipped (--clipped) needs a plausible noise level, and the one estimated from "
                       f"this image ({sigma:.2g}) is not: saturated pixels hide the noise; give it as sigma (--sigma)")
    if clipped and not sigma:
        raise AlrError("clipped (--clipped) needs a noise level sigma > 0 (--sigma)")
    span = calibrated_range(model, task, clipped)
    low = span[0] if span else NO_NOISE_SIGMA
    skip = estimated and lam is None and sigma < low
    if skip:
        notes.append(f"{name}: little or no noise (estimated sigma {sigma:.4f} < {low:g}, the lowest level the model "
                     "is calibrated for; fine texture can look like that much noise): returned unchanged; give "
                     "sigma (--sigma) to restore it anyway")
    if lam is None:
        try:
            lam = lam_for(model, task, sigma, clipped) if not skip else 0.0
        except KeyError as e:
            raise AlrError(e.args[0]) from None
        if span and not skip and sigma > span[1]:
            notes.append(f"{name}: sigma {sigma:.4g} is above the model's calibrated range {span[0]:g}-{span[1]:g}; "
                         f"the lambda and solver of sigma {span[1]:g} are used")
        elif span and not skip and sigma < span[0] and extrapolates_low(model, task, clipped):
            notes.append(f"{name}: sigma {sigma:.4g} is below the model's calibrated range {span[0]:g}-{span[1]:g}; "
                         f"lambda follows the table's power law down to it ({lam:.3g}), the solver is that of "
                         f"sigma {span[0]:g}")
        elif span and not skip and sigma < span[0]:
            notes.append(f"{name}: sigma {sigma:.4g} is below the model's calibrated range {span[0]:g}-{span[1]:g}; "
                         f"the lambda and solver of sigma {span[0]:g} are used")
    sat = _saturated(y)
    if sat > SATURATION_NOTE and not clipped:
        notes.append(f"{name}: {sat:.0%} of the pixels are exactly 0 or 1; if the noise was clipped "
                     "(saturation), clipped (--clipped) models it and restores them better")
    if per_channel and model.in_channels == 1 and y.shape[1] == 3 and color_space == "rgb":
        notes.append(f"{name}: a gray model on each colour channel ignores how the channels vary together and "
                     "restores worse than the color model or the opponent colour space (--color-space opponent)")
    opts = solver_options(model, task, sigma, clipped)
    if method is not None and method != opts["method"]:  # keep what defines the energy, drop the rest
        opts = {"method": method, **{k: opts[k] for k in ("boundary",) if k in opts}}
    kappa, score_ref = shaping(model, task, sigma, concavity, clipped)
    return Settings(task=task, sigma=sigma, lam=float(lam), method=opts["method"],
                    iters=iters or opts.get("iters"), boundary=boundary or opts.get("boundary", "reflect"),
                    concavity=kappa, score_ref=score_ref,
                    symmetric=symmetric, per_channel=per_channel, color_space=color_space, clipped=clipped,
                    max_memory=max_memory if max_memory is not None else memory_budget(device),
                    tol=float(opts.get("tol", 0.0)), skip=skip, notes=notes,
                    steps={k: opts[k] for k in ("lr0", "lr1", "step") if k in opts})
