"""The runnable examples in the package's docstrings stay correct."""
import doctest
import importlib
import pkgutil

import pytest

import alr


def _modules_with_examples() -> list[str]:
    names = sorted(m.name for m in pkgutil.iter_modules(alr.__path__, "alr.") if m.name != "alr.__main__")
    finder = doctest.DocTestFinder()
    return [n for n in names if any(t.examples for t in finder.find(importlib.import_module(n)))]


@pytest.mark.parametrize("name", _modules_with_examples())
def test_docstring_examples(name):
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0
