"""xconv: one network spec, native PyTorch and Keras models that compute the same function.

Importing xconv imports no framework; torch / tensorflow are imported only when a backend is used.
"""

from ._api import build, get_weights, predict, set_weights, spec_of, summary, transfer_weights
from ._porting import from_keras, from_torch, port
from .checkpoint import load, load_model, save
from .errors import BackendUnavailable, PortError, SpecError, UnsupportedLayerError, WeightError, XconvError
from .layout import to_nchw, to_nhwc
from .shapes import LayerInfo, infer
from .spec import (
    ELU, GELU, Add, AdaptiveAvgPool2d, AvgPool2d, BatchNorm1d, BatchNorm2d, Concat, Conv2d, Dropout, Flatten, Identity,
    Layer, LeakyReLU, Linear, MaxPool2d, Multiply, ReLU, Sequential, Sigmoid, SiLU, Softmax, Tanh, ZeroPad2d,
    from_dict, Hardsigmoid, Hardswish, Hardtanh, Normalization, Rescaling, StochasticDepth,
    ChannelLinear, ChannelShuffle, LayerNorm, LayerScale, Narrow,
    Upsample, ConvTranspose2d,
)

__version__ = "0.1.0"


def register_keras_layers() -> None:
    """Register xconv's own Keras layers (``GatherPad2D``, ``Subsample2D``) so that ``keras.models.load_model``
    reads ``.keras`` files that use them. Imports TensorFlow; done automatically by ``import xconv`` when keras
    is already imported, and by any ``xc.build(..., "tf")``."""
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

    def find_spec(self, name: str, path: object = None, target: object = None) -> object:
        import importlib.machinery

        if name not in self._names:
            return None
        spec = importlib.machinery.PathFinder.find_spec(name, path)  # type: ignore[arg-type]
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec
        original = spec.loader.exec_module

        def exec_module(module: object) -> None:
            original(module)  # type: ignore[arg-type]
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

__all__ = [
    "Sequential",
    "Layer",
    "Conv2d",
    "ReLU",
    "Flatten",
    "Linear",
    "MaxPool2d",
    "AvgPool2d",
    "AdaptiveAvgPool2d",
    "BatchNorm2d",
    "BatchNorm1d",
    "Dropout",
    "LeakyReLU",
    "Sigmoid",
    "Tanh",
    "GELU",
    "ELU",
    "SiLU",
    "Softmax",
    "Identity",
    "ZeroPad2d",
    "Hardtanh",
    "Hardsigmoid",
    "Hardswish",
    "StochasticDepth",
    "Rescaling",
    "Normalization",
    "LayerNorm",
    "ChannelLinear",
    "LayerScale",
    "Narrow",
    "ChannelShuffle",
    "Upsample",
    "ConvTranspose2d",
    "Add",
    "Concat",
    "Multiply",
    "from_dict",
    "build",
    "summary",
    "infer",
    "LayerInfo",
    "get_weights",
    "set_weights",
    "transfer_weights",
    "spec_of",
    "predict",
    "from_torch",
    "from_keras",
    "port",
    "save",
    "load",
    "load_model",
    "to_nhwc",
    "to_nchw",
    "XconvError",
    "SpecError",
    "WeightError",
    "UnsupportedLayerError",
    "PortError",
    "BackendUnavailable",
    "register_keras_layers",
    "__version__",
]
