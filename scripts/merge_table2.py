#!/usr/bin/env python3
"""Merge the Table 2 per-image rows of the runs that produced the README tables, one CSV per protocol (and one for CBSD68),
and print the means (sigma, method, images, PSNR, SSIM, seconds per image).

Every method of every run saw the same inputs (noise seeded per image and noise level), so rows of
different runs can sit side by side. Run from the repository root after the commands in the README.
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
        agg[(float(r["sigma"]), r["method"])].append(r)
    print(path)
    for k in sorted(agg):
        v = agg[k]
        print(k, len(v), *(round(sum(r[m] for r in v) / len(v), n) for m, n in (("psnr", 2), ("ssim", 3), ("seconds", 2))))


# paper protocol: sigma 0.1 / 0.2 rows were saved from the running process (README), the rest are run folders
paper = [r for r in json.load(open("runs/table2_paper_main/rows_sigma0.1.json"))[0] if r["method"] != "epll"]
paper += json.load(open("runs/table2_paper_main/rows_sigma0.2.json"))  # input, alr, bm3d
paper += from_csv("runs/table2_paper_tv02/per_image.csv", {"tv"})
paper += from_csv("runs/table2_paper_epll/per_image.csv", {"epll"})  # EPLL after the fix of its data weight
paper += from_csv("runs/table2_paper_04/per_image.csv", {"input", "alr", "bm3d", "tv"})
write(paper, "docs/results/table2_paper_per_image.csv")

everything = {"input", "alr", "bm3d", "epll", "tv"}
standard = from_csv("runs/table2_standard/per_image.csv", everything)  # sigma 0.1: input, alr, bm3d, tv
standard += from_csv("runs/table2_standard_epll/per_image.csv", {"epll"})  # sigma 0.1
standard += from_csv("runs/table2_standard_hi/per_image.csv", everything)  # sigma 0.2 and 0.4
write(standard, "docs/results/table2_standard_per_image.csv")

color = from_csv("runs/table2_color/per_image.csv", everything)  # sigma 0.1
color += from_csv("runs/table2_color_hi/per_image.csv", everything)  # sigma 0.2 and 0.4
write(color, "docs/results/table2_color_paper_per_image.csv")
