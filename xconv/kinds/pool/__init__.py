"""Pooling: MaxPool2d, AvgPool2d and AdaptiveAvgPool2d."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from ..._info import LayerInfo, Shape, _Ctx
from ..._layer import Layer
from ..._normalize import (
    Pair,
    PairLike,
    as_bool,
    as_pair,
    compact,
)
from ...errors import SpecError
from .._numpy import Mode
from .._registry import register


def _pool_common(self: Any, me: str) -> None:
    self._set("kernel_size", as_pair(me, "kernel_size", self.kernel_size, minimum=1))
    stride = self.kernel_size if self.stride is None else self.stride
    if isinstance(stride, (list, tuple)) and len(stride) == 0:  # torch accepts stride=[] for "the kernel"
        stride = self.kernel_size
    self._set("stride", as_pair(me, "stride", stride, minimum=1))
    self._set("padding", as_pair(me, "padding", self.padding, minimum=0))
    self._set("ceil_mode", as_bool(me, "ceil_mode", self.ceil_mode))


@dataclass(frozen=True, repr=False)
class MaxPool2d(Layer):
    """Max pooling, PyTorch's vocabulary and defaults: ``stride`` defaults to ``kernel_size``; ``padding``
    (int or (ph, pw), symmetric, at most half the kernel) pads with -inf; ``ceil_mode`` keeps a last
    window that starts inside the input (or its left padding).

    >>> MaxPool2d(2)
    MaxPool2d(2)
    """

    kernel_size: Pair
    stride: Pair | None = None
    padding: Pair = (0, 0)
    dilation: Pair = (1, 1)
    ceil_mode: bool = False

    _positional = ("kernel_size",)
    _defaults_from: ClassVar[dict[str, str]] = {"stride": "kernel_size"}

    if TYPE_CHECKING:  # the spellings the constructor accepts; the fields hold their normal forms

        def __init__(
            self,
            kernel_size: PairLike,
            stride: PairLike | None = ...,
            padding: PairLike = ...,
            dilation: PairLike = ...,
            ceil_mode: bool = ...,
            *,
            name: str | None = ...,
            keys: Any = ...,
        ) -> None: ...

    def _validate(self) -> None:
        _pool_common(self, "MaxPool2d")
        self._set("dilation", as_pair("MaxPool2d", "dilation", self.dilation, minimum=1))
        for k, p in zip(self.kernel_size, self.padding):
            if p > k // 2:
                raise SpecError(
                    f"MaxPool2d: `padding` must be at most half of the kernel, as in torch. "
                    f"Received: padding={compact(self.padding)!r}, kernel_size={compact(self.kernel_size)!r}"
                )


@dataclass(frozen=True, repr=False)
class AvgPool2d(Layer):
    """Average pooling, PyTorch's vocabulary and defaults: zero ``padding`` (at most half the kernel), counted
    in the divisor when ``count_include_pad`` (torch's default; Keras' 'same' does not count pads);
    ``ceil_mode`` as in torch (the part of a last window beyond the padded input is never counted).

    >>> AvgPool2d(3, stride=2, padding=1, count_include_pad=False)
    AvgPool2d(3, stride=2, padding=1, count_include_pad=False)
    """

    kernel_size: Pair
    stride: Pair | None = None
    padding: Pair = (0, 0)
    ceil_mode: bool = False
    count_include_pad: bool = True

    _positional = ("kernel_size",)
    _defaults_from: ClassVar[dict[str, str]] = {"stride": "kernel_size"}

    if TYPE_CHECKING:  # the spellings the constructor accepts; the fields hold their normal forms

        def __init__(
            self,
            kernel_size: PairLike,
            stride: PairLike | None = ...,
            padding: PairLike = ...,
            ceil_mode: bool = ...,
            count_include_pad: bool = ...,
            *,
            name: str | None = ...,
            keys: Any = ...,
        ) -> None: ...

    def _validate(self) -> None:
        _pool_common(self, "AvgPool2d")
        self._set("count_include_pad", as_bool("AvgPool2d", "count_include_pad", self.count_include_pad))
        for k, p in zip(self.kernel_size, self.padding):
            if p > k // 2:
                raise SpecError(
                    f"AvgPool2d: `padding` must be at most half of the kernel, as in torch. "
                    f"Received: padding={compact(self.padding)!r}, kernel_size={compact(self.kernel_size)!r}"
                )


@dataclass(frozen=True, repr=False)
class AdaptiveAvgPool2d(Layer):
    """Average pooling to a fixed ``output_size`` (int or (h, w)) with torch's windows
    [floor(i*H/h), ceil((i+1)*H/h)). ``AdaptiveAvgPool2d(1)`` is global average pooling.

    >>> AdaptiveAvgPool2d(1)
    AdaptiveAvgPool2d(1)
    """

    output_size: Pair

    _positional = ("output_size",)

    if TYPE_CHECKING:  # the spellings the constructor accepts; the field holds the normal form

        def __init__(self, output_size: PairLike, *, name: str | None = ..., keys: Any = ...) -> None: ...

    def _validate(self) -> None:
        self._set("output_size", as_pair("AdaptiveAvgPool2d", "output_size", self.output_size, minimum=1))


def pool_output_size(size: int, k: int, s: int, p: int, d: int, ceil_mode: bool) -> int:
    """torch's pooling output length: floor (or ceil) of (size + 2p - d(k-1) - 1) / s, plus 1; with ceil_mode
    a last window must start inside the input or its left padding."""
    span = size + 2 * p - d * (k - 1) - 1
    out = (span + (s - 1 if ceil_mode else 0)) // s + 1
    if ceil_mode and (out - 1) * s >= size + p:
        out -= 1
    return out


def tap_slices(
    kernel: tuple[int, int], stride: tuple[int, int], dilation: tuple[int, int], out: tuple[int, int]
) -> list[tuple[int, int, slice, slice]]:
    """For each kernel tap (i, j) of a conv or pool over an already padded input: (i, j, rows, cols), the
    strided slices of that input it reads for ``out`` = (out_h, out_w) outputs, taps in row-major order."""
    (kh, kw), (sh, sw), (dh, dw), (ho, wo) = kernel, stride, dilation, out
    return [
        (i, j, slice(i * dh, i * dh + sh * (ho - 1) + 1, sh), slice(j * dw, j * dw + sw * (wo - 1) + 1, sw))
        for i in range(kh)
        for j in range(kw)
    ]


def layer_taps(info: LayerInfo) -> list[tuple[int, int, slice, slice]]:
    """:func:`tap_slices` of a Conv2d, MaxPool2d or AvgPool2d layer, on its input padded by ``info.padding``."""
    layer = info.layer
    dilation = getattr(layer, "dilation", (1, 1))
    return tap_slices(layer.kernel_size, layer.stride, dilation, info.output_shape[1:])  # type: ignore[attr-defined, arg-type]


def avgpool_counts(size: int, out: int, k: int, s: int, p: int, count_include_pad: bool) -> np.ndarray:
    """Per output position along one axis, how many positions torch's AvgPool2d divides by: the window
    [o*s - p, o*s - p + k) cut at the padded input's end (size + p), and also at the input's own edges unless
    ``count_include_pad``. The divisor of a 2-D window is the product of the two axes' counts."""
    starts = np.arange(out) * s - p
    ends = np.minimum(starts + k, size + p)
    if not count_include_pad:
        starts, ends = np.maximum(starts, 0), np.minimum(ends, size)
    return (ends - starts).astype(np.int64)


def adaptive_windows(size: int, out: int) -> list[tuple[int, int]]:
    """torch's AdaptiveAvgPool windows along one axis: [floor(i*size/out), ceil((i+1)*size/out))."""
    return [((i * size) // out, -(-((i + 1) * size) // out)) for i in range(out)]


def avgpool_divisor(info: LayerInfo) -> np.ndarray:
    """torch's AvgPool2d divisor for each output position (out_h, out_w): the product of the two axes'
    :func:`avgpool_counts`."""
    layer: AvgPool2d = info.layer  # type: ignore[assignment]
    assert layer.stride is not None  # the kernel size when not given
    counts = [
        avgpool_counts(size, out, k, s, p, layer.count_include_pad)
        for size, out, k, s, p in zip(
            info.input_shape[1:], info.output_shape[1:], layer.kernel_size, layer.stride, layer.padding
        )
    ]
    return np.outer(counts[0], counts[1])


def _pool(ctx: _Ctx, layer: MaxPool2d | AvgPool2d, source: Shape | None) -> LayerInfo:
    c, h, w = ctx.need_map()
    dilation = getattr(layer, "dilation", (1, 1))
    assert layer.stride is not None  # the kernel size when not given
    out, padding = [], []
    for axis, size, k, s, p, d in zip(
        ("height", "width"), (h, w), layer.kernel_size, layer.stride, layer.padding, dilation
    ):
        n = pool_output_size(size, k, s, p, d, layer.ceil_mode)
        if n < 1 or size + 2 * p < d * (k - 1) + 1:
            raise ctx.error(
                f"kernel {axis} {k} (dilated extent {d * (k - 1) + 1}) is larger than the padded input {axis} "
                f"{size + 2 * p} (input {size} + padding {p}+{p})"
            )
        extra = max(0, (n - 1) * s + d * (k - 1) + 1 - (size + 2 * p))
        empty = [o for o in range(n) if not any(0 <= o * s - p + j * d < size for j in range(k))]
        if empty:  # only possible with dilation: the taps step over the input
            raise ctx.error(
                f"the {axis} window at output position {empty[0]} reads only padding (kernel {k}, dilation {d}, "
                f"padding {p}, input {size}); torch would output -inf there"
            )
        out.append(n)
        padding.append((p, p + extra))
    return LayerInfo(ctx.index, layer, ctx.shape, (c, out[0], out[1]), {}, padding=(padding[0], padding[1]))


def _adaptive(ctx: _Ctx, layer: AdaptiveAvgPool2d, source: Shape | None) -> LayerInfo:
    c, _, _ = ctx.need_map()
    return LayerInfo(ctx.index, layer, ctx.shape, (c, *layer.output_size), {})


def _pool_pad(info: LayerInfo, x: np.ndarray, value: float) -> np.ndarray:
    (t, b), (l, r) = info.padding  # type: ignore[misc]
    return np.pad(x, ((0, 0), (0, 0), (t, b), (l, r)), constant_values=value)


def _unpad(info: LayerInfo, gxp: np.ndarray) -> np.ndarray:
    (t, _), (l, _) = info.padding  # type: ignore[misc]
    _, h, w = info.input_shape
    return gxp[:, :, t : t + h, l : l + w]


def _maxpool_forward(info: LayerInfo, p: Any, x: np.ndarray, mode: Mode) -> np.ndarray:
    xp = _pool_pad(info, x, -np.inf)
    out: np.ndarray = np.stack([xp[:, :, r, c] for _, _, r, c in layer_taps(info)]).max(axis=0)
    return out


def _maxpool_backward(info: LayerInfo, p: Any, x: np.ndarray, go: np.ndarray, mode: Mode) -> Any:
    # The gradient goes to the first maximum of each window in row-major tap order (torch's and TF's rule).
    xp = _pool_pad(info, x, -np.inf)
    taps = [(r, c) for _, _, r, c in layer_taps(info)]
    winner = np.stack([xp[:, :, r, c] for r, c in taps]).argmax(axis=0)
    gxp = np.zeros_like(xp)
    for t, (r, c) in enumerate(taps):
        gxp[:, :, r, c] += np.where(winner == t, go, 0)
    return _unpad(info, gxp), {}


def _avgpool_forward(info: LayerInfo, p: Any, x: np.ndarray, mode: Mode) -> np.ndarray:
    xp = _pool_pad(info, x, 0.0)
    total = sum(xp[:, :, r, c] for _, _, r, c in layer_taps(info))
    return total / avgpool_divisor(info).astype(x.dtype)


def _avgpool_backward(info: LayerInfo, p: Any, x: np.ndarray, go: np.ndarray, mode: Mode) -> Any:
    xp = _pool_pad(info, x, 0.0)
    share = go / avgpool_divisor(info).astype(x.dtype)
    gxp = np.zeros_like(xp)
    for _, _, r, c in layer_taps(info):
        gxp[:, :, r, c] += share
    return _unpad(info, gxp), {}


def _adaptive_forward(info: LayerInfo, p: Any, x: np.ndarray, mode: Mode) -> np.ndarray:
    _, h, w = info.input_shape
    _, ho, wo = info.output_shape
    out = np.empty((x.shape[0], *info.output_shape), dtype=x.dtype)
    for i, (r0, r1) in enumerate(adaptive_windows(h, ho)):
        for j, (c0, c1) in enumerate(adaptive_windows(w, wo)):
            out[:, :, i, j] = x[:, :, r0:r1, c0:c1].mean(axis=(2, 3))
    return out


def _adaptive_backward(info: LayerInfo, p: Any, x: np.ndarray, go: np.ndarray, mode: Mode) -> Any:
    _, h, w = info.input_shape
    _, ho, wo = info.output_shape
    gx = np.zeros_like(x)
    for i, (r0, r1) in enumerate(adaptive_windows(h, ho)):
        for j, (c0, c1) in enumerate(adaptive_windows(w, wo)):
            gx[:, :, r0:r1, c0:c1] += go[:, :, i : i + 1, j : j + 1] / ((r1 - r0) * (c1 - c0))
    return gx, {}


_RULES: dict[type, Any] = {
    MaxPool2d: _pool,
    AvgPool2d: _pool,
    AdaptiveAvgPool2d: _adaptive,
}


_FORWARD: dict[type, Any] = {
    MaxPool2d: _maxpool_forward,
    AvgPool2d: _avgpool_forward,
    AdaptiveAvgPool2d: _adaptive_forward,
}


_BACKWARD: dict[type, Any] = {
    MaxPool2d: _maxpool_backward,
    AvgPool2d: _avgpool_backward,
    AdaptiveAvgPool2d: _adaptive_backward,
}


for _kind in (
    MaxPool2d,
    AvgPool2d,
    AdaptiveAvgPool2d,
):
    register(_kind, _RULES[_kind], {**_FORWARD}[_kind], {**_BACKWARD}[_kind])
