"""Running Keras models built by xconv: inference, per-node tracing with gradients, training."""

from __future__ import annotations

from typing import Any, Callable, Iterable

import numpy as np

from ._env import keras, tf

from ... import layout
from ...shapes import LayerInfo
from .builders import fused_relus
from .weights import _params, _to_canonical


def forward(model: keras.Model, x: np.ndarray) -> np.ndarray:
    """Run ``model`` on an NCHW (or (N, F)) numpy batch; returns numpy in NCHW (or (N, F), features in C,H,W
    order where they were flattened from a map)."""
    y = np.asarray(model(layout.to_nhwc(x) if x.ndim == 4 else x, training=False))
    if y.ndim == 4:
        return layout.to_nchw(y)
    spec = getattr(model, "xconv_spec", None)
    if spec is not None:
        from ...shapes import infer

        y = layout.features_to_chw_order(y, infer(spec)[-1].output_source)
    return y


def _nchw(y: np.ndarray) -> np.ndarray:
    return layout.to_nchw(y) if y.ndim == 4 else y


def trace(model: keras.Model, x: np.ndarray, upstream: np.ndarray, training: bool = False) -> tuple[list[np.ndarray], np.ndarray, dict[str, np.ndarray]]:
    """Every graph node's output, and the gradients of sum(output * upstream) with respect to the input and
    every trainable weight, all as numpy in canonical layout (NCHW, OIHW, (out, in) in C,H,W order); layers
    are called with ``training`` (True: BatchNorm statistics are updated once). A ReLU fused into its conv
    is split out: the conv runs with a linear activation, then the ReLU."""
    from ...shapes import infer

    infos = infer(model.xconv_spec)
    by_name = {layer.name: layer for layer in model.layers}
    xv = tf.constant(layout.to_nhwc(x) if x.ndim == 4 else x)
    up = tf.constant(layout.to_nhwc(upstream) if upstream.ndim == 4 else
                     layout.to_keras("vector", upstream, infos[-1].output_source))
    variables = {(i.index, n): v for i in infos for n, v in _params(model, i).items() if n not in i.buffers}
    fused = fused_relus(infos)
    relu_of = {relu: conv for conv, relu in fused.items()}
    values: dict[int, Any] = {-1: xv}
    with tf.GradientTape() as tape:
        tape.watch(xv)
        for info in infos:
            args = [values[i] for i in info.inputs]
            if info.index in relu_of:
                values[info.index] = keras.activations.relu(args[0])
                continue
            names = model.xconv_node_layers[info.index]
            if info.is_join:
                values[info.index] = by_name[names[0]](args, training=training)
                continue
            h = args[0]
            for name in names:
                layer = by_name[name]
                if info.index in fused and hasattr(layer, "activation"):  # the conv's own output, ReLU apart
                    activation, layer.activation = layer.activation, keras.activations.linear
                    try:
                        h = layer(h, training=training)
                    finally:
                        layer.activation = activation
                else:
                    h = layer(h, training=training)
            values[info.index] = h
        loss = tf.reduce_sum(values[infos[-1].index] * up)
    keys = list(variables)
    grads = tape.gradient(loss, [xv, *variables.values()], unconnected_gradients=tf.UnconnectedGradients.ZERO)
    param_grads = {
        f"{infos[index].key}.{name}": _to_canonical(infos[index], name, np.asarray(g.numpy()))
        for (index, name), g in zip(keys, grads[1:])
    }
    layer_outs = []
    for i in infos:
        y = _nchw(np.asarray(values[i.index].numpy()))
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
    dtype = str(model.inputs[0].dtype)
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


