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
