"""Does glibc's mmap-off setting (what ``alr train`` sets, ``alr.device.keep_freed_memory``) speed up
restores? A default gray restore (sigma 0.1) of square crops of scikit-image's camera, each timed in
a fresh process with the allocator's defaults and after ``keep_freed_memory()``, with the process's
peak memory.

    python research/scripts/probe_allocator.py [--sizes 321,512]
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys

from alr.device import malloc_configured

RUN = """
import resource, sys, time, torch, alr
from skimage import data
from alr.data import add_noise
from alr.device import keep_freed_memory
n = int(sys.argv[1])
if sys.argv[2] == "mmap off":
    assert keep_freed_memory()
y = add_noise(torch.from_numpy(data.camera()[:n, :n]).float()[None, None] / 255, 0.1, seed=0)
alr.restore(y[..., :64, :64], sigma=0.1, device="cpu")  # warm-up
t0 = time.perf_counter()
alr.restore(y, sigma=0.1, device="cpu")
print(time.perf_counter() - t0, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
"""


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="321,512")
    args = ap.parse_args()
    env = {k: v for k, v in os.environ.items() if not malloc_configured([k])}
    print("| crop | allocator | seconds | peak MiB |\n|---|---|---|---|")
    for n in args.sizes.split(","):
        for label in ("default", "mmap off"):
            out = subprocess.run([sys.executable, "-c", RUN, n, label], env=env, capture_output=True, text=True,
                                 check=True)
            seconds, peak = (float(v) for v in out.stdout.split())
            print(f"| {n}x{n} | {label} | {seconds:.2f} | {peak:.0f} |", flush=True)


if __name__ == "__main__":
    main()
