"""Hypothesis strategies for transformer specs: a map read as tokens, class tokens and positional embeddings,
pre- and post-norm attention blocks, and the way back to features; text encoders on token ids; hierarchical
windowed transformers on maps (Swin's layout)."""

from __future__ import annotations

from typing import Any

import numpy as np
from hypothesis import strategies as st

from .. import shapes
from ..graph import takes_padding_mask, token_type_count
from ..spec import (
    GELU,
    AdaptiveAvgPool2d,
    Add,
    BatchNorm1d,
    BatchNorm2d,
    ChannelLinear,
    ClassToken,
    Conv2d,
    DotProductAttention,
    Dropout,
    Embedding,
    Flatten,
    Identity,
    LayerNorm,
    LayerScale,
    Linear,
    Narrow,
    PaddedPositions,
    PatchMerging,
    PositionEmbedding,
    ReLU,
    SelectToken,
    SelfAttention,
    Sequential,
    SiLU,
    Tanh,
    TokenMean,
    TokenTypeEmbedding,
    ToMap,
    ToTokens,
    WindowAttention,
)

__all__ = [
    "TOKEN_KINDS",
    "attention_blocks",
    "padding_masks",
    "text_encoder_specs",
    "token_types",
    "transformer_specs",
    "window_specs",
]

#: the kinds that only :func:`transformer_specs`, :func:`text_encoder_specs` and :func:`window_specs` draw (the
#: others draw no tokens and no attention)
TOKEN_KINDS = (
    "ToTokens",
    "ToMap",
    "Embedding",
    "PaddedPositions",
    "ClassToken",
    "PositionEmbedding",
    "TokenTypeEmbedding",
    "SelfAttention",
    "SelectToken",
    "TokenMean",
    "WindowAttention",
    "PatchMerging",
    "DotProductAttention",
)


@st.composite
def attention_blocks(
    draw: Any,
    embed_dim: int,
    num_heads: int,
    batch_stats: bool = True,
    padding_mask: bool = False,
    grid: tuple[int, int] | None = None,
) -> list[Any]:
    """One transformer block on (L, embed_dim) tokens: the attention (sometimes written out, a DotProductAttention
    of q, k and v Linears, then an output Linear) and the MLP, each a residual, with the
    LayerNorm before (pre-norm, ViT) or after the sum (post-norm, BERT). ``batch_stats=False`` (float32 suites)
    draws LayerNorm eps 0.1, as :func:`xconv.testing.strategies.specs` does: normalising a token's few features
    whose values nearly coincide divides their float32 rounding by sqrt(var + eps). (BERT's eps of 1e-12 is not
    drawn: a token of nearly equal features then turns float64 rounding into 3e-10 of the output, measured.)
    With ``batch_stats``, the MLP sometimes normalises its hidden features over every token of the batch
    (LeViT's BatchNorm1d). ``padding_mask``: the attention reads the model's padding mask. ``grid``: the tokens
    are the (H, W) points
    of a map, and an attention written out sometimes adds a learned bias per relative offset (LeViT's), its
    q, k and v sometimes one Linear whose features are packed head by head (Narrows with ``groups``)."""
    pre = draw(st.booleans())
    eps = draw(st.sampled_from([1e-5, 1e-6] if batch_stats else [0.1]))
    projection = draw(st.integers(0, 3)) > 0  # else BERT's: the output projection a Linear of its own
    attention: Any = SelfAttention(
        embed_dim,
        num_heads,
        qkv_bias=draw(st.booleans()),
        proj_bias=draw(st.booleans()),
        scale=draw(st.sampled_from([None, None, None, 0.3])),
        projection=projection,
        padding_mask=padding_mask,
    )
    if not projection:
        attention = Sequential(attention, Linear(embed_dim, embed_dim, bias=draw(st.booleans())))
    if not padding_mask and draw(st.integers(0, 3)) == 0:  # attention written out: q, k, v Linears, then heads
        value_dim = num_heads * draw(st.integers(1, 3))
        bias = {"bias_grid": grid, "state_index": draw(st.booleans())} if grid and draw(st.booleans()) else {}
        branches: list[Any] = [
            Linear(embed_dim, embed_dim, bias=draw(st.booleans())),
            Linear(embed_dim, embed_dim, bias=draw(st.booleans())),
            Linear(embed_dim, value_dim, bias=draw(st.booleans())),
        ]
        if draw(st.integers(0, 2)) == 0:  # one Linear, each head's q, k and v side by side (timm's LeViT)
            d, dv = embed_dim // num_heads, value_dim // num_heads
            packed = Linear(embed_dim, 2 * embed_dim + value_dim, bias=draw(st.booleans()))
            parts = [(0, d), (d, d), (2 * d, dv)]
            branches = [Narrow(2, start, size, groups=num_heads) for start, size in parts]
            core = DotProductAttention(*branches, num_heads=num_heads, scale=draw(st.sampled_from([None, 0.3])), **bias)
            attention = Sequential(packed, core, Linear(value_dim, embed_dim))
        else:
            core = DotProductAttention(
                *branches, num_heads=num_heads, scale=draw(st.sampled_from([None, None, 0.3])), **bias
            )
            attention = Sequential(core, Linear(value_dim, embed_dim))
    hidden = draw(st.integers(1, 2 * embed_dim))
    act = draw(st.sampled_from([GELU(), GELU(approximate="tanh"), ReLU(), SiLU(), Tanh()]))
    mlp = [Linear(embed_dim, hidden, bias=draw(st.booleans())), act, Dropout(0.0), Linear(hidden, embed_dim)]
    if batch_stats and draw(st.integers(0, 3)) == 0:  # LeViT's: each feature normalised over every token
        mlp.insert(1, BatchNorm1d(hidden))
    if draw(st.integers(0, 2)) == 0:  # timm's layer scales (DeiT III)
        attention = Sequential(attention, LayerScale(embed_dim))
        mlp.append(LayerScale(embed_dim))
    if pre:
        return [
            Add(Identity(), Sequential(LayerNorm(embed_dim, eps=eps), attention)),
            Add(Identity(), Sequential(LayerNorm(embed_dim, eps=eps), *mlp)),
        ]
    return [
        Add(Identity(), attention),
        LayerNorm(embed_dim, eps=eps),
        Add(Identity(), Sequential(*mlp)),
        LayerNorm(embed_dim, eps=eps),
    ]


@st.composite
def transformer_specs(
    draw: Any, *, max_blocks: int = 2, max_heads: int = 4, max_head_dim: int = 4, batch_stats: bool = True
) -> Sequential:
    """A valid random vision transformer: a (C, H, W) input, sometimes a conv stem (conv, BatchNorm, ReLU),
    a patch embedding (a conv of kernel and stride p) read as tokens, 0 to 2 learned tokens in front, sometimes
    a positional embedding, 1..max_blocks attention blocks (1 to max_heads heads of 1 to max_head_dim features,
    pre- or post-norm, with and without biases, sometimes layer scales), then the tokens themselves, one token's
    features, their mean (sometimes over the patches only), or the patches read back as a map (then a conv),
    sometimes through a Linear head. ``batch_stats``: see :func:`attention_blocks`."""
    patch = draw(st.integers(1, 3))
    grid_h, grid_w = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    c = draw(st.integers(1, 4))
    input_shape = (c, grid_h * patch, grid_w * patch)
    heads = draw(st.integers(1, max_heads))
    e = heads * draw(st.integers(1, max_head_dim))
    layers: list[Any] = []
    if draw(st.integers(0, 3)) == 0:
        c2 = draw(st.integers(1, 4))
        layers += [Conv2d(c, c2, 3, padding=1), BatchNorm2d(c2), ReLU()]
        c = c2
    layers += [Conv2d(c, e, patch, stride=patch, bias=draw(st.booleans())), ToTokens()]
    length = grid_h * grid_w
    prefix = 0
    for _ in range(draw(st.sampled_from([0, 1, 1, 2]))):
        count = draw(st.sampled_from([1, 1, 2]))  # a class token, or register tokens
        layers.append(ClassToken(e, count=count))
        prefix += count
    length += prefix
    if draw(st.integers(0, 3)) > 0:
        layers.append(PositionEmbedding(length, e))
    grid = None if prefix else (grid_h, grid_w)
    for _ in range(draw(st.integers(1, max_blocks))):
        layers += draw(attention_blocks(e, heads, batch_stats, grid=grid))
    end = draw(st.sampled_from(["tokens", "select", "mean", "mean", "map"]))
    if end == "map":  # the patch tokens as a map again (a hybrid's next conv stage)
        if prefix:
            layers.append(Narrow(1, prefix, length - prefix))
        layers += [ToMap(grid_h, grid_w), Conv2d(e, e, 1), Flatten()]
        e = e * grid_h * grid_w
    elif end == "select":
        layers.append(SelectToken(draw(st.integers(0, length - 1))))
    elif end == "mean":
        if prefix and draw(st.booleans()):  # the mean over the patches only: x[:, prefix:].mean(1)
            layers.append(Narrow(1, prefix, length - prefix))
        layers.append(TokenMean())
    if draw(st.booleans()):
        layers += [LayerNorm(e, eps=1e-5 if batch_stats else 0.1), Linear(e, draw(st.integers(1, 5)))]
    return Sequential(*layers, input_shape=input_shape)


@st.composite
def text_encoder_specs(
    draw: Any, *, max_blocks: int = 2, max_heads: int = 4, max_head_dim: int = 4, batch_stats: bool = True
) -> Sequential:
    """A valid random text encoder on token ids (input (L,), integers): an Embedding of 2 to 30 ids (sometimes
    with a padding row), sometimes a positional embedding over a table of L or more rows (or RoBERTa's, the
    positions of the tokens that are not padding) and a token-type embedding, a LayerNorm (BERT's embeddings), 1..max_blocks attention blocks (see :func:`attention_blocks`),
    then the tokens, the first token through a Linear and Tanh (BERT's pooler), or their mean; its attentions
    read a padding mask or not, its token-type embedding one type or the model's token types. Draw its batches
    with :func:`xconv.testing.strategies.inputs`, which draws ids for it, their masks with
    :func:`padding_masks` and their types with :func:`token_types`."""
    length = draw(st.integers(1, 6))
    vocabulary = draw(st.integers(2, 30))
    heads = draw(st.integers(1, max_heads))
    e = heads * draw(st.integers(1, max_head_dim))
    padding = draw(st.sampled_from([None, 0, vocabulary - 1]))
    eps = 1e-5 if batch_stats else 0.1
    layers: list[Any] = [Embedding(vocabulary, e, padding_idx=padding)]
    positions = draw(st.sampled_from(["table", "table", "table", "padded", None]))
    if positions == "table":
        layers.append(PositionEmbedding(length, e, rows=length + draw(st.sampled_from([0, 0, 3]))))
    elif positions == "padded":  # RoBERTa's: the tokens that are not padding numbered from the ids
        pad = 0 if padding is None else padding
        words = Embedding(vocabulary, e, padding_idx=padding)
        table = Embedding(length + pad + 1 + draw(st.integers(0, 2)), e, padding_idx=pad)
        layers = [Add(words, Sequential(PaddedPositions(pad), table))]
    typed = draw(st.sampled_from(["one", "input", None]))
    if typed == "one":  # every token of one type
        types = draw(st.integers(1, 3))
        layers.append(TokenTypeEmbedding(types, e, token_type=draw(st.integers(0, types - 1))))
    elif typed == "input":  # each token's type, from the model's token types
        layers.append(TokenTypeEmbedding(draw(st.integers(1, 3)), e, token_types=True))
    layers.append(LayerNorm(e, eps=eps))
    masked = draw(st.booleans())  # the attention reads a padding mask
    for _ in range(draw(st.integers(1, max_blocks))):
        layers += draw(attention_blocks(e, heads, batch_stats, padding_mask=masked))
    end = draw(st.sampled_from(["tokens", "pooler", "mean"]))
    if end == "pooler":
        layers += [SelectToken(0), Linear(e, e), Tanh()]
    elif end == "mean":
        layers.append(TokenMean())
    return Sequential(*layers, input_shape=(length,))


@st.composite
def window_specs(draw: Any, *, max_stages: int = 2, batch_stats: bool = True) -> Sequential:
    """A valid random hierarchical windowed transformer in Swin's layout, on maps: a patch embedding (a conv of
    kernel and stride p) and a LayerNorm, 1..max_stages stages of one or two blocks, each x + attn(LayerNorm(x))
    with a window attention of 1 or 2 heads (windows that do and do not divide the map, of one or two sizes,
    shifted or not, rolled before or after the padding, sometimes Swin V2's cosine attention, MaxViT's grid
    attention, or Twins' without a position bias) and x + mlp(LayerNorm(x))
    per pixel, a patch merging between stages (sometimes Swin V2's,
    the reduction first; odd sizes are padded), then a LayerNorm, the global average and a Linear head.
    ``batch_stats=False`` (float32 suites) draws LayerNorm eps 0.1, as :func:`attention_blocks` does."""
    patch = draw(st.integers(1, 2))
    height, width = draw(st.integers(2, 6)), draw(st.integers(2, 6))
    input_shape = (draw(st.integers(1, 3)), height * patch, width * patch)
    c = input_shape[0]
    heads = draw(st.integers(1, 2))
    e = heads * draw(st.integers(1, 3))
    eps = 1e-5 if batch_stats else 0.1
    layers: list[Any] = [Conv2d(c, e, patch, stride=patch), LayerNorm(e, eps=eps)]
    for stage in range(draw(st.integers(1, max_stages))):
        if stage:
            out = heads * draw(st.integers(1, 3))
            layers.append(PatchMerging(e, out, eps=eps, norm_first=draw(st.booleans())))
            e, height, width = out, -(-height // 2), -(-width // 2)
        for block in range(draw(st.integers(1, 2))):
            kind = draw(st.sampled_from(["swin", "swin", "v2", "grid", "twins"]))
            if kind == "grid":  # (MaxViT's: windows that divide the map, spread over it, its own scale)
                wh = draw(st.sampled_from([d for d in range(1, height + 1) if height % d == 0]))
                ww = draw(st.sampled_from([d for d in range(1, width + 1) if width % d == 0]))
            else:
                wh, ww = draw(st.integers(1, 3)), draw(st.integers(1, 3))
            shift = (
                (draw(st.integers(0, wh - 1)), draw(st.integers(0, ww - 1))) if block % 2 and kind != "grid" else (0, 0)
            )
            attention = WindowAttention(
                e, heads, (wh, ww), shift, qkv_bias=draw(st.booleans()), proj_bias=draw(st.booleans()),
                cosine=kind == "v2", cpb_hidden=draw(st.integers(1, 6)), grid=kind == "grid",
                roll_first=kind != "grid" and draw(st.booleans()),
                scale=draw(st.sampled_from([None, e**-0.5])) if kind != "v2" else None,
                position_bias=kind != "twins",
            )  # fmt: skip
            hidden = draw(st.integers(1, 2 * e))
            mlp = [LayerNorm(e, eps=eps), ChannelLinear(e, hidden), GELU(), ChannelLinear(hidden, e)]
            layers += [
                Add(Identity(), Sequential(LayerNorm(e, eps=eps), attention)),
                Add(Identity(), Sequential(*mlp)),
            ]
    layers += [LayerNorm(e, eps=eps), AdaptiveAvgPool2d(1), Flatten(), Linear(e, draw(st.integers(1, 4)))]
    return Sequential(*layers, input_shape=input_shape)


@st.composite
def padding_masks(draw: Any, spec: Sequential, ids: np.ndarray) -> np.ndarray | None:
    """A padding mask for the token ids ``ids`` of ``spec`` (1 for a token, 0 for padding, any pattern with a
    token in every row, or all ones), or None when the spec's attention reads none."""
    if not takes_padding_mask(shapes.infer(spec)):
        return None
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    mask: np.ndarray = (rng.random(ids.shape) < draw(st.sampled_from([0.5, 0.8, 1.0]))).astype(np.int64)
    mask[np.arange(len(mask)), rng.integers(0, ids.shape[1], len(mask))] = 1
    return mask


@st.composite
def token_types(draw: Any, spec: Sequential, ids: np.ndarray) -> np.ndarray | None:
    """Token types for the token ids ``ids`` of ``spec`` (each token's type, below the types its token-type
    embedding holds, or all zeros), or None when no layer of the spec reads them."""
    count = token_type_count(shapes.infer(spec))
    if count is None:
        return None
    if draw(st.booleans()):
        return np.zeros(ids.shape, dtype=np.int64)
    return np.random.default_rng(draw(st.integers(0, 2**32 - 1))).integers(0, count, ids.shape)
