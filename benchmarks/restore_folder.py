"""`alr restore DIR`: images per second with batching (--batch-size B) vs one image per solve.

    python benchmarks/restore_folder.py [--images 8] [--batch-sizes 1,4] [--crop C] [--data DIR]

Noisy copies (sigma 0.1, seeded) of the first N BSD68 images (``--crop``: their centre crops C x C,
where the fixed cost of each critic call weighs more) are written to a temporary folder and
restored by the command line with the shipped gray model; images of equal size are solved
together. Reports seconds per image and the mean PSNR of each run (same inputs, same run), after an
untimed warm-up restore of a 32x32 crop (each run still loads the model, as the command does).
"""
from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch
from _common import dataset, print_table, timed, write_json

from alr.calibration import center_crop
from alr.cli import main as alr_main
from alr.data import add_noise
from alr.images import read_image, write_image
from alr.metrics import psnr


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", type=int, default=8)
    ap.add_argument("--batch-sizes", default="1,4")
    ap.add_argument("--crop", type=int, default=None, help="centre crops of this size")
    ap.add_argument("--device", default=None)
    ap.add_argument("--data", default=None)
    args = ap.parse_args()
    files = dataset("bsd68", args.data, args.images)
    clean = {f.stem: read_image(f) for f in files}
    if args.crop:
        clean = {n: center_crop(x, args.crop) for n, x in clean.items()}
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "noisy"
        src.mkdir()
        for i, (name, x) in enumerate(clean.items()):
            write_image(src / f"{name}.tif", add_noise(x, 0.1, seed=i))  # float TIFF: no quantisation
        shapes = sorted({tuple(x.shape[-2:]) for x in clean.values()})
        warm = Path(tmp) / "warm"
        warm.mkdir()
        write_image(warm / "warm.tif", add_noise(center_crop(next(iter(clean.values())), 32), 0.1, seed=0))
        device = ["--device", args.device] if args.device else []

        def restore(folder: Path, out: Path, bs: int) -> None:
            cmd = ["restore", str(folder), "-o", str(out), "--sigma", "0.1", "--batch-size", str(bs), "-q"]
            if alr_main(cmd + device) != 0:
                raise SystemExit("alr restore failed")

        restore(warm, Path(tmp) / "warm_out", 1)  # warm-up: the first run pays no first-call set-up
        for run, bs in enumerate(int(b) for b in args.batch_sizes.split(",")):
            dst = Path(tmp) / f"out{run}"  # a fresh folder per run: the command skips finished outputs
            dt, _ = timed(lambda: restore(src, dst, bs), args.device)
            p = [float(psnr(read_image(dst / f"{n}.tif"), x)) for n, x in clean.items()]
            rows.append({"batch_size": bs, "images": len(files), "seconds_per_image": dt / len(files),
                         "psnr": sum(p) / len(p)})
    for r in rows:
        r["speedup_vs_first"] = rows[0]["seconds_per_image"] / r["seconds_per_image"]
    what = f"{args.crop}x{args.crop} crops of " if args.crop else ""
    print_table(f"restore_folder: {what}{len(files)} BSD68 images ({len(shapes)} sizes), sigma 0.1", rows)
    write_json("restore_folder", rows, {"threads": torch.get_num_threads(), "crop": args.crop})


if __name__ == "__main__":
    main()
