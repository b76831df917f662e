"""Per-channel maps and rearrangements: Rescaling, Normalization, LayerScale, Narrow, ChannelShuffle and ZeroPad2d: the torch parts (built modules, and the torch modules that import as these kinds)."""

from __future__ import annotations

from typing import Any, cast

from ..._info import LayerInfo
from ...backends._torch_env import nn, torch
from ...errors import UnsupportedLayerError
from . import (
    ChannelShuffle,
    LayerScale,
    Narrow,
    Normalization,
    PositionEmbedding2d,
    Rescaling,
    ZeroPad2d,
    narrow_axis,
)


def _channels(value: Any, ndim: int) -> torch.Tensor:
    t = torch.as_tensor(value, dtype=torch.float64)
    return t.reshape((1, -1) + (1,) * (ndim - 2)) if t.ndim == 1 else t


class RescalingModule(nn.Module):
    """x * scale + offset with constant scale and offset (numbers or one per channel), Keras' ``Rescaling``.
    The constants belong to the spec, not the weights: plain attributes, made in the input's dtype."""

    def __init__(self, scale: Any, offset: Any, ndim: int) -> None:
        super().__init__()
        self.scale, self.offset, self.ndim = scale, offset, ndim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * _channels(self.scale, self.ndim).to(x.dtype) + _channels(self.offset, self.ndim).to(x.dtype)

    def extra_repr(self) -> str:
        return f"scale={self.scale}, offset={self.offset}"


class NormalizationModule(nn.Module):
    """(x - mean) / max(sqrt(variance), 1e-7) per channel, Keras' ``Normalization``; ``mean`` and ``variance``
    are saved buffers."""

    mean: torch.Tensor
    variance: torch.Tensor

    def __init__(self, num_features: int, ndim: int, device: Any = None, dtype: Any = None) -> None:
        super().__init__()
        self.ndim = ndim
        self.register_buffer("mean", torch.zeros(num_features, device=device, dtype=dtype))
        self.register_buffer("variance", torch.ones(num_features, device=device, dtype=dtype))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = (1, -1) + (1,) * (self.ndim - 2)
        std = torch.sqrt(self.variance).clamp_min(1e-7).reshape(shape)
        return (x - self.mean.reshape(shape)) / std


class LayerScaleModule(nn.Module):
    """x * layer_scale with a learned (C, 1, 1) parameter (torchvision's ``CNBlock.layer_scale``); used in
    chains. In a graph the parameter sits on the module at the layer's key and the product is in the forward."""

    def __init__(
        self, num_features: int, device: Any = None, dtype: Any = None, shape: tuple[int, ...] | None = None
    ) -> None:
        super().__init__()
        shape = (num_features, 1, 1) if shape is None else shape  # (E,) on tokens
        self.layer_scale = nn.Parameter(torch.full(shape, 1e-6, device=device, dtype=dtype))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer_scale * x


class PositionEmbedding2dModule(nn.Module):
    """``x + embedding``, a learned (1, C, H, W) tensor added to the map (timm's PiT ``pos_embed``)."""

    def __init__(self, channels: int, height: int, width: int, device: Any = None, dtype: Any = None) -> None:
        super().__init__()
        self.embedding = nn.Parameter(torch.zeros((1, channels, height, width), device=device, dtype=dtype))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.embedding


class NarrowModule(nn.Module):
    """``x.narrow(dim, start, length)``: a slice along one axis (``x.chunk``, ``torch.split``, ``x[:, a:b]``);
    with ``groups``, the slice of each of that many equal groups of the axis, side by side."""

    def __init__(self, dim: int, start: int, length: int, groups: int = 1) -> None:
        super().__init__()
        self.dim, self.start, self.length, self.groups = dim, start, length, groups

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.groups == 1:
            return x.narrow(self.dim, self.start, self.length)
        dim = self.dim % x.dim()
        shape = (*x.shape[:dim], self.groups, x.shape[dim] // self.groups, *x.shape[dim + 1 :])
        return x.reshape(shape).narrow(dim + 1, self.start, self.length).flatten(dim, dim + 1)

    def extra_repr(self) -> str:
        groups = f", groups={self.groups}" if self.groups != 1 else ""
        return f"dim={self.dim}, start={self.start}, length={self.length}{groups}"


def _rescaling(info: LayerInfo, factory: dict[str, Any]) -> nn.Module:
    layer = cast(Rescaling, info.layer)
    return RescalingModule(layer.scale, layer.offset, len(info.input_shape) + 1)


def _normalization(info: LayerInfo, factory: dict[str, Any]) -> nn.Module:
    return NormalizationModule(cast(Normalization, info.layer).num_features, len(info.input_shape) + 1, **factory)


BUILDERS: dict[type, Any] = {
    Rescaling: _rescaling,
    Normalization: _normalization,
    LayerScale: lambda info, factory: LayerScaleModule(
        info.layer.num_features, shape=info.params["layer_scale"], **factory
    ),
    PositionEmbedding2d: lambda info, factory: PositionEmbedding2dModule(*info.input_shape, **factory),
    Narrow: lambda info, factory: NarrowModule(
        narrow_axis(info), info.layer.start, info.layer.length, info.layer.groups
    ),
    ChannelShuffle: lambda info, factory: nn.ChannelShuffle(info.layer.groups),
    ZeroPad2d: lambda info, factory: nn.ZeroPad2d((*info.layer.padding[1], *info.layer.padding[0])),
}


def _torch_zero_pad(m: nn.ZeroPad2d, name: str, where: str) -> ZeroPad2d:
    pad = tuple(int(v) for v in m.padding)
    if min(pad) < 0:
        raise UnsupportedLayerError(f"from_torch: {where}: negative padding (cropping) is not supported")
    return ZeroPad2d(pad, name=name)


#: torch module class (exactly) -> (module, name, where) -> its spec layer
IMPORTS: dict[type, Any] = {
    RescalingModule: lambda m, name, where: Rescaling(m.scale, m.offset, name=name),
    NormalizationModule: lambda m, name, where: Normalization(int(m.mean.numel()), name=name),
    LayerScaleModule: lambda m, name, where: LayerScale(int(m.layer_scale.shape[0]), name=name),
    PositionEmbedding2dModule: lambda m, name, where: PositionEmbedding2d(*m.embedding.shape[1:], name=name),
    NarrowModule: lambda m, name, where: Narrow(m.dim, m.start, m.length, groups=m.groups, name=name),
    nn.ChannelShuffle: lambda m, name, where: ChannelShuffle(int(m.groups), name=name),
    nn.ZeroPad2d: _torch_zero_pad,
}
