"""Exceptions raised by xconv.

Every user-facing problem is an :class:`XconvError` (a ``ValueError``), so callers can catch one class.
A missing framework is a :class:`BackendUnavailable` (an ``ImportError``) carrying the install command.
"""

from __future__ import annotations

__all__ = ["XconvError", "SpecError", "WeightError", "BackendUnavailable"]


class XconvError(ValueError):
    """Base class of every error xconv raises for bad input."""


class SpecError(XconvError):
    """A spec is invalid, or cannot be built exactly by a backend."""


class WeightError(XconvError):
    """Weights do not fit a model: missing or extra keys, wrong shapes or dtypes."""


class BackendUnavailable(ImportError):
    """The framework behind a backend is not installed or not usable."""
