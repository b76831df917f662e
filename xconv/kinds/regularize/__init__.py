"""Regularisers, the identity in inference: Dropout and StochasticDepth."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ..._info import LayerInfo, elementwise
from ..._layer import Layer
from ..._normalize import (
    as_choice,
    as_float,
)
from .._numpy import Mode
from .._registry import register


@dataclass(frozen=True, repr=False)
class Dropout(Layer):
    """Zeroes each element with probability ``p`` in training and scales the rest by 1 / (1 - p); the identity
    in inference. ``p`` in [0, 1] (p = 1 zeroes everything, as in both frameworks).

    >>> Dropout(0.25)
    Dropout(0.25)
    """

    p: float = 0.5

    _positional = ("p",)

    def _validate(self) -> None:
        self._set("p", as_float("Dropout", "p", self.p, low=0.0, high=1.0))


@dataclass(frozen=True, repr=False)
class StochasticDepth(Layer):
    """torchvision's stochastic depth: the identity in inference; in training each sample (``mode="row"``) or
    the whole batch (``"batch"``) is zeroed with probability ``p`` and the rest scaled by 1 / (1 - p). Keras:
    ``Dropout(p, noise_shape=(None, 1, 1, 1))``.

    >>> StochasticDepth(0.1, "row")
    StochasticDepth(0.1)
    """

    p: float = 0.5
    mode: str = "row"

    _positional = ("p",)

    def _validate(self) -> None:
        self._set("p", as_float("StochasticDepth", "p", self.p, low=0.0, high=1.0))
        self._set("mode", as_choice("StochasticDepth", "mode", self.mode, ("row", "batch")))


def _dropout_forward(info: LayerInfo, p: Any, x: np.ndarray, mode: Mode) -> np.ndarray:
    if not mode.training or info.layer.p == 0:  # type: ignore[attr-defined]
        return x
    return x * mode.mask(x.shape, info.layer.p, x.dtype)  # type: ignore[attr-defined]


def _dropout_backward(info: LayerInfo, p: Any, x: np.ndarray, go: np.ndarray, mode: Mode) -> Any:
    if not mode.training or info.layer.p == 0:  # type: ignore[attr-defined]
        return go, {}
    return go * mode.mask(x.shape, info.layer.p, x.dtype), {}  # type: ignore[attr-defined]


def _stochastic_depth(info: LayerInfo, x: np.ndarray, mode: Mode, like: np.ndarray | None = None) -> np.ndarray:
    """Multiply by the per-sample (or whole-batch) keep mask scaled by 1 / (1 - p), in training only."""
    layer = info.layer
    if not mode.training or layer.p == 0:  # type: ignore[attr-defined]
        return x
    ref = x if like is None else like
    shape = (ref.shape[0] if layer.mode == "row" else 1,) + (1,) * (ref.ndim - 1)  # type: ignore[attr-defined]
    return x * mode.mask(shape, layer.p, ref.dtype)  # type: ignore[attr-defined]


_FORWARD: dict[type, Any] = {
    Dropout: _dropout_forward,
    StochasticDepth: lambda info, p, x, mode: _stochastic_depth(info, x, mode),
}


_BACKWARD: dict[type, Any] = {
    Dropout: _dropout_backward,
    StochasticDepth: lambda info, p, x, go, mode: (_stochastic_depth(info, go, mode, like=x), {}),
}


_RULES: dict[type, Any] = {Dropout: elementwise, StochasticDepth: elementwise}

for _kind in (
    Dropout,
    StochasticDepth,
):
    register(_kind, _RULES[_kind], {**_FORWARD}[_kind], {**_BACKWARD}[_kind], tokens=True)
