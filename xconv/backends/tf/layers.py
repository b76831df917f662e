"""xconv's own Keras layers: exact compositions of native ops for torch semantics that Keras layers lack.
Registered as serialisable (package "xconv") so ``.keras`` files that use them load."""

from __future__ import annotations

from typing import Any

import numpy as np

from ... import layout, resample
from ...shapes import adaptive_windows, pool_output_size, tap_slices
from ._env import keras, tf

__all__ = [
    "AdaptiveAvgPool2D",
    "ChannelNormalization",
    "ChannelRescaling",
    "GatherPad2D",
    "GroupedConv2D",
    "Subsample2D",
    "TorchActivation",
    "TorchAvgPool2D",
    "TorchBatchNorm",
    "TorchConvTranspose2D",
    "TorchMaxPool2D",
    "TorchUpsample2D",
]


@keras.saving.register_keras_serializable(package="xconv")
class GatherPad2D(keras.layers.Layer):
    """Pads H and W by gathering precomputed source indices: torch's 'reflect', 'replicate' and 'circular'
    padding with native ops (tf.pad has no replicate or circular mode)."""

    def __init__(self, padding: Any, size: Any, mode: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.padding = tuple(tuple(int(v) for v in p) for p in padding)
        self.size = tuple(int(v) for v in size)
        self.mode = mode
        (t, b), (l, r) = self.padding
        self._rows = tf.constant(layout.pad_indices(self.size[0], t, b, mode), dtype=tf.int32)
        self._cols = tf.constant(layout.pad_indices(self.size[1], l, r, mode), dtype=tf.int32)

    def call(self, x: Any) -> Any:
        return tf.gather(tf.gather(x, self._rows, axis=1), self._cols, axis=2)

    def compute_output_shape(self, input_shape: Any) -> Any:
        (t, b), (l, r) = self.padding
        n, h, w, c = input_shape
        return (n, h + t + b, w + l + r, c)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "padding": self.padding, "size": self.size, "mode": self.mode}


@keras.saving.register_keras_serializable(package="xconv")
class Subsample2D(keras.layers.Layer):
    """Keeps every ``strides``-th row and column: a stride-1 dilated conv followed by this equals the strided
    dilated conv that Keras refuses (``strides > 1`` with ``dilation_rate > 1``)."""

    def __init__(self, strides: Any, before_conv: bool = False, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.strides = tuple(int(s) for s in strides)
        #: True when it feeds a 1x1 conv (a strided 1x1 conv), False when it follows a conv (stride + dilation)
        self.before_conv = bool(before_conv)

    def call(self, x: Any) -> Any:
        return x[:, :: self.strides[0], :: self.strides[1], :]

    def compute_output_shape(self, input_shape: Any) -> Any:
        n, h, w, c = input_shape
        sh, sw = self.strides
        return (n, None if h is None else -(-h // sh), None if w is None else -(-w // sw), c)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "strides": self.strides, "before_conv": self.before_conv}


@keras.saving.register_keras_serializable(package="xconv")
class GroupedConv2D(keras.layers.Conv2D):
    """``keras.layers.Conv2D`` whose grouped convolution runs as one ``tf.nn.convolution`` per group,
    concatenated. Same kernel, bias and config as Conv2D. Keras' own grouped path compiles with XLA on CPU,
    which in TF 2.21 returns non-finite gradients for one-tap dilated kernels and was the frame of the
    remaining intermittent aborts seen in the gradient property test."""

    def convolution_op(self, inputs: Any, kernel: Any) -> Any:
        if self.groups == 1:
            return super().convolution_op(inputs, kernel)
        pieces = zip(tf.split(inputs, self.groups, axis=-1), tf.split(kernel, self.groups, axis=-1))
        return tf.concat(
            [
                tf.nn.convolution(
                    x, k, strides=self.strides, padding=self.padding.upper(), dilations=self.dilation_rate
                )
                for x, k in pieces
            ],
            axis=-1,
        )


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


@keras.saving.register_keras_serializable(package="xconv")
class TorchBatchNorm(keras.layers.BatchNormalization):
    """``keras.layers.BatchNormalization`` with torch's training rule: normalise with the biased batch
    variance, but update ``moving_variance`` with the unbiased one (n / (n - 1)), count
    ``num_batches_tracked`` (an int64 variable), and with ``torch_momentum=None`` use torch's cumulative
    average (factor 1 / num_batches_tracked). ``momentum`` (Keras' convention) is 1 - torch_momentum.
    Without ``track_running_stats`` it always normalises with batch statistics, as torch does. Inference
    (``training=False``, or ``trainable=False`` as in Keras) is the parent's own computation."""

    def __init__(self, torch_momentum: float | None = 0.1, track_running_stats: bool = True, **kwargs: Any) -> None:
        kwargs.setdefault("momentum", 1.0 - (0.1 if torch_momentum is None else torch_momentum))
        super().__init__(**kwargs)
        self.torch_momentum = None if torch_momentum is None else float(torch_momentum)
        self.track_running_stats = bool(track_running_stats)

    def build(self, input_shape: Any) -> None:
        super().build(input_shape)
        self.num_batches_tracked = self.add_weight(
            shape=(), dtype="int64", initializer="zeros", trainable=False, name="num_batches_tracked"
        )

    def call(self, inputs: Any, training: Any = None, mask: Any = None) -> Any:
        batch_stats = bool(training and self.trainable) or not self.track_running_stats
        if not batch_stats:
            return super().call(inputs, training=False, mask=mask)
        x = tf.convert_to_tensor(inputs)
        axes = list(range(len(x.shape) - 1))
        mean, variance = tf.nn.moments(x, axes)
        if training and self.trainable and self.track_running_stats:
            n = tf.cast(tf.size(x) // tf.shape(x)[-1], x.dtype)
            self.num_batches_tracked.assign_add(1)
            if self.torch_momentum is None:
                f = 1.0 / tf.cast(self.num_batches_tracked, x.dtype)
            else:
                f = tf.constant(self.torch_momentum, dtype=x.dtype)
            one = tf.constant(1.0, dtype=x.dtype)
            self.moving_mean.assign((one - f) * self.moving_mean + f * mean)
            self.moving_variance.assign((one - f) * self.moving_variance + f * variance * (n / (n - one)))
        return keras.ops.batch_normalization(
            x,
            mean,
            variance,
            axis=-1,
            offset=self.beta if self.center else None,
            scale=self.gamma if self.scale else None,
            epsilon=self.epsilon,
        )

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "torch_momentum": self.torch_momentum,
            "track_running_stats": self.track_running_stats,
        }


_SQRT1_2 = 0.7071067811865476
_SQRT_2_OVER_PI = 0.7978845608028654


@keras.saving.register_keras_serializable(package="xconv")
class TorchActivation(keras.layers.Layer):
    """Activations whose native Keras forms differ from torch's: LeakyReLU with a negative slope (Keras
    refuses it), GELU's tanh form (no Keras layer), hardtanh with other bounds than ReLU6's, torch's hard sigmoid
    and hard swish in torch's order of operations, and in float64 the parametric ones (Keras and
    ``tf.nn`` hold their constants in float32: measured 3.5e-8 for leaky_relu, 5e-9 for gelu). Constants are
    made in the input's dtype."""

    def __init__(self, function: str, param: float = 0.0, param2: float = 0.0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.function, self.param, self.param2 = str(function), float(param), float(param2)

    def call(self, x: Any) -> Any:
        def c(v: float) -> Any:
            return tf.constant(v, dtype=x.dtype)

        if self.function == "leaky_relu":
            return tf.where(x > 0, x, x * c(self.param))
        if self.function == "elu":
            return tf.where(x > 0, x, c(self.param) * tf.math.expm1(tf.minimum(x, c(0.0))))
        if self.function == "gelu":
            return c(0.5) * x * (c(1.0) + tf.math.erf(x * c(_SQRT1_2)))
        if self.function == "gelu_tanh":
            return c(0.5) * x * (c(1.0) + tf.tanh(c(_SQRT_2_OVER_PI) * (x + c(0.044715) * x * x * x)))
        if self.function == "hardtanh":
            return tf.minimum(tf.maximum(x, c(self.param)), c(self.param2))
        if self.function == "hardsigmoid":  # torch's order of operations: min(max(x + 3, 0), 6) / 6
            return tf.minimum(tf.maximum(x + c(3.0), c(0.0)), c(6.0)) / c(6.0)
        if self.function == "hardswish":  # x * min(max(x + 3, 0), 6) / 6
            return x * tf.minimum(tf.maximum(x + c(3.0), c(0.0)), c(6.0)) / c(6.0)
        raise ValueError(f"TorchActivation: unknown function {self.function!r}")

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "function": self.function, "param": self.param, "param2": self.param2}


def _channels(value: Any) -> Any:
    return [float(v) for v in value] if isinstance(value, (list, tuple)) else float(value)


@keras.saving.register_keras_serializable(package="xconv")
class ChannelRescaling(keras.layers.Layer):
    """x * scale + offset, numbers or one per channel (last axis), with the constants made in the input's dtype
    (Keras' own ``Rescaling`` casts Python floats through float32 on the way to float64)."""

    def __init__(self, scale: Any = 1.0, offset: Any = 0.0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.scale, self.offset = _channels(scale), _channels(offset)

    def call(self, x: Any) -> Any:
        return x * tf.constant(self.scale, dtype=x.dtype) + tf.constant(self.offset, dtype=x.dtype)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "scale": self.scale, "offset": self.offset}


@keras.saving.register_keras_serializable(package="xconv")
class ChannelNormalization(keras.layers.Layer):
    """(x - mean) / max(sqrt(variance), 1e-7) over the last axis, as Keras' ``Normalization``, with ``mean`` and
    ``variance`` as (non-trainable) variables that weights load into."""

    def build(self, input_shape: Any) -> None:
        n = int(input_shape[-1])
        self.mean = self.add_weight(shape=(n,), initializer="zeros", trainable=False, name="mean")
        self.variance = self.add_weight(shape=(n,), initializer="ones", trainable=False, name="variance")

    def call(self, x: Any) -> Any:
        std = tf.maximum(tf.sqrt(tf.cast(self.variance, x.dtype)), tf.constant(1e-7, dtype=x.dtype))
        return (x - tf.cast(self.mean, x.dtype)) / std


@keras.saving.register_keras_serializable(package="xconv")
class ChannelScale(keras.layers.Layer):
    """x * gamma with a learned per-channel ``gamma`` of shape (C,) (layer scale, as keras.applications'
    ConvNeXt ``LayerScale``)."""

    def build(self, input_shape: Any) -> None:
        self.gamma = self.add_weight(shape=(int(input_shape[-1]),), initializer="ones", name="gamma")

    def call(self, x: Any) -> Any:
        return x * tf.cast(self.gamma, x.dtype)


@keras.saving.register_keras_serializable(package="xconv")
class Narrow(keras.layers.Layer):
    """``length`` entries from ``start`` along ``axis`` (a slice; torch's ``x.narrow``)."""

    def __init__(self, axis: int, start: int, length: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.axis, self.start, self.length = int(axis), int(start), int(length)

    def call(self, x: Any) -> Any:
        index = [slice(None)] * len(x.shape)
        index[self.axis] = slice(self.start, self.start + self.length)
        return x[tuple(index)]

    def compute_output_shape(self, input_shape: Any) -> Any:
        shape = list(input_shape)
        shape[self.axis] = self.length
        return tuple(shape)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "axis": self.axis, "start": self.start, "length": self.length}


@keras.saving.register_keras_serializable(package="xconv")
class ChannelGather(keras.layers.Layer):
    """Output channel j is input channel ``order[j]`` (last axis): torch's ``ChannelShuffle(groups)`` as one
    gather (``groups`` is kept for reading the layer back; the order alone defines the function)."""

    def __init__(self, order: Any, groups: int | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.order = [int(i) for i in order]
        self.groups = None if groups is None else int(groups)

    def call(self, x: Any) -> Any:
        return tf.gather(x, self.order, axis=-1)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "order": self.order, "groups": self.groups}


@keras.saving.register_keras_serializable(package="xconv")
class TorchPReLU(keras.layers.PReLU):
    """Keras' PReLU (the same ``alpha`` and ``shared_axes``) with torch's gradient at 0: x where x > 0, else
    alpha * x. Keras computes relu(x) - alpha * relu(-x), whose gradient at exactly 0 is 0 instead of alpha
    (an inserted zero of a strided transposed conv with a zero bias reaches it; 0.43 off in a test)."""

    def call(self, inputs: Any) -> Any:
        return keras.ops.where(inputs > 0, inputs, self.alpha * inputs)


@keras.saving.register_keras_serializable(package="xconv")
class FeatureOrder(keras.layers.Layer):
    """Output feature j is input feature ``order[j]`` (last axis). Put at the end of a Keras model whose output
    features were flattened from a map, so that it returns them in C,H,W order, as the torch model does: the
    one permutation at run time that a flattened output costs."""

    def __init__(self, order: Any, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.order = [int(i) for i in order]

    def call(self, x: Any) -> Any:
        return tf.gather(x, self.order, axis=-1)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "order": self.order}


@keras.saving.register_keras_serializable(package="xconv")
class TorchUpsample2D(keras.layers.Layer):
    """torch's ``nn.Upsample`` where ``UpSampling2D`` is not the same function: per axis, a gather of the source
    rows (nearest modes) or two gathers weighted by torch's bilinear weights, all from :mod:`xconv.resample`
    (constants made from the sizes at construction; no transposes). ``size`` / ``scale_factor`` are the spec's."""

    def __init__(
        self,
        input_size: Any,
        output_size: Any,
        mode: str,
        align_corners: Any = None,
        size: Any = None,
        scale_factor: Any = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.input_size, self.output_size = _pair(input_size), _pair(output_size)
        self.mode, self.align_corners = str(mode), None if align_corners is None else bool(align_corners)
        self.size = None if size is None else _pair(size)
        self.scale_factor = None if scale_factor is None else tuple(float(v) for v in scale_factor)
        factors = self.scale_factor or (None, None)
        self._taps = [
            resample.taps(n, o, self.mode, self.align_corners, f)
            for n, o, f in zip(self.input_size, self.output_size, factors)
        ]

    def call(self, x: Any) -> Any:
        for axis, t in ((1, self._taps[0]), (2, self._taps[1])):
            if t.nearest and len(t.i0) == x.shape[axis] and (t.i0 == np.arange(len(t.i0))).all():
                continue  # an axis that is copied
            y = tf.gather(x, tf.constant(t.i0, dtype=tf.int32), axis=axis)
            if not t.nearest:
                shape = [1, 1, 1, 1]
                shape[axis] = -1
                w0 = tf.constant(t.w0.reshape(shape), dtype=x.dtype)
                w1 = tf.constant(t.w1.reshape(shape), dtype=x.dtype)
                y = y * w0 + tf.gather(x, tf.constant(t.i1, dtype=tf.int32), axis=axis) * w1
            x = y
        return x

    def compute_output_shape(self, input_shape: Any) -> Any:
        return (input_shape[0], *self.output_size, input_shape[-1])

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "input_size": self.input_size,
            "output_size": self.output_size,
            "mode": self.mode,
            "align_corners": self.align_corners,
            "size": self.size,
            "scale_factor": self.scale_factor,
        }


def spread(t: Any, steps: tuple[int, int], sizes: tuple[int, int], axis: int) -> Any:
    """Zero insertion along the two axes ``axis`` and ``axis + 1``: element (i, j) moves to (i * s0, j * s1), the
    rest are zeros, and the result keeps its first ``sizes`` positions. Pad and reshape only. A kernel's taps
    spread by a dilation, or a map's pixels by a stride."""
    s0, s1 = steps
    n0, n1 = int(t.shape[axis]), int(t.shape[axis + 1])
    t = tf.expand_dims(tf.expand_dims(t, axis + 2), axis + 1)  # (..., n0, 1, n1, 1, ...)
    pad = [[0, 0]] * len(t.shape)
    pad[axis + 1], pad[axis + 3] = [0, s0 - 1], [0, s1 - 1]
    t = tf.pad(t, pad)
    shape = tf.shape(t)
    t = tf.reshape(t, tf.concat([shape[:axis], [n0 * s0, n1 * s1], shape[axis + 4 :]], axis=0))
    begin = [0] * (len(t.shape))
    size = [-1] * len(t.shape)
    size[axis], size[axis + 1] = sizes
    return tf.slice(t, begin, size)


def dilate_kernel(kernel: Any, dilation: tuple[int, int]) -> Any:
    """A (kh, kw, ., .) kernel with dilation - 1 zeros between its taps: a transposed conv with it equals the
    dilated one (TensorFlow's CPU transposed conv takes no dilation)."""
    kh, kw = (int(d) for d in kernel.shape[:2])
    return spread(kernel, dilation, ((kh - 1) * dilation[0] + 1, (kw - 1) * dilation[1] + 1), axis=0)


@keras.saving.register_keras_serializable(package="xconv")
class TorchConvTranspose2D(keras.layers.Conv2DTranspose):
    """torch's ``nn.ConvTranspose2d`` where ``Conv2DTranspose`` cannot run it (groups, dilation) or must not (a
    strided 1x1 kernel, computed as a per-pixel product and zero insertion: see ``spread``): the kernel is
    (kh, kw, out // groups, in), torch's weight permuted as for ``Conv2DTranspose``; one 'VALID'
    ``tf.nn.conv2d_transpose`` per group with the kernel's taps spread by the dilation, then torch's
    output_padding (zero rows bottom / right, before the bias) and padding (cropped from both ends)."""

    def __init__(
        self,
        filters: int,
        kernel_size: Any,
        strides: Any = (1, 1),
        groups: int = 1,
        torch_padding: Any = (0, 0),
        torch_output_padding: Any = (0, 0),
        torch_dilation: Any = (1, 1),
        **kwargs: Any,
    ) -> None:
        for key in ("padding", "output_padding", "dilation_rate"):
            kwargs.pop(key, None)
        super().__init__(filters, kernel_size, strides=strides, padding="valid", **kwargs)
        self.groups = int(groups)
        self.torch_padding, self.torch_output_padding = _pair(torch_padding), _pair(torch_output_padding)
        self.torch_dilation = _pair(torch_dilation)

    def build(self, input_shape: Any) -> None:
        self.kernel = self.add_weight(
            name="kernel",
            shape=(*self.kernel_size, self.filters // self.groups, int(input_shape[-1])),
            initializer=self.kernel_initializer,
            regularizer=self.kernel_regularizer,
            constraint=self.kernel_constraint,
            trainable=True,
            dtype=self.dtype,
        )
        self.bias = (
            None
            if not self.use_bias
            else self.add_weight(
                name="bias",
                shape=(self.filters,),
                initializer=self.bias_initializer,
                regularizer=self.bias_regularizer,
                constraint=self.bias_constraint,
                trainable=True,
                dtype=self.dtype,
            )
        )

    def _full(self, h: int, w: int) -> tuple[int, int]:
        return tuple(
            (n - 1) * s + d * (k - 1) + 1
            for n, s, d, k in zip((h, w), self.strides, self.torch_dilation, self.kernel_size)
        )

    def call(self, x: Any) -> Any:
        kernel = tf.convert_to_tensor(self.kernel)
        full = self._full(int(x.shape[1]), int(x.shape[2]))
        g = self.groups
        pointwise = tuple(self.kernel_size) == (1, 1) and tuple(self.strides) != (1, 1)
        if self.torch_dilation != (1, 1) and not pointwise:
            kernel = dilate_kernel(kernel, self.torch_dilation)
        pieces = list(zip(tf.split(x, g, axis=-1), tf.split(kernel, g, axis=-1))) if g > 1 else [(x, kernel)]
        if pointwise:
            # One tap: each input pixel lands on one output pixel, the others are zeros. A per-pixel product and
            # zero insertion are exact, and avoid TF 2.21's oneDNN filter gradient of a strided 1x1 kernel,
            # which corrupts the heap in float32.
            outs = [tf.einsum("nhwi,oi->nhwo", xi, ki[0, 0]) for xi, ki in pieces]
            y = spread(tf.concat(outs, axis=-1) if g > 1 else outs[0], self.strides, full, axis=1)
        else:
            shape = tf.stack([tf.shape(x)[0], full[0], full[1], self.filters // g])
            outs = [tf.nn.conv2d_transpose(xi, ki, shape, strides=self.strides, padding="VALID") for xi, ki in pieces]
            y = tf.concat(outs, axis=-1) if g > 1 else outs[0]
        (oh, ow), (ph, pw) = self.torch_output_padding, self.torch_padding
        if oh or ow:
            y = tf.pad(y, [[0, 0], [0, oh], [0, ow], [0, 0]])
        if ph or pw:
            y = y[:, ph : full[0] + oh - ph, pw : full[1] + ow - pw, :]
        if self.use_bias:
            y = y + self.bias
        return y if self.activation is None else self.activation(y)

    def compute_output_shape(self, input_shape: Any) -> Any:
        n, h, w, _ = input_shape
        full = self._full(h, w)
        return (
            n,
            *(f + op - 2 * p for f, op, p in zip(full, self.torch_output_padding, self.torch_padding)),
            self.filters,
        )

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "groups": self.groups,
            "torch_padding": self.torch_padding,
            "torch_output_padding": self.torch_output_padding,
            "torch_dilation": self.torch_dilation,
        }
