"""Keras 3 backend on TensorFlow: native ``keras.layers``, NHWC, input ``(None, H, W, C)``.

This package and the kinds' ``_keras`` modules import tensorflow / keras (through ``xconv.backends._tf_env``). Layout differences are
absorbed by the weights (xconv.layout) at transfer time; the graph holds no Transpose or Permute.
Modules: ``builders`` (the functional model of a spec's graph; each kind's Keras layers and builder sit with the
kind, in ``xconv.kinds``), ``weights`` (canonical weights and zero-copy transfers), ``run`` (inference, tracing, training).
"""

from __future__ import annotations

import sys
from typing import Any

from ...kinds._keras_names import keras_name
from .._tf_env import keras, tf
from .builders import build, fused_relus
from .run import forward, forward_training, trace, train
from .weights import export_tensors, float_bytes, get_weights, import_tensors, set_weights

NAME = "tf"


def owns_model(obj: Any) -> bool:
    return isinstance(obj, keras.Model)


def owns_tensor(obj: Any) -> bool:
    return bool(tf.is_tensor(obj)) or isinstance(obj, tf.Variable)


def spec_of(model: Any) -> Any:
    """The spec ``model`` was built from; if the model was edited since (see :func:`structure`), the spec of
    the model as it is now, imported again and checked, or an XconvError (``xconv._api.current_spec``)."""
    from ..._api import current_spec

    return current_spec(sys.modules[__name__], model)


def seal(model: Any) -> None:
    """Record the structure of a freshly built model (``xconv.build`` calls it), so that ``spec_of`` sees edits."""
    model.xconv_structure = structure(model)


def structure(model: Any) -> tuple[tuple[str, str, Any], ...]:
    """What makes ``model`` the function it is, apart from its weights, as plain values that compare equal when
    nothing changed: per layer its name, class, public attributes (what ``get_config()`` is made of: ``strides``,
    ``padding``, ``activation``, ...; see ``xconv._api.plain_value``), dtype policy and weight names, and the
    wiring of the functional graph (which layer call reads which tensor). Training, freezing, ``compile`` and
    ``predict`` change none of it, except freezing a BatchNormalization (``trainable=False`` makes it normalise
    with its moving statistics in training too). About 4 ms for a ResNet-50-sized model (calling every layer's
    ``get_config()`` alone takes 16 ms)."""
    from ..._api import plain_value

    variable = keras.Variable  # listed with the layer's weights below
    rows: list[tuple[str, str, Any]] = []
    for layer in model.layers:
        attrs = [
            (k, plain_value(v))
            for k, v in vars(layer).items()
            if k[0] != "_" and k not in _NOT_ARCHITECTURE and not isinstance(v, variable)
        ]
        attrs.append(("dtype_policy", getattr(layer.dtype_policy, "name", None)))
        if isinstance(layer, keras.layers.BatchNormalization):  # frozen, it normalises in inference mode always
            attrs.append(("trainable", bool(layer.trainable)))
        attrs.sort()
        weights = [w.path for w in layer.weights]  # (a variable's shape cannot change)
        kind = type(layer)
        rows.append((layer.name, kind.__name__, (kind.__module__, kind.__qualname__, tuple(attrs), tuple(weights))))
    wiring = []
    for depth, nodes in sorted(getattr(model, "_nodes_by_depth", {}).items()):
        for node in nodes:
            operation = getattr(node, "operation", None)
            reads = [
                (getattr(kt._keras_history.operation, "name", None), *kt._keras_history[1:])
                for kt in getattr(getattr(node, "arguments", None), "keras_tensors", ())
            ]
            wiring.append((depth, getattr(operation, "name", None), tuple(reads)))
    rows.append(("", type(model).__name__, (model.name, tuple(wiring))))
    return tuple(rows)


#: public layer attributes that are state, not architecture
_NOT_ARCHITECTURE = frozenset({"built", "trainable"})


def dtype_of(model: Any) -> str:
    """The model's float dtype: its input's, or its output's where the input is token ids."""
    dtype = str(model.inputs[0].dtype)
    return str(model.outputs[0].dtype) if dtype.startswith(("int", "uint")) else dtype


def permute(x: Any, perm: tuple[int, ...]) -> Any:
    return tf.transpose(x, perm)


def import_model(model: Any, length: int | None = None, output: str | list[str] | None = None) -> Any:
    from ...importers.keras_graph import import_model as run

    return run(model, length, output)


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
    "forward_training",
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
    "seal",
    "set_weights",
    "spec_of",
    "structure",
    "tf",
    "trace",
    "train",
]
