"""Dense layers and flattening: Linear, ChannelLinear and Flatten: the Keras parts (built layers and their weight layouts, and the Keras layers that import as these
kinds)."""

from __future__ import annotations

from typing import Any

from ..._info import LayerInfo
from ...backends._tf_env import keras, tf
from .._keras_names import keras_name
from . import ChannelLinear, Flatten, Linear


def _linear(info: LayerInfo, x: Any, dtype: str, activation: str | None = None) -> Any:
    layer: Linear = info.layer  # type: ignore[assignment]
    return keras.layers.Dense(
        layer.out_features, use_bias=layer.bias, activation=activation, dtype=dtype, name=keras_name(info)
    )(x)


BUILDERS: dict[type, Any] = {
    Flatten: lambda info, x, dtype: keras.layers.Flatten(dtype=dtype, name=keras_name(info))(x),
    Linear: _linear,
    ChannelLinear: _linear,
}


LAYOUTS: dict[type, Any] = {
    Linear: lambda info, name: "linear" if name == "weight" else "same",
    ChannelLinear: lambda info, name: "linear" if name == "weight" else "same",
}


#: Keras layer class (exactly) -> (layer, where, its input's logical shape) -> (spec layer, Keras arrays); Dense
#: and the convs are read by the importer's graph passes (they fold what sits around them)
KERAS_IMPORTS: dict[type, Any] = {keras.layers.Flatten: lambda layer, where, current: (Flatten(), {})}


@keras.saving.register_keras_serializable(package="xconv")
class FeatureOrder(keras.layers.Layer):
    """Output feature j is input feature ``order[j]`` (last axis). Put at the end of a Keras model whose output
    features were flattened from a map, so that it returns them in C,H,W order, as the torch model does: the
    one permutation at run time that a flattened output costs."""

    def __init__(self, order: Any, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.order = [int(i) for i in order]

    def call(self, x: Any) -> Any:
        return tf.gather(x, self.order, axis=-1)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "order": self.order}
