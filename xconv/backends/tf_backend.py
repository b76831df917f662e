"""Keras 3 backend on TensorFlow: native ``keras.layers``, NHWC, input ``(None, H, W, C)``.

The only file that imports tensorflow / keras. Layout differences are absorbed by the weights
(xconv.layout) at transfer time; the graph holds no Transpose or Permute.
"""

from __future__ import annotations

import os
import sys
from typing import Any, Callable, Iterable

import numpy as np

from ..errors import BackendUnavailable

_requested = os.environ.get("KERAS_BACKEND", "")
if _requested not in ("", "tensorflow"):
    raise BackendUnavailable(
        f"backend 'tf' builds Keras 3 models on TensorFlow, but KERAS_BACKEND={_requested!r}; "
        "unset KERAS_BACKEND or set it to 'tensorflow' before keras is imported"
    )

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402

if keras.backend.backend() != "tensorflow":
    raise BackendUnavailable(
        f"backend 'tf' builds Keras 3 models on TensorFlow, but keras is running on {keras.backend.backend()!r}; "
        "unset KERAS_BACKEND or set it to 'tensorflow' before keras is imported"
    )

from .. import layout  # noqa: E402
from ..shapes import (  # noqa: E402
    LayerInfo, adaptive_windows, avgpool_divisor, pool_output_size, softmax_axis, tap_slices,
)
from ..spec import (  # noqa: E402
    ELU, GELU, AdaptiveAvgPool2d, AvgPool2d, BatchNorm1d, BatchNorm2d, Conv2d, Dropout, Flatten, Identity, LeakyReLU,
    Linear, MaxPool2d, ReLU, Sequential, Sigmoid, SiLU, Softmax, Tanh,
)

NAME = "tf"

#: Work around a oneDNN bug in TF 2.21 (see ``_conv2d``). Only tests turn it off, to show the bug is real.
ONEDNN_WORKAROUND = True


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
                tf.nn.convolution(x, k, strides=self.strides, padding=self.padding.upper(), dilations=self.dilation_rate)
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

    def __init__(self, kernel_size: Any, strides: Any, padding: Any, dilation: Any = (1, 1), ceil_mode: bool = False,
                 **kwargs: Any) -> None:
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
        out_hw = (pool_output_size(x.shape[1], kh, sh, 0, dh, False), pool_output_size(x.shape[2], kw, sw, 0, dw, False))
        out = None
        for _, _, rows, cols in tap_slices(self.kernel_size, self.strides, self.dilation, out_hw):
            tap = x[:, rows, cols, :]
            out = tap if out is None else tf.maximum(out, tap)  # ties: the gradient goes to the earlier tap
        return out

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "kernel_size": self.kernel_size, "strides": self.strides,
                "padding": self.padding, "dilation": self.dilation, "ceil_mode": self.ceil_mode}


@keras.saving.register_keras_serializable(package="xconv")
class TorchAvgPool2D(keras.layers.Layer):
    """torch's AvgPool2d where Keras' AveragePooling2D has no equal: zero padding (as TorchMaxPool2D), a
    'valid' average pool, then each position rescaled by kh*kw / torch's divisor (a precomputed constant:
    ``count_include_pad`` and ceil_mode's cut windows)."""

    def __init__(self, kernel_size: Any, strides: Any, padding: Any, scale: Any, ceil_mode: bool = False,
                 count_include_pad: bool = True, **kwargs: Any) -> None:
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
        return {**super().get_config(), "kernel_size": self.kernel_size, "strides": self.strides,
                "padding": self.padding, "scale": self.scale, "ceil_mode": self.ceil_mode,
                "count_include_pad": self.count_include_pad}


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
            [tf.stack([tf.reduce_mean(x[:, r0:r1, c0:c1, :], axis=(1, 2)) for c0, c1 in cols], axis=1)
             for r0, r1 in rows],
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
            x, mean, variance, axis=-1, offset=self.beta if self.center else None,
            scale=self.gamma if self.scale else None, epsilon=self.epsilon,
        )

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "torch_momentum": self.torch_momentum,
                "track_running_stats": self.track_running_stats}


_SQRT1_2 = 0.7071067811865476
_SQRT_2_OVER_PI = 0.7978845608028654


@keras.saving.register_keras_serializable(package="xconv")
class TorchActivation(keras.layers.Layer):
    """Activations whose native Keras forms differ from torch's: LeakyReLU with a negative slope (Keras
    refuses it), GELU's tanh form (no Keras layer), and in float64 the parametric ones (Keras and
    ``tf.nn`` hold their constants in float32: measured 3.5e-8 for leaky_relu, 5e-9 for gelu). Constants are
    made in the input's dtype."""

    def __init__(self, function: str, param: float = 0.0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.function, self.param = str(function), float(param)

    def call(self, x: Any) -> Any:
        c = lambda v: tf.constant(v, dtype=x.dtype)  # noqa: E731
        if self.function == "leaky_relu":
            return tf.where(x > 0, x, x * c(self.param))
        if self.function == "elu":
            return tf.where(x > 0, x, c(self.param) * tf.math.expm1(tf.minimum(x, c(0.0))))
        if self.function == "gelu":
            return c(0.5) * x * (c(1.0) + tf.math.erf(x * c(_SQRT1_2)))
        if self.function == "gelu_tanh":
            return c(0.5) * x * (c(1.0) + tf.tanh(c(_SQRT_2_OVER_PI) * (x + c(0.044715) * x * x * x)))
        raise ValueError(f"TorchActivation: unknown function {self.function!r}")

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "function": self.function, "param": self.param}


def fused_relus(infos: list[LayerInfo]) -> set[int]:
    """Indices of the convs and Linears whose next layer is a ReLU: Keras runs that ReLU inside the layer
    (``activation="relu"``, as hand-written Keras models do), which saves one layer call per pair in eager
    mode. Weights and per-layer tracing are unaffected; ``from_keras`` splits the ReLU out again."""
    return {i.index for i, nxt in zip(infos, infos[1:])
            if isinstance(i.layer, (Conv2d, Linear)) and isinstance(nxt.layer, ReLU)}


def _conv2d(info: LayerInfo, x: Any, dtype: str, activation: str | None = None) -> Any:
    layer: Conv2d = info.layer  # type: ignore[assignment]
    name = f"conv2d_{info.index}"
    _, h, w = info.input_shape
    padding = info.padding
    assert padding is not None
    kernel = layer.kernel_size
    # A 1-tap axis reads one pixel whatever its dilation, so its dilation is set to 1: exact, and it avoids
    # non-finite gradients that TF 2.21's XLA grouped conv returns for kernel 1 with dilation > 1 (measured in
    # float64: 169 of 300 calls), and a needless stride-then-subsample split.
    dilation = tuple(1 if k == 1 else d for k, d in zip(kernel, layer.dilation))
    extent = [(k - 1) * d + 1 for k, d in zip(kernel, dilation)]
    strides = list(layer.stride)
    crop = [0, 0]
    out_hw = info.output_shape[1:]
    for axis in (0, 1):
        # An axis with one output position does not depend on its stride. Computing it at stride 1 on an
        # input cropped to the kernel's extent is exact, and avoids a oneDNN bug in TF 2.21 (float32, 1-channel
        # input, output 1 column wide, horizontal stride > 1: errors of order 1).
        if ONEDNN_WORKAROUND and out_hw[axis] == 1 and strides[axis] > 1:
            padded = info.input_shape[1 + axis] + sum(padding[axis])
            crop[axis] = padded - extent[axis]
            strides[axis] = 1
    # A strided 1x1 conv reads every s-th pixel: subsampling first and convolving at stride 1 is exact (and
    # cheaper). TF 2.21 with oneDNN corrupts the heap in the float32 gradient of 1x1 stride-2 convs
    # ("free(): invalid pointer" within a few hundred calls), so xconv never emits a strided 1x1 conv.
    pointwise = tuple(kernel) == (1, 1) and max(strides) > 1
    pre_strides = tuple(strides) if pointwise else (1, 1)
    if pointwise:
        strides = [1, 1]
    subsample = max(strides) > 1 and max(dilation) > 1  # Keras refuses this pair: stride 1, then subsample
    conv_strides = (1, 1) if subsample else tuple(strides)

    keras_padding = "valid"
    native_same = tuple(layout.same_padding(n, k, s, d) for n, k, s, d in zip((h, w), kernel, conv_strides, dilation))
    if padding == ((0, 0), (0, 0)):
        pass
    elif layer.padding_mode == "zeros" and padding == native_same and crop == [0, 0] and not subsample and not pointwise:
        keras_padding = "same"  # provably TF's own rule for this size, stride and dilation
    elif layer.padding_mode == "zeros":
        x = keras.layers.ZeroPadding2D(padding, dtype=dtype, name=f"{name}_pad")(x)
    else:
        x = GatherPad2D(padding, (h, w), layer.padding_mode, dtype=dtype, name=f"{name}_pad")(x)
    if crop != [0, 0]:
        x = keras.layers.Cropping2D(((0, crop[0]), (0, crop[1])), dtype=dtype, name=f"{name}_crop")(x)
    if pointwise:
        x = Subsample2D(pre_strides, before_conv=True, dtype=dtype, name=f"{name}_subsample")(x)
    conv_class = GroupedConv2D if layer.groups > 1 else keras.layers.Conv2D
    x = conv_class(
        layer.out_channels,
        kernel,
        strides=conv_strides,
        padding=keras_padding,
        dilation_rate=dilation,
        groups=layer.groups,
        use_bias=layer.bias,
        activation=activation,
        dtype=dtype,
        name=name,
    )(x)
    if subsample:
        x = Subsample2D(strides, dtype=dtype, name=f"{name}_stride")(x)
    return x


def _linear(info: LayerInfo, x: Any, dtype: str, activation: str | None = None) -> Any:
    layer: Linear = info.layer  # type: ignore[assignment]
    return keras.layers.Dense(layer.out_features, use_bias=layer.bias, activation=activation, dtype=dtype,
                              name=f"linear_{info.index}")(x)


def _maxpool(info: LayerInfo, x: Any, dtype: str) -> Any:
    layer: MaxPool2d = info.layer  # type: ignore[assignment]
    name = f"maxpool_{info.index}"
    if info.padding == ((0, 0), (0, 0)) and layer.dilation == (1, 1):
        return keras.layers.MaxPooling2D(layer.kernel_size, layer.stride, padding="valid", dtype=dtype, name=name)(x)
    # torch pads with -inf; Keras' 'same' and ZeroPadding2D would let a pad win over negative inputs
    return TorchMaxPool2D(layer.kernel_size, layer.stride, info.padding, layer.dilation, layer.ceil_mode, dtype=dtype,
                          name=name)(x)


def _avgpool(info: LayerInfo, x: Any, dtype: str) -> Any:
    layer: AvgPool2d = info.layer  # type: ignore[assignment]
    name = f"avgpool_{info.index}"
    (kh, kw), (ph, pw) = layer.kernel_size, layer.padding
    divisor = avgpool_divisor(info)
    uniform = bool((divisor == kh * kw).all())
    if uniform and info.padding == ((0, 0), (0, 0)):
        return keras.layers.AveragePooling2D(layer.kernel_size, layer.stride, padding="valid", dtype=dtype, name=name)(x)
    if uniform and info.padding == ((ph, ph), (pw, pw)):
        x = keras.layers.ZeroPadding2D(info.padding, dtype=dtype, name=f"{name}_pad")(x)
        return keras.layers.AveragePooling2D(layer.kernel_size, layer.stride, padding="valid", dtype=dtype, name=name)(x)
    scale = None if uniform else (kh * kw / divisor).tolist()
    return TorchAvgPool2D(layer.kernel_size, layer.stride, info.padding, scale, layer.ceil_mode,
                          layer.count_include_pad, dtype=dtype, name=name)(x)


def _adaptive(info: LayerInfo, x: Any, dtype: str) -> Any:
    _, h, w = info.input_shape
    oh, ow = info.layer.output_size  # type: ignore[attr-defined]
    name = f"adaptiveavgpool_{info.index}"
    if (oh, ow) == (1, 1):
        return keras.layers.GlobalAveragePooling2D(keepdims=True, dtype=dtype, name=name)(x)
    if h % oh == 0 and w % ow == 0:
        size = (h // oh, w // ow)
        return keras.layers.AveragePooling2D(size, size, padding="valid", dtype=dtype, name=name)(x)
    return AdaptiveAvgPool2D((oh, ow), (h, w), dtype=dtype, name=name)(x)


def _batchnorm(info: LayerInfo, x: Any, dtype: str) -> Any:
    layer = info.layer
    return TorchBatchNorm(
        torch_momentum=layer.momentum, track_running_stats=layer.track_running_stats,  # type: ignore[attr-defined]
        axis=-1, epsilon=layer.eps, center=layer.affine, scale=layer.affine,  # type: ignore[attr-defined]
        dtype=dtype, name=f"batchnorm_{info.index}",
    )(x)


def _act_builder(function: str, param: float = 0.0) -> Callable[[LayerInfo, Any, str], Any]:
    """Native Keras where equal in this dtype; TorchActivation otherwise."""

    def make(info: LayerInfo, x: Any, dtype: str) -> Any:
        name = f"{info.kind.lower()}_{info.index}"
        p = getattr(info.layer, {"leaky_relu": "negative_slope", "elu": "alpha"}.get(function, "_"), param)
        if dtype == "float32":
            if function == "leaky_relu" and p >= 0:
                return keras.layers.LeakyReLU(negative_slope=p, dtype=dtype, name=name)(x)
            if function == "elu":
                return keras.layers.ELU(alpha=p, dtype=dtype, name=name)(x)
            if function == "gelu":
                return keras.layers.Activation("gelu", dtype=dtype, name=name)(x)  # approximate=False
        return TorchActivation(function, p, dtype=dtype, name=name)(x)

    return make


def _gelu(info: LayerInfo, x: Any, dtype: str) -> Any:
    tanh = info.layer.approximate == "tanh"  # type: ignore[attr-defined]
    return _act_builder("gelu_tanh" if tanh else "gelu")(info, x, dtype)


def _softmax(info: LayerInfo, x: Any, dtype: str) -> Any:
    axis = softmax_axis(info)
    keras_axis = layout.keras_axis(axis, len(info.input_shape) + 1)
    return keras.layers.Softmax(axis=keras_axis, dtype=dtype, name=f"softmax_{info.index}")(x)


def _named(cls: Any, *args: Any) -> Callable[[LayerInfo, Any, str], Any]:
    return lambda info, x, dtype: cls(*args, dtype=dtype, name=f"{info.kind.lower()}_{info.index}")(x)


_BUILDERS = {
    Conv2d: _conv2d,
    ReLU: lambda info, x, dtype: keras.layers.ReLU(dtype=dtype, name=f"relu_{info.index}")(x),
    Flatten: lambda info, x, dtype: keras.layers.Flatten(dtype=dtype, name=f"flatten_{info.index}")(x),
    Linear: _linear,
    MaxPool2d: _maxpool,
    AvgPool2d: _avgpool,
    AdaptiveAvgPool2d: _adaptive,
    BatchNorm2d: _batchnorm,
    BatchNorm1d: _batchnorm,
    Dropout: lambda info, x, dtype: keras.layers.Dropout(info.layer.p, dtype=dtype, name=f"dropout_{info.index}")(x),
    LeakyReLU: _act_builder("leaky_relu"),
    Sigmoid: _named(keras.layers.Activation, "sigmoid"),
    Tanh: _named(keras.layers.Activation, "tanh"),
    GELU: _gelu,
    ELU: _act_builder("elu"),
    SiLU: _named(keras.layers.Activation, "silu"),
    Softmax: _softmax,
    Identity: _named(keras.layers.Identity),
}

def build(spec: Sequential, infos: list[LayerInfo], weights: dict[str, np.ndarray], dtype: str) -> keras.Model:
    shape = spec.input_shape
    assert shape is not None
    keras_shape = (shape[1], shape[2], shape[0]) if len(shape) == 3 else shape
    inputs = keras.Input(shape=keras_shape, dtype=dtype, name="input")
    x = inputs
    fused = fused_relus(infos)
    for info in infos:
        if info.index - 1 in fused:
            continue  # this ReLU runs inside the conv / Dense before it
        if info.index in fused:
            x = _BUILDERS[type(info.layer)](info, x, dtype, activation="relu")
        else:
            x = _BUILDERS[type(info.layer)](info, x, dtype)
    # Keras walks the functional graph recursively (a few frames per layer): a 1,000-layer spec exceeds
    # Python's default limit of 1,000 frames. Raise it for this call only.
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(max(limit, 20 * len(infos) + 1000))
    try:
        model = keras.Model(inputs, x, name="xconv")
    finally:
        sys.setrecursionlimit(limit)
    model.xconv_spec = spec
    set_weights(model, infos, weights)
    return model


def owns_model(obj: Any) -> bool:
    return isinstance(obj, keras.Model)


def owns_tensor(obj: Any) -> bool:
    return bool(tf.is_tensor(obj)) or isinstance(obj, tf.Variable)


def spec_of(model: keras.Model) -> Sequential | None:
    spec = getattr(model, "xconv_spec", None)
    return spec if isinstance(spec, Sequential) else None


def dtype_of(model: keras.Model) -> str:
    return str(model.inputs[0].dtype)


_BN_VARIABLES = {"weight": "gamma", "bias": "beta", "running_mean": "moving_mean",
                 "running_var": "moving_variance", "num_batches_tracked": "num_batches_tracked"}


def _params(model: keras.Model, info: LayerInfo) -> dict[str, Any]:
    """Canonical state name -> Keras variable, for one spec layer."""
    if not info.params:
        return {}
    if isinstance(info.layer, (BatchNorm2d, BatchNorm1d)):
        layer = model.get_layer(f"batchnorm_{info.index}")
        return {name: getattr(layer, _BN_VARIABLES[name]) for name in info.params}
    prefix = "conv2d" if isinstance(info.layer, Conv2d) else "linear"
    layer = model.get_layer(f"{prefix}_{info.index}")
    out = {"weight": layer.kernel}
    if "bias" in info.params:
        out["bias"] = layer.bias
    return out


def _kind(info: LayerInfo, name: str) -> str:
    """How canonical state ``name`` of a layer is laid out in Keras (see ``layout.to_keras``)."""
    if name == "weight" and isinstance(info.layer, Conv2d):
        return "conv"
    if name == "weight" and isinstance(info.layer, Linear):
        return "linear"
    if name != "num_batches_tracked" and isinstance(info.layer, (BatchNorm2d, BatchNorm1d)):
        return "vector"
    return "same"


def _to_canonical(info: LayerInfo, name: str, value: np.ndarray) -> np.ndarray:
    return layout.to_canonical(_kind(info, name), value, info.input_source)  # type: ignore[no-any-return]


def _from_canonical(info: LayerInfo, name: str, value: np.ndarray) -> np.ndarray:
    return layout.to_keras(_kind(info, name), value, info.input_source)  # type: ignore[no-any-return]


def get_weights(model: keras.Model, infos: list[LayerInfo]) -> dict[str, np.ndarray]:
    out = {}
    for info in infos:
        for name, variable in _params(model, info).items():
            out[f"{info.index}.{name}"] = _to_canonical(info, name, np.asarray(variable.numpy()))
    return out


def set_weights(model: keras.Model, infos: list[LayerInfo], weights: dict[str, np.ndarray]) -> None:
    for info in infos:
        for name, variable in _params(model, info).items():
            variable.assign(_from_canonical(info, name, weights[f"{info.index}.{name}"]))


# ---- zero-copy transfers (transfer_weights between torch and Keras) ----

def _transfer_state(model: keras.Model, infos: list[LayerInfo]) -> dict[str, Any]:
    """Per model, cached: canonical key -> variable, the float layout ops, the int64 counters, the float bytes."""
    state = model.__dict__.get("_xconv_transfer")
    if state is None:
        variables = {f"{i.index}.{n}": v for i in infos for n, v in _params(model, i).items()}
        counters = [k for k in variables if k.endswith(".num_batches_tracked")]
        ops = _layout_ops(infos)
        nbytes = sum(int(np.prod(variables[k].shape)) * np.dtype(variables[k].dtype).itemsize for k, _, _ in ops)
        state = dict(variables=variables, counters=counters, ops=ops, bytes=nbytes)
        model.__dict__["_xconv_transfer"] = state
    return state


def float_bytes(model: keras.Model, infos: list[LayerInfo]) -> int:
    return int(_transfer_state(model, infos)["bytes"])


_TF_OPS = layout.ArrayOps(transpose=tf.transpose, take=lambda x, idx, axis: tf.gather(x, idx, axis=axis))


def _layout_ops(infos: list[LayerInfo]) -> list[tuple[str, str, Any]]:
    """Per float canonical key: (key, layout kind, flatten source)."""
    return [(f"{i.index}.{n}", _kind(i, n), i.input_source) for i in infos for n in i.params
            if n != "num_batches_tracked"]


def _compiled(model: keras.Model, infos: list[LayerInfo], direction: str) -> Any:
    """The model's cached tf.function that moves all weights in one call: "in" transposes canonical tensors
    and assigns them to the variables (the transposed buffer is handed over, not copied) and sets the int64
    counters from one vector; "out" returns the canonical tensors and the counters. Layout changes are exact
    (transposes, gathers)."""
    state = _transfer_state(model, infos)
    if direction in state:
        return state[direction]
    ops, variables, counters = state["ops"], state["variables"], state["counters"]
    if direction == "in":
        @tf.function(autograph=False)
        def move(values: Any, counts: Any) -> None:
            for (key, kind, source), x in zip(ops, values):
                variables[key].assign(layout.to_keras(kind, x, source, _TF_OPS))
            for i, key in enumerate(counters):
                variables[key].assign(counts[i])
    else:
        @tf.function(autograph=False)
        def move() -> Any:
            floats = [tf.identity(layout.to_canonical(kind, tf.convert_to_tensor(variables[key]), source, _TF_OPS))
                      for key, kind, source in ops]
            return floats, tf.stack([tf.convert_to_tensor(variables[k]) for k in counters]) if counters else None
    state[direction] = move
    return move


def import_tensors(model: keras.Model, infos: list[LayerInfo], arrays: dict[str, Any]) -> None:
    """Assign canonical DLPack tensors (torch tensors, numpy arrays) of the model's dtype to its variables."""
    from tensorflow.experimental import dlpack

    state = _transfer_state(model, infos)
    move = _compiled(model, infos, "in")
    counts = np.array([int(arrays[k]) for k in state["counters"]], dtype=np.int64)
    move([dlpack.from_dlpack(arrays[key].__dlpack__()) for key, _, _ in state["ops"]], counts)


def export_tensors(model: keras.Model, infos: list[LayerInfo]) -> dict[str, Any]:
    """Canonical weights as DLPack capsules of TF tensors, computed in one call (each capsule can be consumed
    once, by ``torch.from_dlpack`` for example); the int64 counters as numpy scalars."""
    from tensorflow.experimental import dlpack

    state = _transfer_state(model, infos)
    floats, counts = _compiled(model, infos, "out")()
    out: dict[str, Any] = {key: dlpack.to_dlpack(t) for (key, _, _), t in zip(state["ops"], floats)}
    if state["counters"]:
        for key, count in zip(state["counters"], counts.numpy()):
            out[key] = np.asarray(count, dtype=np.int64)
    return out


def permute(x: Any, perm: tuple[int, ...]) -> Any:
    return tf.transpose(x, perm)


def forward(model: keras.Model, x: np.ndarray) -> np.ndarray:
    """Run ``model`` on an NCHW (or (N, F)) numpy batch; returns numpy in NCHW (or (N, F))."""
    y = np.asarray(model(layout.to_nhwc(x) if x.ndim == 4 else x, training=False))
    return layout.to_nchw(y) if y.ndim == 4 else y


def _nchw(y: np.ndarray) -> np.ndarray:
    return layout.to_nchw(y) if y.ndim == 4 else y


def trace(model: keras.Model, x: np.ndarray, upstream: np.ndarray, training: bool = False) -> tuple[list[np.ndarray], np.ndarray, dict[str, np.ndarray]]:
    """Every spec layer's output, and the gradients of sum(output * upstream) with respect to the input and
    every trainable weight, all as numpy in canonical layout (NCHW, OIHW, (out, in) in C,H,W order); layers
    are called with ``training`` (True: BatchNorm statistics are updated once)."""
    spec = spec_of(model)
    assert spec is not None
    from ..shapes import infer

    infos = infer(spec)
    xv = tf.constant(layout.to_nhwc(x) if x.ndim == 4 else x)
    up = tf.constant(layout.to_nhwc(upstream) if upstream.ndim == 4 else upstream)
    variables = {f"{i.index}.{n}": v for i in infos for n, v in _params(model, i).items() if n not in i.buffers}
    outs: dict[int, Any] = {}
    fused = fused_relus(infos)
    layers = model.layers[1:]
    indices = [int(layer.name.split("_")[1]) for layer in layers]  # conv2d_3_pad, conv2d_3, ... -> spec index 3
    with tf.GradientTape() as tape:
        tape.watch(xv)
        h = xv
        for position, (layer, index) in enumerate(zip(layers, indices)):
            if index in fused and hasattr(layer, "activation"):  # the conv's own output, then its ReLU apart
                activation, layer.activation = layer.activation, keras.activations.linear
                try:
                    h = layer(h, training=training)
                finally:
                    layer.activation = activation
            else:
                h = layer(h, training=training)
            outs[index] = h
            if index in fused and (position + 1 == len(layers) or indices[position + 1] != index):
                h = keras.activations.relu(h)
                outs[index + 1] = h
        loss = tf.reduce_sum(h * up)
    keys = list(variables)
    grads = tape.gradient(loss, [xv, *variables.values()], unconnected_gradients=tf.UnconnectedGradients.ZERO)
    by_index = {i.index: i for i in infos}
    param_grads = {
        k: _to_canonical(by_index[int(k.split(".")[0])], k.split(".")[1], np.asarray(g.numpy()))
        for k, g in zip(keys, grads[1:])
    }
    layer_outs = []
    for i in infos:
        y = _nchw(np.asarray(outs[i.index].numpy()))
        layer_outs.append(layout.features_to_chw_order(y, i.output_source) if y.ndim == 2 else y)
    return layer_outs, _nchw(np.asarray(grads[0].numpy())), param_grads


def train(
    model: keras.Model,
    batches: Iterable[tuple[np.ndarray, np.ndarray]],
    optimizer: dict[str, Any],
    on_step: Callable[[int, float], None] | None = None,
) -> np.ndarray:
    """Train in place with the native Keras optimizer and mean sparse cross-entropy computed in the model's
    dtype, one step per batch ``(x, y)`` (x NCHW, converted to NHWC, or (N, F); y integer labels), calling the
    model with ``training=True``; ``on_step(t, loss)`` is called after step ``t`` (counted from 0). Returns the
    per-step losses.

    Keras optimizers keep ``learning_rate`` in a float32 variable and cast Python-float hyperparameters
    through float32; in float64 the hyperparameters are passed as float64 values so the update is float64.
    Adam's epsilon is set per step to torch's placement (see the comment in the loop).
    """
    dtype = dtype_of(model)
    f = np.float64 if dtype == "float64" else float
    lr = f(optimizer["lr"])
    if optimizer["name"] == "sgd":
        opt = keras.optimizers.SGD(learning_rate=lambda: lr, momentum=f(optimizer["momentum"]),
                                   nesterov=optimizer["nesterov"])
    else:
        b1, b2 = optimizer["betas"]
        opt = keras.optimizers.Adam(learning_rate=lambda: lr, beta_1=f(b1), beta_2=f(b2), epsilon=f(optimizer["eps"]))
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True, dtype=dtype)
    variables = model.trainable_variables
    losses = []
    for t, (x, y) in enumerate(batches):
        if optimizer["name"] == "adam":
            # torch adds eps to sqrt(v_hat); Keras adds it to sqrt(v) with the bias correction folded into the
            # step size, which equals torch's rule with eps * sqrt(1 - beta_2**step). Set it per step to match.
            opt.epsilon = f(optimizer["eps"] * np.sqrt(1.0 - optimizer["betas"][1] ** (t + 1)))
        inputs = tf.constant(layout.to_nhwc(x) if x.ndim == 4 else x)
        with tf.GradientTape() as tape:
            loss = loss_fn(tf.constant(y), model(inputs, training=True))
        opt.apply_gradients(zip(tape.gradient(loss, variables), variables))
        losses.append(float(loss.numpy()))
        if on_step is not None:
            on_step(t, losses[-1])
    return np.asarray(losses)


# ---- importing hand-written models ----

_ACTIVATION_NAMES = ("relu", "linear", "sigmoid", "tanh", "silu", "swish", "gelu", "elu", "softmax", "leaky_relu")
_SUPPORTED = (
    "InputLayer, Conv2D ('same'/'valid', strides, dilation, groups, bias, a fused activation), "
    "ZeroPadding2D (folded into the next 'valid' Conv2D or AveragePooling2D), Dense (a fused activation), "
    "Flatten, MaxPooling2D / AveragePooling2D ('valid', or 'same' where torch's padding and ceil_mode give the "
    "same windows), GlobalAveragePooling2D, BatchNormalization, Dropout, ReLU(), LeakyReLU, ELU, Softmax, "
    "Identity, Activation(" + " / ".join(_ACTIVATION_NAMES) + "), and xconv's own layers"
)


def _activation(layer: Any, where: str) -> Any:
    """The spec layer of a Keras layer's ``activation`` (None for linear)."""
    from ..errors import UnsupportedLayerError

    name = keras.activations.serialize(layer.activation)
    if isinstance(name, dict):
        name = name.get("config", name.get("class_name"))
    layers = {"relu": ReLU(), "linear": None, "sigmoid": Sigmoid(), "tanh": Tanh(), "silu": SiLU(), "swish": SiLU(),
              "gelu": GELU(), "elu": ELU(), "softmax": Softmax(1), "leaky_relu": LeakyReLU(0.2)}
    if name not in layers:
        raise UnsupportedLayerError(
            f"from_keras: {where}: activation {name!r} is not supported ({', '.join(_ACTIVATION_NAMES)})"
        )
    return layers[name]


def _same_pool(layer: Any, shape: tuple[int, ...], where: str) -> tuple[tuple[int, int], bool]:
    """torch padding and ceil_mode that give Keras' 'same' pooling windows for this input, or refuse."""
    from .. import shapes
    from ..errors import UnsupportedLayerError

    pads, ceil = [], False
    for size, k, s in zip(shape[1:], layer.pool_size, layer.strides):
        before, after = layout.same_padding(size, k, s, 1)
        out = -(-size // s)
        ok = after - before in (0, 1) and before <= k // 2
        if ok:
            ceil = ceil or after > before
            ok = shapes.pool_output_size(size, k, s, before, 1, after > before) == out
        if not ok:
            raise UnsupportedLayerError(
                f"from_keras: {where}: padding='same' on input size {size} (kernel {k}, stride {s}) has no torch "
                "padding/ceil_mode with the same windows"
            )
        pads.append(before)
    return (pads[0], pads[1]), ceil


def _chain(model: keras.Model) -> list[Any]:
    """The model's layers in order, refusing anything that is not a single straight chain."""
    from ..errors import UnsupportedLayerError

    if len(model.inputs) != 1 or len(model.outputs) != 1:
        raise UnsupportedLayerError("from_keras: the model must have one input and one output")
    layers = [layer for layer in model.layers if not isinstance(layer, keras.layers.InputLayer)]
    if isinstance(model, keras.Sequential):
        return layers
    previous = model.inputs[0]
    for position, layer in enumerate(layers):
        inbound = layer._inbound_nodes
        if len(inbound) != 1 or len(inbound[0].input_tensors) != 1 or inbound[0].input_tensors[0] is not previous:
            raise UnsupportedLayerError(
                f"from_keras: layer {position} {layer.name!r} ({type(layer).__name__}) does not take exactly the "
                "previous layer's output: residual connections and other non-chain graphs are not supported"
            )
        previous = layer.output
    if previous is not model.outputs[0]:
        raise UnsupportedLayerError("from_keras: the model's output is not the end of its layer chain")
    return layers


def import_model(model: keras.Model) -> tuple[Sequential, dict[str, np.ndarray]]:
    """A Keras Sequential or functional chain (hand-written, or a loaded .keras file of an xconv model) ->
    (spec, canonical weights). Pads, crops and subsampling around a conv fold into that conv exactly."""
    import dataclasses

    from .. import shapes
    from ..errors import UnsupportedLayerError

    shape = tuple(model.inputs[0].shape[1:])
    if None in shape or len(shape) not in (1, 3):
        raise UnsupportedLayerError(f"from_keras: the model's input must have a defined (H, W, C) or (F,) shape. Received: {shape}")
    input_shape = (shape[2], shape[0], shape[1]) if len(shape) == 3 else shape
    layers: list[Any] = []
    raw: dict[str, np.ndarray] = {}  # canonical key -> Keras array
    pad: Any = None  # ((t, b), (l, r)) and its mode, from ZeroPadding2D / GatherPad2D
    mode = "zeros"
    crop: Any = None  # (bottom, right) from Cropping2D: the conv after it has one output position there
    pre: Any = None  # strides of a Subsample2D before a 1x1 conv
    last_conv: Any = None  # the Keras Conv2D that produced the last spec layer
    fused_act = False  # whether that conv's fused activation was split into the spec layer after it
    for position, layer in enumerate(_chain(model)):
        where = f"layer {position} {layer.name!r} ({type(layer).__name__})"
        if getattr(layer, "data_format", "channels_last") != "channels_last":
            raise UnsupportedLayerError(f"from_keras: {where}: only data_format='channels_last' is supported")
        before_conv = pad is not None or crop is not None or pre is not None
        if isinstance(layer, (keras.layers.ZeroPadding2D, GatherPad2D)):
            if before_conv:
                raise UnsupportedLayerError(f"from_keras: {where}: two paddings in a row do not fold")
            pad = tuple(tuple(int(v) for v in p) for p in layer.padding)
            mode = layer.mode if isinstance(layer, GatherPad2D) else "zeros"
            continue
        if isinstance(layer, keras.layers.Cropping2D):
            (ct, cb), (cl, cr) = (tuple(int(v) for v in p) for p in layer.cropping)
            if crop is not None or pre is not None or ct or cl:
                raise UnsupportedLayerError(f"from_keras: {where}: only a bottom/right crop before a conv folds")
            crop = (cb, cr)
            continue
        if isinstance(layer, Subsample2D):
            if layer.before_conv:
                if pre is not None:
                    raise UnsupportedLayerError(f"from_keras: {where}: two subsamplings in a row do not fold")
                pre = layer.strides  # must be followed by a 1x1 conv, checked there
                continue
            # the conv may carry a fused activation (split out as the next spec layer): it commutes with
            # subsampling, so the conv is the layer before it
            at = -2 if len(layers) > 1 and last_conv is layers[-2] and fused_act else -1
            if before_conv or not layers or last_conv is not layers[at]:
                raise UnsupportedLayerError(f"from_keras: {where}: a subsampling must follow its conv directly")
            conv = layers[at]
            if any(a > 1 and b > 1 for a, b in zip(conv.stride, layer.strides)):
                raise UnsupportedLayerError(f"from_keras: {where}: subsampling after a strided conv does not fold")
            stride = tuple(a * b for a, b in zip(conv.stride, layer.strides))
            layers[at] = last_conv = dataclasses.replace(conv, stride=stride)
            continue
        is_conv = type(layer) in (keras.layers.Conv2D, GroupedConv2D)
        if pad is not None and crop is None and pre is None and type(layer) is keras.layers.AveragePooling2D:
            (t, b), (l, r) = pad
            k = tuple(layer.pool_size)
            if mode != "zeros" or layer.padding != "valid" or t != b or l != r or t > k[0] // 2 or l > k[1] // 2:
                raise UnsupportedLayerError(
                    f"from_keras: a padding before {where} folds only as symmetric zeros of at most half the kernel "
                    "into a 'valid' AveragePooling2D"
                )
            layers.append(AvgPool2d(k, tuple(layer.strides), (t, l)))
            pad = None
            continue
        if before_conv and not (is_conv and layer.padding == "valid"):
            raise UnsupportedLayerError(f"from_keras: a padding, crop or subsampling before {where} folds only into a 'valid' Conv2D")
        index = len(layers)
        if is_conv:
            act = _activation(layer, where)
            strides = list(layer.strides)
            if pre is not None:
                if tuple(layer.kernel_size) != (1, 1) or tuple(layer.strides) != (1, 1):
                    raise UnsupportedLayerError(f"from_keras: {where}: subsampling folds only into a 1x1 stride-1 conv")
                strides = list(pre)
            if crop is not None:
                for axis, c in enumerate(crop):
                    if c:  # one output position: any stride above c gives the same single output
                        if strides[axis] != 1:
                            raise UnsupportedLayerError(f"from_keras: {where}: a crop before a strided conv does not fold")
                        strides[axis] = c + 1
            c_in = int(layer.kernel.shape[2]) * layer.groups
            conv = Conv2d(c_in, layer.filters, tuple(layer.kernel_size), stride=tuple(strides),
                          padding=pad if pad is not None else layer.padding, dilation=tuple(layer.dilation_rate),
                          groups=layer.groups, bias=layer.use_bias, padding_mode=mode)
            layers.append(conv)
            last_conv = conv
            fused_act = act is not None
            pad, mode, crop, pre = None, "zeros", None, None
            raw[f"{index}.weight"] = np.asarray(layer.kernel.numpy())
            if layer.use_bias:
                raw[f"{index}.bias"] = np.asarray(layer.bias.numpy())
            if act is not None:
                layers.append(act)
        elif isinstance(layer, keras.layers.Dense) and type(layer) is keras.layers.Dense:
            act = _activation(layer, where)
            layers.append(Linear(int(layer.kernel.shape[0]), layer.units, bias=layer.use_bias))
            raw[f"{index}.weight"] = np.asarray(layer.kernel.numpy())
            if layer.use_bias:
                raw[f"{index}.bias"] = np.asarray(layer.bias.numpy())
            if act is not None:
                layers.append(act)
        elif isinstance(layer, keras.layers.ReLU):
            if layer.max_value is not None or layer.negative_slope != 0 or layer.threshold != 0:
                raise UnsupportedLayerError(f"from_keras: {where}: only ReLU() with default arguments is supported")
            layers.append(ReLU())
        elif isinstance(layer, keras.layers.Activation):
            act = _activation(layer, where)
            if act is not None:
                layers.append(act)
        elif isinstance(layer, keras.layers.Flatten):
            layers.append(Flatten())
        elif isinstance(layer, (keras.layers.MaxPooling2D, keras.layers.AveragePooling2D)):
            k, st = tuple(layer.pool_size), tuple(layer.strides)
            current = _current_shape(layers, input_shape)
            padding, ceil = ((0, 0), False) if layer.padding == "valid" else _same_pool(layer, current, where)
            if isinstance(layer, keras.layers.MaxPooling2D):
                layers.append(MaxPool2d(k, st, padding, ceil_mode=ceil))
            else:  # Keras 'same' averages over the input only: count_include_pad=False
                layers.append(AvgPool2d(k, st, padding, ceil_mode=ceil, count_include_pad=False))
        elif isinstance(layer, TorchMaxPool2D):
            (t, _), (l, _) = layer.padding
            layers.append(MaxPool2d(layer.kernel_size, layer.strides, (t, l), layer.dilation, layer.ceil_mode))
        elif isinstance(layer, TorchAvgPool2D):
            (t, _), (l, _) = layer.padding
            layers.append(AvgPool2d(layer.kernel_size, layer.strides, (t, l), layer.ceil_mode, layer.count_include_pad))
        elif isinstance(layer, keras.layers.GlobalAveragePooling2D):
            layers.append(AdaptiveAvgPool2d(1))
            if not layer.keepdims:
                layers.append(Flatten())
        elif isinstance(layer, AdaptiveAvgPool2D):
            layers.append(AdaptiveAvgPool2d(layer.output_size))
        elif isinstance(layer, keras.layers.BatchNormalization):
            current = _current_shape(layers, input_shape)
            axis = layer.axis[0] if isinstance(layer.axis, (list, tuple)) else layer.axis
            if axis % (len(current) + 1) != len(current) or layer.renorm or layer.center != layer.scale:
                raise UnsupportedLayerError(
                    f"from_keras: {where}: only BatchNormalization over the last axis, without renorm, with center "
                    "and scale both on or both off is supported"
                )
            torch_bn = isinstance(layer, TorchBatchNorm)
            momentum = layer.torch_momentum if torch_bn else 1.0 - float(layer.momentum)
            track = layer.track_running_stats if torch_bn else True
            cls = BatchNorm2d if len(current) == 3 else BatchNorm1d
            layers.append(cls(current[0], eps=float(layer.epsilon), momentum=momentum, affine=bool(layer.center),
                              track_running_stats=track))
            state = {"weight": "gamma", "bias": "beta"} if layer.center else {}
            if track:
                state.update(running_mean="moving_mean", running_var="moving_variance")
            for name, attr in state.items():
                raw[f"{index}.{name}"] = np.asarray(getattr(layer, attr).numpy())
            if track:  # a native Keras layer does not count batches
                count = layer.num_batches_tracked.numpy() if torch_bn else 0
                raw[f"{index}.num_batches_tracked"] = np.asarray(count, dtype=np.int64)
        elif isinstance(layer, keras.layers.Dropout):
            if layer.noise_shape is not None:
                raise UnsupportedLayerError(f"from_keras: {where}: Dropout with a noise_shape is not supported")
            layers.append(Dropout(float(layer.rate)))
        elif isinstance(layer, keras.layers.LeakyReLU):
            layers.append(LeakyReLU(float(layer.negative_slope)))
        elif isinstance(layer, keras.layers.ELU):
            layers.append(ELU(float(layer.alpha)))
        elif isinstance(layer, keras.layers.Softmax):
            rank = len(_current_shape(layers, input_shape)) + 1
            axes = layer.axis if isinstance(layer.axis, (list, tuple)) else [layer.axis]
            if len(axes) != 1 or axes[0] % rank == 0:
                raise UnsupportedLayerError(f"from_keras: {where}: only a Softmax over one non-batch axis is supported")
            axis = axes[0] % rank
            layers.append(Softmax(layout.canonical_axis(axis, rank)))
        elif isinstance(layer, keras.layers.Identity):
            layers.append(Identity())
        elif isinstance(layer, TorchActivation):
            fn = layer.function
            layers.append({"leaky_relu": lambda: LeakyReLU(layer.param), "elu": lambda: ELU(layer.param),
                           "gelu": lambda: GELU(), "gelu_tanh": lambda: GELU("tanh")}[fn]())
        else:
            raise UnsupportedLayerError(f"from_keras: {where} is not supported; supported: {_SUPPORTED}")
    if pad is not None or crop is not None or pre is not None:
        raise UnsupportedLayerError("from_keras: a padding, crop or subsampling is not followed by a Conv2D")
    spec = Sequential(*layers, input_shape=input_shape)
    infos = {i.index: i for i in shapes.infer(spec)}
    weights = {}
    for key, value in raw.items():
        index, name = key.split(".")
        weights[key] = np.array(_to_canonical(infos[int(index)], name, value))
    return spec, weights


def _current_shape(layers: list[Any], input_shape: tuple[int, ...]) -> tuple[int, ...]:
    from .. import shapes

    return shapes.infer(Sequential(*layers, input_shape=input_shape))[-1].output_shape if layers else input_shape


def read_keras_file(path: str) -> keras.Model:
    """Load a ``.keras`` file (xconv's own layers are registered by importing this module)."""
    return keras.models.load_model(path)
