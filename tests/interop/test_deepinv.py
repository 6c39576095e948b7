"""DeepInverse interop (alr.integrations.deepinv), run by `make test-deepinv` in .venv-deepinv.

In the main environment (no DeepInverse, whose torchvision needs another torch build) the whole
module is skipped with the reason below.
"""
import doctest

import pytest
import torch

deepinv = pytest.importorskip("deepinv", reason="DeepInverse is not installed here: `make test-deepinv` runs these "
                                                "tests in .venv-deepinv")

import alr  # noqa: E402
from alr.data import Degradation  # noqa: E402
from alr.integrations import deepinv as ad  # noqa: E402
from alr.metrics import psnr  # noqa: E402
from alr.physics import Blur, Denoising, Downsampling, Inpainting, gaussian_kernel, motion_kernel, random_mask  # noqa: E402

dinv = deepinv


@pytest.fixture(scope="module")
def gray():
    return alr.load("gray")


def crop(camera, side: int) -> torch.Tensor:
    """A textured side x side crop of 'camera' (the cameraman's coat and the grass)."""
    return camera[..., 100:100 + side, 200:200 + side].contiguous()


def noise(sigma: float, seed: int = 0):
    return dinv.physics.GaussianNoise(sigma, rng=torch.Generator().manual_seed(seed))


def inner(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() * b.double()).sum())


def assert_adjoint(A, At, x: torch.Tensor) -> None:
    """<A x, y> = <x, A^T y> for random x and y."""
    g = torch.Generator().manual_seed(1)
    x = torch.rand(x.shape, generator=g)
    y = torch.rand(A(x).shape, generator=g)
    lhs, rhs = inner(A(x), y), inner(x, At(y))
    assert abs(lhs - rhs) <= 1e-5 * abs(lhs), (lhs, rhs)


def test_module_examples():
    result = doctest.testmod(ad, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0


# ----------------------------------------------------------------------------- the critic as a prior
@pytest.mark.parametrize("l2_sigma", [1.0, 0.1])
@pytest.mark.parametrize("physics", [None, Blur(gaussian_kernel(1.0))], ids=["denoise", "deblur"])
def test_prior_gd_is_alr_gd(camera, gray, physics, l2_sigma):
    """DeepInverse's GD on L2(s) + lambda R with lambda = n lam / s^2 and stepsize gamma s^2 makes the
    iterates of alr's gd (step gamma) on 1/(2n)||Ax - y||^2 + lam R: the scaling and the prior are exact.
    (Three iterations: later, float32 rounding that moves a pixel across a kink of the ReLU critic grows to
    1e-3 at a few pixels, in either library alike.)"""
    x = crop(camera, 32)
    op = physics or Denoising()
    y = op.A(x) + 0.1 * torch.randn(x.shape, generator=torch.Generator().manual_seed(0))
    prior = ad.CriticPrior(gray, sigma=0.1)
    opts = alr.pretrained.solver_options(gray, "denoise", 0.1)
    mine, _ = alr.solver.minimize(y, op, gray, prior.lam, method="gd", step=0.05, iters=3, clip=False,
                                  concavity=opts["concavity"], score_ref=opts["score_ref"])
    solver = dinv.optim.optim_builder(
        "GD", prior=prior, data_fidelity=dinv.optim.L2(sigma=l2_sigma), max_iter=3, early_stop=False,
        params_algo={"stepsize": 0.05 * l2_sigma ** 2, "lambda": ad.deepinv_lambda(prior.lam, x[0].numel(), l2_sigma)})
    with torch.no_grad():
        theirs = solver(y, ad.to_deepinv(op))
    assert (theirs - mine).abs().max() < 1e-6


def test_deepinv_gd_reaches_alr_restore(camera, gray):
    """deepinv.optim.optim_builder's gradient descent with the prior restores within 0.1 dB of alr.restore
    (its table: L-BFGS stopped after 8 iterations) on the same noisy crop. Measured: 28.59 dB vs 28.13."""
    x = crop(camera, 40)
    physics = dinv.physics.Denoising(noise(0.1))
    y = physics(x)
    ours = alr.restore(y, gray, sigma=0.1)
    prior = ad.CriticPrior(gray, sigma=0.1)
    solver = dinv.optim.optim_builder("GD", prior=prior, data_fidelity=dinv.optim.L2(), max_iter=40,
                                      params_algo={"stepsize": 0.05,
                                                   "lambda": ad.deepinv_lambda(prior.lam, x[0].numel())})
    with torch.no_grad():
        theirs = solver(y, physics).clamp(0, 1)
    gain = float(psnr(theirs, x) - psnr(ours, x))
    print(f"denoise sigma 0.1: input {float(psnr(y, x)):.2f} dB, alr.restore {float(psnr(ours, x)):.2f}, "
          f"DeepInverse GD with CriticPrior {float(psnr(theirs, x)):.2f}")
    assert gain > -0.1, gain
    assert float(psnr(theirs, x) - psnr(y, x)) > 6  # and it is a restoration: about +8 dB over the input


def test_prior_value_and_gradients(camera, gray):
    """fn is alr's R with the table's shaping; grad under no_grad (exact tiles) equals the autograd one."""
    x = crop(camera, 48)
    prior = ad.CriticPrior(gray, sigma=0.2, max_memory=2e6)
    assert prior.reg.tile_size(x) is not None  # the budget forces tiles
    opts = alr.pretrained.solver_options(gray, "denoise", 0.2)
    ref = gray.regularizer(x, concavity=opts["concavity"], score_ref=opts["score_ref"])
    assert torch.allclose(prior(x), ref, rtol=1e-5)
    with torch.no_grad():
        tiled = prior.grad(x)
    assert torch.allclose(tiled, prior.grad(x.clone()), atol=1e-6 * float(tiled.abs().max()) + 1e-9)
    assert prior.lam == alr.lam_for(gray, "denoise", 0.2)
    paper = ad.CriticPrior(gray)
    assert paper.lam is None and torch.allclose(paper(x), gray.regularizer(x))


def test_prior_shapes_around_the_tables_reference_and_takes_any_float(camera, gray):
    """A concavity given without sigma shapes around the table's score_ref (with 0 instead, R would
    be weighed by exp(k c), 13x at gray's 0.7); a model without one is refused; float64 / half in,
    the same dtype out."""
    x = crop(camera, 32)
    ref = alr.pretrained.solver_options(gray, "denoise", 0.2)["score_ref"]
    shaped = ad.CriticPrior(gray, concavity=0.7)
    assert torch.allclose(shaped(x), gray.regularizer(x, concavity=0.7, score_ref=ref), rtol=1e-5)
    with pytest.raises(alr.AlrError, match="score reference"):
        ad.CriticPrior(alr.PatchCritic(width=8), concavity=0.5)
    for dtype in (torch.float64, torch.float16):
        with torch.no_grad():
            assert ad.CriticPrior(gray).grad(x.to(dtype)).dtype == dtype
        assert ad.CriticPrior(gray)(x.to(dtype)).dtype == dtype


def test_prior_grad_leaves_the_input_alone(camera, gray):
    """grad with gradients enabled (DeepInverse's autograd path) does not set requires_grad on the caller's x."""
    x = crop(camera, 32)
    g = ad.CriticPrior(gray, sigma=0.1).grad(x)
    assert not x.requires_grad and g.shape == x.shape


def test_prior_follows_the_critics_dtype(camera):
    """After prior.double() a float64 image meets float64 weights: R and its gradient in float64."""
    prior = ad.CriticPrior("gray", sigma=0.1).double()
    x = crop(camera, 32).double()
    assert prior(x).dtype == torch.float64
    with torch.no_grad():
        assert prior.grad(x).dtype == torch.float64


def test_prox_minimises_its_objective(camera, gray):
    """prox_{gamma R}(x) = argmin_z 1/2||z - x||^2 + gamma R(z) (alr's L-BFGS): below the objective at x and
    at DeepInverse's default prox (fixed-step inner descent, which at this gamma rises above x: measured
    62.3 at x, 71.2 DeepInverse's, 50.1 ours); no graph, so an x that needs one is refused."""
    x = crop(camera, 32)
    y = x + 0.1 * torch.randn(x.shape, generator=torch.Generator().manual_seed(0))
    prior = ad.CriticPrior(gray, sigma=0.1)
    gamma = ad.deepinv_lambda(prior.lam, x[0].numel())

    @torch.no_grad()
    def h(z: torch.Tensor) -> float:
        return float(0.5 * ((z - y) ** 2).sum() + gamma * prior(z).sum())

    with torch.no_grad():
        z = prior.prox(y, None, gamma=gamma)
        default = dinv.optim.Potential.prox(prior, y, gamma=gamma)
    print(f"prox objective: at x {h(y):.2f}, DeepInverse's default prox {h(default):.2f}, CriticPrior.prox {h(z):.2f}")
    assert z.shape == y.shape and h(z) < h(y) - 5 and h(z) < h(default)
    with pytest.raises(alr.AlrError, match="no graph"):
        prior.prox(y.requires_grad_(), gamma=gamma)


@pytest.mark.parametrize("algo", ["PGD", "HQS"])
def test_deepinv_proximal_algorithms_with_the_prior(camera, gray, algo):
    """optim_builder's PGD / HQS (prox of the prior at gamma = lambda * stepsize) restore a noisy crop.
    Measured: input 20.40 dB, PGD 26.87, HQS 26.45 (2 iterations, 20 L-BFGS iterations per prox)."""
    x = crop(camera, 32)
    physics = dinv.physics.Denoising(noise(0.1))
    y = physics(x)
    prior = ad.CriticPrior(gray, sigma=0.1, prox_iters=20)
    solver = dinv.optim.optim_builder(algo, prior=prior, data_fidelity=dinv.optim.L2(), max_iter=2,
                                      params_algo={"stepsize": 1.0, "lambda": ad.deepinv_lambda(prior.lam, x[0].numel())})
    with torch.no_grad():
        out = solver(y, physics)
    print(f"{algo} with CriticPrior: input {float(psnr(y, x)):.2f} dB, output {float(psnr(out.clamp(0, 1), x)):.2f}")
    assert torch.isfinite(out).all() and float(psnr(out.clamp(0, 1), x) - psnr(y, x)) > 4


def test_noise_sigma_reads_gaussian_noise_only():
    """Denoising() holds DeepInverse's default GaussianNoise(0.1): noise_sigma reads 0.1, not None (estimate);
    another noise model gives None."""
    assert ad.noise_sigma(dinv.physics.Denoising()) == pytest.approx(0.1)
    assert ad.noise_sigma(dinv.physics.Denoising(dinv.physics.PoissonNoise(0.1))) is None
    assert ad.noise_sigma(ad.to_deepinv(Denoising())) is None  # ZeroNoise


def test_upsampling_has_no_table():
    """DeepInverse's Upsampling is a Downsampling subclass whose A upsamples: not the sr table."""
    up = dinv.physics.Upsampling(filter="bicubic", img_size=(1, 16, 16), factor=2)
    assert ad.task_of(up) is None and ad.task_of(dinv.physics.Downsampling(img_size=(1, 16, 16), factor=2, filter="bicubic")) == "sr"


# ----------------------------------------------------------------------------- physics both ways
@pytest.mark.parametrize("op", [Denoising(), Blur(motion_kernel(7, 30)), Inpainting(random_mask((32, 32), 0.4)),
                                Downsampling(2)], ids=["denoise", "blur", "inpaint", "sr"])
def test_alr_operators_as_deepinv_physics(op):
    """to_deepinv(op) is a LinearPhysics with op's A and an exact adjoint (DeepInverse's own test too)."""
    x = torch.rand(1, 1, 32, 32)
    physics = ad.to_deepinv(op)
    assert isinstance(physics, dinv.physics.LinearPhysics)
    assert torch.equal(physics.A(x), op.A(x))
    assert_adjoint(physics.A, physics.A_adjoint, x)
    assert abs(float(physics.adjointness_test(x))) < 1e-4
    assert ad.from_deepinv(physics) is op
    assert ad.task_of(physics) == {Denoising: "denoise", Blur: "deblur", Inpainting: "inpaint", Downsampling: "sr"}[type(op)]


def deepinv_physics(name: str, side: int):
    return {
        "blur": lambda: dinv.physics.Blur(gaussian_kernel(1.6)[None, None], padding="circular", noise_model=noise(0.03)),
        "blur-valid": lambda: dinv.physics.Blur(gaussian_kernel(1.6)[None, None], padding="valid", noise_model=noise(0.03)),
        "inpaint": lambda: dinv.physics.Inpainting(img_size=(1, side, side), mask=0.7, noise_model=noise(0.03),
                                                   rng=torch.Generator().manual_seed(2)),
        "sr": lambda: dinv.physics.Downsampling(img_size=(1, side, side), factor=2, filter="gaussian",
                                                noise_model=noise(0.02)),
        "ct": lambda: dinv.physics.Tomography(angles=24, img_width=side, normalize=True, noise_model=noise(0.02)),
    }[name]()


@pytest.mark.parametrize("name", ["blur", "blur-valid", "inpaint", "sr", "ct"])
def test_deepinv_physics_adjoint_in_alr(name):
    op = ad.from_deepinv(deepinv_physics(name, 32))
    assert isinstance(op, alr.physics.LinearOperator)
    assert_adjoint(op.A, op.A_adjoint, torch.rand(1, 1, 32, 32))


def test_alr_blur_is_deepinv_circular_blur():
    """alr's blur is a circular convolution: DeepInverse's Blur(padding="circular"), even for an asymmetric kernel."""
    k = motion_kernel(7, 30)
    x = torch.rand(2, 1, 24, 24)
    theirs = dinv.physics.Blur(k[None, None], padding="circular")
    assert torch.allclose(theirs.A(x), Blur(k).A(x), atol=1e-6)
    assert torch.allclose(theirs.A_adjoint(x), Blur(k).A_adjoint(x), atol=1e-6)


@pytest.mark.parametrize("name,reference,gain", [
    ("blur", lambda p, y: y, 2.5),
    ("blur-valid", lambda p, y: p.A_adjoint(y), 5),
    ("inpaint", lambda p, y: y, 10),
    ("sr", lambda p, y: torch.nn.functional.interpolate(y, scale_factor=2, mode="bicubic"), 1.5),
])
def test_restore_deepinv_measurements(camera, gray, name, reference, gain):
    """alr.restore takes a DeepInverse physics; alr.integrations.deepinv.restore reads the task and the noise
    level from it and gives the same result. Measured on this 48x48 crop: blur 25.4 -> 29.1 dB, valid blur
    16.7 (A^T y) -> 24.1, inpainting 16.2 -> 30.8, x2 super-resolution 25.1 (bicubic) -> 27.6."""
    x = crop(camera, 48)
    physics = deepinv_physics(name, 48)
    y = physics(x)
    sigma = ad.noise_sigma(physics)
    assert sigma == pytest.approx({"blur": 0.03, "blur-valid": 0.03, "inpaint": 0.03, "sr": 0.02}[name])
    task = ad.task_of(physics)
    assert task == {"blur": "deblur", "blur-valid": "deblur", "inpaint": "inpaint", "sr": "sr"}[name]
    out = alr.restore(y, gray, sigma=sigma, task=task, physics=physics)
    assert torch.allclose(ad.restore(y, physics, gray), out, atol=1e-4)
    before = float(psnr(reference(physics, y).clamp(0, 1), x))
    print(f"{name}: reference {before:.2f} dB, alr.restore {float(psnr(out, x)):.2f}")
    assert float(psnr(out, x)) > before + gain, (before, float(psnr(out, x)))


def test_restore_circular_blur_like_alr_blur(camera, gray):
    """The same measurements restored through DeepInverse's circular blur and alr's: the same image."""
    x = crop(camera, 40)
    k = gaussian_kernel(1.6)
    y = Blur(k).A(x) + 0.03 * torch.randn(x.shape, generator=torch.Generator().manual_seed(0))
    mine = alr.restore(y, gray, sigma=0.03, physics=Blur(k))
    theirs = ad.restore(y, dinv.physics.Blur(k[None, None], padding="circular"), gray, sigma=0.03)
    assert (mine - theirs).abs().max() < 1e-3


def test_restore_tomography(camera, gray):
    """An operator alr lacks: parallel-beam CT (24 angles) on the CPU, with lam given (no table).
    Measured: filtered back-projection 20.8 dB, alr 27.8 dB."""
    x = crop(camera, 48)
    physics = deepinv_physics("ct", 48)
    y = physics(x)
    assert ad.task_of(physics) is None
    with pytest.raises(alr.AlrError, match="give lam="):
        ad.restore(y, physics, gray)
    fbp = float(psnr(physics.A_dagger(y, fbp=True).clamp(0, 1), x))
    out = ad.restore(y, physics, gray, lam=1e-3, iters=100)
    print(f"ct: filtered back-projection {fbp:.2f} dB, alr.restore {float(psnr(out, x)):.2f}")
    assert float(psnr(out, x)) > fbp + 4, (fbp, float(psnr(out, x)))


# ----------------------------------------------------------------------------- training for a forward model
def test_poisson_gaussian_matches_deepinv():
    """alr's native Poisson-Gaussian (alr train --poisson) has the mean and variance of DeepInverse's
    PoissonGaussianNoise at every intensity."""
    g, sigma = 0.02, 0.03
    levels = torch.tensor([0.05, 0.3, 0.8]).view(3, 1, 1, 1).expand(3, 1, 64, 64)
    mine = Degradation(sigma, sigma, gain=g)(levels.repeat(20, 1, 1, 1), torch.Generator().manual_seed(0))
    theirs = dinv.physics.PoissonGaussianNoise(gain=g, sigma=sigma, rng=torch.Generator().manual_seed(0))(
        levels.repeat(20, 1, 1, 1))
    for q in (mine, theirs):
        q = q.view(20, 3, -1).transpose(0, 1).reshape(3, -1)
        assert torch.allclose(q.mean(1), levels[:, 0, 0, 0], atol=3e-3)
        assert torch.allclose(q.var(1), g * levels[:, 0, 0, 0] + sigma ** 2, rtol=0.05)


def test_physics_degradation_shapes():
    """Patches of side s + 2 margin give s x s degraded patches, seeded by the batch's generator; measurements of
    another shape need to_image."""
    x = torch.rand(4, 1, 17, 17)
    blur = dinv.physics.Blur(gaussian_kernel(1.0)[None, None], padding="valid", noise_model=dinv.physics.GaussianNoise(0.1))
    deg = ad.PhysicsDegradation(blur, margin=3)
    a, b = (deg(x, torch.Generator().manual_seed(5)) for _ in range(2))
    assert a.shape == (4, 1, 11, 11) and torch.equal(a, b)
    assert not torch.equal(a, deg(x, torch.Generator().manual_seed(6)))
    # the noise-free centre is the exact blur of the patch (valid padding: no border effect)
    clean = ad.PhysicsDegradation(dinv.physics.Blur(gaussian_kernel(1.0)[None, None], padding="circular"), margin=3)
    assert torch.allclose(clean(x, torch.Generator()), Blur(gaussian_kernel(1.0)).A(x)[..., 3:14, 3:14], atol=1e-6)
    down = dinv.physics.Downsampling(img_size=(1, 16, 16), factor=2, filter="gaussian")
    with pytest.raises(ValueError, match="to_image"):
        ad.PhysicsDegradation(down)(torch.rand(4, 1, 16, 16), torch.Generator())
    with pytest.raises(ValueError, match=r"^PhysicsDegradation: .*margin=.*to_image=[^\n]*$"):
        ad.PhysicsDegradation(blur)(x, torch.Generator())  # valid padding trims 3 pixels a side
    assert ad.PhysicsDegradation(down, to_image=down.A_adjoint)(torch.rand(4, 1, 16, 16), torch.Generator()).shape == (4, 1, 16, 16)


def test_train_critic_for_a_deepinv_forward_model(sample_dir, camera):
    """Critics trained on patches degraded by a DeepInverse blur with Poisson-Gaussian noise: a tiny new one
    learns to score degraded patches above clean ones (measured gap 0.08; 300 steps are too few for it to
    restore), and the shipped gray continued for 50 steps on that degradation restores the forward model's
    measurements (measured: 23.9 dB -> 27.8 dB)."""
    from alr.data import make_patch_pairs
    from alr.train import TrainConfig, continue_from, train_critic

    kernel = gaussian_kernel(1.0)
    physics = dinv.physics.Blur(kernel[None, None], padding="circular",
                                noise_model=dinv.physics.PoissonGaussianNoise(gain=0.01, sigma=0.02))
    deg = ad.PhysicsDegradation(physics, margin=kernel.shape[0] // 2)
    torch.manual_seed(0)
    tiny = alr.PatchCritic(depth=4, width=8)
    pairs = make_patch_pairs(sample_dir, tiny.receptive_field, 1, degradation=deg, seed=0)
    assert pairs.describe()["degradation"] == "DeepInverse Blur with PoissonGaussianNoise(gain=0.01, sigma=0.02)"
    train_critic(tiny, pairs.sample, TrainConfig(steps=300, batch_size=64, lr0=1e-3, lr1=1e-4, ckpt_every=10 ** 6))
    p, q = pairs.sample(256, torch.Generator().manual_seed(9))
    with torch.no_grad():
        gap = float(tiny(q).mean() - tiny(p).mean())
    print(f"tiny critic: mean score degraded - clean {gap:.3f}")
    assert gap > 0.02

    tuned = continue_from(alr.load("gray"), "gray")
    pairs = make_patch_pairs(sample_dir, tuned.receptive_field, 1, degradation=deg, seed=0)
    train_critic(tuned, pairs.sample, TrainConfig(steps=50, batch_size=32, lr0=1e-5, lr1=1e-6, ckpt_every=10 ** 6))
    assert tuned.meta["training"]["steps"] == 50
    x = crop(camera, 48)
    y = physics(x)
    out = alr.restore(y, tuned, physics=physics, lam=1e-3, iters=30)
    print(f"blur + Poisson-Gaussian: input {float(psnr(y, x)):.2f} dB, gray continued 50 steps {float(psnr(out, x)):.2f}")
    assert float(psnr(out, x)) > float(psnr(y, x)) + 2, (float(psnr(y, x)), float(psnr(out, x)))


# ----------------------------------------------------------------------------- the README example
def test_readme_example():
    """The README's DeepInverse example, run as written (its python block that imports deepinv)."""
    import re
    from pathlib import Path

    text = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    (code,) = [c for c in re.findall(r"^```python\n(.*?)^```", text, re.S | re.M) if "import torch, deepinv" in c]
    ns: dict = {}
    exec(compile(code, "README.md DeepInverse example", "exec"), ns)
    x, y, x1, x2 = (ns[k] for k in ("x", "y", "x1", "x2"))
    before = float(psnr(y, x))
    print(f"README example: input {before:.2f} dB, alr {float(psnr(x1, x)):.2f}, DeepInverse GD "
          f"{float(psnr(x2.clamp(0, 1), x)):.2f}")
    assert float(psnr(x1, x)) > before + 2 and float(psnr(x2.clamp(0, 1), x)) > before + 2


def test_restore_reads_one_noise_level_per_image(camera, gray):
    """A GaussianNoise holding one sigma per image: each image is restored at its own level."""
    x = torch.cat([crop(camera, 32), crop(camera, 32).flip(-1)])
    physics = dinv.physics.Denoising(dinv.physics.GaussianNoise(sigma=torch.tensor([0.05, 0.1])))
    assert ad.noise_sigma(physics) == pytest.approx([0.05, 0.1])
    y = x + torch.tensor([0.05, 0.1]).view(2, 1, 1, 1) * torch.randn(x.shape, generator=torch.Generator().manual_seed(0))
    both = ad.restore(y, physics, gray, iters=3)
    alone = torch.cat([alr.restore(y[i:i + 1], gray, sigma=s, iters=3) for i, s in enumerate((0.05, 0.1))])
    assert torch.allclose(both, alone, atol=1e-6)
