"""Keras builders: one per layer kind, and the functional model of a spec's graph."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any, cast

import numpy as np

from ... import layout
from ...graph import concat_axis, model_outputs, reads_side, returns_list, side_inputs, token_vocabulary
from ...kinds import Conv2d, Linear, ReLU, framework_table
from ...kinds._keras_names import keras_name
from ...shapes import LayerInfo
from ...spec import Sequential
from .._tf_env import keras


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
        if info.output is not None:  # (the model returns the pre-activation tensor)
            continue
        if isinstance(info.layer, (Conv2d, Linear)) and len(nxt) == 1 and isinstance(infos[nxt[0]].layer, ReLU):
            out[info.index] = nxt[0]
    return out


def _join(info: LayerInfo, args: list[Any], dtype: str) -> Any:
    name = keras_name(info)
    if info.kind == "DotProductAttention":
        from ...kinds.token._keras import DotProductAttentionLayer

        layer = cast(Any, info.layer)
        return DotProductAttentionLayer(
            layer.num_heads,
            layer.scale,
            layer.dropout,
            layer.bias_grid,
            layer.bias_stride,
            layer.state_index,
            dtype=dtype,
            name=name,
        )(args)
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


#: layer class -> (info, x, dtype) -> its Keras output (conv and Dense also take activation=), from each kind
#: family's Keras part
_BUILDERS: dict[type, Callable[..., Any]] = framework_table("keras", "BUILDERS")


def build(spec: Sequential, infos: list[LayerInfo], weights: dict[str, np.ndarray], dtype: str) -> keras.Model:
    from .weights import set_weights

    shape = spec.input_shape
    assert shape is not None
    keras_shape = (shape[1], shape[2], shape[0]) if len(shape) == 3 else shape
    ids = token_vocabulary(infos) is not None  # token ids: integers
    inputs = keras.Input(shape=keras_shape, dtype="int64" if ids else dtype, name="input")
    values: dict[int, Any] = {-1: inputs}
    # (N, L) each: the padding mask, 1 for a token, 0 for padding (None, or left out: every token), and the
    # token types (None, or left out: type 0)
    side = {
        name: keras.Input(shape=(shape[0],), dtype="int64", name=name, optional=True) for name in side_inputs(infos)
    }
    fused = fused_relus(infos)
    relu_of = {relu: conv for conv, relu in fused.items()}
    node_layers: dict[int, list[str]] = {}
    try:
        _build_nodes(infos, values, side, fused, relu_of, node_layers, dtype)
        limit = sys.getrecursionlimit()
        sys.setrecursionlimit(max(limit, 20 * len(infos) + 1000))
        try:
            model_inputs = [inputs, *side.values()] if side else inputs
            returned = [_output_order(info, values[info.index], dtype) for info in model_outputs(infos)]
            model = keras.Model(model_inputs, returned if returns_list(infos) else returned[0], name="xconv")
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


def _output_order(info: LayerInfo, y: Any, dtype: str) -> Any:
    """A model's output (node ``info``), features flattened from a map put back in C,H,W order (the torch model's vector):
    a Keras Flatten gives H,W,C order, which a Dense after it absorbs in its weights, but an output has no
    weights to absorb it."""
    from ...kinds.dense._keras import FeatureOrder

    perm = layout.flatten_permutation(info.output_source)
    if perm is None:
        return y
    order = np.argsort(perm)
    return FeatureOrder(order, dtype=dtype, name=f"{keras_name(info)}_chw_order")(y)


def _build_nodes(
    infos: list[LayerInfo],
    values: dict[int, Any],
    side: dict[str, Any],
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
        elif reads_side(info):  # an attention reads the model's padding mask too, a token-type embedding its types
            values[info.index] = _BUILDERS[type(info.layer)](info, (args[0], side[cast(str, reads_side(info))]), dtype)
        else:
            values[info.index] = _BUILDERS[type(info.layer)](info, args[0], dtype)
        node_layers[info.index] = [keras_name(info)] if info.is_join else _history(values[info.index], args)
    # (keras.Model walks the functional graph recursively, a few frames per layer: a 1,000-layer spec exceeds
    # Python's default limit of 1,000 frames, so build() raises it for that call only.)
