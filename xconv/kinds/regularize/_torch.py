"""Regularisers, the identity in inference: Dropout and StochasticDepth: the torch parts (built modules, and the torch modules that import as these kinds)."""

from __future__ import annotations

from typing import Any

from ...backends._torch_env import nn, torch
from ...errors import UnsupportedLayerError
from . import Dropout, StochasticDepth


class StochasticDepthModule(nn.Module):
    """torchvision's stochastic depth without torchvision: the identity in eval mode; in training each sample
    (``mode="row"``) or the whole batch is zeroed with probability ``p``, the rest scaled by 1 / (1 - p)."""

    def __init__(self, p: float, mode: str = "row") -> None:
        super().__init__()
        self.p, self.mode = float(p), mode

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        shape = [x.shape[0] if self.mode == "row" else 1] + [1] * (x.ndim - 1)
        keep = torch.empty(shape, dtype=x.dtype, device=x.device).bernoulli_(1.0 - self.p)
        return x * keep / (1.0 - self.p) if self.p < 1.0 else x * keep

    def extra_repr(self) -> str:
        return f"p={self.p}, mode={self.mode!r}"


BUILDERS: dict[type, Any] = {
    Dropout: lambda info, factory: nn.Dropout(info.layer.p),
    StochasticDepth: lambda info, factory: StochasticDepthModule(info.layer.p, info.layer.mode),
}


def is_torchvision_depth(m: nn.Module) -> bool:
    return type(m).__name__ == "StochasticDepth" and type(m).__module__ == "torchvision.ops.stochastic_depth"


def is_drop_path(m: nn.Module) -> bool:
    return type(m).__name__ == "DropPath" and type(m).__module__ == "timm.layers.drop"


def _drop_path(m: Any, name: str, where: str) -> StochasticDepth:
    """timm's DropPath: torchvision's row-mode stochastic depth when it rescales by keep."""
    if not m.scale_by_keep and m.drop_prob != 0.0:
        raise UnsupportedLayerError(
            f"from_torch: {where}: DropPath(scale_by_keep=False) does not rescale what it keeps; only "
            "scale_by_keep=True (stochastic depth) is supported"
        )
    return StochasticDepth(float(m.drop_prob), "row", name=name)


#: torch module class (exactly) -> (module, name, where) -> its spec layer
IMPORTS: dict[type, Any] = {
    nn.Dropout: lambda m, name, where: Dropout(m.p, name=name),
    StochasticDepthModule: lambda m, name, where: StochasticDepth(m.p, m.mode, name=name),
}
#: (predicate on a module, its importer), for classes of other libraries matched by module and name
MATCHERS: list[Any] = [
    (is_torchvision_depth, lambda m, name, where: StochasticDepth(m.p, m.mode, name=name)),
    (is_drop_path, _drop_path),
]
#: the layers that compute the identity outside training, imported by their class: an exported program of eval
#: mode records no operation for them
REGULARIZERS: dict[type, Any] = {nn.Dropout: True, StochasticDepthModule: True}
REGULARIZER_MATCHERS: list[Any] = [is_torchvision_depth, is_drop_path]
