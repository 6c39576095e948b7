"""Does glibc's mmap-off setting (what ``alr train`` sets, ``alr.device.keep_freed_memory``) speed up
restores? A default gray restore (sigma 0.1) of square crops of scikit-image's camera, each timed in
a fresh process with the allocator's defaults and with the setting, with the process's peak memory.

    python research/scripts/probe_allocator.py [--sizes 321,512]
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys

RUN = """
import resource, sys, time, torch, alr
from skimage import data
from alr.data import add_noise
n = int(sys.argv[1])
y = add_noise(torch.from_numpy(data.camera()[:n, :n]).float()[None, None] / 255, 0.1, seed=0)
alr.restore(y[..., :64, :64], sigma=0.1, device="cpu")  # warm-up
t0 = time.perf_counter()
alr.restore(y, sigma=0.1, device="cpu")
print(time.perf_counter() - t0, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
"""
KEPT = {"MALLOC_MMAP_MAX_": "0", "MALLOC_TRIM_THRESHOLD_": str(2**31 - 1), "MALLOC_TOP_PAD_": str(256 << 20)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="321,512")
    args = ap.parse_args()
    base = {k: v for k, v in os.environ.items() if not (k.startswith("MALLOC_") or k == "GLIBC_TUNABLES")}
    print("| crop | allocator | seconds | peak MiB |\n|---|---|---|---|")
    for n in args.sizes.split(","):
        for label, env in (("default", base), ("mmap off", {**base, **KEPT})):
            out = subprocess.run([sys.executable, "-c", RUN, n], env=env, capture_output=True, text=True, check=True)
            seconds, peak = (float(v) for v in out.stdout.split())
            print(f"| {n}x{n} | {label} | {seconds:.2f} | {peak:.0f} |", flush=True)


if __name__ == "__main__":
    main()
