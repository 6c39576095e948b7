import csv
import json

import numpy as np
import pytest
import torch
from PIL import Image

import alr
from alr.cli import main
from alr.data import add_noise
from alr.images import read_image, write_image
from alr.metrics import psnr
from alr.modelfile import save_model


@pytest.fixture()
def clean_png(tmp_path, camera):
    p = tmp_path / "clean.png"
    write_image(p, camera[..., 180:276, 180:276])
    return p


def test_degrade_then_restore_float_roundtrip(tmp_path, clean_png, capsys):
    noisy = tmp_path / "noisy.npy"
    assert main(["degrade", str(clean_png), "-o", str(noisy), "--sigma", "0.1", "--seed", "3"]) == 0
    y = read_image(noisy)
    assert y.min() < 0 or y.max() > 1  # unclipped float data
    out = tmp_path / "out.png"
    assert main(["restore", str(noisy), "-o", str(out), "--sigma", "0.1", "--iters", "60", "-q"]) == 0
    x = read_image(clean_png)
    assert float(psnr(read_image(out), x)) > float(psnr(y, x)) + 3


def test_restore_estimates_sigma(tmp_path, clean_png, capsys):
    noisy = tmp_path / "noisy.tif"
    main(["degrade", str(clean_png), "-o", str(noisy), "--sigma", "0.1"])
    assert main(["restore", str(noisy), "-o", str(tmp_path / "o.png"), "--iters", "3"]) == 0
    err = capsys.readouterr().err
    assert "estimated noise sigma" in err and "outside the model's calibrated range" not in err
    assert main(["restore", str(noisy), "-o", str(tmp_path / "o.png"), "--iters", "1", "--sigma", "0.01"]) == 0
    assert "sigma 0.01 is below the model's calibrated range 0.05-0.4; lambda follows the table's power law" \
        in capsys.readouterr().err


@pytest.mark.parametrize("task, sigmas, lams, sigma, expected", [
    ("denoise", [0.1, 0.2], [0.01, 0.04], 0.05, 0.0025),  # denoising: the power law (p = 2) below the table
    ("denoise", [0.1, 0.2], [0.01, 0.04], 0.0, 0.0),  # ... down to 0 without noise
    ("deblur", [0.1, 0.2], [0.01, 0.04], 0.0, 0.01),  # other operators keep their prior: the lowest level's
    ("denoise", [0.1, 0.2], [0.04, 0.01], 0.01, 0.04),  # a table that does not grow is held, never raised
    ("denoise", [0.1], [0.02], 0.01, 0.02),  # one level: held
    ("denoise", [0.1, 0.2], [0.01, 0.04], np.float32(0.4), 0.04),  # numpy numbers are numbers; above: the highest
])
def test_lambda_outside_the_table(task, sigmas, lams, sigma, expected):
    critic = alr.PatchCritic(width=8)
    critic.meta = {"lambda": {task: {"sigma": sigmas, "lam": lams}}}
    assert alr.lam_for(critic, task, sigma) == pytest.approx(expected)


def test_a_clean_photo_is_not_made_worse(tmp_path, capsys):
    """A clean JPEG of fine texture (skimage's grass) estimates sigma ~0.04, below the table's lowest level: it is
    returned unchanged with a note (denoising it at the lowest level's lambda cost 24 dB, 51.9 -> 27.9 dB), and
    the Python call agrees. Real low noise given with --sigma is restored with the table's power law for lambda."""
    from skimage import data
    clean = tmp_path / "grass.jpg"
    Image.fromarray(data.grass()[:128, :128]).save(clean, quality=90)
    out = tmp_path / "out.png"
    assert main(["restore", str(clean), "-o", str(out)]) == 0
    assert "little or no noise" in capsys.readouterr().err
    assert torch.equal(read_image(out), read_image(clean))
    assert torch.equal(alr.restore(read_image(clean)), read_image(clean))
    x = torch.from_numpy(data.camera()[128:256, 128:256]).float()[None, None] / 255
    y = add_noise(x, 0.02, seed=0)
    assert float(psnr(alr.restore(y, sigma=0.02), x)) > float(psnr(y, x)) + 1


@pytest.mark.parametrize("task,extra", [("deblur", ["--blur-sigma", "1.6"]), ("sr", ["--factor", "2"])])
def test_other_tasks(tmp_path, clean_png, task, extra):
    y = tmp_path / "y.npy"
    assert main(["degrade", str(clean_png), "-o", str(y), "--task", task, "--sigma", "0.01"] + extra) == 0
    assert main(["restore", str(y), "-o", str(tmp_path / "x.png"), "--task", task, "--sigma", "0.01",
                 "--iters", "5", "-q"] + extra) == 0
    x, clean = read_image(tmp_path / "x.png"), read_image(clean_png)
    assert x.shape == clean.shape
    if task == "deblur":  # sr's input is smaller: its bicubic start is the baseline of test_solver
        assert float(psnr(x, clean)) > float(psnr(read_image(y), clean)) + 0.5


def test_inpaint_with_mask(tmp_path, clean_png):
    y, m = tmp_path / "y.npy", tmp_path / "mask.png"
    assert main(["degrade", str(clean_png), "-o", str(y), "--task", "inpaint", "--sigma", "0.01",
                 "--mask-out", str(m)]) == 0
    assert main(["restore", str(y), "-o", str(tmp_path / "x.png"), "--task", "inpaint", "--mask", str(m),
                 "--sigma", "0.01", "--iters", "5", "-q"]) == 0
    x, clean, known = read_image(tmp_path / "x.png"), read_image(clean_png), read_image(m) > 0.5
    err = (x - clean).abs()
    assert float(err[known].mean()) < 0.02 and float(err[~known].mean()) < float((read_image(y) - clean).abs()[~known].mean())


def test_folder_restore_skips_existing_and_shards(tmp_path, clean_png):
    src = tmp_path / "in"
    src.mkdir()
    for i in range(3):
        main(["degrade", str(clean_png), "-o", str(src / f"im{i}.png"), "--sigma", "0.1", "--seed", str(i)])
    dst = tmp_path / "out"
    assert main(["restore", str(src), "-o", str(dst), "--sigma", "0.1", "--iters", "2", "--shard", "0/2", "-q"]) == 0
    assert sorted(p.name for p in dst.iterdir()) == ["im0.png", "im2.png"]
    stamp = (dst / "im0.png").stat().st_mtime_ns
    assert main(["restore", str(src), "-o", str(dst), "--sigma", "0.1", "--iters", "2", "-q"]) == 0
    assert (dst / "im0.png").stat().st_mtime_ns == stamp and (dst / "im1.png").exists()


def test_errors_are_one_line_and_leave_nothing(tmp_path, clean_png, capsys):
    out = tmp_path / "out.png"
    assert main(["restore", str(tmp_path / "missing.png"), "-o", str(out)]) == 2
    rgb = tmp_path / "rgb.png"
    Image.fromarray((np.random.rand(40, 40, 3) * 255).astype("uint8")).save(rgb)
    assert main(["restore", str(rgb), "-o", str(out), "--model", "gray", "--sigma", "0.1"]) == 2
    assert main(["restore", str(clean_png), "-o", str(out), "--task", "deblur", "--blur-sigma", "40",
                 "--sigma", "0.01"]) == 2
    (tmp_path / "m.png").write_bytes(b"garbage")
    assert main(["restore", str(clean_png), "-o", str(out), "--task", "inpaint", "--mask",
                 str(tmp_path / "m.png"), "--sigma", "0.01"]) == 2
    assert main(["restore", str(clean_png), "-o", str(tmp_path / "o.xyz"), "--sigma", "0.1"]) == 2
    assert main(["restore", str(clean_png), "-o", str(out), "--task", "deblur", "--blur-sigma", "1.6",
                 "--lam", "0.01", "--clipped"]) == 2  # the clipped data term needs the noise level
    err = capsys.readouterr().err.strip().splitlines()
    said = ["no such file or folder: " + str(tmp_path / "missing.png"), "is a colour image and the model is grayscale",
            "is larger than the image", "cannot read image " + str(tmp_path / "m.png"), "unsupported output format",
            "needs sigma (--sigma"]  # each refusal for its own reason, not any error that ends in status 2
    assert len(err) == 6 and all(line.startswith("alr: error:") and w in line for line, w in zip(err, said)), err
    assert not out.exists() and not list(tmp_path.glob(".*tmp*"))
    with pytest.raises(SystemExit):
        main(["restore", str(clean_png), "-o", str(out), "--task", "paint"])


@pytest.mark.parametrize("argv", [
    ["restore", "IN", "-o", "OUT", "--iters", "0"],
    ["restore", "IN", "-o", "OUT", "--task", "sr", "--factor", "0"],
    ["restore", "IN", "-o", "OUT", "--device", "tpu9"],
    ["degrade", "IN", "-o", "OUT", "--task", "sr", "--factor", "-2"],
    ["train", "-o", "OUT", "--clean", "IN", "--ckpt-every", "0"],
    ["train", "-o", "OUT", "--clean", "IN", "--batch-size", "0"],
])
def test_bad_option_values_are_usage_errors(tmp_path, clean_png, capsys, argv):
    """Counts below 1 and unknown devices stop at the command line (they crashed or ran silently)."""
    out = tmp_path / "out.png"
    argv = [str(clean_png) if a == "IN" else str(out) if a == "OUT" else a for a in argv]
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2 and "error: argument" in capsys.readouterr().err
    assert not out.exists()


def test_resolve_device():
    from alr.device import resolve_device
    assert resolve_device(None).type == ("cuda" if torch.cuda.is_available() else "cpu")
    assert resolve_device("cpu") == torch.device("cpu")
    with pytest.raises(ValueError, match="unknown device"):
        resolve_device("tpu9")
    with pytest.raises(ValueError, match="CUDA"):
        resolve_device(f"cuda:{torch.cuda.device_count()}")  # one past the last GPU, or none at all


def test_restore_clipped_input_with_the_censored_data_term(tmp_path, camera, capsys):
    clean = tmp_path / "clean.png"
    write_image(clean, camera[..., ::4, ::4])
    noisy = tmp_path / "noisy.png"  # PNG: the noise is clipped to [0, 1], saturating the coat and the sky
    assert main(["degrade", str(clean), "-o", str(noisy), "--sigma", "0.3", "--seed", "1", "--clip"]) == 0
    for name, extra in (("plain.png", []), ("clipped.png", ["--clipped"])):
        assert main(["restore", str(noisy), "-o", str(tmp_path / name), "--sigma", "0.3"] + extra) == 0
    err = capsys.readouterr().err
    assert "of the pixels are exactly 0 or 1" in err and "clipped-noise data term" in err
    gray = alr.load("gray")  # --clipped takes lambda from the table for clipped inputs (if the model has one)
    assert f"lam {alr.lam_for(gray, 'denoise', 0.3, clipped=True):.4g}, lbfgs" in err
    assert f"lam {alr.lam_for(gray, 'denoise', 0.3):.4g}, lbfgs, " in err
    x = read_image(clean)
    assert float(psnr(read_image(tmp_path / "clipped.png"), x)) > float(psnr(read_image(tmp_path / "plain.png"), x)) + 0.5


def test_restore_concavity_option(tmp_path, clean_png, capsys):
    """--concavity overrides the table's shaping of the patch scores (0: the paper's R, as the API);
    a model without a calibrated score reference refuses a positive one."""
    noisy = tmp_path / "noisy.npy"
    assert main(["degrade", str(clean_png), "-o", str(noisy), "--sigma", "0.1", "--seed", "3"]) == 0
    outs = {}
    for k in ("table", "0", "2"):
        outs[k] = tmp_path / f"k{k}.npy"
        extra = [] if k == "table" else ["--concavity", k]
        assert main(["restore", str(noisy), "-o", str(outs[k]), "--sigma", "0.1", "-q"] + extra) == 0
    gray = alr.load("gray")
    opts = {**alr.pretrained.solver_options(gray, "denoise", 0.1), "concavity": 0.0}
    paper, _ = alr.solver.minimize(read_image(noisy), None, gray, alr.lam_for(gray, "denoise", 0.1), **opts)
    assert torch.allclose(read_image(outs["0"]), paper, atol=1e-5)
    assert not torch.allclose(read_image(outs["2"]), paper, atol=1e-3)
    bare = tmp_path / "bare.safetensors"
    alr.save(alr.PatchCritic(width=8), bare)
    capsys.readouterr()
    assert main(["restore", str(noisy), "-o", str(tmp_path / "b.npy"), "--model", str(bare), "--lam", "0.01",
                 "--concavity", "0.5"]) == 2
    assert "no score reference" in capsys.readouterr().err and not (tmp_path / "b.npy").exists()
    with pytest.raises(SystemExit):
        main(["restore", str(noisy), "-o", str(tmp_path / "c.npy"), "--concavity", "-1"])


def test_restore_symmetric_option(tmp_path, clean_png):
    """--symmetric: the API's restore with R averaged over the flips / quarter turns, so restoring
    the transposed image gives the transposed restoration."""
    from alr.critic import dihedral

    noisy, turned = tmp_path / "noisy.npy", tmp_path / "turned.npy"
    assert main(["degrade", str(clean_png), "-o", str(noisy), "--sigma", "0.1", "--seed", "3"]) == 0
    y = read_image(noisy)
    write_image(turned, dihedral(y, 5))  # the transpose
    for src, dst in ((noisy, "s.npy"), (turned, "t.npy")):
        assert main(["restore", str(src), "-o", str(tmp_path / dst), "--sigma", "0.1", "--symmetric", "-q"]) == 0
    gray = alr.load("gray")
    api, _ = alr.solver.minimize(y, None, gray, alr.lam_for(gray, "denoise", 0.1), symmetric=True,
                         **alr.pretrained.solver_options(gray, "denoise", 0.1))
    assert torch.allclose(read_image(tmp_path / "s.npy"), api, atol=1e-5)
    # equal up to float rounding (the 8 terms are summed in another order; measured max 1.2e-4)
    assert torch.allclose(read_image(tmp_path / "t.npy"), dihedral(api, 5), atol=1e-3)
    plain, _ = alr.solver.minimize(y, None, gray, alr.lam_for(gray, "denoise", 0.1),
                           **alr.pretrained.solver_options(gray, "denoise", 0.1))
    assert not torch.allclose(plain, api, atol=1e-3)


def test_color_with_per_channel_and_color_model(tmp_path):
    from skimage import data
    rgb = tmp_path / "rgb.png"
    Image.fromarray(data.astronaut()[100:164, 100:164]).save(rgb)
    assert main(["restore", str(rgb), "-o", str(tmp_path / "a.png"), "--model", "gray", "--per-channel",
                 "--sigma", "0.05", "--iters", "2", "-q"]) == 0
    assert main(["restore", str(rgb), "-o", str(tmp_path / "b.png"), "--sigma", "0.05", "--iters", "2",
                 "-q"]) == 0
    assert read_image(tmp_path / "b.png").shape == (1, 3, 64, 64)


def test_info(capsys):
    """A readable summary by default (no machine paths), the raw metadata with --json."""
    assert main(["info", "gray"]) == 0
    text = capsys.readouterr().out
    assert "13x13 patches" in text and "table denoise:" in text and len(text.splitlines()) < 40
    assert "/work/" not in text and "/home/" not in text
    assert main(["info", "gray", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["receptive_field"] == 13 and "lambda" in info["meta"]


def test_a_trained_model_restores_without_lam(tmp_path, sample_dir, clean_png, capsys):
    """`alr train` ends with a quick lambda calibration on training-side crops, so the next line
    restores without --lam; --no-calibrate skips it (and then restore asks for --lam)."""
    out = tmp_path / "m.safetensors"
    base = ["train", "--clean", str(sample_dir), "--sigma-range", "0.05", "0.2", "--steps", "30", "--batch-size", "16",
            "--width", "8", "-q"]
    assert main(base + ["-o", str(out)]) == 0
    table = alr.load(out).meta["lambda"]["denoise"]
    assert table["sigma"] == [0.05, 0.079, 0.13, 0.2] and all(v > 0 for v in table["lam"])
    assert "samples" in alr.load(out).meta["lambda_calibration"]
    restored = tmp_path / "r.png"
    assert main(["restore", str(clean_png), "-o", str(restored), "--model", str(out), "--sigma", "0.1", "-q"]) == 0
    assert restored.is_file()
    bare = tmp_path / "bare.safetensors"
    assert main(base + ["--no-calibrate", "-o", str(bare)]) == 0
    assert "lambda" not in alr.load(bare).meta
    assert main(["restore", str(clean_png), "-o", str(tmp_path / "b.png"), "--model", str(bare), "--sigma", "0.1"]) == 2
    assert "--lam" in capsys.readouterr().err


def test_train_cli_stop_after_pauses_then_resume_calibrates(tmp_path, sample_dir, capsys):
    """--stop-after: a paused run says how to go on and is not calibrated; --resume ends it."""
    out = tmp_path / "m.safetensors"
    args = ["train", "--clean", str(sample_dir), "--sigma", "0.1", "--steps", "4", "--batch-size", "8",
            "--width", "8", "--depth", "3", "-q", "-o", str(out)]
    assert main(args + ["--stop-after", "1e-9"]) == 0
    said = capsys.readouterr().out
    assert "paused" in said and f"{out}.ckpt" in said and "calibrated lambda" not in said
    assert alr.load(out).meta["training"]["paused"] and "lambda" not in alr.load(out).meta
    assert alr.load(out).meta["pending"] == ["calibration"]  # what the file lacks, said where it is used:
    assert main(["restore", str(sorted(sample_dir.iterdir())[0]), "-o", str(tmp_path / "r.png"), "--model", str(out),
                 "--lam", "0.01", "--iters", "2"]) == 0
    assert "unfinished training run (lacks: training steps, calibration)" in capsys.readouterr().err
    assert main(["info", str(out)]) == 0 and "unfinished training run" in capsys.readouterr().out
    assert main(args + ["--resume"]) == 0
    meta = alr.load(out).meta
    assert "paused" not in meta["training"] and meta["training"]["steps"] == 4 and "denoise" in meta["lambda"]
    assert "pending" not in meta and main(["info", str(out)]) == 0 and "unfinished" not in capsys.readouterr().out


def test_train_cli_and_resume(tmp_path, sample_dir, capsys):
    out = tmp_path / "m.safetensors"
    args = ["train", "--clean", str(sample_dir), "--sigma-range", "0", "0.3", "--steps", "10", "--batch-size", "8",
            "--width", "8", "--ckpt-every", "5", "-q", "-o", str(out)]
    assert main(args + ["--no-calibrate"]) == 0 and out.exists() and (tmp_path / "m.csv").exists()
    args[args.index("--steps") + 1] = "20"
    assert main(args + ["--resume"]) == 0  # ends calibrated over the noise range
    assert "augment" not in alr.load(out).meta["data"] and len(alr.load(out).meta["lambda"]["denoise"]["sigma"]) > 1
    args = args[:-2] + ["--no-calibrate"]  # the variants below (their own -o) record their recipe; no calibration
    aug = tmp_path / "a.safetensors"
    assert main(args + ["-o", str(aug), "--augment"]) == 0
    assert alr.load(aug).meta["data"]["augment"] == "random flips / quarter turns"  # recorded in the model
    theirs = tmp_path / "t.safetensors"  # the authors' released recipe: Adam's default betas, mu = 5
    assert main(args + ["-o", str(theirs), "--betas", "0.9", "0.999", "--mu", "5"]) == 0
    assert alr.load(theirs).meta["training"]["betas"] == [0.9, 0.999]
    assert alr.load(theirs).meta["training"]["mu"] == 5.0
    bad = tmp_path / "b.safetensors"
    capsys.readouterr()
    assert main(args + ["-o", str(bad), "--betas", "0.9", "1.5"]) == 2 and not bad.exists()
    assert "Adam betas must be two numbers in [0, 1)" in capsys.readouterr().err
    sloped = tmp_path / "s.safetensors"  # the slope penalty: paired patches, its weight and column recorded
    assert main(args + ["-o", str(sloped), "--slope", "10"]) == 0
    assert alr.load(sloped).meta["training"]["slope"] == 10.0 and alr.load(sloped).meta["data"]["paired"]
    assert float(list(csv.DictReader(open(tmp_path / "s.csv")))[-1]["slope_penalty"]) >= 0
    with pytest.raises(SystemExit):  # argparse: a usage error
        main(args + ["-o", str(bad), "--slope", "-1"])
    assert not bad.exists()
    capsys.readouterr()
    assert main(["train", "--clean", str(sample_dir), "--degraded", str(sample_dir), "--slope", "1",
                 "-o", str(bad)]) == 2 and not bad.exists()
    assert "paired patches need a synthetic degradation" in capsys.readouterr().err
    assert main(["train", "--clean", str(tmp_path / "nope"), "--sigma", "0.1", "-o", str(out)]) == 2
    assert "no such image folder: " + str(tmp_path / "nope") in capsys.readouterr().err


def test_train_poisson_gaussian(tmp_path, sample_dir, capsys):
    """--poisson GAIN trains on Poisson-Gaussian noise (no DeepInverse needed), recorded in the model and
    calibrated at the noise's std at mid-grey; it is an error with real degraded images."""
    out = tmp_path / "pg.safetensors"
    assert main(["train", "--clean", str(sample_dir), "--sigma", "0.02", "--poisson", "0.02", "--blur", "0.8",
                 "--steps", "5", "--batch-size", "8", "--width", "8", "--max-images", "6", "-q", "-o", str(out)]) == 0
    model = alr.load(out)
    assert model.meta["data"]["degradation"] == "gaussian blur std 0.8 + poisson noise gain 0.02 + gaussian noise sigma=0.02"
    assert model.meta["lambda"]["denoise"]["sigma"] == [0.102]  # hypot(0.02, sqrt(0.02 / 2))
    assert main(["train", "--clean", str(sample_dir), "--degraded", str(sample_dir), "--poisson", "0.02",
                 "-o", str(tmp_path / "bad.safetensors")]) == 2
    assert "--poisson apply to synthetic noise" in capsys.readouterr().err


@pytest.mark.parametrize("meta", [{"data": {"clean": "/home/me/bsd400"}}, {"data": {"degraded": ["a", "/tmp/x.png"]}},
                                  {"data": {"clean": "~/bsd400"}}, {"data": {"clean": "../shared/data/bsd400"}}],
                         ids=["nested", "list", "home", "up"])
def test_a_model_file_never_records_a_machine_path(tmp_path, meta):
    critic = alr.PatchCritic(depth=2, width=4)
    critic.meta = meta
    with pytest.raises(ValueError, match="records the machine path"):
        save_model(critic, tmp_path / "m.safetensors")
    assert not list(tmp_path.iterdir())  # nothing written


def test_committed_model_files_record_no_machine_path():
    from pathlib import Path

    from alr.modelfile import _strings, is_machine_path, read_header
    root = Path(__file__).resolve().parents[1]
    files = [f for d in ("src", "docs", "research") for f in (root / d).rglob("*.safetensors")]
    assert len(files) >= 2
    for f in files:
        meta = json.loads(read_header(f).get("meta", "{}"))
        assert not [kv for kv in _strings(meta) if is_machine_path(kv[1])], f


def test_train_init_continues_a_model(tmp_path, sample_dir, capsys):
    """--init starts from the given weights, drops the stale lambda tables and records the lineage."""
    out = tmp_path / "m.safetensors"
    base = ["train", "--clean", str(sample_dir), "--sigma", "0.1", "--steps", "3", "--batch-size", "8", "-q",
            "--no-calibrate"]
    assert main(base + ["--init", "gray", "-o", str(out)]) == 0
    gray, cont = alr.load("gray"), alr.load(out)
    assert cont.config() == gray.config() and "lambda" not in cont.meta and "lambda" in gray.meta
    assert cont.meta["continued_from"]["model"] == "gray"
    assert cont.meta["continued_from"]["training"] == gray.meta["training"]
    assert cont.meta["continued_from"]["data"] == gray.meta["data"]  # the parent's data, not overwritten
    assert cont.meta["data"]["clean"] == sample_dir.name  # data sets by name, never a machine path
    assert cont.meta["training"]["steps"] == 3
    with pytest.raises(KeyError, match="alr bench calibrate --model FILE --tasks denoise"):
        alr.lam_for(cont, "denoise", 0.1)
    moved = [float((a - b).detach().abs().max()) for a, b in zip(cont.parameters(), gray.parameters())]
    assert 0 < max(moved) < 1e-2  # trained from gray's weights, not from scratch
    again = tmp_path / "m2.safetensors"
    assert main(base + ["--init", str(out), "-o", str(again)]) == 0
    assert alr.load(again).meta["continued_from"]["continued_from"]["model"] == "gray"
    smooth = tmp_path / "s.safetensors"  # the same weights under a smooth activation
    assert main(base + ["--init", "gray", "--activation", "silu", "--steps", "0", "-o", str(smooth)]) == 0
    s = alr.load(smooth)
    assert s.activation == "silu" and s.meta["activation_from"] == "relu"
    assert all(torch.equal(a, b) for a, b in zip(s.parameters(), gray.parameters()))
    sq = tmp_path / "w2.safetensors"  # the same weights scored as half a squared distance
    assert main(base + ["--init", "gray", "--criterion", "w2", "--anchor", "50", "--steps", "0", "-o", str(sq)]) == 0
    w2 = alr.load(sq)
    assert w2.criterion == "w2" and w2.meta["criterion_from"] == "w1" and w2.meta["training"]["anchor"] == 50
    x = torch.rand(1, 1, 20, 20)
    assert torch.allclose(w2(x), gray(x) ** 2 / 2)
    capsys.readouterr()
    assert main(base + ["--init", "gray", "--width", "32", "-o", str(tmp_path / "x.safetensors")]) == 2
    assert "width=32 (model: 64)" in capsys.readouterr().err
    assert main(base + ["--init", "color", "--channels", "1", "-o", str(tmp_path / "x.safetensors")]) == 2
    assert "does not match in_channels=1 (model: 3)" in capsys.readouterr().err
    assert main(base + ["--init", "gray", "--resume", "-o", str(tmp_path / "x.safetensors")]) == 2
    assert "--init starts from a model and --resume from a checkpoint" in capsys.readouterr().err
    assert not (tmp_path / "x.safetensors").exists()


def test_image_formats(tmp_path):
    a = (np.random.rand(20, 30) * 65535).astype(np.uint16)
    Image.fromarray(a).save(tmp_path / "a16.png")
    x = read_image(tmp_path / "a16.png")
    assert torch.allclose(x[0, 0], torch.from_numpy(a.astype(np.float32) / 65535), atol=1e-6)
    rgba = (np.random.rand(20, 30, 4) * 255).astype(np.uint8)
    Image.fromarray(rgba).save(tmp_path / "a.png")
    assert read_image(tmp_path / "a.png").shape == (1, 3, 20, 30)
    assert read_image(tmp_path / "a.png", channels=1).shape == (1, 1, 20, 30)


@pytest.mark.parametrize("method", ["adam", "lbfgs"])
def test_folder_batches_match_single_image_solves(tmp_path, clean_png, capsys, method):
    """Images of one size are solved as a batch; the outputs equal those of one-image solves
    (the images are independent problems), and each image keeps its own estimated lambda."""
    from alr.images import read_image
    src = tmp_path / "in"
    src.mkdir()
    for i, s in enumerate((0.05, 0.1, 0.2)):
        main(["degrade", str(clean_png), "-o", str(src / f"im{i}.png"), "--sigma", str(s), "--seed", str(i)])
    outs = {}
    for bs in (1, 3):
        dst = tmp_path / f"out{bs}"
        assert main(["restore", str(src), "-o", str(dst), "--method", method, "--iters", "3",
                     "--batch-size", str(bs)]) == 0
        outs[bs] = [read_image(dst / f"im{i}.png") for i in range(3)]
    err = capsys.readouterr().err
    assert "for a batch of 3" in err and err.count("estimated noise sigma") == 6
    for a, b in zip(outs[1], outs[3]):
        assert float((a - b).abs().max()) <= 1 / 255 + 1e-6


@pytest.mark.parametrize("extra,kw", [(["--sigma", "0.1"], {"sigma": 0.1}), ([], {}),
                                      (["--sigma", "0.2", "--clipped"], {"sigma": 0.2, "clipped": True})])
def test_python_restore_equals_the_cli(tmp_path, camera, extra, kw):
    """alr.restore(y, model="gray", ...) resolves the same settings as `alr restore` (alr.settings) and gives
    the same image."""
    noisy = tmp_path / "noisy.npy"
    y = add_noise(camera[..., 200:296, 200:296], kw.get("sigma", 0.1), seed=4)
    write_image(noisy, y.clamp(0, 1) if kw.get("clipped") else y)
    out = tmp_path / "out.npy"
    assert main(["restore", str(noisy), "-o", str(out), "--model", "gray", "-q"] + extra) == 0
    api = alr.restore(read_image(noisy), model="gray", **kw)
    assert torch.allclose(api, read_image(out), atol=1e-5)


def test_routine_cpu_tiling_is_silent_and_a_given_budget_is_reported(tmp_path, camera, capsys):
    """On the CPU the default activation budget is at most 128 MiB (tiles are faster there than a
    whole image): a 256x256 image is tiled without a word; under --max-memory the note names it."""
    from alr.critic import Regularizer
    from alr.device import MAX_AUTO_MEMORY_CPU, memory_budget
    budget = memory_budget("cpu")
    assert 64 << 20 <= budget <= MAX_AUTO_MEMORY_CPU
    y = add_noise(camera[..., :256, :256], 0.1, seed=0).clamp(0, 1)
    assert Regularizer(alr.load("gray"), max_memory=budget).tile_size(y) is not None
    noisy = tmp_path / "n.png"
    write_image(noisy, y)
    for extra, noted in (([], False), (["--max-memory", "64M"], True)):
        assert main(["restore", str(noisy), "-o", str(tmp_path / "o.png"), "--sigma", "0.1", "--iters", "1",
                     "--device", "cpu", *extra]) == 0
        assert ("solved in tiles" in capsys.readouterr().err) == noted


_MAPPED_BY_64MIB = """
import ctypes, torch
from alr.device import keep_freed_memory
class Info(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost".split()]
libc = ctypes.CDLL(None)
libc.mallinfo2.restype = Info
applied = keep_freed_memory()
before = libc.mallinfo2().hblkhd
x = torch.ones(64 << 20, dtype=torch.uint8)
print(applied, (libc.mallinfo2().hblkhd - before) >> 20)
"""


def _glibc_mallinfo2() -> bool:
    import ctypes
    try:
        return hasattr(ctypes.CDLL(None), "mallinfo2")
    except (OSError, TypeError):
        return False


@pytest.mark.skipif(not _glibc_mallinfo2(), reason="needs glibc >= 2.33")
@pytest.mark.parametrize("env, applied", [({}, True), ({"MALLOC_ARENA_MAX": "2"}, False),
                                          ({"GLIBC_TUNABLES": "glibc.malloc.arena_max=2"}, False)])
def test_keep_freed_memory_stops_large_maps_unless_the_user_tuned_malloc(env, applied):
    """keep_freed_memory serves a 64 MiB tensor from the heap instead of a map of its own, and leaves
    the allocator alone when the environment configures it."""
    import os
    import subprocess
    import sys
    from alr.device import malloc_configured
    clean = {k: v for k, v in os.environ.items() if not malloc_configured([k])}
    out = subprocess.run([sys.executable, "-c", _MAPPED_BY_64MIB], env={**clean, **env}, capture_output=True,
                         text=True, check=True).stdout.split()
    assert out[0] == str(applied)
    assert (int(out[1]) == 0) if applied else (int(out[1]) >= 64)


@pytest.mark.parametrize("command, tuned", [("train", True), ("finetune", True), ("restore", False)])
def test_only_the_long_commands_tune_the_allocator(command, tuned, tmp_path, monkeypatch):
    import alr.device
    calls = []
    monkeypatch.setattr(alr.device, "keep_freed_memory", lambda: calls.append(1) or True)
    args = {"train": ["--clean", str(tmp_path / "none"), "--sigma", "0.1"],
            "finetune": ["--clean", str(tmp_path / "none"), "--sigma", "0.1", "--init", "gray"],
            "restore": [str(tmp_path / "none.png")]}[command]
    assert main([command, *args, "-o", str(tmp_path / "out")]) == 2  # the missing input stops it
    assert bool(calls) == tuned


def test_degrade_gives_each_file_its_own_noise_unless_seeded(tmp_path, clean_png):
    """Without --seed the noise follows the input's file name: two images degraded one by one do not
    share one noise field; --seed fixes it."""
    import shutil
    other = tmp_path / "other.png"
    shutil.copy(clean_png, other)
    outs = {}
    for src, extra in ((clean_png, []), (other, []), (clean_png, ["--seed", "5"]), (other, ["--seed", "5"])):
        out = tmp_path / f"{src.stem}{len(outs)}.npy"
        assert main(["degrade", str(src), "-o", str(out), "--sigma", "0.1", *extra]) == 0
        outs[len(outs)] = np.load(out)
    assert not np.array_equal(outs[0], outs[1]) and np.array_equal(outs[2], outs[3])
    assert main(["degrade", str(clean_png), "-o", str(tmp_path / "again.npy"), "--sigma", "0.1"]) == 0
    assert np.array_equal(np.load(tmp_path / "again.npy"), outs[0])  # reproducible
