"""The paper's experiments, one command each: ``alr bench NAME -o DIR [--quick]``.

* ``calibrate``: fit a model's lambda tables (denoising over sigma, deblurring,
  inpainting, x2 SR) on training-side images (set12 / cbsd432 crops) and write a
  copy of the model that holds them.
* ``table1``: critics trained at sigma 0.05, 0.1, 0.2, 0.4 and on U[0, 0.4],
  each tested at 0.05 ... 0.4 (paper Table 1).
* ``table2``: BSD68 (``--color``: CBSD68) denoising at 0.1 / 0.2 / 0.4, ALR vs
  EPLL vs BM3D vs TV, PSNR / SSIM / LPIPS / seconds (paper Table 2), under
  ``--protocol paper`` (noisy input clipped to [0, 1]) or ``standard``; method
  ``alr-clipped`` is ALR with the censored data term of :mod:`alr.fidelity`, which
  models the clipping (paper protocol only); ``bm3d-channels`` is grayscale BM3D on
  each colour channel alone (the paper's BM3D setting as docs/results.md reads it);
  ``alr-opponent`` (colour) is the gray model in the opponent colour space
  (:func:`alr.solver.restore_opponent`).
* ``histogram``: critic values on clean and noisy patches (paper Fig. 3).
* ``deblur``, ``inpaint``, ``sr``: ALR against the baselines that apply.
* ``toy``: the circle of Fig. 1.
* ``real``: real noise of unknown law (rni15, no reference): a critic trained on clean
  cbsd432 patches against two thirds of rni15, used on the held-out third, beside the
  Gaussian-trained ``color`` model and CBM3D at the estimated noise level.

Every run writes ``results.md``, ``results.csv``, PNG figures and ``run.json``
(command, versions, seed, timings). ``--quick`` runs the same code on 4 images
cropped to 96x96 with short schedules, for the test suite.
"""
from __future__ import annotations

import argparse
import csv
import json
import math
import platform
import sys
import time
from pathlib import Path

import torch
from tqdm.auto import tqdm

from .. import __version__, argtypes
from ..calibration import (BLUR_STD, alr_options, calibrate_lambda, calibrate_tables, center_crop,
                           denoise_start, score_reference)
from ..data import add_noise
from ..device import resolve_device
from ..errors import AlrError
from ..fidelity import ClippedGaussian
from ..files import check_output
from ..images import data_root, figure_panels, list_images, pyplot, read_image, write_image
from ..metrics import LPIPS, psnr, ssim
from ..modelfile import load_model, portable_path, save_model
from ..physics import Blur, Denoising, Downsampling, Inpainting, gaussian_kernel, random_mask
from ..pretrained import lam_for, load, resolve
from ..solver import minimize

EPLL_DIR = Path(__file__).parent / "models"  # the EPLL baseline's Gaussian mixtures
TABLE2_METHODS = ("alr", "alr-clipped", "alr-opponent", "bm3d", "bm3d-channels", "epll", "tv")
#: The methods each restoration table can run (another is refused, not dropped), and the default.
TASK_METHODS = {"table2": TABLE2_METHODS, "deblur": ("alr", "bm3d", "epll", "tv"), "inpaint": ("alr", "tv"),
                "sr": ("alr", "tv")}
DEFAULT_METHODS = ("alr", "bm3d", "epll", "tv")

EXPERIMENTS = ("calibrate", "table1", "table2", "histogram", "deblur", "inpaint", "sr", "toy", "real")


def bench_parser() -> argparse.ArgumentParser:
    """The options of ``alr bench NAME``."""
    b = argparse.ArgumentParser(prog="alr bench", description="Reproduce an experiment of the paper.")
    b.set_defaults(command="bench")
    b.add_argument("name", choices=EXPERIMENTS)
    b.add_argument("-o", "--output", required=True, help="output folder")
    b.add_argument("--quick", action="store_true", help="4 images cropped to 96x96, short schedules")
    b.add_argument("--data", default=None, help="data folder (default: $ALR_DATA)")
    b.add_argument("--model", default=None, help="model (default: gray, or color with --color; real: a critic "
                                                  "trained on rni15, default: train one)")
    b.add_argument("--models", default=None, help="table1: folder of trained critics to reuse")
    b.add_argument("--color", action="store_true")
    b.add_argument("--protocol", choices=("paper", "standard", "both"), default=None,
                   help="table2: clipped noisy inputs (paper), unclipped (standard) or both (default); the other "
                        "tables run the standard protocol only")
    b.add_argument("--methods", default=None,
                   help=f"comma-separated (default {','.join(DEFAULT_METHODS)}, those the table can run), from "
                        f"{','.join(TABLE2_METHODS)}; deblur: alr,bm3d,epll,tv; inpaint and sr: alr,tv "
                        "(alr-clipped: paper protocol only; "
                        "bm3d-channels: grayscale BM3D on each colour channel alone; alr-opponent, --color: the "
                        "gray model in the opponent colour space)")
    b.add_argument("--sigmas", default=None,
                   help="comma-separated noise levels, numbers or fractions: 0.1,0.2 or 15/255,25/255,50/255 (the "
                        "literature's convention: the tables then also give sigma x 255)")
    b.add_argument("--tasks", default=None, help="calibrate: tasks to calibrate (default: all)")
    b.add_argument("--steps", type=argtypes.positive_int, default=20000, help="table1, real: training steps per critic")
    b.add_argument("--iters", type=argtypes.positive_ints, default=None,
                   help="calibrate: candidate solver iteration counts (comma-separated); per noise level the "
                        "best (iterations, lambda) pair is recorded in the model copy's table")
    b.add_argument("--concavity", type=argtypes.positive_floats, default=None,
                   help="calibrate: candidate concavities of the patch-score shaping (comma-separated, 0: the "
                        "paper's R); the best per noise level is recorded with lambda and the iterations")
    b.add_argument("--cal-images", type=argtypes.positive_int, default=CAL_IMAGES,
                   help=f"calibrate: centre crops {CAL_CROP}x{CAL_CROP} of the first N images of set12 / cbsd432 "
                        f"(default {CAL_IMAGES}; more: a less noisy choice, proportionally slower)")
    b.add_argument("--calibrate-each", action="store_true",
                   help="table1: calibrate lambda for each critic (default: one shared table, as the paper)")
    b.add_argument("--symmetric", action="store_true",
                   help="table2 / deblur / inpaint / sr: ALR with R averaged over the 8 flips and quarter turns")
    b.add_argument("--max-images", type=argtypes.positive_int, default=None, help="only the first N test images")
    b.add_argument("--sets", default="set12,bsd68", help="deblur: test sets to run")
    b.add_argument("--device", type=argtypes.device, default=None, help=argtypes.DEVICE_HELP)
    b.add_argument("--seed", type=int, default=0)
    return b


# ----------------------------------------------------------------------------- helpers
def _number(text: str) -> float:
    """A number or a fraction: ``0.1``, ``25/255``."""
    num, _, den = text.partition("/")
    return float(num) / float(den) if den else float(num)


def _sigmas(args, default: list[float]) -> list[float]:
    """Noise levels of ``--sigmas`` (comma-separated numbers or fractions such as ``25/255``), else ``default``."""
    if not args.sigmas:
        return default
    try:
        vals = [_number(v) for v in args.sigmas.split(",")]
    except (ValueError, ZeroDivisionError):
        raise ValueError(f"--sigmas must be comma-separated numbers or fractions (25/255), got {args.sigmas!r}") from None
    if any(not 0 <= v < 1 for v in vals):
        raise ValueError(f"--sigmas must lie in [0, 1), got {args.sigmas!r}")
    return vals


QUICK_CROP = 96
CAL_CROP, CAL_IMAGES = 128, 4


def _images(folder: Path, channels: int, quick: bool, max_images: int | None = None) -> list[tuple[str, torch.Tensor]]:
    files = list_images(folder)
    n = 4 if quick else max_images
    files = files[:n] if n else files
    out = []
    for f in files:
        x = read_image(f, channels)
        out.append((f.stem, center_crop(x, QUICK_CROP) if quick else x))
    return out


def _methods(args) -> list[str]:
    """Methods of ``--methods`` (comma-separated; default :data:`DEFAULT_METHODS`), each one the
    table can run (:data:`TASK_METHODS`)."""
    if args.name not in TASK_METHODS and args.methods is not None:
        raise ValueError(f"--methods is an option of table2, deblur, inpaint and sr, not of {args.name}")
    allowed = TASK_METHODS.get(args.name, TABLE2_METHODS)
    if args.methods is None:
        return [m for m in DEFAULT_METHODS if m in allowed]
    methods = [m for m in args.methods.split(",") if m]
    unknown = [m for m in methods if m not in allowed]
    if unknown:
        raise ValueError(f"--methods: unknown method {unknown[0]!r} for {args.name}; choose from {', '.join(allowed)}")
    if "alr-opponent" in methods and not args.color:
        raise ValueError("--methods alr-opponent denoises colour images: add --color")
    if "alr-clipped" in methods and args.protocol == "standard":
        raise ValueError("--methods alr-clipped models clipped inputs: it runs under --protocol paper (or both)")
    return methods


def _protocols(args) -> list[str]:
    """The protocols of ``--protocol``: table2 both by default; deblur, inpaint and sr the standard one
    only; the other experiments have none."""
    if args.name == "table2":
        return ["paper", "standard"] if args.protocol in (None, "both") else [args.protocol]
    if args.name not in TASK_METHODS and args.protocol is not None:
        raise ValueError(f"--protocol is an option of table2, deblur, inpaint and sr, not of {args.name}")
    if args.protocol not in (None, "standard"):
        raise ValueError(f"--protocol {args.protocol}: {args.name} runs the standard protocol only (noise not clipped)")
    return ["standard"]


def _seed(name: str, sigma: float, base: int) -> int:
    """Per-image noise seed: every method sees the same noisy input."""
    return (base * 1000003 + sum(ord(c) * 31 ** i for i, c in enumerate(name)) + int(sigma * 1e4)) % (2 ** 31)


def _alr_batched(ys: list[torch.Tensor], phys: list, model, lam: float, device,
                 opts: dict, bar=None) -> list[tuple[torch.Tensor, float]]:
    """ALR (``restore`` with options ``opts``) on a list of inputs, batching those of equal shape
    and operator type (one solve each); ``bar`` (a progress bar) advances by the images solved."""
    out: list = [None] * len(ys)
    groups: dict = {}
    for i, (y, p) in enumerate(zip(ys, phys)):
        if isinstance(p, (Denoising, Blur, Downsampling)):
            groups.setdefault((tuple(y.shape), type(p).__name__), []).append(i)
        else:
            groups[("single", i)] = [i]
    per = 16 if str(device).startswith("cuda") else 1
    for idx in groups.values():
        for start in range(0, len(idx), per):
            chunk = idx[start:start + per]
            t0 = time.perf_counter()
            xh = minimize(torch.cat([ys[i] for i in chunk]), phys[chunk[0]], model, lam, device=device,
                         **opts)[0].cpu()
            dt = (time.perf_counter() - t0) / len(chunk)
            for j, i in enumerate(chunk):
                out[i] = (xh[j:j + 1], dt)
            if bar is not None:
                bar.update(len(chunk))
    return out


class Table:
    """Rows of results written as CSV and Markdown."""

    def __init__(self) -> None:
        self.rows: list[dict] = []

    def add(self, **row) -> None:
        self.rows.append(row)

    def write(self, out: Path, title: str, pivot: tuple[str, str, str] | None = None) -> str:
        out.mkdir(parents=True, exist_ok=True)
        keys = list(dict.fromkeys(k for r in self.rows for k in r))
        with open(out / "results.csv", "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=keys)
            w.writeheader()
            w.writerows(self.rows)
        md = [f"# {title}", ""]
        if pivot:
            md += _pivot_md(self.rows, *pivot)
        else:
            md += ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
            md += ["| " + " | ".join(_fmt(r.get(k, "")) for k in keys) + " |" for r in self.rows]
        text = "\n".join(md) + "\n"
        (out / "results.md").write_text(text)
        return text


def _fmt(v) -> str:
    return f"{v:.4g}" if isinstance(v, float) and not math.isnan(v) else str(v)


def _pivot_md(rows, row_key, col_key, val_key) -> list[str]:
    rk = list(dict.fromkeys(r[row_key] for r in rows))
    ck = list(dict.fromkeys(r[col_key] for r in rows))
    cell = {(r[row_key], r[col_key]): r[val_key] for r in rows}
    lines = [f"| {row_key} \\ {col_key} | " + " | ".join(str(c) for c in ck) + " |", "|---" * (len(ck) + 1) + "|"]
    for k in rk:
        lines.append(f"| {k} | " + " | ".join(_fmt(cell.get((k, c), "")) for c in ck) + " |")
    return lines


def _run_json(out: Path, args, timings: dict, extra: dict | None = None) -> None:
    info = {"command": "alr " + " ".join(sys.argv[1:]) if sys.argv and "alr" in sys.argv[0] else " ".join(sys.argv),
            "experiment": args.name, "quick": args.quick, "seed": args.seed, "alr": __version__,
            "torch": torch.__version__, "python": platform.python_version(), "machine": platform.platform(),
            "device": args.device,
            "timings_s": timings, **(extra or {})}
    (out / "run.json").write_text(json.dumps(info, indent=2))


# ----------------------------------------------------------------------------- calibration
def calibration_crops(folder: Path, channels: int, quick: bool, images: int = CAL_IMAGES,
                      crop: int = CAL_CROP) -> torch.Tensor:
    """Centre crops ``crop x crop`` of the first ``images`` images of ``folder``, as one batch
    (by default the calibration images, 4 crops 128x128; quick: at most 2 crops, 48x48)."""
    crop, images = (48, min(images, 2)) if quick else (crop, images)
    xs = [center_crop(xi, crop) for _, xi in _images(folder, channels, False, images)]
    return torch.cat(xs)


def cmd_calibrate(args, out: Path) -> str:
    """Lambda tables of a model on set12 (gray) or cbsd432 (color) crops, written to a model copy."""
    root = data_root(args.data)
    name = args.model or ("color" if args.color else "gray")
    target = check_output(out / f"{Path(name).stem}.safetensors", [resolve(name)])  # never over the model read
    model = load(name)
    folder = root / ("cbsd432" if model.in_channels == 3 else "set12")
    x = calibration_crops(folder, model.in_channels, args.quick, images=args.cal_images)
    sigmas = _sigmas(args, []) or None
    rows = calibrate_tables(model, x, args.tasks.split(",") if args.tasks else None, sigmas, args.iters,
                            args.concavity, args.quick, args.device, folder.name, progress=True)
    model.meta["lambda_calibration"] = "alr bench calibrate: " + model.meta["lambda_calibration"]
    tbl = Table()
    for r in rows:
        tbl.add(**r)
    save_model(model, target)
    text = tbl.write(out, f"Lambda calibration of {name} (model with the tables: {target})")
    _run_json(out, args, {}, {"model": str(name), "images": folder.name})
    return text


# ----------------------------------------------------------------------------- table 2 and friends
def _baseline(method: str, y, physics, sigma, ctx):
    from .baselines import bm3d_restore, epll_restore, tv_restore
    if method in ("bm3d", "bm3d-channels"):
        return bm3d_restore(y, sigma, physics, per_channel=method == "bm3d-channels")
    if method == "epll":
        return epll_restore(y.to(ctx["device"]), physics, sigma, ctx["gmm"]).cpu()
    if method == "alr-opponent":
        from ..solver import restore_opponent
        return restore_opponent(y, "gray", sigma, device=ctx["device"]).cpu()
    if method == "tv":
        return tv_restore(y.to(ctx["device"]), physics, ctx["tv_lam"](sigma),
                          iters=100 if ctx["quick"] else ctx["tv_iters"]).cpu()
    raise ValueError(method)


# primal-dual iterations of TV per task, enough to reach the minimiser (energy within 0.01% of
# 10,000 iterations on set12 `01`); inpainting fills its holes by diffusion, which takes longer
TV_ITERS = {"denoise": 300, "deblur": 1000, "inpaint": 1000, "sr": 1000}


def tv_lambda(sigma: float, task: str = "denoise") -> float:
    """TV weight (for the sum-form energy) tuned on set12 crops: about 0.6 sigma for denoising."""
    return (0.6 if task == "denoise" else 0.2) * sigma


def _gmm(ctx, channels: int, root: Path):
    from .baselines import GMM, fit_gmm_from_folder
    cache = Path(ctx["out"]).parent / f"epll_gmm_{channels}ch{'_quick' if ctx['quick'] else ''}.safetensors"
    shipped = EPLL_DIR / f"epll_gmm_{channels}ch.safetensors"
    if shipped.is_file() and not ctx["quick"]:
        return GMM.load(shipped)
    if cache.is_file():
        return GMM.load(cache)
    folder = root / ("cbsd432" if channels == 3 else "bsd400")
    if ctx["quick"]:
        return fit_gmm_from_folder(folder, channels, cache, n_patches=5000, k=5, iters=5)
    return fit_gmm_from_folder(folder, channels, cache)


def run_restoration_table(args, out: Path, task: str, folder: Path, sigmas: list[float], physics_for,
                          methods: list[str], protocols: list[str], title: str) -> str:
    """Common harness: every method on the same seeded inputs; rows per image."""
    root = data_root(args.data)
    name = args.model or ("color" if args.color else "gray")
    model = load(name)
    ch = model.in_channels
    images = _images(folder, ch, args.quick, args.max_images)
    ctx = {"device": args.device, "quick": args.quick,
           "out": out, "tv_lam": lambda s: tv_lambda(s, task), "tv_iters": TV_ITERS[task]}
    if "epll" in methods:
        ctx["gmm"] = _gmm(ctx, ch, root)
    out.mkdir(parents=True, exist_ok=True)
    lp = LPIPS()
    rows, timings = [], {}
    for proto in protocols:
        for s in sigmas:
            phys = [physics_for(x) for _, x in images]
            ys = [add_noise(p.A(x), s, seed=_seed(n, s, args.seed), clip=proto == "paper")
                  for p, (n, x) in zip(phys, images)]
            # the censored data term models the clipping, so it only runs where the inputs were clipped
            active = ["input"] + [m for m in methods if m != "alr-clipped" or proto == "paper"]
            results: dict[str, list[tuple[torch.Tensor, float]]] = {}
            for m in active:
                with tqdm(total=len(images), desc=f"{task} {proto} sigma {s:g}: {m}", unit="image",
                          disable=m == "input", dynamic_ncols=True) as bar:
                    if m in ("alr", "alr-clipped"):
                        clipped = m == "alr-clipped"
                        opts = {**alr_options(model, task, args.quick, s, clipped),
                                "fidelity": ClippedGaussian(s) if clipped else None, "symmetric": args.symmetric}
                        results[m] = _alr_batched(ys, phys, model, lam_for(model, task, s, clipped), ctx["device"],
                                                  opts, bar)
                        continue
                    res = []
                    for p, y in zip(phys, ys):
                        t0 = time.perf_counter()
                        xh = p.init(y).clamp(0, 1) if m == "input" else _baseline(m, y, p, s, ctx)
                        res.append((xh, time.perf_counter() - t0))
                        bar.update(1)
                    results[m] = res
            for i, (n, x) in enumerate(images):
                panels = []
                for m in active:
                    xh, dt = results[m][i]
                    timings.setdefault(m, []).append(dt)
                    # a noisy input is measured as it is (noise beyond [0, 1] kept unless the protocol
                    # clipped it), as denoising papers report it; restorations and starting points in [0, 1]
                    raw = m == "input" and task == "denoise"
                    xm = ys[i] if raw else xh
                    row = {"protocol": proto, "sigma": s, "image": n, "method": m,
                           "psnr": float(psnr(xm, x, clamp=not raw)), "ssim": float(ssim(xm, x, clamp=not raw)),
                           "lpips": float(lp(xh, x)) if lp.available else float("nan"), "seconds": dt}
                    rows.append(row)
                    panels.append((f"{m} {row['psnr']:.2f} dB", xh))
                if i == 0:
                    figure_panels(out / f"{task}_{proto}_sigma{s:g}.png", panels + [("clean", x)])
            # written after every noise level, so an interrupted run keeps what it measured
            text = _write_restoration_table(out, rows, title, lp, args, timings,
                                            {"images": [n for n, _ in images], "model": name})
    return text


def _write_restoration_table(out: Path, rows: list[dict], title: str, lp, args, timings: dict, extra: dict) -> str:
    """per_image.csv, results.md/csv (means per protocol, sigma and method) and run.json."""
    with open(out / "per_image.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    tbl = Table()
    for key in dict.fromkeys((r["protocol"], r["sigma"], r["method"]) for r in rows):
        rs = [r for r in rows if (r["protocol"], r["sigma"], r["method"]) == key]
        per255 = {"sigma_255": float(f"{key[1] * 255:.4g}")} if args.sigmas and "/" in args.sigmas else {}
        tbl.add(protocol=key[0], sigma=key[1], **per255, method=key[2], images=len(rs),
                psnr=sum(r["psnr"] for r in rs) / len(rs), ssim=sum(r["ssim"] for r in rs) / len(rs),
                lpips=(sum(r["lpips"] for r in rs) / len(rs)) if lp.available else "n/a",
                seconds_per_image=sum(r["seconds"] for r in rs) / len(rs))
    text = tbl.write(out, title)
    if not lp.available:
        text += f"\nLPIPS: n/a ({lp.reason}).\n"
        (out / "results.md").write_text(text)
    _run_json(out, args, {m: sum(v) for m, v in timings.items()}, {**extra, "lpips": lp.available or lp.reason})
    return text


def cmd_table2(args, out: Path) -> str:
    root = data_root(args.data)
    folder = root / ("cbsd68" if args.color else "bsd68")
    sigmas = _sigmas(args, [0.1, 0.2, 0.4])
    protocols = _protocols(args)
    methods = _methods(args)
    return run_restoration_table(args, out, "denoise", folder, sigmas, lambda x: Denoising(), methods, protocols,
                                 f"Denoising on {folder.name} (paper Table 2)")


def cmd_deblur(args, out: Path) -> str:
    root = data_root(args.data)
    blur = Blur(gaussian_kernel(BLUR_STD))
    methods = _methods(args)
    text = ""
    for folder in args.sets.split(","):
        text += run_restoration_table(args, out / folder, "deblur", root / folder, _sigmas(args, [0.01, 0.03]),
                                      lambda x: blur,
                                      methods, _protocols(args), f"Deblurring (Gaussian std {BLUR_STD}) on {folder}")
    (out / "results.md").write_text(text)
    return text


def cmd_inpaint(args, out: Path) -> str:
    root = data_root(args.data)
    return run_restoration_table(
        args, out, "inpaint", root / "set12", [0.01], lambda x: Inpainting(random_mask(tuple(x.shape[-2:]), 0.5, 0)),
        _methods(args), _protocols(args),
        "Inpainting, 50% random pixels missing, noise 0.01, set12")


def cmd_sr(args, out: Path) -> str:
    root = data_root(args.data)
    return run_restoration_table(args, out, "sr", root / "set12", [0.01], lambda x: Downsampling(2),
                                 _methods(args), _protocols(args),
                                 "x2 super-resolution, noise 0.01, set12")


# ----------------------------------------------------------------------------- table 1
def cmd_table1(args, out: Path) -> str:
    from ..critic import PatchCritic
    from ..data import Degradation, make_patch_pairs
    from ..train import TrainConfig, train_critic

    root = data_root(args.data)
    trained = {"0.05": (0.05, 0.05), "0.1": (0.1, 0.1), "0.2": (0.2, 0.2), "0.4": (0.4, 0.4), "range": (0.0, 0.4)}
    models_dir = Path(args.models) if args.models else out / "critics"
    test_sigmas = _sigmas(args, [0.1, 0.4] if args.quick else [0.05, 0.1, 0.2, 0.3, 0.4])
    cal = calibration_crops(root / "set12", 1, args.quick)  # lambda calibration / shaping reference
    # the paper uses one lambda per test sigma for every critic: the range critic's table when it has one
    range_file = models_dir / "critic_range.safetensors"
    ranged = load(range_file) if range_file.is_file() else None
    own = ranged is not None and "denoise" in ranged.meta.get("lambda", {})
    shared = ranged if own else load("gray")
    test = _images(root / "bsd68", 1, args.quick, args.max_images)
    tbl, timings = Table(), {}
    how = "calibrated for each critic on set12 crops" if args.calibrate_each else \
        f"the table of {'the range critic' if own else 'the shipped gray model'}, shared by all critics as in the paper"
    for key, (lo, hi) in trained.items():
        path = models_dir / f"critic_{key}.safetensors"
        if not path.is_file():
            t0 = time.perf_counter()
            critic = PatchCritic(1)
            pairs = make_patch_pairs(root / "bsd400", critic.receptive_field, 1, degradation=Degradation(lo, hi),
                                     seed=args.seed, max_images=40 if args.quick else None)
            steps = 30 if args.quick else args.steps
            train_critic(critic, pairs.sample, TrainConfig(steps=steps, batch_size=128, lr0=1e-3, lr1=1e-5,
                                                           seed=args.seed, device=args.device), out=path)
            Path(str(path) + ".ckpt").unlink(missing_ok=True)
            timings[f"train_{key}"] = time.perf_counter() - t0
        critic = load_model(path)
        ref = score_reference(critic, cal)  # the shared table's shaping (if any) with this critic's reference
        lams = calibrate_lambda(critic, "denoise", cal, test_sigmas, [denoise_start(s) for s in test_sigmas],
                                args.quick, args.device)[0] if args.calibrate_each else \
            [lam_for(shared, "denoise", s) for s in test_sigmas]
        for s, lam in zip(test_sigmas, lams):
            ys = [add_noise(x, s, seed=_seed(n, s, args.seed)) for n, x in test]
            opts = alr_options(critic if args.calibrate_each else shared, "denoise", args.quick, s)
            if "score_ref" in opts and not args.calibrate_each:
                opts["score_ref"] = ref
            res = _alr_batched(ys, [Denoising()] * len(ys), critic, lam, args.device, opts)
            vals = [float(psnr(xh, x)) for (xh, _), (_, x) in zip(res, test)]
            tbl.add(trained_on=key, test_sigma=s, lam=lam, psnr=sum(vals) / len(vals))
        text = tbl.write(out, f"Table 1: PSNR on {len(test)} bsd68 images of critics trained at one noise "
                              f"level or a range (lambda: {how})", pivot=("trained_on", "test_sigma", "psnr"))
        _run_json(out, args, timings)  # written after every critic: an interrupted run keeps its rows
        _plot_table1(tbl.rows, out / "table1.png")
    return text


def _plot_table1(rows: list[dict], path: Path) -> None:
    """PSNR against the test noise level, one line per training noise level (paper Table 1)."""
    plt = pyplot()

    fig, ax = plt.subplots(figsize=(6, 4))
    for key in dict.fromkeys(r["trained_on"] for r in rows):
        pts = [(r["test_sigma"], r["psnr"]) for r in rows if r["trained_on"] == key]
        ax.plot(*zip(*pts), marker="o", label=f"trained on {key}")
    ax.set_xlabel("test noise level sigma")
    ax.set_ylabel("PSNR (dB)")
    ax.grid(alpha=0.3)
    ax.legend()
    ax.set_title("Noise generalisation of the critic (paper Table 1)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


# ----------------------------------------------------------------------------- histogram, toy
def cmd_histogram(args, out: Path) -> str:
    plt = pyplot()

    from ..data import ImageStack
    root = data_root(args.data)
    model = load(args.model or "gray")
    s = model.receptive_field
    stack = ImageStack.from_folder(root / "bsd68", model.in_channels, max_images=4 if args.quick else None)
    g = torch.Generator().manual_seed(args.seed)
    n = 500 if args.quick else 20000
    clean = stack.sample(n, s, g)
    sigmas = [0.05, 0.1, 0.2, 0.4]
    tbl = Table()
    fig, ax = plt.subplots(figsize=(7, 4))
    with torch.no_grad():
        vals = {"clean": model(clean).flatten()}
        for sg in sigmas:
            vals[f"sigma {sg:g}"] = model(clean + sg * torch.randn(clean.shape, generator=g)).flatten()
    for k, v in vals.items():
        ax.hist(v.numpy(), bins=80, alpha=0.5, density=True, label=k)
        tbl.add(patches=k, mean=float(v.mean()), std=float(v.std()))
    ax.set_xlabel("critic value r(p)")
    ax.set_ylabel("density")
    ax.legend()
    ax.set_title("Critic values on clean and noisy bsd68 patches (paper Fig. 3)")
    fig.tight_layout()
    out.mkdir(parents=True, exist_ok=True)
    fig.savefig(out / "histogram.png", dpi=100)
    plt.close(fig)
    text = tbl.write(out, "Critic values on clean / noisy patches")
    _run_json(out, args, {})
    return text


def cmd_toy_bench(args, out: Path) -> str:
    from .toy import run_toy
    tbl = Table()
    for criterion in ("w1", "w2"):
        tbl.add(**run_toy(out, steps=200 if args.quick else 3000, seed=args.seed, criterion=criterion,
                          progress=False))
    text = tbl.write(out, "Toy circle: correlation of the critic with the distance d to the circle (w1) "
                          "or d^2 / 2 (w2)")
    _run_json(out, args, {})
    return text


# ----------------------------------------------------------------------------- real noise
def real_noise_split(folder: Path) -> tuple[list[Path], list[Path]]:
    """(training, held-out) images of a folder of real degraded images: every third image,
    in name order, is held out for restoration; the others are the critic's degraded side."""
    files = list_images(folder)
    held = files[2::3]
    return [f for f in files if f not in held], held


REAL_METHODS = {"color": "color (Gaussian critic)", "real": "real-noise critic", "cbm3d": "CBM3D"}


def cmd_real(args, out: Path) -> str:
    """Real noise of unknown law (rni15): no reference, so the table reports the noise level
    estimated in the input and in each restoration (:func:`alr.data.estimate_sigma`), the
    standard deviation and the mean of what each method changed, and the time; the restorations
    are written as ``IMAGE_METHOD.png`` and the figure shows centre crops."""
    from .baselines import bm3d_restore
    from ..data import ImageStack, PatchPairs, estimate_sigma
    from ..train import TrainConfig, continue_from, train_critic

    root = data_root(args.data)
    train_files, held = real_noise_split(root / "rni15")
    color = load("color")
    timings = {}
    if args.model:
        real = load(args.model)
        degraded = real.meta.get("data", {}).get("degraded")
        seen = set(degraded if isinstance(degraded, list) else [degraded])
        if "rni15" in seen or seen & {f.name for f in held}:  # trained on the photographs it would be judged on
            raise AlrError(f"--model {args.model} was trained on rni15's held-out photographs (data: {degraded}); "
                           "train it on the training split only (docs/results.md)")
    else:  # the shipped color critic, trained further against the real noisy patches
        t0 = time.perf_counter()
        real = continue_from(load("color"), "color").requires_grad_(True)
        clean = ImageStack.from_folder(root / "cbsd432", 3, max_images=8 if args.quick else None)
        real.meta.update({"data": {"clean": "cbsd432", "degraded": [portable_path(g) for g in train_files]},
                          "noise_range": None})  # real noise: no synthetic range, as `alr train --degraded`
        pairs = PatchPairs(clean, ImageStack.from_folder(root / "rni15", 3, train_files), real.receptive_field)
        train_critic(real, pairs.sample, TrainConfig(steps=20 if args.quick else args.steps, batch_size=128,
                                                     seed=args.seed, device=args.device),
                     out=out / "real.safetensors", progress=not args.quick)
        Path(str(out / "real.safetensors") + ".ckpt").unlink(missing_ok=True)
        real = load_model(out / "real.safetensors")
        timings["train"] = time.perf_counter() - t0
    ref = score_reference(real, calibration_crops(root / "cbsd432", 3, args.quick))
    tbl, rows = Table(), []
    for f in held[:1] if args.quick else held:
        y = center_crop(read_image(f, 3), QUICK_CROP) if args.quick else read_image(f, 3)
        sigma = estimate_sigma(y)
        lam = lam_for(color, "denoise", sigma)  # the real critic has no table: color's, at the estimate
        opts = alr_options(color, "denoise", args.quick, sigma)
        runs = {"color": lambda: minimize(y, None, color, lam, device=args.device, **opts)[0],
                "real": lambda: minimize(y, None, real, lam, device=args.device,
                                        **{**opts, "score_ref": ref} if "score_ref" in opts else opts)[0],
                "cbm3d": lambda: bm3d_restore(y, sigma)}
        panels = [(f"{f.stem}: input (sigma^ {sigma:.3f})", y)]
        for name, run in runs.items():
            t0 = time.perf_counter()
            xh = run().cpu().clamp(0, 1)
            dt = time.perf_counter() - t0
            write_image(out / f"{f.stem}_{name}.png", xh)
            left = estimate_sigma(xh)
            tbl.add(image=f.stem, method=REAL_METHODS[name], sigma_in=sigma, sigma_out=left,
                    removed_std=float((y - xh).std()), mean_shift=float((xh - y).mean()), seconds=dt)
            panels.append((f"{REAL_METHODS[name]} ({left:.3f})", xh))
        rows.append(panels)
        text = tbl.write(out, "Real noise (rni15, held-out images; lambda: color's table at the estimated sigma)")
        _real_figure(out / "real.png", rows)
        _run_json(out, args, timings, {"held_out": [g.name for g in held], "train": [g.name for g in train_files]})
    return text


def _real_figure(path: Path, rows: list[list[tuple[str, torch.Tensor]]], crop: int = 160) -> None:
    """One row per image: centre crops of the input and of each restoration."""
    plt = pyplot()

    fig, axes = plt.subplots(len(rows), len(rows[0]), figsize=(3 * len(rows[0]), 3.2 * len(rows)), squeeze=False)
    for row, panels in zip(axes, rows):
        for ax, (title, img) in zip(row, panels):
            ax.imshow(center_crop(img[0], crop).permute(1, 2, 0).numpy())
            ax.set_title(title, fontsize=8)
            ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def cmd_bench(args) -> None:
    out = Path(args.output)
    _sigmas(args, [])  # a bad --sigmas, --methods or --protocol fails before anything is written
    _methods(args)
    _protocols(args)
    # one device for every method and phase (solver, calibration, baselines): the GPU when there is one
    args.device = str(resolve_device(args.device))
    out.mkdir(parents=True, exist_ok=True)
    fn = {"calibrate": cmd_calibrate, "table1": cmd_table1, "table2": cmd_table2, "histogram": cmd_histogram,
          "deblur": cmd_deblur, "inpaint": cmd_inpaint, "sr": cmd_sr, "toy": cmd_toy_bench,
          "real": cmd_real}[args.name]
    t0 = time.perf_counter()
    text = fn(args, out)
    print(text)
    print(f"[{args.name}] done in {time.perf_counter() - t0:.0f} s; results in {out}", file=sys.stderr)
