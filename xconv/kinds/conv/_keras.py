"""Convolutions: Conv2d and ConvTranspose2d: the Keras parts (built layers and their weight layouts, and the Keras layers that import as these
kinds)."""

from __future__ import annotations

from typing import Any

from ... import layout
from ..._info import LayerInfo
from ...backends._tf_env import keras, tf
from .._keras_names import keras_name
from ..pool._keras import _pair
from . import Conv2d, ConvTranspose2d

#: Work around a oneDNN bug in TF 2.21 (see ``_conv2d``). Only tests turn it off, to show the bug is real.
ONEDNN_WORKAROUND = True


def _conv_plan(info: LayerInfo) -> tuple[Any, ...]:
    """How a Conv2d runs in Keras: (dilation, strides, crop, pointwise, pre_strides, subsample, conv_strides)."""
    layer: Conv2d = info.layer  # type: ignore[assignment]
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
    return dilation, strides, crop, pointwise, pre_strides, subsample, conv_strides


def _conv2d(info: LayerInfo, x: Any, dtype: str, activation: str | None = None) -> Any:
    layer: Conv2d = info.layer  # type: ignore[assignment]
    name = keras_name(info)
    _, h, w = info.input_shape
    padding = info.padding
    assert padding is not None
    kernel = layer.kernel_size
    dilation, strides, crop, pointwise, pre_strides, subsample, conv_strides = _conv_plan(info)
    keras_padding = "valid"
    native_same = tuple(layout.same_padding(n, k, s, d) for n, k, s, d in zip((h, w), kernel, conv_strides, dilation))
    if padding == ((0, 0), (0, 0)):
        pass
    elif (
        layer.padding_mode == "zeros" and padding == native_same and crop == [0, 0] and not subsample and not pointwise
    ):
        keras_padding = "same"  # provably TF's own rule for this size, stride and dilation
    elif layer.padding_mode == "zeros":
        x = keras.layers.ZeroPadding2D(padding, dtype=dtype, name=f"{name}_pad")(x)
    else:
        x = GatherPad2D(padding, (h, w), layer.padding_mode, dtype=dtype, name=f"{name}_pad")(x)
    if crop != [0, 0]:
        x = keras.layers.Cropping2D(((0, crop[0]), (0, crop[1])), dtype=dtype, name=f"{name}_crop")(x)
    if pointwise:
        x = Subsample2D(pre_strides, before_conv=True, dtype=dtype, name=f"{name}_subsample")(x)
    if is_depthwise(info):
        x = keras.layers.DepthwiseConv2D(
            kernel,
            strides=conv_strides,
            padding=keras_padding,
            depth_multiplier=layer.out_channels // layer.groups,
            dilation_rate=dilation,
            use_bias=layer.bias,
            activation=activation,
            dtype=dtype,
            name=name,
        )(x)
        if subsample:
            x = Subsample2D(strides, dtype=dtype, name=f"{name}_stride")(x)
        return x
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


def is_depthwise(info: LayerInfo) -> bool:
    """A conv with one group per input channel (a channel multiplier of out/in) that Keras' DepthwiseConv2D can
    run: one fused kernel instead of a convolution per group. TensorFlow's depthwise kernel takes equal strides
    only ("Current implementation only supports equal length strides"), so other strides stay grouped convs."""
    layer = info.layer
    if not (isinstance(layer, Conv2d) and layer.groups > 1 and layer.groups == layer.in_channels):
        return False
    conv_strides = _conv_plan(info)[-1]
    return bool(conv_strides[0] == conv_strides[1])


def _conv_transpose(info: LayerInfo, x: Any, dtype: str) -> Any:
    """``Conv2DTranspose`` ('valid', torch's output_padding) and a ``Cropping2D`` of torch's padding; with groups
    or dilation (which Conv2DTranspose lacks on CPU) or a strided 1x1 kernel, :class:`TorchConvTranspose2D`."""
    layer: ConvTranspose2d = info.layer  # type: ignore[assignment]
    name = keras_name(info)
    dilation = tuple(1 if k == 1 else d for k, d in zip(layer.kernel_size, layer.dilation))  # one tap: no spread
    native_padding = all(op < s for op, s in zip(layer.output_padding, layer.stride))  # Keras' own rule
    # TF 2.21 with oneDNN corrupts the heap in the float32 filter gradient of a strided 1x1 transposed conv
    # whose output has rows or columns past the last input pixel (output_padding; under glibc's malloc checks
    # "free(): invalid pointer" or a failed oneDNN reorder within a few hundred calls): the same kernel as the
    # strided 1x1 conv above. TorchConvTranspose2D computes a strided 1x1 kernel as a per-pixel product and zero
    # insertion instead, so xconv never emits that op.
    pointwise = tuple(layer.kernel_size) == (1, 1) and max(layer.stride) > 1
    if layer.groups == 1 and dilation == (1, 1) and native_padding and not pointwise:
        x = keras.layers.Conv2DTranspose(
            layer.out_channels,
            layer.kernel_size,
            strides=layer.stride,
            padding="valid",
            output_padding=layer.output_padding,
            use_bias=layer.bias,
            dtype=dtype,
            name=name,
        )(x)
        (ph, pw) = layer.padding
        if ph or pw:
            x = keras.layers.Cropping2D(((ph, ph), (pw, pw)), dtype=dtype, name=f"{name}_crop")(x)
        return x
    return TorchConvTranspose2D(
        layer.out_channels,
        layer.kernel_size,
        strides=layer.stride,
        groups=layer.groups,
        torch_padding=layer.padding,
        torch_output_padding=layer.output_padding,
        torch_dilation=layer.dilation,  # kept as given (a 1-tap axis spreads nothing) so the layer reads back
        use_bias=layer.bias,
        dtype=dtype,
        name=name,
    )(x)


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


BUILDERS: dict[type, Any] = {
    ConvTranspose2d: _conv_transpose,
    Conv2d: _conv2d,
}


def _conv_layout(info: LayerInfo, name: str) -> str:
    if name != "weight":
        return "same"
    if isinstance(info.layer, ConvTranspose2d):
        return "conv_transpose"
    return "depthwise" if is_depthwise(info) else "conv"


LAYOUTS: dict[type, Any] = {Conv2d: _conv_layout, ConvTranspose2d: _conv_layout}
