"""xconv: one network spec, native PyTorch and Keras models that compute the same function.

Importing xconv imports no framework; torch / tensorflow are imported only when a backend is used.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ._api import build, get_weights, predict, set_weights, spec_of, summary, transfer_weights
from ._port import from_keras, from_torch, port
from .checkpoint import load, load_model, save
from .errors import BackendUnavailable, PortError, SpecError, UnsupportedLayerError, WeightError, XconvError
from .layout import to_nchw, to_nhwc
from .shapes import LayerInfo, infer
from .spec import (
    ELU,
    GELU,
    AdaptiveAvgPool2d,
    Add,
    AvgPool2d,
    BatchNorm1d,
    BatchNorm2d,
    ChannelLinear,
    ChannelShuffle,
    ClassToken,
    Concat,
    Conv2d,
    ConvTranspose2d,
    DotProductAttention,
    Dropout,
    Embedding,
    Flatten,
    GlobalResponseNorm,
    GroupNorm,
    Hardsigmoid,
    Hardswish,
    Hardtanh,
    Identity,
    Layer,
    LayerNorm,
    LayerScale,
    LeakyReLU,
    Linear,
    MaxPool2d,
    Multiply,
    Narrow,
    Normalization,
    PaddedPositions,
    PatchMerging,
    PositionEmbedding,
    PositionEmbedding2d,
    PReLU,
    ReLU,
    Rescaling,
    SelectToken,
    SelfAttention,
    Sequential,
    Sigmoid,
    SiLU,
    Softmax,
    Square,
    StarReLU,
    StochasticDepth,
    Subtract,
    Tanh,
    TokenMean,
    TokenTypeEmbedding,
    ToMap,
    ToTokens,
    Upsample,
    Use,
    WindowAttention,
    ZeroPad2d,
    from_dict,
)

__version__ = "0.2.0"


def register_keras_layers() -> None:
    """Register xconv's own Keras layers (``GatherPad2D``, ``Subsample2D``) so that ``keras.models.load_model``
    reads ``.keras`` files that use them. Imports TensorFlow; done automatically by ``import xconv`` when keras
    is already imported, and by any ``xc.build(..., "tf")``.

    >>> import xconv as xc
    >>> xc.register_keras_layers()  # then keras.models.load_model reads .keras files that use xconv's layers
    """
    from .backends import get_backend

    get_backend("tf")


def _register_quietly() -> bool:
    try:
        register_keras_layers()
        return True
    except Exception:  # noqa: BLE001 - keras on another backend, TF missing, or a framework still half-imported
        return False


class _AfterKerasImport:
    """A meta-path finder that registers xconv's Keras layers right after ``keras`` (or ``tensorflow``, which
    imports keras while it is itself half-imported) finishes importing. So ``import xconv`` imports no
    framework, and ``keras.models.load_model`` still knows xconv's layers whatever the import order."""

    _names = ("keras", "tensorflow")

    def find_spec(
        self, name: str, path: Sequence[str] | None = None, target: ModuleType | None = None
    ) -> ModuleSpec | None:
        import importlib.machinery

        if name not in self._names:
            return None
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec
        original = spec.loader.exec_module

        def exec_module(module: ModuleType) -> None:
            original(module)
            if _register_quietly():
                _remove_keras_hook()

        spec.loader.exec_module = exec_module  # type: ignore[method-assign]
        return spec


def _remove_keras_hook() -> None:
    import sys

    sys.meta_path[:] = [f for f in sys.meta_path if not isinstance(f, _AfterKerasImport)]


def _install_keras_hook() -> None:
    import sys

    if "keras" in sys.modules and "tensorflow" in sys.modules:
        _register_quietly()
    elif not any(isinstance(f, _AfterKerasImport) for f in sys.meta_path):
        sys.meta_path.insert(0, _AfterKerasImport())


_install_keras_hook()


if TYPE_CHECKING:
    from collections.abc import Sequence
    from importlib.machinery import ModuleSpec
    from types import ModuleType

__all__ = [
    "ELU",
    "GELU",
    "AdaptiveAvgPool2d",
    "Add",
    "AvgPool2d",
    "BackendUnavailable",
    "BatchNorm1d",
    "BatchNorm2d",
    "ChannelLinear",
    "ChannelShuffle",
    "ClassToken",
    "Concat",
    "Conv2d",
    "ConvTranspose2d",
    "DotProductAttention",
    "Dropout",
    "Embedding",
    "Flatten",
    "GlobalResponseNorm",
    "GroupNorm",
    "Hardsigmoid",
    "Hardswish",
    "Hardtanh",
    "Identity",
    "Layer",
    "LayerInfo",
    "LayerNorm",
    "LayerScale",
    "LeakyReLU",
    "Linear",
    "MaxPool2d",
    "Multiply",
    "Narrow",
    "Normalization",
    "PReLU",
    "PaddedPositions",
    "PatchMerging",
    "PortError",
    "PositionEmbedding",
    "PositionEmbedding2d",
    "ReLU",
    "Rescaling",
    "SelectToken",
    "SelfAttention",
    "Sequential",
    "SiLU",
    "Sigmoid",
    "Softmax",
    "SpecError",
    "Square",
    "StarReLU",
    "StochasticDepth",
    "Subtract",
    "Tanh",
    "ToMap",
    "ToTokens",
    "TokenMean",
    "TokenTypeEmbedding",
    "UnsupportedLayerError",
    "Upsample",
    "Use",
    "WeightError",
    "WindowAttention",
    "XconvError",
    "ZeroPad2d",
    "__version__",
    "build",
    "from_dict",
    "from_keras",
    "from_torch",
    "get_weights",
    "infer",
    "load",
    "load_model",
    "port",
    "predict",
    "register_keras_layers",
    "save",
    "set_weights",
    "spec_of",
    "summary",
    "to_nchw",
    "to_nhwc",
    "transfer_weights",
]
