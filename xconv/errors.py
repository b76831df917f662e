"""Exceptions raised by xconv.

Every user-facing problem is an :class:`XconvError` (a ``ValueError``), so callers can catch one class.
A missing framework is a :class:`BackendUnavailable` (an ``ImportError``) carrying the install command.
"""

from __future__ import annotations

__all__ = ["BackendUnavailable", "PortError", "SpecError", "UnsupportedLayerError", "WeightError", "XconvError"]


class XconvError(ValueError):
    """Base class of every error xconv raises for bad input."""


class SpecError(XconvError):
    """A spec is invalid, or cannot be built exactly by a backend."""


class WeightError(XconvError):
    """Weights do not fit a model: missing or extra keys, wrong shapes or dtypes."""


class UnsupportedLayerError(XconvError):
    """A hand-written model holds a layer (or a graph shape) that xconv cannot import exactly."""


class PortError(XconvError):
    """A ported model does not compute the same function as its source (``port(..., verify=True)``)."""


class BackendUnavailable(ImportError):
    """The framework behind a backend is not installed or not usable."""
