"""Per-channel maps and rearrangements: Rescaling, Normalization, LayerScale, Narrow, ChannelShuffle and ZeroPad2d: the Keras parts (built layers and their weight layouts, and the Keras layers that import as these
kinds)."""

from __future__ import annotations

from typing import Any

import numpy as np

from ... import layout
from ...backends._tf_env import keras, tf
from ...errors import UnsupportedLayerError
from .._keras_names import keras_name
from . import (
    ChannelShuffle,
    LayerScale,
    Narrow,
    Normalization,
    PositionEmbedding2d,
    Rescaling,
    ZeroPad2d,
    narrow_axis,
    shuffle_order,
)


def _channels(value: Any) -> Any:
    return [float(v) for v in value] if isinstance(value, (list, tuple)) else float(value)


@keras.saving.register_keras_serializable(package="xconv")
class ChannelRescaling(keras.layers.Layer):
    """x * scale + offset, numbers or one per channel (last axis), with the constants made in the input's dtype
    (Keras' own ``Rescaling`` casts Python floats through float32 on the way to float64)."""

    def __init__(self, scale: Any = 1.0, offset: Any = 0.0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.scale, self.offset = _channels(scale), _channels(offset)

    def call(self, x: Any) -> Any:
        return x * tf.constant(self.scale, dtype=x.dtype) + tf.constant(self.offset, dtype=x.dtype)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "scale": self.scale, "offset": self.offset}


@keras.saving.register_keras_serializable(package="xconv")
class ChannelNormalization(keras.layers.Layer):
    """(x - mean) / max(sqrt(variance), 1e-7) over the last axis, as Keras' ``Normalization``, with ``mean`` and
    ``variance`` as (non-trainable) variables that weights load into."""

    def build(self, input_shape: Any) -> None:
        n = int(input_shape[-1])
        self.mean = self.add_weight(shape=(n,), initializer="zeros", trainable=False, name="mean")
        self.variance = self.add_weight(shape=(n,), initializer="ones", trainable=False, name="variance")

    def call(self, x: Any) -> Any:
        std = tf.maximum(tf.sqrt(tf.cast(self.variance, x.dtype)), tf.constant(1e-7, dtype=x.dtype))
        return (x - tf.cast(self.mean, x.dtype)) / std


@keras.saving.register_keras_serializable(package="xconv")
class ChannelScale(keras.layers.Layer):
    """x * gamma with a learned per-channel ``gamma`` of shape (C,) (layer scale, as keras.applications'
    ConvNeXt ``LayerScale``)."""

    def build(self, input_shape: Any) -> None:
        self.gamma = self.add_weight(shape=(int(input_shape[-1]),), initializer="ones", name="gamma")

    def call(self, x: Any) -> Any:
        return x * tf.cast(self.gamma, x.dtype)


@keras.saving.register_keras_serializable(package="xconv", name="PositionEmbedding2d")
class PositionEmbedding2dLayer(keras.layers.Layer):
    """``x + embedding``, a learned (1, H, W, C) tensor added to the NHWC map (see
    :class:`xconv.PositionEmbedding2d`)."""

    def build(self, input_shape: Any) -> None:
        shape = (1, *(int(d) for d in input_shape[1:]))
        self.embedding = self.add_weight(shape=shape, initializer="zeros", name="embedding")

    def call(self, x: Any) -> Any:
        return x + tf.cast(self.embedding, x.dtype)


@keras.saving.register_keras_serializable(package="xconv", name="Narrow")
class NarrowLayer(keras.layers.Layer):
    """``length`` entries from ``start`` along ``axis`` (a slice; torch's ``x.narrow``); with ``groups``, those
    of each of that many equal groups of the axis, side by side (a gather)."""

    def __init__(self, axis: int, start: int, length: int, groups: int = 1, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.axis, self.start, self.length, self.groups = int(axis), int(start), int(length), int(groups)

    def call(self, x: Any) -> Any:
        if self.groups > 1:
            size = int(x.shape[self.axis]) // self.groups
            taken = [g * size + i for g in range(self.groups) for i in range(self.start, self.start + self.length)]
            return keras.ops.take(x, taken, axis=self.axis)
        index = [slice(None)] * len(x.shape)
        index[self.axis] = slice(self.start, self.start + self.length)
        return x[tuple(index)]

    def compute_output_shape(self, input_shape: Any) -> Any:
        shape = list(input_shape)
        shape[self.axis] = self.length * self.groups
        return tuple(shape)

    def get_config(self) -> dict[str, Any]:
        config = {**super().get_config(), "axis": self.axis, "start": self.start, "length": self.length}
        return {**config, "groups": self.groups} if self.groups != 1 else config


@keras.saving.register_keras_serializable(package="xconv")
class ChannelGather(keras.layers.Layer):
    """Output channel j is input channel ``order[j]`` (last axis): torch's ``ChannelShuffle(groups)`` as one
    gather (``groups`` is kept for reading the layer back; the order alone defines the function)."""

    def __init__(self, order: Any, groups: int | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.order = [int(i) for i in order]
        self.groups = None if groups is None else int(groups)

    def call(self, x: Any) -> Any:
        return tf.gather(x, self.order, axis=-1)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "order": self.order, "groups": self.groups}


BUILDERS: dict[type, Any] = {
    Rescaling: lambda info, x, dtype: ChannelRescaling(
        info.layer.scale,
        info.layer.offset,
        dtype=dtype,
        name=keras_name(info),
    )(x),
    Normalization: lambda info, x, dtype: ChannelNormalization(dtype=dtype, name=keras_name(info))(x),
    LayerScale: lambda info, x, dtype: ChannelScale(dtype=dtype, name=keras_name(info))(x),
    PositionEmbedding2d: lambda info, x, dtype: PositionEmbedding2dLayer(dtype=dtype, name=keras_name(info))(x),
    Narrow: lambda info, x, dtype: NarrowLayer(
        layout.keras_axis(narrow_axis(info), len(info.input_shape) + 1),
        info.layer.start,
        info.layer.length,
        info.layer.groups,
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


VARIABLES: dict[type, Any] = {
    Normalization: lambda layer, info: {"mean": layer.mean, "variance": layer.variance},
    LayerScale: lambda layer, info: {"layer_scale": layer.gamma},
    PositionEmbedding2d: lambda layer, info: {"embedding": layer.embedding},
}
LAYOUTS: dict[type, Any] = {
    Normalization: lambda info, name: "vector",
    LayerScale: lambda info, name: "same" if len(info.input_shape) == 2 else "scale",
    PositionEmbedding2d: lambda info, name: "map",
}


def _keras_layer_scale(layer: Any, where: str, current: tuple[int, ...]) -> Any:
    if len(current) not in (2, 3):
        raise UnsupportedLayerError(f"from_keras: {where}: a layer scale is supported on (H, W, C) maps and tokens")
    return LayerScale(current[-1] if len(current) == 2 else current[0]), {
        "layer_scale": np.asarray(layer.gamma.numpy())
    }


def _keras_channel_gather(layer: Any, where: str, current: tuple[int, ...]) -> Any:
    c = current[0]
    for groups in ([layer.groups] if layer.groups else []) + list(range(1, c + 1)):
        if c % groups == 0 and list(shuffle_order(c, groups)) == list(layer.order):
            return ChannelShuffle(groups), {}
    raise UnsupportedLayerError(f"from_keras: {where}: a channel gather that is not a channel shuffle")


def _keras_rescaling(layer: Any, where: str, current: tuple[int, ...]) -> Any:
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

    return Rescaling(constant(layer.scale), constant(layer.offset)), {}


def _keras_normalization(layer: Any, where: str, current: tuple[int, ...]) -> Any:
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


def _is_applications_layer_scale(layer: Any) -> bool:
    """Whether ``layer`` is exactly keras.applications' ConvNeXt LayerScale."""
    cls = type(layer)
    return cls.__name__ == "LayerScale" and cls.__module__ == "keras.src.applications.convnext"


#: Keras layer class (exactly) -> (layer, where, its input's logical shape) -> (spec layer, Keras arrays)
KERAS_IMPORTS: dict[type, Any] = {
    ChannelScale: _keras_layer_scale,
    NarrowLayer: lambda layer, where, current: (
        Narrow(layout.canonical_axis(layer.axis, len(current) + 1), layer.start, layer.length, groups=layer.groups),
        {},
    ),
    ChannelGather: _keras_channel_gather,
    PositionEmbedding2dLayer: lambda layer, where, current: (
        PositionEmbedding2d(*current),
        {"embedding": np.asarray(layer.embedding.numpy())},
    ),
    keras.layers.Rescaling: _keras_rescaling,
    ChannelRescaling: _keras_rescaling,
    ChannelNormalization: lambda layer, where, current: (
        Normalization(current[0]),
        {"mean": np.asarray(layer.mean.numpy()), "variance": np.asarray(layer.variance.numpy())},
    ),
    keras.layers.Normalization: _keras_normalization,
}
#: (predicate on a layer, its importer), for classes of other libraries matched by module and name
KERAS_MATCHERS: list[Any] = [(_is_applications_layer_scale, _keras_layer_scale)]
