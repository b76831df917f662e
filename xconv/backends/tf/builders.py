"""Keras builders: one per layer kind, and the functional model of a spec's graph."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any, cast

import numpy as np

from ... import layout, resample
from ...shapes import LayerInfo, avgpool_divisor, concat_axis, narrow_axis, shuffle_order, softmax_axis
from ...spec import (
    ELU,
    GELU,
    AdaptiveAvgPool2d,
    AvgPool2d,
    BatchNorm1d,
    BatchNorm2d,
    ChannelLinear,
    ChannelShuffle,
    Conv2d,
    ConvTranspose2d,
    Dropout,
    Flatten,
    GroupNorm,
    Hardsigmoid,
    Hardswish,
    Hardtanh,
    Identity,
    LayerNorm,
    LayerScale,
    LeakyReLU,
    Linear,
    MaxPool2d,
    Narrow,
    Normalization,
    PReLU,
    ReLU,
    Rescaling,
    Sequential,
    Sigmoid,
    SiLU,
    Softmax,
    StochasticDepth,
    Tanh,
    Upsample,
    ZeroPad2d,
)
from ._env import keras
from .layers import (
    AdaptiveAvgPool2D,
    ChannelGather,
    ChannelNormalization,
    ChannelRescaling,
    ChannelScale,
    GatherPad2D,
    GroupedConv2D,
    Subsample2D,
    TorchActivation,
    TorchAvgPool2D,
    TorchBatchNorm,
    TorchConvTranspose2D,
    TorchMaxPool2D,
    TorchUpsample2D,
)
from .layers import (
    Narrow as NarrowLayer,
)

#: Work around a oneDNN bug in TF 2.21 (see ``_conv2d``). Only tests turn it off, to show the bug is real.
ONEDNN_WORKAROUND = True


_PREFIX = {
    "BatchNorm2d": "batchnorm",
    "BatchNorm1d": "batchnorm",
    "MaxPool2d": "maxpool",
    "AvgPool2d": "avgpool",
    "AdaptiveAvgPool2d": "adaptiveavgpool",
}


def keras_name(info: LayerInfo) -> str:
    """The Keras layer name of a node: its spec name; else, under a named container, its key (``stem.0``);
    else the kind and positional key (``conv2d_0``, ``batchnorm_1.0.1``, ``add_3``). Helper layers around it
    add a suffix (``_pad``, ``_crop``, ...). So importing the Keras model gives back the same weight keys."""
    if info.name is not None:
        return info.name
    if not info.key.split(".")[0].isdigit():  # under a named Sequential or combinator: the key says it all
        return info.key
    return default_keras_name(info.kind, info.key)


def default_keras_name(kind: str, key: str) -> str:
    """The Keras name of an unnamed node at a positional key: ``conv2d_0``, ``batchnorm_1.0.1``, ``add_3``."""
    return f"{_PREFIX.get(kind, kind.lower())}_{key}"


def fused_relus(infos: list[LayerInfo]) -> dict[int, int]:
    """Conv or Linear node -> the ReLU node that Keras runs inside it (``activation="relu"``, as hand-written
    Keras models do; it saves one layer call per pair in eager mode): only where the ReLU is the one reader
    of the conv's output, so that no other node needs the pre-activation tensor. Weights and per-node
    tracing are unaffected; ``from_keras`` splits the ReLU out again."""
    from ...graph import consumers

    readers = consumers(infos)
    out = {}
    for info in infos:
        nxt = readers.get(info.index, [])
        if isinstance(info.layer, (Conv2d, Linear)) and len(nxt) == 1 and isinstance(infos[nxt[0]].layer, ReLU):
            out[info.index] = nxt[0]
    return out


def _join(info: LayerInfo, args: list[Any], dtype: str) -> Any:
    name = keras_name(info)
    if info.kind == "Concat":
        axis = layout.keras_axis(concat_axis(info), len(info.input_shape) + 1)
        return keras.layers.Concatenate(axis=axis, dtype=dtype, name=name)(args)
    cls = {"Add": keras.layers.Add, "Subtract": keras.layers.Subtract}.get(info.kind, keras.layers.Multiply)
    return cls(dtype=dtype, name=name)(args)


def _history(output: Any, inputs: list[Any]) -> list[str]:
    """Names of the Keras layers between ``inputs`` and ``output`` (one node's layers), first to last."""
    names: list[str] = []
    t = output
    stop = {id(i) for i in inputs}
    while id(t) not in stop:
        op = t._keras_history.operation
        names.append(op.name)
        node = op._inbound_nodes[t._keras_history.node_index]
        if len(node.input_tensors) != 1:
            break  # a merge layer: the join itself
        t = node.input_tensors[0]
    return names[::-1]


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


def _linear(info: LayerInfo, x: Any, dtype: str, activation: str | None = None) -> Any:
    layer: Linear = info.layer  # type: ignore[assignment]
    return keras.layers.Dense(
        layer.out_features, use_bias=layer.bias, activation=activation, dtype=dtype, name=keras_name(info)
    )(x)


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


def _batchnorm(info: LayerInfo, x: Any, dtype: str) -> Any:
    layer = cast("BatchNorm2d | BatchNorm1d", info.layer)
    return TorchBatchNorm(
        torch_momentum=layer.momentum,
        track_running_stats=layer.track_running_stats,
        axis=-1,
        epsilon=layer.eps,
        center="bias" in layer.affine_params,
        scale="weight" in layer.affine_params,
        trainable=not layer.frozen,  # Keras: a layer that is not trainable normalises in inference mode
        dtype=dtype,
        name=keras_name(info),
    )(x)


def _prelu(info: LayerInfo, x: Any, dtype: str) -> Any:
    """Keras' PReLU (with torch's gradient at 0) with the slope shared over the pixels (one per channel) or over
    everything (one slope)."""
    rank = len(info.input_shape)
    one = cast(PReLU, info.layer).num_parameters == 1
    shared = list(range(1, rank + 1)) if one else (list(range(1, rank)) or None)
    from .layers import TorchPReLU

    return TorchPReLU(shared_axes=shared, dtype=dtype, name=keras_name(info))(x)


def _act_builder(function: str, param: float = 0.0) -> Callable[[LayerInfo, Any, str], Any]:
    """Native Keras where equal in this dtype; TorchActivation otherwise."""

    def make(info: LayerInfo, x: Any, dtype: str) -> Any:
        name = keras_name(info)
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
    return keras.layers.Softmax(axis=keras_axis, dtype=dtype, name=keras_name(info))(x)


def _named(cls: Any, *args: Any) -> Callable[[LayerInfo, Any, str], Any]:
    return lambda info, x, dtype: cls(*args, dtype=dtype, name=keras_name(info))(x)


def native_upsampling(info: LayerInfo, dtype: str) -> str | None:
    """The ``UpSampling2D`` interpolation that computes this Upsample node, or None: integer factors whose
    source rows are torch's (nearest: repeat; bilinear: TensorFlow's half-pixel weights, which it computes in
    float32 even for float64 tensors, measured 1e-6 from torch in float64, so float32 models only)."""
    layer: Upsample = info.layer  # type: ignore[assignment]
    (_, h, w), (_, ho, wo) = info.input_shape, info.output_shape
    if ho % h or wo % w:
        return None
    factors = (ho // h, wo // w)
    mine = resample.layer_taps(layer, (h, w), (ho, wo))
    if layer.mode != "bilinear":
        repeat = all((t.i0 == np.arange(n * f) // f).all() for t, n, f in zip(mine, (h, w), factors))
        return "nearest" if repeat else None
    theirs = [resample.taps(n, n * f, "bilinear", False, None) for n, f in zip((h, w), factors)]
    same = all(
        (a.i0 == b.i0).all() and (a.i1 == b.i1).all() and np.allclose(a.w1, b.w1, rtol=0, atol=1e-12)
        for a, b in zip(mine, theirs)
    )
    return "bilinear" if same and dtype == "float32" else None


def _upsample(info: LayerInfo, x: Any, dtype: str) -> Any:
    layer: Upsample = info.layer  # type: ignore[assignment]
    (_, h, w), (_, ho, wo) = info.input_shape, info.output_shape
    native = native_upsampling(info, dtype)
    if native is not None:
        return keras.layers.UpSampling2D((ho // h, wo // w), interpolation=native, dtype=dtype, name=keras_name(info))(
            x
        )
    return TorchUpsample2D(
        (h, w),
        (ho, wo),
        layer.mode,
        layer.align_corners,
        layer.size,
        layer.scale_factor,
        dtype=dtype,
        name=keras_name(info),
    )(x)


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


_BUILDERS: dict[type, Callable[..., Any]] = {  # (info, x, dtype), conv and Dense also activation=
    ConvTranspose2d: _conv_transpose,
    Upsample: _upsample,
    Conv2d: _conv2d,
    ReLU: _named(keras.layers.ReLU),
    Flatten: _named(keras.layers.Flatten),
    Linear: _linear,
    MaxPool2d: _maxpool,
    AvgPool2d: _avgpool,
    AdaptiveAvgPool2d: _adaptive,
    BatchNorm2d: _batchnorm,
    BatchNorm1d: _batchnorm,
    Dropout: lambda info, x, dtype: keras.layers.Dropout(info.layer.p, dtype=dtype, name=keras_name(info))(x),
    LeakyReLU: _act_builder("leaky_relu"),
    Sigmoid: _named(keras.layers.Activation, "sigmoid"),
    Tanh: _named(keras.layers.Activation, "tanh"),
    GELU: _gelu,
    ELU: _act_builder("elu"),
    SiLU: _named(keras.layers.Activation, "silu"),
    Softmax: _softmax,
    Identity: _named(keras.layers.Identity),
    Hardtanh: lambda info, x, dtype: (
        keras.layers.ReLU(max_value=6.0, dtype=dtype, name=keras_name(info))(x)
        if (info.layer.min_val, info.layer.max_val) == (0.0, 6.0)
        else TorchActivation(
            "hardtanh",
            info.layer.min_val,
            info.layer.max_val,
            dtype=dtype,
            name=keras_name(info),
        )(x)
    ),
    Hardsigmoid: lambda info, x, dtype: TorchActivation("hardsigmoid", dtype=dtype, name=keras_name(info))(x),
    Hardswish: lambda info, x, dtype: TorchActivation("hardswish", dtype=dtype, name=keras_name(info))(x),
    StochasticDepth: lambda info, x, dtype: keras.layers.Dropout(
        info.layer.p,
        noise_shape=(None if info.layer.mode == "row" else 1,) + (1,) * len(info.input_shape),
        dtype=dtype,
        name=keras_name(info),
    )(x),
    Rescaling: lambda info, x, dtype: ChannelRescaling(
        info.layer.scale,
        info.layer.offset,
        dtype=dtype,
        name=keras_name(info),
    )(x),
    Normalization: lambda info, x, dtype: ChannelNormalization(dtype=dtype, name=keras_name(info))(x),
    LayerNorm: lambda info, x, dtype: keras.layers.LayerNormalization(
        axis=-1,
        epsilon=info.layer.eps,
        scale=info.layer.elementwise_affine,
        center=info.layer.bias,
        dtype=dtype,
        name=keras_name(info),
    )(x),
    GroupNorm: lambda info, x, dtype: keras.layers.GroupNormalization(
        groups=info.layer.num_groups,
        axis=-1,
        epsilon=info.layer.eps,
        center=info.layer.affine,
        scale=info.layer.affine,
        dtype=dtype,
        name=keras_name(info),
    )(x),
    PReLU: _prelu,
    ChannelLinear: _linear,
    LayerScale: lambda info, x, dtype: ChannelScale(dtype=dtype, name=keras_name(info))(x),
    Narrow: lambda info, x, dtype: NarrowLayer(
        layout.keras_axis(narrow_axis(info), len(info.input_shape) + 1),
        info.layer.start,
        info.layer.length,
        dtype=dtype,
        name=keras_name(info),
    )(x),
    ChannelShuffle: lambda info, x, dtype: ChannelGather(
        shuffle_order(info.input_shape[0], info.layer.groups),
        info.layer.groups,
        dtype=dtype,
        name=keras_name(info),
    )(x),
    ZeroPad2d: lambda info, x, dtype: keras.layers.ZeroPadding2D(info.padding, dtype=dtype, name=keras_name(info))(x),
}


def build(spec: Sequential, infos: list[LayerInfo], weights: dict[str, np.ndarray], dtype: str) -> keras.Model:
    from .weights import set_weights

    shape = spec.input_shape
    assert shape is not None
    keras_shape = (shape[1], shape[2], shape[0]) if len(shape) == 3 else shape
    inputs = keras.Input(shape=keras_shape, dtype=dtype, name="input")
    values: dict[int, Any] = {-1: inputs}
    fused = fused_relus(infos)
    relu_of = {relu: conv for conv, relu in fused.items()}
    node_layers: dict[int, list[str]] = {}
    try:
        _build_nodes(infos, values, fused, relu_of, node_layers, dtype)
        limit = sys.getrecursionlimit()
        sys.setrecursionlimit(max(limit, 20 * len(infos) + 1000))
        try:
            model = keras.Model(inputs, _output_order(infos, values[infos[-1].index], dtype), name="xconv")
        finally:
            sys.setrecursionlimit(limit)
    except ValueError as e:
        if "is used 2 times" not in str(e) and "unique" not in str(e):
            raise
        from ...errors import SpecError

        raise SpecError(
            f"Keras refuses the layer names of this spec ({e}); a name may not equal another node's "
            "Keras name (unnamed nodes are called kind_key, e.g. conv2d_1; helpers add _pad, _crop, "
            "_subsample, _stride) nor 'input'"
        ) from None
    model.xconv_spec = spec
    #: node index -> the names of the Keras layers that compute it, in order (for tracing)
    model.xconv_node_layers = node_layers
    set_weights(model, infos, weights)
    return model


def _output_order(infos: list[LayerInfo], y: Any, dtype: str) -> Any:
    """The model's output, features flattened from a map put back in C,H,W order (the torch model's vector):
    a Keras Flatten gives H,W,C order, which a Dense after it absorbs in its weights, but an output has no
    weights to absorb it."""
    from .layers import FeatureOrder

    perm = layout.flatten_permutation(infos[-1].output_source)
    if perm is None:
        return y
    order = np.argsort(perm)
    return FeatureOrder(order, dtype=dtype, name=f"{keras_name(infos[-1])}_chw_order")(y)


def _build_nodes(
    infos: list[LayerInfo],
    values: dict[int, Any],
    fused: dict[int, int],
    relu_of: dict[int, int],
    node_layers: dict[int, list[str]],
    dtype: str,
) -> None:
    for info in infos:
        args = [values[i] for i in info.inputs]
        if info.index in relu_of:  # this ReLU runs inside the conv / Dense before it
            values[info.index] = args[0]
            node_layers[info.index] = []
            continue
        if info.is_join:
            values[info.index] = _join(info, args, dtype)
        elif info.index in fused:
            values[info.index] = _BUILDERS[type(info.layer)](info, args[0], dtype, activation="relu")
        else:
            values[info.index] = _BUILDERS[type(info.layer)](info, args[0], dtype)
        node_layers[info.index] = [keras_name(info)] if info.is_join else _history(values[info.index], args)
    # (keras.Model walks the functional graph recursively, a few frames per layer: a 1,000-layer spec exceeds
    # Python's default limit of 1,000 frames, so build() raises it for that call only.)
