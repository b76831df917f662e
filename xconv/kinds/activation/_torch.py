"""Activations: ReLU, LeakyReLU, Sigmoid, Tanh, GELU, ELU, SiLU, Softmax, Identity, Hardtanh, Hardsigmoid, Hardswish, PReLU: the torch parts (built modules, and the torch modules that import as these kinds)."""

from __future__ import annotations

from typing import Any, cast

from ..._info import LayerInfo
from ...backends._torch_env import F, nn, torch
from ...errors import UnsupportedLayerError
from . import (
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


class ExactHardsigmoid(nn.Module):
    """``nn.Hardsigmoid`` as relu6(x + 3) / 6: the same forward, and a float64 backward without the float32
    constant 1/6 that torch's own kernel multiplies by (measured 5e-9 absolute, 3e-8 relative, in float64).
    Built for float64 models; float32 models get ``nn.Hardsigmoid``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu6(x + 3.0) / 6.0


class SquareModule(nn.Module):
    """``torch.square(x)`` as a module (see :class:`xconv.Square`)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.square(x)


class StarReLUModule(nn.Module):
    """``scale * relu(x) ** 2 + bias`` (see :class:`xconv.StarReLU`), with timm's parameter names."""

    def __init__(self, device: Any = None, dtype: Any = None) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones(1, device=device, dtype=dtype))
        self.bias = nn.Parameter(torch.zeros(1, device=device, dtype=dtype))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.scale * F.relu(x) ** 2 + self.bias


def _is_timm_star_relu(m: nn.Module) -> bool:
    return type(m).__name__ == "StarReLU" and type(m).__module__ == "timm.models.metaformer"


def _timm_star_relu(m: Any, name: str, where: str) -> tuple[StarReLU, dict[str, Any]]:
    """timm's ``StarReLU`` (MetaFormer): ``scale * relu(x) ** 2 + bias``, both learned (a fixed one would be
    trained by the ported model: refused)."""
    fixed = [k for k in ("scale", "bias") if not getattr(m, k).requires_grad]
    shapes = {tuple(getattr(m, k).shape) for k in ("scale", "bias")}
    if fixed or shapes != {(1,)} or getattr(m, "inplace", False) not in (False, True):
        what = f"a fixed {fixed[0]} (requires_grad=False)" if fixed else f"parameters of shapes {sorted(shapes)}"
        raise UnsupportedLayerError(f"from_torch: {where}: StarReLU with {what} is not supported")
    return StarReLU(name=name), {"scale": m.scale, "bias": m.bias}


def _is_timm_gelu(m: nn.Module) -> bool:
    """timm's own ``GELU`` and ``GELUTanh`` modules (``F.gelu``, exact or tanh), with no parameters."""
    return type(m).__name__ in ("GELU", "GELUTanh") and type(m).__module__ == "timm.layers.activations"


def _timm_gelu(m: Any, name: str, where: str) -> GELU:
    if any(True for _ in m.parameters()) or any(True for _ in m.buffers()):
        raise UnsupportedLayerError(f"from_torch: {where}: timm {type(m).__name__} with tensors is not supported")
    return GELU("tanh" if type(m).__name__ == "GELUTanh" else "none", name=name)


#: (predicate on a module, its importer), for classes of other libraries matched by module and name
MATCHERS: list[Any] = [(_is_timm_star_relu, _timm_star_relu), (_is_timm_gelu, _timm_gelu)]


def _prelu(info: LayerInfo, factory: dict[str, Any]) -> nn.Module:
    return nn.PReLU(cast(PReLU, info.layer).num_parameters, **factory)


def _hardtanh(info: LayerInfo, factory: dict[str, Any]) -> nn.Module:
    layer: Hardtanh = info.layer  # type: ignore[assignment]
    if (layer.min_val, layer.max_val) == (0.0, 6.0):
        return nn.ReLU6()
    return nn.Hardtanh(layer.min_val, layer.max_val)


BUILDERS: dict[type, Any] = {
    ReLU: lambda info, factory: nn.ReLU(),
    LeakyReLU: lambda info, factory: nn.LeakyReLU(info.layer.negative_slope),
    Sigmoid: lambda info, factory: nn.Sigmoid(),
    Tanh: lambda info, factory: nn.Tanh(),
    GELU: lambda info, factory: nn.GELU(approximate=info.layer.approximate),
    ELU: lambda info, factory: nn.ELU(info.layer.alpha),
    SiLU: lambda info, factory: nn.SiLU(),
    Softmax: lambda info, factory: nn.Softmax(dim=info.layer.dim),
    Identity: lambda info, factory: nn.Identity(),
    Hardtanh: _hardtanh,
    Hardsigmoid: lambda info, factory: ExactHardsigmoid() if factory["dtype"] == torch.float64 else nn.Hardsigmoid(),
    Hardswish: lambda info, factory: nn.Hardswish(),
    PReLU: _prelu,
    StarReLU: lambda info, factory: StarReLUModule(**factory),
    Square: lambda info, factory: SquareModule(),
}


def _torch_softmax(m: nn.Softmax, name: str, where: str) -> Softmax:
    if m.dim is None:
        raise UnsupportedLayerError(
            f"from_torch: {where}: Softmax needs an explicit dim (torch's implicit choice is deprecated)"
        )
    return Softmax(m.dim, name=name)


#: torch module class (exactly) -> (module, name, where) -> its spec layer
IMPORTS: dict[type, Any] = {
    nn.ReLU: lambda m, name, where: ReLU(name=name),
    nn.Identity: lambda m, name, where: Identity(name=name),
    nn.Hardtanh: lambda m, name, where: Hardtanh(float(m.min_val), float(m.max_val), name=name),
    nn.ReLU6: lambda m, name, where: Hardtanh(float(m.min_val), float(m.max_val), name=name),
    nn.Hardsigmoid: lambda m, name, where: Hardsigmoid(name=name),
    ExactHardsigmoid: lambda m, name, where: Hardsigmoid(name=name),
    nn.Hardswish: lambda m, name, where: Hardswish(name=name),
    nn.LeakyReLU: lambda m, name, where: LeakyReLU(m.negative_slope, name=name),
    nn.GELU: lambda m, name, where: GELU(m.approximate, name=name),
    nn.ELU: lambda m, name, where: ELU(m.alpha, name=name),
    nn.Softmax: _torch_softmax,
    nn.Sigmoid: lambda m, name, where: Sigmoid(name=name),
    nn.Tanh: lambda m, name, where: Tanh(name=name),
    nn.SiLU: lambda m, name, where: SiLU(name=name),
    nn.PReLU: lambda m, name, where: PReLU(m.num_parameters, name=name),
    StarReLUModule: lambda m, name, where: StarReLU(name=name),
    SquareModule: lambda m, name, where: Square(name=name),
}
