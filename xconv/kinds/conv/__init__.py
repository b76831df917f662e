"""Convolutions: Conv2d and ConvTranspose2d."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, cast

import numpy as np

from ... import layout
from ..._info import LayerInfo, Shape, _Ctx
from ..._layer import PADDING_MODES, Layer
from ..._normalize import (
    Padding,
    PaddingLike,
    Pair,
    PairLike,
    as_bool,
    as_choice,
    as_int,
    as_padding,
    as_pair,
)
from ...errors import SpecError
from ...layout import same_padding
from .._numpy import Mode
from .._registry import register
from ..pool import layer_taps, tap_slices


@dataclass(frozen=True, repr=False)
class Conv2d(Layer):
    """2-D convolution, PyTorch's vocabulary and defaults.

    ``kernel_size``, ``stride``, ``dilation``: int or (h, w). ``padding``: int, (ph, pw),
    ((top, bottom), (left, right)), ``"valid"`` (stored as zeros) or ``"same"`` (TensorFlow's rule at every
    stride: the extra pixel goes bottom/right). ``padding_mode``: zeros, reflect, replicate or circular.

    >>> Conv2d(3, 32, kernel_size=5, padding=2)
    Conv2d(3, 32, kernel_size=5, padding=2)
    """

    in_channels: int
    out_channels: int
    kernel_size: Pair
    stride: Pair = (1, 1)
    padding: Padding | str = ((0, 0), (0, 0))
    dilation: Pair = (1, 1)
    groups: int = 1
    bias: bool = True
    padding_mode: str = "zeros"

    _positional = ("in_channels", "out_channels")

    if TYPE_CHECKING:  # the spellings the constructor accepts; the fields hold their normal forms

        def __init__(
            self,
            in_channels: int,
            out_channels: int,
            kernel_size: PairLike,
            stride: PairLike = ...,
            padding: PaddingLike | str = ...,
            dilation: PairLike = ...,
            groups: int = ...,
            bias: bool = ...,
            padding_mode: str = ...,
            *,
            name: str | None = ...,
            keys: Any = ...,
        ) -> None: ...

    def _validate(self) -> None:
        me = "Conv2d"
        self._set("in_channels", as_int(me, "in_channels", self.in_channels, minimum=1))
        self._set("out_channels", as_int(me, "out_channels", self.out_channels, minimum=1))
        self._set("kernel_size", as_pair(me, "kernel_size", self.kernel_size, minimum=1))
        self._set("stride", as_pair(me, "stride", self.stride, minimum=1))
        self._set("padding", as_padding(me, self.padding))
        self._set("dilation", as_pair(me, "dilation", self.dilation, minimum=1))
        self._set("groups", as_int(me, "groups", self.groups, minimum=1))
        self._set("bias", as_bool(me, "bias", self.bias))
        self._set("padding_mode", as_choice(me, "padding_mode", self.padding_mode, PADDING_MODES))
        for name in ("in_channels", "out_channels"):
            if getattr(self, name) % self.groups:
                raise SpecError(
                    f"Conv2d: `{name}` (={getattr(self, name)}) must be divisible by `groups` (={self.groups})"
                )


@dataclass(frozen=True, repr=False)
class ConvTranspose2d(Layer):
    """torch's ``nn.ConvTranspose2d``: weight (in_channels, out_channels // groups, kh, kw), the output
    (in - 1) * stride - 2 * padding + dilation * (k - 1) + output_padding + 1 per axis. ``padding`` crops that
    many positions from both ends of the full output; ``output_padding`` (smaller than the stride or the
    dilation, as torch requires) adds positions at the bottom / right.

    >>> ConvTranspose2d(4, 2, 3, stride=2, padding=1, output_padding=1)
    ConvTranspose2d(4, 2, kernel_size=3, stride=2, padding=1, output_padding=1)
    """

    in_channels: int
    out_channels: int
    kernel_size: Pair
    stride: Pair = (1, 1)
    padding: Pair = (0, 0)
    output_padding: Pair = (0, 0)
    groups: int = 1
    bias: bool = True
    dilation: Pair = (1, 1)

    _positional = ("in_channels", "out_channels")

    if TYPE_CHECKING:  # the spellings the constructor accepts; the fields hold their normal forms

        def __init__(
            self,
            in_channels: int,
            out_channels: int,
            kernel_size: PairLike,
            stride: PairLike = ...,
            padding: PairLike = ...,
            output_padding: PairLike = ...,
            groups: int = ...,
            bias: bool = ...,
            dilation: PairLike = ...,
            *,
            name: str | None = ...,
            keys: Any = ...,
        ) -> None: ...

    def _validate(self) -> None:
        me = "ConvTranspose2d"
        self._set("in_channels", as_int(me, "in_channels", self.in_channels, minimum=1))
        self._set("out_channels", as_int(me, "out_channels", self.out_channels, minimum=1))
        self._set("kernel_size", as_pair(me, "kernel_size", self.kernel_size, minimum=1))
        self._set("stride", as_pair(me, "stride", self.stride, minimum=1))
        if isinstance(self.padding, str):
            raise SpecError(
                f"{me}: `padding` must be an int or (ph, pw); torch's transposed convs take no "
                f"'same' or 'valid'. Received: padding={self.padding!r}"
            )
        self._set("padding", as_pair(me, "padding", self.padding, minimum=0))
        self._set("output_padding", as_pair(me, "output_padding", self.output_padding, minimum=0))
        self._set("groups", as_int(me, "groups", self.groups, minimum=1))
        self._set("bias", as_bool(me, "bias", self.bias))
        self._set("dilation", as_pair(me, "dilation", self.dilation, minimum=1))
        for op, s, d in zip(self.output_padding, self.stride, self.dilation):
            if op >= s and op >= d:
                raise SpecError(
                    f"{me}: `output_padding` must be smaller than either `stride` or `dilation`, as in "
                    f"torch. Received: output_padding={self.output_padding}, stride={self.stride}, "
                    f"dilation={self.dilation}"
                )
        for name in ("in_channels", "out_channels"):
            if getattr(self, name) % self.groups:
                raise SpecError(
                    f"{me}: `{name}` (={getattr(self, name)}) must be divisible by `groups` (={self.groups})"
                )


def _conv2d(ctx: _Ctx, layer: Conv2d, source: Shape | None) -> LayerInfo:
    c, h, w = ctx.need_map()
    if c != layer.in_channels:
        raise ctx.error(f"in_channels={layer.in_channels} but its input has {c} channels (input shape {ctx.shape})")
    (kh, kw), (sh, sw), (dh, dw) = layer.kernel_size, layer.stride, layer.dilation
    if layer.padding == "same":
        padding: Padding = (same_padding(h, kh, sh, dh), same_padding(w, kw, sw, dw))
    else:
        padding = layer.padding  # type: ignore[assignment]
    out = []
    for axis, size, (before, after), k, s, d in (
        ("height", h, padding[0], kh, sh, dh),
        ("width", w, padding[1], kw, sw, dw),
    ):
        mode = layer.padding_mode
        if mode == "reflect" and max(before, after) >= size:
            raise ctx.error(
                f"reflect padding needs each pad smaller than the input {axis}; padding {axis} "
                f"({before}, {after}) vs input {axis} {size}"
            )
        if mode == "circular" and max(before, after) > size:
            raise ctx.error(
                f"circular padding needs each pad at most the input {axis}; padding {axis} "
                f"({before}, {after}) vs input {axis} {size}"
            )
        extent = (k - 1) * d + 1
        padded = size + before + after
        if extent > padded:
            raise ctx.error(
                f"kernel {axis} {k} (dilated extent {extent}) is larger than the padded input {axis} {padded} "
                f"(input {size} + padding {before}+{after})"
            )
        out.append((padded - extent) // s + 1)
    params: dict[str, Shape] = {"weight": (layer.out_channels, c // layer.groups, kh, kw)}
    if layer.bias:
        params["bias"] = (layer.out_channels,)
    return LayerInfo(ctx.index, layer, ctx.shape, (layer.out_channels, out[0], out[1]), params, padding=padding)


def conv_transpose_length(size: int, k: int, s: int, p: int, op: int, d: int) -> int:
    """torch's transposed-conv output length: (size - 1) * s - 2p + d(k - 1) + op + 1."""
    return (size - 1) * s - 2 * p + d * (k - 1) + op + 1


def _conv_transpose(ctx: _Ctx, layer: ConvTranspose2d, source: Shape | None) -> LayerInfo:
    c, h, w = ctx.need_map()
    if c != layer.in_channels:
        raise ctx.error(f"in_channels={layer.in_channels} but its input has {c} channels (input shape {ctx.shape})")
    out = [
        conv_transpose_length(n, k, s, p, op, d)
        for n, k, s, p, op, d in zip(
            (h, w), layer.kernel_size, layer.stride, layer.padding, layer.output_padding, layer.dilation
        )
    ]
    if min(out) < 1:
        raise ctx.error(f"padding={layer.padding} crops the whole output (input {(h, w)}, output {tuple(out)})")
    params: dict[str, Shape] = {"weight": (c, layer.out_channels // layer.groups, *layer.kernel_size)}
    if layer.bias:
        params["bias"] = (layer.out_channels,)
    return LayerInfo(ctx.index, layer, ctx.shape, (layer.out_channels, out[0], out[1]), params)


_NP_PAD_MODES: dict[str, Literal["constant", "reflect", "edge", "wrap"]] = {
    "zeros": "constant",
    "reflect": "reflect",
    "replicate": "edge",
    "circular": "wrap",
}


def _pad(info: LayerInfo, x: np.ndarray) -> np.ndarray:
    assert info.padding is not None  # a conv's explicit padding, resolved by shape inference
    (t, b), (l, r) = info.padding
    mode = _NP_PAD_MODES[cast(Conv2d, info.layer).padding_mode]
    padded: np.ndarray = np.pad(x, ((0, 0), (0, 0), (t, b), (l, r)), mode=mode)
    return padded


def _conv_forward(info: LayerInfo, p: dict[str, np.ndarray], x: np.ndarray, mode: Mode) -> np.ndarray:
    layer: Conv2d = info.layer  # type: ignore[assignment]
    w, g = p["weight"], layer.groups
    xp = _pad(info, x)
    n = x.shape[0]
    cin, cout = layer.in_channels // g, layer.out_channels // g
    out = np.zeros((n, *info.output_shape), dtype=x.dtype)
    for group in range(g):
        xs = xp[:, group * cin : (group + 1) * cin]
        ws = w[group * cout : (group + 1) * cout]
        for i, j, rows, cols in layer_taps(info):
            out[:, group * cout : (group + 1) * cout] += np.einsum(
                "nchw,oc->nohw", xs[:, :, rows, cols], ws[:, :, i, j]
            )
    if "bias" in p:
        out += p["bias"][None, :, None, None]
    return out


def _conv_backward(info: LayerInfo, p: dict[str, np.ndarray], x: np.ndarray, go: np.ndarray, mode: Mode) -> Any:
    layer: Conv2d = info.layer  # type: ignore[assignment]
    w, g = p["weight"], layer.groups
    xp = _pad(info, x)
    cin, cout = layer.in_channels // g, layer.out_channels // g
    gxp = np.zeros_like(xp)
    gw = np.zeros_like(w)
    for group in range(g):
        ci, co = slice(group * cin, (group + 1) * cin), slice(group * cout, (group + 1) * cout)
        for i, j, rows, cols in layer_taps(info):
            gw[co, :, i, j] += np.einsum("nohw,nchw->oc", go[:, co], xp[:, ci, rows, cols])
            gxp[:, ci, rows, cols] += np.einsum("nohw,oc->nchw", go[:, co], w[co, :, i, j])
    # Un-pad: every padded position came from one input position (or from a zero), so gradients add up there.
    (t, b), (l, r) = info.padding  # type: ignore[misc]
    _, h, wd = x.shape[1:]
    if layer.padding_mode == "zeros":
        gx = gxp[:, :, t : t + h, l : l + wd]
    else:
        rows_src = layout.pad_indices(h, t, b, layer.padding_mode)
        cols_src = layout.pad_indices(wd, l, r, layer.padding_mode)
        gx_rows = np.zeros((*gxp.shape[:2], h, gxp.shape[3]), dtype=gxp.dtype)
        np.add.at(gx_rows, (slice(None), slice(None), rows_src), gxp)  # type: ignore[arg-type]  # numpy accepts slices
        gx = np.zeros(x.shape, dtype=gxp.dtype)
        np.add.at(gx, (slice(None), slice(None), slice(None), cols_src), gx_rows)  # type: ignore[arg-type]  # numpy accepts slices
    grads = {"weight": gw}
    if "bias" in p:
        grads["bias"] = go.sum(axis=(0, 2, 3))
    return gx, grads


def _convt_parts(info: LayerInfo, x: np.ndarray) -> tuple[Any, list[Any], tuple[int, ...]]:
    """(layer, per-tap (i, j, rows, cols) slices of the full output, the full output's shape)."""
    layer: ConvTranspose2d = info.layer  # type: ignore[assignment]
    taps = tap_slices(layer.kernel_size, layer.stride, layer.dilation, info.input_shape[1:])  # type: ignore[arg-type]
    full = [
        (n - 1) * s + d * (k - 1) + 1 + op
        for n, s, d, k, op in zip(
            info.input_shape[1:], layer.stride, layer.dilation, layer.kernel_size, layer.output_padding
        )
    ]
    return layer, taps, (x.shape[0], layer.out_channels, *full)


def _convt_forward(info: LayerInfo, p: dict[str, np.ndarray], x: np.ndarray, mode: Mode) -> np.ndarray:
    layer, taps, full = _convt_parts(info, x)
    g, w = layer.groups, p["weight"]
    cin, cout = layer.in_channels // g, layer.out_channels // g
    y = np.zeros(full, dtype=x.dtype)
    for group in range(g):
        ci, co = slice(group * cin, (group + 1) * cin), slice(group * cout, (group + 1) * cout)
        for i, j, rows, cols in taps:
            y[:, co, rows, cols] += np.einsum("nchw,co->nohw", x[:, ci], w[ci, :, i, j])
    (ph, pw), (ho, wo) = layer.padding, info.output_shape[1:]
    y = y[:, :, ph : ph + ho, pw : pw + wo]
    return y + p["bias"][None, :, None, None] if "bias" in p else y


def _convt_backward(info: LayerInfo, p: dict[str, np.ndarray], x: np.ndarray, go: np.ndarray, mode: Mode) -> Any:
    layer, taps, full = _convt_parts(info, x)
    g, w = layer.groups, p["weight"]
    cin, cout = layer.in_channels // g, layer.out_channels // g
    (ph, pw), (ho, wo) = layer.padding, info.output_shape[1:]
    gfull = np.zeros(full, dtype=go.dtype)
    gfull[:, :, ph : ph + ho, pw : pw + wo] = go
    gx, gw = np.zeros_like(x), np.zeros_like(w)
    for group in range(g):
        ci, co = slice(group * cin, (group + 1) * cin), slice(group * cout, (group + 1) * cout)
        for i, j, rows, cols in taps:
            gx[:, ci] += np.einsum("nohw,co->nchw", gfull[:, co, rows, cols], w[ci, :, i, j])
            gw[ci, :, i, j] += np.einsum("nchw,nohw->co", x[:, ci], gfull[:, co, rows, cols])
    grads = {"weight": gw}
    if "bias" in p:
        grads["bias"] = go.sum(axis=(0, 2, 3))
    return gx, grads


_RULES: dict[type, Any] = {
    Conv2d: _conv2d,
    ConvTranspose2d: _conv_transpose,
}


_FORWARD: dict[type, Any] = {
    Conv2d: _conv_forward,
    ConvTranspose2d: _convt_forward,
}


_BACKWARD: dict[type, Any] = {
    Conv2d: _conv_backward,
    ConvTranspose2d: _convt_backward,
}


for _kind in (
    Conv2d,
    ConvTranspose2d,
):
    register(_kind, _RULES[_kind], {**_FORWARD}[_kind], {**_BACKWARD}[_kind])
