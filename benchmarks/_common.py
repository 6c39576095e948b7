"""Shared helpers of the benchmark scripts: inputs, timing, the methods under test, tables, JSON output.

A *method* (:data:`Method`) is ``run(y, iters)``: it restores the noisy batch ``y``; ``iters``
(None: the method's own) lets :func:`warm_up` run an ALR solve for a single iteration, and a
method without iterations (BM3D) ignores it.
"""
from __future__ import annotations

import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any, Callable, TypeVar

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

T = TypeVar("T")
Method = Callable[[torch.Tensor, int | None], torch.Tensor]


def device_name() -> str:
    if torch.cuda.is_available():
        return torch.cuda.get_device_name()
    return f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def print_table(title: str, rows: list[dict]) -> str:
    keys = list(dict.fromkeys(k for r in rows for k in r))
    fmt = lambda v: f"{v:.4g}" if isinstance(v, float) else str(v)  # noqa: E731
    lines = [f"## {title} ({device_name()})", "", "| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    lines += ["| " + " | ".join(fmt(r.get(k, "")) for k in keys) + " |" for r in rows]
    text = "\n".join(lines)
    print(text, flush=True)
    return text


def write_json(name: str, rows: list[dict], extra: dict | None = None) -> None:
    out = Path(os.environ.get("ALR_BENCH_OUT", "bench_out"))
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.json").write_text(json.dumps({"device": device_name(), "torch": torch.__version__,
                                                  "rows": rows, **(extra or {})}, indent=2))


def dataset(name: str, data: str | None, n: int | None = None) -> list[Path]:
    """The first ``n`` (None: all) images of the data set ``name`` (``set12``, ``bsd68``, ...) in the
    data folder ``data`` (None: ``ALR_DATA``)."""
    from alr.images import data_root, list_images

    return list_images(data_root(data) / name)[:n]


def sync(device: torch.device | str | None) -> None:
    """Wait for the work queued on ``device`` (a no-op but on CUDA)."""
    if device is not None and torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def timed(f: Callable[[], T], device: torch.device | str | None = None) -> tuple[float, T]:
    """Seconds of ``f()`` and its result; on a CUDA ``device`` the queued work is awaited on both sides."""
    sync(device)
    t0 = time.perf_counter()
    out = f()
    sync(device)
    return time.perf_counter() - t0, out


def seconds_per_call(f: Callable[[], Any], repeats: int, device: torch.device | str | None = None) -> float:
    """Mean seconds of ``f()`` over ``repeats`` calls, after one untimed warm-up call."""
    f()
    return timed(lambda: [f() for _ in range(repeats)], device)[0] / repeats


def best_times(runs: dict[str, Callable[[], Any]], repeats: int,
               device: torch.device | str | None = None) -> dict[str, float]:
    """The least seconds of each of ``runs`` over ``repeats`` rounds (warm them up first). Each round
    calls them all, starting one further along than the round before, so that none always goes first."""
    names, best = list(runs), {k: float("inf") for k in runs}
    for r in range(repeats):
        for name in names[r % len(names):] + names[:r % len(names)]:
            best[name] = min(best[name], timed(runs[name], device)[0])
    return best


def warm_up(methods: dict[str, Method], inputs: list[torch.Tensor]) -> None:
    """Run each method once, untimed, on the first input of each image shape (ALR solves for one
    iteration), so that imports, model loads, first-call set-up and torch.compile's compilation (one
    per shape) stay out of the timings, alike for every method."""
    firsts: dict[tuple, torch.Tensor] = {}
    for y in inputs:
        firsts.setdefault(tuple(y.shape), y)
    for y in firsts.values():
        for run in methods.values():
            run(y, 1)


def compare(methods: dict[str, Method], x: torch.Tensor, y: torch.Tensor,
            acc: dict[str, list[tuple[float, float]]], device: torch.device | str | None = None) -> None:
    """Restore the noisy ``y`` with each method in turn (same input) and append its (seconds, PSNR
    against the clean ``x``) to ``acc[name]``."""
    from alr.metrics import psnr

    for name, run in methods.items():
        dt, xh = timed(lambda: run(y, None), device)
        acc.setdefault(name, []).append((dt, float(psnr(xh, x))))


def bm3d(sigma: float) -> Method:
    """The BM3D baseline at noise level ``sigma`` (CBM3D for colour images) as a method."""
    from alr.bench.baselines import bm3d_restore

    return lambda y, iters=None: bm3d_restore(y, sigma)


def default_restore() -> Callable[..., torch.Tensor]:
    """``run(y, sigma, **options)``: ``alr.restore(y, sigma=sigma, **options)`` with no model named
    (the default model and colour space for the image, :func:`alr.settings.pick_model`), each model it
    picks loaded once rather than from disk on every call."""
    import alr
    from alr.settings import pick_model

    loaded: dict = {}

    def run(y: torch.Tensor, sigma: float, **options) -> torch.Tensor:
        critic, space = pick_model(y, None, "denoise", sigma, False, False, "auto", loaded)
        return alr.restore(y, critic, sigma, color_space=space, **options)

    return run


def mean_of(rows: list[dict], keys: tuple[str, ...]) -> dict[str, float]:
    """The mean of each of ``keys`` over ``rows``."""
    return {k: sum(r[k] for r in rows) / len(rows) for k in keys}


def mean_rows(acc: dict[str, list[tuple[float, float]]], reference: str, ratio_key: str) -> list[dict]:
    """One row per method of ``acc`` (name -> [(seconds, psnr) per image]): the means, and the time
    as a multiple of the ``reference`` method's under ``ratio_key``."""
    rows = [{"method": name, "seconds_per_image": sum(v[0] for v in vals) / len(vals),
             "psnr": sum(v[1] for v in vals) / len(vals)} for name, vals in acc.items()]
    ref = next(r["seconds_per_image"] for r in rows if r["method"] == reference)
    return [{**r, ratio_key: r["seconds_per_image"] / ref} for r in rows]
