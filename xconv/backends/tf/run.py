"""Running Keras models built by xconv: inference, per-node tracing with gradients, training."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import numpy as np

from ... import layout
from ...graph import upstreams
from ...kinds._keras_layout import to_canonical
from ...kinds.token._keras import SelfAttentionLayer, TokenTypeEmbeddingLayer
from .._tf_env import keras, tf
from .builders import fused_relus
from .weights import _params


def _inputs(model: keras.Model, x: np.ndarray, side: dict[str, np.ndarray | None]) -> Any:
    """What the model is called with: the NHWC (or flat, or token) batch, then a text encoder's padding mask
    and token types where it takes them, as its inputs stand (None: every token, and every token of type 0;
    all ones and all zeros for an input that is not optional)."""
    from ...importers._keras_text import input_roles

    batch = layout.to_nhwc(x) if x.ndim == 4 else x
    if len(model.inputs) == 1:
        return batch
    given = []
    for t, role in zip(model.inputs, input_roles(model)):
        value = batch if role == "ids" else side.get(role)
        if value is None and not getattr(t._keras_history.operation, "optional", False):
            value = (np.ones if role == "padding_mask" else np.zeros)(x.shape[:2], dtype=np.int64)
        given.append(None if value is None else np.asarray(value, dtype=t.dtype))
    struct = getattr(model, "_inputs_struct", None)
    if isinstance(struct, dict):  # (called with the dict it takes: keras-hub's backbones)
        key_of = {id(t): k for k, t in struct.items()}
        return {key_of[id(t)]: value for t, value in zip(model.inputs, given)}
    return given


def forward(model: keras.Model, x: np.ndarray, output: str | list[str] | None = None, **side: np.ndarray | None) -> Any:
    """Run ``model`` on an NCHW (or (N, F)) numpy batch; returns numpy in NCHW (or (N, F), features in C,H,W
    order where they were flattened from a map: the model itself returns them so, nothing is reordered here).
    A model with several outputs gives the list of them."""
    return _numpy(_listed(model, _entry(model(_inputs(model, x, side), training=False), output)))


def _listed(model: keras.Model, y: Any) -> Any:
    """A model built by xconv whose spec lists its outputs returns a list, one of one too (a functional Keras
    model returns a list of one output as the tensor itself)."""
    spec = getattr(model, "xconv_spec", None)
    listed = spec is not None and spec.outputs is not None
    return [y] if listed and not isinstance(y, (list, tuple)) else y


def _numpy(y: Any) -> Any:
    if isinstance(y, (list, tuple)):
        return [_numpy(part) for part in y]
    return _nchw(np.asarray(y))


def forward_training(
    model: keras.Model, x: np.ndarray, output: str | list[str] | None = None, **side: np.ndarray | None
) -> Any:
    """One call with ``training=True`` (as ``fit`` calls it: BatchNorm on batch statistics, except layers that
    are not trainable), on an NCHW (or (N, F)) batch; the moving statistics (every non-trainable variable) are
    put back afterwards."""
    saved = [(v, v.numpy()) for v in model.non_trainable_variables]
    try:
        y = _listed(model, _entry(model(_inputs(model, x, side), training=True), output))
    finally:
        for v, value in saved:
            v.assign(value)
    return _numpy(y)


def _entry(y: Any, output: str | list[str] | None) -> Any:
    """A model's output: the entry ``output`` of one that returns a dict (or its one entry)."""
    if not isinstance(y, dict):
        return y
    if isinstance(output, (list, tuple)):
        return [y[k] for k in output]
    if output is None:
        if len(y) != 1:
            raise ValueError(f"the model returns a dict of {sorted(y)}: say which entry (output=)")
        return next(iter(y.values()))
    return y[output]


def _nchw(y: np.ndarray) -> np.ndarray:
    return layout.to_nchw(y) if y.ndim == 4 else y


def trace(
    model: keras.Model,
    x: np.ndarray,
    upstream: Any,
    training: bool = False,
    **side: np.ndarray | None,
) -> tuple[list[np.ndarray], np.ndarray | None, dict[str, np.ndarray]]:
    """Every graph node's output, and the gradients of sum(output * upstream) with respect to the input and
    every trainable weight, all as numpy in canonical layout (NCHW, OIHW, (out, in) in C,H,W order); layers
    are called with ``training`` (True: BatchNorm statistics are updated once). A ReLU fused into its conv
    is split out: the conv runs with a linear activation, then the ReLU."""
    from ...importers.keras_graph import _calls
    from ...shapes import infer

    infos = infer(model.xconv_spec)
    xv = tf.constant(layout.to_nhwc(x) if x.ndim == 4 else x)
    # (one per output; a vector is in C,H,W order, as the model returns it)
    ups = [tf.constant(layout.to_nhwc(u) if np.ndim(u) == 4 else np.asarray(u)) for u in upstreams(infos, upstream)]
    variables = {(i.index, n): v for i in infos for n, v in _params(model, i).items() if n not in i.buffers}
    fused = fused_relus(infos)
    relu_of = {relu: conv for conv, relu in fused.items()}
    node_layers = model.xconv_node_layers
    fused_layers = {name: i for i in fused for name in node_layers[i] if hasattr(model.get_layer(name), "activation")}
    # Run the Keras graph call by call, following its own wiring (a mis-wired model shows at its node), and
    # keep a fused conv's output before its ReLU as well.
    calls = _calls(model)
    value: dict[int, Any] = {}
    out_of: dict[str, int] = {}
    pre: dict[str, Any] = {}
    with tf.GradientTape() as tape:
        if x.dtype.kind not in "iu":
            tape.watch(xv)
        value[id(model.inputs[0])] = xv
        for t in model.inputs[1:]:  # the padding mask and token types (None: every token, of type 0)
            given = side.get(t.name)
            value[id(t)] = None if given is None else tf.constant(given, tf.int64)
        for layer, inputs, out in calls:
            args = [value[id(t)] for t in inputs]
            if isinstance(layer, (SelfAttentionLayer, TokenTypeEmbeddingLayer)) and len(args) == 2:
                read = "padding_mask" if isinstance(layer, SelfAttentionLayer) else "token_types"
                value[id(out)] = layer(args[0], **{read: args[1]}, training=training)
                out_of[layer.name] = id(out)
                continue
            arg = (
                args
                if len(args) > 1
                or isinstance(
                    layer, (keras.layers.Add, keras.layers.Multiply, keras.layers.Subtract, keras.layers.Concatenate)
                )
                else args[0]
            )
            out_of[layer.name] = id(out)
            if layer.name in fused_layers:
                activation, layer.activation = layer.activation, keras.activations.linear
                try:
                    pre[layer.name] = layer(arg, training=training)
                finally:
                    layer.activation = activation
                value[id(out)] = activation(pre[layer.name])
            else:
                value[id(out)] = layer(arg, training=training)
        values: dict[int, Any] = {}
        for info in infos:
            if info.index in relu_of:
                values[info.index] = value[out_of[node_layers[relu_of[info.index]][-1]]]
                continue
            names = node_layers[info.index]
            if info.index in fused:  # the conv's own output: before the ReLU, through what follows the conv
                at = next(k for k, name in enumerate(names) if name in fused_layers)
                h = pre[names[at]]
                for name in names[at + 1 :]:
                    h = model.get_layer(name)(h, training=training)
                values[info.index] = h
            else:
                values[info.index] = value[out_of[names[-1]]]
        loss = tf.add_n([tf.reduce_sum(value[id(t)] * up) for t, up in zip(model.outputs, ups)])
    keys = list(variables)
    ids = x.dtype.kind in "iu"  # token ids: no gradient
    sources = [*([] if ids else [xv]), *variables.values()]
    grads = tape.gradient(loss, sources, unconnected_gradients=tf.UnconnectedGradients.ZERO)
    param_grads = {
        f"{infos[index].key}.{name}": to_canonical(infos[index], name, np.asarray(tf.convert_to_tensor(g).numpy()))
        for (index, name), g in zip(keys, grads[0 if ids else 1 :])  # (an embedding's gradient is IndexedSlices)
    }
    layer_outs = []
    for i in infos:
        y = _nchw(np.asarray(values[i.index].numpy()))
        layer_outs.append(layout.features_to_chw_order(y, i.output_source) if y.ndim == 2 else y)
    return layer_outs, None if ids else _nchw(np.asarray(grads[0].numpy())), param_grads


def train(
    model: keras.Model,
    batches: Iterable[tuple[Any, ...]],
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
    from . import dtype_of

    dtype = dtype_of(model)
    f = np.float64 if dtype == "float64" else float
    lr = f(optimizer["lr"])
    if optimizer["name"] == "sgd":
        opt = keras.optimizers.SGD(
            learning_rate=lambda: lr, momentum=f(optimizer["momentum"]), nesterov=optimizer["nesterov"]
        )
    else:
        b1, b2 = optimizer["betas"]
        opt = keras.optimizers.Adam(learning_rate=lambda: lr, beta_1=f(b1), beta_2=f(b2), epsilon=f(optimizer["eps"]))
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True, dtype=dtype)
    variables = model.trainable_variables
    losses = []
    for t, (x, y, *side) in enumerate(batches):  # (a text encoder's: its padding mask and token types, by name)
        if optimizer["name"] == "adam":
            # torch adds eps to sqrt(v_hat); Keras adds it to sqrt(v) with the bias correction folded into the
            # step size, which equals torch's rule with eps * sqrt(1 - beta_2**step). Set it per step to match.
            opt.epsilon = f(optimizer["eps"] * np.sqrt(1.0 - optimizer["betas"][1] ** (t + 1)))
        inputs = _inputs(model, x, side[0] if side else {})
        with tf.GradientTape() as tape:
            loss = loss_fn(tf.constant(y), model(inputs, training=True))
        opt.apply_gradients(zip(tape.gradient(loss, variables), variables))
        losses.append(float(loss.numpy()))
        if on_step is not None:
            on_step(t, losses[-1])
    return np.asarray(losses)
