"""Writing files so that nothing is ever half-written, and never over an input.

:func:`atomic_write` writes to a temporary file beside the target and renames it onto the
target in one step (``os.replace``), so a reader, or a run that is killed mid-write, sees
either the old file or the new one, never a partial one; a write that fails (disk full, no
permission) raises :class:`OutputError` naming the target and leaves nothing behind.

:func:`check_output` and :func:`check_output_folder` are the one output-path policy of every
command (restore, degrade, train, calibrate), applied before any work is done: an output is
never one of the command's inputs, never lands inside an input (data) folder, and is never an
existing folder where a file is meant (or a file where a folder is meant).
"""
from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Callable, Iterable, Iterator

from .errors import AlrError

PathLike = str | os.PathLike


class OutputError(AlrError):
    """An output that may not be written (it would replace an input) or cannot be (disk full,
    no permission, a folder in the way)."""


def atomic_write(path: PathLike, write: Callable[[str], None]) -> None:
    """Call ``write(tmp_path)`` then rename onto ``path``: readers never see a partial file.

    An ``OSError`` on the way (disk full, read-only folder) becomes an :class:`OutputError`
    naming ``path``; the temporary file is removed whatever happens, so a failed or interrupted
    write leaves ``path`` as it was. (Only a SIGKILL in the middle of ``write`` can leave the
    hidden temporary ``.NAME.tmpPID`` beside it, never a partial ``NAME``.)

    >>> import tempfile, pathlib
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> atomic_write(d / "a.txt", lambda tmp: pathlib.Path(tmp).write_text("hi"))
    >>> (d / "a.txt").read_text(), sorted(p.name for p in d.iterdir())
    ('hi', ['a.txt'])
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name[:200]}.tmp{os.getpid()}")  # within the 255 bytes of a name
    try:
        if path.is_dir():
            raise IsADirectoryError(21, "is a folder, not a file")
        path.parent.mkdir(parents=True, exist_ok=True)
        write(str(tmp))
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except OSError as e:
        raise OutputError(f"cannot write {path}: {e.strerror or e}") from e
    finally:
        if tmp.exists():
            tmp.unlink()


@contextlib.contextmanager
def new_folder(path: PathLike) -> Iterator[Path]:
    """Create the folder ``path`` (and missing parents) for the block; if the block fails, the
    folders it created and that are still empty are removed: a failed run leaves nothing new.

    >>> import tempfile, pathlib
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> try:
    ...     with new_folder(d / "a" / "b"):
    ...         raise ValueError("no image could be restored")
    ... except ValueError:
    ...     pass
    >>> list(d.iterdir())
    []
    """
    path = Path(path)
    made = [p for p in (path, *path.parents) if not p.exists()]  # deepest first
    path.mkdir(parents=True, exist_ok=True)
    try:
        yield path
    except BaseException:
        for p in made:
            with contextlib.suppress(OSError):  # a folder that holds something stays
                p.rmdir()
        raise


def _same(a: Path, b: Path) -> bool:
    """Whether two paths name one file (through links too); False when either is missing."""
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return False


def _inside(path: Path, folder: Path) -> bool:
    return path.resolve().is_relative_to(folder.resolve())


def check_output(path: PathLike, inputs: Iterable[PathLike | None] = (), folders: Iterable[PathLike | None] = (),
                 option: str = "-o") -> Path:
    """``path`` as a file output of a command whose input files are ``inputs`` and input
    (data) folders ``folders``; :class:`OutputError` naming ``option`` if it would replace an
    input, land inside an input folder, or is an existing folder.

    >>> import tempfile, pathlib
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> (d / "in.png").write_bytes(b"x")
    1
    >>> check_output(d / "in.png", [d / "in.png"])
    Traceback (most recent call last):
    ...
    alr.files.OutputError: -o ... is an input of this command: write the result elsewhere
    """
    path = Path(path)
    if path.is_dir():
        raise OutputError(f"{option} {path} is a folder; give a file name")
    for src in inputs:
        if src is not None and _same(path, Path(src)):
            raise OutputError(f"{option} {path} is an input of this command: write the result elsewhere")
    for folder in folders:
        if folder is not None and _inside(path, Path(folder)):
            raise OutputError(f"{option} {path} is inside the input folder {folder}: write it elsewhere")
    _check_writable(path.parent, option, path)
    return path


def check_output_folder(path: PathLike, inputs: Iterable[PathLike | None] = (), option: str = "-o") -> Path:
    """``path`` as an output folder of a command reading the folders or files ``inputs``:
    :class:`OutputError` if it is one of them or an existing file."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise OutputError(f"{option} {path} is a file; give a folder for the outputs of a folder")
    for src in inputs:
        if src is not None and _same(path, Path(src)):
            raise OutputError(f"{option} {path} is the input folder: restoring into it would replace the inputs")
    _check_writable(path, option, path)
    return path


def _check_writable(folder: Path, option: str, path: Path) -> None:
    """Fail early (before any work) when the nearest existing folder above ``path`` is not one
    or cannot be written to."""
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if not folder.is_dir():
        raise OutputError(f"{option} {path}: {folder} is not a folder")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise OutputError(f"{option} {path}: no permission to write in {folder}")
