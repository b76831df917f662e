"""Resampling: Upsample."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from ... import resample
from ..._info import LayerInfo, Shape, _Ctx
from ..._layer import Layer
from ..._normalize import (
    Pair,
    PairLike,
    as_bool,
    as_choice,
    as_float,
    as_pair,
)
from ...errors import SpecError
from .._numpy import Mode
from .._registry import register

UPSAMPLE_MODES = ("nearest", "nearest-exact", "bilinear")


def _factors(value: Any) -> tuple[float, float]:
    if isinstance(value, (list, tuple)):
        if len(value) != 2:
            raise SpecError(
                f"Upsample: `scale_factor` must be a number or a pair (h, w). Received: scale_factor={value!r}"
            )
        h, w = value
    else:
        h = w = value
    return (
        as_float("Upsample", "scale_factor", h, low=0.0, low_open=True),
        as_float("Upsample", "scale_factor", w, low=0.0, low_open=True),
    )


@dataclass(frozen=True, repr=False)
class Upsample(Layer):
    """torch's ``nn.Upsample`` on a (C, H, W) map: exactly one of ``size`` (int or (h, w)) and ``scale_factor``
    (a positive number or (h, w); the output is floor(input * factor) and the source positions use 1 / factor,
    torch's default ``recompute_scale_factor=None``). ``mode``: "nearest" (torch's floor rule), "nearest-exact"
    (half-pixel centres: TensorFlow's nearest resize) or "bilinear" with ``align_corners`` False (half-pixel
    centres, the default) or True. The index rules live in :mod:`xconv.resample`.

    >>> Upsample(scale_factor=2)
    Upsample(scale_factor=2.0)
    >>> Upsample((7, 9), mode="bilinear", align_corners=True)
    Upsample(size=(7, 9), mode='bilinear', align_corners=True)
    """

    size: Pair | None = None
    scale_factor: tuple[float, float] | None = None
    mode: str = "nearest"
    align_corners: bool | None = None

    if TYPE_CHECKING:  # the spellings the constructor accepts; the fields hold their normal forms

        def __init__(
            self,
            size: PairLike | None = ...,
            scale_factor: float | Sequence[float] | None = ...,
            mode: str = ...,
            align_corners: bool | None = ...,
            *,
            name: str | None = ...,
            keys: Any = ...,
        ) -> None: ...

    def _validate(self) -> None:
        me = "Upsample"
        if (self.size is None) == (self.scale_factor is None):
            raise SpecError(
                f"{me}: give exactly one of `size` and `scale_factor`, as in torch. Received: "
                f"size={self.size!r}, scale_factor={self.scale_factor!r}"
            )
        if self.size is not None:
            self._set("size", as_pair(me, "size", self.size, minimum=1))
        else:
            self._set("scale_factor", _factors(self.scale_factor))
        self._set("mode", as_choice(me, "mode", self.mode, UPSAMPLE_MODES))
        if self.mode == "bilinear":
            self._set(
                "align_corners",
                False if self.align_corners is None else as_bool(me, "align_corners", self.align_corners),
            )
        elif self.align_corners is not None:
            raise SpecError(
                f"{me}: `align_corners` applies to mode='bilinear' only, as in torch. Received: "
                f"mode={self.mode!r}, align_corners={self.align_corners!r}"
            )


def _upsample(ctx: _Ctx, layer: Upsample, source: Shape | None) -> LayerInfo:

    c, h, w = ctx.need_map()
    sizes = layer.size or (None, None)
    factors = layer.scale_factor or (None, None)
    out = [resample.output_length(n, o, s) for n, o, s in zip((h, w), sizes, factors)]
    if min(out) < 1:
        raise ctx.error(
            f"scale_factor={layer.scale_factor} gives an empty output for input size {(h, w)} "
            f"(floor(size * factor) = {tuple(out)})"
        )
    return LayerInfo(ctx.index, layer, ctx.shape, (c, out[0], out[1]), {})


def _upsample_matrices(info: LayerInfo, dtype: Any) -> list[np.ndarray]:
    hw_in, hw_out = info.input_shape[1:], info.output_shape[1:]
    return [resample.matrix(t, n).astype(dtype) for t, n in zip(resample.layer_taps(info.layer, hw_in, hw_out), hw_in)]  # type: ignore[arg-type]


def _upsample_forward(info: LayerInfo, p: Any, x: np.ndarray, mode: Mode) -> np.ndarray:
    a_h, a_w = _upsample_matrices(info, x.dtype)
    out: np.ndarray = np.einsum("oh,nchw,pw->ncop", a_h, x, a_w)
    return out


def _upsample_backward(info: LayerInfo, p: Any, x: np.ndarray, go: np.ndarray, mode: Mode) -> Any:
    a_h, a_w = _upsample_matrices(info, x.dtype)
    return np.einsum("oh,ncop,pw->nchw", a_h, go, a_w), {}


_RULES: dict[type, Any] = {
    Upsample: _upsample,
}


_FORWARD: dict[type, Any] = {
    Upsample: _upsample_forward,
}


_BACKWARD: dict[type, Any] = {
    Upsample: _upsample_backward,
}


for _kind in (Upsample,):
    register(_kind, _RULES[_kind], {**_FORWARD}[_kind], {**_BACKWARD}[_kind])
