"""The model file: one ``.safetensors`` file holding a critic's weights and its metadata.

The safetensors header holds three JSON strings besides the tensors:

* ``config``: the architecture, ``{"kind": "patch", "in_channels": 1, "depth": 6, ...}``,
  enough to rebuild the network before the weights are loaded;
* ``meta``: what the model knows about itself: its data sets (by name, never a path of the
  machine that trained it), its training recipe, and its lambda tables
  (:mod:`alr.pretrained`);
* ``alr_version``: the version that wrote it.

Loading never unpickles anything, and the header is checked against a schema with limits
before any network is built (:func:`validate_config`, :func:`validate_meta`), so a hostile or
corrupt file is refused with a one-line :class:`ModelFileError` naming the file, and a small
file cannot make the loader build a huge network.

Example
-------
>>> import tempfile, torch, alr
>>> from alr.modelfile import load_model, save_model
>>> path = tempfile.mkdtemp() + "/m.safetensors"
>>> save_model(alr.PatchCritic(width=8), path)
>>> load_model(path).config()["width"]
8
"""
from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from . import __version__
from .critic import ACTIVATIONS, BOUNDARIES, CRITERIA, PatchCritic
from .errors import AlrError
from .files import atomic_write

#: Limits on what a model file may declare: the loader refuses larger networks before building them.
MAX_DEPTH = 64
MAX_WIDTH = 1024
MAX_HEADER_BYTES = 1 << 20


class ModelFileError(AlrError, ValueError):
    """A model file that cannot be loaded: not safetensors, or with a malformed header."""


class ModelNotFoundError(AlrError, FileNotFoundError):
    """No model file at that path, and no shipped model of that name."""


def save_model(model: nn.Module, path: str | os.PathLike) -> None:
    """Write ``model``'s weights to ``path`` as safetensors, atomically; ``model.config()`` and
    ``model.meta`` go to the header.

    The header's JSON is written with sorted keys (safetensors orders it at random), so the same
    model gives the same bytes: a file's digest identifies its model. What :func:`load_model` would
    refuse (a bad config or lambda table, a NaN) is refused before anything is written.
    """
    from safetensors.torch import save

    meta = getattr(model, "meta", {}) or {}
    for key, value in _strings(meta):
        if is_machine_path(value):
            raise ValueError(f"{path}: meta {key} records the machine path {value!r}; a model file records "
                             "names only (alr.modelfile.portable_path)")
    if isinstance(model, PatchCritic):
        validate_config(model.config(), str(path))
        validate_meta(meta, str(path))
    try:
        header = {"alr_version": __version__, "config": json.dumps(model.config(), allow_nan=False),
                  "meta": json.dumps(meta, allow_nan=False)}
    except (TypeError, ValueError) as e:  # NaN or infinity, or an object JSON cannot hold
        raise ModelFileError(f"{path}: the model's metadata cannot be written ({e})") from None
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    if hasattr(model, "receptive_field"):
        header["receptive_field"] = str(model.receptive_field)
    blob = save(state, metadata=header)
    n = int.from_bytes(blob[:8], "little")
    head = json.dumps(json.loads(blob[8:8 + n]), sort_keys=True, separators=(",", ":")).encode()
    head += b" " * (-len(head) % 8)  # the data stays 8-byte aligned, as safetensors writes it
    data = len(head).to_bytes(8, "little") + head + blob[8 + n:]

    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:
            f.write(data)

    atomic_write(path, write)


def _strings(value: Any, key: str = "") -> list[tuple[str, str]]:
    """Every string inside nested dicts / lists, with its key path (``data.clean``)."""
    if isinstance(value, str):
        return [(key, value)]
    if isinstance(value, dict):
        return [kv for k, v in value.items() for kv in _strings(v, f"{key}.{k}" if key else str(k))]
    if isinstance(value, (list, tuple)):
        return [kv for i, v in enumerate(value) for kv in _strings(v, f"{key}[{i}]")]
    return []


def _int_in(cfg: dict, key: str, low: int, high: int, where: str) -> int:
    v = cfg.get(key)
    if isinstance(v, bool) or not isinstance(v, int) or not low <= v <= high:
        raise ModelFileError(f"{where}: config {key!r} must be an integer in [{low}, {high}], got {v!r}")
    return v


#: Largest |log_scale| / |log_weight| a model file may declare (e^20: far beyond any fit).
MAX_LOG_SCALE = 20.0


def validate_config(cfg: Any, where: str = "model file") -> dict:
    """The architecture of a patch critic, checked: known keys, types and limits.

    The hidden layers have one ``width`` or a list of ``widths`` (``depth - 1`` of them, each
    at most :data:`MAX_WIDTH`); ``log_scale`` / ``log_weight`` are the fitted input scale and
    weight (:class:`alr.critic.PatchCritic`), 0 when absent.
    """
    if not isinstance(cfg, dict):
        raise ModelFileError(f"{where}: config must be a JSON object, got {type(cfg).__name__}")
    if cfg.get("kind") != "patch":
        raise ModelFileError(f"{where}: config 'kind' must be 'patch' (a patch critic), got {cfg.get('kind')!r}")
    allowed = {"kind", "in_channels", "depth", "width", "widths", "activation", "criterion", "log_scale",
               "log_weight"}
    unknown = sorted(set(cfg) - allowed)
    if unknown:
        raise ModelFileError(f"{where}: unknown config key(s) {', '.join(map(repr, unknown))}")
    out = {"in_channels": _int_in(cfg, "in_channels", 1, 3, where),
           "depth": _int_in(cfg, "depth", 1, MAX_DEPTH, where),
           "activation": cfg.get("activation", "relu"), "criterion": cfg.get("criterion", "w1")}
    for key in ("activation", "criterion"):
        if not isinstance(out[key], str):
            raise ModelFileError(f"{where}: config {key!r} must be a name, got {out[key]!r}")
    if ("width" in cfg) == ("widths" in cfg):
        raise ModelFileError(f"{where}: config needs one of 'width' or 'widths'")
    if "width" in cfg:
        out["width"] = _int_in(cfg, "width", 1, MAX_WIDTH, where)
    else:
        widths = cfg["widths"]
        if not isinstance(widths, list) or len(widths) != out["depth"] - 1:
            raise ModelFileError(f"{where}: config 'widths' must list {out['depth'] - 1} layer widths (depth - 1)")
        out["widths"] = [_int_in({"widths": w}, "widths", 1, MAX_WIDTH, where) for w in widths]
    for key in ("log_scale", "log_weight"):
        v = cfg.get(key, 0.0)
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not abs(v) <= MAX_LOG_SCALE:
            raise ModelFileError(f"{where}: config {key!r} must be a number in [-{MAX_LOG_SCALE:g}, "
                                 f"{MAX_LOG_SCALE:g}], got {v!r}")
        out[key] = float(v)
    if out["in_channels"] == 2:
        raise ModelFileError(f"{where}: config 'in_channels' must be 1 or 3, got 2")
    if out["activation"] not in ACTIVATIONS:
        raise ModelFileError(f"{where}: unknown activation {out['activation']!r}")
    if out["criterion"] not in CRITERIA:
        raise ModelFileError(f"{where}: unknown criterion {out['criterion']!r}")
    return out


def _numbers(v: Any, key: str, where: str, positive: bool = True, integer: bool = False) -> list[float]:
    if not isinstance(v, list) or not v or not all(isinstance(a, (int, float)) and not isinstance(a, bool)
                                                   for a in v):
        raise ModelFileError(f"{where}: lambda table {key!r} must be a non-empty list of numbers")
    if not all(math.isfinite(a) and (a > 0 if positive else a >= 0) and (float(a).is_integer() or not integer)
               for a in v):
        raise ModelFileError(f"{where}: lambda table {key!r} must hold finite "
                             + ("integers >= 1" if integer else "numbers > 0" if positive else "numbers >= 0"))
    return [float(a) for a in v]


#: Metadata entries that, when present, must be JSON objects (what :func:`alr.pretrained.describe` reads).
META_OBJECTS = ("data", "training", "continued_from", "lambda", "solver")
#: The solvers of :func:`alr.solver.minimize` (defined here, below the solver, so a model file can name one).
METHODS = ("adam", "gd", "agd", "lbfgs", "nmapg")
#: Options a model may recommend for its solver (keyword arguments of :func:`alr.solver.minimize`).
SOLVER_OPTIONS = ("boundary", "iters", "lr0", "lr1", "step", "tol")


def validate_meta(meta: Any, where: str = "model file") -> dict:
    """The metadata, checked where the library reads it: the lambda tables (``meta["lambda"]``)."""
    if not isinstance(meta, dict):
        raise ModelFileError(f"{where}: meta must be a JSON object, got {type(meta).__name__}")
    for key in META_OBJECTS:
        if meta.get(key) is not None and not isinstance(meta[key], dict):
            raise ModelFileError(f"{where}: meta {key!r} must be a JSON object, got {type(meta[key]).__name__}")
    for task, t in (meta.get("lambda") or {}).items():
        w = f"{where}: table {task!r}"
        if not isinstance(t, dict):
            raise ModelFileError(f"{w} must be an object with 'sigma' and 'lam' lists")
        sig = _numbers(t.get("sigma"), "sigma", w)
        if sig != sorted(sig) or len(set(sig)) != len(sig):
            raise ModelFileError(f"{w}: 'sigma' must be increasing")
        for key in ("lam", "iters", "concavity"):
            if key in t or key == "lam":
                vals = _numbers(t.get(key), key, w, positive=key != "concavity", integer=key == "iters")
                if len(vals) != len(sig):
                    raise ModelFileError(f"{w}: {len(vals)} values of {key!r} for {len(sig)} noise levels")
        ref = t.get("score_ref")
        if ("concavity" in t or ref is not None) and (isinstance(ref, bool) or not isinstance(ref, (int, float))
                                                     or not math.isfinite(ref)):
            raise ModelFileError(f"{w}: a table with 'concavity' needs a finite number 'score_ref', got {ref!r}")
    _validate_solver(meta.get("solver"), where)
    return meta


def _validate_solver(solver: dict | None, where: str) -> None:
    """The solver a model recommends: ``{"method": M, "options": {...}, "iters": {task: n}}``."""

    if solver is None:
        return
    if solver.get("method") not in METHODS:
        raise ModelFileError(f"{where}: meta 'solver' needs a 'method' among {', '.join(METHODS)}, "
                             f"got {solver.get('method')!r}")
    options, iters = solver.get("options", {}), solver.get("iters", {"denoise": 1})

    def count(n: Any) -> bool:
        return isinstance(n, int) and not isinstance(n, bool) and n >= 1

    if not isinstance(options, dict) or set(options) - set(SOLVER_OPTIONS):
        raise ModelFileError(f"{where}: meta 'solver' 'options' must be an object with keys among "
                             f"{', '.join(SOLVER_OPTIONS)}")
    for key, v in options.items():
        ok = (v in BOUNDARIES if key == "boundary" else count(v) if key == "iters" else
              not isinstance(v, bool) and isinstance(v, (int, float)) and 0 <= v < math.inf)
        if not ok:
            raise ModelFileError(f"{where}: meta 'solver' option {key!r} is not valid: {v!r}")
    if not isinstance(iters, dict) or not iters or not all(count(n) for n in iters.values()):
        raise ModelFileError(f"{where}: meta 'solver' 'iters' must map tasks to integers >= 1")


def read_header(path: str | os.PathLike) -> dict[str, str]:
    """The string metadata of a safetensors file, read without loading its tensors."""
    path = Path(path)
    if not path.is_file():
        raise ModelNotFoundError(f"model file not found: {path}")
    try:
        with open(path, "rb") as f:
            n = int.from_bytes(f.read(8), "little")
            if not 0 < n <= MAX_HEADER_BYTES:
                raise ValueError(f"header size {n}")
            header = json.loads(f.read(n))
    except (OSError, ValueError, UnicodeDecodeError) as e:
        raise ModelFileError(f"{path} is not a valid alr model file (not safetensors: {e})") from None
    meta = header.get("__metadata__") if isinstance(header, dict) else None
    if not isinstance(meta, dict):
        return {}
    bad = sorted(k for k, v in meta.items() if not isinstance(v, str))
    if bad:
        raise ModelFileError(f"{path}: header metadata {bad[0]!r} must be a string (safetensors metadata)")
    return meta


def load_model(path: str | os.PathLike, classes: dict[str, type] | None = None) -> nn.Module:
    """Load a critic from a model file (no pickle involved), its header checked first.

    ``classes`` maps other config kinds to their classes (the experiments' toy critic);
    patch critics are validated against :func:`validate_config`.
    """
    from safetensors import safe_open

    path = Path(path)
    header = read_header(path)
    if "config" not in header:
        raise ModelFileError(f"{path} has no alr metadata; was it written by alr?")
    try:
        cfg = json.loads(header["config"])
        meta = json.loads(header.get("meta", "{}"))
    except json.JSONDecodeError as e:
        raise ModelFileError(f"{path}: malformed JSON in the model's metadata ({e.msg} at char {e.pos})") from None
    kind = cfg.get("kind") if isinstance(cfg, dict) else None
    if classes and kind in classes:
        try:
            model = classes[kind](**{k: v for k, v in cfg.items() if k != "kind"})
        except (TypeError, ValueError) as e:
            raise ModelFileError(f"{path}: config of a {kind!r} model does not build ({e})") from None
    else:
        model = PatchCritic(**validate_config(cfg, str(path)))
    model.meta = validate_meta(meta, str(path))
    try:
        with safe_open(str(path), framework="pt") as f:
            state = {k: f.get_tensor(k) for k in f.keys()}
        model.load_state_dict(state)
    except Exception as e:  # corrupt tensors, or weights of another architecture
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ModelFileError(f"{path}: its weights do not load ({first})") from None
    if not all(bool(torch.isfinite(t).all()) for t in state.values() if t.is_floating_point()):
        raise ModelFileError(f"{path}: its weights hold NaN or infinite values (a damaged file)")
    model.eval()
    return model


def is_machine_path(value: str) -> bool:
    """Whether a recorded string names a place on one machine: an absolute path, or one from the
    home folder or up through ``..`` (what :func:`save_model` refuses in a model's metadata).

    >>> [is_machine_path(v) for v in ("bsd400", "/data/bsd400", "~/data", "../shared/data", "a/../b")]
    [False, True, True, True, True]
    """
    return os.path.isabs(value) or value.startswith(("~/", "../")) or "/../" in value


def portable_path(path: str | os.PathLike | None) -> str | None:
    """What a model file records of a data folder: its name, never the machine's path to it.

    >>> portable_path("/home/me/data/bsd400/")
    'bsd400'
    >>> portable_path(".") == Path.cwd().name  # the folder's own name, not an empty one
    True
    """
    return None if path is None else Path(os.path.abspath(path)).name  # "." and ".." by their names

