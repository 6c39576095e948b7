#!/usr/bin/env python3
"""Merge the Table 2 (paper protocol) per-image rows from the runs that produced the README table."""
import csv, json, collections
rows = []
for r in json.load(open("runs/table2_paper_main/rows_sigma0.1.json"))[0]:
    if r["method"] != "epll": rows.append(r)          # EPLL from the fixed re-run
rows += json.load(open("runs/table2_paper_main/rows_sigma0.2.json"))   # input, alr, bm3d
for f, keep in (("runs/table2_paper_tv02/per_image.csv", {"tv"}), ("runs/table2_paper_epll/per_image.csv", {"epll"}),
                ("runs/table2_paper_04/per_image.csv", {"input", "alr", "bm3d", "tv"})):
    for r in csv.DictReader(open(f)):
        if r["method"] in keep:
            rows.append({k: (float(v) if k in ("sigma", "psnr", "ssim", "lpips", "seconds") else v) for k, v in r.items()})
keys = ["protocol", "sigma", "image", "method", "psnr", "ssim", "lpips", "seconds"]
with open("docs/results/table2_paper_per_image.csv", "w", newline="") as f:
    w = csv.DictWriter(f, fieldnames=keys); w.writeheader(); w.writerows([{k: r[k] for k in keys} for r in rows])
agg = collections.defaultdict(list)
for r in rows: agg[(float(r["sigma"]), r["method"])].append(r)
for k in sorted(agg):
    v = agg[k]; print(k, len(v), round(sum(r["psnr"] for r in v)/len(v), 2), round(sum(r["ssim"] for r in v)/len(v), 3), round(sum(r["seconds"] for r in v)/len(v), 2))
