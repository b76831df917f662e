"""Normalisations: the Keras parts (built layers and their weight layouts, and the Keras layers that import as
these kinds)."""

from __future__ import annotations

from typing import Any, cast

import numpy as np

from ..._info import LayerInfo
from ...backends._tf_env import keras, tf
from ...errors import UnsupportedLayerError
from .._keras_names import keras_name
from . import BatchNorm1d, BatchNorm2d, GlobalResponseNorm, GroupNorm, LayerNorm


@keras.saving.register_keras_serializable(package="xconv", name="GlobalResponseNorm")
class GlobalResponseNormLayer(keras.layers.Layer):
    """Global response normalisation of an (H, W, C) map (see :class:`xconv.GlobalResponseNorm`): variables
    ``gamma`` and ``beta`` of shape (C,). A channel that is all zeros has norm 0 and gradient 0, as in torch (the
    sum of squares is floored at the dtype's smallest normal number, which changes no value by more than the
    square root of that number)."""

    def __init__(self, epsilon: float = 1e-6, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.epsilon = float(epsilon)

    def build(self, input_shape: Any) -> None:
        channels = int(input_shape[-1])
        self.gamma = self.add_weight(name="gamma", shape=(channels,), initializer="zeros")
        self.beta = self.add_weight(name="beta", shape=(channels,), initializer="zeros")

    def call(self, x: Any) -> Any:
        tiny = np.finfo(np.dtype(x.dtype.name)).tiny
        squares = tf.reduce_sum(tf.square(x), axis=[1, 2], keepdims=True)
        norms = tf.sqrt(tf.maximum(squares, tf.cast(tiny, x.dtype)))
        scale = norms / (tf.reduce_mean(norms, axis=-1, keepdims=True) + tf.constant(self.epsilon, dtype=x.dtype))
        return x + tf.cast(self.gamma, x.dtype) * (x * scale) + tf.cast(self.beta, x.dtype)

    def compute_output_shape(self, input_shape: Any) -> Any:
        return input_shape

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "epsilon": self.epsilon}


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
            x,
            mean,
            variance,
            axis=-1,
            offset=self.beta if self.center else None,
            scale=self.gamma if self.scale else None,
            epsilon=self.epsilon,
        )

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "torch_momentum": self.torch_momentum,
            "track_running_stats": self.track_running_stats,
        }


BUILDERS: dict[type, Any] = {
    GlobalResponseNorm: lambda info, x, dtype: GlobalResponseNormLayer(
        info.layer.eps, dtype=dtype, name=keras_name(info)
    )(x),
    BatchNorm2d: _batchnorm,
    BatchNorm1d: _batchnorm,
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
        center=info.layer.bias,
        scale=info.layer.affine,
        dtype=dtype,
        name=keras_name(info),
    )(x),
}


_BN_VARIABLES = {
    "weight": "gamma",
    "bias": "beta",
    "running_mean": "moving_mean",
    "running_var": "moving_variance",
    "num_batches_tracked": "num_batches_tracked",
}


def _bn_variables(layer: Any, info: LayerInfo) -> dict[str, Any]:
    return {name: getattr(layer, _BN_VARIABLES[name]) for name in info.params}


def _affine_variables(layer: Any, info: LayerInfo) -> dict[str, Any]:
    return {name: getattr(layer, {"weight": "gamma", "bias": "beta"}[name]) for name in info.params}


VARIABLES: dict[type, Any] = {
    GlobalResponseNorm: lambda layer, info: {"weight": layer.gamma, "bias": layer.beta},
    BatchNorm2d: _bn_variables,
    BatchNorm1d: _bn_variables,
    LayerNorm: _affine_variables,
    GroupNorm: _affine_variables,
}
LAYOUTS: dict[type, Any] = {
    BatchNorm2d: lambda info, name: "same" if name == "num_batches_tracked" else "vector",
    BatchNorm1d: lambda info, name: "same" if name == "num_batches_tracked" else "vector",
    LayerNorm: lambda info, name: "vector",
}


def _keras_group_norm(layer: Any, where: str, current: tuple[int, ...]) -> Any:
    axis = layer.axis[0] if isinstance(layer.axis, (list, tuple)) else layer.axis
    if len(current) != 3 or axis % 4 != 3 or layer.center and not layer.scale:
        raise UnsupportedLayerError(
            f"from_keras: {where}: GroupNormalization is supported over the channels (axis=-1) of a map, with a "
            "scale (center=True needs scale=True)"
        )
    weights = {}
    if layer.scale:
        weights["weight"] = np.asarray(layer.gamma.numpy())
    if layer.center:
        weights["bias"] = np.asarray(layer.beta.numpy())
    spec = GroupNorm(
        int(layer.groups), current[0], eps=float(layer.epsilon), affine=bool(layer.scale), bias=bool(layer.center)
    )
    return spec, weights


def _keras_batch_norm(layer: Any, where: str, current: tuple[int, ...]) -> Any:
    axis = layer.axis[0] if isinstance(layer.axis, (list, tuple)) else layer.axis
    if axis % (len(current) + 1) != len(current) or layer.renorm:
        raise UnsupportedLayerError(
            f"from_keras: {where}: only BatchNormalization over the last axis, without renorm, is supported"
        )
    torch_bn = isinstance(layer, TorchBatchNorm)
    momentum = layer.torch_momentum if torch_bn else 1.0 - float(layer.momentum)
    track = layer.track_running_stats if torch_bn else True
    cls = BatchNorm2d if len(current) == 3 else BatchNorm1d
    state = {name: attr for name, attr, on in (("weight", "gamma", layer.scale), ("bias", "beta", layer.center)) if on}
    if track:
        state.update(running_mean="moving_mean", running_var="moving_variance")
    weights = {pname: np.asarray(getattr(layer, attr).numpy()) for pname, attr in state.items()}
    if track:  # a native Keras layer does not count batches
        count = layer.num_batches_tracked.numpy() if torch_bn else 0
        weights["num_batches_tracked"] = np.asarray(count, dtype=np.int64)
    return cls(
        current[0] if len(current) != 2 else current[-1],  # (tokens (L, E): each of the E features)
        eps=float(layer.epsilon),
        momentum=momentum,
        affine=bool(layer.center or layer.scale),
        track_running_stats=track,
        scale=bool(layer.scale),
        center=bool(layer.center),
        frozen=not layer.trainable,  # Keras' fine-tuning recipe: inference mode in training too
    ), weights


def _keras_layer_norm(layer: Any, where: str, current: tuple[int, ...]) -> Any:
    axes = tuple(layer.axis) if isinstance(layer.axis, (list, tuple)) else (layer.axis,)
    rank = len(current) + 1
    if len(axes) != 1 or axes[0] % rank != rank - 1 or layer.rms_scaling or (layer.center and not layer.scale):
        raise UnsupportedLayerError(
            f"from_keras: {where}: only LayerNormalization over the last (channel) axis, without rms_scaling, "
            "with scale (and center) or neither is supported"
        )
    weights = {}
    if layer.scale:
        weights["weight"] = np.asarray(layer.gamma.numpy())
    if layer.center:
        weights["bias"] = np.asarray(layer.beta.numpy())
    return LayerNorm(
        current[-1] if len(current) == 2 else current[0],
        eps=float(layer.epsilon),
        elementwise_affine=bool(layer.scale),
        bias=bool(layer.center),
    ), weights


#: Keras layer class (exactly) -> (layer, where, its input's logical shape) -> (spec layer, Keras arrays)
KERAS_IMPORTS: dict[type, Any] = {
    GlobalResponseNormLayer: lambda layer, where, current: (
        GlobalResponseNorm(current[0], eps=layer.epsilon),
        {"weight": np.asarray(layer.gamma.numpy()), "bias": np.asarray(layer.beta.numpy())},
    ),
    keras.layers.GroupNormalization: _keras_group_norm,
    keras.layers.BatchNormalization: _keras_batch_norm,
    TorchBatchNorm: _keras_batch_norm,
    keras.layers.LayerNormalization: _keras_layer_norm,
}
