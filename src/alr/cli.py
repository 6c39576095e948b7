"""The ``alr`` command line: train, finetune, restore, degrade, info, demo, and bench (the paper's experiments).

Every sub-command reads and writes ordinary image files (PNG, JPEG, TIFF,
``.npy``). Errors are reported on one line (``alr: error: ...``) with exit
status 2, and outputs are written atomically, so a failed run leaves nothing
half-written.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
import zlib
from dataclasses import fields
from pathlib import Path

import torch

from . import argtypes
from .critic import ACTIVATIONS, BOUNDARIES, CRITERIA
from .settings import COLOR_SPACES, MAX_SR_FACTOR, MISSING, RGB_BAND, SR_FACTOR
from .finetune import FinetuneConfig
from .train import PENALTIES, RECIPES

TASKS = ("denoise", "deblur", "inpaint", "sr")
#: Images of equal size and settings that `alr restore` solves together in a folder (--batch-size).
FOLDER_BATCH = 4


# ---------------------------------------------------------------------------- parser
def build_parser() -> argparse.ArgumentParser:
    """The parser of the ``alr`` command and its verbs (``alr bench`` parses its own options)."""
    p = argparse.ArgumentParser(prog="alr", description="Adversarial local regularization for image restoration.")
    p.add_argument("--version", action="version", version=f"alr {_version()}")
    sub = p.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="train a patch critic on unpaired clean / degraded images")
    t.add_argument("--clean", required=True, help="folder of clean images")
    src = t.add_mutually_exclusive_group(required=True)
    src.add_argument("--degraded", help="folder of real degraded images (unknown degradation)")
    src.add_argument("--sigma", type=argtypes.positive_float, help="fixed Gaussian noise level (in [0,1] units)")
    src.add_argument("--sigma-range", type=argtypes.positive_float, nargs=2, metavar=("A", "B"),
                     help="noise level drawn uniformly in [A, B] per patch")
    t.add_argument("--blur", type=argtypes.positive_float, default=0.0, metavar="STD",
                   help="Gaussian blur std (pixels) applied before the noise")
    t.add_argument("--poisson", type=argtypes.positive_float, default=0.0, metavar="GAIN",
                   help="Poisson noise of this gain before the Gaussian noise (Poisson-Gaussian, as DeepInverse's "
                        "PoissonGaussianNoise: variance GAIN * x + sigma^2; --sigma 0 for Poisson alone)")
    t.add_argument("--recipe", choices=sorted(RECIPES), default="paper",
                   help="defaults of the architecture and the options below: paper (the paper's unpaired critic, "
                        "default) or lar (the comparative study's local adversarial regularizer: a 15x15 SiLU critic "
                        "128-64-64-64-32-32, paired patches, one-sided penalty 0.1, checkpoint selection by PSNR on 8 "
                        "held-out images, a fitted input scale); options given explicitly win")
    t.add_argument("--init", default=None, metavar="MODEL",
                   help="continue training this model (file or shipped name) instead of a new critic")
    t.add_argument("--channels", type=int, choices=(1, 3), default=None, help="default 1, or the --init model's")
    t.add_argument("--depth", type=argtypes.positive_int, default=None, help="convolution layers (paper recipe: 6)")
    t.add_argument("--width", type=argtypes.positive_int, default=None, help="hidden channels (paper recipe: 64)")
    t.add_argument("--widths", type=argtypes.positive_ints, default=None, metavar="W1,W2,...",
                   help="channels of each hidden layer instead of one --width (depth = their number + 1)")
    t.add_argument("--activation", default=None, choices=sorted(ACTIVATIONS),
                   help="the recipe's (paper: relu, lar: silu), or the --init model's (another one keeps its "
                        "weights)")
    t.add_argument("--criterion", default=None, choices=CRITERIA,
                   help="w1: the paper's critic, R grows like the distance to clean patches; w2: R = half its "
                        "square, the variant the paper proposes for high noise, measured worse on images (docs/negative-results.md; "
                        "default w1, or the --init model's; another one keeps its weights)")
    t.add_argument("--anchor", type=argtypes.positive_float, default=100.0,
                   help="w2 only: weight that pins the critic to 0 on clean patches (default 100)")
    t.add_argument("--slope", type=argtypes.positive_float, default=0.0, metavar="W",
                   help="weight of the slope penalty (synthetic noise only): each degraded patch is its clean patch "
                        "degraded, and the critic's slope from one to the other is held at 1 (docs/method.md; "
                        "default 0, the paper's unpaired training)")
    t.add_argument("--paired", action=argparse.BooleanOptionalAction, default=None,
                   help="each noisy patch is its clean patch degraded (synthetic noise only; the gradient penalty's "
                        "points then lie between the two; lar recipe) instead of patches of other images (paper)")
    t.add_argument("--penalty", choices=PENALTIES, default=None,
                   help="gradient penalty: (||grad|| - 1)^2 (two-sided, paper) or relu(||grad|| - 1)^2 (one-sided, lar)")
    t.add_argument("--steps", type=argtypes.count, default=20000,
                   help="training steps (0: only convert --init to a new --activation / --criterion); with "
                        "--resume, the new total (at least the checkpoint's steps)")
    t.add_argument("--batch-size", type=argtypes.positive_int, default=None, help="patches a step (paper 128, lar 512)")
    t.add_argument("--lr0", type=argtypes.positive_float, default=None, help="first learning rate (paper 1e-4, lar 1e-3)")
    t.add_argument("--lr1", type=argtypes.positive_float, default=None, help="last learning rate (paper 1e-5, lar 1e-4)")
    t.add_argument("--mu", type=argtypes.positive_float, default=None,
                   help="gradient penalty weight (paper 10, lar 0.1)")
    t.add_argument("--betas", type=float, nargs=2, default=None, metavar=("B1", "B2"),
                   help="Adam betas of the critic's optimiser (paper 0.5 0.9, the WGAN-GP choice; lar 0.9 0.999)")
    t.add_argument("--val-images", type=argtypes.count, default=None, metavar="N",
                   help="hold the last N images of --clean out of training to validate on (lar: 8)")
    t.add_argument("--val", default=None, metavar="DIR",
                   help="validate on the images of DIR instead (training side: never a test set)")
    t.add_argument("--val-every", type=argtypes.count, default=None, metavar="N",
                   help="every N steps restore the validation crops and keep the critic that restores best "
                        "(0: the last one; lar: 1000)")
    t.add_argument("--val-sigma", type=argtypes.positive_float, default=None,
                   help="noise level of the validation (default: --sigma, or 0.1)")
    t.add_argument("--boundary", choices=BOUNDARIES, default=None,
                   help="boundary of R that validation, calibration and restore use, recorded in the model "
                        "(default: the recipe's or --init model's, else reflect)")
    t.add_argument("--fit-scale", action=argparse.BooleanOptionalAction, default=None,
                   help="after training, fit the critic's input scale and weight R~(x) = e^(a-2s) R(e^s x) on "
                        "training crops (bilevel, at the validation noise level; lar)")
    t.add_argument("--seed", type=argtypes.seed, default=0,
                   help="seeds the initial weights and every random draw: on the CPU the same seed, data and "
                        "options give the same model file, bit for bit")
    t.add_argument("--ckpt-every", type=argtypes.positive_int, default=1000, help="checkpoint (MODEL.ckpt) every N steps")
    _time_options(t)
    t.add_argument("--max-images", type=argtypes.positive_int, default=None, help="use only the first N images of each folder")
    t.add_argument("--augment", action=argparse.BooleanOptionalAction, default=None,
                   help="turn each training patch by a random flip / quarter turn (8x the patch variety; lar)")
    t.add_argument("--device", type=argtypes.device, default=None, help=argtypes.DEVICE_HELP)
    t.add_argument("--resume", action="store_true", help="continue from MODEL.ckpt")
    t.add_argument("--log", default=None, help="CSV log (default: MODEL with .csv)")
    t.add_argument("-o", "--output", required=True, help="model file to write (.safetensors)")
    t.add_argument("--no-calibrate", action="store_true",
                   help="skip the lambda calibration that ends training (then restore needs --lam)")
    t.add_argument("-q", "--quiet", action="store_true")

    f = sub.add_parser("finetune", help="bilevel fine-tuning of a critic on clean images (Jacobian-free "
                                        "backpropagation through its energy's minimiser)")
    ft = {k.name: k.default for k in fields(FinetuneConfig)}  # the library's defaults
    f.add_argument("--clean", required=True, help="folder of clean training images")
    f.add_argument("--sigma", type=argtypes.positive_float, required=True, help="noise level to fine-tune for")
    f.add_argument("--init", required=True, metavar="MODEL", help="model to start from (file or shipped name)")
    f.add_argument("-o", "--output", required=True, help="model file to write (.safetensors)")
    f.add_argument("--lam", type=argtypes.positive_float, default=None,
                   help="regularisation weight held fixed (default: the model's table at --sigma)")
    f.add_argument("--fit-scale", action=argparse.BooleanOptionalAction, default=ft["fit_scale"],
                   help="learn the input scale and weight of R with the critic (the learned weight: default on)")
    f.add_argument("--steps", type=argtypes.positive_int, default=ft["steps"])
    f.add_argument("--batch-size", type=argtypes.positive_int, default=ft["batch_size"], help="crops a step")
    f.add_argument("--crop", type=argtypes.positive_int, default=ft["crop"], help="side of the training crops")
    f.add_argument("--lr0", type=argtypes.positive_float, default=ft["lr0"])
    f.add_argument("--lr1", type=argtypes.positive_float, default=ft["lr1"])
    f.add_argument("--method", choices=("lbfgs", "nmapg"), default=ft["method"], help="solver of the inner problem")
    f.add_argument("--iters", type=argtypes.positive_int, default=ft["iters"], help="its maximum iterations")
    f.add_argument("--tol", type=argtypes.positive_float, default=ft["tol"], help="its tolerance (relative change)")
    f.add_argument("--boundary", choices=BOUNDARIES, default=ft["boundary"],
                   help="boundary of R in the inner problem, recorded in the model (default reflect)")
    f.add_argument("--val-images", type=argtypes.count, default=4, metavar="N",
                   help="hold the last N images of --clean out to validate on (default 4)")
    f.add_argument("--val", default=None, metavar="DIR", help="validate on the images of DIR instead")
    f.add_argument("--val-every", type=argtypes.count, default=25, metavar="N",
                   help="keep the critic that restores the validation crops best, checked every N steps (0: the last; "
                        "default 25, where the library, given no validation, keeps the last)")
    f.add_argument("--max-images", type=argtypes.positive_int, default=None, help="use only the first N images")
    _time_options(f)
    f.add_argument("--seed", type=argtypes.seed, default=ft["seed"])
    f.add_argument("--ckpt-every", type=argtypes.positive_int, default=ft["ckpt_every"],
                   help="checkpoint (MODEL.ckpt) every N steps")
    f.add_argument("--resume", action="store_true", help="continue from MODEL.ckpt")
    f.add_argument("--device", type=argtypes.device, default=None, help=argtypes.DEVICE_HELP)
    f.add_argument("--log", default=None, help="CSV log (default: MODEL with .csv)")
    f.add_argument("--no-calibrate", action="store_true", help="skip the lambda calibration at the end")
    f.add_argument("-q", "--quiet", action="store_true")

    r = sub.add_parser("restore", help="restore an image (or a folder of images)")
    r.add_argument("input", help="degraded image file, or a folder of them")
    r.add_argument("-o", "--output", required=True, help="output image file (or folder)")
    r.add_argument("--model", default=None, help="model file or shipped name (default: gray / color by channels)")
    r.add_argument("--task", choices=TASKS, default="denoise", help="forward operator A (default denoise: A = I)")
    r.add_argument("--sigma", type=argtypes.positive_float, default=None,
                   help="noise level; estimated from the image for denoising when omitted")
    r.add_argument("--lam", type=argtypes.positive_float, default=None, help="regularisation weight (default: model's table)")
    r.add_argument("--clipped", action="store_true",
                   help="the input was clipped to [0, 1] after the noise (saturated pixels): use the censored "
                        "Gaussian data term of alr.fidelity (needs the noise level: --sigma, or estimated) and the "
                        "model's denoise-clipped lambda table where it has one")
    kern = r.add_mutually_exclusive_group()
    kern.add_argument("--kernel", help="blur kernel file (.npy or image), for --task deblur")
    kern.add_argument("--blur-sigma", type=argtypes.positive_float, help="Gaussian blur std, for --task deblur")
    r.add_argument("--mask", help="mask image (known pixels: above half its maximum), for --task inpaint")
    r.add_argument("--factor", type=argtypes.int_at_least(1, MAX_SR_FACTOR), default=None,
                   help=f"super-resolution factor, for --task sr (default {SR_FACTOR}, at most {MAX_SR_FACTOR})")
    r.add_argument("--method", default=None, choices=("adam", "gd", "agd", "lbfgs", "nmapg"),
                   help="solver of min_x 1/(2n) ||Ax - y||^2 + lam R(x) (default: the model's; L-BFGS for the "
                        "shipped ones)")
    r.add_argument("--iters", type=argtypes.positive_int, default=None, help="solver iterations (default: the model's table)")
    r.add_argument("--concavity", type=argtypes.positive_float, default=None,
                   help="concave shaping of the patch scores (default: the model's table; 0: the paper's R)")
    r.add_argument("--symmetric", action="store_true",
                   help="average R over the 8 flips and quarter turns of the image (8x slower, about +0.1 dB)")
    r.add_argument("--boundary", default=None, choices=BOUNDARIES,
                   help="R on the image padded by mirrored (default) or repeated edge pixels, or on inner "
                        "patches only (the paper's)")
    r.add_argument("--per-channel", action="store_true", help="apply a grayscale model to each colour channel")
    r.add_argument("--color-space", choices=COLOR_SPACES, default="auto",
                   help="opponent: denoise a colour image with a gray model (default gray) on its luminance and "
                        "two chroma channels, as CBM3D does; rgb: the colour model on RGB; auto (default): "
                        f"rgb for colour denoising with the default model at {RGB_BAND[0]:g} <= sigma < {RGB_BAND[1]:g}, "
                        "else opponent")
    r.add_argument("--max-memory", type=argtypes.memory, default=None, help="activation memory budget, e.g. 4G (default: a quarter of the memory available, "
                        "at most 128M on the CPU and 1G on a GPU; larger images are solved in exact tiles)")
    r.add_argument("--device", type=argtypes.device, default=None, help=argtypes.DEVICE_HELP)
    r.add_argument("--batch-size", type=argtypes.positive_int, default=None,
                   help=f"images of equal size solved together in a folder (default {FOLDER_BATCH})")
    r.add_argument("--shard", type=argtypes.shard, default=None, help="process the i-th of n parts of a folder")
    r.add_argument("--overwrite", action="store_true",
                   help="redo outputs that already exist (folders; without it a rerun restores only what is "
                        "missing, and images that fail are reported and skipped)")
    r.add_argument("-q", "--quiet", action="store_true")

    d = sub.add_parser("degrade", help="make a degraded test input from a clean image")
    d.add_argument("input")
    d.add_argument("-o", "--output", required=True, help=".npy/.tif keep unclipped float values")
    d.add_argument("--task", choices=TASKS, default="denoise")
    d.add_argument("--sigma", type=argtypes.positive_float, default=0.1)
    d.add_argument("--seed", type=argtypes.seed, default=None,
                   help="noise (and mask) seed (default: one from the input's file name, so that the images of a "
                        "folder degraded one by one get different noise; files of one name share it)")
    kd = d.add_mutually_exclusive_group()
    kd.add_argument("--kernel")
    kd.add_argument("--blur-sigma", type=argtypes.positive_float, default=None)
    d.add_argument("--missing", type=argtypes.fraction, default=None,
                   help=f"fraction of missing pixels, for --task inpaint (default {MISSING})")
    d.add_argument("--mask-out", default=None, help="where to write the inpainting mask (PNG)")
    d.add_argument("--factor", type=argtypes.int_at_least(1, MAX_SR_FACTOR), default=None,
                   help=f"super-resolution factor, for --task sr (default {SR_FACTOR})")
    d.add_argument("--clip", action="store_true", help="clip the result to [0, 1]")

    i = sub.add_parser("info", help="summarise a model: architecture, training, calibrated tables")
    i.add_argument("model", help="model file or shipped name")
    i.add_argument("--json", action="store_true", help="print the raw metadata as JSON")

    m = sub.add_parser("demo", help="restore a sample image with the shipped model")
    m.add_argument("-o", "--output", default="demo_out")

    b = sub.add_parser("bench", add_help=False, help="reproduce the paper's experiments and tables (alr bench -h)")
    b.add_argument("rest", nargs=argparse.REMAINDER)  # parsed by alr.bench, which the library never imports
    return p


def _time_options(p: argparse.ArgumentParser) -> None:
    """The wall-clock options of ``train`` and ``finetune``."""
    p.add_argument("--max-seconds", type=argtypes.positive_float, default=None, metavar="T",
                   help="the run's time budget in seconds, across --resume: stop and save after it, the learning "
                        "rate decaying with the clock")
    p.add_argument("--stop-after", type=argtypes.positive_float, default=None, metavar="T",
                   help="pause after T seconds of this run, leaving the checkpoint for --resume; the learning-rate "
                        "schedule does not change (jobs under a wall-clock limit)")


def _version() -> str:
    from . import __version__
    return __version__


# ---------------------------------------------------------------------------- helpers
def _read_kernel(path: str) -> torch.Tensor:
    from .images import read_image
    k = read_image(path, bounded=False)[0]
    if k.shape[0] != 1:
        k = k.mean(0, keepdim=True)
    k = k[0]
    if float(k.sum()) <= 0:
        raise ValueError(f"kernel {path} sums to zero")
    return k / k.sum()


#: The options of one task each (``alr restore`` and ``alr degrade``): given for another task, an error.
TASK_OPTIONS = {"kernel": "deblur", "blur_sigma": "deblur", "mask": "inpaint", "mask_out": "inpaint",
                "missing": "inpaint", "factor": "sr"}


def check_task_options(args: argparse.Namespace) -> None:
    """Refuse an option of another task than ``args.task`` (it would be ignored)."""
    for name, task in TASK_OPTIONS.items():
        if getattr(args, name, None) is not None and args.task != task:
            raise ValueError(f"--{name.replace('_', '-')} is an option of --task {task}, not of --task {args.task}")


def make_physics(task: str, args: argparse.Namespace):
    """The forward operator of ``task`` from the command-line options."""
    from . import physics as ph

    if task == "denoise":
        return ph.Denoising()
    if task == "deblur":
        if args.kernel:
            return ph.Blur(_read_kernel(args.kernel))
        if args.blur_sigma is not None:
            try:
                return ph.Blur(ph.gaussian_kernel(args.blur_sigma))
            except ValueError as e:
                raise ValueError(f"--blur-sigma {args.blur_sigma:g}: {e}") from None
        raise ValueError("--task deblur needs --kernel FILE or --blur-sigma S")
    if task == "inpaint":
        if not getattr(args, "mask", None):
            raise ValueError("--task inpaint needs --mask FILE")
        from .images import read_image
        m = read_image(args.mask).mean(1, keepdim=True)
        if float(m.max()) <= 0:
            raise ValueError(f"--mask {args.mask} has no known pixel (known: above half the mask's maximum)")
        return ph.Inpainting((m > 0.5 * m.max()).float())
    if task == "sr":
        return ph.Downsampling(args.factor or SR_FACTOR)
    raise ValueError(f"unknown task {task!r}")


class _Job:
    """One input image made ready for the solver: measurement, model, operator, settings."""

    def __init__(self, path: Path, out: Path, args, physics, models: dict, say) -> None:
        from .errors import AlrError, one_line
        try:
            self._prepare(path, out, args, physics, models, say)
        except (AlrError, ValueError, OSError) as e:  # every message names the image
            msg = one_line(e)
            raise AlrError(msg if path.name in msg else f"{path}: {msg}") from None

    def _prepare(self, path: Path, out: Path, args, physics, models: dict, say) -> None:
        from .critic import check_image_size
        from .images import bit_depth, read_image
        from .settings import match_channels, pick_model, resolve

        y = read_image(path)
        self.model, space = pick_model(y, args.model, args.task, args.sigma, args.clipped, args.per_channel,
                                       args.color_space, models)
        opponent = space == "opponent"
        self.y = match_channels(self.model, y, args.per_channel or opponent, path.name)
        self.physics = physics
        self.physics.check_measurement(self.y)
        check_image_size(physics.A_adjoint(self.y), self.model.receptive_field)  # the image the solver sees
        self.bits = bit_depth(path)  # a 16-bit input gets a 16-bit output (PNG)
        self.settings = resolve(self.model, self.y, args.task, args.sigma, args.lam, clipped=args.clipped,
                                method=args.method, iters=args.iters, concavity=args.concavity,
                                boundary=args.boundary, symmetric=args.symmetric,
                                per_channel=args.per_channel or opponent, color_space=space,
                                max_memory=args.max_memory, device=args.device, name=path.name)
        for note in self.settings.notes:
            say(note)
        self.path, self.out = path, out

    def group(self) -> tuple:
        """Jobs with equal keys are solved together, as one batch."""
        return (tuple(self.y.shape), id(self.model), self.settings.batch_key())


def _solve(jobs: list[_Job], args, say) -> None:
    """Restore a batch of jobs of one group in one solve; write each output atomically."""
    from .critic import Regularizer
    from .device import memory_cap
    from .images import write_image
    from .solver import solve

    j0 = jobs[0]
    s0 = j0.settings
    y = torch.cat([j.y for j in jobs])
    tile = Regularizer(j0.model, s0.per_channel, s0.max_memory).tile_size(y)
    short = args.max_memory is not None or s0.max_memory < memory_cap(args.device)  # not the routine CPU tiling
    if tile and short and not all(j.settings.skip for j in jobs):
        say(f"{j0.path.name}: {y.shape[-1]}x{y.shape[-2]} solved in tiles of {tile}x{tile} pixels to stay within "
            f"{s0.max_memory / 2 ** 20:.0f} MiB of activations (--max-memory)")
    t0 = time.perf_counter()
    if s0.color_space == "opponent":  # each channel of the opponent space is its own gray problem
        from .solver import restore_opponent, unchanged
        x = torch.cat([unchanged(j.y, "cpu") if j.settings.skip else restore_opponent(
            j.y, j0.model, j.settings.sigma, args.lam, method=args.method, iters=args.iters, concavity=args.concavity,
            boundary=args.boundary, symmetric=args.symmetric, max_memory=s0.max_memory, device=args.device,
            progress=not args.quiet).cpu() for j in jobs])
    else:
        x, _ = solve(y, j0.physics, j0.model, [j.settings for j in jobs], args.device, progress=not args.quiet)
    dt = time.perf_counter() - t0
    for j, xi in zip(jobs, x):
        write_image(j.out, xi[None], bits=j.bits)
        what = "returned unchanged" if j.settings.skip else (
            f"{j.settings.describe()}, {dt:.1f} s"
            + (f" for a batch of {len(jobs)}" if len(jobs) > 1 else ""))
        say(f"{j.path.name} -> {j.out} ({what})")


def _restore_folder(files: list[Path], dst: Path, args, physics, models: dict, say, batch: int) -> None:
    """Stream a folder: images of equal shape and settings are solved together, ``batch`` at most.

    An image that cannot be restored (unreadable, wrong size or channels, no noise level) is
    reported on one line and skipped; the others are restored, and the run then fails with the
    count (a rerun restores only the missing outputs)."""
    from tqdm.auto import tqdm

    from .errors import AlrError, one_line

    pending: dict[tuple, list[_Job]] = {}
    failed: list[str] = []
    bar = tqdm(total=len(files), desc="images", unit="img", disable=args.quiet)

    def flush(jobs: list[_Job]) -> None:  # a solve that fails (diverged, out of memory) costs its batch only
        try:
            _solve(jobs, args, say)
        except (AlrError, FloatingPointError, torch.OutOfMemoryError) as e:
            names = [j.path.name for j in jobs]
            print(f"alr: error: {', '.join(names)}: {one_line(e)} (skipped)", file=sys.stderr)
            failed.extend(names)
        bar.update(len(jobs))

    for f in files:
        try:
            job = _Job(f, dst / f.name, args, physics, models, say)
        except AlrError as e:  # it names the image
            print(f"alr: error: {one_line(e)} (skipped)", file=sys.stderr)
            failed.append(f.name)
            bar.update(1)
            continue
        group = pending.setdefault(job.group(), [])
        group.append(job)
        if len(group) >= batch:
            flush(pending.pop(job.group()))
        while sum(map(len, pending.values())) >= 4 * batch:  # bound the images held in memory
            flush(pending.pop(max(pending, key=lambda k: len(pending[k]))))
    for key in list(pending):
        flush(pending.pop(key))
    bar.close()
    if failed:
        raise AlrError(f"{len(failed)} of {len(files)} images could not be restored ({', '.join(failed[:3])}"
                       f"{', ...' if len(failed) > 3 else ''}); the others are in {dst}")


# ---------------------------------------------------------------------------- commands
def _training_outputs(args, folders: list) -> tuple[Path, Path]:
    """The model file and log of ``alr train`` / ``alr finetune``, checked before any work: neither
    they nor the checkpoint may replace the ``--init`` model or land inside an input folder."""
    from .files import check_output
    from .pretrained import resolve

    out = Path(args.output)
    log = Path(args.log or (out.with_suffix(".csv") if out.suffix == ".safetensors" else f"{out}.csv"))
    inputs = [args.init and resolve(args.init)]
    for option, path in (("-o", out), ("-o", f"{out}.ckpt"), ("--log", log)):
        check_output(path, inputs, folders, option)
    if log.resolve() in (out.resolve(), Path(f"{out}.ckpt").resolve()):
        raise ValueError(f"--log {log} is also the model file or its checkpoint: give another file")
    return out, log


def cmd_train(args) -> None:
    """``alr train``: train a critic, save it, and calibrate its denoising lambda (unless --no-calibrate)."""

    from .train import TrainOptions, train_folder

    out, log = _training_outputs(args, [args.clean, args.degraded, args.val])
    options = TrainOptions(**{f.name: getattr(args, f.name) for f in fields(TrainOptions)})
    t0 = time.perf_counter()
    critic = train_folder(options, out, log, resume=args.resume, calibrate=not args.no_calibrate,
                          progress=not args.quiet)
    rank, world = (torch.distributed.get_rank(), torch.distributed.get_world_size()) \
        if torch.distributed.is_initialized() else (0, 1)
    if rank == 0:
        done = critic.meta["training"]
        print(f"trained {done['steps']} steps in {time.perf_counter() - t0:.0f} s on {world} process(es): {out} "
              f"(log {log})")
        if "selected" in done:
            sel = done["selected"]
            final = sel.get("final")
            print(f"kept the critic of step {sel['step']}: {_db(sel['val_psnr'])} on the validation crops at sigma "
                  f"{sel['sigma']:g} (lambda {sel['val_lambda']:.3g})"
                  + (f"; the best of {len(final['candidates'])} checks judged again on {final['images']}: "
                     f"{_db(final['psnr'])}" if final else ""))
        if done.get("paused"):
            print(_paused(out, done.get("steps_left", 1)))
        fit = critic.meta.get("scale_fit", {}) if options.fit_scale and not done.get("paused") else {}
        if fit.get("kept"):
            print(f"fitted the input scale e^s = {math.exp(critic.log_scale):.4g} and weight e^a = "
                  f"{math.exp(critic.log_weight):.4g} at sigma {fit['sigma']:g}: {_db(fit['val_psnr_before'])} -> "
                  f"{_db(fit['val_psnr_after'])} on the validation crops")
        elif fit:
            print(f"the input scale and weight fit was not kept: {_db(fit['val_psnr_after'])} on the validation "
                  f"crops with it, {_db(fit['val_psnr_before'])} without")
        if "denoise" in critic.meta.get("lambda", {}):
            sigmas = critic.meta["lambda"]["denoise"]["sigma"]
            print(f"calibrated lambda for denoising at sigma {', '.join(f'{s:g}' for s in sigmas)} on crops of "
                  f"{Path(args.clean).name}: alr restore --model {out} works without --lam")
    if world > 1:  # leave together: a rank tearing gloo down while rank 0 still saves can abort
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()
        # Everything is written now. torch's gloo teardown can still abort a worker while the
        # interpreter shuts down (std::terminate after the atexit handlers, about 1 run in 25 of
        # tests/test_distributed.py), which torchrun reports as a failed run: end the worker here.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)


def cmd_finetune(args) -> None:
    """``alr finetune``: bilevel fine-tuning of a critic on clean images (:mod:`alr.finetune`)."""
    from .finetune import FinetuneConfig, finetune_folder

    cfg = FinetuneConfig(sigma=args.sigma, steps=args.steps, batch_size=args.batch_size, crop=args.crop,
                         lr0=args.lr0, lr1=args.lr1, fit_scale=args.fit_scale, method=args.method, iters=args.iters,
                         tol=args.tol, boundary=args.boundary, val_every=args.val_every, seed=args.seed,
                         ckpt_every=args.ckpt_every, max_seconds=args.max_seconds, stop_after=args.stop_after,
                         device=args.device)
    out, log = _training_outputs(args, [args.clean, args.val])
    t0 = time.perf_counter()
    critic = finetune_folder(args.init, args.clean, cfg, out, lam=args.lam, holdout=args.val_images, val_dir=args.val,
                             max_images=args.max_images, calibrate=not args.no_calibrate, resume=args.resume,
                             log_csv=log, progress=not args.quiet)
    done = critic.meta["finetune"]
    sel = done.get("selected")
    print(f"fine-tuned {done['steps']} steps in {time.perf_counter() - t0:.0f} s at lambda {done['lam']:.3g}: {out} "
          f"(log {log})" + (f"; kept step {sel['step']}, {_db(sel['val_psnr'])} on the validation crops" if sel else ""))
    if done.get("paused"):
        print(_paused(out, done.get("steps_left", 1)))


def _db(psnr: float | None) -> str:
    """A recorded validation PSNR (None: every solve diverged)."""
    return "n/a (the solve diverged)" if psnr is None else f"{psnr:.2f} dB"


def _paused(out: Path, steps_left: int = 1) -> str:
    """What a run paused by --stop-after says: with steps left, or with only the end of the run left."""
    what = "with steps left" if steps_left else "with every step done, before the end of the run"
    return (f"paused by --stop-after {what} ({out} holds the best critic so far, not calibrated): "
            f"the same command with --resume goes on from {out}.ckpt")


def cmd_restore(args) -> None:
    """``alr restore``: restore one image file, or every image of a folder (resumable)."""
    from .device import resolve_device
    from .files import check_output_folder, new_folder
    from .images import image_output, list_images
    from .pretrained import load, unfinished

    args.device = str(resolve_device(args.device))  # once, for every batch: the GPU when there is one
    say = (lambda s: None) if args.quiet else (lambda s: print(s, file=sys.stderr))
    check_task_options(args)
    src, dst = Path(args.input), Path(args.output)
    others = [args.kernel, args.mask, args.model]  # inputs besides the images: never overwritten either
    folder = src.is_dir()
    if folder:
        check_output_folder(dst, [src])
        files = list_images(src)
        if args.shard:
            i, n = args.shard
            files = files[i::n]
        for f in files:
            image_output(dst / f.name, others)
    elif src.is_file():
        given = [o for o, v in (("--shard", args.shard), ("--batch-size", args.batch_size),
                                ("--overwrite", args.overwrite)) if v]
        if given:
            raise ValueError(f"{', '.join(given)}: for restoring a folder, and {src} is a file")
        image_output(dst, [src, *others])
    else:
        raise FileNotFoundError(f"no such file or folder: {src}")
    # what every image shares is read once: a bad --model, --kernel or --mask fails here, not per image
    models = {args.model: load(args.model)} if args.model else {}
    for name, m in models.items():
        if unfinished(m):
            say(f"note: {name} is {unfinished(m)}")
    physics = make_physics(args.task, args)
    if not folder:
        _solve([_Job(src, dst, args, physics, models, say)], args, say)
        return
    with new_folder(dst):
        todo = [f for f in files if args.overwrite or not (dst / f.name).exists()]
        say(f"{len(files) - len(todo)} of {len(files)} outputs exist already; restoring {len(todo)}")
        _restore_folder(todo, dst, args, physics, models, say, args.batch_size or FOLDER_BATCH)


def cmd_degrade(args) -> None:
    """``alr degrade``: make a degraded test input (noise, blur, mask, downsampling) from a clean image."""
    from . import physics as ph
    from .data import add_noise
    from .images import FLOAT_EXTENSIONS, image_output, read_image, write_image

    check_task_options(args)
    out = image_output(args.output, [args.input, args.kernel])
    if args.seed is None:
        args.seed = zlib.crc32(Path(args.input).name.encode()) % 2 ** 31
    if args.task == "inpaint":
        if args.mask_out is None:
            raise ValueError("--task inpaint needs --mask-out FILE to save the mask")
        if Path(args.mask_out).resolve() == out.resolve():
            raise ValueError(f"--mask-out {args.mask_out} is also -o: give two files")
        image_output(args.mask_out, [args.input, args.kernel], option="--mask-out")
    x = read_image(args.input)
    if args.task == "inpaint":
        m = ph.random_mask(tuple(x.shape[-2:]), MISSING if args.missing is None else args.missing, args.seed)
        physics = ph.Inpainting(m)
    elif args.task == "sr":
        k = args.factor or SR_FACTOR
        h, w = x.shape[-2] // k * k, x.shape[-1] // k * k
        if not h or not w:
            raise ValueError(f"--factor {k} is larger than the image {args.input} ({x.shape[-1]}x{x.shape[-2]})")
        if (h, w) != tuple(x.shape[-2:]):
            print(f"note: cropped to {h}x{w}, a multiple of the factor {k}", file=sys.stderr)
        x = x[..., :h, :w]
        physics = ph.Downsampling(k)
    else:
        physics = make_physics(args.task, args)
    y = add_noise(physics.A(x), args.sigma, args.seed, clip=args.clip)
    if not torch.isfinite(y).all():
        raise ValueError(f"--sigma {args.sigma:g} overflows single precision: the output would not be finite")
    if out.suffix.lower() not in FLOAT_EXTENSIONS and not args.clip:
        outside = float(((y < 0) | (y > 1)).float().mean())
        print(f"note: {out.suffix} stores 8-bit values in [0, 1]: {outside:.1%} of the values were clipped and all "
              f"were quantised; the noise is then no longer Gaussian (write .npy or .tif to keep it exact)",
              file=sys.stderr)
    write_image(out, y)
    if args.task == "inpaint":
        try:
            write_image(args.mask_out, physics.mask[0])
        except BaseException:  # an inpainting input without its mask is of no use: leave neither
            out.unlink(missing_ok=True)
            raise
    print(f"wrote {out} ({args.task}, sigma {args.sigma}, seed {args.seed})")


def cmd_info(args) -> None:
    """``alr info``: a model's summary, or its raw metadata with --json."""
    from .pretrained import describe, load, resolve
    m = load(args.model)
    if args.json:
        print(json.dumps({"file": str(resolve(args.model)), "config": m.config(),
                          "receptive_field": m.receptive_field,
                          "parameters": sum(p.numel() for p in m.parameters()), "meta": m.meta}, indent=2))
    else:
        print(describe(m, str(args.model)))


def cmd_demo(args) -> None:
    """``alr demo``: restore a noisy sample image with the shipped model (:mod:`alr.demo`)."""
    from .demo import run_demo
    run_demo(args.output)


def _threads() -> None:
    """Apply ``ALR_THREADS`` (the CPU threads torch may use), if set."""
    text = os.environ.get("ALR_THREADS")
    if text:
        n = int(text) if text.strip().isdecimal() else 0
        if not 1 <= n <= 2 ** 16:
            raise ValueError(f"ALR_THREADS must be a whole number in [1, 65536], got {text!r}")
        torch.set_num_threads(n)


def main(argv: list[str] | None = None) -> int:
    """Run the ``alr`` command; returns the exit status (0, 2 for an error printed as one line, 130 if interrupted)."""
    from . import device
    from .errors import AlrError, one_line

    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["bench"]:  # the paper's experiments parse their own options
        from .bench.experiments import bench_parser, cmd_bench
        args, handler = bench_parser().parse_args(argv[1:]), cmd_bench
    else:
        args = build_parser().parse_args(argv)
        handler = {"train": cmd_train, "finetune": cmd_finetune, "restore": cmd_restore, "degrade": cmd_degrade,
                   "info": cmd_info, "demo": cmd_demo}[args.command]
    try:
        _threads()
        if handler in (cmd_train, cmd_finetune):  # one long computation: glibc may keep what it frees
            device.keep_freed_memory()
        handler(args)
    except (AlrError, FileNotFoundError, ValueError, KeyError, RuntimeError, FloatingPointError, OSError) as e:
        print(f"alr: error: {one_line(e)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as e:
        print(f"alr: interrupted: {one_line(e)}" if str(e) else "alr: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
