"""The examples in xconv's docstrings run (doctest), framework examples included; those marked
``# doctest: +SKIP`` need the reader's own model or a download."""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

import xconv

MODULES = sorted(m.name for m in pkgutil.walk_packages(xconv.__path__, "xconv.") if not m.name.endswith("__main__"))


def test_the_public_api_has_examples():
    import inspect

    import xconv.testing

    missing = [
        f"{module.__name__}.{name}"
        for module in (xconv, xconv.testing)
        for name in module.__all__
        if (inspect.isfunction(getattr(module, name)) or inspect.isclass(getattr(module, name)))
        and ">>>" not in (getattr(module, name).__doc__ or "")
        and name not in ("Row", "TrainParity")  # result records, shown by the examples that return them
    ]
    assert missing == []


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_run(both_backends, name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    module = importlib.import_module(name)
    flags = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE
    result = doctest.testmod(module, optionflags=flags, report=True, verbose=False)
    assert result.failed == 0, f"{name}: {result.failed} of {result.attempted} docstring examples fail (output above)"
