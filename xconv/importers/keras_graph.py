"""Keras front-end: a Keras model's functional graph -> raw DAG -> nested spec and canonical weights.

Each layer call becomes a raw node; passes then fold what xconv's own builder (or a hand-written model) put
around a conv back into it — explicit padding, a crop, a subsampling, a fused activation — each only where the
tensor in between has one reader."""

from __future__ import annotations

from typing import Any

import numpy as np

from .. import layout, shapes
from ..backends._tf_env import keras
from ..errors import UnsupportedLayerError
from ..graph import model_outputs
from ..kinds import framework_list, framework_table
from ..kinds._keras_layout import to_canonical
from ..kinds.activation._keras import _ACTIVATION_NAMES, keras_activation
from ..kinds.conv._keras import GatherPad2D, GroupedConv2D, Subsample2D
from ..kinds.dense._keras import FeatureOrder
from ..kinds.token._keras import DotProductAttentionLayer, SelfAttentionLayer, attention_bias
from ..spec import (
    ChannelLinear,
    Conv2d,
    Flatten,
    Linear,
    Rescaling,
    SelectToken,
    Sequential,
    ZeroPad2d,
)
from ._graph import Names, Raw, read_returned, returned_marker, to_spec
from ._keras_folds import (
    _fold_avgpool_pads,
    _fold_convs,
    _fold_hard_sigmoids,
    _fold_reshapes,
    _scalar_op,
    _scalars_as_rescaling,
    _tensor_op,
    crops_as_narrows,
    flat_outputs,
    returned_tensors,
)
from ._keras_hub import MaskKeys, expand_calls, first_output_only
from ._keras_text import (
    _MASK,
    _MASK_KEYS,
    _TYPED,
    _TYPES,
    _at,
    _mask_op,
    _selected_token,
    _self_attention_input,
    _takes_side_inputs,
    _token_type_reader,
    cross_attention,
    ids_input,
    input_roles,
)
from ._keras_transpose import CONV_TRANSPOSE, conv_transpose, fold_transpose_crops

# ---- importing hand-written models ----

_SUPPORTED = (
    "InputLayer, Conv2D ('same'/'valid', strides, dilation, groups, bias, a fused activation), DepthwiseConv2D, "
    "SeparableConv2D, ZeroPadding2D (folded into the next 'valid' Conv2D or AveragePooling2D where exact), Add, "
    "Multiply, Subtract, Concatenate, Dense (a fused activation), Flatten, Reshape of a 1x1 map, MaxPooling2D / "
    "AveragePooling2D ('valid', or 'same' where torch's padding and ceil_mode give the same windows), "
    "GlobalAveragePooling2D, GlobalMaxPooling2D, BatchNormalization (also scale=False or center=False), LayerNormalization (channel "
    "axis), Dense on an (H, W, C) map (per pixel) or on tokens, Reshape of an (H, W, C) map to (H*W, C) tokens, "
    "MultiHeadAttention as self-attention, GlobalAveragePooling1D over tokens, keras.applications' LayerScale and StochasticDepth, nested "
    "models (inlined), Rescaling, Normalization (channel axis), Dropout (also whole samples: stochastic depth), ReLU() and "
    "ReLU(max_value), LeakyReLU, ELU, Softmax, Identity, x + 3 -> ReLU(6) -> * (1/6) (hard sigmoid), "
    "Activation(" + " / ".join(_ACTIVATION_NAMES) + "), Conv2DTranspose ('valid'; 'same' where torch's padding "
    "and output_padding give the same crop; a Cropping2D after it folds in), Cropping2D (folded, else slices), keras.applications' CustomScaleLayer (x + r * scale), UpSampling2D (nearest, bilinear), "
    "Resizing (nearest, bilinear), and xconv's own layers"
)


def _calls(
    model: keras.Model, inline: bool = False, depth: int = 0, output: Any = None
) -> list[tuple[Any, list[Any], Any]]:
    """The model's layer calls in topological order: (layer, input tensors, output tensor). With ``inline``, a
    nested model's call is replaced by its own calls, between two aliases ``(None, [tensor], same tensor)``
    that tie its input and output to the outer graph's tensors."""
    sides = depth == 0 and len(model.inputs) > 1 and _takes_side_inputs(model)
    ends = list(model.outputs) if output is None else list(output)
    if len(model.inputs) != 1 and not sides:
        where = "the model" if depth == 0 else f"the nested model {model.name!r}"
        raise UnsupportedLayerError(f"from_keras: {where} must have one input")
    if depth > 16:
        raise UnsupportedLayerError(f"from_keras: models nested more than 16 deep ({model.name!r})")
    order: list[tuple[Any, list[Any], Any]] = []
    done: set[int] = {id(t) for t in model.inputs}
    inlined: set[int] = set()  # (the nested models' calls already inlined: once for all their outputs)
    stack: list[tuple[Any, bool]] = [(end, False) for end in reversed(ends)]
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
            several = len(node.output_tensors) != 1
            nested = inline and isinstance(op, keras.Model)
            if several and not nested and not (first_output_only(op) and t is node.output_tensors[0]):
                raise UnsupportedLayerError(f"from_keras: layer {op.name!r} ({type(op).__name__}) has several outputs")
            done.add(id(t))
            if nested:  # (its calls once, each output it returns tied to the outer tensor)
                if len(inputs) != 1:
                    raise UnsupportedLayerError(f"from_keras: nested model {op.name!r} takes {len(inputs)} inputs")
                if id(node) not in inlined:
                    inlined.add(id(node))
                    order.append((None, inputs, op.inputs[0]))
                    order.extend(_calls(op, inline, depth + 1))
                place = [id(o) for o in node.output_tensors].index(id(t))
                order.append((None, [op.outputs[place]], t))
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

    from ..kinds._keras_names import default_keras_name
    from ..spec import Use

    used: set[str] = set()  # names a Use refers to: kept, or the reference would dangle

    def refs(item: Any) -> None:
        if isinstance(item, Use) and item.source is not None:
            used.add(item.source)
        for c in getattr(item, "layers", getattr(item, "branches", ())):
            refs(c)

    for c in spec.layers:
        refs(c)
    used.update(spec.outputs or ())  # (and the parts the model returns)

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

    layers = (strip(c, str(i)) for i, c in enumerate(spec.layers))
    return Sequential(*layers, input_shape=spec.input_shape, outputs=spec.outputs)


def import_model(
    model: keras.Model, length: int | None = None, entry: str | list[str] | None = None
) -> tuple[Sequential, dict[str, np.ndarray]]:
    """A Keras Sequential or functional model (hand-written, or a loaded .keras file of an xconv model) ->
    (spec, canonical weights). ``length``: a text encoder's sequence length, where its inputs take any;
    ``entry``: the output of a model that returns a dict (a list: several of its entries). A model that returns a
    list (or ``entry`` a list) imports as a spec with ``outputs``."""
    import dataclasses

    ids = ids_input(model)
    shape = tuple(ids.shape[1:])
    if length is not None and shape == (None,):  # (a text encoder of any sequence length, read at ``length``)
        shape = (int(length),)
    if None in shape or len(shape) not in (1, 2, 3):
        raise UnsupportedLayerError(
            f"from_keras: the model's input must have a defined (H, W, C), (tokens, features) or (F,) shape. "
            f"Received: {shape}" + (" (give input_shape=(L,) for a text encoder's length)" if shape == (None,) else "")
        )
    input_shape = (shape[2], shape[0], shape[1]) if len(shape) == 3 else shape
    ends, several = returned_tensors(model, entry)
    calls = _calls(model, inline=True, output=ends)
    inputs_of = list(model.inputs)
    if length is not None:  # (the sequence axis of every tensor, at that length)
        sized: dict[int, Any] = {}
        calls = [(layer, [_at(t, length, sized) for t in ins], _at(out, length, sized)) for layer, ins, out in calls]
        inputs_of = [_at(t, length, sized) for t in inputs_of]
    calls, paths = expand_calls(calls)  # (keras-hub's own layers: the calls they make)
    names = Names({paths.get(id(layer), layer.name) for layer, _, _ in calls if layer is not None})
    auto: set[str] = set()
    nodes: list[Raw] = [Raw("input", "input", [])]
    index: dict[int, int] = {}
    for t, role in zip(inputs_of, input_roles(model)):  # (see _takes_side_inputs; read where said)
        index[id(t)] = {"ids": 0, "padding_mask": _MASK, "token_types": _TYPES}[role]
    typed: dict[int, tuple[Any, str]] = {}  # an Embedding's lookup of the token types -> (layer, where)
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
        if isinstance(layer, MaskKeys):  # (keras-hub's padding mask as a MultiHeadAttention reads it)
            if ids != [_MASK]:
                raise UnsupportedLayerError(f"from_keras: {where}: a padding mask that is not the model's")
            index[id(out)] = _MASK_KEYS
            continue
        if (
            type(layer) is not keras.layers.MultiHeadAttention
            and _MASK_KEYS in ids
            or (_MASK in ids and not isinstance(layer, (keras.layers.Layer, SelfAttentionLayer)))
        ):
            index[id(out)] = _mask_op(layer, ids, where)
            continue
        name = names.take(paths.get(id(layer), layer.name), own=True)
        if _TYPES in ids or _TYPED in ids:
            index[id(out)] = _token_type_reader(layer, inputs, ids, out, where, name, typed, add, names)
            continue
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
        token = _selected_token(layer, inputs, ids)
        if token is not None:  # x[:, i, :] of tokens (keras-hub BERT's pooler reads the first)
            index[id(out)] = add(Raw(name, "layer", [ids[0]], layer=SelectToken(token, name=name)))
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
        if type(layer) is DotProductAttentionLayer and len(ids) == 3:  # (xconv's own: queries, keys, values)
            fields, arrays = attention_bias(layer)
            payload = (layer.num_heads, layer.scale, layer.dropout, fields)
            index[id(out)] = add(Raw(name, "attn", ids, payload=payload, owned=True), arrays)
            continue
        if _is_custom_scale(layer) and len(ids) == 2:  # Inception-ResNet's x + r * scale, as Keras computes it
            scale_name = names.take(f"{layer.name}_scale")
            scaled = add(Raw(scale_name, "layer", [ids[1]], layer=Rescaling(float(layer.scale), name=scale_name)))
            index[id(out)] = add(Raw(name, "add", [ids[0], scaled], owned=True))
            continue
        if _MASK in ids:
            if not (isinstance(layer, SelfAttentionLayer) and len(ids) == 2 and ids[1] == _MASK and ids[0] != _MASK):
                raise UnsupportedLayerError(
                    f"from_keras: {where} reads the padding mask; xconv's SelfAttention layer alone reads it"
                )
            masked, arrays = _plain_layer(layer, where, tuple(inputs[0].shape[1:]))
            masked = dataclasses.replace(masked, name=name, padding_mask=True)
            index[id(out)] = add(Raw(name, "layer", [ids[0]], layer=masked), arrays)
            continue
        crossed = cross_attention(layer, ids, name, where, names, add)
        if crossed is not None:  # (queries other than its values: projections and a DotProductAttention)
            index[id(out)] = crossed
            continue
        if type(layer) is keras.layers.MultiHeadAttention:
            ids, keys_masked = _self_attention_input(layer, ids, where)
            if keys_masked:
                attention, arrays = _plain_layer(layer, where, tuple(inputs[0].shape[1:]))
                attention = dataclasses.replace(attention, name=name, padding_mask=True)
                index[id(out)] = add(Raw(name, "layer", ids, layer=attention), arrays)
                continue
        if len(ids) != 1:
            raise UnsupportedLayerError(
                f"from_keras: {where} takes {len(ids)} inputs; of the layers that take several, xconv supports "
                "Add, Subtract, Multiply and Concatenate (and x + y, x - y, x * y), and xconv's DotProductAttention"
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
            act = keras_activation(layer, where)
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
            act = keras_activation(layer, where)
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
            act = keras_activation(layer, where)
            i = add(Raw(name, "layer", [src], layer=None), None)
            nodes[i].layer, raw[i] = conv_transpose(layer, in_shape, name, where)
            if act is not None:
                act_name = names.take(f"{name}_activation")
                auto.add(act_name)
                i = add(Raw(act_name, "layer", [i], layer=dataclasses.replace(act, name=act_name)))
            index[id(out)] = i
        elif type(layer) is keras.layers.Dense:
            act = keras_activation(layer, where)
            weights = {"weight": np.asarray(layer.kernel.numpy())}
            if layer.use_bias:
                weights["bias"] = np.asarray(layer.bias.numpy())
            if len(current) == 3:  # on an NHWC map: the channels at every pixel
                linear: Any = ChannelLinear(int(layer.kernel.shape[0]), layer.units, bias=layer.use_bias, name=name)
            elif len(current) in (1, 2):  # flat, or each token's features
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
    if length is not None:
        ends = [_at(last, length, sized) for last in ends]
    at = returned_marker(nodes, [index[id(last)] for last in ends] if several else index[id(ends[0])])
    fold_transpose_crops(nodes)
    _fold_convs(nodes)
    _fold_avgpool_pads(nodes)
    _fold_hard_sigmoids(nodes)
    _scalars_as_rescaling(nodes)
    _fold_reshapes(nodes)
    nodes, raw, (kept,) = crops_as_narrows(nodes, raw, [index[id(ends[0])] if at is None else at], names)
    returned = [kept] if at is None else read_returned(nodes, kept)  # (``kept``: the marker, renumbered)
    import copy

    from ..errors import SpecError

    saved = [copy.copy(n) for n in nodes]
    for n in saved:
        n.inputs = list(n.inputs)
    try:
        output, order = flat_outputs(nodes, returned)
        return _finish(nodes, output if several else output[0], input_shape, names, auto, raw, order)
    except SpecError as e:
        if "different orders" not in str(e):
            raise UnsupportedLayerError(f"from_keras: the model's graph does not make a valid spec: {e}") from None
        first = e
    # flat tensors of Keras' order (a Flatten's H,W,C) joined with others (a Dense's output, which is in no map
    # order): every Flatten of a map is read channels-last, so that each flat tensor is the Keras model's own
    try:
        output, order = flat_outputs(saved, returned, every=True)
        return _finish(saved, output if several else output[0], input_shape, names, auto, raw, order)
    except SpecError:
        raise UnsupportedLayerError(f"from_keras: the model's graph does not make a valid spec: {first}") from None


def _finish(
    nodes: list[Raw],
    output: int | list[int],
    input_shape: tuple[int, ...],
    names: Names,
    auto: set[str],
    raw: dict[int, dict[str, np.ndarray]],
    orders: list[tuple[int, ...] | None],
) -> tuple[Sequential, dict[str, np.ndarray]]:
    named = to_spec(nodes, output, input_shape, names, "from_keras")
    auto |= {n for n in names.used if ".skip" in n and n not in names.reserved}
    spec = _default_names(named, auto)
    for info, order in zip(model_outputs(shapes.infer(spec)), orders):
        if order is None:  # (xconv's FeatureOrder at an output: exactly the spec's C,H,W order, or refused)
            continue
        perm = layout.flatten_permutation(info.output_source)
        if perm is None or list(order) != [int(v) for v in np.argsort(perm)]:
            raise UnsupportedLayerError(
                "from_keras: the model's output layer (FeatureOrder) reorders its features other than into the "
                "C,H,W order of the maps they were flattened from; only that order is supported"
            )
    by_name = {node.layer.name: i for i, node in enumerate(nodes) if node.alive and node.op == "layer"}
    by_name.update({node.name: i for i, node in enumerate(nodes) if node.alive and node.op == "attn"})
    weights_out: dict[str, np.ndarray] = {}
    for old, new in zip(shapes.infer(named), shapes.infer(spec)):
        if not new.params:
            continue
        arrays = raw.get(by_name.get(old.name, -1), {})
        for pname in new.params:
            value = arrays[pname]
            canonical = value.array if isinstance(value, _Canonical) else to_canonical(new, pname, value)
            weights_out[f"{new.key}.{pname}"] = np.array(canonical)
    return spec, weights_out


class _Canonical:
    """A weight already in canonical (torch) layout."""

    def __init__(self, array: np.ndarray) -> None:
        self.array = array


def _is_custom_scale(layer: Any) -> bool:
    """Whether ``layer`` is exactly keras.applications' Inception-ResNet ``CustomScaleLayer``."""
    cls = type(layer)
    return cls.__name__ == "CustomScaleLayer" and cls.__module__ == "keras.src.applications.inception_resnet_v2"


def _plain_layer(layer: Any, where: str, current: tuple[int, ...]) -> tuple[Any, dict[str, np.ndarray]]:
    """A Keras layer with no folding to do -> (spec layer or None for an identity activation, Keras arrays)."""
    importer = _KERAS_IMPORTS.get(type(layer))
    if importer is None:
        importer = next((fn for match, fn in _KERAS_MATCHERS if match(layer)), None)
    if importer is None:
        raise UnsupportedLayerError(f"from_keras: {where} is not supported; supported: {_SUPPORTED}")
    return importer(layer, where, current)  # type: ignore[no-any-return]


#: Keras layer class (exactly) -> (layer, where, its input's logical shape) -> (spec layer, Keras arrays); and
#: (predicate, importer) pairs for classes of other libraries matched by module and name; from each kind
#: family's Keras part
_KERAS_IMPORTS: dict[type, Any] = framework_table("keras", "KERAS_IMPORTS")
_KERAS_MATCHERS: list[Any] = framework_list("keras", "KERAS_MATCHERS")
