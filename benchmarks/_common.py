"""Shared helpers of the benchmark scripts: timing, tables, JSON output."""
from __future__ import annotations

import json
import os
import platform
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))


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


def mean_rows(acc: dict[str, list[tuple[float, float]]], reference: str, ratio_key: str) -> list[dict]:
    """One row per method of ``acc`` (name -> [(seconds, psnr) per image]): the means, and the time
    as a multiple of the ``reference`` method's under ``ratio_key``."""
    rows = [{"method": name, "seconds_per_image": sum(v[0] for v in vals) / len(vals),
             "psnr": sum(v[1] for v in vals) / len(vals)} for name, vals in acc.items()]
    ref = next(r["seconds_per_image"] for r in rows if r["method"] == reference)
    return [{**r, ratio_key: r["seconds_per_image"] / ref} for r in rows]
