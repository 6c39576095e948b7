"""The opponent colour space: a gray model denoising a colour image as CBM3D does (luminance and chroma)."""
import pytest
import torch

import alr
from alr.cli import main
from alr.data import add_noise
from alr.errors import AlrError
from alr.images import from_opponent, opponent_noise, read_image, to_opponent, write_image
from alr.metrics import psnr
from alr.settings import RGB_BAND, pick_color_space
from alr.solver import restore_opponent


@pytest.fixture(scope="module")
def astronaut() -> torch.Tensor:
    """A 64x64 colour crop of scikit-image's bundled astronaut, (1, 3, 64, 64) in [0, 1]."""
    from skimage import data
    return torch.from_numpy(data.astronaut()[100:164, 180:244]).permute(2, 0, 1)[None].float() / 255


def test_opponent_transform_keeps_white_noise_white_and_inverts():
    x = torch.rand(2, 3, 16, 16, dtype=torch.float64)
    z = to_opponent(x)
    assert torch.allclose(from_opponent(z), x) and z.min() >= 0 and z.max() <= 1
    corners = torch.tensor([[a, b, c] for a in (0., 1.) for b in (0., 1.) for c in (0., 1.)]).T[None, :, :, None]
    zc = to_opponent(corners)  # the RGB cube maps into [0, 1]^3
    assert zc.min() >= -1e-7 and zc.max() <= 1 + 1e-7
    n = torch.randn(1, 3, 400, 400, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 0.1
    zn = to_opponent(n) - to_opponent(torch.zeros_like(n))
    cov = torch.cov(zn.flatten(2)[0])
    expected = torch.diag(torch.tensor(opponent_noise(0.1), dtype=torch.float64) ** 2)
    assert torch.allclose(cov, expected, atol=2e-4)  # independent channels with the stated noise levels
    with pytest.raises(ValueError, match="colour image"):
        to_opponent(torch.rand(1, 1, 8, 8))


def test_opponent_restore_denoises_and_equals_the_cli(tmp_path, astronaut):
    y = add_noise(astronaut, 0.1, seed=3)
    x = alr.restore(y, model="gray", sigma=0.1, color_space="opponent")
    assert torch.equal(x, restore_opponent(y, "gray", 0.1))
    assert x.shape == y.shape and 0 <= float(x.min()) and float(x.max()) <= 1
    assert float(psnr(x, astronaut)) > float(psnr(y.clamp(0, 1), astronaut)) + 5
    assert not torch.allclose(x, alr.restore(y, model="gray", sigma=0.1, per_channel=True), atol=1e-3)
    noisy, out = tmp_path / "noisy.npy", tmp_path / "out.npy"
    write_image(noisy, y)
    assert main(["restore", str(noisy), "-o", str(out), "--color-space", "opponent", "--sigma", "0.1", "-q"]) == 0
    assert torch.allclose(read_image(out), x, atol=1e-5)  # the default model there is gray
    stronger = restore_opponent(y, "gray", 0.1, chroma_lambda=16.0)  # the chroma weight is the chroma's alone:
    moved = (to_opponent(stronger) - to_opponent(x)).abs() > 1e-4  # the luminance moves only where the final
    assert float(moved[:, 0].float().mean()) < 0.05 < float(moved[:, 1:].float().mean())  # RGB clip mixes them


def test_opponent_estimates_each_images_noise(astronaut):
    y = torch.cat([add_noise(astronaut, 0.05, seed=1), add_noise(astronaut, 0.15, seed=2)])
    x = alr.restore(y, model="gray", color_space="opponent")
    for i, s in enumerate((0.05, 0.15)):
        estimate = alr.data.estimate_sigma(y[i:i + 1])
        assert abs(estimate - s) < 0.2 * s  # each image its own level, near the true one
        alone = restore_opponent(y[i:i + 1], "gray", estimate)
        assert torch.allclose(x[i:i + 1], alone, atol=1e-5)


def test_an_image_the_opponent_path_skips_comes_back_as_every_restore_returns_one():
    """Too little noise to restore (the estimate says skip): the image is returned float32 and in
    [0, 1] whatever dtype and range it came with, as the RGB path returns it."""
    y = torch.linspace(0, 1, 48, dtype=torch.float64).repeat(3, 48, 1)[None]
    y[0, 0, 5, 5] = 1.5
    x = alr.restore(y, model="gray", color_space="opponent")
    assert x.dtype == torch.float32 and torch.equal(x, y.float().clamp(0, 1))
    assert torch.equal(x, alr.restore(y, model="color", color_space="rgb"))


@pytest.mark.parametrize("kwargs,message", [
    ({"model": "color"}, "gray model"),
    ({"model": "gray", "task": "deblur", "sigma": 0.01, "physics": alr.physics.Blur(torch.ones(3, 3) / 9)}, "denoising"),
    ({"model": "gray", "clipped": True, "sigma": 0.1}, "clipped"),
    ({"model": "gray", "gray_input": True}, "colour image"),
    ({"model": "gray", "color_space": "lab"}, "unknown colour space"),
])
def test_opponent_refusals(astronaut, kwargs, message):
    kwargs = dict(kwargs)
    y = add_noise(astronaut, 0.1, seed=0)
    if kwargs.pop("gray_input", False):
        y = y[:, :1]
    kwargs.setdefault("color_space", "opponent")
    with pytest.raises(AlrError, match=message):
        alr.restore(y, **kwargs)


def test_opponent_refusal_on_the_command_line(tmp_path, astronaut, capsys):
    gray = tmp_path / "g.png"
    write_image(gray, astronaut[:, :1])
    assert main(["restore", str(gray), "-o", str(tmp_path / "o.png"), "--color-space", "opponent"]) == 2
    err = capsys.readouterr().err
    assert "g.png: the opponent colour space is for denoising a colour image" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "o.png").exists()


def test_bench_runs_the_opponent_method_beside_the_colour_model(tmp_path, capsys):
    import csv

    from conftest import data_dir, no_data_reason
    if data_dir() is None:
        pytest.skip(no_data_reason())
    out = tmp_path / "t2"
    assert main(["bench", "table2", "--color", "--quick", "--max-images", "1", "--protocol", "standard", "--methods",
                 "alr,alr-opponent", "--sigmas", "0.2", "--data", str(data_dir()), "-o", str(out)]) == 0
    psnrs = {r["method"]: float(r["psnr"]) for r in csv.DictReader(open(out / "results.csv"))}
    assert psnrs["alr-opponent"] > psnrs["input"] + 5 and "alr" in psnrs
    capsys.readouterr()
    assert main(["bench", "table2", "--quick", "--methods", "alr-opponent", "-o", str(tmp_path / "gray")]) == 2
    assert "--methods alr-opponent denoises colour images: add --color" in capsys.readouterr().err


@pytest.mark.parametrize("space,model_given,task,sigma,clipped,per_channel,gray,expected", [
    ("auto", False, "denoise", 0.2, False, False, False, "opponent"),
    ("auto", False, "denoise", RGB_BAND[1], False, False, False, "opponent"),
    ("auto", False, "denoise", 0.1, False, False, False, "rgb"),
    ("auto", False, "denoise", RGB_BAND[0], False, False, False, "rgb"),
    ("auto", False, "denoise", 0.05, False, False, False, "opponent"),  # low noise: opponent again
    ("auto", False, "denoise", 0.02, False, False, False, "opponent"),
    ("auto", True, "denoise", 0.2, False, False, False, "rgb"),      # the user's model decides
    ("auto", False, "deblur", 0.2, False, False, False, "rgb"),
    ("auto", False, "denoise", 0.2, True, False, False, "rgb"),      # clipped-noise data term
    ("auto", False, "denoise", 0.2, False, True, False, "rgb"),      # --per-channel
    ("auto", False, "denoise", 0.2, False, False, True, "rgb"),      # a gray image
    ("rgb", False, "denoise", 0.4, False, False, False, "rgb"),
    ("opponent", False, "denoise", 0.05, False, False, False, "opponent"),
])
def test_auto_colour_space_rule(astronaut, space, model_given, task, sigma, clipped, per_channel, gray, expected):
    y = astronaut[:, :1] if gray else astronaut
    assert pick_color_space(space, model_given, y, task, sigma, clipped, per_channel) == expected


def test_default_denoises_colour_by_noise_level_each_image_its_own(tmp_path, astronaut):
    levels = [0.1, 0.3, 0.06, 0.03]  # RGB band, above it, below it, below the lowest calibrated level
    y = torch.cat([add_noise(astronaut, s, seed=i) for i, s in enumerate(levels)])
    x = alr.restore(y)  # noise estimated per image
    assert [pick_color_space("auto", False, y[i:i + 1], "denoise", None, False, False) for i in range(4)] == \
        ["rgb", "opponent", "opponent", "opponent"]
    assert torch.allclose(x[:1], alr.restore(y[:1], "color", color_space="rgb"), atol=1e-5)
    for i in (1, 2):
        assert torch.allclose(x[i:i + 1], restore_opponent(y[i:i + 1], "gray"), atol=1e-5)
        assert psnr(x[i:i + 1], astronaut) > psnr(y[i:i + 1], astronaut) + 2
    assert torch.equal(x[3:], y[3:].clamp(0, 1))  # little or no noise: returned unchanged (in [0, 1]), as in RGB
    for i in (2, 3):  # the command line decides the same way
        noisy, out = tmp_path / f"noisy{i}.npy", tmp_path / f"out{i}.npy"
        write_image(noisy, y[i:i + 1])
        assert main(["restore", str(noisy), "-o", str(out), "-q"]) == 0
        assert torch.allclose(read_image(out), x[i:i + 1], atol=1e-5)


@pytest.mark.parametrize("method,iters,expected", [
    (None, None, "table"), ("lbfgs", None, "table"), ("adam", None, None), ("adam", 7, 7), ("lbfgs", 5, 5)])
def test_opponent_channels_take_the_tables_iterations_only_for_its_method(astronaut, monkeypatch,
                                                                          method, iters, expected):
    """As in RGB (alr.settings.resolve), the table's iteration count belongs to its method: another
    method chosen by the user runs its own default count."""
    seen = []

    def spy(y, physics, model, lam, **kw):
        seen.append((kw.get("method"), kw.get("iters")))
        return y.clone(), alr.solver.History()

    monkeypatch.setattr(alr.solver, "minimize", spy)
    table = alr.pretrained.solver_options(alr.load("gray"), "denoise", 0.05)
    restore_opponent(astronaut[..., :32, :32], "gray", 0.05, method=method, iters=iters)
    assert len(seen) == 3
    want = table["iters"] if expected == "table" else expected
    assert all(it == want and m == (method or table["method"]) for m, it in seen)
