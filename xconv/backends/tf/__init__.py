"""Keras 3 backend on TensorFlow: native ``keras.layers``, NHWC, input ``(None, H, W, C)``.

This package is the only code that imports tensorflow / keras (through ``_env``). Layout differences are
absorbed by the weights (xconv.layout) at transfer time; the graph holds no Transpose or Permute.
Modules: ``layers`` (xconv's own Keras layers), ``builders`` (one builder per layer kind, the functional model),
``weights`` (canonical weights and zero-copy transfers), ``run`` (inference, tracing, training).
"""

from __future__ import annotations

from typing import Any

from ._env import keras, tf
from .builders import build, fused_relus, keras_name
from .layers import (
    AdaptiveAvgPool2D,
    ChannelNormalization,
    ChannelRescaling,
    GatherPad2D,
    GroupedConv2D,
    Subsample2D,
    TorchActivation,
    TorchAvgPool2D,
    TorchBatchNorm,
    TorchConvTranspose2D,
    TorchMaxPool2D,
    TorchUpsample2D,
)
from .run import forward, trace, train
from .weights import export_tensors, float_bytes, get_weights, import_tensors, set_weights

NAME = "tf"


def owns_model(obj: Any) -> bool:
    return isinstance(obj, keras.Model)


def owns_tensor(obj: Any) -> bool:
    return bool(tf.is_tensor(obj)) or isinstance(obj, tf.Variable)


def spec_of(model: Any) -> Any:
    from ...spec import Sequential

    spec = getattr(model, "xconv_spec", None)
    return spec if isinstance(spec, Sequential) else None


def dtype_of(model: Any) -> str:
    return str(model.inputs[0].dtype)


def permute(x: Any, perm: tuple[int, ...]) -> Any:
    return tf.transpose(x, perm)


def import_model(model: Any) -> Any:
    from ...porting.keras_graph import import_model as run

    return run(model)


def read_keras_file(path: str) -> Any:
    """Load a ``.keras`` file (xconv's own layers are registered by importing this package)."""
    return keras.models.load_model(path)


__all__ = [
    "NAME",
    "AdaptiveAvgPool2D",
    "ChannelNormalization",
    "ChannelRescaling",
    "GatherPad2D",
    "GroupedConv2D",
    "Subsample2D",
    "TorchActivation",
    "TorchAvgPool2D",
    "TorchBatchNorm",
    "TorchConvTranspose2D",
    "TorchMaxPool2D",
    "TorchUpsample2D",
    "build",
    "dtype_of",
    "export_tensors",
    "float_bytes",
    "forward",
    "fused_relus",
    "get_weights",
    "import_model",
    "import_tensors",
    "keras",
    "keras_name",
    "owns_model",
    "owns_tensor",
    "permute",
    "read_keras_file",
    "set_weights",
    "spec_of",
    "tf",
    "trace",
    "train",
]
