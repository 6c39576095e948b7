"""Copy lambda tables calibrated by `alr bench calibrate` into the shipped model files.

    python research/scripts/install_tables.py runs/cal_gray_denoise runs/cal_gray_tasks \
        runs/cal_color_denoise runs/cal_color_tasks
    python research/scripts/install_tables.py --into gray runs/cal_new_denoise runs/cal_new_tasks

Each RUN folder holds the model copy that `alr bench calibrate -o RUN` wrote; the tasks it
calibrated (its results.csv) replace those of the shipped model of the same name, or of the
shipped model named by `--into` (a table calibrated with `--iters` carries the iteration count
chosen at each noise level). A run calibrated on some noise levels only (`--sigmas`) replaces those
levels and keeps the others, so that the levels can be calibrated by parallel runs.
"""
import csv
import sys
from pathlib import Path

from alr.modelfile import load_model, save_model
from alr.pretrained import MODEL_DIR


def merge(old: dict | None, new: dict) -> dict:
    """``new``'s noise levels replace those of ``old``; ``old``'s other levels stay, when both tables
    hold the same columns and shaping reference (a run calibrated with `--sigmas`)."""
    if not old or set(old) != set(new) or old.get("score_ref") != new.get("score_ref"):
        return new
    cols = [k for k in new if k != "score_ref"]
    rows = {s: [old[k][i] for k in cols] for i, s in enumerate(old["sigma"])}
    rows.update({s: [new[k][i] for k in cols] for i, s in enumerate(new["sigma"])})
    out = {k: [rows[s][j] for s in sorted(rows)] for j, k in enumerate(cols)}
    return {**out, **({"score_ref": new["score_ref"]} if "score_ref" in new else {})}


args = sys.argv[1:]
into = None
if args[:1] == ["--into"]:
    into, args = args[1], args[2:]
for run in map(Path, args):
    (copy,) = run.glob("*.safetensors")
    tasks = {r["task"] for r in csv.DictReader(open(run / "results.csv"))}
    src = load_model(copy)
    target = MODEL_DIR / (f"{into}.safetensors" if into else copy.name)
    m = load_model(target)
    tables = m.meta.get("lambda", {})
    m.meta["lambda"] = {**tables, **{t: merge(tables.get(t), src.meta["lambda"][t]) for t in tasks}}
    m.meta["lambda_calibration"] = src.meta["lambda_calibration"]
    save_model(m, target)
    print(target.name, {t: m.meta["lambda"][t] for t in sorted(tasks)})
