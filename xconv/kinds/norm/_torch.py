"""Normalisations: the torch parts (built modules, and the torch modules that import as these kinds)."""

from __future__ import annotations

from typing import Any, cast

from ..._info import LayerInfo
from ...backends._torch_env import F, nn, torch
from ...errors import UnsupportedLayerError
from . import BatchNorm1d, BatchNorm2d, GlobalResponseNorm, GroupNorm, LayerNorm


class GlobalResponseNormModule(nn.Module):
    """Global response normalisation of an NCHW map (see :class:`xconv.GlobalResponseNorm`), ``weight`` and
    ``bias`` of shape (C,)."""

    def __init__(self, num_features: int, eps: float = 1e-6, device: Any = None, dtype: Any = None) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.zeros(num_features, device=device, dtype=dtype))
        self.bias = nn.Parameter(torch.zeros(num_features, device=device, dtype=dtype))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        norms = torch.linalg.vector_norm(x, 2, dim=(2, 3), keepdim=True)
        scale = norms / (norms.mean(dim=1, keepdim=True) + self.eps)
        out: torch.Tensor = x + self.weight.view(1, -1, 1, 1) * (x * scale) + self.bias.view(1, -1, 1, 1)
        return out


class ChannelLayerNorm(nn.LayerNorm):
    """``nn.LayerNorm`` over the channels at every pixel of an NCHW map (torchvision's ``LayerNorm2d``): the same
    parameters and keys, applied to the channels-last view."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.layer_norm(x.permute(0, 2, 3, 1), self.normalized_shape, self.weight, self.bias, self.eps)
        return y.permute(0, 3, 1, 2)


def _layernorm(info: LayerInfo, factory: dict[str, Any]) -> nn.Module:
    layer = cast(LayerNorm, info.layer)
    cls = ChannelLayerNorm if len(info.input_shape) == 3 else nn.LayerNorm
    return cls(
        layer.num_features,
        eps=layer.eps,
        elementwise_affine=layer.elementwise_affine,
        bias=layer.bias,
        **factory,
    )


def _groupnorm(info: LayerInfo, factory: dict[str, Any]) -> nn.Module:
    layer = cast(GroupNorm, info.layer)
    norm = nn.GroupNorm(layer.num_groups, layer.num_channels, eps=layer.eps, affine=layer.affine, **factory)
    if layer.affine and not layer.bias:
        norm.register_parameter("bias", None)  # (F.group_norm without a bias: timm's GroupNorm1NoBias)
    return norm


class _FrozenBatchNorm:
    """Normalises with the running statistics in training too, and learns nothing: its weight and bias do not
    require gradients (Keras' ``BatchNormalization(trainable=False)``). The keys are BatchNorm's."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bn = cast(nn.BatchNorm2d, self)
        bn._check_input_dim(x)
        return F.batch_norm(x, bn.running_mean, bn.running_var, bn.weight, bn.bias, False, 0.0, bn.eps)


class FrozenBatchNorm2d(_FrozenBatchNorm, nn.BatchNorm2d):
    """BatchNorm2d that stays in inference mode and learns nothing (see ``BatchNorm2d(frozen=True)``)."""


class FrozenBatchNorm1d(_FrozenBatchNorm, nn.BatchNorm1d):
    """BatchNorm1d that stays in inference mode and learns nothing (see ``BatchNorm1d(frozen=True)``)."""


class TokenBatchNorm1d(nn.BatchNorm1d):
    """BatchNorm1d over each feature of every token, (N, L, E): ``bn(x.flatten(0, 1)).reshape_as(x)``, as timm's
    LeViT writes it (torch's own BatchNorm1d takes (N, C, L) as channels C)."""

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return super().forward(input.flatten(0, 1)).reshape_as(input)


def _batchnorm(info: LayerInfo, factory: dict[str, Any]) -> nn.Module:
    layer = cast("BatchNorm2d | BatchNorm1d", info.layer)
    cls: type[nn.Module] = nn.BatchNorm2d if isinstance(layer, BatchNorm2d) else nn.BatchNorm1d
    if len(info.input_shape) == 2:
        cls = TokenBatchNorm1d
    if layer.frozen:
        cls = FrozenBatchNorm2d if isinstance(layer, BatchNorm2d) else FrozenBatchNorm1d
    learned = layer.affine_params
    module = cls(
        layer.num_features,
        eps=layer.eps,
        momentum=layer.momentum,
        affine=len(learned) == 2,
        track_running_stats=layer.track_running_stats,
        **factory,
    )
    if len(learned) == 1:  # Keras' scale=False or center=False: F.batch_norm takes weight and bias separately
        fill = torch.ones if learned[0] == "weight" else torch.zeros  # torch's own initial gain and shift
        module.register_parameter(learned[0], nn.Parameter(fill(layer.num_features, **factory)))
    if layer.frozen:
        for p in module.parameters():
            p.requires_grad_(False)
    return module


BUILDERS: dict[type, Any] = {
    BatchNorm2d: _batchnorm,
    BatchNorm1d: _batchnorm,
    LayerNorm: _layernorm,
    GroupNorm: _groupnorm,
    GlobalResponseNorm: lambda info, factory: GlobalResponseNormModule(
        info.layer.num_features,
        info.layer.eps,
        **factory,
    ),
}


def _torch_batch_norm(m: Any, name: str, where: str) -> Any:
    cls = BatchNorm2d if isinstance(m, nn.BatchNorm2d) else BatchNorm1d
    # what F.batch_norm is given: a gain and a shift each when present (a shift alone is Keras' scale=False)
    scale, center = m.weight is not None, m.bias is not None
    return cls(
        m.num_features,
        eps=m.eps,
        momentum=m.momentum,
        affine=scale or center,
        track_running_stats=m.track_running_stats,
        scale=scale,
        center=center,
        frozen=type(m) in (FrozenBatchNorm2d, FrozenBatchNorm1d),
        name=name,
    )


def _torch_layer_norm(m: Any, name: str, where: str) -> LayerNorm:
    if len(m.normalized_shape) != 1:
        raise UnsupportedLayerError(
            f"from_torch: {where}: LayerNorm over {len(m.normalized_shape)} dimensions; "
            "only over one (features, or channels at every pixel) is supported"
        )
    return LayerNorm(
        m.normalized_shape[0], eps=m.eps, elementwise_affine=m.weight is not None, bias=m.bias is not None, name=name
    )


def _torch_instance_norm(m: nn.InstanceNorm2d, name: str, where: str) -> GroupNorm:
    if m.track_running_stats:  # in eval it normalises with running statistics instead: another function
        raise UnsupportedLayerError(
            f"from_torch: {where}: InstanceNorm2d with track_running_stats=True is not supported (in eval it "
            "uses its running statistics); InstanceNorm2d without them imports as GroupNorm(C, C)"
        )
    return GroupNorm(m.num_features, m.num_features, eps=m.eps, affine=m.affine, name=name)


#: torch module class (exactly) -> (module, name, where) -> its spec layer (or the layer and its state, when the
#: module keeps a weight in another shape)
IMPORTS: dict[type, Any] = {
    nn.BatchNorm2d: _torch_batch_norm,
    nn.BatchNorm1d: _torch_batch_norm,
    FrozenBatchNorm2d: _torch_batch_norm,
    FrozenBatchNorm1d: _torch_batch_norm,
    TokenBatchNorm1d: _torch_batch_norm,
    nn.LayerNorm: _torch_layer_norm,
    ChannelLayerNorm: _torch_layer_norm,
    nn.GroupNorm: lambda m, name, where: GroupNorm(
        m.num_groups, m.num_channels, eps=m.eps, affine=m.affine, bias=m.bias is not None, name=name
    ),
    nn.InstanceNorm2d: _torch_instance_norm,
    GlobalResponseNormModule: lambda m, name, where: GlobalResponseNorm(m.weight.shape[0], eps=m.eps, name=name),
}


def _is_timm_grn(m: nn.Module) -> bool:
    return type(m).__name__ == "GlobalResponseNorm" and type(m).__module__ == "timm.layers.grn"


def _is_hf_grn(m: nn.Module) -> bool:
    return type(m).__name__ == "ConvNextV2GRN" and type(m).__module__.startswith("transformers.models.convnextv2.")


def grn_channels_last(m: Any) -> bool | None:
    """Whether a global response normalisation module is written for a channels-last (N, H, W, C) tensor (True),
    an NCHW one (False), or is not one (None). Each computes the kind only on the layout it is written for."""
    if _is_hf_grn(m):
        return True
    if _is_timm_grn(m):
        spatial, channel = tuple(m.spatial_dim), m.channel_dim
        if spatial == (1, 2) and channel == -1:
            return True
        return False if spatial == (2, 3) and channel == 1 else None
    return False if type(m) is GlobalResponseNormModule else None


def _other_grn(m: Any, name: str, where: str) -> tuple[GlobalResponseNorm, dict[str, Any]]:
    """timm's and Hugging Face's: the same function, with a weight and bias of shape (C,) or (1, 1, 1, C) (read
    as (C,) views: ``set_weights`` takes the (1, 1, 1, C) tensors of the module's state_dict too)."""
    if grn_channels_last(m) is None:
        raise UnsupportedLayerError(f"from_torch: {where}: a global response norm over other axes is not supported")
    weight = m.weight
    if weight.dim() > 1 and any(d != 1 for d in weight.shape[:-1]):
        raise UnsupportedLayerError(f"from_torch: {where}: a weight of shape {tuple(weight.shape)} is not per channel")
    eps = 1e-6 if _is_hf_grn(m) else float(m.eps)  # (Hugging Face's forward adds the constant 1e-6)
    state = {"weight": m.weight.view(-1), "bias": m.bias.view(-1)}
    return GlobalResponseNorm(int(weight.shape[-1]), eps=eps, name=name), state


#: (predicate on a module, its importer), for classes of other libraries matched by module and name
MATCHERS: list[Any] = [(_is_timm_grn, _other_grn), (_is_hf_grn, _other_grn)]
