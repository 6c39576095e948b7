"""Command-line option types: each parses one option's text or raises ``ArgumentTypeError``
with a message that argparse prints as ``alr: error: argument --NAME: MESSAGE``."""
from __future__ import annotations

import argparse
import math


def memory(text: str) -> float:
    """A memory size: bytes, or with a unit (512M, 4G)."""
    units = {"k": 2 ** 10, "m": 2 ** 20, "g": 2 ** 30, "t": 2 ** 40}
    t = text.strip().lower().rstrip("ib")
    try:
        v = float(t[:-1]) * units[t[-1]] if t and t[-1] in units else float(t)
    except (ValueError, IndexError):
        raise argparse.ArgumentTypeError(f"invalid memory size {text!r} (e.g. 4G, 512M)") from None
    if not (math.isfinite(v) and v >= 1):
        raise argparse.ArgumentTypeError(f"must be a finite size of at least 1 byte (e.g. 4G, 512M), got {text!r}")
    return v


DEVICE_HELP = "cpu, cuda, cuda:1 (default: cuda when available)"


def device(text: str) -> str:
    """A device name that exists on this machine."""
    from .device import resolve_device
    try:
        resolve_device(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    return text


#: The largest single-precision number: tensors hold options in float32.
FLOAT32_MAX = 3.4028234663852886e38


def positive_float(text: str) -> float:
    """A finite number >= 0 that single precision holds."""
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not (math.isfinite(v) and v >= 0):
        raise argparse.ArgumentTypeError(f"must be finite and >= 0, got {text}")
    if v > FLOAT32_MAX:
        raise argparse.ArgumentTypeError(f"must be at most {FLOAT32_MAX:.3g} (single precision), got {text}")
    return v


def fraction(text: str) -> float:
    """A number in [0, 1)."""
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not 0 <= v < 1:
        raise argparse.ArgumentTypeError(f"must be in [0, 1), got {text}")
    return v


def positive_floats(text: str) -> list[float]:
    """Comma-separated finite numbers >= 0."""
    return [positive_float(v) for v in text.split(",")]


def int_at_least(low: int, high: int | None = None):
    """An argparse type: an integer >= ``low`` (and <= ``high``, if given)."""
    def parse(text: str) -> int:
        try:
            v = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if v < low or (high is not None and v > high):
            raise argparse.ArgumentTypeError(f"must be >= {low}, got {text}" if high is None
                                             else f"must be in [{low}, {high}], got {text}")
        return v
    return parse


positive_int, count = int_at_least(1), int_at_least(0)
seed = int_at_least(0, 2 ** 63 - 1)  # what torch's generators take


def positive_ints(text: str) -> list[int]:
    """Comma-separated integers >= 1."""
    return [positive_int(v) for v in text.split(",")]


def shard(text: str) -> tuple[int, int]:
    """``i/n``: the i-th of n parts."""
    try:
        i, n = (int(v) for v in text.split("/"))
    except ValueError:
        i, n = -1, 0
    if not 0 <= i < n:
        raise argparse.ArgumentTypeError(f"--shard must be i/n with 0 <= i < n, got {text!r}")
    return i, n
