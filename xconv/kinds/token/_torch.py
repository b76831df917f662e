"""Tokens and attention: the torch parts (built modules, and the torch modules that import as these kinds)."""

from __future__ import annotations

from typing import Any, cast

from ..._info import LayerInfo
from ...backends._torch_env import F, nn, torch
from ...errors import UnsupportedLayerError
from . import (
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


class ToTokensModule(nn.Module):
    """An (N, C, H, W) map as (N, H*W, C) tokens: ``x.flatten(2).transpose(1, 2)``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(2).transpose(1, 2)


class ToMapModule(nn.Module):
    """(N, H*W, C) tokens as an (N, C, H, W) map: ``x.transpose(1, 2).reshape(N, C, H, W)``."""

    def __init__(self, height: int, width: int) -> None:
        super().__init__()
        self.height, self.width = int(height), int(width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.transpose(1, 2).reshape(x.shape[0], x.shape[2], self.height, self.width)

    def extra_repr(self) -> str:
        return f"{self.height}, {self.width}"


class ClassTokenModule(nn.Module):
    """Puts the learned ``token`` (1, count, E) in front of the tokens."""

    def __init__(self, embed_dim: int, count: int = 1, device: Any = None, dtype: Any = None) -> None:
        super().__init__()
        self.token = nn.Parameter(torch.zeros(1, count, embed_dim, device=device, dtype=dtype))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.token.expand(x.shape[0], -1, -1), x], dim=1)


class PositionEmbeddingModule(nn.Module):
    """Adds the learned ``embedding`` (1, rows, E) to the tokens, its first L rows to L tokens."""

    def __init__(
        self, length: int, embed_dim: int, rows: int | None = None, device: Any = None, dtype: Any = None
    ) -> None:
        super().__init__()
        self.length = int(length)
        rows = self.length if rows is None else int(rows)
        self.embedding = nn.Parameter(torch.zeros(1, rows, embed_dim, device=device, dtype=dtype))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.embedding.shape[1] == self.length:
            return x + self.embedding
        return x + self.embedding[:, : x.shape[1]]

    def extra_repr(self) -> str:
        return f"length={self.length}, rows={self.embedding.shape[1]}, embed_dim={self.embedding.shape[2]}"


class PaddedPositionsModule(nn.Module):
    """The positions of the tokens that are not padding, from the ids (see :class:`xconv.PaddedPositions`)."""

    def __init__(self, padding_idx: int) -> None:
        super().__init__()
        self.padding_idx = int(padding_idx)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        tokens = (ids != self.padding_idx).long()
        return torch.cumsum(tokens, dim=1) * tokens + self.padding_idx

    def extra_repr(self) -> str:
        return f"padding_idx={self.padding_idx}"


class TokenTypeEmbeddingModule(nn.Module):
    """Adds the learned embedding of each token's type (``weight`` (types, E)) to it: ``weight[token_types]``
    for the model's token types (``reads_types``; not given: type 0), else ``weight[token_type]``."""

    def __init__(
        self,
        types: int,
        embed_dim: int,
        token_type: int = 0,
        device: Any = None,
        dtype: Any = None,
        reads_types: bool = False,
    ) -> None:
        super().__init__()
        self.token_type, self.reads_types = int(token_type), bool(reads_types)
        self.weight = nn.Parameter(torch.zeros(types, embed_dim, device=device, dtype=dtype))

    def forward(self, x: torch.Tensor, token_types: torch.Tensor | None = None) -> torch.Tensor:
        if token_types is None or not self.reads_types:
            return x + self.weight[self.token_type]
        return x + F.embedding(token_types, self.weight)

    def extra_repr(self) -> str:
        given = ", reads_types=True" if self.reads_types else f", token_type={self.token_type}"
        return f"types={self.weight.shape[0]}, embed_dim={self.weight.shape[1]}{given}"


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
        projection: bool = True,
        device: Any = None,
        dtype: Any = None,
    ) -> None:
        super().__init__()
        self.num_heads, self.dropout, self.scale = num_heads, float(dropout), scale
        factory = {"device": device, "dtype": dtype}
        self.in_proj_weight = nn.Parameter(torch.zeros(3 * embed_dim, embed_dim, **factory))
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * embed_dim, **factory)) if qkv_bias else None
        self.out_proj = nn.Linear(embed_dim, embed_dim, bias=proj_bias, **factory) if projection else None

    def forward(self, x: torch.Tensor, padding_mask: torch.Tensor | None = None) -> torch.Tensor:
        n, length, e = x.shape
        qkv = F.linear(x, self.in_proj_weight, self.in_proj_bias)
        q, k, v = qkv.view(n, length, 3, self.num_heads, e // self.num_heads).permute(2, 0, 3, 1, 4).unbind(0)
        drop = self.dropout if self.training else 0.0
        # (a padding mask: 1 for a token, 0 for padding; no query attends to a padding key)
        keep = None if padding_mask is None else (padding_mask != 0)[:, None, None, :]
        heads = F.scaled_dot_product_attention(q, k, v, attn_mask=keep, dropout_p=drop, scale=self.scale)
        joined = heads.transpose(1, 2).reshape(n, length, e)
        return joined if self.out_proj is None else cast(torch.Tensor, self.out_proj(joined))

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


def dot_product_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    num_heads: int,
    scale: float | None = None,
    dropout: float = 0.0,
    training: bool = False,
    bias: torch.Tensor | None = None,
) -> torch.Tensor:
    """DotProductAttention on (N, L, E) queries, (N, S, E) keys and (N, S, Ev) values: the heads split out
    (consecutive features), ``F.scaled_dot_product_attention`` (``scale`` None: d ** -0.5; the weights dropped
    at ``dropout`` in ``training``; ``bias`` (heads, L, S) added to the scores), the heads merged."""
    n, length, _ = q.shape

    def heads(t: torch.Tensor) -> torch.Tensor:
        return t.reshape(n, t.shape[1], num_heads, t.shape[2] // num_heads).transpose(1, 2)

    p = dropout if training else 0.0
    out = F.scaled_dot_product_attention(heads(q), heads(k), heads(v), attn_mask=bias, dropout_p=p, scale=scale)
    return out.transpose(1, 2).reshape(n, length, v.shape[2])


def _attention(info: LayerInfo, factory: dict[str, Any]) -> nn.Module:
    layer = cast(SelfAttention, info.layer)
    return SelfAttentionModule(
        layer.embed_dim,
        layer.num_heads,
        layer.qkv_bias,
        layer.proj_bias,
        layer.dropout,
        layer.scale,
        layer.projection,
        **factory,
    )


BUILDERS: dict[type, Any] = {
    ToTokens: lambda info, factory: ToTokensModule(),
    ToMap: lambda info, factory: ToMapModule(info.layer.height, info.layer.width),
    ClassToken: lambda info, factory: ClassTokenModule(info.layer.embed_dim, info.layer.count, **factory),
    Embedding: lambda info, factory: nn.Embedding(
        info.layer.num_embeddings, info.layer.embed_dim, padding_idx=info.layer.padding_idx, **factory
    ),
    PaddedPositions: lambda info, factory: PaddedPositionsModule(info.layer.padding_idx),
    PositionEmbedding: lambda info, factory: PositionEmbeddingModule(
        info.layer.length, info.layer.embed_dim, info.layer.rows, **factory
    ),
    TokenTypeEmbedding: lambda info, factory: TokenTypeEmbeddingModule(
        info.layer.types, info.layer.embed_dim, info.layer.token_type, **factory, reads_types=info.layer.token_types
    ),
    SelfAttention: _attention,
    SelectToken: lambda info, factory: SelectTokenModule(info.layer.index),
    TokenMean: lambda info, factory: TokenMeanModule(),
}


def _own_attention(m: SelfAttentionModule, name: str, where: str) -> SelfAttention:
    e = int(m.in_proj_weight.shape[1])
    bias, proj = m.in_proj_bias is not None, m.out_proj is not None
    proj_bias = proj and m.out_proj.bias is not None  # type: ignore[union-attr]
    return SelfAttention(e, m.num_heads, bias, proj_bias, m.dropout, m.scale, proj, name=name)


def _torch_embedding(m: nn.Embedding, name: str, where: str) -> Embedding:
    """``nn.Embedding`` looking up the model's token ids (an embedding of a fixed index, such as BERT's
    positions, is read by the importer as a PositionEmbedding or TokenTypeEmbedding)."""
    problems = [
        (m.max_norm is not None, f"max_norm={m.max_norm} (it rescales the rows it looks up, in place)"),
        (m.scale_grad_by_freq, "scale_grad_by_freq=True"),
    ]
    bad = [what for fails, what in problems if fails]
    if bad:
        raise UnsupportedLayerError(f"from_torch: {where}: nn.Embedding with {bad[0]} is not supported")
    padding = None if m.padding_idx is None else int(m.padding_idx) % m.num_embeddings
    return Embedding(m.num_embeddings, m.embedding_dim, padding, name=name)


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
    return _fused_qkv_attention(m, dim, scale, name)


def _fused_qkv_attention(m: Any, dim: int, scale: float | None, name: str) -> tuple[SelfAttention, dict[str, Any]]:
    """timm's attentions, laid out as SelfAttention: ``qkv`` is the in-projection, ``proj`` the out."""
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


def _is_metaformer_attention(m: nn.Module) -> bool:
    return type(m).__name__ == "Attention" and type(m).__module__ == "timm.models.metaformer"


def _metaformer_attention(m: Any, name: str, where: str) -> tuple[SelfAttention, dict[str, Any]]:
    """timm's MetaFormer ``Attention`` (CAFormer): timm's layout (a fused ``qkv`` Linear, rows q, k, v head by
    head; the softmax attention at scale head_dim ** -0.5; then ``proj``), with heads of a given ``head_dim``;
    mapped when its attention dimension is the token's and nothing drops after the projection."""
    dim = int(m.qkv.in_features)
    problems = [
        (m.attention_dim != dim or m.proj.out_features != dim, f"attention_dim={m.attention_dim} (not dim={dim})"),
        (type(m.attn_drop) is not nn.Dropout or type(m.proj_drop) is not nn.Dropout, "other dropout modules"),
        (m.proj_drop.p > 0, f"proj_drop={m.proj_drop.p} (dropout after the projection)"),
        (float(m.scale) != m.head_dim**-0.5, f"scale={m.scale}"),
    ]
    bad = [what for fails, what in problems if fails]
    if bad:
        raise UnsupportedLayerError(f"from_torch: {where}: timm MetaFormer Attention with {bad[0]} is not supported")
    return _fused_qkv_attention(m, dim, None, name)


#: Hugging Face's self-attentions: class -> (module prefix, the q, k, v and output projections' attribute
#: names (no output projection: BERT's, a Linear of its own), the heads' attribute)
_HF_ATTENTIONS = {
    "ViTAttention": ("transformers.models.vit.", ("q_proj", "k_proj", "v_proj", "o_proj"), "num_attention_heads"),
    "DeiTAttention": ("transformers.models.deit.", ("q_proj", "k_proj", "v_proj", "o_proj"), "num_attention_heads"),
    "BertSelfAttention": ("transformers.models.bert.", ("query", "key", "value", None), "num_attention_heads"),
    "RobertaSelfAttention": ("transformers.models.roberta.", ("query", "key", "value", None), "num_attention_heads"),
    # (the same code as RoBERTa's, class for class: ELECTRA's, XLM-RoBERTa's and CamemBERT's)
    "ElectraSelfAttention": ("transformers.models.electra.", ("query", "key", "value", None), "num_attention_heads"),
    "XLMRobertaSelfAttention": (
        "transformers.models.xlm_roberta.",
        ("query", "key", "value", None),
        "num_attention_heads",
    ),
    "CamembertSelfAttention": (
        "transformers.models.camembert.",
        ("query", "key", "value", None),
        "num_attention_heads",
    ),
    "DistilBertSelfAttention": ("transformers.models.distilbert.", ("q_lin", "k_lin", "v_lin", "out_lin"), "n_heads"),
}


def is_hf_attention(m: nn.Module) -> bool:
    known = _HF_ATTENTIONS.get(type(m).__name__)
    return known is not None and type(m).__module__.startswith(known[0])


def fused(*parts: Any) -> Any:
    """The parts concatenated along the first axis, a new tensor that remembers them (``xconv_parts``), so
    that the importer names their keys as the fused parameter's source keys."""
    out = torch.cat(parts)
    out.xconv_parts = parts  # type: ignore[attr-defined]  # (a Python attribute of this tensor)
    return out


def _hf_attention(m: Any, name: str, where: str) -> tuple[SelfAttention, dict[str, Any]]:
    """Hugging Face's self-attentions (ViT, DeiT, BERT, RoBERTa and its copies, DistilBERT): separate q, k and v
    projections, side by side the fused ``in_proj_weight`` (its source keys are the three weights' keys), the
    softmax attention, then the output projection (BERT's and RoBERTa's is a Linear of their own: the
    attention is imported without one); the sdpa implementation (the default) only."""
    _, (qn, kn, vn, on), heads_attr = _HF_ATTENTIONS[type(m).__name__]
    q, k, v = (getattr(m, a) for a in (qn, kn, vn))
    o = None if on is None else getattr(m, on)
    dim = int(q.in_features)
    heads = int(getattr(m, heads_attr))
    head_dim = int(getattr(m, "head_dim", getattr(m, "attention_head_size", 0)))
    biases = {t.bias is not None for t in (q, k, v)}
    implementation = getattr(m.config, "_attn_implementation", None)
    drop: Any = getattr(m, "attention_dropout", None)
    drop = m.dropout.p if drop is None and isinstance(getattr(m, "dropout", None), nn.Dropout) else drop
    problems = [
        (bool(m.is_causal) or bool(getattr(m.config, "is_decoder", False)), "causal attention (a decoder)"),
        (heads * head_dim != dim or any(t.out_features != dim for t in (q, k, v)), f"head_dim={head_dim}"),
        (o is not None and o.out_features != dim, f"{on} of {getattr(o, 'out_features', 0)} features"),
        (len(biases) != 1, "biases on some of q, k and v only"),
        (drop is None, "a dropout xconv does not know"),
        # (eager differs: its softmax runs in float32 whatever the model's dtype, and it adds its mask itself)
        (implementation != "sdpa", f"attention implementation {implementation!r} (sdpa only)"),
    ]
    bad = [what for fails, what in problems if fails]
    if bad:
        raise UnsupportedLayerError(f"from_torch: {where}: {type(m).__name__} with {bad[0]} is not supported")
    exact = head_dim**-0.5
    scale = None if float(m.scaling) == exact else float(m.scaling)
    proj_bias = o is not None and o.bias is not None
    layer = SelfAttention(dim, heads, biases.pop(), proj_bias, float(drop), scale, o is not None, name=name)
    state = {"in_proj_weight": fused(q.weight, k.weight, v.weight)}
    state["in_proj_bias"] = None if q.bias is None else fused(q.bias, k.bias, v.bias)
    if o is not None:
        state["out_proj.weight"], state["out_proj.bias"] = o.weight, o.bias
    return layer, state


#: (predicate on a module, its importer), for classes of other libraries matched by module and name
MATCHERS: list[Any] = [
    (_is_timm_attention, _timm_attention),
    (_is_metaformer_attention, _metaformer_attention),
    (is_hf_attention, _hf_attention),
]


#: torch module class (exactly) -> (module, name, where) -> its spec layer
IMPORTS: dict[type, Any] = {
    ToTokensModule: lambda m, name, where: ToTokens(name=name),
    ToMapModule: lambda m, name, where: ToMap(m.height, m.width, name=name),
    ClassTokenModule: lambda m, name, where: ClassToken(int(m.token.shape[-1]), int(m.token.shape[1]), name=name),
    PositionEmbeddingModule: lambda m, name, where: PositionEmbedding(
        m.length, int(m.embedding.shape[2]), int(m.embedding.shape[1]), name=name
    ),
    TokenTypeEmbeddingModule: lambda m, name, where: TokenTypeEmbedding(
        int(m.weight.shape[0]), int(m.weight.shape[1]), m.token_type, m.reads_types, name=name
    ),
    nn.Embedding: _torch_embedding,
    PaddedPositionsModule: lambda m, name, where: PaddedPositions(m.padding_idx, name=name),
    SelfAttentionModule: _own_attention,
    nn.MultiheadAttention: _torch_attention,
    SelectTokenModule: lambda m, name, where: SelectToken(m.index, name=name),
    TokenMeanModule: lambda m, name, where: TokenMean(name=name),
}
