"""Canonical weights in and out of Keras variables, and the zero-copy transfer path."""

from __future__ import annotations

from typing import Any

import numpy as np

from ... import layout
from ...kinds import fixed_values
from ...kinds._keras_layout import _VARIABLES, from_canonical, layout_kind, layout_source, to_canonical
from ...kinds._keras_names import keras_name
from ...shapes import LayerInfo
from .._tf_env import keras, tf


def _params(model: keras.Model, info: LayerInfo) -> dict[str, Any]:
    """Canonical state name -> Keras variable, for one spec layer."""
    if not info.params:
        return {}
    layers = model.__dict__.get("_xconv_layers_by_name")
    if layers is None:
        layers = model.__dict__["_xconv_layers_by_name"] = {layer.name: layer for layer in model.layers}
    layer = layers[keras_name(info)]
    variables = _VARIABLES.get(type(info.layer))
    if variables is not None:  # (fixed data is a constant of the Keras layer, not a variable: none listed)
        return variables(layer, info)  # type: ignore[no-any-return]
    out = {"weight": layer.kernel}
    if "bias" in info.params:
        out["bias"] = layer.bias
    return out


def get_weights(model: keras.Model, infos: list[LayerInfo]) -> dict[str, np.ndarray]:
    out = {}
    for info in infos:
        fixed = fixed_values(info)
        for name in info.params:
            if name in fixed:
                out[f"{info.key}.{name}"] = fixed[name].copy()
        for name, variable in _params(model, info).items():
            out[f"{info.key}.{name}"] = to_canonical(info, name, np.asarray(variable.numpy()))
    return {f"{i.key}.{n}": out[f"{i.key}.{n}"] for i in infos for n in i.params}


def set_weights(model: keras.Model, infos: list[LayerInfo], weights: dict[str, np.ndarray]) -> None:
    for info in infos:
        for name, variable in _params(model, info).items():
            variable.assign(from_canonical(info, name, weights[f"{info.key}.{name}"]))


# ---- zero-copy transfers (transfer_weights between torch and Keras) ----


def _transfer_state(model: keras.Model, infos: list[LayerInfo]) -> dict[str, Any]:
    """Per model, cached: canonical key -> variable, the float layout ops, the int64 counters, the float bytes."""
    state: dict[str, Any] | None = model.__dict__.get("_xconv_transfer")
    if state is None:
        variables = {f"{i.key}.{n}": v for i in infos for n, v in _params(model, i).items()}
        counters = [k for k in variables if k.endswith(".num_batches_tracked")]
        ops = _layout_ops(infos)
        nbytes = sum(int(np.prod(variables[k].shape)) * np.dtype(variables[k].dtype).itemsize for k, _, _ in ops)
        state = {"variables": variables, "counters": counters, "ops": ops, "bytes": nbytes}
        model.__dict__["_xconv_transfer"] = state
    return state


def float_bytes(model: keras.Model, infos: list[LayerInfo]) -> int:
    return int(_transfer_state(model, infos)["bytes"])


_TF_OPS = layout.ArrayOps(
    transpose=tf.transpose, take=lambda x, idx, axis: tf.gather(x, idx, axis=axis), reshape=tf.reshape
)


def _layout_ops(infos: list[LayerInfo]) -> list[tuple[str, str, Any]]:
    """Per float canonical key: (key, layout kind, flatten source)."""
    return [
        (f"{i.key}.{n}", layout_kind(i, n), layout_source(i, n))
        for i in infos
        for n in i.params
        if n != "num_batches_tracked" and n not in i.fixed
    ]


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

        @tf.function(autograph=False)  # type: ignore[untyped-decorator]  # tensorflow ships no type information
        def move(values: Any, counts: Any) -> None:
            for (key, kind, source), x in zip(ops, values):
                variables[key].assign(layout.to_keras(kind, x, source, _TF_OPS))
            for i, key in enumerate(counters):
                variables[key].assign(counts[i])
    else:

        @tf.function(autograph=False)  # type: ignore[untyped-decorator]  # tensorflow ships no type information
        def move() -> Any:
            floats = [
                tf.identity(layout.to_canonical(kind, tf.convert_to_tensor(variables[key]), source, _TF_OPS))
                for key, kind, source in ops
            ]
            return floats, tf.stack([tf.convert_to_tensor(variables[k]) for k in counters]) if counters else None

    state[direction] = move
    return move


def import_tensors(model: keras.Model, infos: list[LayerInfo], arrays: dict[str, Any]) -> None:
    """Assign canonical DLPack tensors (torch tensors, numpy arrays) of the model's dtype to its variables.

    Tensors that a layout change (transpose, gather) turns into new buffers go in without a copy; the others
    (biases, BatchNorm vectors: small) are copied first, since TensorFlow would otherwise keep the source's
    buffer as the variable's and the two models would share memory."""
    dlpack = tf.experimental.dlpack

    state = _transfer_state(model, infos)
    move = _compiled(model, infos, "in")
    counts = np.array([int(arrays[k]) for k in state["counters"]], dtype=np.int64)
    values = []
    for key, kind, source in state["ops"]:
        if _new_buffer(kind, source, tuple(arrays[key].shape)):
            values.append(dlpack.from_dlpack(arrays[key].__dlpack__()))
        else:
            values.append(tf.constant(np.array(np.from_dlpack(arrays[key]), copy=True)))
    move(values, counts)


def _new_buffer(kind: str, source: Any, shape: tuple[int, ...]) -> bool:
    """Whether the layout change of a canonical tensor writes a new buffer: a gather does; a transpose does
    unless it only moves size-1 axes (TensorFlow then reshapes, keeping the buffer)."""
    if kind in ("linear", "vector") and not isinstance(source, int) and layout.flatten_permutation(source) is not None:
        return True
    perm = {
        "conv": layout.OIHW_TO_HWIO,
        "conv_transpose": layout.OIHW_TO_HWIO,
        "depthwise": layout.OIHW_TO_HWIO,
        "linear": (1, 0),
        "map": (0, 2, 3, 1),
    }.get(kind)
    if perm is None:
        return False
    moved = [axis for axis in perm if shape[axis] != 1]
    return moved != sorted(moved)


def export_tensors(model: keras.Model, infos: list[LayerInfo]) -> dict[str, Any]:
    """Canonical weights as DLPack capsules of TF tensors, computed in one call (each capsule can be consumed
    once, by ``torch.from_dlpack`` for example); the int64 counters as numpy scalars."""
    dlpack = tf.experimental.dlpack

    state = _transfer_state(model, infos)
    floats, counts = _compiled(model, infos, "out")()
    out: dict[str, Any] = {key: dlpack.to_dlpack(t) for (key, _, _), t in zip(state["ops"], floats)}
    if state["counters"]:
        for key, count in zip(state["counters"], counts.numpy()):
            out[key] = np.asarray(count, dtype=np.int64)
    for info in infos:  # (fixed data: the layer's one value)
        out.update({f"{info.key}.{n}": v.copy() for n, v in fixed_values(info).items()})
    return out
