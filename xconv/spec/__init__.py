"""Framework-neutral specs (pure Python)."""

from ._layers import (
    ELEMENTWISE, ELU, GELU, LAYER_TYPES, AdaptiveAvgPool2d, AvgPool2d, BatchNorm1d, BatchNorm2d, Conv2d, Dropout,
    Flatten, Identity, Layer, LeakyReLU, Linear, MaxPool2d, ReLU, Sigmoid, SiLU, Softmax, Tanh, ZeroPad2d,
    Hardsigmoid, Hardswish, Hardtanh, Normalization, Rescaling, StochasticDepth,
)
from ._channels import ChannelLinear, ChannelShuffle, LayerNorm, LayerScale, Narrow
from ._resampling import ConvTranspose2d, Upsample
from ._sequential import COMBINATORS, Add, Combinator, Concat, Item, Multiply, Sequential, from_dict

__all__ = [
    "Layer", "Conv2d", "ReLU", "Flatten", "Linear", "Sequential", "from_dict", "LAYER_TYPES",
    "MaxPool2d", "AvgPool2d", "AdaptiveAvgPool2d", "BatchNorm2d", "BatchNorm1d", "Dropout",
    "LeakyReLU", "Sigmoid", "Tanh", "GELU", "ELU", "SiLU", "Softmax", "Identity", "ZeroPad2d", "ELEMENTWISE",
    "Add", "Concat", "Multiply", "Combinator", "Item", "COMBINATORS",
    "Hardtanh", "Hardsigmoid", "Hardswish", "StochasticDepth", "Rescaling", "Normalization",
    "LayerNorm", "ChannelLinear", "LayerScale", "Narrow", "ChannelShuffle",
    "Upsample", "ConvTranspose2d",
]
