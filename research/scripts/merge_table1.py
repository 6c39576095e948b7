#!/usr/bin/env python3
"""Merge Table 1 runs that each tested some noise levels (`alr bench table1 --sigmas S`, one process
per level, as `research/scripts/gpu_data_depth.sh` runs them) into one table, CSV and figure.

    python research/scripts/merge_table1.py OUT RUN [RUN ...]

The runs must share the critics (`--models`) and the lambda table; rows keep the runs' values.
"""
import csv
import sys
from pathlib import Path

from alr.bench.experiments import Table, _plot_table1

out, runs = Path(sys.argv[1]), [Path(p) for p in sys.argv[2:]]
out.mkdir(parents=True, exist_ok=True)
tbl = Table()
rows = sorted((r for run in runs for r in csv.DictReader(open(run / "results.csv"))),
              key=lambda r: (r["trained_on"] == "range", r["trained_on"], float(r["test_sigma"])))
for r in rows:
    tbl.add(trained_on=r["trained_on"], test_sigma=float(r["test_sigma"]), lam=float(r["lam"]), psnr=float(r["psnr"]))
print(tbl.write(out, f"Table 1: PSNR on bsd68 (merged from {', '.join(p.name for p in runs)})",
                pivot=("trained_on", "test_sigma", "psnr")))
_plot_table1(tbl.rows, out / "table1.png")
