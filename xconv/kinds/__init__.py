"""Every layer kind in one place. A family's package (``conv``, ``pool``, ``norm``, ...) holds, per kind, the
spec class, its shape rule and its numpy reference (forward and backward), and registers them; beside it,
``_torch`` holds the torch modules it builds and the torch modules it imports from, and ``_keras`` the Keras
layers it builds, their weight layouts and the Keras layers it imports from. Backends and importers read the
registry (:data:`KINDS`, :func:`framework_table`); ``import xconv`` loads no framework.
"""

from __future__ import annotations

from .._info import elementwise
from .._layer import Layer
from ._registry import FAMILIES, KINDS, Kind, fixed_values, framework_list, framework_table, register
from .activation import (
    ELU,
    GELU,
    Hardsigmoid,
    Hardswish,
    Hardtanh,
    Identity,
    LeakyReLU,
    PReLU,
    ReLU,
    Sigmoid,
    SiLU,
    Softmax,
    Square,
    StarReLU,
    Tanh,
)
from .channel import ChannelShuffle, LayerScale, Narrow, Normalization, PositionEmbedding2d, Rescaling, ZeroPad2d
from .conv import Conv2d, ConvTranspose2d
from .dense import ChannelLinear, Flatten, Linear
from .norm import BatchNorm1d, BatchNorm2d, GlobalResponseNorm, GroupNorm, LayerNorm
from .pool import AdaptiveAvgPool2d, AvgPool2d, MaxPool2d
from .regularize import Dropout, StochasticDepth
from .resample import Upsample
from .token import (
    ClassToken,
    Embedding,
    PaddedPositions,
    PositionEmbedding,
    SelectToken,
    SelfAttention,
    TokenMean,
    TokenTypeEmbedding,
    ToMap,
    ToTokens,
)
from .window import PatchMerging, WindowAttention

#: layers that keep their input's shape and act per element (or per feature vector, Softmax over dim 1)
ELEMENTWISE: tuple[type[Layer], ...] = tuple(cls for cls, kind in KINDS.items() if kind.shape is elementwise)

__all__ = [
    "ELEMENTWISE",
    "ELU",
    "FAMILIES",
    "GELU",
    "KINDS",
    "AdaptiveAvgPool2d",
    "AvgPool2d",
    "BatchNorm1d",
    "BatchNorm2d",
    "ChannelLinear",
    "ChannelShuffle",
    "ClassToken",
    "Conv2d",
    "ConvTranspose2d",
    "Dropout",
    "Embedding",
    "Flatten",
    "GlobalResponseNorm",
    "GroupNorm",
    "Hardsigmoid",
    "Hardswish",
    "Hardtanh",
    "Identity",
    "Kind",
    "LayerNorm",
    "LayerScale",
    "LeakyReLU",
    "Linear",
    "MaxPool2d",
    "Narrow",
    "Normalization",
    "PReLU",
    "PaddedPositions",
    "PatchMerging",
    "PositionEmbedding",
    "PositionEmbedding2d",
    "ReLU",
    "Rescaling",
    "SelectToken",
    "SelfAttention",
    "SiLU",
    "Sigmoid",
    "Softmax",
    "Square",
    "StarReLU",
    "StochasticDepth",
    "Tanh",
    "ToMap",
    "ToTokens",
    "TokenMean",
    "TokenTypeEmbedding",
    "Upsample",
    "WindowAttention",
    "ZeroPad2d",
    "fixed_values",
    "framework_list",
    "framework_table",
    "register",
]
