"""Tokens and attention: the torch parts (built modules, and the torch modules that import as these kinds)."""

from __future__ import annotations

from typing import Any, cast

from ..._info import LayerInfo
from ...backends._torch_env import F, nn, torch
from ...errors import UnsupportedLayerError
from . import ClassToken, PositionEmbedding, SelectToken, SelfAttention, TokenMean, ToTokens


class ToTokensModule(nn.Module):
    """An (N, C, H, W) map as (N, H*W, C) tokens: ``x.flatten(2).transpose(1, 2)``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(2).transpose(1, 2)


class ClassTokenModule(nn.Module):
    """Puts the learned ``token`` (1, count, E) in front of the tokens."""

    def __init__(self, embed_dim: int, count: int = 1, device: Any = None, dtype: Any = None) -> None:
        super().__init__()
        self.token = nn.Parameter(torch.zeros(1, count, embed_dim, device=device, dtype=dtype))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.token.expand(x.shape[0], -1, -1), x], dim=1)


class PositionEmbeddingModule(nn.Module):
    """Adds the learned ``embedding`` (1, L, E) to the tokens."""

    def __init__(self, length: int, embed_dim: int, device: Any = None, dtype: Any = None) -> None:
        super().__init__()
        self.embedding = nn.Parameter(torch.zeros(1, length, embed_dim, device=device, dtype=dtype))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.embedding


class SelfAttentionModule(nn.Module):
    """Multi-head self-attention (see :class:`xconv.SelfAttention`) with ``nn.MultiheadAttention``'s parameter
    names, so its state_dict loads as that module's: ``in_proj_weight``, ``in_proj_bias``, ``out_proj``. Run
    with ``F.scaled_dot_product_attention``."""

    def __init__(
        self,
        embed_dim: int,
        num_heads: int,
        qkv_bias: bool = True,
        proj_bias: bool = True,
        dropout: float = 0.0,
        scale: float | None = None,
        device: Any = None,
        dtype: Any = None,
    ) -> None:
        super().__init__()
        self.num_heads, self.dropout, self.scale = num_heads, float(dropout), scale
        factory = {"device": device, "dtype": dtype}
        self.in_proj_weight = nn.Parameter(torch.zeros(3 * embed_dim, embed_dim, **factory))
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * embed_dim, **factory)) if qkv_bias else None
        self.out_proj = nn.Linear(embed_dim, embed_dim, bias=proj_bias, **factory)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, length, e = x.shape
        qkv = F.linear(x, self.in_proj_weight, self.in_proj_bias)
        q, k, v = qkv.view(n, length, 3, self.num_heads, e // self.num_heads).permute(2, 0, 3, 1, 4).unbind(0)
        drop = self.dropout if self.training else 0.0
        heads = F.scaled_dot_product_attention(q, k, v, dropout_p=drop, scale=self.scale)
        return cast(torch.Tensor, self.out_proj(heads.transpose(1, 2).reshape(n, length, e)))

    def extra_repr(self) -> str:
        scale = "" if self.scale is None else f", scale={self.scale}"
        return f"embed_dim={self.in_proj_weight.shape[1]}, num_heads={self.num_heads}, dropout={self.dropout}{scale}"


class SelectTokenModule(nn.Module):
    """One token's features: ``x[:, index]``."""

    def __init__(self, index: int = 0) -> None:
        super().__init__()
        self.index = int(index)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, self.index]

    def extra_repr(self) -> str:
        return f"index={self.index}"


class TokenMeanModule(nn.Module):
    """The mean over the tokens: ``x.mean(1)``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=1)


def _attention(info: LayerInfo, factory: dict[str, Any]) -> nn.Module:
    layer = cast(SelfAttention, info.layer)
    return SelfAttentionModule(
        layer.embed_dim, layer.num_heads, layer.qkv_bias, layer.proj_bias, layer.dropout, layer.scale, **factory
    )


BUILDERS: dict[type, Any] = {
    ToTokens: lambda info, factory: ToTokensModule(),
    ClassToken: lambda info, factory: ClassTokenModule(info.layer.embed_dim, info.layer.count, **factory),
    PositionEmbedding: lambda info, factory: PositionEmbeddingModule(
        info.layer.length, info.layer.embed_dim, **factory
    ),
    SelfAttention: _attention,
    SelectToken: lambda info, factory: SelectTokenModule(info.layer.index),
    TokenMean: lambda info, factory: TokenMeanModule(),
}


def _own_attention(m: SelfAttentionModule, name: str, where: str) -> SelfAttention:
    e = int(m.in_proj_weight.shape[1])
    bias, proj_bias = m.in_proj_bias is not None, m.out_proj.bias is not None
    return SelfAttention(e, m.num_heads, bias, proj_bias, m.dropout, m.scale, name=name)


def _torch_attention(m: nn.MultiheadAttention, name: str, where: str) -> SelfAttention:
    """``nn.MultiheadAttention(E, heads, batch_first=True)`` called as self-attention (query, key and value the
    same tensor, no mask: the importer maps a module call that reads one tensor only)."""
    problems = [
        (not m.batch_first, "batch_first=False (its input is (L, N, E); xconv's tokens are (N, L, E))"),
        (not m._qkv_same_embed_dim, f"kdim={m.kdim} or vdim={m.vdim} differs from embed_dim={m.embed_dim}"),
        (m.bias_k is not None or m.bias_v is not None, "add_bias_kv=True"),
        (m.add_zero_attn, "add_zero_attn=True"),
        ((m.in_proj_bias is None) != (m.out_proj.bias is None), "in_proj_bias and out_proj.bias not both present"),
    ]
    bad = [what for fails, what in problems if fails]
    if bad:
        raise UnsupportedLayerError(f"from_torch: {where}: {bad[0]} is not supported")
    bias = m.in_proj_bias is not None
    return SelfAttention(m.embed_dim, m.num_heads, bias, bias, float(m.dropout), name=name)


def _is_timm_attention(m: nn.Module) -> bool:
    return type(m).__name__ == "Attention" and type(m).__module__ == "timm.layers.attention"


def _timm_attention(m: Any, name: str, where: str) -> tuple[SelfAttention, dict[str, Any]]:
    """timm's ``Attention`` (ViT, DeiT): a fused ``qkv`` Linear whose rows are q, k, v head by head, the
    softmax attention at scale head_dim ** -0.5, then ``proj``; mapped when it is that and nothing more (no
    q/k norms, output norm, gate or output dropout, as many features out as in)."""
    dim = int(m.qkv.in_features)
    problems = [
        (type(m.q_norm) is not nn.Identity or type(m.k_norm) is not nn.Identity, "a q/k normalisation"),
        (type(m.norm) is not nn.Identity, "an output normalisation"),
        (getattr(m, "gate", None) is not None, "a gate"),
        (m.attn_dim != dim or m.proj.out_features != dim, f"attn_dim={m.attn_dim} or dim_out differ from dim={dim}"),
        (type(m.attn_drop) is not nn.Dropout or type(m.proj_drop) is not nn.Dropout, "other dropout modules"),
        (m.proj_drop.p > 0, f"proj_drop={m.proj_drop.p} (dropout after the projection)"),
    ]
    bad = [what for fails, what in problems if fails]
    if bad:
        raise UnsupportedLayerError(f"from_torch: {where}: timm Attention with {bad[0]} is not supported")
    exact = m.head_dim**-0.5
    scale = None if float(m.scale) == exact else float(m.scale)  # (a fused path's sdpa uses the exact scale)
    if scale is not None and m.fused_attn:
        raise UnsupportedLayerError(f"from_torch: {where}: timm Attention with scale={m.scale} on its fused path")
    layer = SelfAttention(
        dim, m.num_heads, m.qkv.bias is not None, m.proj.bias is not None, float(m.attn_drop.p), scale, name=name
    )
    state = {
        "in_proj_weight": m.qkv.weight,
        "in_proj_bias": m.qkv.bias,
        "out_proj.weight": m.proj.weight,
        "out_proj.bias": m.proj.bias,
    }
    return layer, state


#: Hugging Face's ViT-style attention: separate q/k/v projections, the softmax attention, then ``o_proj``
_HF_ATTENTIONS = {"ViTAttention": "transformers.models.vit.", "DeiTAttention": "transformers.models.deit."}


def is_hf_attention(m: nn.Module) -> bool:
    where = _HF_ATTENTIONS.get(type(m).__name__)
    return where is not None and type(m).__module__.startswith(where)


def _hf_attention(m: Any, name: str, where: str) -> tuple[SelfAttention, dict[str, Any]]:
    """Hugging Face's ``ViTAttention`` / ``DeiTAttention``: ``q_proj``, ``k_proj`` and ``v_proj`` side by side
    are the fused ``in_proj_weight`` (a new tensor: the ported model keeps the canonical keys for it), ``o_proj``
    the output projection; the sdpa implementation (the default) only."""
    q, k, v, o = m.q_proj, m.k_proj, m.v_proj, m.o_proj
    dim = int(q.in_features)
    biases = {t.bias is not None for t in (q, k, v)}
    implementation = getattr(m.config, "_attn_implementation", None)
    problems = [
        (m.is_causal, "causal attention"),
        (m.num_attention_heads * m.head_dim != dim or o.out_features != dim, f"head_dim={m.head_dim}"),
        (len(biases) != 1, "biases on some of q, k and v only"),
        # (eager differs: its softmax runs in float32 whatever the model's dtype, and it adds its mask itself)
        (implementation != "sdpa", f"attention implementation {implementation!r} (sdpa only)"),
    ]
    bad = [what for fails, what in problems if fails]
    if bad:
        raise UnsupportedLayerError(f"from_torch: {where}: {type(m).__name__} with {bad[0]} is not supported")
    exact = m.head_dim**-0.5
    scale = None if float(m.scaling) == exact else float(m.scaling)
    layer = SelfAttention(
        dim, m.num_attention_heads, biases.pop(), o.bias is not None, float(m.attention_dropout), scale, name=name
    )
    state = {
        "in_proj_weight": torch.cat([q.weight, k.weight, v.weight]),
        "in_proj_bias": None if q.bias is None else torch.cat([q.bias, k.bias, v.bias]),
        "out_proj.weight": o.weight,
        "out_proj.bias": o.bias,
    }
    return layer, state


#: (predicate on a module, its importer), for classes of other libraries matched by module and name
MATCHERS: list[Any] = [(_is_timm_attention, _timm_attention), (is_hf_attention, _hf_attention)]


#: torch module class (exactly) -> (module, name, where) -> its spec layer
IMPORTS: dict[type, Any] = {
    ToTokensModule: lambda m, name, where: ToTokens(name=name),
    ClassTokenModule: lambda m, name, where: ClassToken(int(m.token.shape[-1]), int(m.token.shape[1]), name=name),
    PositionEmbeddingModule: lambda m, name, where: PositionEmbedding(
        int(m.embedding.shape[1]), int(m.embedding.shape[2]), name=name
    ),
    SelfAttentionModule: _own_attention,
    nn.MultiheadAttention: _torch_attention,
    SelectTokenModule: lambda m, name, where: SelectToken(m.index, name=name),
    TokenMeanModule: lambda m, name, where: TokenMean(name=name),
}
