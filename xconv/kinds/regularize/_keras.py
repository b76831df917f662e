"""Regularisers, the identity in inference: Dropout and StochasticDepth: the Keras parts (built layers and their weight layouts, and the Keras layers that import as these
kinds)."""

from __future__ import annotations

from typing import Any

from ...backends._tf_env import keras
from ...errors import UnsupportedLayerError
from .._keras_names import keras_name
from . import Dropout, StochasticDepth

BUILDERS: dict[type, Any] = {
    Dropout: lambda info, x, dtype: keras.layers.Dropout(info.layer.p, dtype=dtype, name=keras_name(info))(x),
    StochasticDepth: lambda info, x, dtype: keras.layers.Dropout(
        info.layer.p,
        noise_shape=(None if info.layer.mode == "row" else 1,) + (1,) * len(info.input_shape),
        dtype=dtype,
        name=keras_name(info),
    )(x),
}


def _keras_dropout(layer: Any, where: str, current: tuple[int, ...]) -> Any:
    if layer.noise_shape is None:
        return Dropout(float(layer.rate)), {}
    shape = tuple(layer.noise_shape)
    if len(shape) == len(current) + 1 and all(d == 1 for d in shape[1:]) and shape[0] in (None, 1):
        # whole samples dropped (Keras applications' stochastic depth), or the whole batch
        return StochasticDepth(float(layer.rate), "row" if shape[0] is None else "batch"), {}
    raise UnsupportedLayerError(
        f"from_keras: {where}: Dropout with noise_shape={shape} is not supported (only whole samples: (None, 1, 1, 1))"
    )


def _is_applications_stochastic_depth(layer: Any) -> bool:
    """Whether ``layer`` is exactly keras.applications' ConvNeXt StochasticDepth."""
    cls = type(layer)
    return cls.__name__ == "StochasticDepth" and cls.__module__ == "keras.src.applications.convnext"


#: Keras layer class (exactly) -> (layer, where, its input's logical shape) -> (spec layer, Keras arrays)
KERAS_IMPORTS: dict[type, Any] = {keras.layers.Dropout: _keras_dropout}
#: (predicate on a layer, its importer), for classes of other libraries matched by module and name: a
#: per-sample keep mask scaled by 1 / keep
KERAS_MATCHERS: list[Any] = [
    (
        _is_applications_stochastic_depth,
        lambda layer, where, current: (StochasticDepth(float(layer.drop_path_rate), "row"), {}),
    )
]
