"""Data-parallel training: 2 CPU processes (gloo) match one process and stay identical."""
import os
import signal
import subprocess
import sys
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from alr.critic import PatchCritic
from alr.errors import Interrupted
from alr.data import Degradation, ImageStack, PatchPairs
from alr.train import TrainConfig, train_critic


def _pairs():
    g = torch.Generator().manual_seed(0)
    imgs = [torch.rand(1, 40, 40, generator=g) for _ in range(6)]
    st = ImageStack(imgs)
    return PatchPairs(st.subset([0, 1, 2]), st.subset([3, 4, 5]), 9, Degradation(0.05, 0.2))


def _worker(rank: int, world: int, store: str, out: str, stop_after: list | None = None) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world)
    torch.manual_seed(0)
    critic = PatchCritic(depth=4, width=8)
    cfg = TrainConfig(steps=8, batch_size=16, lr0=1e-3, device="cpu", log_every=1,
                      stop_after=stop_after[rank] if stop_after else None)
    train_critic(critic, _pairs().sample, cfg, log_csv=f"{out}/log{rank}.csv", progress=False)
    torch.save(critic.state_dict(), f"{out}/rank{rank}.pt")
    Path(f"{out}/steps{rank}").write_text(str(critic.meta["training"]["steps"]))
    dist.destroy_process_group()


def test_two_ranks_match_single_process(tmp_path):
    mp.spawn(_worker, args=(2, str(tmp_path / "store"), str(tmp_path)), nprocs=2, join=True)
    r0 = torch.load(tmp_path / "rank0.pt", weights_only=True)
    r1 = torch.load(tmp_path / "rank1.pt", weights_only=True)
    assert all(torch.equal(r0[k], r1[k]) for k in r0)
    torch.manual_seed(0)
    single = PatchCritic(depth=4, width=8)
    cfg = TrainConfig(steps=8, batch_size=16, lr0=1e-3, device="cpu", log_every=1)
    train_critic(single, _pairs().sample, cfg, log_csv=tmp_path / "single.csv", progress=False)
    for k, v in single.state_dict().items():
        assert torch.allclose(v, r0[k], atol=1e-5), k
    last = lambda p: float(open(p).read().strip().splitlines()[-1].split(",")[1])  # noqa: E731
    assert abs(last(tmp_path / "log0.csv") - last(tmp_path / "single.csv")) < 1e-4


def test_torchrun_cli(tmp_path, sample_dir):
    out = tmp_path / "m.safetensors"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "alr",
           "train", "--clean", str(sample_dir), "--sigma", "0.1", "--steps", "6", "--batch-size", "8", "--no-calibrate",
           "--width", "8", "--ckpt-every", "3", "-q", "-o", str(out)]
    r = subprocess.run(cmd, env=env, cwd=Path(__file__).parent, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert out.exists() and Path(str(out) + ".ckpt").exists()
    cmd[cmd.index("--steps") + 1] = "12"
    r = subprocess.run(cmd + ["--resume"], env=env, cwd=Path(__file__).parent, capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    state = torch.load(str(out) + ".ckpt", weights_only=True)
    assert state["step"] == 12


def test_ranks_stop_when_rank0_says(tmp_path):
    """A pause (or time budget) follows rank 0's clock: a rank whose own clock has not run out
    stops after the same step instead of waiting forever in the next all-reduce."""
    mp.spawn(_worker, args=(2, str(tmp_path / "store"), str(tmp_path), [1e-9, None]), nprocs=2, join=True)
    r0 = torch.load(tmp_path / "rank0.pt", weights_only=True)
    r1 = torch.load(tmp_path / "rank1.pt", weights_only=True)
    assert all(torch.equal(r0[k], r1[k]) for k in r0)
    assert [(tmp_path / f"steps{r}").read_text() for r in (0, 1)] == ["1", "1"]


class _Scores:
    """Rank 0's validator: the given scores in turn (``signal_first``: SIGTERM to itself at its
    first call). Other ranks get scores by broadcast and must never call theirs."""

    def __init__(self, rank: int, scores: list[float], signal_first: bool = False) -> None:
        self.rank, self.scores, self.signal_first, self.lam, self.searched = rank, iter(scores), signal_first, 0.01, False

    def __call__(self, critic):
        assert self.rank == 0, "only rank 0 validates"
        if self.signal_first:
            self.signal_first = False
            os.kill(os.getpid(), signal.SIGTERM)
        return next(self.scores), self.lam


def _judging_worker(rank: int, world: int, store: str, out: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world)
    cfg = TrainConfig(steps=8, batch_size=16, lr0=1e-3, device="cpu", val_every=4)
    model = f"{out}/m.safetensors"
    try:  # checks at steps 4 (3.0) and 8 (2.0); rank 0 is stopped by a signal during the first judgement
        train_critic(PatchCritic(depth=4, width=8), _pairs().sample, cfg, out=model, progress=False,
                     validator=_Scores(rank, [3.0, 2.0]), final_validator=_Scores(rank, [5.0], signal_first=True))
    except Interrupted as e:
        Path(f"{out}/stopped{rank}").write_text(str(e))
    critic = train_critic(PatchCritic(depth=4, width=8), _pairs().sample, cfg, out=model, resume=True,
                          progress=False, validator=_Scores(rank, []), final_validator=_Scores(rank, [5.0, 6.0]))
    torch.save(critic.state_dict(), f"{out}/rank{rank}.pt")
    Path(f"{out}/selected{rank}").write_text(str(critic.meta["training"]["selected"]["step"]))
    dist.destroy_process_group()


def test_ranks_judge_the_best_checks_together(tmp_path):
    """Under torchrun the end of a run (the best checks judged again) follows rank 0: a stop signal
    there stops every rank before the next judgement, and the resumed judging keeps the same check
    on every rank."""
    mp.spawn(_judging_worker, args=(2, str(tmp_path / "store"), str(tmp_path)), nprocs=2, join=True)
    said = [(tmp_path / f"stopped{r}").read_text() for r in (0, 1)]
    assert all(s.startswith("stopped after step 8 of 8") for s in said)
    assert [(tmp_path / f"selected{r}").read_text() for r in (0, 1)] == ["8", "8"]
    r0 = torch.load(tmp_path / "rank0.pt", weights_only=True)
    r1 = torch.load(tmp_path / "rank1.pt", weights_only=True)
    assert all(torch.equal(r0[k], r1[k]) for k in r0)
