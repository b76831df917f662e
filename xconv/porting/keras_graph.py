"""Keras front-end: a Keras model's functional graph -> raw DAG -> nested spec and canonical weights.

Each layer call becomes a raw node; passes then fold what xconv's own builder (or a hand-written model) put
around a conv back into it — explicit padding, a crop, a subsampling, a fused activation — each only where the
tensor in between has one reader."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from .. import layout, shapes
from ..backends.tf import (
    AdaptiveAvgPool2D,
    ChannelNormalization,
    ChannelRescaling,
    GatherPad2D,
    GroupedConv2D,
    Subsample2D,
    TorchActivation,
    TorchAvgPool2D,
    TorchBatchNorm,
    TorchMaxPool2D,
    keras,
)
from ..backends.tf.layers import ChannelGather, ChannelScale, FeatureOrder, TorchPReLU
from ..backends.tf.layers import Narrow as NarrowLayer
from ..backends.tf.weights import _to_canonical
from ..errors import UnsupportedLayerError
from ..spec import (
    ELU,
    GELU,
    AdaptiveAvgPool2d,
    AvgPool2d,
    BatchNorm1d,
    BatchNorm2d,
    ChannelLinear,
    ChannelShuffle,
    Conv2d,
    Dropout,
    Flatten,
    GroupNorm,
    Hardsigmoid,
    Hardswish,
    Hardtanh,
    Identity,
    Layer,
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
    ZeroPad2d,
)
from ._graph import Names, Raw, drop, readers, to_spec
from ._keras_resampling import CONV_TRANSPOSE, UPSAMPLE, conv_transpose, fold_transpose_crops, upsample

# ---- importing hand-written models ----

_ACTIVATION_NAMES = (
    "relu",
    "linear",
    "sigmoid",
    "tanh",
    "silu",
    "swish",
    "gelu",
    "elu",
    "softmax",
    "leaky_relu",
    "relu6",
    "hard_sigmoid",
    "hard_swish",
)
_SUPPORTED = (
    "InputLayer, Conv2D ('same'/'valid', strides, dilation, groups, bias, a fused activation), DepthwiseConv2D, "
    "SeparableConv2D, ZeroPadding2D (folded into the next 'valid' Conv2D or AveragePooling2D where exact), Add, "
    "Multiply, Subtract, Concatenate, Dense (a fused activation), Flatten, Reshape of a 1x1 map, MaxPooling2D / "
    "AveragePooling2D ('valid', or 'same' where torch's padding and ceil_mode give the same windows), "
    "GlobalAveragePooling2D, GlobalMaxPooling2D, BatchNormalization (also scale=False or center=False), LayerNormalization (channel "
    "axis), Dense on an (H, W, C) map (per pixel), keras.applications' LayerScale and StochasticDepth, nested "
    "models (inlined), Rescaling, Normalization (channel axis), Dropout (also whole samples: stochastic depth), ReLU() and "
    "ReLU(max_value), LeakyReLU, ELU, Softmax, Identity, x + 3 -> ReLU(6) -> * (1/6) (hard sigmoid), "
    "Activation(" + " / ".join(_ACTIVATION_NAMES) + "), Conv2DTranspose ('valid'; 'same' where torch's padding "
    "and output_padding give the same crop; a Cropping2D after it folds in), UpSampling2D (nearest, bilinear), "
    "Resizing (nearest, bilinear), and xconv's own layers"
)


def _activation(layer: Any, where: str) -> Any:
    """The spec layer of a Keras layer's ``activation`` (None for linear). Only Keras' own functions map: a
    user function that happens to be called ``relu`` is refused, never taken for the built-in."""
    a = keras.activations
    known = [
        (a.relu, ReLU()),
        (a.linear, None),
        (a.sigmoid, Sigmoid()),
        (a.tanh, Tanh()),
        (a.silu, SiLU()),
        (a.gelu, GELU()),
        (a.elu, ELU()),
        (a.softmax, Softmax(1)),
        (a.leaky_relu, LeakyReLU(0.2)),
        (a.relu6, Hardtanh(0.0, 6.0)),
        (a.hard_sigmoid, Hardsigmoid()),
        (a.hard_swish, Hardswish()),
    ]
    fn = layer.activation
    for function, spec_layer in known:
        if fn is function:
            return spec_layer
    label = getattr(fn, "__qualname__", None) or repr(fn)
    module = getattr(fn, "__module__", None) or "?"
    if module.startswith("keras."):
        raise UnsupportedLayerError(
            f"from_keras: {where}: activation {label!r} is not supported ({', '.join(_ACTIVATION_NAMES)})"
        )
    raise UnsupportedLayerError(
        f"from_keras: {where}: activation {label!r} (from {module}) is not one of Keras' own "
        f"{', '.join(_ACTIVATION_NAMES)}"
    )


def _same_pool(layer: Any, shape: tuple[int, ...], where: str) -> tuple[tuple[int, int], bool]:
    """torch padding and ceil_mode that give Keras' 'same' pooling windows for this input, or refuse."""
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


def _calls(model: keras.Model, inline: bool = False, depth: int = 0) -> list[tuple[Any, list[Any], Any]]:
    """The model's layer calls in topological order: (layer, input tensors, output tensor). With ``inline``, a
    nested model's call is replaced by its own calls, between two aliases ``(None, [tensor], same tensor)``
    that tie its input and output to the outer graph's tensors."""
    if len(model.inputs) != 1 or len(model.outputs) != 1:
        where = "the model" if depth == 0 else f"the nested model {model.name!r}"
        raise UnsupportedLayerError(f"from_keras: {where} must have one input and one output")
    if depth > 16:
        raise UnsupportedLayerError(f"from_keras: models nested more than 16 deep ({model.name!r})")
    start = id(model.inputs[0])
    order: list[tuple[Any, list[Any], Any]] = []
    done: set[int] = {start}
    stack: list[tuple[Any, bool]] = [(model.outputs[0], False)]
    while stack:
        t, expanded = stack.pop()
        if id(t) in done:
            continue
        history = getattr(t, "_keras_history", None)
        if history is None:
            raise UnsupportedLayerError(f"from_keras: a tensor of the graph has no producing layer ({t!r})")
        op = history.operation
        node = op._inbound_nodes[history.node_index]
        inputs = list(node.input_tensors)
        if expanded:
            if len(node.output_tensors) != 1:
                raise UnsupportedLayerError(f"from_keras: layer {op.name!r} ({type(op).__name__}) has several outputs")
            done.add(id(t))
            if inline and isinstance(op, keras.Model):
                if len(inputs) != 1:
                    raise UnsupportedLayerError(f"from_keras: nested model {op.name!r} takes {len(inputs)} inputs")
                order.append((None, inputs, op.inputs[0]))
                order.extend(_calls(op, inline, depth + 1))
                order.append((None, [op.outputs[0]], t))
            else:
                order.append((op, inputs, t))
            continue
        stack.append((t, True))
        stack.extend((i, False) for i in reversed(inputs) if id(i) not in done)
    return order


def _default_names(spec: Sequential, auto: set[str]) -> Sequential:
    """The spec without the names xconv's own builder gives unnamed nodes (``conv2d_1.0.0`` at that path) and
    without the names the importer made up (``auto``), so an xconv model imports back to its spec."""
    import dataclasses

    from ..backends.tf.builders import default_keras_name
    from ..spec import Use

    used: set[str] = set()  # names a Use refers to: kept, or the reference would dangle

    def refs(item: Any) -> None:
        if isinstance(item, Use) and item.source is not None:
            used.add(item.source)
        for c in getattr(item, "layers", getattr(item, "branches", ())):
            refs(c)

    for c in spec.layers:
        refs(c)

    def child(prefix: str, i: int) -> str:
        return f"{prefix}.{i}" if prefix else str(i)

    def strip(item: Any, key: str) -> Any:
        """``key``: the node's key if it ends up unnamed (its parent's key and its index)."""
        if isinstance(item, Use):
            return item
        name = item.name
        default = default_keras_name(item.kind, key)
        keep = name is not None and (name in used or name not in auto and name != default)
        prefix = name if keep else key
        if isinstance(item, Sequential):
            keep = name is not None and (name in used or name not in auto)  # (a Sequential's name is its own)
            prefix = name if keep else key
            children = [strip(c, child(prefix, i)) for i, c in enumerate(item.layers)]
            return Sequential(*children, name=name if keep else None)
        if hasattr(item, "branches"):
            branches = [strip(b, child(prefix, i)) for i, b in enumerate(item.branches)]
            return item.rebuild(branches, name if keep else None)
        return item if keep or name is None else dataclasses.replace(item, name=None)

    return Sequential(*(strip(c, str(i)) for i, c in enumerate(spec.layers)), input_shape=spec.input_shape)


def import_model(model: keras.Model) -> tuple[Sequential, dict[str, np.ndarray]]:
    """A Keras Sequential or functional model (hand-written, or a loaded .keras file of an xconv model) ->
    (spec, canonical weights)."""
    import dataclasses

    shape = tuple(model.inputs[0].shape[1:])
    if None in shape or len(shape) not in (1, 3):
        raise UnsupportedLayerError(
            f"from_keras: the model's input must have a defined (H, W, C) or (F,) shape. Received: {shape}"
        )
    input_shape = (shape[2], shape[0], shape[1]) if len(shape) == 3 else shape
    calls = _calls(model, inline=True)
    names = Names({layer.name for layer, _, _ in calls if layer is not None})
    auto: set[str] = set()
    nodes: list[Raw] = [Raw("input", "input", [])]
    index: dict[int, int] = {id(model.inputs[0]): 0}
    raw: dict[int, dict[str, np.ndarray]] = {}  # raw node -> canonical param name -> Keras array

    def add(node: Raw, weights: dict[str, np.ndarray] | None = None) -> int:
        nodes.append(node)
        if weights:
            raw[len(nodes) - 1] = weights
        return len(nodes) - 1

    called: dict[int, int] = {}
    for layer, _, _ in calls:
        called[id(layer)] = called.get(id(layer), 0) + 1
    for layer, inputs, out in calls:
        if layer is None:  # into or out of a nested model: the same tensor
            index[id(out)] = index[id(inputs[0])]
            continue
        where = f"layer {layer.name!r} ({type(layer).__name__})"
        quantized = getattr(layer, "quantization_mode", None) or getattr(
            getattr(layer, "dtype_policy", None), "quantization_mode", None
        )
        if quantized:
            raise UnsupportedLayerError(
                f"from_keras: {where} is quantized ({quantized}): its kernel holds integers with a separate scale; "
                "xconv ports float32 or float64 models, so port the model before quantizing it"
            )
        if called[id(layer)] > 1 and layer.weights:
            raise UnsupportedLayerError(
                f"from_keras: {where} is called {called[id(layer)]} times: its weights are shared between calls, "
                "which xconv specs do not express"
            )
        if getattr(layer, "data_format", "channels_last") != "channels_last":
            raise UnsupportedLayerError(f"from_keras: {where}: only data_format='channels_last' is supported")
        ids = [index[id(t)] for t in inputs]
        name = names.take(layer.name, own=True)
        rank = len(out.shape) - 1
        scalar = _scalar_op(layer, out)
        if scalar is not None:  # x + 3.0, x * (1 / 6): operation nodes with a constant (MobileNetV3's hard sigmoid)
            index[id(out)] = add(Raw(name, "keras_scalar", [index[id(inputs[0])]], payload=scalar))
            continue
        if type(layer) is keras.layers.Reshape:
            in_shape = tuple(inputs[0].shape[1:])
            index[id(out)] = add(
                Raw(name, "keras_reshape", [index[id(inputs[0])]], payload=(in_shape, tuple(layer.target_shape)))
            )
            continue
        tensor_op = _tensor_op(layer, ids)
        if tensor_op is not None:  # x + y, x * y as operation nodes (keras.applications' ConvNeXt blocks)
            index[id(out)] = add(Raw(name, tensor_op, ids, owned=True))
            continue
        if isinstance(
            layer, (keras.layers.Add, keras.layers.Multiply, keras.layers.Subtract, keras.layers.Concatenate)
        ):
            if type(layer) not in (
                keras.layers.Add,
                keras.layers.Multiply,
                keras.layers.Subtract,
                keras.layers.Concatenate,
            ):
                raise UnsupportedLayerError(f"from_keras: {where}: subclasses of merge layers are not supported")
            if isinstance(layer, keras.layers.Concatenate):
                axis = layer.axis % (rank + 1)
                if axis == 0:
                    raise UnsupportedLayerError(f"from_keras: {where}: concatenation along the batch axis")
                index[id(out)] = add(Raw(name, "cat", ids, dim=layout.canonical_axis(axis, rank + 1), owned=True))
            else:
                op = {keras.layers.Add: "add", keras.layers.Subtract: "sub"}.get(type(layer), "mul")
                index[id(out)] = add(Raw(name, op, ids, owned=True))
            continue
        if len(ids) != 1:
            raise UnsupportedLayerError(
                f"from_keras: {where} takes {len(ids)} inputs; of the layers that take several, xconv supports "
                "Add, Subtract, Multiply and Concatenate (and x + y, x - y, x * y)"
            )
        src = ids[0]
        in_shape = tuple(inputs[0].shape[1:])
        current = (in_shape[2], in_shape[0], in_shape[1]) if len(in_shape) == 3 else in_shape
        if type(layer) is keras.layers.ZeroPadding2D:
            pad = tuple(tuple(int(v) for v in p) for p in layer.padding)
            (t, b), (l, r) = pad
            index[id(out)] = add(Raw(name, "layer", [src], layer=ZeroPad2d((l, r, t, b), name=name)))
        elif type(layer) is GatherPad2D:
            pad = tuple(tuple(int(v) for v in p) for p in layer.padding)
            index[id(out)] = add(Raw(name, "keras_pad", [src], payload=(pad, layer.mode)))
        elif type(layer) is keras.layers.Cropping2D:
            cropping = tuple(tuple(int(v) for v in p) for p in layer.cropping)
            index[id(out)] = add(Raw(name, "keras_crop", [src], payload=(cropping, tuple(inputs[0].shape[1:3]))))
        elif type(layer) is FeatureOrder:
            index[id(out)] = add(Raw(name, "keras_feature_order", [src], payload=tuple(layer.order)))
        elif type(layer) is Subsample2D:
            op = "keras_subsample_before" if layer.before_conv else "keras_subsample_after"
            index[id(out)] = add(Raw(name, op, [src], payload=tuple(layer.strides)))
        elif type(layer) in (keras.layers.Conv2D, GroupedConv2D):
            act = _activation(layer, where)
            weights: dict[str, Any] = {"weight": np.asarray(layer.kernel.numpy())}
            if layer.use_bias:
                weights["bias"] = np.asarray(layer.bias.numpy())
            c_in = int(layer.kernel.shape[2]) * layer.groups
            conv = Conv2d(
                c_in,
                layer.filters,
                tuple(layer.kernel_size),
                stride=tuple(layer.strides),
                padding=layer.padding,
                dilation=tuple(layer.dilation_rate),
                groups=layer.groups,
                bias=layer.use_bias,
                name=name,
            )
            i = add(Raw(name, "layer", [src], layer=conv, payload=layer), weights)
            if act is not None:
                act_name = names.take(f"{name}_activation")
                auto.add(act_name)
                i = add(Raw(act_name, "layer", [i], layer=dataclasses.replace(act, name=act_name), payload="fused"))
            index[id(out)] = i
        elif type(layer) in (keras.layers.DepthwiseConv2D, keras.layers.SeparableConv2D):
            act = _activation(layer, where)
            kernel = np.asarray(
                (layer.depthwise_kernel if hasattr(layer, "depthwise_kernel") else layer.kernel).numpy()
            )
            c_in, multiplier = int(kernel.shape[2]), int(kernel.shape[3])
            separable = type(layer) is keras.layers.SeparableConv2D
            dw_name = names.take(f"{name}.depthwise") if separable else name
            dw_bias = layer.use_bias and not separable
            # canonical at once: DepthwiseConv2D's (kh, kw, C, m) layout, whatever the built model will use
            weights = {"weight": _Canonical(layout.to_canonical("depthwise", kernel, c_in))}
            if dw_bias:
                weights["bias"] = np.asarray(layer.bias.numpy())
            conv = Conv2d(
                c_in,
                c_in * multiplier,
                tuple(layer.kernel_size),
                stride=tuple(layer.strides),
                padding=layer.padding,
                dilation=tuple(layer.dilation_rate),
                groups=c_in,
                bias=dw_bias,
                name=dw_name,
            )
            i = add(Raw(dw_name, "layer", [src], layer=conv, payload=layer), weights)
            if separable:  # then the 1x1 pointwise conv, with the bias
                pw_name = names.take(f"{name}.pointwise")
                pointwise = np.asarray(layer.pointwise_kernel.numpy())
                pw_weights = {"weight": pointwise}
                if layer.use_bias:
                    pw_weights["bias"] = np.asarray(layer.bias.numpy())
                i = add(
                    Raw(
                        pw_name,
                        "layer",
                        [i],
                        layer=Conv2d(c_in * multiplier, int(pointwise.shape[3]), 1, bias=layer.use_bias, name=pw_name),
                    ),
                    pw_weights,
                )
            if act is not None:
                act_name = names.take(f"{name}_activation")
                auto.add(act_name)
                i = add(
                    Raw(
                        act_name,
                        "layer",
                        [i],
                        layer=dataclasses.replace(act, name=act_name),
                        payload=None if separable else "fused",
                    )
                )
            index[id(out)] = i
        elif type(layer) in CONV_TRANSPOSE:
            act = _activation(layer, where)
            i = add(Raw(name, "layer", [src], layer=None), None)
            nodes[i].layer, raw[i] = conv_transpose(layer, in_shape, name, where)
            if act is not None:
                act_name = names.take(f"{name}_activation")
                auto.add(act_name)
                i = add(Raw(act_name, "layer", [i], layer=dataclasses.replace(act, name=act_name)))
            index[id(out)] = i
        elif type(layer) is keras.layers.Dense:
            act = _activation(layer, where)
            weights = {"weight": np.asarray(layer.kernel.numpy())}
            if layer.use_bias:
                weights["bias"] = np.asarray(layer.bias.numpy())
            if len(current) == 3:  # on an NHWC map: the channels at every pixel
                linear: Any = ChannelLinear(int(layer.kernel.shape[0]), layer.units, bias=layer.use_bias, name=name)
            elif len(current) == 1:
                linear = Linear(int(layer.kernel.shape[0]), layer.units, bias=layer.use_bias, name=name)
            else:
                raise UnsupportedLayerError(f"from_keras: {where}: Dense on an input of shape {in_shape}")
            i = add(Raw(name, "layer", [src], layer=linear), weights)
            if act is not None:
                act_name = names.take(f"{name}_activation")
                auto.add(act_name)
                i = add(Raw(act_name, "layer", [i], layer=dataclasses.replace(act, name=act_name)))
            index[id(out)] = i
        else:
            spec_layer, weights = _plain_layer(layer, where, current)
            if spec_layer is None:  # Activation("linear")
                index[id(out)] = src
                continue
            index[id(out)] = add(Raw(name, "layer", [src], layer=dataclasses.replace(spec_layer, name=name)), weights)
            if isinstance(spec_layer, Flatten):  # what it flattens: a Reshape back may undo it (1x1 maps only)
                nodes[-1].payload = ("from", tuple(int(d) for d in inputs[0].shape[1:]))
            if (
                type(layer) in (keras.layers.GlobalAveragePooling2D, keras.layers.GlobalMaxPooling2D)
                and not layer.keepdims
            ):
                flat = names.take(f"{name}_flatten")
                auto.add(flat)
                index[id(out)] = add(
                    Raw(
                        flat,
                        "layer",
                        [index[id(out)]],
                        layer=Flatten(name=flat),
                        payload=("from", (1, 1, int(out.shape[-1]))),
                    )
                )
    fold_transpose_crops(nodes)
    _fold_convs(nodes)
    _fold_avgpool_pads(nodes)
    _fold_hard_sigmoids(nodes)
    _scalars_as_rescaling(nodes)
    _fold_reshapes(nodes)
    import copy

    from ..errors import SpecError

    saved = [copy.copy(n) for n in nodes]
    for n in saved:
        n.inputs = list(n.inputs)
    try:
        output, order = _flat_output(nodes, index[id(model.outputs[0])])
        return _finish(nodes, output, input_shape, names, auto, raw, order)
    except SpecError as e:
        if "different orders" not in str(e):
            raise UnsupportedLayerError(f"from_keras: the model's graph does not make a valid spec: {e}") from None
        first = e
    # flat tensors of Keras' order (a Flatten's H,W,C) joined with others (a Dense's output, which is in no map
    # order): every Flatten of a map is read channels-last, so that each flat tensor is the Keras model's own
    try:
        output, order = _flat_output(saved, index[id(model.outputs[0])], every=True)
        return _finish(saved, output, input_shape, names, auto, raw, order)
    except SpecError:
        raise UnsupportedLayerError(f"from_keras: the model's graph does not make a valid spec: {first}") from None


def _finish(
    nodes: list[Raw],
    output: int,
    input_shape: tuple[int, ...],
    names: Names,
    auto: set[str],
    raw: dict[int, dict[str, np.ndarray]],
    order: tuple[int, ...] | None = None,
) -> tuple[Sequential, dict[str, np.ndarray]]:

    named = to_spec(nodes, output, input_shape, names, "from_keras")
    auto |= {n for n in names.used if ".skip" in n and n not in names.reserved}
    spec = _default_names(named, auto)
    if order is not None:  # xconv's FeatureOrder at the output: exactly the spec's C,H,W order, or refused
        perm = layout.flatten_permutation(shapes.infer(spec)[-1].output_source)
        if perm is None or list(order) != [int(v) for v in np.argsort(perm)]:
            raise UnsupportedLayerError(
                "from_keras: the model's last layer (FeatureOrder) reorders its features other than into the C,H,W "
                "order of the maps they were flattened from; only that order is supported"
            )
    by_name = {node.layer.name: i for i, node in enumerate(nodes) if node.alive and node.op == "layer"}
    weights_out: dict[str, np.ndarray] = {}
    for old, new in zip(shapes.infer(named), shapes.infer(spec)):
        if not new.params:
            continue
        arrays = raw.get(by_name.get(old.name, -1), {})
        for pname in new.params:
            value = arrays[pname]
            canonical = value.array if isinstance(value, _Canonical) else _to_canonical(new, pname, value)
            weights_out[f"{new.key}.{pname}"] = np.array(canonical)
    return spec, weights_out


class _Canonical:
    """A weight already in canonical (torch) layout."""

    def __init__(self, array: np.ndarray) -> None:
        self.array = array


def _plain_layer(layer: Any, where: str, current: tuple[int, ...]) -> tuple[Any, dict[str, np.ndarray]]:
    """A Keras layer with no folding to do -> (spec layer or None for an identity activation, Keras arrays)."""
    weights: dict[str, np.ndarray] = {}
    if type(layer) is keras.layers.ReLU:
        if layer.negative_slope != 0 or layer.threshold != 0:
            raise UnsupportedLayerError(
                f"from_keras: {where}: only ReLU() and ReLU(max_value=m) are supported (no negative_slope or threshold)"
            )
        return (ReLU() if layer.max_value is None else Hardtanh(0.0, float(layer.max_value))), weights
    if type(layer) is keras.layers.Activation:
        return _activation(layer, where), weights
    if type(layer) is keras.layers.Flatten:
        return Flatten(), weights
    if type(layer) in UPSAMPLE:
        return upsample(layer, where, current), weights
    if type(layer) in (keras.layers.MaxPooling2D, keras.layers.AveragePooling2D):
        k, st = tuple(layer.pool_size), tuple(layer.strides)
        padding, ceil = ((0, 0), False) if layer.padding == "valid" else _same_pool(layer, current, where)
        if isinstance(layer, keras.layers.MaxPooling2D):
            return MaxPool2d(k, st, padding, ceil_mode=ceil), weights
        return AvgPool2d(k, st, padding, ceil_mode=ceil, count_include_pad=False), weights  # Keras 'same' excludes pads
    if type(layer) is TorchMaxPool2D:
        (t, _), (l, _) = layer.padding
        return MaxPool2d(layer.kernel_size, layer.strides, (t, l), layer.dilation, layer.ceil_mode), weights
    if type(layer) is TorchAvgPool2D:
        (t, _), (l, _) = layer.padding
        return AvgPool2d(layer.kernel_size, layer.strides, (t, l), layer.ceil_mode, layer.count_include_pad), weights
    if type(layer) is keras.layers.GroupNormalization:
        axis = layer.axis[0] if isinstance(layer.axis, (list, tuple)) else layer.axis
        if len(current) != 3 or axis % 4 != 3 or layer.center != layer.scale:
            raise UnsupportedLayerError(
                f"from_keras: {where}: GroupNormalization is supported over the channels (axis=-1) of a map, with "
                "center and scale both on or both off"
            )
        if layer.scale:
            weights = {"weight": np.asarray(layer.gamma.numpy()), "bias": np.asarray(layer.beta.numpy())}
        return GroupNorm(int(layer.groups), current[0], eps=float(layer.epsilon), affine=bool(layer.scale)), weights
    if type(layer) in (keras.layers.PReLU, TorchPReLU):  # (forward the same; Keras' gradient at 0 is 0)
        alpha = np.asarray(layer.alpha.numpy())
        per = alpha.shape[-1] if alpha.size > 1 else 1
        if alpha.size > 1 and (alpha.shape[-1] != current[0] or alpha.size != current[0]):
            raise UnsupportedLayerError(
                f"from_keras: {where}: PReLU with slopes of shape {alpha.shape} (one per pixel); supported: one slope, "
                "or one per channel (shared_axes=[1, 2] on a map)"
            )
        return PReLU(per), {"weight": alpha}
    if type(layer) is keras.layers.GlobalMaxPooling2D:  # the max over the whole map: one pooling window
        return MaxPool2d((current[1], current[2])), weights
    if type(layer) is keras.layers.GlobalAveragePooling2D:
        return AdaptiveAvgPool2d(1), weights
    if type(layer) is AdaptiveAvgPool2D:
        return AdaptiveAvgPool2d(layer.output_size), weights
    if type(layer) in (keras.layers.BatchNormalization, TorchBatchNorm):
        axis = layer.axis[0] if isinstance(layer.axis, (list, tuple)) else layer.axis
        if axis % (len(current) + 1) != len(current) or layer.renorm:
            raise UnsupportedLayerError(
                f"from_keras: {where}: only BatchNormalization over the last axis, without renorm, is supported"
            )
        torch_bn = isinstance(layer, TorchBatchNorm)
        momentum = layer.torch_momentum if torch_bn else 1.0 - float(layer.momentum)
        track = layer.track_running_stats if torch_bn else True
        cls = BatchNorm2d if len(current) == 3 else BatchNorm1d
        state = {
            name: attr for name, attr, on in (("weight", "gamma", layer.scale), ("bias", "beta", layer.center)) if on
        }
        if track:
            state.update(running_mean="moving_mean", running_var="moving_variance")
        for pname, attr in state.items():
            weights[pname] = np.asarray(getattr(layer, attr).numpy())
        if track:  # a native Keras layer does not count batches
            count = layer.num_batches_tracked.numpy() if torch_bn else 0
            weights["num_batches_tracked"] = np.asarray(count, dtype=np.int64)
        return cls(
            current[0],
            eps=float(layer.epsilon),
            momentum=momentum,
            affine=bool(layer.center or layer.scale),
            track_running_stats=track,
            scale=bool(layer.scale),
            center=bool(layer.center),
            frozen=not layer.trainable,  # Keras' fine-tuning recipe: inference mode in training too
        ), weights
    if type(layer) is keras.layers.LayerNormalization:
        axes = tuple(layer.axis) if isinstance(layer.axis, (list, tuple)) else (layer.axis,)
        rank = len(current) + 1
        if len(axes) != 1 or axes[0] % rank != rank - 1 or layer.rms_scaling or (layer.center and not layer.scale):
            raise UnsupportedLayerError(
                f"from_keras: {where}: only LayerNormalization over the last (channel) axis, without rms_scaling, "
                "with scale (and center) or neither is supported"
            )
        if layer.scale:
            weights["weight"] = np.asarray(layer.gamma.numpy())
        if layer.center:
            weights["bias"] = np.asarray(layer.beta.numpy())
        return LayerNorm(
            current[0], eps=float(layer.epsilon), elementwise_affine=bool(layer.scale), bias=bool(layer.center)
        ), weights
    if type(layer) is ChannelScale or _applications_layer(layer, "convnext", "LayerScale"):
        if len(current) != 3:
            raise UnsupportedLayerError(f"from_keras: {where}: a layer scale is supported on (H, W, C) maps only")
        return LayerScale(current[0]), {"layer_scale": np.asarray(layer.gamma.numpy())}
    if _applications_layer(layer, "convnext", "StochasticDepth"):  # per-sample keep mask scaled by 1 / keep
        return StochasticDepth(float(layer.drop_path_rate), "row"), weights
    if type(layer) is NarrowLayer:
        return Narrow(layout.canonical_axis(layer.axis, len(current) + 1), layer.start, layer.length), weights
    if type(layer) is ChannelGather:
        c = current[0]
        for groups in ([layer.groups] if layer.groups else []) + list(range(1, c + 1)):
            if c % groups == 0 and list(shapes.shuffle_order(c, groups)) == list(layer.order):
                return ChannelShuffle(groups), weights
        raise UnsupportedLayerError(f"from_keras: {where}: a channel gather that is not a channel shuffle")
    if type(layer) is keras.layers.Dropout:
        if layer.noise_shape is None:
            return Dropout(float(layer.rate)), weights
        shape = tuple(layer.noise_shape)
        if len(shape) == len(current) + 1 and all(d == 1 for d in shape[1:]) and shape[0] in (None, 1):
            # whole samples dropped (Keras applications' stochastic depth), or the whole batch
            return StochasticDepth(float(layer.rate), "row" if shape[0] is None else "batch"), weights
        raise UnsupportedLayerError(
            f"from_keras: {where}: Dropout with noise_shape={shape} is not supported "
            "(only whole samples: (None, 1, 1, 1))"
        )
    if type(layer) is keras.layers.LeakyReLU:
        return LeakyReLU(float(layer.negative_slope)), weights
    if type(layer) is keras.layers.ELU:
        return ELU(float(layer.alpha)), weights
    if type(layer) is keras.layers.Softmax:
        rank = len(current) + 1
        axes = tuple(layer.axis) if isinstance(layer.axis, (list, tuple)) else (layer.axis,)
        if len(axes) != 1 or axes[0] % rank == 0:
            raise UnsupportedLayerError(f"from_keras: {where}: only a Softmax over one non-batch axis is supported")
        return Softmax(layout.canonical_axis(axes[0] % rank, rank)), weights
    if type(layer) is keras.layers.Identity:
        return Identity(), weights
    if type(layer) in (keras.layers.Rescaling, ChannelRescaling):

        def constant(v: Any) -> Any:
            array = np.asarray(v, dtype=np.float64)
            if array.ndim == 0 or array.size == 1 and type(layer) is keras.layers.Rescaling:
                return float(array.reshape(-1)[0])
            # Keras broadcasts the constant against (..., H, W, C): per channel only along the last axis
            if type(layer) is keras.layers.Rescaling and (
                array.ndim > len(current) + 1 or any(d != 1 for d in array.shape[:-1]) or array.shape[-1] != current[0]
            ):
                raise UnsupportedLayerError(
                    f"from_keras: {where}: a scale or offset of shape {array.shape} broadcasts over other axes than "
                    f"the channels of a {tuple(current)} input; supported: a number or one value per channel, shape "
                    f"({current[0]},)"
                )
            return tuple(float(x) for x in array.reshape(-1))

        return Rescaling(constant(layer.scale), constant(layer.offset)), weights
    if type(layer) is ChannelNormalization:
        weights = {"mean": np.asarray(layer.mean.numpy()), "variance": np.asarray(layer.variance.numpy())}
        return Normalization(current[0]), weights
    if type(layer) is keras.layers.Normalization:
        axis = tuple(layer.axis) if isinstance(layer.axis, (list, tuple)) else (layer.axis,)
        if layer.invert or axis not in ((len(current),), (-1,)):
            raise UnsupportedLayerError(
                f"from_keras: {where}: only Normalization over the channel axis (last), not inverted, is supported"
            )
        # the values the layer computes with (its finalised mean and variance), one per channel
        mean = np.asarray(layer.mean, dtype=np.float64).reshape(-1)
        variance = np.asarray(layer.variance, dtype=np.float64).reshape(-1)
        dtype = np.dtype(layer.compute_dtype)
        return Normalization(current[0]), {"mean": mean.astype(dtype), "variance": variance.astype(dtype)}
    if type(layer) is TorchActivation:
        fn = layer.function
        makers: dict[str, Callable[[], Layer]] = {
            "leaky_relu": lambda: LeakyReLU(layer.param),
            "elu": lambda: ELU(layer.param),
            "gelu": lambda: GELU(),
            "gelu_tanh": lambda: GELU("tanh"),
            "hardtanh": lambda: Hardtanh(layer.param, layer.param2),
            "hardsigmoid": lambda: Hardsigmoid(),
            "hardswish": lambda: Hardswish(),
        }
        return makers[fn](), weights
    raise UnsupportedLayerError(f"from_keras: {where} is not supported; supported: {_SUPPORTED}")


def _applications_layer(layer: Any, module: str, name: str) -> bool:
    """Whether ``layer`` is exactly keras.applications' own class ``name`` from its module ``module``."""
    cls = type(layer)
    return cls.__name__ == name and cls.__module__ == f"keras.src.applications.{module}"


def _fold_convs(nodes: list[Raw]) -> None:
    """Fold into each Keras conv what sits around it: before it a subsampling (a strided 1x1 conv), a
    bottom/right crop (a one-position axis computed at stride 1), an explicit padding; after it (past a fused
    activation, which commutes with subsampling) a subsampling (stride with dilation). Each only where the
    tensor in between has no other reader."""
    import dataclasses

    users = readers(nodes)
    for c, node in enumerate(nodes):
        if not (node.alive and node.op == "layer" and isinstance(node.layer, Conv2d) and node.payload is not None):
            continue
        keras_layer, conv = node.payload, node.layer
        where = f"layer {node.name!r} ({type(keras_layer).__name__})"
        strides = list(conv.stride)
        p = node.inputs[0]
        pre = crop = pad = None
        drop_pre = drop_crop = drop_pad = None
        mode = "zeros"
        if nodes[p].op == "keras_subsample_before" and len(users[p]) == 1:
            if tuple(conv.kernel_size) != (1, 1) or tuple(conv.stride) != (1, 1):
                raise UnsupportedLayerError(f"from_keras: {where}: subsampling folds only into a 1x1 stride-1 conv")
            pre, drop_pre = nodes[p].payload, p
            p = nodes[p].inputs[0]
        if nodes[p].op == "keras_crop" and len(users[p]) == 1:
            ((ct, cb), (cl, cr)), size = nodes[p].payload
            if ct or cl or conv.padding != ((0, 0), (0, 0)):
                raise UnsupportedLayerError(
                    f"from_keras: {where}: only a bottom/right crop before a 'valid' conv folds"
                )
            for cut, n, k, d in zip((cb, cr), size, conv.kernel_size, conv.dilation):
                # exact only where the cropped axis holds exactly the kernel's extent (one output position)
                if cut and n - cut != (k - 1) * d + 1:
                    raise UnsupportedLayerError(
                        f"from_keras: {where}: a crop before a conv folds only where the cropped input is exactly the "
                        "kernel's extent (one output position)"
                    )
            crop, drop_crop = (cb, cr), p
            p = nodes[p].inputs[0]
        if (
            conv.padding == ((0, 0), (0, 0))
            and len(users[p]) == 1
            and (nodes[p].op == "keras_pad" or nodes[p].op == "layer" and isinstance(nodes[p].layer, ZeroPad2d))
        ):
            if nodes[p].op == "keras_pad":
                pad, mode = nodes[p].payload
            else:
                pad = nodes[p].layer.padding
            drop_pad = p
        if pre is not None:
            strides = list(pre)
        if crop is not None:
            for axis, cut in enumerate(crop):
                if cut:  # one output position: any stride above the crop gives the same single output
                    if strides[axis] != 1:
                        raise UnsupportedLayerError(f"from_keras: {where}: a crop before a strided conv does not fold")
                    strides[axis] = cut + 1
        # a subsampling after the conv (past its fused activation)
        after = users[c][0] if len(users[c]) == 1 else None
        if after is not None and nodes[after].payload == "fused" and len(users[after]) == 1:
            after = users[after][0]
        if after is not None and nodes[after].op == "keras_subsample_after":
            sub = nodes[after].payload
            if conv.padding == "same":  # 'same' at stride 1, then every s-th pixel, is not 'same' at stride s
                raise UnsupportedLayerError(f"from_keras: {where}: a subsampling after a 'same' conv does not fold")
            if any(a > 1 and b > 1 for a, b in zip(strides, sub)):
                raise UnsupportedLayerError(f"from_keras: {where}: subsampling after a strided conv does not fold")
            strides = [a * b for a, b in zip(strides, sub)]
            drop(nodes, after)
        node.layer = dataclasses.replace(
            conv, stride=(strides[0], strides[1]), padding=pad if pad is not None else conv.padding, padding_mode=mode
        )
        for i in (drop_pad, drop_crop, drop_pre):
            if i is not None:
                drop(nodes, i)
        users = readers(nodes)


def _scalar_op(layer: Any, out: Any) -> tuple[str, float] | None:
    """("add" | "mul" | "sub" | "div", c) for a Keras operation node computing x + c, x * c, x - c or x / c."""
    kinds = {"Add": "add", "Multiply": "mul", "Subtract": "sub", "Divide": "div", "TrueDivide": "div"}
    if not type(layer).__module__.startswith("keras.src.ops") or type(layer).__name__ not in kinds:
        return None
    args = layer._inbound_nodes[out._keras_history.node_index].arguments.args
    if len(args) != 2 or not isinstance(args[1], (int, float)) or isinstance(args[1], bool):
        return None
    return kinds[type(layer).__name__], float(args[1])


def _tensor_op(layer: Any, ids: list[int]) -> str | None:
    """ "add" / "sub" / "mul" for a Keras operation node adding, subtracting or multiplying two tensors of the
    graph, else None."""
    kinds = {"Add": "add", "Multiply": "mul", "Subtract": "sub"}
    if not type(layer).__module__.startswith("keras.src.ops") or type(layer).__name__ not in kinds or len(ids) != 2:
        return None
    return kinds[type(layer).__name__]


def _scalars_as_rescaling(nodes: list[Raw]) -> None:
    """The operation nodes x + c, x - c, x * c and x / c that no pattern folded: Rescaling(scale, offset)."""
    for node in nodes:
        if node.alive and node.op == "keras_scalar":
            op, c = node.payload
            if op == "div" and c == 0.0:
                continue  # refused as it is
            scale, offset = {"add": (1.0, c), "sub": (1.0, -c), "mul": (c, 0.0), "div": (1.0 / c if c else 0.0, 0.0)}[
                op
            ]
            node.op, node.layer, node.payload = "layer", Rescaling(scale, offset, name=node.name), None


def _fold_hard_sigmoids(nodes: list[Raw]) -> None:
    """x + 3, then ReLU(max_value=6), then * (1/6) (or / 6), each read only by the next: torch's hard sigmoid
    (Keras applications write it with operation nodes, MobileNetV3)."""
    users = readers(nodes)
    for i, node in enumerate(nodes):
        if not (node.alive and node.op == "keras_scalar" and node.payload == ("add", 3.0) and len(users[i]) == 1):
            continue
        relu = users[i][0]
        if not (
            nodes[relu].op == "layer"
            and nodes[relu].layer == Hardtanh(0.0, 6.0, name=nodes[relu].layer.name)
            and len(users[relu]) == 1
        ):
            continue
        scale = users[relu][0]
        if not (nodes[scale].op == "keras_scalar" and nodes[scale].payload in (("mul", 1.0 / 6.0), ("div", 6.0))):
            continue
        name = nodes[scale].name
        drop(nodes, scale)
        drop(nodes, relu)
        node.op, node.layer, node.payload, node.name = "layer", Hardsigmoid(name=name), None, name
        users = readers(nodes)


def _flat_output(nodes: list[Raw], output: int, every: bool = False) -> tuple[int, tuple[int, ...] | None]:
    """Make the model's output vector the Keras model's own. A Keras Flatten orders features H,W,C; a Dense after
    it absorbs that in its weights, but when the flattened features reach the output, the spec's Flatten must
    be channels-last too (the torch model then permutes before flattening), else the ported torch model returns
    the same values in another order. An xconv-built model ends in a ``FeatureOrder`` that restores C,H,W order:
    that is a plain Flatten's output, so the layer folds away (``_finish`` checks it has the order it must).
    Returns the output node and that layer's order (None without one). With ``every``, every Flatten of a map
    is made channels-last, wherever its features go."""
    import dataclasses

    if every:
        for node in nodes:
            if node.alive and node.op == "layer" and isinstance(node.layer, Flatten) and node.payload:
                h, w, c = node.payload[1]
                if layout.flatten_permutation((c, h, w)) is not None:
                    node.layer = dataclasses.replace(node.layer, channels_last=True)

    for i, node in enumerate(nodes):
        if not (node.alive and node.op == "keras_feature_order"):
            continue
        if i != output:
            raise UnsupportedLayerError(
                f"from_keras: layer {node.name!r} (FeatureOrder) is not the model's output; xconv puts it only there"
            )
        node.alive = False
        return node.inputs[0], node.payload
    stack, seen = [output], set()
    while stack:
        i = stack.pop()
        if i in seen:
            continue
        seen.add(i)
        node = nodes[i]
        if node.op == "layer" and isinstance(node.layer, Linear):
            continue  # a Dense absorbs the order in its weights
        if node.op == "layer" and isinstance(node.layer, Flatten):
            h, w, c = node.payload[1] if node.payload else (1, 1, 1)
            if layout.flatten_permutation((c, h, w)) is not None:
                node.layer = dataclasses.replace(node.layer, channels_last=True)
            continue
        stack.extend(node.inputs)
    return output, None


def _fold_reshapes(nodes: list[Raw]) -> None:
    """A Reshape of a 1x1 map (1, 1, C) to (C,) is a Flatten; a Reshape of (C,) to (1, 1, C) right after a
    Flatten of a 1x1 map (squeeze-excitation after a global pooling) undoes it. Others stay, and are refused."""
    users = readers(nodes)
    for i, node in enumerate(nodes):
        if not (node.alive and node.op == "keras_reshape"):
            continue
        src, target = node.payload
        if len(src) == 3 and src[:2] == (1, 1) and target == (src[2],):
            node.op, node.layer, node.payload = "layer", Flatten(name=node.name), None
        elif len(src) == 1 and target == (1, 1, src[0]):
            flat = node.inputs[0]
            if (
                nodes[flat].op == "layer"
                and isinstance(nodes[flat].layer, Flatten)
                and len(users[flat]) == 1
                and nodes[flat].payload == ("from", (1, 1, src[0]))
            ):
                drop(nodes, i)
                drop(nodes, flat)
        users = readers(nodes)


def _fold_avgpool_pads(nodes: list[Raw]) -> None:
    """A symmetric ZeroPad2d of at most half the kernel read only by a 'valid' AveragePooling2D is torch's
    AvgPool2d padding (zeros counted in the divisor)."""
    import dataclasses

    users = readers(nodes)
    for i, node in enumerate(nodes):
        if not (node.alive and node.op == "layer" and isinstance(node.layer, ZeroPad2d) and len(users[i]) == 1):
            continue
        pool = nodes[users[i][0]]
        if not (
            pool.op == "layer"
            and isinstance(pool.layer, AvgPool2d)
            and pool.layer.padding == (0, 0)
            and pool.layer.count_include_pad is False
            and not pool.layer.ceil_mode
        ):
            continue
        (t, b), (l, r) = node.layer.padding
        k = pool.layer.kernel_size
        if t != b or l != r or t > k[0] // 2 or l > k[1] // 2:
            continue
        pool.layer = dataclasses.replace(pool.layer, padding=(t, l), count_include_pad=True)
        drop(nodes, i)
        users = readers(nodes)
