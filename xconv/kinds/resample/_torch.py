"""Resampling: Upsample: the torch parts (built modules, and the torch modules that import as these kinds)."""

from __future__ import annotations

from typing import Any

from ..._info import LayerInfo
from ...backends._torch_env import nn
from ...errors import SpecError, UnsupportedLayerError
from . import Upsample


def _upsample(info: LayerInfo, factory: dict[str, Any]) -> nn.Module:
    layer: Upsample = info.layer  # type: ignore[assignment]
    return nn.Upsample(
        size=layer.size, scale_factor=layer.scale_factor, mode=layer.mode, align_corners=layer.align_corners
    )


BUILDERS: dict[type, Any] = {
    Upsample: _upsample,
}


def _torch_upsample(m: nn.Upsample, name: str, where: str) -> Upsample:
    """The spec of an nn.Upsample: torch's own arguments, checked by the spec (a mode other than nearest,
    nearest-exact or bilinear, or recompute_scale_factor, is refused)."""
    if getattr(m, "recompute_scale_factor", None):
        raise UnsupportedLayerError(f"from_torch: {where}: recompute_scale_factor=True is not supported")
    try:
        return Upsample(m.size, m.scale_factor, m.mode, m.align_corners, name=name)
    except SpecError as e:
        raise UnsupportedLayerError(f"from_torch: {where}: {e}") from None


#: torch module class (exactly) -> (module, name, where) -> its spec layer
IMPORTS: dict[type, Any] = {
    nn.Upsample: _torch_upsample,
    nn.UpsamplingNearest2d: _torch_upsample,
    nn.UpsamplingBilinear2d: _torch_upsample,
}
