"""Framework-neutral specs (pure Python)."""

from ._layers import LAYER_TYPES, Conv2d, Flatten, Layer, Linear, ReLU
from ._sequential import Sequential, from_dict

__all__ = ["Layer", "Conv2d", "ReLU", "Flatten", "Linear", "Sequential", "from_dict", "LAYER_TYPES"]
