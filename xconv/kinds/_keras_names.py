"""The Keras layer names of a spec's nodes (framework-free: the builders and the importer both use them)."""

from __future__ import annotations

from .._info import LayerInfo

_PREFIX = {
    "BatchNorm2d": "batchnorm",
    "BatchNorm1d": "batchnorm",
    "MaxPool2d": "maxpool",
    "AvgPool2d": "avgpool",
    "AdaptiveAvgPool2d": "adaptiveavgpool",
}


def keras_name(info: LayerInfo) -> str:
    """The Keras layer name of a node: its spec name; else, under a named container, its key (``stem.0``);
    else the kind and positional key (``conv2d_0``, ``batchnorm_1.0.1``, ``add_3``). Helper layers around it
    add a suffix (``_pad``, ``_crop``, ...). So importing the Keras model gives back the same weight keys."""
    if info.name is not None:
        return info.name
    if not info.key.split(".")[0].isdigit():  # under a named Sequential or combinator: the key says it all
        return info.key
    return default_keras_name(info.kind, info.key)


def default_keras_name(kind: str, key: str) -> str:
    """The Keras name of an unnamed node at a positional key: ``conv2d_0``, ``batchnorm_1.0.1``, ``add_3``."""
    return f"{_PREFIX.get(kind, kind.lower())}_{key}"
