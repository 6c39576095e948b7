"""Critic training throughput (WGAN-GP steps/s and patches/s) by architecture and batch size, a whole
batch against the chunks a CPU step uses (``alr.train.chunk_count``), side by side; then the same
again after ``alr.device.keep_freed_memory()``, the glibc setting ``alr train`` makes (a process
cannot undo it, so it is timed second; ``--no-kept`` skips it).

    python benchmarks/train_speed.py [--archs paper,lar] [--batches 128,512] [--steps 10] [--no-kept]

``paper``: the paper's critic (6 layers of 64 channels, ReLU, 13x13 patches); ``lar``: the
comparative study's (``alr train --recipe lar``: 128-64-64-64-32-32, SiLU, 15x15 patches, one-sided
penalty). On an accelerator the step is never chunked, so only the whole batch is timed.
"""
from __future__ import annotations

import argparse
import time

import torch
from _common import print_table, sync, write_json

from alr.critic import PatchCritic
from alr.device import keep_freed_memory
from alr.train import TrainConfig, accumulate_gradients, chunk_count

ARCHS = {"paper": (dict(depth=6, width=64), TrainConfig(mu=10.0)),
         "lar": (dict(widths=[128, 64, 64, 64, 32, 32], activation="silu"), TrainConfig(mu=0.1, penalty="one-sided"))}


def seconds_per_step(arch: str, batch: int, chunks: int, steps: int, dev: torch.device) -> float:
    torch.manual_seed(0)
    kwargs, config = ARCHS[arch]
    critic = PatchCritic(**kwargs).to(dev)
    opt = torch.optim.Adam(critic.parameters(), 1e-4)
    s = critic.receptive_field
    p, q, t = torch.rand(batch, 1, s, s, device=dev), torch.rand(batch, 1, s, s, device=dev), torch.rand(batch, device=dev)
    for i in range(steps + 2):
        if i == 2:  # two warm-up steps
            sync(dev)
            t0 = time.perf_counter()
        opt.zero_grad()
        accumulate_gradients(critic, p, q, t, config, chunks)
        opt.step()
    sync(dev)
    return (time.perf_counter() - t0) / steps


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--archs", default="paper,lar")
    ap.add_argument("--batches", default="128,512")
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--no-kept", action="store_true", help="skip the rows under keep_freed_memory()")
    args = ap.parse_args()
    dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    rows = []
    for allocator in ("default", "kept")[:1 if args.no_kept else 2]:
        if allocator == "kept" and not keep_freed_memory():
            print("keep_freed_memory() does not apply here (no glibc, or MALLOC_* set): no kept rows")
            break
        for arch in args.archs.split(","):
            for bs in (int(v) for v in args.batches.split(",")):
                critic = PatchCritic(**ARCHS[arch][0])
                s = critic.receptive_field
                auto = chunk_count(critic, torch.zeros(bs, 1, s, s), dev)
                whole = seconds_per_step(arch, bs, 1, args.steps, dev)
                row = {"allocator": allocator, "arch": arch, "batch": bs}
                rows.append({**row, "chunks": 1, "seconds_per_step": whole, "patches_per_s": 2 * bs / whole,
                             "speedup": 1.0})
                if auto > 1:
                    dt = seconds_per_step(arch, bs, auto, args.steps, dev)
                    rows.append({**row, "chunks": f"{auto} (default)", "seconds_per_step": dt,
                                 "patches_per_s": 2 * bs / dt, "speedup": whole / dt})
    print_table("train_speed: WGAN-GP step, whole batch vs chunks", rows)
    write_json("train_speed", rows)


if __name__ == "__main__":
    main()
