#!/usr/bin/env python3
"""Merge the per-image rows of the runs that produced the README tables (Table 2: one CSV per protocol, one for CBSD68;
the continued critics; BSD68 deblurring),
and print the means (protocol, sigma, method, images, PSNR, SSIM, seconds per image).

Every method of every run saw the same inputs (noise seeded per image and noise level), so rows of
different runs can sit side by side. Run from the repository root after the commands in the README.
research/scripts/merge_iters.py then puts the longer solves of research/scripts/gpu_iters.sh on top (their cells' earlier rows keep
the suffix _table20).
"""
import collections
import csv
import json

KEYS = ["protocol", "sigma", "image", "method", "psnr", "ssim", "lpips", "seconds"]
NUMERIC = ("sigma", "psnr", "ssim", "lpips", "seconds")


def from_csv(path: str, keep: set[str]) -> list[dict]:
    return [{k: (float(v) if k in NUMERIC else v) for k, v in r.items()}
            for r in csv.DictReader(open(path)) if r["method"] in keep]


def write(rows: list[dict], path: str) -> None:
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=KEYS)
        w.writeheader()
        w.writerows([{k: r[k] for k in KEYS} for r in rows])
    agg = collections.defaultdict(list)
    for r in rows:
        agg[(r["protocol"], float(r["sigma"]), r["method"])].append(r)
    print(path)
    for k in sorted(agg):
        v = agg[k]
        print(k, len(v), *(round(sum(r[m] for r in v) / len(v), n) for m, n in (("psnr", 2), ("ssim", 3), ("seconds", 2))))


# ALR rows: the shipped models (GPU run of research/scripts/gpu_eval.sh: runs/gpu8, and CPU runs); the previous
# releases' rows keep a suffix (_prefix, _prev, _kappa0, _20iters); baselines: the CPU runs below.
alr = {"alr"}
# paper protocol: sigma 0.1 / 0.2 rows were saved from the running process (README), the rest are run folders
paper = [r for r in json.load(open("runs/table2_paper_main/rows_sigma0.1.json"))[0]
         if r["method"] in {"input", "bm3d", "tv"}]
paper += [r for r in json.load(open("runs/table2_paper_main/rows_sigma0.2.json")) if r["method"] in {"input", "bm3d"}]
paper += from_csv("runs/table2_paper_tv02/per_image.csv", {"tv"})
paper += from_csv("runs/table2_paper_epll/per_image.csv", {"epll"})  # EPLL after the fix of its data weight
paper += from_csv("runs/table2_paper_04/per_image.csv", {"input", "bm3d", "tv"})


def alr_rows(gpu_run: str, iters_run: str, shaped_run: str, protocol: str) -> list[dict]:
    """The previous gray's rows (bsd400 only, method ``alr_prev``): sigma 0.1 / 0.2 from the CPU run with the
    shaped patch scores, sigma 0.4 from the GPU run; earlier defaults beside them: ``alr_kappa0`` (the paper's
    R with the per-sigma iterations, CPU) and ``alr_20iters`` (the paper's R, 20 iterations, GPU)."""
    gpu = from_csv(gpu_run, alr)
    unshaped = [r for r in from_csv(iters_run, alr) if r["protocol"] == protocol]
    return ([{**r, "method": "alr_prev"} for r in gpu if r["sigma"] == 0.4]
            + [{**r, "method": "alr_prev"} for r in from_csv(shaped_run, alr)]
            + [{**r, "method": "alr_kappa0"} for r in unshaped]
            + [{**r, "method": "alr_20iters"} for r in gpu if r["sigma"] < 0.4])


def renamed(rows: list[dict], suffix: str) -> list[dict]:
    return [{**r, "method": r["method"] + suffix} for r in rows]


# the shipped models' ALR rows after the batch fix of L-BFGS (each image solved alone) and the
# recalibrated tables: one H200 run of research/scripts/gpu_eval.sh (runs/gpu8: both protocols at sigma 0.1,
# the standard protocol at 0.2 / 0.4, CBSD68 likewise) and CPU runs of the paper protocol at 0.2 / 0.4
NEW = "runs/gpu8/r"
paper += from_csv(f"{NEW}/table2_paper_0.1/per_image.csv", {"alr", "alr-clipped"})
paper += [r for s in (0.2, 0.4) for m in ("alr", "alr-clipped") for r in from_csv(f"runs/t2cpu_{s}_{m}/per_image.csv", {m})]
# before the fix (suffix _prefix): the H100 run runs/gpu6 (batches of 16 solved as one coupled L-BFGS, the
# previous tables); alr-clipped at sigma 0.2 with the previous clipped table, rerun on the CPU. The GPU row
# at 0.2 (the Gaussian table) and the first, full-grid clipped table (CPU, sigma 0.1 / 0.2) keep their suffix.
OLD = "runs/gpu6/r"
paper += renamed(from_csv(f"{OLD}/table2_paper/per_image.csv", {"alr"}), "_prefix")
gpu_clipped = from_csv(f"{OLD}/table2_paper/per_image.csv", {"alr-clipped"})
paper += renamed([r for r in gpu_clipped if r["sigma"] != 0.2], "_prefix")
paper += renamed(from_csv("runs/table2_clipped_lam/per_image.csv", {"alr-clipped"}), "_prefix")
paper += renamed([r for r in gpu_clipped if r["sigma"] == 0.2], "_gausstable")
paper += renamed(from_csv("runs/table2_clipped_table/per_image.csv", {"alr-clipped"}), "_fullgrid")
paper += alr_rows("runs/gpu4/table2_paper/per_image.csv", "runs/table2_iters/per_image.csv",
                  "runs/table2_shape_paper/per_image.csv", "paper")
# the previous gray with the censored data term (alr.fidelity.ClippedGaussian), CPU runs
paper += renamed(from_csv("runs/table2_clipfid_hi/per_image.csv", {"alr-clipped"}), "_prev")  # sigma 0.4
paper += renamed(from_csv("runs/table2_shape_clip/per_image.csv", {"alr-clipped"}), "_prev")  # 0.1, 0.2
paper += [{**r, "method": "alr-clipped_kappa0"}  # the same before the shaping
          for r in from_csv("runs/table2_clipfid_lo/per_image.csv", {"alr-clipped"})]
write(paper, "docs/results/table2_paper_per_image.csv")

baselines = {"input", "bm3d", "epll", "tv"}
standard = from_csv("runs/table2_standard/per_image.csv", baselines)  # sigma 0.1: input, bm3d, tv
standard += from_csv("runs/table2_standard_epll/per_image.csv", {"epll"})  # sigma 0.1
standard += from_csv("runs/table2_standard_hi/per_image.csv", baselines)  # sigma 0.2 and 0.4
standard += [r for s in (0.1, 0.2, 0.4) for r in from_csv(f"{NEW}/table2_standard_{s}/per_image.csv", alr)]
standard += renamed(from_csv(f"{OLD}/table2_standard/per_image.csv", alr), "_prefix")
standard += alr_rows("runs/gpu4/table2_standard/per_image.csv", "runs/table2_iters/per_image.csv",
                     "runs/table2_shape_std/per_image.csv", "standard")
write(standard, "docs/results/table2_standard_per_image.csv")

everything = baselines | alr
base = everything - alr
color = from_csv("runs/table2_color/per_image.csv", base)  # sigma 0.1
color += from_csv("runs/table2_color_hi/per_image.csv", base)  # sigma 0.2 and 0.4
# after the batch fix: sigma 0.1 (runs/gpu8); before it (suffix _prefix): runs/gpu6, and alr-clipped at 0.2 / 0.4
# with the previous clipped table on the CPU (the GPU rows there, the Gaussian table, keep _gausstable)
color += from_csv(f"{NEW}/color_paper_0.1/per_image.csv", {"alr", "alr-clipped"})
# sigma 0.2 / 0.4 after the batch fix: the H100 run of research/scripts/gpu_slope.sh (runs/gpu9, both of its calls)
GPU9 = "runs/gpu9/r"
color += [r for s in (0.2, 0.4) for r in from_csv(f"{GPU9}/color_paper_{s}/per_image.csv", {"alr", "alr-clipped"})]
color += renamed(from_csv(f"{OLD}/color_paper/per_image.csv", {"alr"}), "_prefix")
color_clipped = from_csv(f"{OLD}/color_paper/per_image.csv", {"alr-clipped"})
color += renamed([r for r in color_clipped if r["sigma"] == 0.1], "_prefix")
color += renamed([r for s in ("02", "04") for r in from_csv(f"runs/color_clipped_lam{s}/per_image.csv", {"alr-clipped"})],
                 "_prefix")
color += renamed([r for r in color_clipped if r["sigma"] != 0.1], "_gausstable")
EPLL3 = "runs/gpu7/r/epll_{}_{}/per_image.csv"  # color EPLL: research/scripts/gpu_epll_color.sh
color += [r for s in (0.1, 0.2, 0.4) for r in from_csv(EPLL3.format("paper", s), {"epll"})]
# the previous color table (no shaping): CPU runs
color += renamed(from_csv("runs/table2_color/per_image.csv", alr), "_prev")
color += renamed(from_csv("runs/table2_color_hi/per_image.csv", alr), "_prev")
for run in ("runs/table2_color_clip04", "runs/table2_color_clip02", "runs/table2_color_clip01"):
    color += renamed(from_csv(f"{run}/per_image.csv", {"alr-clipped"}), "_prev")
write(color, "docs/results/table2_color_paper_per_image.csv")

# critics continued on the GPU (research/scripts/gpu_continue.sh, results folder runs/gpu3); method = the critic
continued = []
for name in ("c01_b256", "c01_c", "c02_c", "c04_c", "gray_c"):
    for r in from_csv(f"runs/gpu3/t2_{name}/per_image.csv", alr):
        continued.append({**r, "method": name})
# more data / larger patches (research/scripts/gpu_data_depth.sh, runs/gpu5): sigma 0.1 (t2a) and 0.2 (t2b)
for name in ("g400_init", "g432_init", "g432_d6", "g432_d8"):
    for run in ("t2a", "t2b"):
        continued += [{**r, "method": name} for r in from_csv(f"runs/gpu5/r/{run}_{name}/per_image.csv", alr)]
# smooth activations and augmentation (research/scripts/gpu_smooth.sh, runs/gpu_smooth): sigma 0.1
for name in ("r_init", "r_init_aug", "s_init", "r_new", "s_new", "s_new_aug"):
    continued += [{**r, "method": name} for r in from_csv(f"runs/gpu_smooth/r/t2_{name}/per_image.csv", alr)]
# the slope penalty at GPU scale (research/scripts/gpu_slope.sh, runs/gpu9): gray further with / without --slope 10, a
# new critic with it; paper protocol, each sigma with its own calibration
for name, sigmas in (("gray_slope10", (0.1, 0.2, 0.4)), ("gray_more", (0.1, 0.2, 0.4)), ("new_slope10", (0.1,))):
    for s in sigmas:
        continued += [{**r, "method": name} for r in from_csv(f"{GPU9}/t2_{name}_{s}/per_image.csv", alr)]
write(continued, "research/results/table2_continued_critics_per_image.csv")

# BSD68 deblurring: ALR from runs/gpu9 (before the batch fix: runs/gpu6, _prefix), TV from the GPU run
# runs/gpu4, BM3D and EPLL from CPU runs
deblur = from_csv("runs/gpu4/deblur_bsd68/bsd68/per_image.csv", {"input", "tv"})
deblur += [r for s in (0.01, 0.03) for r in from_csv(f"{GPU9}/deblur_bsd68_{s}/bsd68/per_image.csv", alr)]  # after the fix
deblur += renamed(from_csv(f"{OLD}/deblur_bsd68/bsd68/per_image.csv", alr), "_prefix")
deblur += renamed(from_csv("runs/gpu4/deblur_bsd68/bsd68/per_image.csv", alr), "_prev")
deblur += from_csv("runs/deblur_bsd68_bm3d/bsd68/per_image.csv", {"bm3d"})
deblur += from_csv("runs/deblur_bsd68_epll/bsd68/per_image.csv", {"epll"})
write(deblur, "docs/results/deblur_bsd68_per_image.csv")

# CBSD68 under the standard protocol: ALR and the baselines ran as two CPU jobs side by side
color_std = [r for s in (0.1, 0.2, 0.4) for r in from_csv(f"{NEW}/color_standard_{s}/per_image.csv", alr)]
color_std += renamed(from_csv(f"{OLD}/color_standard/per_image.csv", alr), "_prefix")
color_std += renamed(from_csv("runs/table2_color_std_alr/per_image.csv", alr), "_prev")  # sigma 0.1 and 0.2
color_std += renamed(from_csv("runs/table2_color_std_alr04/per_image.csv", alr), "_prev")  # sigma 0.4
color_std += from_csv("runs/table2_color_std_base/per_image.csv", everything - alr)
color_std += [r for s in (0.1, 0.2, 0.4) for r in from_csv(EPLL3.format("standard", s), {"epll"})]
write(color_std, "docs/results/table2_color_standard_per_image.csv")

# the symmetrised R (--symmetric) on the H100, one process per protocol and sigma (runs/gpu6sym, the
# previous tables and the L-BFGS of that time, batches of 16 as in runs/gpu6): methods suffixed _sym
symmetric = [{**r, "method": r["method"] + "_sym"} for p in ("paper", "std") for s in (0.1, 0.2, 0.4)
             for r in from_csv(f"runs/gpu6sym/r/sym_{p}_{s}/per_image.csv", alr | {"alr-clipped"})]
write(symmetric, "research/results/table2_symmetric_per_image.csv")
