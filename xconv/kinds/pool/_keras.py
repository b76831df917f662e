"""Pooling: MaxPool2d, AvgPool2d and AdaptiveAvgPool2d: the Keras parts (built layers and their weight layouts, and the Keras layers that import as these
kinds)."""

from __future__ import annotations

from typing import Any

import numpy as np

from ... import layout
from ..._info import LayerInfo
from ...backends._tf_env import keras, tf
from ...errors import UnsupportedLayerError
from .._keras_names import keras_name
from . import (
    AdaptiveAvgPool2d,
    AvgPool2d,
    MaxPool2d,
    adaptive_windows,
    avgpool_divisor,
    pool_output_size,
    tap_slices,
)


def _maxpool(info: LayerInfo, x: Any, dtype: str) -> Any:
    layer: MaxPool2d = info.layer  # type: ignore[assignment]
    name = keras_name(info)
    if info.padding == ((0, 0), (0, 0)) and layer.dilation == (1, 1):
        return keras.layers.MaxPooling2D(layer.kernel_size, layer.stride, padding="valid", dtype=dtype, name=name)(x)
    # torch pads with -inf; Keras' 'same' and ZeroPadding2D would let a pad win over negative inputs
    return TorchMaxPool2D(
        layer.kernel_size, layer.stride, info.padding, layer.dilation, layer.ceil_mode, dtype=dtype, name=name
    )(x)


def _avgpool(info: LayerInfo, x: Any, dtype: str) -> Any:
    layer: AvgPool2d = info.layer  # type: ignore[assignment]
    name = keras_name(info)
    (kh, kw), (ph, pw) = layer.kernel_size, layer.padding
    divisor = avgpool_divisor(info)
    uniform = bool((divisor == kh * kw).all())
    if uniform and info.padding == ((0, 0), (0, 0)):
        return keras.layers.AveragePooling2D(layer.kernel_size, layer.stride, padding="valid", dtype=dtype, name=name)(
            x
        )
    if uniform and info.padding == ((ph, ph), (pw, pw)):
        x = keras.layers.ZeroPadding2D(info.padding, dtype=dtype, name=f"{name}_pad")(x)
        return keras.layers.AveragePooling2D(layer.kernel_size, layer.stride, padding="valid", dtype=dtype, name=name)(
            x
        )
    scale = None if uniform else (kh * kw / divisor).tolist()
    return TorchAvgPool2D(
        layer.kernel_size,
        layer.stride,
        info.padding,
        scale,
        layer.ceil_mode,
        layer.count_include_pad,
        dtype=dtype,
        name=name,
    )(x)


def _adaptive(info: LayerInfo, x: Any, dtype: str) -> Any:
    _, h, w = info.input_shape
    oh, ow = info.layer.output_size  # type: ignore[attr-defined]
    name = keras_name(info)
    if (oh, ow) == (1, 1):
        return keras.layers.GlobalAveragePooling2D(keepdims=True, dtype=dtype, name=name)(x)
    if h % oh == 0 and w % ow == 0:
        size = (h // oh, w // ow)
        return keras.layers.AveragePooling2D(size, size, padding="valid", dtype=dtype, name=name)(x)
    return AdaptiveAvgPool2D((oh, ow), (h, w), dtype=dtype, name=name)(x)


def _pair(v: Any) -> tuple[int, int]:
    return (int(v[0]), int(v[1]))


@keras.saving.register_keras_serializable(package="xconv")
class TorchMaxPool2D(keras.layers.Layer):
    """torch's MaxPool2d where Keras' MaxPooling2D has no equal: pads with -inf (``padding`` per side, the
    bottom / right including what ceil_mode's last window reaches), then a 'valid' max pool; with
    ``dilation`` > 1 the maximum over the dilated taps (strided slices), first maximum wins as in torch."""

    def __init__(
        self,
        kernel_size: Any,
        strides: Any,
        padding: Any,
        dilation: Any = (1, 1),
        ceil_mode: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.kernel_size, self.strides, self.dilation = _pair(kernel_size), _pair(strides), _pair(dilation)
        self.padding = tuple(_pair(p) for p in padding)
        self.ceil_mode = bool(ceil_mode)  # recorded for from_keras; the padding already holds its effect

    def call(self, x: Any) -> Any:
        (t, b), (l, r) = self.padding
        if t or b or l or r:
            x = tf.pad(x, [[0, 0], [t, b], [l, r], [0, 0]], constant_values=float("-inf"))
        (kh, kw), (sh, sw), (dh, dw) = self.kernel_size, self.strides, self.dilation
        if (dh, dw) == (1, 1):
            return tf.nn.max_pool2d(x, (kh, kw), (sh, sw), "VALID")
        out_hw = (
            pool_output_size(x.shape[1], kh, sh, 0, dh, False),
            pool_output_size(x.shape[2], kw, sw, 0, dw, False),
        )
        out = None
        for _, _, rows, cols in tap_slices(self.kernel_size, self.strides, self.dilation, out_hw):
            tap = x[:, rows, cols, :]
            out = tap if out is None else tf.maximum(out, tap)  # ties: the gradient goes to the earlier tap
        return out

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "kernel_size": self.kernel_size,
            "strides": self.strides,
            "padding": self.padding,
            "dilation": self.dilation,
            "ceil_mode": self.ceil_mode,
        }


@keras.saving.register_keras_serializable(package="xconv")
class TorchAvgPool2D(keras.layers.Layer):
    """torch's AvgPool2d where Keras' AveragePooling2D has no equal: zero padding (as TorchMaxPool2D), a
    'valid' average pool, then each position rescaled by kh*kw / torch's divisor (a precomputed constant:
    ``count_include_pad`` and ceil_mode's cut windows)."""

    def __init__(
        self,
        kernel_size: Any,
        strides: Any,
        padding: Any,
        scale: Any,
        ceil_mode: bool = False,
        count_include_pad: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.kernel_size, self.strides = _pair(kernel_size), _pair(strides)
        # recorded for from_keras; the padding and scale already hold their effect
        self.ceil_mode, self.count_include_pad = bool(ceil_mode), bool(count_include_pad)
        self.padding = tuple(_pair(p) for p in padding)
        self.scale = None if scale is None else [[float(v) for v in row] for row in scale]
        self._scale = None if scale is None else tf.constant(np.asarray(self.scale)[None, :, :, None], dtype=self.dtype)

    def call(self, x: Any) -> Any:
        (t, b), (l, r) = self.padding
        if t or b or l or r:
            x = tf.pad(x, [[0, 0], [t, b], [l, r], [0, 0]])
        y = tf.nn.avg_pool2d(x, self.kernel_size, self.strides, "VALID")
        return y if self._scale is None else y * self._scale

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "kernel_size": self.kernel_size,
            "strides": self.strides,
            "padding": self.padding,
            "scale": self.scale,
            "ceil_mode": self.ceil_mode,
            "count_include_pad": self.count_include_pad,
        }


@keras.saving.register_keras_serializable(package="xconv")
class AdaptiveAvgPool2D(keras.layers.Layer):
    """torch's AdaptiveAvgPool2d for sizes that do not divide evenly: the mean of each of torch's windows
    [floor(i*H/h), ceil((i+1)*H/h)), one slice per output position."""

    def __init__(self, output_size: Any, input_size: Any, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.output_size, self.input_size = _pair(output_size), _pair(input_size)

    def call(self, x: Any) -> Any:
        rows = adaptive_windows(self.input_size[0], self.output_size[0])
        cols = adaptive_windows(self.input_size[1], self.output_size[1])
        return tf.stack(
            [
                tf.stack([tf.reduce_mean(x[:, r0:r1, c0:c1, :], axis=(1, 2)) for c0, c1 in cols], axis=1)
                for r0, r1 in rows
            ],
            axis=1,
        )

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "output_size": self.output_size, "input_size": self.input_size}


BUILDERS: dict[type, Any] = {
    MaxPool2d: _maxpool,
    AvgPool2d: _avgpool,
    AdaptiveAvgPool2d: _adaptive,
}


def _same_pool(layer: Any, shape: tuple[int, ...], where: str) -> tuple[tuple[int, int], bool]:
    """torch padding and ceil_mode that give Keras' 'same' pooling windows for this input, or refuse."""

    pads, ceil = [], False
    for size, k, s in zip(shape[1:], layer.pool_size, layer.strides):
        before, after = layout.same_padding(size, k, s, 1)
        out = -(-size // s)
        ok = after - before in (0, 1) and before <= k // 2
        if ok:
            ceil = ceil or after > before
            ok = pool_output_size(size, k, s, before, 1, after > before) == out
        if not ok:
            raise UnsupportedLayerError(
                f"from_keras: {where}: padding='same' on input size {size} (kernel {k}, stride {s}) has no torch "
                "padding/ceil_mode with the same windows"
            )
        pads.append(before)
    return (pads[0], pads[1]), ceil


def _keras_pool(layer: Any, where: str, current: tuple[int, ...]) -> Any:
    k, st = tuple(layer.pool_size), tuple(layer.strides)
    padding, ceil = ((0, 0), False) if layer.padding == "valid" else _same_pool(layer, current, where)
    if isinstance(layer, keras.layers.MaxPooling2D):
        return MaxPool2d(k, st, padding, ceil_mode=ceil), {}
    return AvgPool2d(k, st, padding, ceil_mode=ceil, count_include_pad=False), {}  # Keras 'same' excludes pads


def _keras_torch_max_pool(layer: Any, where: str, current: tuple[int, ...]) -> Any:
    (t, _), (l, _) = layer.padding
    return MaxPool2d(layer.kernel_size, layer.strides, (t, l), layer.dilation, layer.ceil_mode), {}


def _keras_torch_avg_pool(layer: Any, where: str, current: tuple[int, ...]) -> Any:
    (t, _), (l, _) = layer.padding
    return AvgPool2d(layer.kernel_size, layer.strides, (t, l), layer.ceil_mode, layer.count_include_pad), {}


#: Keras layer class (exactly) -> (layer, where, its input's logical shape) -> (spec layer, Keras arrays)
KERAS_IMPORTS: dict[type, Any] = {
    keras.layers.MaxPooling2D: _keras_pool,
    keras.layers.AveragePooling2D: _keras_pool,
    TorchMaxPool2D: _keras_torch_max_pool,
    TorchAvgPool2D: _keras_torch_avg_pool,
    # the max over the whole map: one pooling window
    keras.layers.GlobalMaxPooling2D: lambda layer, where, current: (MaxPool2d((current[1], current[2])), {}),
    keras.layers.GlobalAveragePooling2D: lambda layer, where, current: (AdaptiveAvgPool2d(1), {}),
    AdaptiveAvgPool2D: lambda layer, where, current: (AdaptiveAvgPool2d(layer.output_size), {}),
}
