"""xconv: one network spec, native PyTorch and Keras models that compute the same function.

Importing xconv imports no framework; torch / tensorflow are imported only when a backend is used.
"""

from ._api import build, get_weights, predict, set_weights, spec_of, summary, transfer_weights
from ._porting import from_keras, from_torch, port
from .checkpoint import load, load_model, save
from .errors import BackendUnavailable, PortError, SpecError, UnsupportedLayerError, WeightError, XconvError
from .layout import to_nchw, to_nhwc
from .shapes import LayerInfo, infer
from .spec import Conv2d, Flatten, Layer, Linear, ReLU, Sequential, from_dict

__version__ = "0.1.0"

__all__ = [
    "Sequential",
    "Layer",
    "Conv2d",
    "ReLU",
    "Flatten",
    "Linear",
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
    "__version__",
]
