"""Fault injection: bad inputs, hostile files, collisions, full disks, interrupted and concurrent runs.

Most cases are rows of :data:`CASES`; to add one, append a :class:`Case`. Each row runs the
command line in-process (or a Python call) on fresh inputs in a temporary folder ``{d}`` and
asserts, besides its own checks:

* the exit status (2 for a refused input or option; argparse's usage errors are 2 as well);
* that stderr holds no traceback and exactly one ``error:`` line, naming the offending file or
  option (``names``) and free of the ``absent`` strings;
* that no input was modified (a digest of every file before and after);
* that a failed run leaves nothing new behind (no partial output, no hidden temporary), except
  the files a case allows (``leaves``: a training's log and checkpoint).

The tests after the table cover what needs several runs or processes: a folder with a bad
file, SIGINT / SIGKILL and resume, concurrent writers, and deterministic seeded training.
Inputs are tiny (24x24 images, width-8 critics), so the file runs in about a minute.
"""
from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import signal
import struct
import subprocess
import sys
import time
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import torch
from PIL import Image

import alr
from alr.cli import main
from alr.images import bit_depth, read_image, write_image

SRC = Path(alr.__file__).resolve().parents[1]


# ---------------------------------------------------------------------------- inputs
def _noisy(seed: int, size: int = 24) -> np.ndarray:
    """A smooth ramp plus noise, as 8-bit values."""
    rng = np.random.default_rng(seed)
    ramp = np.add.outer(np.linspace(0.2, 0.8, size), np.linspace(0, 0.1, size))
    return (np.clip(ramp + 0.1 * rng.standard_normal((size, size)), 0, 1) * 255).round().astype(np.uint8)


def make_inputs(d: Path) -> None:
    """What every case starts from: ``a.png``, a folder ``in/`` of three images, a small model
    ``m.safetensors`` (width 8, with a denoising table)."""
    Image.fromarray(_noisy(0)).save(d / "a.png")
    (d / "in").mkdir()
    for i in range(3):
        Image.fromarray(_noisy(i + 1)).save(d / "in" / f"im{i}.png")
    critic = alr.PatchCritic(depth=2, width=8)
    critic.meta = {"lambda": {"denoise": {"sigma": [0.1], "lam": [0.01]}}}
    alr.save(critic, d / "m.safetensors")


def npy(name: str, arr) -> Callable:
    return lambda d, mp: np.save(d / name, np.asarray(arr))


def raw_bytes(name: str, data: bytes) -> Callable:
    return lambda d, mp: (d / name).write_bytes(data)


def truncated(name: str) -> Callable:
    """A valid image file of ``name``'s format cut in the middle."""
    def setup(d: Path, mp) -> None:
        write_image(d / name, torch.from_numpy(_noisy(5)).float()[None, None] / 255)
        data = (d / name).read_bytes()
        (d / name).write_bytes(data[:len(data) // 2])
    return setup


def huge_png(d: Path, mp) -> None:
    """A 24x24 PNG whose header (with a valid checksum) declares 100000x100000 pixels."""
    b = bytearray((d / "a.png").read_bytes())
    struct.pack_into(">II", b, 16, 100000, 100000)
    struct.pack_into(">I", b, 29, zlib.crc32(bytes(b[12:29])))
    (d / "huge.png").write_bytes(bytes(b))


def huge_npy(d: Path, mp) -> None:
    """A .npy declaring 20000x20000 uint8 values, its data a sparse (empty) 400 MB extent."""
    with open(d / "huge.npy", "wb") as f:
        np.lib.format.write_array_header_1_0(f, {"descr": "|u1", "fortran_order": False, "shape": (20000, 20000)})
        f.truncate(f.tell() + 20000 * 20000)


def model_file(name: str, config=None, meta=None, header: dict | None = None, state=None) -> Callable:
    """A model file whose header holds ``config`` / ``meta`` (JSON-encoded unless strings) or the
    raw ``header`` metadata; weights of a width-8 critic of depth 2 unless ``state``."""
    def setup(d: Path, mp) -> None:
        from safetensors.torch import save_file
        good = alr.PatchCritic(depth=2, width=8)
        meta_ = header if header is not None else {
            "config": config if isinstance(config, str) else json.dumps(good.config() if config is None else config),
            "meta": meta if isinstance(meta, str) else json.dumps(meta or {})}
        save_file(state if state is not None else good.state_dict(), d / name, metadata=meta_)
    return setup


def _save_with_meta(d: Path, meta: dict) -> None:
    """save_model of a small critic carrying ``meta``: refused before a file is written."""
    critic = alr.PatchCritic(depth=2, width=8)
    critic.meta = meta
    try:
        alr.modelfile.save_model(critic, d / "new.safetensors")
    finally:
        assert not (d / "new.safetensors").exists()


def raw_safetensors(name: str, header: dict, data: bytes = b"", size: int | None = None) -> Callable:
    """A safetensors file written by hand: ``header`` as JSON (its length field ``size`` if given)."""
    def setup(d: Path, mp) -> None:
        h = json.dumps(header).encode()
        (d / name).write_bytes(struct.pack("<Q", len(h) if size is None else size) + h + data)
    return setup


class Evil:
    """A pickle that, if ever unpickled, creates the file ``pwned`` beside it."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self):
        return (Path.touch, (Path(self.path),))


def evil_checkpoint(d: Path, mp) -> None:
    torch.save({"model": Evil(d / "pwned"), "optim": {}, "rng": None, "step": 1}, d / "t.safetensors.ckpt")


def trained(d: Path, mp) -> None:
    """A short training of t.safetensors with a checkpoint (t.safetensors.ckpt) and a log (t.csv)."""
    assert main([a.format(d=d) for a in train("--ckpt-every", "2")]) == 0


class _FullDisk:
    """A file opened for writing on a disk that fills up after ``room`` bytes."""

    def __init__(self, f, room: int) -> None:
        self.f, self.room = f, room

    def write(self, data) -> int:
        n = len(memoryview(data))
        if n > self.room:
            self.f.write(bytes(memoryview(data)[:self.room]))
            self.room = 0
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self.room -= n
        return self.f.write(data)

    def __getattr__(self, name):
        return getattr(self.f, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.f.close()


def disk_full(d: Path, mp) -> None:
    """Files that alr opens to write its outputs (its atomic temporaries) hit a full disk."""
    real_open = open

    def full_open(file, mode="r", *args, **kwargs):
        f = real_open(file, mode, *args, **kwargs)
        return _FullDisk(f, 10) if "w" in mode and ".tmp" in str(file) else f

    mp.setattr("builtins.open", full_open)


def no_permission(d: Path, mp) -> None:
    """Renaming into the output folder fails as in a read-only folder (root ignores chmod)."""
    def refuse(src, dst):
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(dst))
    mp.setattr(os, "replace", refuse)


def read_only_dir(d: Path, mp) -> None:
    """A folder without write permission; as root, who writes anyway, ``os.access`` says so."""
    (d / "ro").mkdir()
    (d / "ro").chmod(0o555)
    if os.geteuid() == 0:
        real_access = os.access
        mp.setattr(os, "access", lambda p, mode, **kw: not (Path(p) == d / "ro" and mode & os.W_OK)
                   and real_access(p, mode, **kw))


def little_memory(d: Path, mp) -> None:
    mp.setattr(alr.solver, "available_memory", lambda device=None: 64 << 20)


def _rotated_jpeg(path: Path) -> None:
    """A 40x24 JPEG tagged "rotate 90 degrees" (EXIF orientation 6): viewers show it 24x40."""
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(np.tile(_noisy(0), (1, 2))[:, :40]).save(path, exif=exif)


def _paeth_png16(path: Path, arr: np.ndarray) -> None:
    """An (H, W, 3 or 4) uint16 array as a 16-bit RGB(A) PNG whose rows are Paeth-filtered (what
    encoders choose for photographs), written here without Pillow, which cannot write one."""
    h, w, c = arr.shape
    raw = arr.astype(">u2").reshape(h, -1).view(np.uint8).astype(np.int32)
    left = np.pad(raw, ((0, 0), (2 * c, 0)))[:, :-2 * c]  # the same byte of the pixel to the left
    up = np.pad(raw, ((1, 0), (0, 0)))[:-1]
    up_left = np.pad(left, ((1, 0), (0, 0)))[:-1]
    p = left + up - up_left
    pa, pb, pc = abs(p - left), abs(p - up), abs(p - up_left)
    pred = np.where((pa <= pb) & (pa <= pc), left, np.where(pb <= pc, up, up_left))
    rows = np.concatenate([np.full((h, 1), 4), (raw - pred) % 256], 1).astype(np.uint8)

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, {3: 2, 4: 6}[c], 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(rows.tobytes())) + chunk(b"IEND", b""))


def _rgb16(seed: int = 0) -> np.ndarray:
    """A noisy colour ramp using all 16 bits (its low bytes are not its high bytes)."""
    return np.stack([_noisy(seed + k).astype(np.uint16) * 256 + _noisy(seed + 3 + k) for k in range(3)], -1)


@pytest.mark.parametrize("alpha", [False, True], ids=["rgb", "rgba"])
def test_a_16_bit_colour_png_is_read_and_written_at_16_bits(tmp_path, alpha):
    """Pillow alone reads 8 of the 16 bits of a colour PNG: alr reads them all (an alpha channel
    dropped), and writes them."""
    arr = _rgb16()
    _paeth_png16(tmp_path / "c16.png", np.dstack([arr, _rgb16(9)[..., :1]]) if alpha else arr)
    x = read_image(tmp_path / "c16.png")
    assert bit_depth(tmp_path / "c16.png") == 16
    assert torch.equal(x[0].permute(1, 2, 0), torch.from_numpy(arr.astype(np.float32) / 65535))
    write_image(tmp_path / "out.png", x, bits=16)
    assert torch.equal(read_image(tmp_path / "out.png"), x) and bit_depth(tmp_path / "out.png") == 16
    assert np.array_equal(np.asarray(Image.open(tmp_path / "out.png")), arr >> 8)  # a valid PNG for any reader


def env(name: str, value: str) -> Callable:
    return lambda d, mp: mp.setenv(name, value)


def both(*setups: Callable) -> Callable:
    def setup(d: Path, mp) -> None:
        for s in setups:
            s(d, mp)
    return setup


def restore(src: str, *extra: str, out: str = "out.png") -> list[str]:
    """``alr restore`` of ``{d}/src`` into ``{d}/out`` with the shipped gray model, 2 iterations."""
    return ["restore", f"{{d}}/{src}", "-o", f"{{d}}/{out}", "--sigma", "0.1", "--iters", "2", "-q", *extra]


def with_model(src: str, model: str = "bad.safetensors") -> list[str]:
    return restore(src, "--model", f"{{d}}/{model}", "--lam", "0.01")


TRAIN = ["train", "--clean", "{d}/in", "--sigma", "0.1", "--batch-size", "4", "--depth", "2", "--width", "8",
         "--no-calibrate", "-q"]


def train(*extra: str, out: str = "{d}/t.safetensors") -> list[str]:
    return TRAIN + ["--steps", "4", *extra, "-o", out]


# ---------------------------------------------------------------------------- the table
@dataclass
class Case:
    """One fault: ``run`` is an argv of ``alr`` (``{d}``: the case's folder) or a Python call
    ``run(d)`` that must raise; ``names``: what the one-line message must contain."""

    id: str
    run: list[str] | Callable[[Path], object]
    names: str
    setup: Callable | None = None
    code: int = 2
    absent: tuple[str, ...] = ()
    leaves: tuple[str, ...] = ()
    check: Callable[[Path, str], None] | None = None
    changes: tuple[str, ...] = ()  # files a successful run may rewrite (a resumed training's)


GRAY = 0.5 * torch.ones(1, 1, 24, 24)
CASES = [
    # -- input types and values: one rule for every array (alr.images.as_image / check_image)
    Case("int64-npy-is-8-bit", restore("i.npy", out="out.npy"), "", npy("i.npy", _noisy(0).astype(np.int64)),
         code=0, check=lambda d, err: np.testing.assert_allclose(
             read_image(d / "out.npy").mean(), _noisy(0).mean() / 255, atol=0.03)),
    Case("float-0-255-npy", restore("f.npy"), "f.npy", npy("f.npy", _noisy(0).astype(np.float32))),
    Case("complex-npy", restore("c.npy"), "c.npy", npy("c.npy", np.ones((24, 24), np.complex64))),
    Case("object-npy", restore("o.npy"), "o.npy", npy("o.npy", np.array([[{}, 1]], dtype=object))),
    Case("nan-npy", restore("n.npy"), "n.npy", npy("n.npy", np.full((24, 24), np.nan, np.float32))),
    Case("inf-tif", restore("n.tif"), "n.tif",
         lambda d, mp: __import__("tifffile").imwrite(d / "n.tif", np.full((24, 24), np.inf, np.float32))),
    Case("negative-int-npy", restore("s.npy"), "s.npy", npy("s.npy", np.full((24, 24), -3, np.int16))),
    Case("int-beyond-16-bit", restore("w.npy"), "w.npy", npy("w.npy", np.full((24, 24), 70000, np.int32))),
    Case("empty-npy", restore("e.npy"), "e.npy", npy("e.npy", np.zeros((0, 24), np.float32))),
    Case("4d-npy", restore("x.npy"), "x.npy", npy("x.npy", np.zeros((2, 2, 24, 24), np.float32))),
    Case("5-channel-npy", restore("x.npy"), "x.npy", npy("x.npy", np.zeros((24, 24, 5), np.float32))),
    Case("huge-declared-png", restore("huge.png"), "huge.png", huge_png),
    Case("huge-declared-npy", restore("huge.npy"), "huge.npy", huge_npy),
    *[Case(f"truncated-{ext}", restore(f"t.{ext}"), f"t.{ext}", truncated(f"t.{ext}"))
      for ext in ("png", "jpg", "tif", "npy", "bmp")],
    *[Case(f"corrupt-{ext}", restore(f"j.{ext}"), f"j.{ext}", raw_bytes(f"j.{ext}", os.urandom(300)))
      for ext in ("png", "jpg", "tif", "npy", "bmp")],
    Case("api-uint8-tensor", lambda d: alr.restore(torch.zeros(1, 1, 24, 24, dtype=torch.uint8)), "uint8"),
    Case("api-0-255-floats", lambda d: alr.restore(255 * GRAY), "divide it by 255"),
    Case("api-nan", lambda d: alr.restore(GRAY * float("nan")), "NaN"),
    Case("api-no-pixels", lambda d: alr.restore(torch.zeros(1, 1, 0, 24)), "no pixels"),
    Case("api-minimize-uint8", lambda d: alr.solver.minimize(torch.zeros(1, 1, 24, 24, dtype=torch.uint8), None,
                                                              alr.PatchCritic(width=8), 0.01), "uint8"),
    # -- outputs: never an input, never a folder, no partial file (alr.files)
    Case("out-is-input", restore("a.png", out="a.png"), "-o"),
    Case("out-is-input-hard-link", restore("a.png", out="b.png"), "-o",
         lambda d, mp: os.link(d / "a.png", d / "b.png")),
    Case("out-is-a-folder", restore("a.png", out="in"), "-o"),
    Case("out-under-a-file", restore("a.png", out="a.png/x.png"), "-o"),
    Case("out-is-the-mask", restore("a.png", "--task", "inpaint", "--mask", "{d}/in/im0.png", out="in/im0.png"), "-o"),
    Case("folder-into-itself", restore("in", out="in"), "-o"),
    Case("folder-into-a-file", restore("in", out="a.png"), "-o"),
    Case("degrade-over-input", ["degrade", "{d}/a.png", "-o", "{d}/a.png"], "-o"),
    Case("degrade-mask-is-output", ["degrade", "{d}/a.png", "-o", "{d}/y.npy", "--task", "inpaint",
                                    "--mask-out", "{d}/y.npy"], "--mask-out"),
    Case("train-over-training-image", train(out="{d}/in/im0.png"), "-o"),
    Case("train-into-data-folder", train(out="{d}/in/m.safetensors"), "-o"),
    Case("train-log-into-data-folder", train("--log", "{d}/in/log.csv"), "--log"),
    Case("train-over-init-model", train("--init", "{d}/m.safetensors", out="{d}/m.safetensors"), "-o"),
    *[Case(f"finetune-{name}", ["finetune", "--init", "{d}/m.safetensors", "--clean", "{d}/in", "--sigma", "0.1",
                                 "--val-images", "1", "--steps", "1", *extra], names)
      for name, extra, names in (
          ("over-init-model", ["-o", "{d}/m.safetensors"], "-o {d}/m.safetensors is an input"),
          ("into-data-folder", ["-o", "{d}/in/f.safetensors"], "-o {d}/in/f.safetensors is inside"),
          ("log-into-data-folder", ["-o", "{d}/f.safetensors", "--log", "{d}/in/f.csv"], "--log {d}/in/f.csv is inside"))],
    Case("calibrate-over-its-model", ["bench", "calibrate", "--model", "{d}/m.safetensors", "--data", "{d}",
                                      "-o", "{d}"], "-o"),
    Case("disk-full-image", restore("a.png", out="out.npy"), "out.npy", disk_full, absent=("Errno",)),
    Case("disk-full-model", train(), "t.safetensors", disk_full, leaves=("t.csv", "t.safetensors.ckpt")),
    Case("no-permission", restore("a.png"), "cannot write {d}/out.png: Permission denied", no_permission),
    Case("read-only-folder", restore("a.png", out="ro/out.png"), "no permission to write in {d}/ro", read_only_dir),
    # -- model files (alr.modelfile): checked before anything is built or run
    Case("model-unknown-config-key", with_model("a.png"), "evil",
         model_file("bad.safetensors", {"kind": "patch", "in_channels": 1, "depth": 2, "width": 8, "evil": 1})),
    Case("model-config-is-a-list", with_model("a.png"), "bad.safetensors: config must be a JSON object", model_file("bad.safetensors", [1, 2])),
    Case("model-config-without-kind", with_model("a.png"), "kind",
         model_file("bad.safetensors", {"in_channels": 1, "depth": 2, "width": 8})),
    Case("model-depth-200000", with_model("a.png"), "depth",
         model_file("bad.safetensors", {"kind": "patch", "in_channels": 1, "depth": 200000, "width": 8})),
    Case("model-width-1e6", with_model("a.png"), "width",
         model_file("bad.safetensors", {"kind": "patch", "in_channels": 1, "depth": 2, "width": 10 ** 6})),
    Case("model-malformed-json", with_model("a.png"), "bad.safetensors: malformed JSON", model_file("bad.safetensors", meta="{oops")),
    Case("model-lambda-is-a-list", ["info", "{d}/bad.safetensors"], "lambda",
         model_file("bad.safetensors", meta={"lambda": [1, 2]})),
    Case("model-empty-lambda-table", ["info", "{d}/bad.safetensors"], "denoise",
         model_file("bad.safetensors", meta={"lambda": {"denoise": {}}})),
    Case("model-nan-lambda", ["info", "{d}/bad.safetensors"], "'lam' must hold finite numbers",
         model_file("bad.safetensors", meta={"lambda": {"denoise": {"sigma": [0.1], "lam": [float("nan")]}}})),
    Case("model-fractional-iters", ["info", "{d}/bad.safetensors"], "iters",
         model_file("bad.safetensors", meta={"lambda": {"denoise": {"sigma": [0.1], "lam": [0.1], "iters": [0.5]}}})),
    Case("model-data-is-a-list", ["info", "{d}/bad.safetensors"], "data",
         model_file("bad.safetensors", meta={"data": [1, 2]})),
    Case("model-solver-options", with_model("a.png"), "options",
         model_file("bad.safetensors", meta={"solver": {"method": "gd", "options": {"evil": 1}}})),
    Case("model-solver-boundary", with_model("a.png"), "'boundary' is not valid",
         model_file("bad.safetensors", meta={"solver": {"method": "lbfgs", "options": {"boundary": "evil"}}})),
    Case("model-solver-no-iters", with_model("a.png"), "'iters' must map tasks",
         model_file("bad.safetensors", meta={"solver": {"method": "lbfgs", "iters": {}}})),
    Case("model-nan-score-ref", ["info", "{d}/bad.safetensors"], "finite number 'score_ref'",
         model_file("bad.safetensors", meta={"lambda": {"denoise": {"sigma": [0.1], "lam": [0.1], "concavity": [0.5],
                                                                   "score_ref": float("nan")}}})),
    Case("model-activation-a-list", ["info", "{d}/bad.safetensors"], "'activation' must be a name",
         model_file("bad.safetensors", config={"kind": "patch", "in_channels": 1, "depth": 2, "width": 8,
                                               "activation": ["relu"]})),
    Case("model-lambda-null", restore("a.png", "--model", "{d}/bad.safetensors"), "no calibrated lambda",
         model_file("bad.safetensors", meta={"lambda": None})),
    Case("model-header-not-strings", with_model("a.png"), "config",
         raw_safetensors("bad.safetensors", {"__metadata__": {"config": {"kind": "patch"}}})),
    Case("model-header-size-2^60", with_model("a.png"), "bad.safetensors is not a valid alr model file",
         raw_safetensors("bad.safetensors", {}, size=1 << 60)),
    Case("model-tensor-beyond-file", with_model("a.png"), "bad.safetensors: its weights do not load",
         raw_safetensors("bad.safetensors", {"__metadata__": {"config": json.dumps(
             {"kind": "patch", "in_channels": 1, "depth": 2, "width": 8})},
             "w": {"dtype": "F32", "shape": [100000, 100000], "data_offsets": [0, 40000000000]}})),
    Case("model-weights-of-another-critic", with_model("a.png"), "bad.safetensors: its weights do not load",
         model_file("bad.safetensors", state=alr.PatchCritic(depth=2, width=16).state_dict())),
    Case("model-truncated", with_model("a.png"), "bad.safetensors is not a valid alr model file",
         lambda d, mp: (d / "bad.safetensors").write_bytes((d / "m.safetensors").read_bytes()[:300])),
    Case("model-is-a-pickle", with_model("a.png"), "bad.safetensors is not a valid alr model file",
         lambda d, mp: torch.save({"x": Evil(d / "pwned")}, d / "bad.safetensors")),
    Case("model-toy-to-restore", with_model("a.png"), "patch",
         model_file("bad.safetensors", {"kind": "mlp", "in_features": 2, "depth": 2, "width": 8})),
    Case("model-missing", with_model("a.png", "nope.safetensors"), "nope.safetensors not found"),
    Case("model-bad-for-a-folder", restore("in", "--model", "{d}/bad.safetensors", "--lam", "0.01", out="out"),
         "bad.safetensors: config 'depth' must be an integer",
         model_file("bad.safetensors", {"kind": "patch", "in_channels": 1, "depth": 0, "width": 8})),
    # -- training: checkpoints and options (alr.train)
    Case("resume-a-pickle", train("--resume"), "t.safetensors.ckpt is not an alr training checkpoint", evil_checkpoint, absent=("weights_only",)),
    Case("resume-other-batch-size", train("--resume", "--batch-size", "8"), "batch_size", trained),
    Case("resume-other-seed", train("--resume", "--seed", "3"), "seed", trained),
    Case("resume-fewer-steps", train("--resume", "--steps", "2"), "--steps", trained),
    Case("resume-other-width", train("--resume", "--width", "16"), "t.safetensors.ckpt: the checkpoint does not fit",
         trained),
    Case("resume-other-data", train("--resume", "--clean", "{d}/in2"), "data",
         both(trained, lambda d, mp: __import__("shutil").copytree(d / "in", d / "in2"))),
    Case("resume-more-steps", train("--resume", "--steps", "6"), "", trained, code=0,
         changes=("t.safetensors", "t.safetensors.ckpt", "t.csv"),
         check=lambda d, err: alr.load(d / "t.safetensors").meta["training"]["steps"] == 6 or pytest.fail()),
    Case("resume-without-checkpoint", train("--resume"), "t.safetensors.ckpt"),
    Case("steps-0-without-init", train("--steps", "0"), "--steps"),
    # -- options without meaning
    Case("iters-0-api", lambda d: alr.solver.minimize(GRAY, None, alr.PatchCritic(width=8), 0.01, iters=0), "iters"),
    Case("lam-for-nan", lambda d: alr.lam_for(alr.load("gray"), "denoise", float("nan")), "sigma"),
    Case("regularizer-concavity-per-image-mismatch", lambda d: alr.Regularizer(
        alr.PatchCritic(depth=2, width=8), concavity=torch.tensor([0.5, 2.0]), score_ref=1.0)(torch.rand(4, 1, 16, 16)),
        "concavity holds 2 values for a batch of 4 images"),
    Case("lam-for-without-table", lambda d: alr.lam_for(alr.PatchCritic(width=8), "denoise", 0.1),
         "no calibrated lambda for task 'denoise'"),
    Case("save-model-nan-table", lambda d: _save_with_meta(d, {"lambda": {"denoise": {"sigma": [0.1],
                                                                                     "lam": [float("nan")]}}}),
         "'lam' must hold finite numbers"),
    Case("save-model-nan-meta", lambda d: _save_with_meta(d, {"training": {"loss": float("nan")}}), "cannot be written"),
    Case("restore-sigma-nan", lambda d: alr.restore(GRAY, sigma=float("nan")), "sigma"),
    Case("sr-factor-100", restore("a.png", "--task", "sr", "--factor", "100"), "--factor"),
    Case("solve-beyond-memory", restore("a.png", "--task", "sr", "--factor", "8"), "GiB", little_memory),
    Case("degrade-factor-beyond-image", ["degrade", "{d}/a.png", "-o", "{d}/y.npy", "--task", "sr",
                                         "--factor", "100"], "--factor"),
    Case("constant-image", ["restore", "{d}/c.npy", "-o", "{d}/out.npy"], "", npy("c.npy", GRAY[0, 0].numpy()),
         code=0, check=lambda d, err: (np.testing.assert_array_equal(np.load(d / "out.npy"), GRAY[0, 0].numpy()),
                                      "returned unchanged" in err or pytest.fail(err))),
    Case("clipped-sharp-edge", ["restore", "{d}/e.npy", "-o", "{d}/out.npy", "--clipped"], "--sigma",
         npy("e.npy", np.repeat([[0.0] * 12 + [1.0] * 12], 24, axis=0).astype(np.float32))),
    Case("int-mask-0-1", restore("a.png", "--task", "inpaint", "--mask", "{d}/k.npy", "--sigma", "0.01",
                                 out="out.npy"), "",
         npy("k.npy", np.eye(24, dtype=np.int64)), code=0,
         check=lambda d, err: np.testing.assert_allclose(np.diag(np.load(d / "out.npy")),
                                                         np.diag(_noisy(0) / 255), atol=0.05)),
    Case("mask-without-known-pixel", restore("a.png", "--task", "inpaint", "--mask", "{d}/k.npy"), "--mask",
         npy("k.npy", np.zeros((24, 24), np.float32))),
    Case("kernel-of-zeros", restore("a.png", "--task", "deblur", "--kernel", "{d}/k.npy"), "k.npy",
         npy("k.npy", np.zeros((5, 5), np.float32))),
    Case("alr-threads-abc", restore("a.png"), "ALR_THREADS", env("ALR_THREADS", "abc")),
    Case("alr-threads-2^63", restore("a.png"), "ALR_THREADS", env("ALR_THREADS", str(2 ** 63))),
    *[Case(f"max-memory-{v}", restore("a.png", f"--max-memory={v}"), "--max-memory")
      for v in ("inf", "nan", "-1G", "0")],
    Case("lam-beyond-single-precision", restore("a.png", "--lam", "1e300"), "--lam", absent=("finite",)),
    Case("seed-beyond-64-bit", train("--seed", str(10 ** 20)), "--seed"),
    Case("degrade-noise-overflows", ["degrade", "{d}/a.png", "-o", "{d}/y.npy", "--sigma", "3e38"], "--sigma"),
    *[Case(f"{cmd}-blur-sigma-{v}", ([*restore("a.png", "--task", "deblur")] if cmd == "restore" else
                                     ["degrade", "{d}/a.png", "-o", "{d}/y.npy", "--task", "deblur"])
           + ["--blur-sigma", v], "--blur-sigma") for cmd in ("restore", "degrade") for v in ("0", "1e9", "1e300")],
    Case("device-meta", restore("a.png", "--device", "meta"), "--device"),
    # -- a folder's options given for one file are refused, not ignored
    *[Case(f"file-with-{opt.strip('-')}", restore("a.png", opt, *value), f"{opt}: for restoring a folder")
      for opt, value in (("--shard", ["0/2"]), ("--batch-size", ["2"]), ("--overwrite", []))],
    # -- a shipped model's name is the bare name: never a path ending in it, never a local file of that name
    Case("model-path-ending-in-a-shipped-name", ["info", "{d}/gray"], "not found"),
    Case("local-file-named-like-a-shipped-model", restore("a.png"), "",
         both(raw_bytes("gray", b"junk"), lambda d, mp: mp.chdir(d)), code=0,
         check=lambda d, err: (d / "out.png").is_file() or pytest.fail(err)),
    # -- an option of another task is refused, not ignored
    *[Case(f"{cmd}-{opt.strip('-')}-without-its-task", (restore("a.png") if cmd == "restore" else
                                                         ["degrade", "{d}/a.png", "-o", "{d}/y.npy"]) + [opt, value],
           f"{opt} is an option of --task")
      for cmd, opt, value in (("restore", "--kernel", "{d}/a.png"), ("restore", "--blur-sigma", "2"),
                              ("restore", "--mask", "{d}/a.png"), ("restore", "--factor", "2"),
                              ("degrade", "--factor", "4"), ("degrade", "--mask-out", "{d}/m.png"),
                              ("degrade", "--missing", "0.3"))],
    *[Case(f"degrade-missing-{v}", ["degrade", "{d}/a.png", "-o", "{d}/y.npy", "--task", "inpaint", "--mask-out",
                                    "{d}/m.png", "--missing", v], "--missing") for v in ("1", "-0.1", "nan", "x")],
    # -- images the critic cannot see whole: named, before any work
    Case("image-smaller-than-a-patch", restore("t.npy"), "t.npy: image (5, 30) is smaller",
         npy("t.npy", np.full((5, 30), 0.5, np.float32))),
    Case("sr-filter-beyond-the-image", restore("t.npy", "--task", "sr", "--factor", "8"), "t.npy: super-resolution by 8 of a 2x3 measurement",
         npy("t.npy", np.full((2, 3), 0.5, np.float32))),
    Case("model-nan-weights", with_model("a.png"), "bad.safetensors: its weights hold NaN",
         model_file("bad.safetensors", state={k: v * float("nan") for k, v in
                                              alr.PatchCritic(depth=2, width=8).state_dict().items()})),
    # -- training outputs that would replace one another
    Case("train-log-is-the-model", train("--log", "{d}/t.safetensors"), "--log"),
    Case("train-log-is-the-checkpoint", train("--log", "{d}/t.safetensors.ckpt"), "--log"),
    Case("resume-with-a-foreign-log", train("--resume", "--steps", "6"), "t.csv is not the log",
         both(trained, lambda d, mp: (d / "t.csv").write_text("name,value\nx,1\n"))),
    # -- image files as viewers show them, at their depth
    Case("gray-alpha-png-stays-gray", restore("la.png"), "",
         lambda d, mp: Image.fromarray(_noisy(0)).convert("LA").save(d / "la.png"), code=0,
         check=lambda d, err: Image.open(d / "out.png").mode == "L" or pytest.fail(Image.open(d / "out.png").mode)),
    Case("16-bit-png-keeps-16-bit", restore("g16.png"), "",
         lambda d, mp: Image.fromarray(_noisy(0).astype(np.uint16) * 257).save(d / "g16.png"), code=0,
         check=lambda d, err: np.asarray(Image.open(d / "out.png")).dtype == np.uint16 or pytest.fail()),
    Case("16-bit-rgb-png-keeps-16-bit", restore("c16.png", "--model", "color"), "",
         lambda d, mp: _paeth_png16(d / "c16.png", _rgb16()), code=0,
         check=lambda d, err: bit_depth(d / "out.png") == 16 or pytest.fail()),
    Case("exif-orientation", restore("r.jpg", out="out.png"), "", code=0, setup=lambda d, mp: _rotated_jpeg(d / "r.jpg"),
         check=lambda d, err: Image.open(d / "out.png").size == (24, 40) or pytest.fail(Image.open(d / "out.png").size)),
    Case("output-name-of-250-bytes", ["degrade", "{d}/a.png", "-o", "{d}/" + "n" * 246 + ".png"], "", code=0,
         check=lambda d, err: (d / ("n" * 246 + ".png")).is_file() or pytest.fail()),
]


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny problems run on one thread: on a loaded machine two threads wait for each other
    (measured: 100 training steps 0.5 s on one thread, 73 s on two beside other jobs)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _digests(d: Path) -> dict[str, str]:
    """A digest of every file under ``d`` (size and time for the sparse giants)."""
    out = {}
    for p in sorted(d.rglob("*")):
        if p.is_file():
            st = p.stat()
            out[str(p.relative_to(d))] = (f"{st.st_size}:{st.st_mtime_ns}" if st.st_size > 1 << 24
                                          else hashlib.sha256(p.read_bytes()).hexdigest())
    return out


def _id(c) -> str:
    return c.values[0].id if hasattr(c, "values") else c.id


@pytest.mark.parametrize("case", CASES, ids=_id)
def test_fault(case: Case, tmp_path, monkeypatch, capsys):
    d = tmp_path
    make_inputs(d)
    monkeypatch.delenv("ALR_THREADS", raising=False)
    if case.setup:
        case.setup(d, monkeypatch)
    before = _digests(d)
    capsys.readouterr()
    if callable(case.run):
        with pytest.raises(alr.AlrError) as info:
            case.run(d)
        assert len(str(info.value).splitlines()) == 1 and case.names in str(info.value)
        return
    t0 = time.perf_counter()
    try:
        code = main([a.format(d=d) for a in case.run])
    except SystemExit as e:  # argparse: a usage error
        code = e.code
    monkeypatch.undo()  # writers and permissions restored before looking at the files
    err = capsys.readouterr().err
    assert code == case.code, err
    assert "Traceback" not in err and time.perf_counter() - t0 < 30
    lines = [line for line in err.splitlines() if "error:" in line]
    if case.code:
        assert len(lines) == 1, err
        line = lines[0].replace(str(d), "{d}")  # so that a short name ("-o") cannot match inside the path
        assert case.names in line and not any(a in line for a in case.absent), lines[0]
    else:
        assert not lines, err
        case.check(d, err)
    after = _digests(d)
    assert {k: after.get(k) for k in before if k not in case.changes} == \
        {k: v for k, v in before.items() if k not in case.changes}, "an input was modified"
    if case.code:
        assert set(after) - set(before) <= set(case.leaves), f"left behind: {set(after) - set(before)}"
    assert not (d / "pwned").exists()


# ---------------------------------------------------------------------------- several runs, several processes
def _folder(d: Path, n: int = 8, size: int = 40) -> Path:
    src = d / "many"
    src.mkdir()
    for i in range(n):
        Image.fromarray(_noisy(10 + i, size)).save(src / f"im{i}.png")
    return src


def _alr(*argv, **kwargs) -> subprocess.Popen:
    """``alr`` in a process of its own, on one thread like the tests. SIGINT is restored to its default
    in the child: a suite started in the background (``make test &``, CI) inherits SIGINT ignored, and
    Python then never raises KeyboardInterrupt, so the interrupt tests would test nothing."""
    env = {**os.environ, "PYTHONPATH": str(SRC), "ALR_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "alr", *map(str, argv)], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL), **kwargs)


def _interrupt(proc: subprocess.Popen, ready: Callable[[], bool], sig: int) -> str:
    """Send ``sig`` to ``proc`` as soon as ``ready()``; it must still have been running then.
    Returns its stderr."""
    while not ready():
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.005)
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=60)
    if proc.returncode == 0:  # it ended before the signal landed (seen on a loaded machine): nothing to test
        pytest.skip("the run finished before the signal reached it")
    assert proc.returncode == (-signal.SIGKILL if sig == signal.SIGKILL else 130), err
    return err


def _files(d: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(d.iterdir())}


def test_folder_with_a_bad_file_restores_the_others(tmp_path, capsys):
    """A corrupt image among good ones (waiting in the same batch): reported on one line, the
    others restored, exit 2 with the count; a rerun does only what is missing."""
    src = _folder(tmp_path, n=3)
    (src / "im05.png").write_bytes(b"not a png")  # sorted after im0.png, which waits in its batch
    dst = tmp_path / "out"
    argv = ["restore", str(src), "-o", str(dst), "--sigma", "0.1", "--iters", "2", "--batch-size", "4", "-q"]
    assert main(argv) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 2 and "im05.png" in err[0] and "skipped" in err[0], err
    assert "1 of 4 images could not be restored (im05.png)" in err[1]
    assert sorted(p.name for p in dst.iterdir()) == ["im0.png", "im1.png", "im2.png"]
    stamps = {p.name: p.stat().st_mtime_ns for p in dst.iterdir()}
    assert main(argv) == 2 and "1 of 1 images could not be restored" in capsys.readouterr().err
    Image.fromarray(_noisy(0, 40)).save(src / "im05.png")  # mended: the rerun restores it alone
    assert main(argv) == 0
    assert {p.name: p.stat().st_mtime_ns for p in dst.iterdir() if p.name in stamps} == stamps
    assert (dst / "im05.png").is_file()


def test_folder_whose_solve_fails_restores_the_other_batches(tmp_path, capsys, monkeypatch):
    """A solve that fails (here: diverged) costs its own batch, named on one line, not the folder."""
    import alr.cli
    src = _folder(tmp_path, n=3)
    solve = alr.cli._solve

    def diverging(jobs, args, say):
        if any(j.path.name == "im1.png" for j in jobs):
            raise FloatingPointError("restoration diverged (NaN); try a smaller step or lam")
        return solve(jobs, args, say)

    monkeypatch.setattr(alr.cli, "_solve", diverging)
    dst = tmp_path / "out"
    assert main(["restore", str(src), "-o", str(dst), "--sigma", "0.1", "--iters", "2", "--batch-size", "1",
                 "-q"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 2 and err[0].startswith("alr: error: im1.png: restoration diverged") and "skipped" in err[0]
    assert "1 of 3 images could not be restored (im1.png)" in err[1]
    assert sorted(p.name for p in dst.iterdir()) == ["im0.png", "im2.png"]


def test_folder_with_an_image_too_small_restores_the_others(tmp_path, capsys):
    """An image smaller than a patch is one bad file, not the end of the run; a run in which
    every image fails leaves no output folder behind (nor the parents it made)."""
    src = _folder(tmp_path, n=2)
    Image.fromarray(_noisy(0, 8)).save(src / "a_tiny.png")  # sorted first
    dst = tmp_path / "out"
    assert main(["restore", str(src), "-o", str(dst), "--sigma", "0.1", "--iters", "2", "-q"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 2 and "a_tiny.png" in err[0] and "smaller" in err[0] and "skipped" in err[0], err
    assert sorted(p.name for p in dst.iterdir()) == ["im0.png", "im1.png"]
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "x.png").write_bytes(b"not a png")
    assert main(["restore", str(bad), "-o", str(tmp_path / "new" / "deep"), "-q"]) == 2
    assert not (tmp_path / "new").exists()


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL], ids=["SIGINT", "SIGKILL"])
def test_interrupted_folder_restore_resumes_to_the_same_result(tmp_path, sig):
    src = _folder(tmp_path)
    argv = ["restore", src, "--sigma", "0.1", "--iters", "20", "--batch-size", "1", "-q"]
    assert main([*map(str, argv), "-o", str(tmp_path / "ref")]) == 0
    dst = tmp_path / "out"
    _interrupt(_alr(*argv, "-o", dst), lambda: dst.is_dir() and any(dst.glob("*.png")), sig)
    done = {p.name: p.stat().st_mtime_ns for p in dst.glob("*.png")}
    assert 0 < len(done) < 8
    assert main([*map(str, argv), "-o", str(dst)]) == 0
    assert {k: (dst / k).stat().st_mtime_ns for k in done} == done  # the rerun did only what was missing
    outputs = _files(dst)
    hidden = [k for k in outputs if k.startswith(".")]  # a SIGKILL mid-write may leave its temporary
    assert {k: v for k, v in outputs.items() if k not in hidden} == _files(tmp_path / "ref")
    assert not hidden or sig == signal.SIGKILL


def test_concurrent_restores_into_one_folder(tmp_path):
    """Two processes restoring the same folder into the same output folder: every output is whole
    and equal to a single run's, and no temporary file is left."""
    src = _folder(tmp_path)
    argv = ["restore", src, "--sigma", "0.1", "--iters", "5", "--batch-size", "1", "-q"]
    assert main([*map(str, argv), "-o", str(tmp_path / "ref")]) == 0
    procs = [_alr(*argv, "-o", tmp_path / "out") for _ in range(2)]
    for p in procs:
        assert p.wait(timeout=120) == 0, p.communicate()
    assert _files(tmp_path / "out") == _files(tmp_path / "ref")


TRAIN_LONG = ["--steps", "600", "--ckpt-every", "10", "--batch-size", "8"]


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGKILL], ids=["SIGINT", "SIGTERM", "SIGKILL"])
def test_interrupted_training_resumes_to_the_same_model(tmp_path, sig):
    """SIGINT, SIGTERM or SIGKILL during `alr train`, then --resume: the model file is the
    uninterrupted run's, bit for bit. The first two end the step, write its checkpoint and say so."""
    make_inputs(tmp_path)
    argv = [a.format(d=tmp_path) for a in TRAIN + TRAIN_LONG]
    assert main(argv + ["-o", str(tmp_path / "ref.safetensors")]) == 0
    out = tmp_path / "t.safetensors"
    err = _interrupt(_alr(*argv, "-o", out), lambda: Path(f"{out}.ckpt").exists(), sig)
    assert not out.exists()
    if sig != signal.SIGKILL:
        step = torch.load(f"{out}.ckpt", weights_only=False)["step"]
        assert err.strip().endswith(f"alr: interrupted: stopped after step {step} of 600; {out}.ckpt holds it: "
                                    "run the same command with --resume to go on"), err
    assert main(argv + ["-o", str(out), "--resume"]) == 0
    assert out.read_bytes() == (tmp_path / "ref.safetensors").read_bytes()


def _signalling(sample: Callable, call: int, *sigs: int) -> Callable:
    """``sample`` that sends this process ``sigs`` on its ``call``-th call (during that step)."""
    count = [0]

    def wrapped(*args):
        count[0] += 1
        if count[0] == call:
            for sig in sigs:
                os.kill(os.getpid(), sig)
        return sample(*args)
    return wrapped


def _train_loop(sample: Callable, out: Path, resume: bool) -> torch.nn.Module:
    from alr.train import TrainConfig, train_critic
    torch.manual_seed(0)
    return train_critic(alr.PatchCritic(depth=2, width=4), sample, TrainConfig(steps=6, batch_size=4, device="cpu"),
                        out=out, resume=resume, progress=False)


def _finetune_loop(sample: Callable, out: Path, resume: bool) -> torch.nn.Module:
    from alr.finetune import FinetuneConfig, finetune

    class Crops:
        pass
    crops = Crops()
    crops.sample = sample
    torch.manual_seed(0)
    cfg = FinetuneConfig(sigma=0.1, steps=6, batch_size=2, crop=16, lr0=1e-2, iters=5, tol=1e-3, device="cpu")
    return finetune(alr.PatchCritic(depth=2, width=4, activation="silu"), crops, cfg, 0.05, out=out, resume=resume,
                    progress=False)


def _patches(n: int, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.rand(n, 1, 5, 5, generator=g), torch.rand(n, 1, 5, 5, generator=g)


def _crops(n: int, size: int, g: torch.Generator) -> torch.Tensor:
    return torch.rand(n, 1, size, size, generator=g) * 0.6 + 0.2


#: The training loops that stop on a signal: (run(sample, out, resume), their sampler).
STOPPABLE = {"train": (_train_loop, _patches), "finetune": (_finetune_loop, _crops)}


@pytest.mark.parametrize("loop", STOPPABLE)
def test_a_stop_signal_ends_training_after_its_step_resumably(tmp_path, loop):
    """SIGTERM (a scheduler's notice; Ctrl-C's SIGINT alike) during step 3: the step ends, its
    checkpoint is written, no model file, the error says how to go on, the handlers are restored;
    --resume ends on the weights of a run never stopped."""
    run, sample = STOPPABLE[loop]
    whole = run(sample, tmp_path / "whole.safetensors", False)
    out = tmp_path / "t.safetensors"
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(alr.errors.Interrupted, match=re.escape(f"stopped after step 3 of 6; {out}.ckpt holds it: run the same command with --resume")):
        run(_signalling(sample, 3, signal.SIGTERM), out, False)
    assert signal.getsignal(signal.SIGTERM) is before and not out.exists()
    assert torch.load(f"{out}.ckpt", weights_only=False)["step"] == 3
    done = run(sample, out, True)
    assert all(torch.equal(v, whole.state_dict()[k]) for k, v in done.state_dict().items())


@pytest.mark.parametrize("loop", STOPPABLE)
def test_a_second_stop_signal_interrupts_at_once(tmp_path, loop):
    run, sample = STOPPABLE[loop]
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(KeyboardInterrupt) as e:
        run(_signalling(sample, 2, signal.SIGTERM, signal.SIGTERM), tmp_path / "t.safetensors", False)
    assert not isinstance(e.value, alr.errors.Interrupted) and signal.getsignal(signal.SIGTERM) is before


def test_seeded_training_is_deterministic(tmp_path):
    """The same seed gives the same model file bit for bit (calibration included); another seed
    another model. (The critic used to be initialised before the seed was set.)"""
    make_inputs(tmp_path)
    argv = [a.format(d=tmp_path) for a in TRAIN if a != "--no-calibrate"] + ["--steps", "20"]
    files = {}
    for name, seed in (("a", "0"), ("b", "0"), ("c", "1")):
        files[name] = tmp_path / f"{name}.safetensors"
        assert main(argv + ["--seed", seed, "-o", str(files[name])]) == 0
    assert files["a"].read_bytes() == files["b"].read_bytes()
    assert "lambda" in alr.load(files["a"]).meta
    assert files["a"].read_bytes() != files["c"].read_bytes()


def test_measurements_of_other_operators_need_only_be_finite():
    """The image rule bounds the measurements of alr's operators (images); another operator's
    (here A x = 10 x, as a tomograph's sinogram is not an image either) may take any finite scale."""
    class Gain:
        def A(self, x):
            return 10 * x

        def A_adjoint(self, y):
            return 10 * y

    y = 20 * GRAY  # 10 everywhere
    x = alr.restore(y, alr.PatchCritic(width=8), physics=Gain(), lam=0.01, method="adam", iters=2)
    assert x.shape == y.shape
    with pytest.raises(alr.AlrError, match="divide it by 255"):
        alr.restore(y, alr.PatchCritic(width=8), lam=0.01, iters=2)  # denoising: y is an image


def test_the_size_limit_is_per_image_not_per_batch(monkeypatch):
    """alr.images.MAX_VALUES bounds one image: a batch of images each under it passes, one image over
    it is refused, naming it."""
    from alr.images import check_values
    monkeypatch.setattr(alr.images, "MAX_VALUES", 100)
    check_values(torch.rand(3, 1, 10, 10), "batch")
    with pytest.raises(alr.images.ImageError, match=r"big: 300 values in one image is more than alr takes \(100\)"):
        check_values(torch.rand(1, 3, 10, 10), "big")
