import pytest
import torch

from alr.physics import Blur, Denoising, Downsampling, Inpainting, gaussian_kernel, motion_kernel, random_mask


def _adjoint_gap(op, xshape, yshape):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(xshape, generator=g, dtype=torch.float64)
    y = torch.randn(yshape, generator=g, dtype=torch.float64)
    lhs = (op.A(x) * y).sum()
    rhs = (x * op.A_adjoint(y)).sum()
    return float((lhs - rhs).abs() / lhs.abs())


@pytest.mark.parametrize("op,xs,ys", [
    (Denoising(), (2, 1, 20, 24), (2, 1, 20, 24)),
    (Blur(gaussian_kernel(1.6)), (2, 3, 32, 40), (2, 3, 32, 40)),
    (Blur(motion_kernel(9, 30)), (1, 1, 33, 27), (1, 1, 33, 27)),
    (Blur(torch.rand(4, 6)), (1, 1, 16, 16), (1, 1, 16, 16)),
    (Inpainting(random_mask((20, 24), 0.5, 3)), (2, 1, 20, 24), (2, 1, 20, 24)),
    (Downsampling(2), (1, 1, 32, 40), (1, 1, 16, 20)),
    (Downsampling(3), (2, 3, 27, 33), (2, 3, 9, 11)),
])
def test_adjoint_identity(op, xs, ys):
    if isinstance(op, Blur):
        op.kernel = op.kernel.double()
    elif isinstance(op, Downsampling):
        op.blur.kernel = op.blur.kernel.double()
    assert _adjoint_gap(op, xs, ys) < 1e-10


def test_blur_is_a_convolution_not_a_correlation():
    k = torch.zeros(3, 3)
    k[1, 2] = 1.0  # a shift by one pixel to the right under convolution
    x = torch.zeros(1, 1, 8, 8)
    x[0, 0, 4, 4] = 1
    assert Blur(k).A(x)[0, 0, 4, 5] == 1


def test_gaussian_blur_preserves_mean():
    x = torch.rand(1, 1, 30, 30)
    assert torch.allclose(Blur(gaussian_kernel(2.0)).A(x).mean(), x.mean(), atol=1e-6)


def test_errors():
    with pytest.raises(ValueError, match="larger than the image"):
        Blur(gaussian_kernel(5)).A(torch.rand(1, 1, 10, 10))
    with pytest.raises(ValueError, match="does not match"):
        Inpainting(torch.ones(5, 5)).A(torch.rand(1, 1, 6, 6))
    with pytest.raises(ValueError, match=r"mask \(2, 1, 6, 6\) does not match the images \(1, 1, 6, 6\)"):
        Inpainting(torch.ones(2, 1, 6, 6)).A(torch.rand(1, 1, 6, 6))  # two masks for one image
    assert Inpainting(torch.ones(2, 1, 6, 6)).A(torch.rand(2, 3, 6, 6)).shape == (2, 3, 6, 6)  # one per image
    with pytest.raises(ValueError, match="multiples"):
        Downsampling(2).A(torch.rand(1, 1, 7, 8))
    with pytest.raises(ValueError, match="NaN"):
        Blur(torch.tensor([[float("nan")]]))
    with pytest.raises(ValueError, match="NaN"):
        Denoising().check_measurement(torch.full((1, 1, 4, 4), float("nan")))
    with pytest.raises(ValueError, match="blur sigma must be positive, got 0"):
        Downsampling(2, filter_sigma=0)  # not silently the default
    with pytest.raises(ValueError, match="super-resolution by 8 of a 2x2 measurement: its 25x25 anti-aliasing"):
        Downsampling(8).check_measurement(torch.rand(1, 1, 2, 2))


@pytest.mark.parametrize("factor", [2, 3, 4])
def test_downsampling_lipschitz_bound_is_exact(factor):
    """The step bound ||A^T A|| of super-resolution is the exact norm (power iteration agrees), not
    the loose 1 that made first-order solvers take steps factor^2 too short."""
    from alr.physics import Operator
    op = Downsampling(factor)
    estimate = Operator(op).estimate_lipschitz(torch.rand(1, 1, 48, 48), iters=60) / 1.01
    assert op.lipschitz() == pytest.approx(estimate, rel=1e-4)
    assert op.lipschitz() == pytest.approx(1 / factor ** 2, rel=0.01)


def test_a_wrapped_operator_estimates_its_bound_again_for_another_shape():
    """A reused wrapped operator does not keep the bound of the first image size it saw."""
    from alr.physics import Operator

    class Widening:  # ||A|| grows with the image width
        def A(self, x):
            return x * x.shape[-1] / 16

        A_adjoint = A

    op = Operator(Widening())
    assert op.estimate_lipschitz(torch.rand(1, 1, 16, 16)) == pytest.approx(1.01)
    assert op.estimate_lipschitz(torch.rand(1, 1, 32, 32)) == pytest.approx(4.04)
    assert op.lipschitz() == pytest.approx(4.04)


def test_inits():
    y = torch.rand(1, 1, 8, 8)
    assert Downsampling(2).init(y).shape == (1, 1, 16, 16)
    m = random_mask((8, 8), 0.5, 0)
    x0 = Inpainting(m).init(y * m)
    assert torch.allclose(x0[..., m > 0], y[..., m > 0])
