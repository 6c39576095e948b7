#!/usr/bin/env python3
"""Cheap probes of ideas for a better critic, scored on training-side images only.

Every probe reports the best mean PSNR over lambda (log line search from ``--lam``, at most six
solves) on 8 centre crops 128x128 of set12, noise ``--sigma`` seeded 1 and clipped to [0, 1]
(the paper protocol), with the model's default solver. Probes:

* ``eval MODEL``: the score of a model as it is (the baseline of the others). MODEL may also be a
  training checkpoint (``alr train`` writes ``OUT.ckpt`` every ``--ckpt-every`` steps; give its
  ``--activation`` if not ReLU, ``--criterion w2`` for a w2 critic); ``--iters N --concavity 0`` fixes the solver (a checkpoint has no
  table; also for ``ensemble`` and ``finetune``).
* ``lambda MODEL``: how much a per-image lambda could gain. On the 12 calibration crops (noise
  ``--sigma`` seeded 1, clipped), the model's solver at its table's lambda times 0.35 ... 2.8: the
  best mean PSNR of one lambda for all crops against the mean of each crop's own best (an oracle).
* ``finetune MODEL -o OUT``: more WGAN-GP steps (lr ``--lr0`` -> 1e-5, batch 256) on bsd400 with the
  training's unpaired split, fixed noise ``--sigma``; ``--clip`` clips the noisy patches to [0, 1]
  as the paper protocol does with its inputs; ``--restored-fraction F`` replaces a fraction F of
  the degraded patches by patches of the model's own restorations of noisy bsd400 crops (the
  degraded half), so the critic also learns to score its own artefacts high. ``--paired``: each
  noisy patch is the noise added to the clean patch beside it (clean half only); ``--slope W``: the
  slope penalty of weight W on those pairs (``alr train --slope``, README "The slope penalty").
* ``ensemble M1,M2,...``: R = mean of the critics' R, built as one wider critic with
  block-diagonal weights.
* ``clipped MODEL``: the data term on clipped inputs. On the model's calibration crops (set12 or
  cbsd432, as ``alr bench calibrate``), noise ``--sigma`` seeded 1, at the model's lambda times 0.25,
  0.5 and 1: PSNR on unclipped inputs (Gaussian term), on clipped inputs with the Gaussian term and
  with the censored one (``alr.fidelity.ClippedGaussian``).
* ``symmetric MODEL``: R averaged over the 8 flips / quarter turns (``alr restore --symmetric``). On
  the 12 calibration crops of ``alr bench calibrate --cal-images 12`` (unclipped noise, seed 1), at
  sigma 0.1 and 0.2, the model's solver and lambda times 0.7, 1 and 1.4: PSNR with R and with R_sym.
* ``solver MODEL``: the restoration schedule of the authors' released code
  (github.com/jprost76/LocalReg, ``denoising.py``: Adam, 50 iterations, learning rate 0.1 -> 0.01,
  from the noisy image, the paper's R) against the model's default solver at its table's lambda, on
  the crops of ``eval`` (noise ``--sigma``, clipped); Adam's lambda by the same line search.
* ``semidual MODEL -o OUT``: the quadratic-cost (W2) Kantorovich potential phi in place of the W1
  critic, trained from MODEL's weights (``new``: from scratch) by the minibatch semi-dual
  ``max E_q[phi(q)] + E_p[min_j (||p - q_j||^2 / 2 - phi(q_j))]`` (the c-transform over the batch's
  degraded patches q_j; no Lipschitz penalty) for ``--seconds`` on cbsd432 read as gray, sigma ~
  U[0, 0.4], batch ``--batch``, Adam (0.9, 0.999), lr ``--lr0`` -> ``--lr1``; then scored like
  ``eval`` with R = mean_p phi(p), whose gradient at a degraded patch is its transport displacement.
* ``multiscale MODEL``: context beyond the 13x13 patch from the same critic, ``R(x) + w R(avgpool_2(x))``
  (the half-resolution image: natural images look alike across scales, and there the noise is
  halved), w = 0 ... 0.5, the paper's R, ``--iters`` L-BFGS iterations (default 8), on the crops of
  ``eval`` at the model's lambda times 0.5 ... 1.4.
* ``iters MODEL``: early stopping. For sigma 0.1 / 0.2 / 0.4, both protocols (clipped or not), the
  mean PSNR after 5, 8 and 20 L-BFGS iterations at the model's lambda times 0.7, 1 and 1.4.

The runs reported in the README (ALR_DATA set; T=docs/models/table1)::

    python research/scripts/probe_critic.py eval $T/critic_0.1.safetensors
    python research/scripts/probe_critic.py finetune $T/critic_0.1.safetensors --steps 5 -o runs/probe_5.safetensors
    python research/scripts/probe_critic.py finetune $T/critic_0.1.safetensors --clip -o runs/probe_clip.safetensors
    python research/scripts/probe_critic.py finetune $T/critic_0.1.safetensors --restored-fraction 0.5 \
        -o runs/probe_restored.safetensors
    python research/scripts/probe_critic.py finetune $T/critic_0.1.safetensors --steps 8000 --lr0 3e-4 \
        -o runs/probe_long.safetensors
    python research/scripts/probe_critic.py finetune $T/critic_0.1.safetensors --paired [--slope W] -o runs/paired_W.safetensors
    python research/scripts/probe_critic.py ensemble \
        $T/critic_0.05.safetensors,$T/critic_0.1.safetensors,$T/critic_0.2.safetensors,$T/critic_range.safetensors
    python research/scripts/probe_critic.py iters gray
    python research/scripts/probe_critic.py solver gray --sigma 0.1
    python research/scripts/probe_critic.py solver gray --sigma 0.2
    python research/scripts/probe_critic.py clipped color --sigma 0.4
    python research/scripts/probe_critic.py symmetric gray
    python research/scripts/probe_critic.py multiscale gray
    python research/scripts/probe_critic.py lambda gray --sigma 0.1
    python research/scripts/probe_critic.py eval runs/cpu_recipe/lr_new.safetensors.ckpt --iters 8 --concavity 0
    python research/scripts/probe_critic.py semidual new --lr0 1e-3 --lr1 1e-4 --iters 20 --concavity 0 --lam 0.005 \
        -o runs/semidual_new.safetensors
"""
import argparse
import time

import torch

import alr
from alr.bench.experiments import calibration_crops
from alr.calibration import line_search
from alr.critic import CRITERIA, PatchCritic
from alr.data import Degradation, ImageStack, PatchPairs, add_noise, make_patch_pairs, split_unpaired
from alr.fidelity import ClippedGaussian
from alr.images import data_root
from alr.metrics import psnr
from alr.pretrained import solver_options
from alr.train import TrainConfig, continue_from, train_critic

CROP, IMAGES = 128, 8


def probe_crops(root, sigma: float, images: int = IMAGES) -> tuple[torch.Tensor, torch.Tensor]:
    """The validation crops and their noisy versions (noise ``sigma``, seed 1, clipped to [0, 1])."""
    x = calibration_crops(root / "set12", 1, False, images=images, crop=CROP)
    return x, add_noise(x, sigma, seed=1, clip=True)


def score(model, x, y, lam0: float, opts: dict, evals: int = 6) -> tuple[float, float]:
    """(best lambda, best mean PSNR) on the crops ``x`` restored from ``y`` with solver options ``opts``."""
    def f(lam: float) -> float:
        return float(psnr(alr.solver.minimize(y, None, model, lam, **opts)[0], x).mean())

    best, seen = line_search(f, lam0, evals)
    print("  lambda -> PSNR:", ", ".join(f"{k:.3g}: {v:.3f}" for k, v in sorted(seen.items())), flush=True)
    return best, seen[best]


def lambda_grid(model, root, sigma: float) -> None:
    """Print the mean PSNR per lambda factor, and the global best against the per-crop oracle."""
    x, y = probe_crops(root, sigma, images=12)
    lam, opts = alr.lam_for(model, "denoise", sigma), solver_options(model, "denoise", sigma)
    factors = (0.35, 0.5, 0.7, 1.0, 1.4, 2.0, 2.8)
    table = torch.stack([psnr(alr.solver.minimize(y, None, model, f * lam, **opts)[0], x) for f in factors])
    for f, row in zip(factors, table):
        print(f"lambda {f * lam:.3g} (x{f}): {float(row.mean()):.3f} dB", flush=True)
    best = [factors[i] for i in table.argmax(0).tolist()]
    print(f"sigma {sigma}: one lambda {float(table.mean(1).max()):.3f} dB, each crop its own "
          f"{float(table.max(0).values.mean()):.3f} dB (factors {best})")


def load_probe_model(name: str, activation: str, criterion: str) -> PatchCritic:
    """A model file or shipped name, or a training checkpoint of a :class:`PatchCritic` (depth, width
    and channels read from its weights; the activation and criterion are not stored there)."""
    if not name.endswith(".ckpt"):
        return alr.load(name)
    state = torch.load(name, map_location="cpu", weights_only=True)
    weights = [v for k, v in state["model"].items() if k.endswith("weight")]
    model = PatchCritic(weights[0].shape[1], len(weights), weights[0].shape[0], activation, criterion)
    model.load_state_dict(state["model"])
    print(f"{name}: checkpoint at step {state['step']}")
    return model.eval().requires_grad_(False)


def solver_grid(model, root, sigma: float) -> None:
    """Print the default solver's PSNR at the table's lambda and the authors' Adam schedule's best."""
    lam = alr.lam_for(model, "denoise", sigma)
    default = solver_options(model, "denoise", sigma)
    x, y = probe_crops(root, sigma)
    print(f"sigma {sigma}, default solver {default}, lambda {lam:.3g}: "
          f"{float(psnr(alr.solver.minimize(y, None, model, lam, **default)[0], x).mean()):.3f} dB", flush=True)
    theirs = {**default, "method": "adam", "iters": 50, "lr0": 0.1, "lr1": 0.01, "concavity": 0.0}
    best, value = score(model, x, y, lam, theirs, evals=7)
    print(f"sigma {sigma}, Adam 50 iterations, lr 0.1 -> 0.01, paper's R: {value:.3f} dB at lambda {best:.3g}")


def ensemble(models: list[PatchCritic]) -> PatchCritic:
    """One critic whose R is the mean of the models' R (same depth and width, w1 critics: R linear in u)."""
    k, m0 = len(models), models[0]
    if any(m.criterion != "w1" for m in models):
        raise ValueError("ensemble needs w1 critics (the mean of u^2 / 2 is not one critic's score)")
    out = PatchCritic(m0.in_channels, m0.depth, m0.width * k, m0.activation)
    convs = [[c for c in m.net if isinstance(c, torch.nn.Conv2d)] for m in models]
    w = m0.width
    with torch.no_grad():
        for li, layer in enumerate(c for c in out.net if isinstance(c, torch.nn.Conv2d)):
            layer.weight.zero_()
            layer.bias.zero_()
            for j, cs in enumerate(convs):
                src, blk = cs[li], slice(j * w, (j + 1) * w)
                if li == 0:
                    layer.weight[blk], layer.bias[blk] = src.weight, src.bias
                elif li == m0.depth - 1:
                    layer.weight[:, blk] = src.weight / k
                    layer.bias += src.bias / k
                else:
                    layer.weight[blk, blk], layer.bias[blk] = src.weight, src.bias
    return out.eval()


def finetune(model, root, args) -> PatchCritic:
    stack = ImageStack.from_folder(root / "bsd400", 1)
    ci, di = split_unpaired(len(stack), 0)
    clean, source = stack.subset(ci), stack.subset(di)
    g = torch.Generator().manual_seed(123)
    restored = None
    if args.restored_fraction > 0:
        x = source.sample(args.restored_crops, 96, g)
        y = x + args.sigma * torch.randn(x.shape, generator=g)
        opts = solver_options(model)
        xr = torch.cat([alr.solver.minimize(y[i:i + 16], None, model, args.lam, **opts)[0]
                        for i in range(0, len(y), 16)])
        print(f"restored {len(y)} crops: {float(psnr(xr, x).mean()):.2f} dB")
        restored = ImageStack(list(xr))
    noise, s = Degradation(args.sigma, args.sigma), model.receptive_field
    paired = PatchPairs(clean, clean, s, noise, paired=True) if args.paired else None

    def sampler(n: int, gen: torch.Generator):
        if paired is not None:
            return paired.sample(n, gen)
        k = round(n * args.restored_fraction) if restored is not None else 0
        q = noise(source.sample(n - k, s, gen), gen)
        q = q.clamp(0, 1) if args.clip else q
        if k:
            q = torch.cat([q, restored.sample(k, s, gen)])
        return clean.sample(n, s, gen), q

    continue_from(model, args.models)
    model.meta["continued_from"]["probe"] = {k: v for k, v in vars(args).items() if k != "data"}
    cfg = TrainConfig(steps=args.steps, batch_size=256, lr0=args.lr0, lr1=1e-5, ckpt_every=10 ** 9, slope=args.slope,
                      seed=args.seed)
    return train_critic(model, sampler, cfg, out=args.output, progress=False)


def semidual(model, root, args) -> PatchCritic:
    """Train ``model`` as a quadratic-cost Kantorovich potential (minibatch semi-dual, see the docstring)."""
    pairs = make_patch_pairs(root / "cbsd432", model.receptive_field, 1, None, Degradation(0.0, 0.4), seed=0)
    g = torch.Generator().manual_seed(0)
    model.requires_grad_(True).train()
    opt = torch.optim.Adam(model.parameters(), lr=args.lr0, betas=(0.9, 0.999))
    schedule = TrainConfig(steps=10 ** 12, lr0=args.lr0, lr1=args.lr1, max_seconds=args.seconds)  # by the clock
    t0, step = time.perf_counter(), 0
    while (elapsed := time.perf_counter() - t0) < args.seconds:
        for grp in opt.param_groups:
            grp["lr"] = schedule.lr(step, elapsed)
        p, q = pairs.sample(args.batch, g)
        phi = model(q).flatten()
        cost = 0.5 * torch.cdist(p.flatten(1), q.flatten(1)) ** 2
        dual = phi.mean() + (cost - phi[None, :]).min(dim=1).values.mean()
        opt.zero_grad(set_to_none=True)
        (-dual).backward()
        opt.step()
        step += 1
        if step % 1000 == 0:
            print(f"step {step}, {elapsed:.0f} s: semi-dual {float(dual.detach()):.4f}", flush=True)
    if model.meta:
        continue_from(model, args.models)
    model.meta["semidual"] = {"steps": step, "seconds": args.seconds, "batch": args.batch,
                              "lr": [args.lr0, args.lr1]}
    alr.save(model.eval().requires_grad_(False), args.output)
    return model


def iteration_grid(model, root) -> None:
    """Print the PSNR grid (iterations x lambda) per protocol and noise level."""
    x = calibration_crops(root / "set12", 1, False, images=IMAGES, crop=CROP)
    opts = {**solver_options(model), "iters": None}
    for clip in (True, False):
        for sigma in (0.1, 0.2, 0.4):
            y = add_noise(x, sigma, seed=1, clip=clip)
            lams = [f * alr.lam_for(model, "denoise", sigma) for f in (0.7, 1.0, 1.4)]
            for it in (5, 8, 20):
                vals = [float(psnr(alr.solver.minimize(y, None, model, lam, **{**opts, "iters": it})[0], x).mean())
                        for lam in lams]
                print(f"{'paper' if clip else 'standard'} sigma {sigma} iters {it:2d}: " +
                      ", ".join(f"lambda {lam:.3g}: {v:.2f}" for lam, v in zip(lams, vals)), flush=True)


def clipped_grid(model, root, sigma: float) -> None:
    """Print PSNR for unclipped / clipped inputs, Gaussian / censored data term, over lambda."""
    x = calibration_crops(root / ("cbsd432" if model.in_channels == 3 else "set12"), model.in_channels, False)
    opts = solver_options(model, "denoise", sigma)
    y = add_noise(x, sigma, seed=1)
    yc = y.clamp(0, 1)
    for f in (0.25, 0.5, 1.0):
        lam = f * alr.lam_for(model, "denoise", sigma)
        runs = {"unclipped, Gaussian": (y, None), "clipped, Gaussian": (yc, None),
                "clipped, censored": (yc, ClippedGaussian(sigma))}
        vals = {k: float(psnr(alr.solver.minimize(v, None, model, lam, fidelity=fid, **opts)[0], x).mean())
                for k, (v, fid) in runs.items()}
        print(f"sigma {sigma} lambda {lam:.3g} (x{f}): " + ", ".join(f"{k} {v:.2f}" for k, v in vals.items()),
              flush=True)


def symmetric_grid(model, root) -> None:
    """Print PSNR with R and with the symmetrised R over lambda, at sigma 0.1 and 0.2."""
    x = calibration_crops(root / "set12", 1, False, images=12)
    for sigma in (0.1, 0.2):
        y = add_noise(x, sigma, seed=1)
        opts = solver_options(model, "denoise", sigma)
        for f in (0.7, 1.0, 1.4):
            lam = f * alr.lam_for(model, "denoise", sigma)
            vals = {sym: float(psnr(alr.solver.minimize(y, None, model, lam, symmetric=sym, **opts)[0], x).mean())
                    for sym in (False, True)}
            print(f"sigma {sigma} lambda {lam:.3g} (x{f}): R {vals[False]:.2f}, R_sym {vals[True]:.2f}", flush=True)


def multiscale_grid(model, root, sigma: float, iters: int) -> None:
    """Print PSNR of ``R_w(x) = R(x) + w R(avgpool_2(x))`` (the paper's R, reflect boundary) over w and lambda."""
    from alr.critic import pad_boundary
    from alr.solver import Energy, History, _lbfgs_one

    x, y = probe_crops(root, sigma)
    s = model.receptive_field

    def energy_of(yi: torch.Tensor, lam: float, w: float):
        def energy(z: torch.Tensor) -> Energy:
            z = z.detach().requires_grad_(True)
            with torch.enable_grad():
                data = 0.5 * (z - yi).pow(2).mean()
                r = model(pad_boundary(z, s, "reflect")).mean()
                if w:
                    r = r + w * model(pad_boundary(torch.nn.functional.avg_pool2d(z, 2), s, "reflect")).mean()
                g, = torch.autograd.grad(data + lam * r, z)
            return Energy((data + lam * r).detach().view(1), data.detach().view(1), r.detach().view(1),
                          z.numel() * g)  # Energy holds n grad E
        return energy

    lam0 = alr.lam_for(model, "denoise", sigma)
    for w in (0.0, 0.05, 0.1, 0.25, 0.5):
        vals = {}
        for f in (0.5, 0.7, 1.0, 1.4):
            out = [_lbfgs_one(energy_of(y[i:i + 1], f * lam0, w), y[i:i + 1], iters, History()).clamp(0, 1)
                   for i in range(len(x))]
            vals[f] = float(psnr(torch.cat(out), x).mean())
        print(f"sigma {sigma} w {w}: " + ", ".join(f"lambda {f * lam0:.3g}: {v:.3f}" for f, v in vals.items()),
              flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("probe", choices=["eval", "finetune", "ensemble", "iters", "clipped", "symmetric", "solver",
                                       "lambda", "semidual", "multiscale"])
    ap.add_argument("models", help="model name or file (comma-separated for ensemble)")
    ap.add_argument("--sigma", type=float, default=0.1)
    ap.add_argument("--lam", type=float, default=0.01, help="start of the lambda line search")
    ap.add_argument("--steps", type=int, default=1500)
    ap.add_argument("--lr0", type=float, default=1e-4)
    ap.add_argument("--lr1", type=float, default=1e-5, help="final learning rate (semidual)")
    ap.add_argument("--seconds", type=float, default=1800.0, help="training time (semidual)")
    ap.add_argument("--batch", type=int, default=128, help="batch size (semidual)")
    ap.add_argument("--clip", action="store_true")
    ap.add_argument("--seed", type=int, default=0, help="finetune: seed of the training's patch draws")
    ap.add_argument("--slope", type=float, default=0.0, help="finetune: weight of the slope penalty (with --paired)")
    ap.add_argument("--paired", action="store_true", help="finetune: each degraded patch is its clean patch plus noise")
    ap.add_argument("--restored-fraction", type=float, default=0.0)
    ap.add_argument("--restored-crops", type=int, default=128)
    ap.add_argument("--activation", default="relu", help="activation of a checkpoint's critic (eval)")
    ap.add_argument("--criterion", default="w1", choices=CRITERIA, help="criterion of a checkpoint's critic (eval)")
    ap.add_argument("--iters", type=int, help="L-BFGS iterations (eval, ensemble, finetune; default: the model's solver)")
    ap.add_argument("--concavity", type=float, help="score shaping (eval, ensemble, finetune; default: the model's solver)")
    ap.add_argument("-o", "--output")
    ap.add_argument("--data")
    args = ap.parse_args()
    root = data_root(args.data)
    models = [PatchCritic(1) if m == "new" else load_probe_model(m, args.activation, args.criterion)
              for m in args.models.split(",")]
    if args.probe in ("finetune", "semidual") and not args.output:
        ap.error(f"{args.probe} needs -o OUT.safetensors")
    t0 = time.perf_counter()
    if args.probe == "iters":
        return iteration_grid(models[0], root)
    if args.probe == "clipped":
        return clipped_grid(models[0], root, args.sigma)
    if args.probe == "symmetric":
        return symmetric_grid(models[0], root)
    if args.probe == "solver":
        return solver_grid(models[0], root, args.sigma)
    if args.probe == "lambda":
        return lambda_grid(models[0], root, args.sigma)
    if args.probe == "multiscale":
        return multiscale_grid(models[0], root, args.sigma, args.iters or 8)
    if args.probe == "ensemble":
        model = ensemble(models)
    elif args.probe == "finetune":
        model = finetune(models[0], root, args)
    elif args.probe == "semidual":
        model = semidual(models[0], root, args)
    else:
        model = models[0]
    opts = solver_options(model)
    opts.update({k: v for k, v in (("iters", args.iters), ("concavity", args.concavity)) if v is not None})
    lam, value = score(model, *probe_crops(root, args.sigma), args.lam, opts)
    print(f"{args.probe} {args.models}: {value:.2f} dB at lambda {lam:.3g} (sigma {args.sigma}), "
          f"{time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
