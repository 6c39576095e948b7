#!/usr/bin/env python3
"""Probe: can the paper's 13x13 critic, fine-tuned for restoration, reach BM3D?

The WGAN-GP critic is trained to tell clean patches from noisy ones, not to restore. This probe
asks what the same network (same size, same explicit regulariser R, same solver family) gives
when its weights are fine-tuned *discriminatively*: the restoration is unrolled as ``K`` explicit
gradient steps of eq. (5),

    x_0 = y,   x_{k+1} = x_k - t_k ( (x_k - y) + n lam(sigma) grad R(x_k) ),

and the critic's weights, the steps ``t_k`` and ``lam(sigma) = exp(a + b log(sigma / 0.1))`` are
trained by Adam to minimise ``E ||x_K - x||^2 / sigma^2`` over random crops ``x`` of bsd400 with
Gaussian noise ``sigma ~ U[--sigma-range]`` (half of the noisy crops clipped to [0, 1] with
``--clip``, as the paper protocol's inputs). This needs *paired* clean / noisy images (synthetic
noise makes them free) and so gives up the paper's unpaired training: it is a probe of the
architecture, not the paper's method.

Every ``--eval-every`` steps and at the end it scores the model with the production solver,
``alr.solver.minimize(..., method="gd", step=[t_1, ..., t_K], iters=K)``, on the probe crops of
``probe_critic.py`` (8 centre crops 128x128 of set12, training side, noise seed 1; both protocols),
and writes it as a model file whose header holds the solver and the lambda table, so that ``alr
restore --model OUT --sigma S`` uses them: to ``OUT.last.safetensors`` each time, to ``-o OUT`` when
its mean paper-protocol score is the best so far. The learning rates decay exponentially by the
clock, ``--lr`` -> ``--lr1`` (the scalars' from 1e-2 by the same factor). References on the same
crops: the shipped ``gray`` with its table and L-BFGS, and BM3D (``--references``).

    python research/scripts/probe_unrolled.py --references
    python research/scripts/probe_unrolled.py --seconds 3600 -o runs/unrolled/gray_unrolled.safetensors
"""
import argparse
import math
import time

import torch

import alr
from alr.bench.baselines import bm3d_restore
from alr.bench.experiments import calibration_crops
from alr.critic import pad_boundary
from alr.data import ImageStack, add_noise
from alr.device import resolve_device
from alr.images import data_root
from alr.metrics import psnr
from alr.pretrained import lam_for, solver_options

SIGMA_REF = 0.1


class Unrolled(torch.nn.Module):
    """The critic with the learnable steps and lambda law of the unrolled restoration."""

    def __init__(self, critic: alr.PatchCritic, iters: int, step0: float, lam0: float, slope0: float) -> None:
        super().__init__()
        self.critic = critic.requires_grad_(True)
        self.raw_steps = torch.nn.Parameter(torch.full((iters,), math.log(step0 / (1 - step0))))
        self.a = torch.nn.Parameter(torch.tensor(math.log(lam0)))
        self.b = torch.nn.Parameter(torch.tensor(slope0))

    def steps(self) -> torch.Tensor:
        return torch.sigmoid(self.raw_steps)  # in (0, 1): the data term alone never overshoots

    def lam(self, sigma: torch.Tensor) -> torch.Tensor:
        return torch.exp(self.a + self.b * torch.log(sigma / SIGMA_REF))

    def forward(self, y: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        """x_K of the unrolled gradient steps, differentiable in the weights (reflect boundary, paper's R)."""
        n, s = y[0].numel(), self.critic.receptive_field
        lam = self.lam(sigma).view(-1, 1, 1, 1)
        x = y.detach().requires_grad_(True)
        for t in self.steps():
            r = self.critic(pad_boundary(x, s, "reflect")).mean(dim=(1, 2, 3))
            g, = torch.autograd.grad(r.sum(), x, create_graph=True)
            x = x - t * ((x - y) + n * lam * g)
        return x

    @torch.no_grad()
    def export(self, sigmas: list[float]) -> alr.PatchCritic:
        """A frozen copy of the critic whose header recommends the learnt solver and lambda."""
        model = alr.PatchCritic(**{k: v for k, v in self.critic.config().items() if k != "kind"})
        model.load_state_dict(self.critic.state_dict())
        steps = [round(float(t), 5) for t in self.steps()]
        model.meta = {**self.critic.meta,
                      "solver": {"method": "gd", "options": {"boundary": "reflect", "step": steps},
                                 "iters": {"denoise": len(steps)}}}
        lams = [float(self.lam(torch.tensor(s, device=self.a.device))) for s in sigmas]
        model.meta["lambda"] = {"denoise": {"sigma": sigmas, "iters": [len(steps)] * len(sigmas), "lam": lams}}
        return model.eval().requires_grad_(False)


def evaluate(x: torch.Tensor, sigmas: list[float], denoise) -> dict:
    """Mean PSNR of ``denoise(y, sigma)`` on the crops ``x`` (noise seed 1), both protocols."""
    return {f"{'paper' if clip else 'standard'} {s}": round(float(psnr(denoise(add_noise(x, s, seed=1, clip=clip), s),
                                                                        x).mean()), 3)
            for clip in (False, True) for s in sigmas}


def with_own_solver(model: alr.PatchCritic):
    """``denoise(y, sigma)`` with the model's own solver and lambda table."""
    def denoise(y: torch.Tensor, s: float) -> torch.Tensor:
        return alr.solver.minimize(y, None, model.to(y.device), lam_for(model, "denoise", s),
                                   **solver_options(model, "denoise", s))[0]
    return denoise


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="gray", help="critic to start from")
    ap.add_argument("--iters", type=int, default=8, help="unrolled gradient steps K")
    ap.add_argument("--sigma-range", type=float, nargs=2, default=(0.05, 0.45))
    ap.add_argument("--eval-sigmas", type=float, nargs="+", default=[0.1, 0.2, 0.4])
    ap.add_argument("--clip", action="store_true", help="clip half of the noisy training crops to [0, 1]")
    ap.add_argument("--crop", type=int, default=48)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--lr", type=float, default=1e-4, help="Adam learning rate of the critic's weights at the start")
    ap.add_argument("--lr1", type=float, default=1e-5, help="... and at the end (exponential decay over --seconds)")
    ap.add_argument("--seconds", type=float, default=600.0)
    ap.add_argument("--eval-every", type=int, default=300)
    ap.add_argument("--eval-images", type=int, default=8, help="probe crops (set12 images) to score on")
    ap.add_argument("--references", action="store_true", help="only score gray (L-BFGS, its table) and BM3D")
    ap.add_argument("--device", default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("-o", "--output", default="runs/unrolled/gray_unrolled.safetensors")
    args = ap.parse_args()
    root = data_root()
    x_eval = calibration_crops(root / "set12", 1, False, images=args.eval_images)
    if args.references:
        print("gray (L-BFGS, its table):", evaluate(x_eval, args.eval_sigmas, with_own_solver(alr.load(args.model))),
              flush=True)
        print("BM3D:", evaluate(x_eval, args.eval_sigmas, bm3d_restore))
        return
    dev = resolve_device(args.device)
    torch.manual_seed(args.seed)
    critic = alr.load(args.model)
    lam0 = lam_for(critic, "denoise", SIGMA_REF)
    net = Unrolled(critic, args.iters, step0=0.2, lam0=lam0, slope0=1.15).to(dev)
    opt = torch.optim.Adam([{"params": net.critic.parameters(), "lr": args.lr},
                            {"params": [net.raw_steps, net.a, net.b], "lr": 1e-2}])
    stack = ImageStack.from_folder(root / "bsd400", 1)
    gen = torch.Generator().manual_seed(args.seed)
    sigmas = [0.05, 0.1, 0.2, 0.3, 0.4]
    last = args.output.removesuffix(".safetensors") + ".last.safetensors"

    best = -math.inf

    def report(step: int) -> None:
        """Score the model now; write it to OUT.last.safetensors, and to OUT if it is the best so far."""
        nonlocal best
        model = net.export(sigmas)
        model.meta["unrolled"] = {**{k: v for k, v in vars(args).items() if k != "references"}, "steps_done": step}
        scores = evaluate(x_eval.to(dev), args.eval_sigmas, with_own_solver(model))
        alr.save(model, last)
        paper = sum(v for k, v in scores.items() if k.startswith("paper")) / len(args.eval_sigmas)
        if paper > best:
            best = paper
            alr.save(model, args.output)
        print(f"step {step}: {scores}{' (best so far)' if best == paper else ''}", flush=True)

    # the exported model's solver is the unrolled one: check that they agree before training
    with torch.enable_grad():
        probe = x_eval[:1, :, :40, :40].to(dev)
        y = add_noise(probe, 0.1, seed=2)
        mine = net(y, torch.tensor([0.1], device=dev)).detach()
    model = net.export(sigmas)
    theirs, _ = alr.solver.minimize(y, None, model.to(dev), lam_for(model, "denoise", 0.1),
                                    clip=False, **solver_options(model, "denoise", 0.1))
    print(f"unrolled steps vs alr.solver.minimize(method='gd'): max difference {float((mine - theirs).abs().max()):.2e}")
    report(0)
    t0, step, losses = time.perf_counter(), 0, []
    lr0s = [group["lr"] for group in opt.param_groups]
    while (elapsed := time.perf_counter() - t0) < args.seconds:
        decay = (args.lr1 / args.lr) ** (elapsed / args.seconds)  # exponential, by the clock
        for group, lr0 in zip(opt.param_groups, lr0s):
            group["lr"] = lr0 * decay
        x = stack.sample(args.batch, args.crop, gen)
        sigma = torch.empty(args.batch).uniform_(*args.sigma_range, generator=gen)
        y = x + sigma.view(-1, 1, 1, 1) * torch.randn(x.shape, generator=gen)
        if args.clip:
            y = torch.where((torch.rand(args.batch, generator=gen) < 0.5).view(-1, 1, 1, 1), y.clamp(0, 1), y)
        x, y, sigma = x.to(dev), y.to(dev), sigma.to(dev)
        loss = (((net(y, sigma) - x) ** 2).mean(dim=(1, 2, 3)) / sigma ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        step += 1
        losses.append(loss.item())
        if step % 50 == 0:
            print(f"step {step} ({time.perf_counter() - t0:.0f} s): loss {sum(losses) / len(losses):.4f}, "
                  f"lam(0.1) {float(net.lam(torch.tensor(0.1, device=dev))):.4g}, slope {float(net.b):.3f}, "
                  f"steps {[round(float(t), 3) for t in net.steps().detach()]}", flush=True)
            losses = []
        if step % args.eval_every == 0:
            report(step)
    report(step)


if __name__ == "__main__":
    main()
