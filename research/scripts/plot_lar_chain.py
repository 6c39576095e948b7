"""Our CPU run of ``alr train --recipe lar`` beside the comparative study's two logged runs: the
training loss, the weighted gradient penalty (the study's "grad loss" = 0.1 x our
``gradient_penalty``) and the validation PSNR's gain since each run's first check (ours and the
study's are on different images and lambda rules: only the shapes compare), against the step.
With the data folder (``ALR_DATA``), the validation panel also marks where a shipped model
(``--reference``, `gray`) scores on our validation crops (``probe_validation.py --folder cbsd432``).

    python research/scripts/plot_lar_chain.py [-o research/figures/lar_chain.png] [--reference gray]
"""
from __future__ import annotations

import argparse
import csv
import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

HERE = Path("research/models/lar_chain")


def columns(path: Path, keys: tuple[str, ...], group: str | None = None) -> dict[str, dict[str, list]]:
    """``{group value: {key: [(step, value), ...]}}`` of the rows of a CSV where the key is set."""
    out: dict[str, dict[str, list]] = {}
    with open(path) as f:
        for row in csv.DictReader(f):
            series = out.setdefault(row[group] if group else "ours", {k: [] for k in keys})
            for k in keys:
                if row.get(k):
                    series[k].append((int(row["step"]), float(row[k])))
    return out


def smooth(points: list, window: int) -> tuple[list, list]:
    """The points averaged over consecutive windows of ``window`` (the study logs epoch means)."""
    steps, values = [], []
    for i in range(0, len(points) - window + 1, window):
        chunk = points[i:i + window]
        steps.append(chunk[-1][0])
        values.append(sum(v for _, v in chunk) / window)
    return steps, values


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("-o", "--output", default="research/figures/lar_chain.png")
    ap.add_argument("--reference", default="gray", help="a model to mark on the validation panel ('' for none)")
    args = ap.parse_args()
    ours = columns(HERE / "lar.csv", ("loss", "gradient_penalty", "val_psnr"))["ours"]
    ours["grad_loss"] = [(s, 0.1 * v) for s, v in ours.pop("gradient_penalty")]
    study = columns(HERE / "study_curves.csv", ("loss", "grad_loss", "val_psnr"), group="run")
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    first = ours["val_psnr"][0][1]
    for series in (ours, *study.values()):
        series["val_psnr"] = [(s, v - series["val_psnr"][0][1]) for s, v in series["val_psnr"]]
    if args.reference and os.environ.get("ALR_DATA"):
        from probe_validation import held_out_scores  # the same crops as the chain's validation
        ((name, score, _),) = held_out_scores([args.reference], folder="cbsd432")
        axes[2].axhline(score - first, color="gray", ls="--", lw=1,
                        label=f"`{name}` on our crops ({score:.2f} dB; ours first {first:.2f})")
    for ax, key, title in zip(axes, ("loss", "grad_loss", "val_psnr"),
                              ("training loss", "0.1 x gradient penalty", "validation PSNR gain since the first check (dB)")):
        for run, series in study.items():
            xs, ys = zip(*series[key])
            ax.plot(xs, ys, lw=0.8, label=f"study {run}")
        xs, ys = smooth(ours[key], 5) if key != "val_psnr" else zip(*ours[key])  # 5 log rows ~ an epoch of 45 steps
        ax.plot(xs, ys, "k" + ("o-" if key == "val_psnr" else "-"), lw=1.2, ms=3, label="ours (CPU chain)")
        ax.set(title=title, xlabel="step")
        ax.grid(alpha=0.3)
    axes[0].legend()
    axes[2].legend(fontsize=8)
    last = ours["loss"][-1][0]
    fig.suptitle(f"LAR recipe: our run at step {last:,} of 45,000 beside the study's logs")
    fig.tight_layout()
    fig.savefig(args.output, dpi=90)
    print(f"wrote {args.output} (our run at step {last})")


if __name__ == "__main__":
    main()
