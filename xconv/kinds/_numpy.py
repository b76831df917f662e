"""Helpers the numpy references of several kinds share."""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np


def per_channel(value: Any, x: np.ndarray) -> np.ndarray:
    """A number or one number per channel, shaped to broadcast over an NCHW (or (N, F)) batch."""
    v = np.asarray(value, dtype=x.dtype)
    return v.reshape((1, -1) + (1,) * (x.ndim - 2)) if v.ndim == 1 else v


class Mode(Protocol):
    """What a numpy reference is told of the model's state (the numpy backend's implementation)."""

    #: True in training: batch statistics, dropout masks
    @property
    def training(self) -> bool: ...

    #: whether this pass updates running statistics (a forward pass, not the forward inside a backward pass)
    update: bool

    def mask(self, shape: tuple[int, ...], p: float, dtype: Any) -> np.ndarray:
        """Dropout's keep-mask scaled by 1 / (1 - p): drawn on a forward pass, reused by the backward pass."""
        ...

    #: the model's padding mask for this call, (N, L), 1 for a token and 0 for padding (None: all tokens)
    @property
    def padding_mask(self) -> np.ndarray | None: ...

    #: the model's token types for this call, (N, L) integers (None: every token of type 0)
    @property
    def token_types(self) -> np.ndarray | None: ...
