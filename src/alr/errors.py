"""The one error type of ``alr``: what went wrong, in one line that names the file or option.

Every error that a user can cause (a bad file, a bad option, a bad array) is an
:class:`AlrError` (or a subclass); the command line prints it as ``alr: error: MESSAGE`` and
exits with status 2. Anything else is a bug and keeps its traceback.
"""
from __future__ import annotations


class AlrError(Exception):
    """A user-caused error, reported on one line.

    >>> str(AlrError("model x.safetensors: not found"))
    'model x.safetensors: not found'
    """


def one_line(e: BaseException) -> str:
    """The message of a user-caused error on one line, naming the file of an ``OSError``.

    >>> one_line(FileNotFoundError(2, "No such file or directory", "a.png"))
    'a.png: No such file or directory'
    >>> one_line(AlrError("first\\n  second"))
    'first second'
    """
    msg = str(e.args[0]) if isinstance(e, KeyError) and e.args else str(e)
    if isinstance(e, OSError) and e.filename and e.strerror:
        msg = f"{e.filename}: {e.strerror}"
    return " ".join(msg.split())


class MissingTable(AlrError, KeyError):
    """A model without the lambda table asked for (a :class:`KeyError` too, for the callers that
    fall back to another table)."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class Interrupted(KeyboardInterrupt):
    """A run stopped by the user (Ctrl-C) or the system (SIGTERM) after saving what it needs to go
    on; the message says where and how."""
