"""Baselines and calibration helpers: each restores better than its input."""
import math

import pytest
import torch

from alr.bench.baselines import GMM, bm3d_restore, epll_restore, tv_restore
from alr.data import add_noise
from alr.calibration import line_search
from alr.metrics import psnr
from alr.physics import Blur, gaussian_kernel
from alr.bench.experiments import EPLL_DIR as MODEL_DIR


@pytest.fixture(scope="module")
def gmm():
    return GMM.load(MODEL_DIR / "epll_gmm_1ch.safetensors")


def test_epll_denoises_and_deblurs(camera, gmm):
    x = camera[..., 128:192, 192:256]
    y = add_noise(x, 0.1, seed=0)
    assert float(psnr(epll_restore(y, None, 0.1, gmm), x)) > float(psnr(y, x)) + 5
    blur = Blur(gaussian_kernel(1.6))
    for sigma, gain in ((0.01, 3.0), (0.03, 2.0)):  # the noisier one was below its input before the p^2 weight
        yb = add_noise(blur.A(x), sigma, seed=0)
        assert float(psnr(epll_restore(yb, blur, sigma, gmm), x)) > float(psnr(yb.clamp(0, 1), x)) + gain
    with pytest.raises(ValueError, match="channel"):
        epll_restore(y.expand(-1, 3, -1, -1), None, 0.1, gmm)


def test_shipped_color_gmm_denoises_a_color_image():
    from skimage import data
    gmm3 = GMM.load(MODEL_DIR / "epll_gmm_3ch.safetensors")
    assert gmm3.dim == 192 and gmm3.patch == 8
    x = torch.from_numpy(data.astronaut()[100:164, 180:244]).permute(2, 0, 1)[None].float() / 255
    y = add_noise(x, 0.1, seed=0)
    assert float(psnr(epll_restore(y, None, 0.1, gmm3), x)) > float(psnr(y, x)) + 5


def test_tv_and_bm3d_denoise(camera):
    x = camera[..., 128:192, 192:256]
    y = add_noise(x, 0.1, seed=0)
    for xh in (tv_restore(y, None, 0.08), bm3d_restore(y, 0.1)):
        assert xh.shape == y.shape and float(psnr(xh, x)) > float(psnr(y, x)) + 4


def test_bm3d_per_channel_is_gray_bm3d_on_each_channel():
    from skimage import data
    x = torch.from_numpy(data.astronaut()[100:164, 180:244]).permute(2, 0, 1)[None].float() / 255
    y = add_noise(x, 0.1, seed=0)
    joint, alone = bm3d_restore(y, 0.1), bm3d_restore(y, 0.1, per_channel=True)
    gray = torch.cat([bm3d_restore(y[:, c:c + 1], 0.1) for c in range(3)], dim=1)
    assert torch.allclose(alone, gray, atol=1e-5)  # the bm3d package itself varies by ~1e-7 between calls
    # CBM3D groups on the luminance, where the channels' common signal stands out of the noise
    assert float(psnr(joint, x)) > float(psnr(alone, x)) > float(psnr(y, x)) + 4


def test_line_search_finds_the_log_maximum():
    calls = []

    def f(lam):
        calls.append(lam)
        return -(math.log2(lam) - math.log2(0.013)) ** 2

    best, evals = line_search(f, 0.001)
    assert abs(math.log2(best / 0.013)) <= 0.125 and len(evals) == len(calls) < 15  # quarter-octave steps
    best, evals = line_search(f, 0.001, max_evals=3)
    assert len(evals) == 3


@pytest.mark.parametrize("octaves", [k / 4 for k in range(-4, 5)])
def test_a_validation_search_finds_a_nearby_optimum_in_six_solves(octaves):
    """Between checkpoints the Validator searches from the last lambda by sqrt(2), then 2^(1/4),
    in 6 solves: an optimum on the quarter-octave grid up to an octave away, on either side, is
    found exactly."""
    from alr.calibration import Validator
    target = 0.01 * 2 ** octaves
    best, evals = line_search(lambda lam: -abs(math.log2(lam / target)), 0.01, max_evals=6,
                              factors=Validator.BETWEEN)
    assert math.isclose(best, target) and len(evals) <= 6


@pytest.mark.parametrize("task", ["deblur", "inpaint", "sr"])
def test_tv_reaches_its_minimiser_in_the_bench_iterations(camera, task):
    """The bench's TV column is the TV minimiser, not an early stop: the energy after the
    bench's iterations is within 0.05% of the energy after three times as many."""
    from alr.bench.baselines import _grad
    from alr.bench.experiments import TV_ITERS, tv_lambda
    from alr.calibration import BLUR_STD
    from alr.physics import Downsampling, Inpainting, random_mask
    x = camera[..., 96:160, 96:160]
    op = {"deblur": lambda: Blur(gaussian_kernel(BLUR_STD)), "sr": lambda: Downsampling(2),
          "inpaint": lambda: Inpainting(random_mask(tuple(x.shape[-2:]), 0.5, 0))}[task]()
    y, lam = add_noise(op.A(x), 0.01, seed=0), tv_lambda(0.01, task)

    def energy(z):
        return float(0.5 * (op.A(z) - y).pow(2).sum() + lam * _grad(z).pow(2).sum(2).sqrt().sum())

    e_bench = energy(tv_restore(y, op, lam, TV_ITERS[task]))
    e_long = energy(tv_restore(y, op, lam, 3 * TV_ITERS[task]))
    assert e_bench <= e_long * 1.0005
