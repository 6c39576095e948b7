import math
import re

import pytest
import torch

import alr
from alr.data import add_noise
from alr.metrics import psnr
from alr.physics import Blur, Denoising, Downsampling, Inpainting, gaussian_kernel, random_mask


@pytest.fixture(scope="module")
def gray():
    return alr.load("gray")


def test_denoising_beats_noisy_input(gray, camera):
    x = camera[..., 200:296, 200:296]
    y = add_noise(x, 0.1, seed=0)
    lam = alr.lam_for(gray, "denoise", 0.1)
    xh, hist = alr.solver.minimize(y, Denoising(), gray, lam, iters=100)
    assert float(psnr(xh, x)) > float(psnr(y, x)) + 3
    assert hist.objective[-1] < hist.objective[0] and len(hist.grad_norm) == 100


@pytest.mark.parametrize("method", ["gd", "agd", "lbfgs"])
def test_other_methods_decrease_energy_and_denoise(gray, camera, method):
    x = camera[..., 100:164, 100:164]
    y = add_noise(x, 0.1, seed=1)
    xh, hist = alr.solver.minimize(y, None, gray, alr.lam_for(gray, "denoise", 0.1), method=method, iters=30)
    assert hist.objective[-1] < hist.objective[0]
    assert float(psnr(xh, x)) > float(psnr(y, x))


@pytest.mark.parametrize("physics", [Blur(gaussian_kernel(1.6)), Inpainting(random_mask((64, 64), 0.5, 0)),
                                     Downsampling(2)])
def test_inverse_problems_improve_on_init(gray, camera, physics):
    x = camera[..., 256:320, 256:320]
    y = add_noise(physics.A(x), 0.01, seed=2)
    xh, _ = alr.solver.minimize(y, physics, gray, 0.005, iters=60)
    assert float(psnr(xh, x)) > float(psnr(physics.init(y).clamp(0, 1), x))


def test_batch_and_per_image_lambda(gray):
    y = torch.rand(3, 1, 32, 32)
    xh, _ = alr.solver.minimize(y, None, gray, torch.tensor([0.0, 0.01, 0.1]), iters=5)
    assert xh.shape == y.shape
    with pytest.raises(ValueError):
        alr.solver.minimize(y, None, gray, torch.tensor([0.1, 0.2]), iters=2)


def test_per_image_concavity_equals_single_solves(gray, camera):
    """A batch with one concavity per image (per channel too) solves each image as alone (Adam is
    per pixel), and the shaping changes the result."""
    x = torch.cat([camera[..., 100:148, 100:148], camera[..., 300:348, 200:248]])
    y = add_noise(x, 0.1, seed=4)
    opts = dict(iters=10, score_ref=3.0)
    both, _ = alr.solver.minimize(y, None, gray, 0.01, concavity=torch.tensor([0.0, 0.7]), **opts)
    for i, k in enumerate((0.0, 0.7)):
        one, _ = alr.solver.minimize(y[i:i + 1], None, gray, 0.01, concavity=k, **opts)
        assert torch.allclose(both[i], one[0], atol=1e-5)
    assert not torch.allclose(both[1], alr.solver.minimize(y[1:], None, gray, 0.01, **opts)[0][0], atol=1e-3)
    rgb = y.expand(-1, 3, -1, -1)
    col, _ = alr.solver.minimize(rgb, None, gray, 0.01, concavity=torch.tensor([0.0, 0.7]), per_channel=True, **opts)
    assert torch.allclose(col[:, :1], both, atol=1e-5)
    with pytest.raises(ValueError, match="concavity"):
        alr.solver.minimize(y, None, gray, 0.01, concavity=torch.tensor([0.1, 0.2, 0.3]))


class _Masks:
    """A user's operator (not an alr one) holding one mask per image, as a DeepInverse physics may."""

    def __init__(self, mask: torch.Tensor) -> None:
        self.mask = mask

    def A(self, x):
        return x * self.mask

    def A_adjoint(self, y):
        return y * self.mask


@pytest.mark.parametrize("method", ["gd", "agd", "nmapg", "lbfgs"])
def test_a_wrapped_operator_takes_a_starting_point(gray, method):
    """The Lipschitz bound of a wrapped operator, estimated at init, is estimated from x0 when
    the solver skips init."""
    mask = torch.stack([random_mask((24, 24), 0.3, seed=i) for i in range(2)]).unsqueeze(1)
    y = torch.rand(2, 1, 24, 24, generator=torch.Generator().manual_seed(0)) * mask
    _, hist = alr.solver.minimize(y, _Masks(mask), gray, 0.01, method=method, iters=3, x0=y)
    _, ref = alr.solver.minimize(y, Inpainting(mask), gray, 0.01, method=method, iters=3, x0=y)
    assert hist.objective == pytest.approx(ref.objective, rel=0.02)  # steps differ: the bound is 1.01 x 1


@pytest.mark.parametrize("together", [False, True], ids=["one-by-one", "lockstep"])
@pytest.mark.parametrize("case", ["denoise", "clipped", "inpaint", "wrapped-inpaint"])
def test_lbfgs_solves_each_image_of_a_batch_as_alone(gray, camera, case, together, monkeypatch):
    """L-BFGS on a batch gives each image its batch-of-one result: no image's line search or
    curvature depends on the others (per-image lambda, shaping, noise level and mask), whether
    the images are solved one after another (the CPU's way) or in lockstep with batched energies
    (accelerators'). The batched critic sums in another order (gradients differ by 1e-7), which
    the line search can amplify to a few 1e-3 on a pixel, by CPU (2.6e-3 on an AMD EPYC, under
    2e-3 on the machines of earlier runs); the PSNR check is the guard: the coupled solve of before
    moved whole images by 0.4 dB."""
    if together:
        monkeypatch.setattr(alr.solver, "SEQUENTIAL_DEVICES", ())
    from alr.fidelity import ClippedGaussian
    x = torch.cat([camera[..., 100:148, 100:148], camera[..., 300:348, 200:248], camera[..., 0:48, 0:48]])
    lam, kappa = torch.tensor([0.005, 0.01, 0.02]), torch.tensor([0.0, 0.7, 0.5])
    mask = torch.stack([random_mask((48, 48), 0.5, seed=i) for i in range(3)]).unsqueeze(1)
    sigmas = torch.tensor([0.05, 0.1, 0.2])
    phys = {"inpaint": Inpainting(mask), "wrapped-inpaint": _Masks(mask)}.get(case, Denoising())
    y = add_noise(phys.A(x), 0.1, seed=5, clip=case == "clipped")
    fid = ClippedGaussian(sigmas) if case == "clipped" else None
    opts = dict(method="lbfgs", iters=8, score_ref=3.0)
    both, hist = alr.solver.minimize(y, phys, gray, lam, concavity=kappa, fidelity=fid, **opts)
    ones = []
    for i in range(3):
        alone = _Masks(mask[i:i + 1]) if case == "wrapped-inpaint" else phys.select([i])
        one, h = alr.solver.minimize(y[i:i + 1], alone, gray, lam[i], concavity=kappa[i],
                             fidelity=fid.select([i]) if fid else None, **opts)
        assert float((both[i] - one[0]).abs().max()) < (1e-2 if together else 1e-6)
        assert float(psnr(both[i:i + 1], x[i:i + 1])) == pytest.approx(float(psnr(one, x[i:i + 1])), abs=0.01)
        ones.append(h.objective)
    assert hist.iterations == 8 and hist.objective == pytest.approx([sum(v) / 3 for v in zip(*ones)], rel=1e-4)


@pytest.mark.parametrize("together", [False, True], ids=["one-by-one", "lockstep"])
def test_lbfgs_batch_stops_cleanly_on_an_error(gray, camera, together, monkeypatch):
    """An exception raised during a batched L-BFGS (here by the callback) stops every image's
    solver and reaches the caller; nothing is left waiting."""
    import threading
    if together:
        monkeypatch.setattr(alr.solver, "SEQUENTIAL_DEVICES", ())
    y = add_noise(torch.cat([camera[..., :32, :32], camera[..., 32:64, :32]]), 0.1, seed=0)

    def fail(k, x):
        assert x.shape == y.shape
        if k == 2:
            raise RuntimeError("stop here")

    before = threading.active_count()
    with pytest.raises(RuntimeError, match="stop here"):
        alr.solver.minimize(y, None, gray, 0.01, method="lbfgs", iters=5, callback=fail)
    assert threading.active_count() == before


def test_per_channel_and_errors(gray):
    y = torch.rand(1, 3, 32, 32)
    with pytest.raises(ValueError, match="per_channel"):
        alr.solver.minimize(y, None, gray, 0.01, iters=2)
    xh, _ = alr.solver.minimize(y, None, gray, 0.01, iters=2, per_channel=True)
    assert xh.shape == y.shape
    with pytest.raises(ValueError, match="NaN"):
        alr.solver.minimize(torch.full((1, 1, 32, 32), float("nan")), None, gray, 0.01)
    with pytest.raises(ValueError, match="method"):
        alr.solver.minimize(torch.rand(1, 1, 32, 32), None, gray, 0.01, method="sgd")


def test_too_small_image_fails_before_any_progress_output(gray, capsys):
    with pytest.raises(ValueError, match="smaller than the critic's 13x13"):
        alr.solver.minimize(torch.rand(1, 1, 8, 40), None, gray, 0.01, method="lbfgs", progress=True)
    assert "restore (" not in capsys.readouterr().err


def test_weights_stay_frozen(gray):
    before = [p.clone() for p in gray.parameters()]
    alr.solver.minimize(torch.rand(1, 1, 32, 32), None, gray, 0.01, iters=3)
    assert all(torch.equal(a, b) for a, b in zip(before, gray.parameters()))


def test_tiled_restoration_matches_untiled():
    torch.manual_seed(0)
    critic = alr.PatchCritic(depth=3, width=8).double()
    y = torch.rand(1, 1, 60, 50, dtype=torch.float64)
    kw = dict(method="gd", iters=5, step=0.5, clip=False)
    full, _ = alr.solver.minimize(y.float(), None, critic.float(), 0.05, **kw)
    tiled, _ = alr.solver.minimize(y.float(), None, critic.float(), 0.05, max_memory=2e5, **kw)
    from alr.critic import Regularizer
    assert Regularizer(critic.float(), max_memory=2e5).tile_size(y.float()) is not None
    assert torch.allclose(full, tiled, atol=1e-5)


def test_compiled_critic_gives_the_same_gradient():
    from alr.critic import Regularizer
    torch.manual_seed(0)
    critic = alr.PatchCritic(depth=3, width=4)
    x = torch.rand(1, 1, 24, 20)
    r0, g0 = Regularizer(critic).value_and_grad(x)
    r1, g1 = Regularizer(critic, compile=True).value_and_grad(x)
    assert torch.allclose(r0, r1, atol=1e-6) and torch.allclose(g0, g1, atol=1e-6)


def test_a_tables_shaping_and_iterations_interpolate_between_its_levels():
    """Between two calibrated levels the shaping is linear and the iterations log-log in sigma;
    outside them the nearest level's; no sigma, no shaping."""
    m = alr.PatchCritic(depth=2, width=4)
    m.meta = {"lambda": {"denoise": {"sigma": [0.1, 0.4], "lam": [0.01, 0.04], "iters": [10, 40],
                                     "concavity": [0.0, 1.0], "score_ref": 3.0}}}
    opts = alr.pretrained.solver_options(m, "denoise", 0.2)
    assert opts["concavity"] == pytest.approx(0.5) and opts["iters"] == 20 and opts["score_ref"] == 3.0
    assert alr.pretrained.solver_options(m, "denoise", 0.8)["concavity"] == 1.0
    assert alr.pretrained.solver_options(m, "denoise", 0.05)["iters"] == 10
    assert "concavity" not in alr.pretrained.solver_options(m, "denoise")


@pytest.mark.parametrize("concavity", [0.0, 0.7])
def test_gd_step_schedule_is_eq5_with_one_step_per_iteration(concavity):
    """x_{k+1} = x_k - t_k (A^T(A x_k - y) + n lam grad R(x_k)), t_k from the schedule, with R the
    differentiable ``critic.regularizer`` (the README's "regulariser in your own algorithm"), shaped or not."""
    torch.manual_seed(0)
    critic = alr.PatchCritic(depth=3, width=8)
    y = torch.rand(2, 1, 24, 20)
    steps, lam, n = [0.3, 0.1, 0.2], 0.02, y[0].numel()
    shaping = dict(concavity=concavity, score_ref=float(critic(y).detach().median()))
    x = y.clone()
    for t in steps:
        x = x.requires_grad_(True)
        g, = torch.autograd.grad(critic.regularizer(x, **shaping).sum(), x)
        x = (x - t * ((x - y) + n * lam * g)).detach()
    out, hist = alr.solver.minimize(y, None, critic, lam, method="gd", step=steps, iters=3, clip=False, **shaping)
    assert torch.allclose(out, x, atol=1e-5) and len(hist.objective) == 3
    with pytest.raises(ValueError, match="one step per iteration"):
        alr.solver.minimize(y, None, critic, lam, method="gd", step=steps, iters=4)
    with pytest.raises(ValueError, match="method 'gd'"):
        alr.solver.minimize(y, None, critic, lam, method="lbfgs", step=steps, iters=3)


def test_every_method_has_a_memory_estimate():
    """The solve-size check (alr.solver.check_solve_memory) knows the vectors of every method."""
    from alr.solver import METHODS, SOLVER_VECTORS
    assert set(SOLVER_VECTORS) == set(METHODS)


@pytest.mark.parametrize("skipped", [(False, True), (True, True), (False, False)])
def test_a_solve_returns_float32_whatever_it_skips(skipped):
    """Images returned unchanged (no noise to remove) come back in the solver's float32 and in
    [0, 1] too, so a batch's dtype and range do not depend on which of its images were skipped."""
    from dataclasses import replace

    from alr.settings import Settings
    from alr.solver import solve
    y = torch.rand(2, 1, 16, 16, dtype=torch.float64) * 1.2 - 0.1  # noise takes a tensor out of [0, 1]
    s = Settings(task="denoise", sigma=0.1, lam=0.01, method="lbfgs", iters=2)
    x, _ = solve(y, None, alr.PatchCritic(depth=2, width=4), [replace(s, skip=k) for k in skipped])
    assert x.dtype == torch.float32 and x.shape == y.shape and 0 <= x.min() and x.max() <= 1
    for i, k in enumerate(skipped):
        assert not k or torch.equal(x[i], y[i].float().clamp(0, 1))  # a skipped image comes back as it was, in [0, 1]


def test_a_models_recommended_step_sizes_reach_the_solver():
    """A model recommending a first-order solver with its step sizes is restored with them (as it
    was calibrated); another method given by the caller drops them."""
    from alr.settings import resolve
    critic = alr.PatchCritic(depth=2, width=4)
    critic.meta = {"lambda": {"denoise": {"sigma": [0.1], "lam": [0.01]}},
                   "solver": {"method": "gd", "options": {"step": 0.5, "boundary": "reflect"}, "iters": {"denoise": 3}}}
    y = torch.rand(1, 1, 16, 16)
    assert resolve(critic, y, sigma=0.1).solver_kwargs()["step"] == 0.5
    assert "step" not in resolve(critic, y, sigma=0.1, method="lbfgs").solver_kwargs()


@pytest.mark.parametrize("task", ["denoise", "deblur"])
def test_restore_takes_one_noise_level_per_image(camera, task):
    """sigma may hold one value per image: each image is restored as alone, at its own level."""
    x = torch.cat([camera[..., 96:144, 96:144], camera[..., 160:208, 160:208]])
    op = Denoising() if task == "denoise" else Blur(gaussian_kernel(1.0))
    y = torch.cat([add_noise(op.A(x[:1]), 0.05, seed=0), add_noise(op.A(x[1:]), 0.1, seed=1)])
    both = alr.restore(y, "gray", sigma=torch.tensor([0.05, 0.1]), physics=op, iters=3)
    alone = torch.cat([alr.restore(y[i:i + 1], "gray", sigma=s, physics=op, iters=3) for i, s in enumerate((0.05, 0.1))])
    assert torch.allclose(both, alone, atol=1e-6)
    with pytest.raises(alr.AlrError, match="3 noise levels for 2 images"):
        alr.restore(y, "gray", sigma=[0.1, 0.1, 0.1], physics=op)


@pytest.mark.parametrize("fails", [False, True], ids=["solved", "failed"])
def test_a_solve_gives_the_critic_and_operator_back_as_they_came(fails):
    """minimize freezes the critic (eval mode, no parameter gradients, channels_last) only while it
    solves: a critic being trained, restored between steps, keeps training (also when the solve fails)."""
    critic = alr.PatchCritic(depth=2, width=4).train()
    params = list(critic.parameters())
    params[0].requires_grad_(False)  # flags that differ between parameters come back as they were
    flags = [p.requires_grad for p in params]
    moves = []

    class Watched(Inpainting):  # records where the solve moves the operator (CPU here: cpu and back)
        def to(self, *a, **k):
            moves.append(a[0] if a else k.get("device"))
            return super().to(*a, **k)

    mask = Watched(random_mask((16, 16), 0.3, 0))

    def stop(k, x):
        if fails:
            raise RuntimeError("stop here")

    try:
        alr.solver.minimize(torch.rand(1, 1, 16, 16), mask, critic, 0.01, method="gd", iters=2, callback=stop)
    except RuntimeError:
        assert fails
    assert critic.training and all(m.training for m in critic.modules())
    assert [p.requires_grad for p in critic.parameters()] == flags and list(critic.parameters()) == params
    assert all(p.is_contiguous() for p in critic.parameters())
    assert [str(d) for d in moves] == ["cpu", "cpu"]  # to the solve's device, then back home


@pytest.mark.parametrize("option,value,message", [
    ("lr0", 0.0, "lr0 must be a finite number > 0, got 0.0"),
    ("lr1", -1e-4, "lr1 must be a finite number > 0"),
    ("step", float("nan"), "step must be a finite number > 0, got nan"),
    ("step", [0.1, 0.0], r"step must be a finite number > 0, got \[0.1, 0.0\]"),
])
def test_solver_steps_must_be_positive(option, value, message):
    """A learning rate or step of zero, below zero or NaN is refused in one line naming it (it would
    divide by zero, or silently return the start as converged)."""
    with pytest.raises(alr.AlrError, match=message):
        alr.solver.minimize(torch.rand(1, 1, 16, 16), None, alr.PatchCritic(depth=2, width=4), 0.01,
                            method="gd", iters=2, **{option: value})


@pytest.mark.parametrize("method", ["gd", "agd", "nmapg"])
def test_an_operator_that_measures_nothing_is_refused(method):
    with pytest.raises(alr.AlrError, match="Inpainting has .* = 0: it measures nothing"):
        alr.solver.minimize(torch.rand(1, 1, 16, 16), Inpainting(torch.zeros(16, 16)),
                            alr.PatchCritic(depth=2, width=4), 0.01, method=method, iters=2)


@pytest.mark.parametrize("method", ["gd", "agd", "nmapg"])
def test_a_line_search_that_finds_no_descent_stays_put(method):
    """Where backtracking finds no step that lowers the energy (here a data term whose gradient points
    uphill), the line-search methods keep the image at its last iterate instead of taking the last
    trial, and do not call that convergence."""
    from alr.fidelity import Gaussian
    from alr.solver import Problem

    class Uphill(Gaussian):  # a large gradient pointing uphill: no step, however short, passes Armijo
        def __call__(self, u, y):
            data, g = super().__call__(u, y)
            return data, -1e6 * g

    y = torch.rand(2, 1, 16, 16)
    x0 = torch.rand(2, 1, 16, 16)
    critic = alr.PatchCritic(depth=2, width=4)
    # one iteration: its line search fails outright (later ones shrink the step until float32 cannot
    # tell the trial from the point, which then counts as converged, as it should at that precision)
    x, hist = alr.solver.minimize(y, None, critic, 0.0, method=method, iters=1, x0=x0, fidelity=Uphill(), clip=False,
                                  tol=1e-3)
    energy = Problem(y, Denoising(), alr.critic.Regularizer(critic), torch.zeros(2), Uphill()).energy
    assert torch.equal(x, x0) and (energy(x, need_grad=False).value <= energy(x0, need_grad=False).value).all()
    assert not hist.converged  # it stayed put for want of a descent, which is not convergence


#: alr.restore's refusals: name -> (keyword arguments, what its message says: the keyword beside the CLI's option).
API_REFUSALS = {
    "sigma": ({"task": "deblur", "physics": Blur(gaussian_kernel(1.0))}, "sigma (--sigma"),
    "clipped": ({"sigma": 0.0, "clipped": True}, "clipped (--clipped) needs a noise level sigma > 0"),
    "concavity": ({"sigma": 0.1, "model": "gray", "concavity": 0.5, "task": "deblur", "lam": 0.01,
                   "physics": Blur(gaussian_kernel(1.0))}, "no score reference for concavity 0.5 (--concavity)"),
    "per_channel": ({"sigma": 0.1, "model": "gray", "rgb": True}, "per_channel=True, --per-channel"),
}


@pytest.mark.parametrize("case", API_REFUSALS)
def test_restore_refusals_name_the_keyword_a_python_caller_passes(case):
    kwargs, said = API_REFUSALS[case]
    kwargs = dict(kwargs)
    y = torch.rand(1, 3 if kwargs.pop("rgb", False) else 1, 32, 32)
    with pytest.raises(alr.errors.AlrError, match=re.escape(said)):
        alr.restore(y, **kwargs)


def test_psnr_is_a_score_not_a_loss():
    """alr.metrics.psnr of a tensor that requires grad builds no graph; clamp=False measures an
    unclipped noisy input as it is."""
    x = torch.full((1, 1, 8, 8), 0.5, requires_grad=True)
    ref = torch.full((1, 1, 8, 8), 0.4)
    p = psnr(x, ref)
    assert not p.requires_grad and float(p) == pytest.approx(20.0)
    assert float(psnr(x + 0.7, ref)) == pytest.approx(10 * math.log10(1 / 0.6 ** 2), abs=1e-4)  # 1.2 read as 1
    assert float(psnr(x + 0.7, ref, clamp=False)) == pytest.approx(10 * math.log10(1 / 0.8 ** 2), abs=1e-4)
