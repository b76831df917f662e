"""Exceptions raised by xconv.

Every user-facing problem is an :class:`XconvError` (a ``ValueError``), so callers can catch one class.
A missing framework is a :class:`BackendUnavailable` (an ``ImportError``) carrying the install command.
"""

from __future__ import annotations

__all__ = ["BackendUnavailable", "PortError", "SpecError", "UnsupportedLayerError", "WeightError", "XconvError"]


class XconvError(ValueError):
    """Base class of every error xconv raises for bad input.

    >>> import xconv as xc
    >>> try:
    ...     xc.Conv2d(3, 8, kernel_size=0)
    ... except xc.XconvError as e:  # SpecError is one
    ...     print(type(e).__name__)
    SpecError
    """


class SpecError(XconvError):
    """A spec is invalid, or cannot be built exactly by a backend.

    >>> import xconv as xc
    >>> try:
    ...     xc.infer(xc.Sequential(xc.Conv2d(3, 8, 3), xc.Linear(10, 2), input_shape=(3, 8, 8)))
    ... except xc.SpecError as e:
    ...     print(e)
    layer 1 (Linear): needs a flat input but its input has shape (8, 6, 6); add Flatten() before it
    """


class WeightError(XconvError):
    """Weights do not fit a model: missing or extra keys, wrong shapes or dtypes.

    >>> import numpy as np, xconv as xc
    >>> model = xc.build(xc.Sequential(xc.Conv2d(3, 8, 3), input_shape=(3, 8, 8)), "numpy")
    >>> try:
    ...     xc.set_weights(model, {"0.weight": np.zeros((8, 3, 3, 3))})
    ... except xc.WeightError as e:
    ...     print("missing '0.bias'" in str(e))
    True
    """


class UnsupportedLayerError(XconvError):
    """A hand-written model holds a layer (or a graph shape) that xconv cannot import exactly.

    >>> import torch, xconv as xc
    >>> try:
    ...     xc.from_torch(torch.nn.Sequential(torch.nn.Conv2d(1, 1, 1), torch.nn.Softplus()), (1, 4, 4))
    ... except xc.UnsupportedLayerError as e:
    ...     print(str(e)[:56])
    from_torch: module '1' (Softplus) is not supported; supp
    """


class PortError(XconvError):
    """A ported model does not compute the same function as its source (``port(..., verify=True)``).

    >>> import xconv as xc
    >>> issubclass(xc.PortError, xc.XconvError)  # raised by port(verify=True) when the models differ
    True
    """


class BackendUnavailable(ImportError):
    """The framework behind a backend is not installed or not usable.

    >>> import xconv as xc
    >>> issubclass(xc.BackendUnavailable, ImportError)  # e.g. KERAS_BACKEND set to another backend than tensorflow
    True
    """
