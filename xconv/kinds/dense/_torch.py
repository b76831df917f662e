"""Dense layers and flattening: Linear, ChannelLinear and Flatten: the torch parts (built modules, and the torch modules that import as these kinds)."""

from __future__ import annotations

from typing import Any, cast

from ..._info import LayerInfo
from ...backends._torch_env import F, nn, torch
from ...errors import UnsupportedLayerError
from . import ChannelLinear, Flatten, Linear


class ChannelLinearModule(nn.Linear):
    """``nn.Linear`` over the channels at every pixel of an NCHW map (weight (out, in), as nn.Linear's), run as
    the 1x1 convolution it is."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.weight[:, :, None, None], self.bias)


class ChannelsLastFlatten(nn.Module):
    """Flattens an (N, C, H, W) map in H,W,C order (Keras' Flatten): ``x.permute(0, 2, 3, 1).flatten(1)``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.permute(0, 2, 3, 1).flatten(1) if x.dim() == 4 else x.flatten(1)


def _flatten(info: LayerInfo, factory: dict[str, Any]) -> nn.Module:
    return ChannelsLastFlatten() if cast(Flatten, info.layer).channels_last else nn.Flatten()


def _channel_linear(info: LayerInfo, factory: dict[str, Any]) -> nn.Module:
    layer = cast(ChannelLinear, info.layer)
    return ChannelLinearModule(layer.in_features, layer.out_features, bias=layer.bias, **factory)


def _linear(info: LayerInfo, factory: dict[str, Any]) -> nn.Module:
    layer: Linear = info.layer  # type: ignore[assignment]
    return nn.Linear(layer.in_features, layer.out_features, bias=layer.bias, **factory)  # type: ignore[arg-type]


BUILDERS: dict[type, Any] = {
    Flatten: _flatten,
    Linear: _linear,
    ChannelLinear: _channel_linear,
}


def _torch_flatten(m: nn.Flatten, name: str, where: str) -> Flatten:
    if m.start_dim != 1 or m.end_dim != -1:
        raise UnsupportedLayerError(f"from_torch: {where}: only Flatten(start_dim=1, end_dim=-1) is supported")
    return Flatten(name=name)


#: torch module class (exactly) -> (module, name, where) -> its spec layer
IMPORTS: dict[type, Any] = {
    nn.Linear: lambda m, name, where: Linear(m.in_features, m.out_features, bias=m.bias is not None, name=name),
    nn.Flatten: _torch_flatten,
    ChannelsLastFlatten: lambda m, name, where: Flatten(channels_last=True, name=name),
    ChannelLinearModule: lambda m, name, where: ChannelLinear(
        m.in_features, m.out_features, bias=m.bias is not None, name=name
    ),
}
