import csv
from pathlib import Path

import pytest

import torch

from conftest import interrupted

from alr.critic import PatchCritic
from alr.modelfile import load_model as load_file
from alr.data import Degradation, ImageStack, make_patch_pairs, split_unpaired
from alr.train import CPU_CHUNK_BYTES, TrainConfig, accumulate_gradients, chunk_count, train_critic, wgan_gp_loss


def test_split_is_disjoint_and_seeded():
    a, b = split_unpaired(10, seed=3)
    assert not set(a) & set(b) and sorted(a + b) == list(range(10))
    assert split_unpaired(10, seed=3) == (a, b)


def test_patch_sampler_is_seeded_and_in_range(sample_dir):
    pairs = make_patch_pairs(sample_dir, 13, 1, degradation=Degradation(0.0, 0.4, blur_sigma=1.0), seed=0)
    p1, q1 = pairs.sample(16, torch.Generator().manual_seed(5))
    p2, q2 = pairs.sample(16, torch.Generator().manual_seed(5))
    assert p1.shape == q1.shape == (16, 1, 13, 13)
    assert torch.equal(p1, p2) and torch.equal(q1, q2)
    assert 0 <= float(p1.min()) and float(p1.max()) <= 1


def test_augmented_patches_are_turned_copies_of_the_plain_ones(sample_dir):
    """augment=True: the same draws as without, each patch then by one of the 8 flips / quarter
    turns, all of them used; seeded like the rest."""
    from alr.critic import dihedral

    plain = make_patch_pairs(sample_dir, 13, 1, degradation=Degradation(0.1, 0.1), seed=0)
    aug = make_patch_pairs(sample_dir, 13, 1, degradation=Degradation(0.1, 0.1), seed=0, augment=True)
    assert aug.describe()["augment"] and "augment" not in plain.describe()
    ps, qs = plain.sample(64, torch.Generator().manual_seed(2))
    pa, qa = aug.sample(64, torch.Generator().manual_seed(2))
    used = set()
    for a, b in ((pa, ps), (qa, qs)):
        for i in range(64):
            ks = [k for k in range(8) if torch.equal(dihedral(b[i:i + 1], k), a[i:i + 1])]
            assert ks
            used.add(ks[0])
    assert len(used) == 8
    pa2, _ = aug.sample(64, torch.Generator().manual_seed(2))
    assert torch.equal(pa, pa2)


def test_stack_handles_mixed_sizes():
    st = ImageStack([torch.rand(1, 20, 30), torch.rand(1, 40, 15)])
    p = st.sample(100, 14, torch.Generator().manual_seed(0))
    assert p.shape == (100, 1, 14, 14)


def test_stack_of_8_bit_and_float_images_samples_in_0_1():
    """A folder mixing 8-bit files with 16-bit or colour-to-gray ones (float): every patch in [0, 1]."""
    st = ImageStack([torch.full((1, 16, 16), 200, dtype=torch.uint8), torch.full((1, 16, 16), 0.5)])
    p = st.sample(64, 8, torch.Generator().manual_seed(0))
    assert set(p.amax((1, 2, 3)).tolist()) == {torch.tensor(200 / 255).item(), 0.5}  # both images, in [0, 1]


def test_critic_learns_clean_below_noisy(sample_dir, tmp_path):
    """A short WGAN-GP training on natural images: held-out clean patches score lower than noisy ones."""
    torch.manual_seed(0)
    pairs = make_patch_pairs(sample_dir, 13, 1, degradation=Degradation(0.1, 0.1), seed=0)
    critic = PatchCritic(width=32)
    cfg = TrainConfig(steps=300, batch_size=64, lr0=1e-3, lr1=1e-4, ckpt_every=100, log_every=20, device="cpu")
    train_critic(critic, pairs.sample, cfg, out=tmp_path / "m.safetensors", log_csv=tmp_path / "log.csv",
                 progress=False)
    rows = list(csv.DictReader(open(tmp_path / "log.csv")))
    assert len(rows) == 15 and float(rows[-1]["wasserstein"]) > 0
    from skimage import data
    held = torch.from_numpy(data.horse().astype("float32"))[None, None][..., 100:228, 100:228]  # not in training
    held = held / held.max()
    g = torch.Generator().manual_seed(1)
    noisy = held + 0.1 * torch.randn(held.shape, generator=g)
    model = load_file(tmp_path / "m.safetensors")
    with torch.no_grad():
        assert float(model.regularizer(held)) < float(model.regularizer(noisy))
    assert model.meta["training"]["steps"] == 300


def test_resume_reproduces_uninterrupted_run(sample_dir, tmp_path):
    pairs = make_patch_pairs(sample_dir, 9, 1, degradation=Degradation(0.0, 0.3), seed=0)
    cfg = TrainConfig(steps=20, batch_size=16, ckpt_every=10, device="cpu", lr0=1e-3)
    torch.manual_seed(0)
    a = train_critic(PatchCritic(depth=4, width=8), pairs.sample, cfg, out=tmp_path / "a.safetensors",
                     progress=False)
    torch.manual_seed(0)
    b = PatchCritic(depth=4, width=8)
    calls = {"n": 0}

    def flaky(n, g):  # the sampler fails at step 11: the run ends after the checkpoint of step 10
        calls["n"] += 1
        if calls["n"] > 10:
            raise KeyboardInterrupt
        return pairs.sample(n, g)
    with pytest.raises(KeyboardInterrupt):
        train_critic(b, flaky, cfg, out=tmp_path / "b.safetensors", progress=False)
    ckpt = torch.load(f"{tmp_path / 'b.safetensors'}.ckpt", weights_only=True)
    assert ckpt["step"] == 10
    b = PatchCritic(depth=4, width=8)
    train_critic(b, pairs.sample, cfg, out=tmp_path / "b.safetensors", resume=True, progress=False)
    for pa, pb in zip(a.parameters(), b.parameters()):
        assert torch.allclose(pa, pb, atol=1e-6)


def test_time_budget_stops_training_and_the_bar_counts_seconds(sample_dir, capsys):
    pairs = make_patch_pairs(sample_dir, 9, 1, degradation=Degradation(0.1, 0.1), seed=0)
    critic = train_critic(PatchCritic(depth=4, width=8), pairs.sample,
                          TrainConfig(steps=10 ** 9, batch_size=8, max_seconds=1.0, log_every=1, device="cpu"))
    assert 0 < critic.meta["training"]["steps"] < 10 ** 9
    err = capsys.readouterr().err
    assert "/1 s [" in err and "step=" in err  # seconds of the budget, not a billion steps


def test_real_degraded_folder_source(sample_dir, tmp_path):
    """--degraded DIR: patches of real degraded images, unknown degradation, all clean images kept."""
    from alr.images import list_images, read_image, write_image
    deg = tmp_path / "noisy"
    deg.mkdir()
    for i, f in enumerate(list_images(sample_dir)[:5]):
        x = read_image(f)
        write_image(deg / f"n{i}.png", x + 0.1 * torch.randn(x.shape, generator=torch.Generator().manual_seed(i)))
    pairs = make_patch_pairs(sample_dir, 13, 1, degraded_dir=deg)
    assert len(pairs.clean) == len(list_images(sample_dir)) and len(pairs.source) == 5
    p, q = pairs.sample(256, torch.Generator().manual_seed(0))
    hf = lambda t: (t[..., 1:, :] - t[..., :-1, :]).abs().mean()  # noqa: E731
    assert hf(q) > hf(p)  # the degraded source really is noisier


def test_model_used_for_restoration_can_be_trained_further(sample_dir):
    """A critic frozen for restoring (as the solver hands it back: as it came) still trains."""
    from alr.solver import minimize as restore

    critic = PatchCritic(width=8).requires_grad_(False)
    restore(torch.rand(1, 1, 24, 24), None, critic, 0.01, method="gd", iters=2)
    assert not any(p.requires_grad for p in critic.parameters())
    weights = [p for p in critic.parameters() if p.dim() > 1]  # (the last bias has no WGAN gradient)
    before = [w.detach().clone() for w in weights]
    pairs = make_patch_pairs(sample_dir, 13, 1, degradation=Degradation(0.1, 0.1), seed=0)
    train_critic(critic, pairs.sample, TrainConfig(steps=3, batch_size=8, lr0=1e-3, device="cpu",
                                                   ckpt_every=10), progress=False)
    assert all(not torch.equal(a, b) for a, b in zip(before, weights))


def test_color_folder_trains_a_gray_critic_on_luma(tmp_path):
    """The shipped gray model's last stage read cbsd432's color JPEGs as gray (ITU-R 601 luma)."""
    from PIL import Image
    from skimage import data

    from alr.images import read_image, to_channels
    for i, im in enumerate([data.astronaut()[:96, :120], data.coffee()[:80, :90]]):
        Image.fromarray(im).save(tmp_path / f"c{i}.png")
    stack = ImageStack.from_folder(tmp_path, 1)
    assert stack.channels == 1 and stack.sizes.tolist() == [[96, 120], [80, 90]]
    luma = to_channels(read_image(tmp_path / "c0.png"), 1)[0]
    assert torch.allclose(stack.data[0, :, :96, :120].float(), luma, atol=1e-6)
    rgb = torch.from_numpy(data.astronaut()[:96, :120]).double() / 255  # ITU-R 601: 0.299 R + 0.587 G + 0.114 B
    ref = (rgb @ torch.tensor([0.299, 0.587, 0.114], dtype=torch.float64)).float()
    assert torch.allclose(luma[0], ref, atol=2e-3)
    pairs = make_patch_pairs(tmp_path, 13, 1, degradation=Degradation(0.1, 0.1))
    p, q = pairs.sample(8, torch.Generator().manual_seed(0))
    assert p.shape == q.shape == (8, 1, 13, 13)


def test_paired_patches_differ_by_their_degradation_only(sample_dir):
    """paired=True: q is p plus the noise (with a blur, p's own blurred window); unpaired mixes images."""
    pairs = make_patch_pairs(sample_dir, 13, 1, degradation=Degradation(0.1, 0.1), paired=True)
    p, q = pairs.sample(512, torch.Generator().manual_seed(0))
    assert pairs.describe()["paired"] and len(pairs.clean) == len(ImageStack.from_folder(sample_dir, 1))
    assert abs(float((q - p).std()) - 0.1) < 0.005
    p0, q0 = make_patch_pairs(sample_dir, 13, 1, degradation=Degradation(0.0, 0.0), paired=True,
                              augment=True).sample(64, torch.Generator().manual_seed(1))
    assert torch.equal(p0, q0)  # turned together
    pu, qu = make_patch_pairs(sample_dir, 13, 1, degradation=Degradation(0.0, 0.0)).sample(
        64, torch.Generator().manual_seed(1))
    assert not torch.equal(pu, qu)
    pb, qb = make_patch_pairs(sample_dir, 13, 1, degradation=Degradation(0.0, 0.0, blur_sigma=1.0),
                              paired=True).sample(64, torch.Generator().manual_seed(2))
    assert float((qb - pb).abs().mean()) < 0.5 * float((pu - qu).abs().mean())
    with pytest.raises(ValueError, match="synthetic degradation"):
        make_patch_pairs(sample_dir, 13, 1, degraded_dir=sample_dir, paired=True)


def test_slope_penalty_is_the_directional_derivative_along_the_pairs():
    """wgan_gp_loss(slope=s) adds s * E[(grad u(z) . (q - p) / ||q - p|| - 1)^2] at z = t p + (1 - t) q,
    checked against finite differences of u along each pair's line."""
    torch.manual_seed(0)
    critic = PatchCritic(depth=3, width=8).double()
    p, q = torch.rand(6, 1, 7, 7, dtype=torch.float64), torch.rand(6, 1, 7, 7, dtype=torch.float64)
    t = torch.rand(6, dtype=torch.float64)
    base, _ = wgan_gp_loss(critic, p, q, t, 10.0)
    with_slope, stats = wgan_gp_loss(critic, p, q, t, 10.0, slope=3.0)
    d = q - p
    d = d / d.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
    z, h = t.view(-1, 1, 1, 1) * p + (1 - t.view(-1, 1, 1, 1)) * q, 1e-6
    with torch.no_grad():
        fd = (critic.potential(z + h * d) - critic.potential(z - h * d)).flatten() / (2 * h)
    expected = ((fd - 1) ** 2).mean()
    assert torch.allclose(stats["slope_penalty"], expected, rtol=1e-5)
    assert torch.allclose(with_slope - base, 3.0 * expected, rtol=1e-5)
    assert "slope_penalty" not in wgan_gp_loss(critic, p, q, t, 10.0)[1]
    with pytest.raises(ValueError, match="slope"):
        TrainConfig(slope=-1)


@pytest.mark.parametrize("slope", [0.0, 2.0])
def test_chunked_step_adds_up_to_the_batch_gradient(slope):
    """A batch in uneven chunks gives the whole batch's gradient, loss and statistics."""
    torch.manual_seed(0)
    p, q, t = torch.rand(7, 1, 7, 7, dtype=torch.float64), torch.rand(7, 1, 7, 7, dtype=torch.float64), torch.rand(7)
    config = TrainConfig(mu=0.1, slope=slope, penalty="one-sided")
    results = []
    for chunks in (1, 3):
        torch.manual_seed(1)
        critic = PatchCritic(depth=3, width=8).double()
        loss, stats = accumulate_gradients(critic, p, q, t.double(), config, chunks)
        results.append((loss, stats, [prm.grad for prm in critic.parameters()]))
    (loss1, stats1, grads1), (loss3, stats3, grads3) = results
    assert torch.allclose(loss1, loss3) and stats1.keys() == stats3.keys()
    assert all(torch.allclose(stats1[k], stats3[k]) for k in stats1)
    assert all(torch.allclose(a, b) for a, b in zip(grads1, grads3))


def test_chunks_keep_cpu_activations_under_the_limit():
    critic = PatchCritic(widths=[128, 64, 64, 64, 32, 32], activation="silu")
    batch = torch.zeros(512, 1, 15, 15)  # the LAR recipe's step: 59 MB of first-layer activations
    assert chunk_count(critic, batch, torch.device("cpu")) == 2
    assert chunk_count(critic, batch, torch.device("meta")) == 1  # an accelerator takes it whole
    assert chunk_count(critic, batch[:16], torch.device("cpu")) == 1
    big = torch.zeros(4, 1, 2048, 2048)
    assert chunk_count(critic, big, torch.device("cpu")) == 4  # never below one patch a chunk
    assert 128 * 15 * 15 * 4 * 512 / 2 < CPU_CHUNK_BYTES


def test_resumed_time_budget_keeps_its_clock(sample_dir, tmp_path):
    """A checkpoint carries the seconds trained: a resumed --max-seconds run goes on with the
    learning rate where it was (not from lr0 again), and the budget counts the whole run."""
    pairs = make_patch_pairs(sample_dir, 7, 1, degradation=Degradation(0.1, 0.1), seed=0)
    cfg = TrainConfig(steps=10 ** 9, batch_size=8, lr0=1e-3, lr1=1e-4, max_seconds=1000.0, ckpt_every=2, log_every=1,
                      device="cpu")
    out = tmp_path / "m.safetensors"
    with pytest.raises(KeyboardInterrupt):
        train_critic(PatchCritic(depth=3, width=8), interrupted(pairs.sample, 2), cfg, out=out, progress=False)
    ckpt = Path(str(out) + ".ckpt")
    state = torch.load(ckpt, weights_only=True)
    assert state["step"] == 2 and 0 < state["seconds"] < 1000
    state["seconds"] = 900.0  # as if 900 of the 1000 s had passed before the interruption
    torch.save(state, ckpt)
    cfg = TrainConfig(**{**cfg.__dict__, "stop_after": 1e-9})  # one more step, then pause
    critic = train_critic(PatchCritic(depth=3, width=8), pairs.sample, cfg, out=out, log_csv=tmp_path / "m.csv",
                          resume=True, progress=False)
    row = list(csv.DictReader(open(tmp_path / "m.csv")))[-1]
    assert row["step"] == "3" and float(row["seconds"]) >= 900
    assert float(row["lr"]) == pytest.approx(1e-3 * 0.1 ** 0.9, rel=1e-2)  # 90 % through the decay, not lr0
    assert critic.meta["training"]["steps"] == 3


def test_stop_after_pauses_and_resume_finishes_as_one_run(sample_dir, tmp_path):
    """--stop-after: the run pauses with a checkpoint and a model marked paused, the schedule
    untouched; resumed, it ends on the same weights as a run never paused."""
    pairs = make_patch_pairs(sample_dir, 7, 1, degradation=Degradation(0.1, 0.1), seed=0)
    cfg = TrainConfig(steps=4, batch_size=8, lr0=1e-3, device="cpu")
    torch.manual_seed(0)
    whole = train_critic(PatchCritic(depth=3, width=8), pairs.sample, cfg, progress=False)
    out = tmp_path / "p.safetensors"
    torch.manual_seed(0)
    paused = train_critic(PatchCritic(depth=3, width=8), pairs.sample, TrainConfig(**{**cfg.__dict__, "stop_after": 1e-9}),
                          out=out, progress=False)
    assert paused.meta["training"]["paused"] and paused.meta["training"]["steps"] == 1
    assert load_file(out).meta["training"]["paused"] and "stop_after" not in load_file(out).meta["training"]
    done = train_critic(PatchCritic(depth=3, width=8), pairs.sample, cfg, out=out, resume=True, progress=False)
    assert "paused" not in done.meta["training"] and done.meta["training"]["steps"] == 4
    assert all(torch.equal(v, whole.state_dict()[k]) for k, v in done.state_dict().items())
    last = train_critic(PatchCritic(depth=3, width=8), pairs.sample,  # the deadline at the last step, nothing
                        TrainConfig(**{**cfg.__dict__, "steps": 1, "stop_after": 1e-9}), progress=False)  # left
    assert "paused" not in last.meta["training"] and last.meta["training"]["steps"] == 1


def test_train_folder_is_alr_train_in_one_call(sample_dir, tmp_path):
    """The library's train_folder takes the command's options (the recipe fills those not given)
    and writes the same kind of model file, calibrated unless told not to."""
    from alr.train import TrainOptions, train_folder
    out = tmp_path / "m.safetensors"
    opts = TrainOptions(clean=sample_dir, sigma=0.1, depth=3, width=8, steps=3, batch_size=8)
    assert (opts.lr0, opts.mu, opts.penalty, opts.paired) == (1e-4, 10.0, "two-sided", False)  # the paper's recipe
    critic = train_folder(opts, out, progress=False)
    model = load_file(out)
    assert model.meta["training"]["steps"] == 3 and model.meta["recipe"] == "paper"
    assert model.meta["lambda"]["denoise"]["sigma"] == critic.meta["lambda"]["denoise"]["sigma"] == [0.1]
    assert torch.equal(model.net[0].weight, critic.net[0].weight)
    with pytest.raises(ValueError, match="give one of sigma, sigma_range"):
        TrainOptions(clean=sample_dir)
    with pytest.raises(ValueError, match="unknown recipe"):
        TrainOptions(clean=sample_dir, sigma=0.1, recipe="mine")
