from alr.toy import run_toy


def test_toy_critic_approximates_distance_to_circle(tmp_path):
    res = run_toy(tmp_path, progress=False)
    assert res["corr_grid"] >= 0.9, res
    assert (tmp_path / "toy.png").stat().st_size > 10000
