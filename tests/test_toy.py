import math

import torch

from alr.bench.toy import PointCritic, run_toy
from alr.modelfile import load_model


def test_toy_critic_approximates_distance_to_circle(tmp_path):
    res = run_toy(tmp_path, progress=False)
    assert res["corr_grid"] >= 0.9, res
    assert (tmp_path / "toy.png").stat().st_size > 10000


def test_w2_critic_learns_half_the_squared_distance_to_circle(tmp_path):
    """Trained with the anchored loss, the w2 critic scores r = d^2 / 2 (d: distance to the
    circle, on both sides): zero on the clean set, quadratic away from it."""
    res = run_toy(tmp_path, steps=800, criterion="w2", progress=False)
    assert res["target"] == "d^2 / 2" and res["corr_band"] >= 0.95, res
    assert res["mae_band"] < 0.01, res  # the band's d^2 / 2 reaches 0.08
    assert res["figure"] == "toy_w2.png" and (tmp_path / "toy_w2.png").is_file()
    assert not (tmp_path / "toy.png").exists()
    critic = load_model(tmp_path / "toy_w2_critic.safetensors", {"mlp": PointCritic})
    a = torch.linspace(0, 2 * math.pi, 64)
    with torch.no_grad():
        for rho in (0.7, 1.0, 1.2, 1.4):
            r = float(critic(rho * torch.stack([a.cos(), a.sin()], 1)).mean())
            assert abs(r - (rho - 1) ** 2 / 2) < 0.25 * (rho - 1) ** 2 / 2 + 2e-3, (rho, r)
