"""Backend registry. Backends are imported lazily; a model or tensor is matched to its backend by looking at
``sys.modules`` first, so nothing here imports a framework that the caller has not imported already.

A backend module satisfies :class:`xconv.backends._protocol.Backend` (and, for the frameworks, ``Trainable``,
``FastTransfer`` and ``Importer``); ``infos`` is always the spec's graph (``xconv.graph``).
"""

from __future__ import annotations

import importlib
import sys
from dataclasses import dataclass
from types import ModuleType
from typing import Any

from ..errors import BackendUnavailable

__all__ = ["BACKENDS", "backend_of_model", "backend_of_tensor", "canonical_name", "get_backend"]


@dataclass(frozen=True)
class _Entry:
    module: str
    frameworks: tuple[str, ...]  # top-level modules whose presence in sys.modules makes the backend a candidate
    install: str


BACKENDS: dict[str, _Entry] = {
    "numpy": _Entry("xconv.backends.numpy_backend", (), "pip install numpy"),
    "torch": _Entry("xconv.backends.torch_backend", ("torch",), 'pip install "xconv[torch]"  (torch==2.13.0)'),
    "tf": _Entry("xconv.backends.tf", ("tensorflow", "keras"), 'pip install "xconv[tf]"  (tensorflow-cpu==2.21.0)'),
}
_ALIASES = {"numpy": "numpy", "torch": "torch", "pytorch": "torch", "tf": "tf", "tensorflow": "tf", "keras": "tf"}


def canonical_name(name: str) -> str:
    """'pytorch' -> 'torch', 'keras' -> 'tf', ...; an unknown name is a ValueError listing the valid ones."""
    key = name.lower() if isinstance(name, str) else name
    if key not in _ALIASES:
        valid = ", ".join(repr(n) for n in _ALIASES)
        raise ValueError(f"unknown backend {name!r}; valid names: {valid}")
    return _ALIASES[key]


def get_backend(name: str) -> ModuleType:
    """Import and return the backend module for ``name`` (aliases accepted)."""
    entry = BACKENDS[canonical_name(name)]
    try:
        return importlib.import_module(entry.module)
    except BackendUnavailable:
        raise
    except ImportError as e:
        raise BackendUnavailable(
            f"backend {canonical_name(name)!r} needs a framework that failed to import ({e}); install it with: "
            f"{entry.install}"
        ) from e


def _candidates() -> list[ModuleType]:
    out = []
    for name, entry in BACKENDS.items():
        if not entry.frameworks or any(f in sys.modules for f in entry.frameworks):
            try:
                out.append(get_backend(name))
            except BackendUnavailable:
                continue
    return out


def backend_of_model(model: Any) -> ModuleType | None:
    for backend in _candidates():
        if backend.owns_model(model):
            return backend
    return None


def backend_of_tensor(x: Any) -> ModuleType | None:
    for backend in _candidates():
        if backend.owns_tensor(x):
            return backend
    return None
