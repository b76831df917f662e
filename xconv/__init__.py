"""xconv: one network spec, native PyTorch and Keras models that compute the same function.

Importing xconv imports no framework; torch / tensorflow are imported only when a backend is used.
"""

from ._api import build, get_weights, predict, set_weights, spec_of, summary, transfer_weights
from .errors import BackendUnavailable, SpecError, WeightError, XconvError
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
    "to_nhwc",
    "to_nchw",
    "XconvError",
    "SpecError",
    "WeightError",
    "BackendUnavailable",
    "__version__",
]
