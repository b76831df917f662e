"""Activations: ReLU, LeakyReLU, Sigmoid, Tanh, GELU, ELU, SiLU, Softmax, Identity, Hardtanh, Hardsigmoid, Hardswish, PReLU: the Keras parts (built layers and their weight layouts, and the Keras layers that import as these
kinds)."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any, cast

import numpy as np

from ... import layout
from ..._info import LayerInfo
from ...backends._tf_env import keras, tf
from ...errors import UnsupportedLayerError
from .._keras_names import keras_name
from . import (
    _SQRT_2_OVER_PI,
    ELU,
    GELU,
    Hardsigmoid,
    Hardswish,
    Hardtanh,
    Identity,
    LeakyReLU,
    PReLU,
    ReLU,
    Sigmoid,
    SiLU,
    Softmax,
    Square,
    StarReLU,
    Tanh,
    softmax_axis,
)


def _prelu(info: LayerInfo, x: Any, dtype: str) -> Any:
    """Keras' PReLU (with torch's gradient at 0) with the slope shared over the pixels (one per channel) or over
    everything (one slope)."""
    rank = len(info.input_shape)
    one = cast(PReLU, info.layer).num_parameters == 1
    shared = list(range(1, rank + 1)) if one else (list(range(1, rank)) or None)
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
        if self.function == "square":
            return x * x
        raise ValueError(f"TorchActivation: unknown function {self.function!r}")

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "function": self.function, "param": self.param, "param2": self.param2}


@keras.saving.register_keras_serializable(package="xconv")
class TorchPReLU(keras.layers.PReLU):
    """Keras' PReLU (the same ``alpha`` and ``shared_axes``) with torch's gradient at 0: x where x > 0, else
    alpha * x. Keras computes relu(x) - alpha * relu(-x), whose gradient at exactly 0 is 0 instead of alpha
    (an inserted zero of a strided transposed conv with a zero bias reaches it; 0.43 off in a test)."""

    def call(self, inputs: Any) -> Any:
        return keras.ops.where(inputs > 0, inputs, self.alpha * inputs)


@keras.saving.register_keras_serializable(package="xconv")
class StarReLULayer(keras.layers.Layer):
    """``scale * relu(x) ** 2 + bias`` with a learned ``scale`` and ``bias`` of shape (1,) (see
    :class:`xconv.StarReLU`), in torch's order of operations."""

    def build(self, input_shape: Any) -> None:
        self.scale = self.add_weight(name="scale", shape=(1,), initializer="ones")
        self.bias = self.add_weight(name="bias", shape=(1,), initializer="zeros")

    def call(self, x: Any) -> Any:
        r = keras.ops.relu(x)
        return keras.ops.cast(self.scale, x.dtype) * (r * r) + keras.ops.cast(self.bias, x.dtype)

    def compute_output_shape(self, input_shape: Any) -> Any:
        return input_shape


BUILDERS: dict[type, Any] = {
    ReLU: _named(keras.layers.ReLU),
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
    PReLU: _prelu,
    StarReLU: lambda info, x, dtype: StarReLULayer(dtype=dtype, name=keras_name(info))(x),
    Square: lambda info, x, dtype: TorchActivation("square", dtype=dtype, name=keras_name(info))(x),
}


_SQRT1_2 = 0.7071067811865476


def _prelu_layout(info: LayerInfo, name: str) -> str:
    """Keras' alpha: (1, 1, C) for a map, (F,) or (1,) for flat features."""
    if len(info.input_shape) == 3:
        return "map_slope"
    return "vector" if info.layer.num_parameters > 1 else "same"  # type: ignore[attr-defined]


VARIABLES: dict[type, Any] = {
    PReLU: lambda layer, info: {"weight": layer.alpha},
    StarReLU: lambda layer, info: {"scale": layer.scale, "bias": layer.bias},
}
LAYOUTS: dict[type, Any] = {PReLU: _prelu_layout}


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


def keras_activation(layer: Any, where: str) -> Any:
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
    hub = sys.modules.get("keras_hub.src.utils.keras_utils")  # (keras-hub's BERT's: gelu(x, approximate=True))
    if hub is not None and hasattr(hub, "gelu_approximate"):
        known.append((hub.gelu_approximate, GELU("tanh")))
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


def _keras_relu(layer: Any, where: str, current: tuple[int, ...]) -> Any:
    if layer.negative_slope != 0 or layer.threshold != 0:
        raise UnsupportedLayerError(
            f"from_keras: {where}: only ReLU() and ReLU(max_value=m) are supported (no negative_slope or threshold)"
        )
    return (ReLU() if layer.max_value is None else Hardtanh(0.0, float(layer.max_value))), {}


def _keras_prelu(layer: Any, where: str, current: tuple[int, ...]) -> Any:
    """(forward the same; Keras' gradient at 0 is 0)"""
    alpha = np.asarray(layer.alpha.numpy())
    per = alpha.shape[-1] if alpha.size > 1 else 1
    if alpha.size > 1 and (alpha.shape[-1] != current[0] or alpha.size != current[0]):
        raise UnsupportedLayerError(
            f"from_keras: {where}: PReLU with slopes of shape {alpha.shape} (one per pixel); supported: one slope, "
            "or one per channel (shared_axes=[1, 2] on a map)"
        )
    return PReLU(per), {"weight": alpha}


def _keras_softmax(layer: Any, where: str, current: tuple[int, ...]) -> Any:
    rank = len(current) + 1
    axes = tuple(layer.axis) if isinstance(layer.axis, (list, tuple)) else (layer.axis,)
    if len(axes) != 1 or axes[0] % rank == 0:
        raise UnsupportedLayerError(f"from_keras: {where}: only a Softmax over one non-batch axis is supported")
    return Softmax(layout.canonical_axis(axes[0] % rank, rank)), {}


def _keras_torch_activation(layer: Any, where: str, current: tuple[int, ...]) -> Any:
    makers: dict[str, Callable[[], Any]] = {
        "leaky_relu": lambda: LeakyReLU(layer.param),
        "elu": lambda: ELU(layer.param),
        "gelu": lambda: GELU(),
        "gelu_tanh": lambda: GELU("tanh"),
        "hardtanh": lambda: Hardtanh(layer.param, layer.param2),
        "hardsigmoid": lambda: Hardsigmoid(),
        "hardswish": lambda: Hardswish(),
        "square": lambda: Square(),
    }
    return makers[layer.function](), {}


#: Keras layer class (exactly) -> (layer, where, its input's logical shape) -> (spec layer or None for the
#: identity, {canonical state name: Keras array})
KERAS_IMPORTS: dict[type, Any] = {
    keras.layers.ReLU: _keras_relu,
    keras.layers.Activation: lambda layer, where, current: (keras_activation(layer, where), {}),
    keras.layers.PReLU: _keras_prelu,
    TorchPReLU: _keras_prelu,
    keras.layers.LeakyReLU: lambda layer, where, current: (LeakyReLU(float(layer.negative_slope)), {}),
    keras.layers.ELU: lambda layer, where, current: (ELU(float(layer.alpha)), {}),
    keras.layers.Softmax: _keras_softmax,
    keras.layers.Identity: lambda layer, where, current: (Identity(), {}),
    TorchActivation: _keras_torch_activation,
    StarReLULayer: lambda layer, where, current: (
        StarReLU(),
        {"scale": np.asarray(layer.scale.numpy()), "bias": np.asarray(layer.bias.numpy())},
    ),
}
