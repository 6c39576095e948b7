"""Critic training throughput (WGAN-GP steps/s and patches/s) for several batch sizes.

    python benchmarks/train_speed.py [--batches 128,256,512,1024] [--steps 20]
"""
from __future__ import annotations

import argparse
import time

import torch
from _common import print_table, write_json

from alr.critic import PatchCritic
from alr.train import wgan_gp_loss


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--batches", default="128,256,512,1024")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--width", type=int, default=64)
    args = ap.parse_args()
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    rows = []
    for bs in (int(v) for v in args.batches.split(",")):
        critic = PatchCritic(width=args.width).to(dev)
        opt = torch.optim.Adam(critic.parameters(), 1e-4, betas=(0.5, 0.9))
        p, q = torch.rand(bs, 1, 13, 13, device=dev), torch.rand(bs, 1, 13, 13, device=dev)
        t = torch.rand(bs, device=dev)
        for i in range(args.steps + 3):
            if i == 3:
                if dev == "cuda":
                    torch.cuda.synchronize()
                t0 = time.perf_counter()
            loss, _ = wgan_gp_loss(critic, p, q, t, 10.0)
            opt.zero_grad()
            loss.backward()
            opt.step()
        if dev == "cuda":
            torch.cuda.synchronize()
        dt = (time.perf_counter() - t0) / args.steps
        rows.append({"batch": bs, "seconds_per_step": dt, "steps_per_s": 1 / dt, "patches_per_s": 2 * bs / dt})
    print_table(f"train_speed: WGAN-GP step, width {args.width}", rows)
    write_json("train_speed", rows)


if __name__ == "__main__":
    main()
