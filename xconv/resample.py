"""torch's ``nn.Upsample`` index and weight rules, in one place: each output row (column) of an upsampled map is a
weighted sum of at most two input rows (columns). Shape inference, the numpy reference, the Keras layer and the
importers all read the rules from here; nothing else computes a source index.

Per axis, with ``scale`` the user's scale factor or None (an explicit size):

* ``nearest``: src = min(floor(dst * r), in - 1) in float32 arithmetic, r = float32(1 / scale) (or
  float32(in / out) for a size); torch copies when out == in and takes dst // 2 when out == 2 * in, whatever r.
* ``nearest-exact``: src = min(floor((dst + 0.5) * r), in - 1), r as above, no special cases.
* ``bilinear``, ``align_corners=False``: half-pixel centres, src = max(r * (dst + 0.5) - 0.5, 0) with
  r = 1 / scale (or in / out) in float64; ``align_corners=True``: src = dst * (in - 1) / (out - 1) (0 for
  out == 1), the scale factor unused; an axis whose length does not change is copied (torch's rule, whatever the
  scale factor). Then i0 = floor(src), i1 = min(i0 + 1, in - 1), weights 1 - l and l with
  l = src - i0.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, NamedTuple

import numpy as np

if TYPE_CHECKING:
    from .spec import Upsample

__all__ = ["Taps", "matrix", "output_length", "taps"]


def output_length(size: int, out: int | None, scale: float | None) -> int:
    """The output length of one axis: ``out`` when given, else floor(size * scale) as torch computes it (a
    float64 product, truncated)."""
    if out is not None:
        return int(out)
    return math.floor(float(size) * float(scale))  # type: ignore[arg-type]


class Taps(NamedTuple):
    """For each output position along one axis: two source indices and their weights (w0 + w1 == 1)."""

    i0: np.ndarray
    i1: np.ndarray
    w0: np.ndarray
    w1: np.ndarray

    @property
    def nearest(self) -> bool:
        """Whether every output copies one input (the weights are 1 and 0)."""
        return bool((self.w1 == 0).all())


def _nearest(size: int, out: int, scale: float | None, exact: bool) -> np.ndarray:
    dst = np.arange(out)
    if not exact and out == size:
        return dst
    if not exact and out == 2 * size:
        return dst >> 1
    ratio = np.float32(1.0 / scale) if scale is not None else np.float32(size) / np.float32(out)
    position = (dst.astype(np.float32) + np.float32(0.5 if exact else 0.0)) * ratio  # float32, as torch's floorf
    index: np.ndarray = np.minimum(np.floor(position).astype(np.int64), size - 1)
    return index


def taps(size: int, out: int, mode: str, align_corners: bool | None, scale: float | None) -> Taps:
    """The taps of one axis of length ``size`` upsampled to ``out`` (see the module's rules)."""
    if mode in ("nearest", "nearest-exact"):
        src = _nearest(size, out, scale, mode == "nearest-exact")
        return Taps(src, src, np.ones(out), np.zeros(out))
    if mode != "bilinear":
        raise ValueError(f"unknown upsampling mode {mode!r}")
    dst = np.arange(out, dtype=np.float64)
    if out == size:  # torch copies an axis that keeps its length, whatever the scale factor
        position = dst
    elif align_corners:
        ratio = (size - 1) / (out - 1) if out > 1 else 0.0
        position = ratio * dst
    else:
        ratio = 1.0 / scale if scale is not None else size / out
        position = np.maximum(ratio * (dst + 0.5) - 0.5, 0.0)
    i0 = np.minimum(np.floor(position).astype(np.int64), size - 1)
    i1 = np.minimum(i0 + 1, size - 1)
    w1 = position - i0
    w1 = np.where(i1 == i0, 0.0, w1)  # at the last input both taps are the same pixel
    return Taps(i0, i1, 1.0 - w1, w1)


def matrix(t: Taps, size: int) -> np.ndarray:
    """The (out, size) interpolation matrix of one axis: row o holds w0 at i0 and w1 at i1 (float64)."""
    out = len(t.i0)
    a = np.zeros((out, size))
    rows = np.arange(out)
    np.add.at(a, (rows, t.i0), t.w0)
    np.add.at(a, (rows, t.i1), t.w1)
    return a


def layer_taps(layer: Upsample, input_hw: tuple[int, int], output_hw: tuple[int, int]) -> tuple[Taps, Taps]:
    """The (H, W) taps of an ``Upsample`` spec layer between these sizes."""
    factors = layer.scale_factor or (None, None)
    mode, corners = layer.mode, layer.align_corners
    return (
        taps(input_hw[0], output_hw[0], mode, corners, factors[0]),
        taps(input_hw[1], output_hw[1], mode, corners, factors[1]),
    )
