"""Every experiment end to end on the quick subset (needs the data folder: $ALR_DATA)."""
from pathlib import Path

import pytest

from alr.cli import main
from conftest import data_dir, no_data_reason

pytestmark = pytest.mark.skipif(data_dir() is None, reason=no_data_reason())


@pytest.mark.parametrize("name,extra", [
    # sigma 0.4, both protocols: test_clipped_data_term_runs_under_the_paper_protocol_only
    ("table2", ["--protocol", "both", "--methods", "alr,alr-clipped,bm3d,epll,tv", "--sigmas", "0.1,0.2"]),
    ("table2", ["--color", "--methods", "alr,bm3d,bm3d-channels,tv", "--protocol", "standard", "--sigmas", "0.1"]),
    ("histogram", []),
    ("deblur", []),
    ("inpaint", []),
    ("sr", []),
    ("toy", []),
    ("real", []),
    ("calibrate", ["--sigmas", "0.1"]),
    ("table1", []),  # with --models: test_table1_shares_the_range_critics_lambda_table
])
def test_quick_experiment(tmp_path, name, extra):
    out = tmp_path / name
    assert main(["bench", name, "--quick", "-o", str(out), "--data", str(data_dir())] + extra) == 0
    assert (out / "results.md").read_text().count("|") > 4
    assert (out / "run.json").exists() or name == "deblur"
    assert any(out.rglob("*.png")) or name == "calibrate"


@pytest.mark.parametrize("color,sigma,subset", [
    (False, 0.2, ["--quick"]), (True, 0.1, ["--quick"]), (True, 0.2, ["--quick"]),
    (False, 0.1, ["--max-images", "4"]),
])
def test_shipped_models_beat_tv_on_quick_denoising(tmp_path, color, sigma, subset):
    """ALR above TV on a small BSD68 subset: the 4 quick 96x96 crops, or for gray at sigma 0.1 the 4 first
    images whole (about a minute). There the margin on BSD68 is smallest (+0.48 dB standard protocol, ALR
    ahead on 61 of the 68 images), and 4 crops of 96x96 are too small a sample for it: they put gray
    0.12 dB below TV (ALR behind on 3 of the 4 crops, ahead in SSIM), the 4 whole images +0.45 dB."""
    import csv
    out = tmp_path / "t2"
    assert main(["bench", "table2", *subset, "-o", str(out), "--data", str(data_dir()), "--methods", "alr,tv",
                 "--protocol", "standard", "--sigmas", str(sigma)] + (["--color"] if color else [])) == 0
    rows = {r["method"]: float(r["psnr"]) for r in csv.DictReader(open(out / "results.csv"))}
    assert rows["alr"] > rows["input"] + 3
    assert rows["alr"] > rows["tv"]


def test_clipped_data_term_runs_under_the_paper_protocol_only(tmp_path, capsys):
    import csv
    out = tmp_path / "t2"
    assert main(["bench", "table2", "--quick", "-o", str(out), "--data", str(data_dir()), "--methods",
                 "alr,alr-clipped", "--protocol", "both", "--sigmas", "0.4"]) == 0
    rows = {(r["protocol"], r["method"]): float(r["psnr"]) for r in csv.DictReader(open(out / "results.csv"))}
    assert ("standard", "alr-clipped") not in rows
    assert rows[("paper", "alr-clipped")] > rows[("paper", "alr")] + 0.5
    assert main(["bench", "table2", "--quick", "-o", str(tmp_path / "bad"), "--data", str(data_dir()),
                 "--methods", "alr,nlm"]) == 2
    assert "unknown method 'nlm'" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()


def test_table2_alr_rows_take_their_table_and_the_symmetric_option(tmp_path, monkeypatch):
    """alr-clipped solves with the model's clipped-measurement table (lam_for(..., clipped=True)),
    alr with the Gaussian one; --symmetric reaches both solves."""
    import torch

    import alr
    from alr.bench import experiments

    seen = []

    def spy(y, physics, model, lam, **k):
        seen.append((k["fidelity"] is None, round(float(torch.as_tensor(lam).flatten()[0]), 6), k["symmetric"]))
        return real(y, physics, model, lam, **{**k, "iters": 1})

    real = experiments.minimize
    monkeypatch.setattr(experiments, "minimize", spy)
    assert main(["bench", "table2", "--quick", "-o", str(tmp_path / "t2"), "--data", str(data_dir()),
                 "--methods", "alr,alr-clipped", "--protocol", "paper", "--sigmas", "0.2", "--symmetric"]) == 0
    gray = alr.load("gray")
    assert set(seen) == {(True, round(alr.lam_for(gray, "denoise", 0.2), 6), True),
                         (False, round(alr.lam_for(gray, "denoise", 0.2, clipped=True), 6), True)}


def test_sigmas_option_selects_the_noise_levels(tmp_path, capsys):
    import csv
    out = tmp_path / "db"
    args = ["bench", "deblur", "--quick", "--sets", "set12", "--methods", "tv", "--data", str(data_dir())]
    assert main(args + ["-o", str(out), "--sigmas", "0.03"]) == 0
    assert {r["sigma"] for r in csv.DictReader(open(out / "set12" / "results.csv"))} == {"0.03"}
    assert main(args + ["-o", str(tmp_path / "bad"), "--sigmas", "0.03,x"]) == 2
    assert "--sigmas must be comma-separated numbers" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()


@pytest.mark.parametrize("name,extra", [
    ("table1", ["--models", str(Path(__file__).parents[1] / "docs" / "models" / "table1"), "--sigmas", "0.1"]),
    ("calibrate", ["--tasks", "denoise", "--sigmas", "0.1"]),
    ("table2", ["--methods", "alr", "--protocol", "paper", "--sigmas", "0.1"]),
])
def test_every_solve_runs_on_the_bench_device(tmp_path, monkeypatch, name, extra):
    """Table 1 and the calibration once left --device unset and so solved on the CPU of a GPU machine."""
    from alr import calibration
    from alr.bench import experiments
    from alr.device import resolve_device

    devices = []

    def spy(*a, **k):
        devices.append(k.get("device"))
        return real(*a, **{**k, "iters": 1})

    real = experiments.minimize
    monkeypatch.setattr(experiments, "minimize", spy)
    monkeypatch.setattr(calibration, "minimize", spy)  # the calibration solves there
    assert main(["bench", name, "--quick", "-o", str(tmp_path / name), "--data", str(data_dir())] + extra) == 0
    assert devices and set(devices) == {str(resolve_device())}


def test_table1_shares_the_range_critics_lambda_table(tmp_path):
    """`table1 --models` (the committed critics, the quick run of the experiment) uses one lambda per test
    sigma for all critics: the range critic's own table (the paper's setting), so replacing the shipped
    gray model does not change Table 1."""
    import csv

    import alr
    models = Path(__file__).parents[1] / "docs" / "models" / "table1"
    out = tmp_path / "t1"
    assert main(["bench", "table1", "--quick", "--models", str(models), "-o", str(out),
                 "--data", str(data_dir())]) == 0
    assert (out / "run.json").exists() and any(out.rglob("*.png"))
    rows = list(csv.DictReader(open(out / "results.csv")))
    critic_range, gray = alr.load(models / "critic_range.safetensors"), alr.load("gray")
    assert {float(r["test_sigma"]) for r in rows} == {0.1, 0.4}
    for r in rows:
        sigma = float(r["test_sigma"])
        assert float(r["lam"]) == pytest.approx(alr.lam_for(critic_range, "denoise", sigma))
        assert float(r["lam"]) != pytest.approx(alr.lam_for(gray, "denoise", sigma))
    assert "the range critic" in (out / "results.md").read_text()


def test_calibrate_chooses_iterations_and_lambda_per_noise_level(tmp_path, monkeypatch):
    """--iters 2,5: lambda is searched for each count; the table keeps the best pair per sigma,
    and the solver options of the model copy follow it."""
    import csv

    import alr
    from alr import calibration
    from alr.bench import experiments

    iters = []

    def spy(*a, **k):
        iters.append(k["iters"])
        return real(*a, **k)

    real = experiments.minimize
    monkeypatch.setattr(experiments, "minimize", spy)
    monkeypatch.setattr(calibration, "minimize", spy)  # the calibration solves there
    out = tmp_path / "cal"
    assert main(["bench", "calibrate", "--quick", "--tasks", "denoise", "--sigmas", "0.1,0.3", "--iters", "2,5",
                 "-o", str(out), "--data", str(data_dir())]) == 0
    assert set(iters) == {2, 5}
    rows = list(csv.DictReader(open(out / "results.csv")))
    copy = alr.load(out / "gray.safetensors")
    table = copy.meta["lambda"]["denoise"]
    for sigma, lam, it in zip(table["sigma"], table["lam"], table["iters"]):
        mine = [r for r in rows if float(r["sigma"]) == sigma]
        top = max(mine, key=lambda r: float(r["psnr"]))
        assert top["best"] == "True" and int(top["iters"]) == it and float(f"{float(top['lam']):.3g}") == lam
        assert alr.pretrained.solver_options(copy, "denoise", sigma)["iters"] == it
    assert alr.pretrained.solver_options(copy, "denoise")["iters"] == alr.pretrained.TASK_ITERS["denoise"]
    assert alr.pretrained.solver_options(copy, "deblur", 0.01)["iters"] == alr.pretrained.TASK_ITERS["deblur"]
    with pytest.raises(SystemExit):  # argparse: usage error, exit status 2
        main(["bench", "calibrate", "--iters", "0", "-o", str(tmp_path / "bad")])
    assert not (tmp_path / "bad").exists()


def test_calibrate_chooses_the_concavity_per_noise_level(tmp_path):
    """--concavity 0,1: each candidate gets its line search; the table records the best one per sigma
    and the critic's median clean score as reference, and the solver options follow them."""
    import csv

    import alr
    from alr.bench.experiments import calibration_crops
    from alr.calibration import score_reference

    out = tmp_path / "cal"
    assert main(["bench", "calibrate", "--quick", "--tasks", "denoise", "--sigmas", "0.1,0.3", "--concavity", "0,1",
                 "--cal-images", "1", "-o", str(out), "--data", str(data_dir())]) == 0
    rows = list(csv.DictReader(open(out / "results.csv")))
    assert {float(r["concavity"]) for r in rows} == {0.0, 1.0}
    copy = alr.load(out / "gray.safetensors")
    table = copy.meta["lambda"]["denoise"]
    ref = score_reference(copy, calibration_crops(data_dir() / "set12", 1, True, images=1))
    assert copy.meta["lambda_calibration"].startswith("alr bench calibrate: 1 centre crops")
    assert table["score_ref"] == ref
    for sigma, kappa in zip(table["sigma"], table["concavity"]):
        top = max((r for r in rows if float(r["sigma"]) == sigma), key=lambda r: float(r["psnr"]))
        assert top["best"] == "True" and float(top["concavity"]) == kappa
        opts = alr.pretrained.solver_options(copy, "denoise", sigma)
        assert opts["concavity"] == kappa and opts["score_ref"] == ref
    assert "concavity" not in alr.pretrained.solver_options(copy, "denoise")
    with pytest.raises(SystemExit):
        main(["bench", "calibrate", "--concavity", "0,-1", "-o", str(tmp_path / "bad")])
    assert not (tmp_path / "bad").exists()


def test_calibrate_clipped_table_serves_the_censored_data_term(tmp_path, monkeypatch):
    """--tasks denoise-clipped: the line search restores clipped noisy crops with the censored data
    term; the table lands under "denoise-clipped", which lam_for / solver_options use with
    clipped=True (the Gaussian table otherwise, and as the fallback of a model without one)."""
    import alr
    from alr import calibration
    from alr.bench import experiments
    from alr.fidelity import ClippedGaussian

    seen = []

    def spy(y, *a, **k):
        seen.append((float(y.min()), float(y.max()), type(k["fidelity"])))
        return real(y, *a, **k)

    real = experiments.minimize
    monkeypatch.setattr(experiments, "minimize", spy)
    monkeypatch.setattr(calibration, "minimize", spy)  # the calibration solves there
    out = tmp_path / "cal"
    assert main(["bench", "calibrate", "--quick", "--tasks", "denoise-clipped", "--sigmas", "0.2",
                 "--iters", "3", "-o", str(out), "--data", str(data_dir())]) == 0
    assert seen and all(lo >= 0 and hi <= 1 and f is ClippedGaussian for lo, hi, f in seen)
    copy = alr.load(out / "gray.safetensors")
    table = copy.meta["lambda"]["denoise-clipped"]
    assert table["sigma"] == [0.2] and table["iters"] == [3]
    assert copy.meta["lambda"]["denoise"] == alr.load("gray").meta["lambda"]["denoise"]  # untouched
    assert alr.lam_for(copy, "denoise", 0.2, clipped=True) == pytest.approx(table["lam"][0])
    assert alr.lam_for(copy, "denoise", 0.2) == alr.lam_for(alr.load("gray"), "denoise", 0.2)
    assert alr.pretrained.solver_options(copy, "denoise", 0.2, clipped=True)["iters"] == 3
    bare = alr.load(out / "gray.safetensors")
    del bare.meta["lambda"]["denoise-clipped"]
    assert alr.lam_for(bare, "denoise", 0.2, clipped=True) == alr.lam_for(bare, "denoise", 0.2)


def test_calibrate_clipped_table_inherits_the_solver_of_the_gaussian_one(tmp_path):
    """Without --iters / --concavity a clipped table searches lambda only, at each sigma with the
    iterations and shaping that the model's Gaussian table gives there (--quick caps the iterations at
    20, as it does for every solve), and records them."""
    import alr
    from alr.calibration import alr_options

    out = tmp_path / "cal"
    assert main(["bench", "calibrate", "--quick", "--tasks", "denoise-clipped", "--sigmas", "0.1,0.3",
                 "-o", str(out), "--data", str(data_dir())]) == 0
    gray, copy = alr.load("gray"), alr.load(out / "gray.safetensors")
    table = copy.meta["lambda"]["denoise-clipped"]
    assert table["score_ref"] == gray.meta["lambda"]["denoise"]["score_ref"]
    for sigma, it, kappa in zip(table["sigma"], table["iters"], table["concavity"]):
        want = alr_options(gray, "denoise", True, sigma)
        assert (it, kappa) == (want["iters"], pytest.approx(want["concavity"]))
        assert alr.pretrained.solver_options(copy, "denoise", sigma, clipped=True)["iters"] == it


def test_real_noise_split_holds_out_every_third_image(sample_dir):
    from alr.bench.experiments import real_noise_split
    from alr.images import list_images
    train, held = real_noise_split(sample_dir)
    files = list_images(sample_dir)
    assert held == files[2::3] and len(train) + len(held) == len(files)
    assert not set(train) & set(held)


def test_the_noisy_input_is_measured_as_it_is(tmp_path):
    """Under the standard protocol the noise is not clipped and the noisy column measures the input
    as it is (PSNR -20 log10 sigma, as the literature reports it: 7.96 dB at 0.4); under the paper
    protocol the input was clipped, which raises it."""
    import csv
    out = tmp_path / "in"
    assert main(["bench", "table2", "--quick", "--protocol", "both", "--methods", "", "--sigmas", "0.4",
                 "--data", str(data_dir()), "-o", str(out)]) == 0
    rows = {(r["protocol"], r["image"]): float(r["psnr"]) for r in csv.DictReader(open(out / "per_image.csv"))}
    standard = [v for (p, _), v in rows.items() if p == "standard"]
    assert sum(standard) / len(standard) == pytest.approx(7.96, abs=0.1)
    assert all(rows["paper", i] > rows["standard", i] + 1 for p, i in rows if p == "standard")


@pytest.mark.parametrize("name,extra,message", [
    ("deblur", ["--methods", "alr,alr-opponent"], "--methods: unknown method 'alr-opponent' for deblur"),
    ("inpaint", ["--methods", "bm3d"], "--methods: unknown method 'bm3d' for inpaint"),
    ("sr", ["--protocol", "paper"], "--protocol paper: sr runs the standard protocol only"),
    ("table2", ["--methods", "nlm"], "unknown method 'nlm' for table2"),
    ("table2", ["--methods", "alr-clipped", "--protocol", "standard"], "it runs under --protocol paper"),
    ("calibrate", ["--protocol", "paper"], "--protocol is an option of table2, deblur, inpaint and sr"),
    ("table1", ["--methods", "alr"], "--methods is an option of table2, deblur, inpaint and sr"),
])
def test_a_table_refuses_what_it_cannot_run(tmp_path, capsys, name, extra, message):
    """A method or protocol a table cannot run is refused before any work, not silently dropped."""
    assert main(["bench", name, "--quick", "--data", str(data_dir()), "-o", str(tmp_path / "t"), *extra]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "t").exists()


def test_real_noise_refuses_a_model_trained_on_its_held_out_photographs(tmp_path, capsys):
    import alr
    critic = alr.PatchCritic(in_channels=3, depth=2, width=4)
    critic.meta = {"data": {"clean": "cbsd432", "degraded": "rni15"}}  # the whole folder, held-out images too
    alr.save(critic, tmp_path / "all.safetensors")
    assert main(["bench", "real", "--quick", "--data", str(data_dir()), "--model", str(tmp_path / "all.safetensors"),
                 "-o", str(tmp_path / "r")]) == 2
    assert "was trained on rni15's held-out photographs" in capsys.readouterr().err
