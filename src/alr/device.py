"""Choosing the device (CPU or GPU) a computation runs on."""
from __future__ import annotations

import os

import torch


def resolve_device(name: str | torch.device | None = None) -> torch.device:
    """The device called ``name`` (``"cpu"``, ``"cuda"``, ``"cuda:1"``), checked to exist here;
    ``None``: CUDA when available, else the CPU. Raises ``ValueError`` with the reason otherwise.

    >>> resolve_device("cpu")
    device(type='cpu')
    """
    if name is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except RuntimeError:
        dev = None
    if dev is None or dev.type not in ("cpu", "cuda"):  # meta, mps, xpu...: alr solves on CPUs and CUDA GPUs
        raise ValueError(f"unknown device {name!r}; use cpu, cuda or cuda:N")
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {name!r}: this torch ({torch.__version__}) sees no CUDA GPU; use cpu")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ValueError(f"device {name!r}: there are only {torch.cuda.device_count()} CUDA device(s)")
    return dev


#: The most activation memory the automatic budget takes on a GPU, whatever is free.
MAX_AUTO_MEMORY = 1 << 30
#: The most it takes on the CPU. glibc maps every block above 32 MiB afresh at each call, so
#: smaller tiles are faster there: a value and gradient of ``gray`` on a BSD68 image takes 0.61 s
#: in 128 MiB tiles against 1.46 s whole, a whole restore of one 7.5 s against 10.9 s under 1 GiB
#: (``python benchmarks/tile_budget.py``, two threads).
MAX_AUTO_MEMORY_CPU = 128 << 20


def available_memory(device: torch.device | str | None = None) -> int | None:
    """Bytes free now on ``device``: the GPU's free memory, or the system's available RAM
    (``MemAvailable`` of /proc/meminfo, else the free physical pages); None if unknown."""
    dev = torch.device(device) if device is not None else torch.device("cpu")
    if dev.type == "cuda":
        return int(torch.cuda.mem_get_info(dev)[0])
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def memory_budget(device: torch.device | str | None = None) -> float:
    """Default activation budget of a restore: a quarter of the memory available on ``device``
    (None: the one :func:`resolve_device` picks; the solver's own vectors need the rest), at least
    64 MiB, at most :func:`memory_cap`: :data:`MAX_AUTO_MEMORY` on a GPU, :data:`MAX_AUTO_MEMORY_CPU`
    on the CPU."""
    dev = resolve_device(device)
    cap = memory_cap(dev)
    free = available_memory(dev)
    return float(cap if free is None else min(cap, max(free // 4, 64 << 20)))


def memory_cap(device: torch.device | str | None = None) -> int:
    """The most activation memory the automatic budget takes on ``device`` (it takes less only
    when memory is short)."""
    return MAX_AUTO_MEMORY_CPU if resolve_device(device).type == "cpu" else MAX_AUTO_MEMORY


#: The ``mallopt`` parameters of glibc that :func:`keep_freed_memory` sets.
_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_MAX = -1, -2, -4


def malloc_configured(environ) -> bool:
    """Whether the environment ``environ`` configures glibc's allocator (``MALLOC_*``, ``GLIBC_TUNABLES``)."""
    return any(k.startswith("MALLOC_") or k == "GLIBC_TUNABLES" for k in environ)


def keep_freed_memory() -> bool:
    """Make glibc's ``malloc`` keep and reuse freed memory in this process instead of mapping every
    block above its 32 MiB threshold afresh at each call (and faulting its pages in again): no
    separate maps, a 2 GiB trim threshold, a 256 MiB top pad, as ``MALLOC_MMAP_MAX_=0
    MALLOC_TRIM_THRESHOLD_=... MALLOC_TOP_PAD_=...`` would. A LAR training step of 512 patches on
    two CPU threads takes about 1.3 s instead of 1.5 (``benchmarks/train_speed.py``); the price is
    that the process keeps its peak memory until it ends. For a process that runs one long
    computation (``alr train`` and ``alr finetune`` call it); a library leaves its users' allocator
    alone. Returns whether it was applied: not off glibc, nor when the environment already sets
    ``MALLOC_*`` or ``GLIBC_TUNABLES`` (the user's settings win)."""
    if malloc_configured(os.environ):
        return False
    try:
        import ctypes
        libc = ctypes.CDLL(None)
        libc.gnu_get_libc_version  # glibc only: musl and others have no such symbol
        mallopt = libc.mallopt
    except (OSError, AttributeError, TypeError):  # TypeError: Windows loads no library by None
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return all(mallopt(p, v) == 1 for p, v in ((_M_MMAP_MAX, 0), (_M_TRIM_THRESHOLD, 2**31 - 1),
                                               (_M_TOP_PAD, 256 << 20)))
