import pytest
import torch

import alr
from alr.critic import PatchCritic, pad_boundary, shape_scores
from alr.modelfile import load_model as load_file
from alr.critic import Regularizer


def test_shapes_and_receptive_field():
    c = PatchCritic(in_channels=3, depth=4, width=8)
    assert c.receptive_field == 9
    assert c(torch.rand(2, 3, 20, 31)).shape == (2, 1, 12, 23)
    assert c.regularizer(torch.rand(2, 3, 20, 31)).shape == (2,)
    assert c(torch.rand(1, 3, 9, 9)).shape == (1, 1, 1, 1)


def test_receptive_field_is_exact():
    c = PatchCritic(depth=3, width=8)
    x = torch.rand(1, 1, 15, 15)
    y = x.clone()
    y[..., 0, 0] += 1.0  # only patches containing pixel (0, 0) may change
    d = (c(x) - c(y)).abs()[0, 0]
    assert d[0, 0] > 0 and d[1:, :].abs().max() == 0 and d[:, 1:].abs().max() == 0


def test_errors():
    c = PatchCritic()
    with pytest.raises(ValueError, match="smaller than"):
        c(torch.rand(1, 1, 12, 40))
    with pytest.raises(ValueError, match="channel"):
        c(torch.rand(1, 3, 20, 20))
    with pytest.raises(ValueError):
        PatchCritic(in_channels=2)
    with pytest.raises(ValueError, match="activation"):
        PatchCritic(activation="tanhh")


def test_save_load_roundtrip(tmp_path):
    c = PatchCritic(width=8, activation="softplus")
    c.meta = {"lambda": {"denoise": {"sigma": [0.1, 0.2], "lam": [0.01, 0.02]}}}
    alr.save(c, tmp_path / "m.safetensors")
    d = load_file(tmp_path / "m.safetensors")
    x = torch.rand(1, 1, 20, 20)
    assert torch.equal(c(x), d(x)) and d.activation == "softplus" and d.meta == c.meta
    assert alr.lam_for(d, "denoise", 0.1) == pytest.approx(0.01)
    assert 0.01 < alr.lam_for(d, "denoise", 0.15) < 0.02
    (tmp_path / "bad.safetensors").write_bytes(b"not a model")
    with pytest.raises(ValueError):
        load_file(tmp_path / "bad.safetensors")
    with pytest.raises(FileNotFoundError):
        alr.load(tmp_path / "missing.safetensors")


@pytest.mark.parametrize("boundary", ["reflect", "replicate", "valid"])
@pytest.mark.parametrize("activation", ["softplus", "relu"])
def test_gradient_of_R_matches_finite_differences(activation, boundary):
    torch.manual_seed(0)
    c = PatchCritic(depth=3, width=8, activation=activation).double()
    x = torch.rand(1, 1, 12, 12, dtype=torch.float64)
    r, g = Regularizer(c, boundary=boundary).value_and_grad(x)
    assert torch.allclose(r, c.regularizer(x, boundary))
    v = torch.randn_like(x)
    eps = 1e-6
    fd = (c.regularizer(x + eps * v, boundary) - c.regularizer(x - eps * v, boundary)) / (2 * eps)
    assert float(fd) == pytest.approx(float((g * v).sum()), rel=1e-5, abs=1e-9)


def test_shape_scores_is_increasing_concave_and_tends_to_r():
    r = torch.linspace(-3, 8, 50, dtype=torch.float64, requires_grad=True)
    psi = shape_scores(r, 0.7, 2.5)
    (d,) = torch.autograd.grad(psi.sum(), r)
    assert torch.allclose(d, torch.exp(-0.7 * (r.detach() - 2.5)))  # psi'(r) = exp(-kappa (r - c)) > 0
    assert (d[1:] < d[:-1]).all()  # psi' decreasing: concave
    assert float(shape_scores(torch.tensor(2.5), 0.7, 2.5)) == pytest.approx(2.5)  # psi(c) = c
    assert shape_scores(r, 0.0, 2.5) is r  # kappa = 0: the paper's R, untouched
    assert torch.allclose(shape_scores(r, 1e-7, 2.5), r, atol=1e-5)
    for bad in (-0.1, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="concavity"):
            shape_scores(r, bad)


def test_shaped_R_gradient_matches_finite_differences_and_tiles_exactly():
    """Regularizer (tiled or not) and PatchCritic.regularizer agree with the shaping; gradient by FD."""
    torch.manual_seed(0)
    c = PatchCritic(depth=3, width=8, activation="softplus").double()
    x = torch.rand(2, 1, 40, 31, dtype=torch.float64)
    kw = dict(concavity=0.8, score_ref=float(c(x).detach().median()))
    r, g = Regularizer(c, **kw).value_and_grad(x)
    assert torch.allclose(r, c.regularizer(x, **kw)) and not torch.allclose(r, c.regularizer(x))
    tiled = Regularizer(c, max_memory=6e4, **kw)
    assert tiled.tile_size(x) is not None
    r_t, g_t = tiled.value_and_grad(x)
    assert torch.allclose(r, r_t) and torch.allclose(g, g_t, atol=1e-12)
    v, eps = torch.randn_like(x), 1e-6
    fd = (c.regularizer(x + eps * v, **kw) - c.regularizer(x - eps * v, **kw)).sum() / (2 * eps)
    assert float(fd) == pytest.approx(float((g * v).sum()), rel=1e-5)
    with pytest.raises(ValueError, match="concavity"):
        alr.solver.minimize(torch.rand(1, 1, 20, 20), None, c.float(), 0.01, concavity=-1)


@pytest.mark.parametrize("boundary, corner", [("valid", 1), ("reflect", 13 ** 2), ("replicate", (13 * 14 // 2) ** 2)])
def test_padded_boundaries_regularise_every_pixel(boundary, corner):
    """With "valid" a corner pixel lies in one patch; padded, every pixel in at least s^2 (under
    "replicate" the corner pixel is all of the padded s x s corner block, sum_{i,j<=s} i j patches)."""
    c = PatchCritic(depth=6, width=4)
    s = c.receptive_field
    x = torch.zeros(1, 1, 20, 20, requires_grad=True)
    xp = pad_boundary(x, s, boundary)
    ones = torch.ones(1, 1, xp.shape[-2] - s + 1, xp.shape[-1] - s + 1)
    cover = torch.nn.functional.conv_transpose2d(ones, torch.ones(1, 1, s, s))  # patches per padded pixel
    (per_pixel,) = torch.autograd.grad(xp, x, cover)  # folded back onto the image
    assert float(per_pixel[0, 0, 0, 0]) == corner and float(per_pixel.min()) >= min(corner, s * s)


def test_unknown_boundary_is_refused():
    with pytest.raises(ValueError, match="boundary 'zeros'"):
        pad_boundary(torch.zeros(1, 1, 20, 20), 5, "zeros")


def test_tiled_gradient_equals_full_gradient():
    torch.manual_seed(0)
    c = PatchCritic(depth=4, width=8).double()
    x = torch.rand(2, 1, 70, 53, dtype=torch.float64)
    for boundary in ("reflect", "replicate"):
        r_full, g_full = Regularizer(c, boundary=boundary).value_and_grad(x)
        tiled = Regularizer(c, max_memory=4.0e5, boundary=boundary)
        assert tiled.tile_size(x) is not None and tiled.tile_size(x) < 40
        r_t, g_t = tiled.value_and_grad(x)
        assert torch.allclose(r_full, r_t, rtol=1e-12)
        assert torch.allclose(g_full, g_t, rtol=1e-9, atol=1e-9 * float(g_full.abs().max()))


def test_shipped_models_load():
    g = alr.load("gray")
    assert g.in_channels == 1 and g.receptive_field == 13
    assert alr.load("color").in_channels == 3
    assert alr.lam_for(g, "denoise", 0.1) > 0


def test_symmetric_R_is_invariant_and_its_gradient_exact():
    """R_sym = mean of R over the 8 flips / quarter turns: invariant to them (a plain critic's R is
    not), the solver's value and gradient (tiled or not, shaped) match PatchCritic.regularizer and FD."""
    from alr.critic import dihedral

    torch.manual_seed(0)
    c = PatchCritic(depth=3, width=8, activation="softplus").double()
    x = torch.rand(2, 1, 23, 30, dtype=torch.float64)
    kw = dict(concavity=0.5, score_ref=float(c(x).detach().median()))
    r = c.regularizer(x, symmetric=True, **kw)
    for k in range(8):
        assert torch.allclose(c.regularizer(dihedral(x, k), symmetric=True, **kw), r)
    assert not torch.allclose(c.regularizer(dihedral(x, 5), **kw), c.regularizer(x, **kw))
    for reg in (Regularizer(c, symmetric=True, **kw), Regularizer(c, symmetric=True, max_memory=5e4, **kw)):
        r_s, g = reg.value_and_grad(x)
        assert torch.allclose(r_s, r)
        v, eps = torch.randn_like(x), 1e-6
        fd = (c.regularizer(x + eps * v, symmetric=True, **kw)
              - c.regularizer(x - eps * v, symmetric=True, **kw)).sum() / (2 * eps)
        assert float(fd) == pytest.approx(float((g * v).sum()), rel=1e-5)
    assert reg.tile_size(x) is not None
    y = torch.rand(1, 1, 24, 24)
    xs, _ = alr.solver.minimize(y, None, c.float(), 0.01, iters=3, method="gd", symmetric=True)
    xt, _ = alr.solver.minimize(dihedral(y, 3), None, c.float(), 0.01, iters=3, method="gd", symmetric=True)
    assert torch.allclose(dihedral(xs, 3), xt, atol=1e-5)  # the restoration commutes with the symmetries


def test_w2_critic_scores_half_the_square_of_its_potential(tmp_path):
    c = PatchCritic(depth=3, width=8, criterion="w2")
    x = torch.rand(2, 1, 12, 12)
    u = c.potential(x)
    assert torch.allclose(c(x), u * u / 2)
    alr.save(c, tmp_path / "w2.safetensors")
    back = alr.load(tmp_path / "w2.safetensors")
    assert back.criterion == "w2" and torch.allclose(back(x), c(x))
    w1 = PatchCritic(depth=3, width=8)
    assert torch.equal(w1(x), w1.potential(x))  # the paper's critic: r = u
    with pytest.raises(ValueError, match="unknown criterion"):
        PatchCritic(criterion="w3")


def test_shaping_far_below_its_reference_stays_finite():
    """Far below score_ref (kappa (c - r) > 30) psi goes on along its tangent: finite and increasing
    in float32, also summed over the patches of a large image, where exp would overflow to -inf
    values and NaN gradients."""
    r = torch.tensor([-100.0, -20.0, -10.0, 1.0, 2.0], requires_grad=True)
    psi = shape_scores(r, 10.0, 3.6)
    (d,) = torch.autograd.grad(psi.sum(), r)
    assert torch.isfinite(psi).all() and torch.isfinite(d).all() and (psi[1:] > psi[:-1]).all()
    assert torch.equal(psi[3:], 3.6 - torch.expm1(-10.0 * (r[3:] - 3.6)) / 10.0)  # unchanged where exp is finite
    assert torch.isfinite(shape_scores(torch.full((1, 1, 1024, 1024), -20.0), 10.0, 3.6).sum())


def test_regularizer_takes_float64_images():
    """R of a float64 image (a DeepInverse prior may be called with one) is the float32 critic's,
    returned in float64, not a dtype error."""
    torch.manual_seed(0)
    reg = Regularizer(PatchCritic(depth=2, width=4))
    x = torch.rand(1, 1, 20, 20)
    r32, g32 = reg.value_and_grad(x)
    r64, g64 = reg.value_and_grad(x.double())
    assert r64.dtype == g64.dtype == torch.float64
    assert torch.allclose(r64.float(), r32, atol=1e-6) and torch.allclose(g64.float(), g32, atol=1e-6)
    assert reg(x.double()).dtype == torch.float64


def test_noise_estimate_of_one_image():
    """A constant image has no noise (exactly 0); a batch is refused (it would read only the first image);
    restoring an image smaller than a patch is refused, not returned unchanged as noiseless."""
    from alr.data import estimate_sigma
    assert estimate_sigma(torch.full((1, 1, 16, 16), 0.3)) == 0.0
    with pytest.raises(ValueError, match="one image"):
        estimate_sigma(torch.rand(2, 1, 16, 16))
    with pytest.raises(ValueError, match="smaller"):
        alr.restore(torch.full((1, 1, 1, 50), 0.5))


def test_a_negative_holdout_is_refused(tmp_path):
    from alr.data import split_holdout
    with pytest.raises(ValueError, match="holdout must be >= 0"):
        split_holdout(tmp_path, holdout=-1)
