"""Pooling: MaxPool2d, AvgPool2d and AdaptiveAvgPool2d: the torch parts (built modules, and the torch modules that import as these kinds)."""

from __future__ import annotations

from typing import Any, cast

from ..._info import LayerInfo
from ...backends._torch_env import nn
from ...errors import UnsupportedLayerError
from . import AdaptiveAvgPool2d, AvgPool2d, MaxPool2d


def _maxpool(info: LayerInfo, factory: dict[str, Any]) -> nn.Module:
    layer: MaxPool2d = info.layer  # type: ignore[assignment]
    return nn.MaxPool2d(layer.kernel_size, layer.stride, layer.padding, layer.dilation, ceil_mode=layer.ceil_mode)


def _avgpool(info: LayerInfo, factory: dict[str, Any]) -> nn.Module:
    layer: AvgPool2d = info.layer  # type: ignore[assignment]
    return nn.AvgPool2d(
        layer.kernel_size,
        layer.stride,
        layer.padding,
        ceil_mode=layer.ceil_mode,
        count_include_pad=layer.count_include_pad,
    )


BUILDERS: dict[type, Any] = {
    MaxPool2d: _maxpool,
    AvgPool2d: _avgpool,
    AdaptiveAvgPool2d: lambda info, factory: nn.AdaptiveAvgPool2d(info.layer.output_size),
}


def _max_pool(m: nn.MaxPool2d, name: str, where: str) -> MaxPool2d:
    if m.return_indices:
        raise UnsupportedLayerError(f"from_torch: {where}: return_indices=True is not supported")
    return MaxPool2d(m.kernel_size, m.stride, m.padding, m.dilation, m.ceil_mode, name=name)


def _avg_pool(m: nn.AvgPool2d, name: str, where: str) -> AvgPool2d:
    if m.divisor_override is not None:
        raise UnsupportedLayerError(f"from_torch: {where}: divisor_override is not supported")
    return AvgPool2d(m.kernel_size, m.stride, m.padding, m.ceil_mode, m.count_include_pad, name=name)


def _adaptive_pool(m: nn.AdaptiveAvgPool2d, name: str, where: str) -> AdaptiveAvgPool2d:
    size = m.output_size
    if size is None or (isinstance(size, (tuple, list)) and None in size):
        raise UnsupportedLayerError(f"from_torch: {where}: output_size with None is not supported; give both sizes")
    return AdaptiveAvgPool2d(cast("int | tuple[int, int]", size), name=name)  # no None left


#: torch module class (exactly) -> (module, name, where) -> its spec layer
IMPORTS: dict[type, Any] = {nn.MaxPool2d: _max_pool, nn.AvgPool2d: _avg_pool, nn.AdaptiveAvgPool2d: _adaptive_pool}
