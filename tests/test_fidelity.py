"""The data terms of alr.fidelity: derivatives, agreement with the Gaussian term, restoration of clipped data."""
import pytest
import torch

import alr
from alr.data import add_noise
from alr.fidelity import ClippedGaussian, Gaussian
from alr.metrics import psnr


def _measurement():
    g = torch.Generator().manual_seed(0)
    u = torch.rand(2, 1, 6, 7, generator=g, dtype=torch.float64) * 1.6 - 0.3
    y = (torch.rand(2, 1, 6, 7, generator=g, dtype=torch.float64) * 1.4 - 0.2).clamp(0, 1)
    return u, y


@pytest.mark.parametrize("fid", [Gaussian(), ClippedGaussian(0.2), ClippedGaussian([0.05, 0.4])])
def test_gradient_matches_finite_differences(fid):
    u, y = _measurement()
    assert ((y == 0).any() and (y == 1).any())  # both censored sides are exercised
    _, grad = fid(u, y)
    n = u[0].numel()
    v = torch.randn_like(u)
    eps = 1e-6
    fd = (fid(u + eps * v, y)[0] - fid(u - eps * v, y)[0]) / (2 * eps)
    assert torch.allclose(fd * n, (grad * v).flatten(1).sum(1), rtol=1e-6, atol=1e-9)


def test_clipped_term_is_gaussian_on_unclipped_pixels_and_convex():
    u, y = _measurement()
    inside = (y > 0) & (y < 1)
    gc, gg = ClippedGaussian(0.1)(u, y)[1], Gaussian()(u, y)[1]
    assert torch.equal(gc[inside], gg[inside])
    y_in = y.clamp(0.01, 0.99)
    assert torch.allclose(ClippedGaussian(0.1)(u, y_in)[0], Gaussian()(u, y_in)[0])
    # convex in u: second differences along a random line are >= 0
    v = torch.randn_like(u)
    t = torch.linspace(-1, 1, 21, dtype=torch.float64)
    f = torch.stack([ClippedGaussian(0.1)(u + s * v, y)[0] for s in t])
    assert (f[2:] - 2 * f[1:-1] + f[:-2] >= -1e-12).all()
    # at a pixel read as 0 the pull points down, and fades once u is well below the bound
    g0 = ClippedGaussian(0.1)(torch.tensor([[[[0.2, -0.5]]]]), torch.zeros(1, 1, 1, 2))[1].flatten()
    assert g0[0] > 0.2 and 0 < g0[1] < 1e-3


def test_single_precision_gradient_holds_far_past_the_bound():
    """The solver runs in float32: the censored pull stays accurate where Phi(t) underflows (u far
    above a pixel read as 0, y at a small sigma), matching the float64 value."""
    u = torch.tensor([0.0, 0.01, 0.1, 1.0, 3.0, 30.0, -0.5]).view(1, 1, 1, -1)
    y = torch.zeros_like(u)
    for sigma in (0.001, 0.01, 0.1):
        g32 = ClippedGaussian(sigma)(u, y)[1]
        g64 = ClippedGaussian(sigma)(u.double(), y.double())[1]
        assert torch.isfinite(g32).all()
        assert torch.allclose(g32.double(), g64, rtol=1e-4, atol=1e-7)
    assert float(ClippedGaussian(0.001)(u, y)[1].flatten()[5]) == pytest.approx(30.0, rel=1e-4)  # ~ u itself


def test_bad_noise_levels_are_refused():
    with pytest.raises(ValueError, match="sigma > 0"):
        ClippedGaussian(0.0)
    with pytest.raises(ValueError, match="sigma > 0"):
        ClippedGaussian(float("nan"))
    with pytest.raises(ValueError, match="3 noise levels for a batch of 2"):
        ClippedGaussian([0.1, 0.2, 0.3])(*_measurement())


def test_clipped_term_restores_clipped_noisy_images_better(camera):
    gray = alr.load("gray")
    x = camera[..., ::4, ::4]  # dark coat and bright sky: many pixels clip at sigma 0.3
    sigma = 0.3
    y = add_noise(x, sigma, seed=0, clip=True)
    assert float(((y == 0) | (y == 1)).float().mean()) > 0.15
    lam = alr.lam_for(gray, "denoise", sigma)
    plain, _ = alr.solver.minimize(y, None, gray, lam, method="lbfgs", iters=20)
    clipped, _ = alr.solver.minimize(y, None, gray, lam, method="lbfgs", iters=20, fidelity=ClippedGaussian(sigma))
    assert float(psnr(clipped, x)) > float(psnr(plain, x)) + 0.5
