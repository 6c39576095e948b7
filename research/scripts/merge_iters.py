#!/usr/bin/env python3
"""Put the rows of research/scripts/gpu_iters.sh (longer solves at sigma 0.4, and 0.2 for gray's clipped table)
into the committed per-image CSVs of Table 2, on top of what research/scripts/merge_table2.py wrote.

The rows they replace (the same method, protocol and noise level, solved with the previous tables, which
stopped at 20 L-BFGS iterations) stay beside them with the suffix ``_table20``. Idempotent: a CSV that
already holds ``_table20`` rows for a cell is left as it is. Prints the means of every changed cell.

    python research/scripts/merge_iters.py runs/gpu_iters     # the folder holding the unpacked r/ of each call
"""
import csv
import statistics
import sys
from pathlib import Path

R = Path(sys.argv[1] if len(sys.argv) > 1 else "runs/gpu_iters")
DOCS = Path("docs/results")
# per-image CSV <- (run folder of gpu_iters.sh, protocol, sigma, method)
CELLS = {
    "table2_paper_per_image.csv": [("new_gray_04", "paper", 0.4, "alr"), ("new_gray_02", "paper", 0.2, "alr-clipped")],
    "table2_standard_per_image.csv": [("new_gray_std04", "standard", 0.4, "alr")],
    "table2_color_paper_per_image.csv": [("new_color_04g", "paper", 0.4, "alr"),
                                         ("new_color_04c", "paper", 0.4, "alr-clipped")],
    "table2_color_standard_per_image.csv": [("new_color_std04", "standard", 0.4, "alr")],
}


def find(run: str) -> Path:
    """The run's per-image CSV in any of the unpacked calls (R, R2, R3, ...: one folder per device call)."""
    hits = sorted(R.parent.glob(f"{R.name}*/r/{run}/per_image.csv"))
    if not hits:
        raise SystemExit(f"no per_image.csv for {run} under {R}*/r")
    return hits[-1]


def cell(r: dict, protocol: str, sigma: float, method: str) -> bool:
    return r["protocol"] == protocol and float(r["sigma"]) == sigma and r["method"] == method


for name, cells in CELLS.items():
    path = DOCS / name
    rows = list(csv.DictReader(open(path)))
    fields = list(rows[0])
    for run, protocol, sigma, method in cells:
        if any(cell(r, protocol, sigma, method + "_table20") for r in rows):
            continue
        for r in rows:
            if cell(r, protocol, sigma, method):
                r["method"] += "_table20"
        rows += [r for r in csv.DictReader(open(find(run))) if cell(r, protocol, sigma, method)]
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields)
        w.writeheader()
        w.writerows({k: r[k] for k in fields} for r in rows)
    for _, protocol, sigma, method in cells:
        for m in (method, method + "_table20"):
            sel = [r for r in rows if cell(r, protocol, sigma, m)]
            psnr, ssim = (statistics.mean(float(r[k]) for r in sel) for k in ("psnr", "ssim"))
            print(f"{name}: {protocol} {sigma} {m}: {len(sel)} images, {psnr:.2f} dB / {ssim:.3f}")
