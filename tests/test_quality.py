"""The comparative study's recipe and beyond (issue 26): per-layer widths, the fitted scale,
the one-sided penalty, checkpoint selection, bilevel fine-tuning, solvers that reach the minimiser."""
import csv
import json
import math
import os
import re
import signal

import pytest
import torch

from conftest import interrupted

import alr
from alr.calibration import Validator, center_crops
from alr.cli import main
from alr.critic import PatchCritic, Regularizer
from alr.data import Degradation, ImageStack, add_noise, make_patch_pairs, split_holdout
from alr.finetune import FinetuneConfig, finetune, fit_scale, jfb_output
from alr.images import list_images
from alr.metrics import psnr
from alr.modelfile import ModelFileError, load_model, save_model, validate_config
from alr.pretrained import solver_options
from alr.settings import resolve
from alr.solver import minimize
from alr.train import TrainConfig, train_critic, wgan_gp_loss

LAR = [128, 64, 64, 64, 32, 32]


# ---------------------------------------------------------------------------- architecture and scale
def test_lar_architecture_is_the_studys_15x15_network():
    c = PatchCritic(widths=LAR, activation="silu")
    convs = [m for m in c.net if isinstance(m, torch.nn.Conv2d)]
    assert [m.out_channels for m in convs] == LAR + [1] and all(m.kernel_size == (3, 3) for m in convs)
    assert c.depth == 7 and c.receptive_field == 15 and c.width is None
    assert sum(p.numel() for p in c.parameters()) == 176_929  # "about 177k parameters"
    assert c(torch.rand(1, 1, 20, 20)).shape == (1, 1, 6, 6)
    assert Regularizer(c).bytes_per_pixel() == 12 * sum(LAR)
    assert Regularizer(PatchCritic(depth=6, width=64)).bytes_per_pixel() == 12 * 64 * 5  # as before


def test_widths_round_trip_and_old_files_load_unchanged(tmp_path):
    c = PatchCritic(widths=[16, 8, 8], activation="silu", log_scale=0.3, log_weight=-0.2)
    save_model(c, tmp_path / "w.safetensors")
    back = load_model(tmp_path / "w.safetensors")
    assert back.config() == c.config() and back.widths == (16, 8, 8)
    x = torch.rand(1, 1, 24, 24)
    assert torch.allclose(back.regularizer(x), c.regularizer(x))
    gray = alr.load("gray")
    assert gray.config() == {"kind": "patch", "in_channels": 1, "depth": 6, "width": 64, "activation": "relu",
                             "criterion": "w1"}
    assert PatchCritic(widths=[8] * 3).config()["width"] == 8  # equal widths are stored as one
    text = alr.pretrained.describe(back, "w")
    assert "4 layers of widths 16-8-8 (9x9 patches)" in text and "log_scale 0.3" in text


@pytest.mark.parametrize("cfg,message", [
    ({"depth": 3, "widths": [8, 8, 8]}, "must list 2 layer widths"),
    ({"depth": 3, "widths": [8, 2000]}, "must be an integer in [1, 1024]"),
    ({"depth": 3, "width": 8, "widths": [8, 8]}, "one of 'width' or 'widths'"),
    ({"depth": 3}, "one of 'width' or 'widths'"),
    ({"depth": 3, "width": 8, "log_scale": float("nan")}, "'log_scale' must be a number"),
    ({"depth": 3, "width": 8, "log_weight": 99}, "'log_weight' must be a number"),
])
def test_model_config_limits(cfg, message):
    with pytest.raises(ModelFileError, match=message.replace("[", r"\[").replace("]", r"\]")):
        validate_config({"kind": "patch", "in_channels": 1, **cfg})


def test_fitted_scale_is_the_rescaled_regularizer():
    """R~(x) = e^(a - 2s) R(e^s x) and grad R~(x) = e^(a - s) (grad R)(e^s x), tiled or not."""
    torch.manual_seed(0)
    base = PatchCritic(depth=3, width=8, activation="softplus").double()
    fitted = PatchCritic(depth=3, width=8, activation="softplus", log_scale=0.4, log_weight=-0.3).double()
    fitted.load_state_dict(base.state_dict())
    x = torch.rand(2, 1, 30, 30, dtype=torch.float64)
    e = math.exp
    assert torch.allclose(Regularizer(fitted)(x), e(-0.3 - 0.8) * Regularizer(base)(e(0.4) * x))
    _, g = Regularizer(fitted, max_memory=20_000).value_and_grad(x)
    _, g0 = Regularizer(base).value_and_grad(e(0.4) * x)
    assert torch.allclose(g, e(-0.3 - 0.4) * g0)


# ---------------------------------------------------------------------------- training recipe
def test_one_sided_penalty_lets_the_critic_be_flatter_than_one():
    torch.manual_seed(0)
    c = PatchCritic(depth=3, width=8)
    with torch.no_grad():
        for prm in c.parameters():
            prm.mul_(0.1)  # a nearly flat critic: ||grad|| << 1
    p, q, t = torch.rand(16, 1, 7, 7), torch.rand(16, 1, 7, 7), torch.rand(16)
    _, two = wgan_gp_loss(c, p, q, t, mu=1.0)
    _, one = wgan_gp_loss(c, p, q, t, mu=1.0, penalty="one-sided")
    assert float(two["grad_norm_max"]) < 1
    assert float(two["gradient_penalty"]) > 0.5 and float(one["gradient_penalty"]) == 0.0
    with pytest.raises(ValueError, match="unknown gradient penalty"):
        TrainConfig(penalty="both")


def test_paired_interpolates_lie_between_a_patch_and_its_noisy_version(sample_dir):
    pairs = make_patch_pairs(sample_dir, 9, 1, degradation=Degradation(0.1, 0.1), paired=True, holdout=4)
    assert pairs.describe()["clean_images"] == len(list_images(sample_dir)) - 4
    p, q = pairs.sample(64, torch.Generator().manual_seed(0))
    noise = (q - p).flatten(1)
    assert 0.08 < float(noise.std()) < 0.12  # q is p plus its own noise: the segment p -> q is the noise direction
    train, held = split_holdout(sample_dir, None, 4)
    assert held == list_images(sample_dir)[-4:] and not set(train) & set(held)
    given = make_patch_pairs(sample_dir, 9, 1, degraded_dir=sample_dir, holdout=4)  # degraded versions, same names
    assert len(given.clean) == len(given.source) == len(list_images(sample_dir)) - 4  # held out of both
    with pytest.raises(ValueError, match="at least 2 must train"):
        split_holdout(sample_dir, 3, 2)


def test_checkpoint_selection_keeps_the_best_validated_critic(sample_dir, tmp_path):
    """Every val_every steps the validator scores the critic; the best one is returned, recorded and
    logged, and an interrupted run resumes to the same choice."""
    pairs = make_patch_pairs(sample_dir, 7, 1, degradation=Degradation(0.1, 0.1), paired=True)
    scores = iter([1.0, 3.0, 2.0, 1.0, 3.0, 2.0])
    seen = []

    def validator(critic):
        seen.append({k: v.clone() for k, v in critic.state_dict().items()})
        return next(scores), 0.01

    cfg = TrainConfig(steps=12, batch_size=8, lr0=1e-3, val_every=4, ckpt_every=4, device="cpu",
                      penalty="one-sided", mu=0.1, log_every=2)
    torch.manual_seed(0)
    out = tmp_path / "a.safetensors"
    a = train_critic(PatchCritic(depth=3, width=8), pairs.sample, cfg, out=out, log_csv=tmp_path / "a.csv",
                     progress=False, validator=validator)
    assert all(torch.equal(v, seen[1][k]) for k, v in a.state_dict().items())
    assert load_model(out).meta["training"]["selected"] == {"step": 8, "val_psnr": 3.0, "val_lambda": 0.01}
    rows = list(csv.DictReader(open(tmp_path / "a.csv")))
    assert [r["val_psnr"] for r in rows if r["val_psnr"]] == ["1.0000", "3.0000", "2.0000"]
    torch.manual_seed(0)
    b_out = tmp_path / "b.safetensors"
    with pytest.raises(KeyboardInterrupt):  # stopped after 8 steps, the checkpoint of step 8 written
        train_critic(PatchCritic(depth=3, width=8), interrupted(pairs.sample, 8), cfg, out=b_out, progress=False,
                     validator=validator)
    b = train_critic(PatchCritic(depth=3, width=8), pairs.sample, cfg, out=b_out, resume=True, progress=False,
                     validator=validator)
    assert all(torch.equal(v, a.state_dict()[k]) for k, v in b.state_dict().items())


class Scripted:
    """A validator returning the given scores in turn; ``rule`` names how it judges. It records the
    weights it judged and whether its lambda search had started (``searched``) at each call."""

    def __init__(self, scores: list[float], rule: str = "same") -> None:
        self.scores, self.rule, self.lam, self.searched, self.seen, self.was_searched = \
            iter(scores), rule, 0.01, False, [], []

    def __call__(self, critic):
        self.seen.append({k: v.clone() for k, v in critic.state_dict().items()})
        self.was_searched.append(self.searched)
        return next(self.scores), self.lam

    def describe(self) -> dict:  # as Validator.describe: "lambda" names the rule, not a value
        return {"images": "scripted", "lambda": "scripted"}


@pytest.mark.parametrize("rule, resumed_scores, selected", [
    ("same", [2.8], {"step": 8, "val_psnr": 3.0}),  # same rule: the stored best stands
    ("finer", [2.5, 0.7, 2.8], {"step": 12, "val_psnr": 2.8}),  # changed: the kept checks (steps 8, 4) re-judged
    ("finer", [3.5, 0.7, 2.8], {"step": 8, "val_psnr": 3.5}),
])
def test_a_resumed_run_whose_validation_changed_judges_its_best_again(sample_dir, tmp_path, rule, resumed_scores,
                                                                       selected):
    """Checkpoint selection compares like with like: a run resumed with a validator of another
    ``rule`` first scores the stored best checkpoint again (its weights, not the current ones)."""
    pairs = make_patch_pairs(sample_dir, 7, 1, degradation=Degradation(0.1, 0.1), paired=True)
    cfg = TrainConfig(steps=12, batch_size=8, lr0=1e-3, val_every=4, ckpt_every=4, device="cpu",
                      penalty="one-sided", mu=0.1, log_every=2)
    out, first = tmp_path / "a.safetensors", Scripted([1.0, 3.0], "same")
    torch.manual_seed(0)
    with pytest.raises(KeyboardInterrupt):
        train_critic(PatchCritic(depth=3, width=8), interrupted(pairs.sample, 8), cfg, out=out, progress=False,
                     validator=first)
    again = Scripted(resumed_scores, rule)
    train_critic(PatchCritic(depth=3, width=8), pairs.sample, cfg, out=out, resume=True, progress=False,
                 validator=again)
    assert len(again.seen) == len(resumed_scores)
    if rule != "same":
        assert all(torch.equal(v, first.seen[1][k]) for k, v in again.seen[0].items())
    chosen = load_model(out).meta["training"]["selected"]
    assert {k: chosen[k] for k in selected} == selected


def test_the_best_checks_are_judged_again_on_larger_crops_when_the_run_ends(sample_dir, tmp_path):
    """The TOP_CHECKS best checks (kept with their weights, across a resume) compete once more
    before a finer judge when the run ends; its choice is returned and recorded."""
    from alr.train import TOP_CHECKS
    pairs = make_patch_pairs(sample_dir, 7, 1, degradation=Degradation(0.1, 0.1), paired=True)
    cfg = TrainConfig(steps=16, batch_size=8, lr0=1e-3, val_every=4, ckpt_every=4, device="cpu",
                      penalty="one-sided", mu=0.1, log_every=2)
    out, checks = tmp_path / "a.safetensors", Scripted([1.0, 3.0])
    with pytest.raises(KeyboardInterrupt):
        train_critic(PatchCritic(depth=3, width=8), interrupted(pairs.sample, 8), cfg, out=out, progress=False,
                     validator=checks)
    more, final = Scripted([2.0, 0.5]), Scripted([5.0, 6.0, 4.0])  # final: checks of steps 8, 12, 4 in turn
    critic = train_critic(PatchCritic(depth=3, width=8), pairs.sample, cfg, out=out, resume=True, progress=False,
                          validator=more, final_validator=final)
    assert TOP_CHECKS == 3 and len(final.seen) == 3  # step 16 (0.5) was not among the best three
    assert all(torch.equal(v, final.seen[1][k]) and torch.equal(v, more.seen[0][k]) for k, v in critic.state_dict().items())
    chosen = load_model(out).meta["training"]["selected"]
    assert (chosen["step"], chosen["val_psnr"], chosen["final"]["psnr"], chosen["final"]["lambda"]) == (12, 2.0, 6.0, 0.01)
    assert [c["step"] for c in chosen["final"]["candidates"]] == [8, 12, 4]


def _end_ready(sample_dir, tmp_path):
    """A run of 8 steps (checks at 4 and 8) stopped after step 7 with its checkpoint: (pairs, config, out)."""
    pairs = make_patch_pairs(sample_dir, 7, 1, degradation=Degradation(0.1, 0.1), paired=True)
    cfg = TrainConfig(steps=8, batch_size=8, lr0=1e-3, val_every=4, ckpt_every=1, device="cpu",
                      penalty="one-sided", mu=0.1, log_every=2)
    out = tmp_path / "a.safetensors"
    with pytest.raises(KeyboardInterrupt):
        train_critic(PatchCritic(depth=3, width=8), interrupted(pairs.sample, 7), cfg, out=out, progress=False,
                     validator=Scripted([3.0]))
    return pairs, cfg, out


def test_the_end_of_a_run_keeps_to_its_deadline_and_resume_does_only_the_end(sample_dir, tmp_path):
    """--stop-after bounds the end of a run too: past its deadline after the last step, the run pauses
    before judging its best checks (the checkpoint holds every step, the model file says what it
    lacks); --resume then trains nothing and only judges them."""
    from alr.pretrained import unfinished
    from alr.train import FINAL_CHOICE
    pairs, cfg, out = _end_ready(sample_dir, tmp_path)
    late, unused = TrainConfig(**{**cfg.__dict__, "stop_after": 1e-9}), Scripted([])
    train_critic(PatchCritic(depth=3, width=8), pairs.sample, late, out=out, resume=True, progress=False,
                 validator=Scripted([2.0]), final_validator=unused)  # step 8 and its check, then the deadline
    meta = load_model(out).meta
    assert not unused.seen and meta["training"]["paused"] and meta["training"]["steps"] == 8
    assert meta["pending"] == [FINAL_CHOICE] and "training steps" not in unfinished(load_model(out))
    assert torch.load(f"{out}.ckpt", weights_only=False)["step"] == 8
    checks, final = Scripted([]), Scripted([5.0, 6.0])  # judges step 4's check (3.0), then step 8's (2.0)
    train_critic(PatchCritic(depth=3, width=8), pairs.sample, cfg, out=out, resume=True, progress=False,
                 validator=checks, final_validator=final)
    meta = load_model(out).meta
    assert not checks.seen and len(final.seen) == 2 and "paused" not in meta["training"] and "pending" not in meta
    assert (meta["training"]["selected"]["step"], meta["training"]["selected"]["final"]["psnr"]) == (8, 6.0)


def test_a_stop_signal_while_the_best_checks_are_judged_ends_resumably(sample_dir, tmp_path):
    """SIGTERM during the judgement of the best checks: the judgement in progress ends, the run
    stops with a message saying --resume ends it, no model is chosen; the resume judges them all."""
    from alr.errors import Interrupted
    pairs, cfg, out = _end_ready(sample_dir, tmp_path)

    class Signalling(Scripted):
        def __call__(self, critic):
            os.kill(os.getpid(), signal.SIGTERM)
            return super().__call__(critic)

    timed = TrainConfig(**{**cfg.__dict__, "steps": 10, "max_seconds": 1e-9})  # its budget ends it at step 8:
    stopped = Signalling([5.0, 6.0])                                         # a signal still stops the judging
    with pytest.raises(Interrupted, match=re.escape(f"stopped after step 8 of 10; {out}.ckpt holds it")):
        train_critic(PatchCritic(depth=3, width=8), pairs.sample, timed, out=out, resume=True, progress=False,
                     validator=Scripted([2.0]), final_validator=stopped)
    assert len(stopped.seen) == 1
    stopped = Signalling([5.0, 6.0])
    with pytest.raises(Interrupted, match=re.escape(f"stopped after step 8 of 8; {out}.ckpt holds it: run the "
                                                    "same command with --resume to end the run")):
        train_critic(PatchCritic(depth=3, width=8), pairs.sample, cfg, out=out, resume=True, progress=False,
                     validator=Scripted([]), final_validator=stopped)
    assert len(stopped.seen) == 1 and torch.load(f"{out}.ckpt", weights_only=False)["step"] == 8
    final = Scripted([5.0, 6.0])
    train_critic(PatchCritic(depth=3, width=8), pairs.sample, cfg, out=out, resume=True, progress=False,
                 validator=Scripted([]), final_validator=final)
    assert len(final.seen) == 2 and load_model(out).meta["training"]["selected"]["step"] == 8


def test_a_run_resumed_before_its_first_check_starts_the_lambda_search_afresh(sample_dir, tmp_path):
    """A checkpoint written before any check holds the search's starting lambda, not a searched
    one: the resumed run's first check searches from scratch (the whole line search)."""
    pairs = make_patch_pairs(sample_dir, 7, 1, degradation=Degradation(0.1, 0.1), paired=True)
    cfg = TrainConfig(steps=8, batch_size=8, lr0=1e-3, val_every=4, ckpt_every=2, device="cpu",
                      penalty="one-sided", mu=0.1, log_every=2)
    out = tmp_path / "a.safetensors"
    with pytest.raises(KeyboardInterrupt):  # stopped after step 2: checkpoint, no check yet
        train_critic(PatchCritic(depth=3, width=8), interrupted(pairs.sample, 2), cfg, out=out, progress=False,
                     validator=Scripted([]))
    again = Scripted([1.0, 2.0])
    train_critic(PatchCritic(depth=3, width=8), pairs.sample, cfg, out=out, resume=True, progress=False,
                 validator=again)
    assert again.was_searched == [False, False]  # Scripted never searches; nothing claimed it had


def test_a_check_that_is_not_finite_is_never_selected(sample_dir, tmp_path):
    """A diverged validation solve (NaN) scores -inf: later finite checks still compete."""
    pairs = make_patch_pairs(sample_dir, 7, 1, degradation=Degradation(0.1, 0.1), paired=True)
    cfg = TrainConfig(steps=12, batch_size=8, lr0=1e-3, val_every=4, device="cpu", penalty="one-sided", mu=0.1)
    out = tmp_path / "a.safetensors"
    train_critic(PatchCritic(depth=3, width=8), pairs.sample, cfg, out=out, progress=False,
                 validator=Scripted([math.nan, 1.0, 2.0]))
    assert load_model(out).meta["training"]["selected"]["step"] == 12


@pytest.mark.parametrize("after, kept", [(40.0, True), (20.0, False)])
def test_the_scale_fit_is_kept_only_if_validation_restores_better(finetune_data, monkeypatch, after, kept):
    """After training, the fitted input scale and weight compete with the unfitted critic on the
    validation crops (each at its best lambda near the selected one); the loser is dropped."""
    import alr.finetune
    from alr.train import _fit_scale_checked
    fit = alr.finetune.fit_scale
    monkeypatch.setattr(alr.finetune, "fit_scale", lambda *a, **k: fit(*a, **{**k, "steps": 2, "crop": 24}))
    critic = PatchCritic(depth=2, width=4, activation="silu")
    critic.meta = {"training": {"selected": {"step": 8, "val_psnr": 30.0, "val_lambda": 0.05}}}
    judge = Scripted([after])
    _fit_scale_checked(critic, ImageStack.from_folder(finetune_data, 1), judge, None, 0.1, "cpu", False)
    assert judge.was_searched == [True] and judge.lam == 0.05  # judged near the selected lambda
    assert (critic.log_scale != 0.0) == kept and (critic.log_weight != 0.0) == kept
    assert critic.meta["scale_fit"]["kept"] == kept
    assert (critic.meta["scale_fit"]["val_psnr_before"], critic.meta["scale_fit"]["val_psnr_after"]) == (30.0, after)
    critic.meta["training"]["selected"]["final"] = {"psnr": 31.0, "lambda": 0.04}  # chosen by the finer judge:
    finer = Scripted([after])                                                    # it judges the fit too
    _fit_scale_checked(critic, ImageStack.from_folder(finetune_data, 1), Scripted([]), finer, 0.1, "cpu", False)
    assert finer.lam == 0.04 and critic.meta["scale_fit"]["val_psnr_before"] == 31.0


def test_the_scale_fit_solves_with_the_models_boundary(monkeypatch):
    """fit_scale's inner solves and JFB step pad as the model restores (here: replicate)."""
    import alr.finetune
    seen = {}
    monkeypatch.setattr(alr.finetune, "finetune", lambda critic, images, cfg, lam, **k: seen.update(cfg=cfg))
    critic = PatchCritic(depth=2, width=4)
    critic.meta = {"solver": {"method": "lbfgs", "options": {"boundary": "replicate"}, "iters": {"denoise": 9}}}
    fit_scale(critic, None, 0.1, 0.05)
    assert seen["cfg"].boundary == "replicate" and seen["cfg"].iters == 9


def test_a_validation_solve_that_diverges_scores_minus_inf():
    """The solver raises on a diverged solve (NaN); a validation (and a calibration, which shares
    its scoring, alr.calibration.solved_psnr) scores that lambda -inf and goes on, instead of ending
    the training run."""
    critic = PatchCritic(depth=2, width=4)
    critic.meta = {"solver": {"method": "lbfgs", "options": {}, "iters": {"denoise": 3}}}  # short solves
    with torch.no_grad():
        next(critic.parameters()).fill_(math.nan)
    assert Validator(torch.rand(2, 1, 16, 16), 0.1, lam=0.01)(critic) == (-math.inf, 0.01)


def test_validator_scores_restoration_without_touching_the_critic(sample_dir):
    x = center_crops(list_images(sample_dir)[:2], 1, 32)
    critic = alr.load("gray").train()  # a critic in training: train mode, gradients on
    before = {k: v.clone() for k, v in critic.state_dict().items()}
    v = Validator(x, 0.1)
    score, lam = v(critic)
    assert lam > 0 and v.searched
    assert critic.training and all(p.requires_grad for p in critic.parameters())
    assert all(torch.equal(p, before[k]) for k, p in critic.state_dict().items())
    xh, _ = minimize(v.y, None, critic, lam, **solver_options(critic, "denoise", 0.1))  # the score is this solve's
    assert score == pytest.approx(float(psnr(xh, x).mean()), abs=1e-4) and score > float(psnr(v.y, x).mean()) + 1
    assert Validator(x, 0.1, lam=lam)(critic) == (score, lam)


def test_lar_recipe_sets_the_studys_options_and_explicit_ones_win(sample_dir, tmp_path, capsys):
    out = tmp_path / "lar.safetensors"
    assert main(["train", "--recipe", "lar", "--clean", str(sample_dir), "--sigma", "0.1", "--widths", "8,8",
                 "--steps", "1", "--lr0", "5e-4", "--val-every", "0", "--no-fit-scale", "--no-calibrate", "-q",
                 "--boundary", "replicate", "-o", str(out)]) == 0
    m = load_model(out)
    t = m.meta["training"]
    assert m.meta["recipe"] == "lar" and m.activation == "silu" and m.widths == (8, 8)
    assert (t["penalty"], t["mu"], t["batch_size"], t["betas"], t["lr0"], t["lr1"]) == \
        ("one-sided", 0.1, 512, [0.9, 0.999], 5e-4, 1e-4)
    assert m.meta["data"]["paired"] and m.meta["data"]["augment"]
    assert m.meta["data"]["clean_images"] == len(list_images(sample_dir)) - 8  # 8 held out to validate
    assert m.meta["solver"]["method"] == "lbfgs" and m.meta["solver"]["options"]["tol"] > 0
    assert m.meta["solver"]["options"]["boundary"] == "replicate"  # the recipe's solver, with this boundary
    assert solver_options(m, "denoise", 0.1)["boundary"] == "replicate"  # what validation and restore use
    assert main(["train", "--clean", str(sample_dir), "--sigma", "0.1", "--depth", "3", "--width", "8", "--steps",
                 "1", "--val-every", "5", "--no-calibrate", "-q", "-o", str(tmp_path / "p.safetensors")]) == 2
    assert "(--val-every) and --fit-scale need validation images" in capsys.readouterr().err


def test_a_run_stopped_during_its_scale_fit_says_so_and_resume_ends_it(sample_dir, tmp_path, monkeypatch, capsys):
    """A stop signal during the scale fit leaves the trained critic marked as lacking the fit; the
    message points to --resume, which fits it (training steps are not redone)."""
    import alr.finetune
    from alr.errors import Interrupted
    out = tmp_path / "lar.safetensors"
    args = ["train", "--recipe", "lar", "--clean", str(sample_dir), "--sigma", "0.1", "--widths", "8,8", "--steps",
            "1", "--batch-size", "16", "--val-every", "0", "--val-images", "2", "--no-calibrate", "-q", "-o", str(out)]

    def stopped(*a, **k):
        raise Interrupted("stopped after step 3 of 60; no checkpoint was asked for")
    monkeypatch.setattr(alr.finetune, "fit_scale", stopped)
    assert main(args) == 130
    assert "stopped during the scale fit" in capsys.readouterr().err
    assert load_model(out).meta["pending"] == ["scale fit"]
    fit = alr.finetune.FinetuneConfig  # the real fit, short
    monkeypatch.setattr(alr.finetune, "fit_scale", lambda critic, images, sigma, lam, **k: alr.finetune.finetune(
        critic, images, fit(sigma=sigma, steps=1, crop=24, batch_size=2, iters=5, weights=False, device="cpu"), lam,
        progress=False))
    assert main(args + ["--resume"]) == 0
    m = load_model(out)
    assert "pending" not in m.meta and "kept" in m.meta["scale_fit"] and m.meta["training"]["steps"] == 1


# ---------------------------------------------------------------------------- solvers
@pytest.fixture(scope="module")
def smooth_problem():
    torch.manual_seed(0)
    critic = PatchCritic(depth=3, width=8, activation="silu")
    x = torch.linspace(0, 1, 32).repeat(32, 1)[None, None]
    y = add_noise(x.expand(2, 1, 32, 32), 0.1, seed=0)
    return critic, y, 3.0


def test_nmapg_reaches_the_minimiser_of_a_long_lbfgs(smooth_problem):
    critic, y, lam = smooth_problem
    _, long = minimize(y, None, critic, lam, method="lbfgs", iters=500, tol=1e-9, clip=False)
    xs, short = minimize(y, None, critic, lam, method="lbfgs", iters=3, clip=False)
    xn, nm = minimize(y, None, critic, lam, method="nmapg", iters=500, tol=1e-7, clip=False)
    e = alr.solver.Problem(y, alr.physics.Denoising(), Regularizer(critic), torch.tensor([lam, lam])).energy
    assert nm.converged and nm.iterations < 500
    assert float(e(xn).value.mean()) < float(e(xs).value.mean()) - 3e-8  # E is about -7.5e-3
    assert float(e(xn).value.mean()) == pytest.approx(long.objective[-1], rel=1e-6, abs=1e-8)
    x1, _ = minimize(y[1:], None, critic, lam, method="nmapg", iters=500, tol=1e-7, clip=False)
    assert torch.allclose(xn[1:], x1, atol=1e-5)  # each image as if alone


def test_lbfgs_to_a_tolerance_follows_the_uninterrupted_iterates(smooth_problem):
    critic, y, lam = smooth_problem
    a, ha = minimize(y[:1], None, critic, lam, method="lbfgs", iters=6)
    b, hb = minimize(y[:1], None, critic, lam, method="lbfgs", iters=6, tol=1e-12)
    assert torch.equal(a, b) and ha.objective == hb.objective
    c, hc = minimize(y[:1], None, critic, lam, method="lbfgs", iters=500, tol=1e-3)
    assert hc.converged and hc.iterations < 10


def test_a_models_solver_may_run_to_a_tolerance():
    m = PatchCritic(depth=3, width=8)
    m.meta = {"solver": {"method": "nmapg", "options": {"boundary": "reflect", "tol": 1e-4}, "iters": {"denoise": 300}},
              "lambda": {"denoise": {"sigma": [0.1], "lam": [0.01]}}}
    s = resolve(m, torch.rand(1, 1, 32, 32), sigma=0.1)
    assert s.solver_kwargs()["tol"] == 1e-4 and s.iters == 300 and s.method == "nmapg"
    assert "to tolerance" in s.describe()


# ---------------------------------------------------------------------------- bilevel fine-tuning
def test_jfb_step_is_a_gradient_step_of_the_energy():
    torch.manual_seed(0)
    c = PatchCritic(depth=2, width=4, activation="silu")
    x, y = torch.rand(1, 1, 12, 12), torch.rand(1, 1, 12, 12)
    _, g = Regularizer(c).value_and_grad(x)
    assert torch.allclose(jfb_output(c, x, y, 0.1, 0.5), x - 0.5 * ((x - y) + 144 * 0.1 * g), atol=1e-6)


@pytest.fixture(scope="module")
def finetune_data(tmp_path_factory):
    from skimage import data
    folder = tmp_path_factory.mktemp("ft")
    from PIL import Image
    im = data.camera()
    for k, (i, j) in enumerate([(0, 0), (0, 256), (256, 0), (256, 256), (128, 128), (300, 100), (100, 300)]):
        Image.fromarray(im[i:i + 96, j:j + 96]).save(folder / f"c{k}.png")
    return folder


def test_finetune_lowers_the_loss_and_raises_held_out_psnr(finetune_data, tmp_path):
    """CPU scale: a width-8 critic, 32x32 crops, tens of steps."""
    train, held = split_holdout(finetune_data, None, 2)
    stack = ImageStack.from_folder(finetune_data, 1, train)
    x_val = center_crops(held, 1, 48)
    torch.manual_seed(0)
    critic = PatchCritic(depth=3, width=8, activation="silu")
    lam = Validator(x_val, 0.1)(critic)[1]
    validator = Validator(x_val, 0.1, lam=lam)
    before = validator(critic)[0]
    cfg = FinetuneConfig(sigma=0.1, steps=30, batch_size=4, crop=32, lr0=1e-2, lr1=1e-3, iters=40, tol=1e-3,
                         val_every=10, device="cpu")
    out = tmp_path / "ft.safetensors"
    finetune(critic, stack, cfg, lam, validator, out=out, log_csv=tmp_path / "ft.csv", progress=False)
    rows = list(csv.DictReader(open(tmp_path / "ft.csv")))
    assert rows[0]["step"] == "0" and rows[0]["val_psnr"]  # the starting critic is judged too
    rows = rows[1:]
    losses = [float(r["loss"]) for r in rows]
    assert sum(losses[-4:]) < 0.9 * sum(losses[:4])
    sel = critic.meta["finetune"]["selected"]
    # the start is judged at its best lambda (quarter-octave search): the fine-tune still gains 0.3 dB
    assert sel["val_psnr"] > before + 0.3 and validator(critic)[0] == pytest.approx(sel["val_psnr"], abs=1e-3)
    saved = load_model(out)
    assert saved.log_scale == critic.log_scale != 0 and saved.log_weight == critic.log_weight != 0
    # restored (alr.restore, validation, calibration) with the solver it was trained through
    assert saved.meta["solver"] == cfg.recommendation()
    assert solver_options(saved, "denoise", 0.1) == {"boundary": "reflect", **cfg.solver()}


def test_finetune_keeps_the_starting_critic_when_no_step_beats_it(finetune_data):
    stack = ImageStack.from_folder(finetune_data, 1)
    torch.manual_seed(0)
    critic = PatchCritic(depth=2, width=4, activation="silu")
    start = {k: v.clone() for k, v in critic.state_dict().items()}
    scores = iter([25.0, 24.0, 24.5, 23.0])  # the starting critic's score, then one per step

    class Declining(Validator):
        def __call__(self, c):
            return next(scores), self.lam
    cfg = FinetuneConfig(sigma=0.1, steps=3, batch_size=2, crop=24, lr0=1e-2, iters=10, tol=1e-3, val_every=1,
                         device="cpu")
    finetune(critic, stack, cfg, 0.05, Declining(torch.rand(1, 1, 32, 32), 0.1, lam=0.05), progress=False)
    sel = critic.meta["finetune"]["selected"]
    assert (sel["step"], sel["val_psnr"]) == (0, 25.0)
    assert all(torch.equal(v, start[k]) for k, v in critic.state_dict().items())
    assert next(scores, None) is None


def test_finetune_resumes_exactly_and_fit_scale_moves_only_the_scale(finetune_data, tmp_path):
    stack = ImageStack.from_folder(finetune_data, 1)
    cfg = FinetuneConfig(sigma=0.1, steps=6, batch_size=2, crop=24, lr0=1e-2, iters=15, tol=1e-3, ckpt_every=3,
                         device="cpu")
    torch.manual_seed(0)
    a = finetune(PatchCritic(depth=2, width=4, activation="silu"), stack, cfg, 0.05, out=tmp_path / "a.safetensors",
                 progress=False)
    torch.manual_seed(0)

    class Flaky:
        sample = staticmethod(interrupted(stack.sample, 3))
    with pytest.raises(KeyboardInterrupt):
        finetune(PatchCritic(depth=2, width=4, activation="silu"), Flaky(), cfg, 0.05, out=tmp_path / "b.safetensors",
                 progress=False)
    for changed, lam in (({"sigma": 0.2}, 0.05), ({}, 0.06)):  # a resume continues the same fine-tuning
        with pytest.raises(alr.AlrError, match="sigma=0.2|lam=0.06"):
            finetune(PatchCritic(depth=2, width=4, activation="silu"), stack, FinetuneConfig(**{**cfg.__dict__, **changed}),
                     lam, out=tmp_path / "b.safetensors", resume=True, progress=False)
    b = finetune(PatchCritic(depth=2, width=4, activation="silu"), stack, cfg, 0.05, out=tmp_path / "b.safetensors",
                 resume=True, progress=False)
    assert all(torch.equal(v, b.state_dict()[k]) for k, v in a.state_dict().items())
    assert (a.log_scale, a.log_weight) == (b.log_scale, b.log_weight)
    frozen = {k: v.clone() for k, v in a.state_dict().items()}
    fit_scale(a, stack, 0.1, 0.05, device="cpu", steps=3, crop=24, iters=15, tol=1e-3)
    assert all(torch.equal(v, frozen[k]) for k, v in a.state_dict().items())
    assert a.log_scale != b.log_scale and "scale_fit" in a.meta


def test_finetune_stop_after_pauses_and_resume_finishes_as_one_run(finetune_data, tmp_path):
    stack = ImageStack.from_folder(finetune_data, 1)
    cfg = FinetuneConfig(sigma=0.1, steps=3, batch_size=2, crop=24, lr0=1e-2, iters=10, tol=1e-3, device="cpu")
    torch.manual_seed(0)
    whole = finetune(PatchCritic(depth=2, width=4, activation="silu"), stack, cfg, 0.05, progress=False)
    out = tmp_path / "p.safetensors"
    torch.manual_seed(0)
    paused = finetune(PatchCritic(depth=2, width=4, activation="silu"), stack,
                      FinetuneConfig(**{**cfg.__dict__, "stop_after": 1e-9}), 0.05, out=out, progress=False)
    assert paused.meta["finetune"]["paused"] and paused.meta["finetune"]["steps"] == 1
    done = finetune(PatchCritic(depth=2, width=4, activation="silu"), stack, cfg, 0.05, out=out, resume=True,
                    progress=False)
    assert "paused" not in done.meta["finetune"] and done.meta["finetune"]["steps"] == 3
    assert all(torch.equal(v, whole.state_dict()[k]) for k, v in done.state_dict().items())


@pytest.mark.parametrize("command, record, flags", [
    ("train", "training", ["--width", "8", "--depth", "3", "--batch-size", "8"]),
    ("finetune", "finetune", ["--init", "INIT", "--lam", "0.05", "--val-images", "0", "--batch-size", "2",
                              "--crop", "24", "--iters", "10"]),
], ids=["train", "finetune"])
def test_a_deadline_at_the_last_step_pauses_before_the_calibration(finetune_data, tmp_path, capsys, command,
                                                                    record, flags):
    """--stop-after passing during the last step: every step is done, the run pauses before its
    calibration (the model says it lacks only that), and --resume calibrates without training."""
    from alr.pretrained import unfinished
    init = tmp_path / "init.safetensors"
    critic = PatchCritic(depth=2, width=4, activation="silu")
    critic.meta = {"lambda": {"denoise": {"sigma": [0.1], "lam": [0.05]}}}
    save_model(critic, init)
    out = tmp_path / "m.safetensors"
    args = [command, "--clean", str(finetune_data), "--sigma", "0.1", "--steps", "1", "-q", "-o", str(out),
            *[str(init) if f == "INIT" else f for f in flags]]
    assert main(args + ["--stop-after", "1e-9"]) == 0
    assert "paused by --stop-after with every step done, before the end of the run" in capsys.readouterr().out
    meta = load_model(out).meta
    assert (meta[record]["paused"], meta[record]["steps_left"], meta[record]["steps"]) == (True, 0, 1)
    assert meta["pending"] == ["calibration"] and "lambda" not in meta
    assert unfinished(load_model(out)) == (f"an unfinished training run (lacks: calibration): the same alr {command} "
                                           "command with --resume ends it")
    assert main(args + ["--resume"]) == 0
    meta = load_model(out).meta
    assert "paused" not in meta[record] and meta[record]["steps"] == 1 and "denoise" in meta["lambda"]
    assert "pending" not in meta and unfinished(load_model(out)) is None


def test_finetune_command(finetune_data, tmp_path, capsys):
    src = tmp_path / "init.safetensors"
    torch.manual_seed(0)
    init = PatchCritic(depth=2, width=4, activation="silu")
    init.meta = {"lambda": {"denoise": {"sigma": [0.1], "lam": [0.05]}}, "training": {"steps": 7}}
    save_model(init, src)
    out = tmp_path / "ft.safetensors"
    assert main(["finetune", "--clean", str(finetune_data), "--sigma", "0.1", "--init", str(src), "-o", str(out),
                 "--steps", "4", "--batch-size", "2", "--crop", "24", "--iters", "10", "--val-every", "2",
                 "--val-images", "2", "--boundary", "replicate", "--no-calibrate", "-q"]) == 0
    m = load_model(out)  # lambda searched under the fine-tuning's solver, from the table's 0.05
    quarters = math.log2(m.meta["finetune"]["lam"] / 0.05) * 4
    assert quarters == pytest.approx(round(quarters)) and m.meta["finetune"]["steps"] == 4
    assert "lambda" not in m.meta and m.meta["continued_from"]["training"] == {"steps": 7}
    assert m.meta["data"]["clean_images"] == 5
    assert m.meta["solver"]["method"] == "nmapg" and m.meta["solver"]["iters"]["denoise"] == 10
    assert m.meta["solver"]["options"]["boundary"] == "replicate"
    assert "fine-tuned 4 steps" in capsys.readouterr().out
    assert main(["finetune", "--clean", str(finetune_data), "--sigma", "0.1", "--init", "nope.safetensors",
                 "-o", str(out)]) == 2


# ---------------------------------------------------------------------------- the literature's convention
def test_table2_takes_noise_levels_as_fractions_of_255(tmp_path, capsys):
    from conftest import data_dir
    if data_dir() is None:
        pytest.skip("needs ALR_DATA with bsd68")
    out = tmp_path / "lit"
    assert main(["bench", "table2", "--quick", "--max-images", "1", "--protocol", "standard", "--methods", "bm3d",
                 "--sigmas", "15/255,25/255", "--data", str(data_dir()), "-o", str(out)]) == 0
    rows = list(csv.DictReader(open(out / "results.csv")))
    assert {r["sigma_255"] for r in rows} == {"15.0", "25.0"}
    assert {round(float(r["sigma"]) * 255, 6) for r in rows} == {15, 25}
    assert json.load(open(out / "run.json"))["experiment"] == "table2"
    capsys.readouterr()
    assert main(["bench", "table2", "--quick", "--sigmas", "15/0", "-o", str(tmp_path / "bad")]) == 2
    assert "--sigmas must be comma-separated numbers or fractions" in capsys.readouterr().err


def test_a_calibration_in_which_every_lambda_diverges_fails():
    """Calibration writes no lambda it could not score: every solve diverging is an error naming the
    task and noise level, not lam0 written into the table."""
    from alr.calibration import calibrate_lambda
    critic = PatchCritic(depth=2, width=4)
    critic.meta = {"solver": {"method": "lbfgs", "options": {}, "iters": {"denoise": 3}}}
    with torch.no_grad():
        next(critic.parameters()).fill_(math.nan)
    with pytest.raises(alr.AlrError, match="calibrating denoise at sigma 0.1: every lambda tried diverged"):
        calibrate_lambda(critic, "denoise", torch.rand(2, 1, 16, 16), [0.1], [0.01], quick=True)
