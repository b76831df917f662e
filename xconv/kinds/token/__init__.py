"""Tokens and attention: a map read as tokens (ToTokens) and back (ToMap), token ids looked up as tokens (Embedding), a learned
class token (ClassToken), learned positional and token-type embeddings (PositionEmbedding, TokenTypeEmbedding),
multi-head self-attention (SelfAttention), and the two ways back to features (SelectToken, TokenMean).

A token tensor is (N, L, E): L tokens of E features. Both frameworks lay it out the same way, so nothing is
permuted after a map becomes tokens; the numpy reference uses the same layout. A model whose first layers are
Embeddings takes token ids, integers of shape (N, L).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..._info import LayerInfo, Shape, _Ctx
from ..._layer import Layer
from ..._normalize import as_bool, as_float, as_int
from ...errors import SpecError
from .._numpy import Mode
from .._registry import register


@dataclass(frozen=True, repr=False)
class ToTokens(Layer):
    """A (C, H, W) map read as H*W tokens of C features, row by row: torch's ``x.flatten(2).transpose(1, 2)``,
    Keras' ``Reshape((H * W, C))`` of the NHWC map. Token ``h * W + w`` is pixel (h, w) in both frameworks.

    >>> ToTokens()
    ToTokens()
    """


@dataclass(frozen=True, repr=False)
class ToMap(Layer):
    """H*W tokens of C features read back as a (C, H, W) map, row by row: the inverse of :class:`ToTokens`
    (torch's ``x.transpose(1, 2).reshape(N, C, H, W)``, Keras' ``Reshape((H, W, C))`` of the tokens).

    >>> ToMap(7, 7)
    ToMap(7, 7)
    """

    height: int
    width: int

    _positional = ("height", "width")

    def _validate(self) -> None:
        self._set("height", as_int("ToMap", "height", self.height, minimum=1))
        self._set("width", as_int("ToMap", "width", self.width, minimum=1))


@dataclass(frozen=True, repr=False)
class Embedding(Layer):
    """Token ids looked up in a learned table: ids (L,) -> tokens (L, E), ``weight[ids]`` with ``weight`` of
    shape (num_embeddings, E), as ``nn.Embedding`` and Keras' ``Embedding``. It reads the model's input, which
    is then integer: a batch (N, L) of ids in [0, num_embeddings). ``padding_idx``: that row gets no gradient
    (torch's ``padding_idx``; its value is used as it is).

    >>> Embedding(30522, 768, padding_idx=0)
    Embedding(30522, 768, padding_idx=0)
    """

    num_embeddings: int
    embed_dim: int
    padding_idx: int | None = None

    _positional = ("num_embeddings", "embed_dim")

    def _validate(self) -> None:
        self._set("num_embeddings", as_int("Embedding", "num_embeddings", self.num_embeddings, minimum=1))
        self._set("embed_dim", as_int("Embedding", "embed_dim", self.embed_dim, minimum=1))
        if self.padding_idx is not None:
            index = as_int("Embedding", "padding_idx", self.padding_idx, minimum=0)
            if index >= self.num_embeddings:
                raise SpecError(
                    f"Embedding: padding_idx={index} is not one of the {self.num_embeddings} rows (0 to "
                    f"{self.num_embeddings - 1})"
                )
            self._set("padding_idx", index)


@dataclass(frozen=True, repr=False)
class PaddedPositions(Layer):
    """The positions of the tokens that are not padding, from the token ids: ids (L,) -> ids (L,), the k-th
    token that is not ``padding_idx`` at ``padding_idx + k`` (counted from 1), each padding token at
    ``padding_idx`` itself. RoBERTa's position ids, looked up by an Embedding of at least
    ``L + padding_idx + 1`` rows.

    >>> PaddedPositions(1)
    PaddedPositions(1)
    """

    padding_idx: int

    _positional = ("padding_idx",)

    def _validate(self) -> None:
        self._set("padding_idx", as_int("PaddedPositions", "padding_idx", self.padding_idx, minimum=0))


@dataclass(frozen=True, repr=False)
class TokenTypeEmbedding(Layer):
    """The learned embedding of a token type added to every token, ``weight`` of shape (types, E). With
    ``token_types=False``, every token is of the one type ``token_type``: ``x + weight[token_type]`` (BERT's
    token-type, or segment, embedding when the model is called without token types). With ``token_types=True``
    the model takes the token types beside its token ids, (N, L) integers below ``types``, and each token gets
    its own: ``x + weight[token_types]``; left out, every token is of type 0 (as Hugging Face's
    ``token_type_ids=None``).

    >>> TokenTypeEmbedding(2, 768)
    TokenTypeEmbedding(2, 768)
    >>> TokenTypeEmbedding(2, 768, token_types=True)
    TokenTypeEmbedding(2, 768, token_types=True)
    """

    types: int
    embed_dim: int
    token_type: int = 0
    token_types: bool = False

    _positional = ("types", "embed_dim")

    def _validate(self) -> None:
        me = "TokenTypeEmbedding"
        self._set("types", as_int(me, "types", self.types, minimum=1))
        self._set("embed_dim", as_int(me, "embed_dim", self.embed_dim, minimum=1))
        self._set("token_type", as_int(me, "token_type", self.token_type, minimum=0))
        if self.token_type >= self.types:
            raise SpecError(f"{me}: token_type={self.token_type} is not one of the {self.types} types")
        self._set("token_types", as_bool(me, "token_types", self.token_types))
        if self.token_types and self.token_type:
            raise SpecError(
                f"{me}: token_types=True reads each token's type from the model's token types (type 0 when they "
                f"are left out); token_type={self.token_type} would not be used"
            )


@dataclass(frozen=True, repr=False)
class ClassToken(Layer):
    """``count`` learned tokens put in front of the tokens: (L, E) -> (L + count, E). ``token`` is
    (1, count, E), as ViT's ``class_token`` (count 1) or timm's register tokens. DeiT's class and distillation
    tokens are two of these, the distillation token's first.

    >>> ClassToken(192)
    ClassToken(192)
    >>> ClassToken(192, count=4)
    ClassToken(192, count=4)
    """

    embed_dim: int
    count: int = 1

    _positional = ("embed_dim",)

    def _validate(self) -> None:
        self._set("embed_dim", as_int("ClassToken", "embed_dim", self.embed_dim, minimum=1))
        self._set("count", as_int("ClassToken", "count", self.count, minimum=1))


@dataclass(frozen=True, repr=False)
class PositionEmbedding(Layer):
    """A learned embedding added to each token: ``x + embedding[:, :L]`` with ``embedding`` of shape
    (1, rows, E), as ViT's ``pos_embedding`` (rows = L, the default) or BERT's position embeddings, a table of
    ``rows`` positions of which a sequence of L tokens uses the first L.

    >>> PositionEmbedding(197, 768)
    PositionEmbedding(197, 768)
    >>> PositionEmbedding(128, 768, rows=512)
    PositionEmbedding(128, 768, rows=512)
    """

    length: int
    embed_dim: int
    rows: int | None = None

    _positional = ("length", "embed_dim")

    def _validate(self) -> None:
        self._set("length", as_int("PositionEmbedding", "length", self.length, minimum=1))
        self._set("embed_dim", as_int("PositionEmbedding", "embed_dim", self.embed_dim, minimum=1))
        if self.rows is not None:
            rows = as_int("PositionEmbedding", "rows", self.rows, minimum=1)
            if rows < self.length:
                raise SpecError(
                    f"PositionEmbedding: rows={rows} is fewer than length={self.length}; the table holds a row "
                    "for each position"
                )
            self._set("rows", None if rows == self.length else rows)

    @property
    def table_rows(self) -> int:
        """The rows of the embedding table (``rows``, or ``length``)."""
        return self.length if self.rows is None else self.rows


@dataclass(frozen=True, repr=False)
class SelfAttention(Layer):
    """Multi-head self-attention over the tokens, as ``nn.MultiheadAttention(E, heads, batch_first=True)``
    called with ``(x, x, x)``: q, k, v = x @ in_proj_weight.T + in_proj_bias, split into ``num_heads`` heads of
    E / heads features (q, k and v each head by head); per head softmax(q k^T / sqrt(head_dim)) v; the heads
    joined back in order, then ``out_proj``. Weights: ``in_proj_weight`` (3E, E) (rows q, k, v),
    ``in_proj_bias`` (3E,) with ``qkv_bias``, ``out_proj.weight`` (E, E), ``out_proj.bias`` (E,) with
    ``proj_bias``. ``dropout`` drops attention weights in training. ``scale`` multiplies the scores in place of
    head_dim ** -0.5 (Keras' ``MultiHeadAttention`` imports with that number rounded to float32, as it computes
    it). ``projection=False``: the joined heads are the output, with no ``out_proj`` (BERT's self-attention,
    whose output projection is a Linear of its own); ``proj_bias`` is then False. ``padding_mask=True``: the
    model takes a padding mask beside its token ids, (N, L) with 1 for a token and 0 for padding (all ones when
    not given), and no query attends to a padding key (its score is -inf before the softmax, as a boolean
    mask in ``F.scaled_dot_product_attention``; every sequence needs one token).

    >>> SelfAttention(192, 3)
    SelfAttention(192, 3)
    >>> SelfAttention(768, 12, projection=False)
    SelfAttention(768, 12, proj_bias=False, projection=False)
    """

    embed_dim: int
    num_heads: int
    qkv_bias: bool = True
    proj_bias: bool = True
    dropout: float = 0.0
    scale: float | None = None
    projection: bool = True
    padding_mask: bool = False

    _positional = ("embed_dim", "num_heads")

    def _validate(self) -> None:
        me = "SelfAttention"
        self._set("embed_dim", as_int(me, "embed_dim", self.embed_dim, minimum=1))
        self._set("num_heads", as_int(me, "num_heads", self.num_heads, minimum=1))
        if self.embed_dim % self.num_heads:
            raise SpecError(
                f"SelfAttention: embed_dim={self.embed_dim} is not divisible by num_heads={self.num_heads}; each "
                "head takes embed_dim / num_heads features"
            )
        self._set("qkv_bias", as_bool(me, "qkv_bias", self.qkv_bias))
        self._set("projection", as_bool(me, "projection", self.projection))
        self._set("padding_mask", as_bool(me, "padding_mask", self.padding_mask))
        self._set("proj_bias", as_bool(me, "proj_bias", self.proj_bias) and self.projection)
        self._set("dropout", as_float(me, "dropout", self.dropout, low=0.0, high=1.0, high_open=True))
        if self.scale is not None:
            self._set("scale", as_float(me, "scale", self.scale, low=0.0, low_open=True))

    @property
    def head_dim(self) -> int:
        return self.embed_dim // self.num_heads

    @property
    def score_scale(self) -> float:
        """What the scores q k^T are multiplied by."""
        return 1.0 / math.sqrt(self.head_dim) if self.scale is None else self.scale


@dataclass(frozen=True, repr=False)
class SelectToken(Layer):
    """One token's features: (L, E) -> (E,), ``x[:, index]`` (ViT's class token is ``index=0``).

    >>> SelectToken()
    SelectToken()
    """

    index: int = 0

    def _validate(self) -> None:
        self._set("index", as_int("SelectToken", "index", self.index, minimum=0))


@dataclass(frozen=True, repr=False)
class TokenMean(Layer):
    """The mean over the tokens: (L, E) -> (E,), ``x.mean(1)``; Keras' ``GlobalAveragePooling1D``.

    >>> TokenMean()
    TokenMean()
    """


def _tokens(ctx: _Ctx, what: str) -> tuple[int, int]:
    if len(ctx.shape) != 2:
        raise ctx.error(f"expects a token input (tokens, features) but its input has shape {ctx.shape}; {what}")
    return ctx.shape[0], ctx.shape[1]


def _features(ctx: _Ctx, layer: Any, expected: int) -> tuple[int, int]:
    length, e = _tokens(ctx, "read a map as tokens with ToTokens() first")
    if e != expected:
        raise ctx.error(f"embed_dim={expected} but its input has {e} features per token")
    return length, e


def _to_tokens_shape(ctx: _Ctx, layer: ToTokens, source: Shape | None) -> LayerInfo:
    c, h, w = ctx.need_map()
    return LayerInfo(ctx.index, layer, ctx.shape, (h * w, c), {})


def _to_map_shape(ctx: _Ctx, layer: ToMap, source: Shape | None) -> LayerInfo:
    length, c = _tokens(ctx, "ToMap reads tokens back as a map")
    if length != layer.height * layer.width:
        raise ctx.error(f"{length} tokens are not a {layer.height}x{layer.width} map")
    return LayerInfo(ctx.index, layer, ctx.shape, (c, layer.height, layer.width), {})


def _embedding_shape(ctx: _Ctx, layer: Embedding, source: Shape | None) -> LayerInfo:
    if len(ctx.shape) != 1:
        raise ctx.error(f"reads token ids of shape (L,) but its input has shape {ctx.shape}")
    params: dict[str, Shape] = {"weight": (layer.num_embeddings, layer.embed_dim)}
    return LayerInfo(ctx.index, layer, ctx.shape, (ctx.shape[0], layer.embed_dim), params)


def _positions_shape(ctx: _Ctx, layer: PaddedPositions, source: Shape | None) -> LayerInfo:
    if len(ctx.shape) != 1:
        raise ctx.error(f"reads token ids of shape (L,) but its input has shape {ctx.shape}")
    return LayerInfo(ctx.index, layer, ctx.shape, ctx.shape, {})


def _padded_positions(ids: np.ndarray, padding_idx: int) -> np.ndarray:
    tokens = (ids != padding_idx).astype(np.int64)
    positions: np.ndarray = np.cumsum(tokens, axis=1) * tokens + padding_idx
    return positions


def _token_type_shape(ctx: _Ctx, layer: TokenTypeEmbedding, source: Shape | None) -> LayerInfo:
    _features(ctx, layer, layer.embed_dim)
    return LayerInfo(ctx.index, layer, ctx.shape, ctx.shape, {"weight": (layer.types, layer.embed_dim)})


def _class_token_shape(ctx: _Ctx, layer: ClassToken, source: Shape | None) -> LayerInfo:
    length, e = _features(ctx, layer, layer.embed_dim)
    return LayerInfo(ctx.index, layer, ctx.shape, (length + layer.count, e), {"token": (1, layer.count, e)})


def _position_shape(ctx: _Ctx, layer: PositionEmbedding, source: Shape | None) -> LayerInfo:
    length, e = _features(ctx, layer, layer.embed_dim)
    if length != layer.length:
        raise ctx.error(f"length={layer.length} but its input has {length} tokens")
    return LayerInfo(ctx.index, layer, ctx.shape, ctx.shape, {"embedding": (1, layer.table_rows, e)})


def _attention_shape(ctx: _Ctx, layer: SelfAttention, source: Shape | None) -> LayerInfo:
    _, e = _features(ctx, layer, layer.embed_dim)
    params: dict[str, Shape] = {"in_proj_weight": (3 * e, e)}
    if layer.qkv_bias:
        params["in_proj_bias"] = (3 * e,)
    if layer.projection:
        params["out_proj.weight"] = (e, e)
    if layer.proj_bias:
        params["out_proj.bias"] = (e,)
    return LayerInfo(ctx.index, layer, ctx.shape, ctx.shape, params)


def _select_shape(ctx: _Ctx, layer: SelectToken, source: Shape | None) -> LayerInfo:
    length, e = _tokens(ctx, "SelectToken picks one of its tokens")
    if layer.index >= length:
        raise ctx.error(f"index={layer.index} but its input has {length} tokens")
    return LayerInfo(ctx.index, layer, ctx.shape, (e,), {})


def _mean_shape(ctx: _Ctx, layer: TokenMean, source: Shape | None) -> LayerInfo:
    _, e = _tokens(ctx, "TokenMean averages its tokens")
    return LayerInfo(ctx.index, layer, ctx.shape, (e,), {})


# ---- numpy reference (tokens are (N, L, E)) ----


def _to_tokens_forward(info: LayerInfo, p: Any, x: np.ndarray, mode: Mode) -> np.ndarray:
    n, c = x.shape[:2]
    return np.ascontiguousarray(x.reshape(n, c, -1).transpose(0, 2, 1))


def _to_tokens_backward(info: LayerInfo, p: Any, x: np.ndarray, go: np.ndarray, mode: Mode) -> Any:
    return np.ascontiguousarray(go.transpose(0, 2, 1)).reshape(x.shape), {}


def _to_map_forward(info: LayerInfo, p: Any, x: np.ndarray, mode: Mode) -> np.ndarray:
    return np.ascontiguousarray(x.transpose(0, 2, 1)).reshape(x.shape[0], x.shape[2], *info.output_shape[1:])


def _to_map_backward(info: LayerInfo, p: Any, x: np.ndarray, go: np.ndarray, mode: Mode) -> Any:
    return np.ascontiguousarray(go.reshape(go.shape[0], go.shape[1], -1).transpose(0, 2, 1)), {}


def _class_token_forward(info: LayerInfo, p: dict[str, np.ndarray], x: np.ndarray, mode: Mode) -> np.ndarray:
    token = np.broadcast_to(p["token"], (x.shape[0], *p["token"].shape[1:]))
    return np.concatenate([token, x], axis=1)


def _class_token_backward(info: LayerInfo, p: Any, x: np.ndarray, go: np.ndarray, mode: Mode) -> Any:
    t = info.layer.count  # type: ignore[attr-defined]
    return go[:, t:], {"token": go[:, :t].sum(axis=0, keepdims=True)}


def _heads(t: np.ndarray, heads: int) -> np.ndarray:
    """(N, L, E) -> (N, heads, L, E / heads)."""
    n, length, e = t.shape
    return t.reshape(n, length, heads, e // heads).transpose(0, 2, 1, 3)


def _joined(t: np.ndarray) -> np.ndarray:
    """(N, heads, L, D) -> (N, L, heads * D)."""
    n, h, length, d = t.shape
    return t.transpose(0, 2, 1, 3).reshape(n, length, h * d)


def _attention_parts(info: LayerInfo, p: dict[str, np.ndarray], x: np.ndarray, mode: Mode) -> dict[str, Any]:
    layer: SelfAttention = info.layer  # type: ignore[assignment]
    e, h = layer.embed_dim, layer.num_heads
    qkv = x @ p["in_proj_weight"].T
    if "in_proj_bias" in p:
        qkv = qkv + p["in_proj_bias"]
    q, k, v = (_heads(qkv[..., i * e : (i + 1) * e], h) for i in range(3))
    scale = layer.score_scale
    scores = q @ k.transpose(0, 1, 3, 2) * scale
    keep = mode.padding_mask if layer.padding_mask else None
    if keep is not None:  # no query attends to a padding key
        scores = np.where(keep[:, None, None, :] != 0, scores, -np.inf)
    ex = np.exp(scores - scores.max(axis=-1, keepdims=True))
    weights = ex / ex.sum(axis=-1, keepdims=True)
    drop = mode.mask(weights.shape, layer.dropout, x.dtype) if mode.training and layer.dropout > 0 else None
    kept = weights if drop is None else weights * drop
    heads = kept @ v
    return {"q": q, "k": k, "v": v, "scale": scale, "weights": weights, "drop": drop, "kept": kept, "o": _joined(heads)}


def _attention_forward(info: LayerInfo, p: dict[str, np.ndarray], x: np.ndarray, mode: Mode) -> np.ndarray:
    o: np.ndarray = _attention_parts(info, p, x, mode)["o"]
    if "out_proj.weight" not in p:
        return o
    y: np.ndarray = o @ p["out_proj.weight"].T
    return y + p["out_proj.bias"] if "out_proj.bias" in p else y


def _attention_backward(info: LayerInfo, p: dict[str, np.ndarray], x: np.ndarray, go: np.ndarray, mode: Mode) -> Any:
    layer: SelfAttention = info.layer  # type: ignore[assignment]
    a = _attention_parts(info, p, x, mode)
    grads = {}
    if "out_proj.bias" in p:
        grads["out_proj.bias"] = go.sum(axis=(0, 1))
    if "out_proj.weight" in p:
        grads["out_proj.weight"] = np.einsum("nlo,nli->oi", go, a["o"])
        go = go @ p["out_proj.weight"]
    g_heads = _heads(go, layer.num_heads)
    g_kept = g_heads @ a["v"].transpose(0, 1, 3, 2)
    g_v = a["kept"].transpose(0, 1, 3, 2) @ g_heads
    g_w = g_kept if a["drop"] is None else g_kept * a["drop"]
    w = a["weights"]
    g_scores = w * (g_w - (g_w * w).sum(axis=-1, keepdims=True)) * a["scale"]
    g_q = g_scores @ a["k"]
    g_k = g_scores.transpose(0, 1, 3, 2) @ a["q"]
    g_qkv = np.concatenate([_joined(g_q), _joined(g_k), _joined(g_v)], axis=-1)
    grads["in_proj_weight"] = np.einsum("nlo,nli->oi", g_qkv, x)
    if "in_proj_bias" in p:
        grads["in_proj_bias"] = g_qkv.sum(axis=(0, 1))
    return g_qkv @ p["in_proj_weight"], grads


def _embedding_backward(info: LayerInfo, p: dict[str, np.ndarray], x: np.ndarray, go: np.ndarray, mode: Mode) -> Any:
    layer: Embedding = info.layer  # type: ignore[assignment]
    grad = np.zeros_like(p["weight"])
    np.add.at(grad, x.reshape(-1), go.reshape(-1, go.shape[-1]))
    if layer.padding_idx is not None:
        grad[layer.padding_idx] = 0
    return None, {"weight": grad}  # (no gradient for integer ids)


def _position_forward(info: LayerInfo, p: dict[str, np.ndarray], x: np.ndarray, mode: Mode) -> np.ndarray:
    y: np.ndarray = x + p["embedding"][:, : x.shape[1]]
    return y


def _position_backward(info: LayerInfo, p: dict[str, np.ndarray], x: np.ndarray, go: np.ndarray, mode: Mode) -> Any:
    grad = np.zeros_like(p["embedding"])
    grad[:, : x.shape[1]] = go.sum(axis=0, keepdims=True)
    return go, {"embedding": grad}


def _types_of(info: LayerInfo, mode: Mode) -> Any:
    """The type of every token: the model's token types (N, L), or the layer's one type."""
    layer: TokenTypeEmbedding = info.layer  # type: ignore[assignment]
    types = mode.token_types if layer.token_types else None
    return layer.token_type if types is None else types


def _token_type_backward(info: LayerInfo, p: dict[str, np.ndarray], x: np.ndarray, go: np.ndarray, mode: Mode) -> Any:
    grad = np.zeros_like(p["weight"])
    types = _types_of(info, mode)
    if isinstance(types, int):
        grad[types] = go.sum(axis=(0, 1))
    else:
        np.add.at(grad, types.reshape(-1), go.reshape(-1, go.shape[-1]))
    return go, {"weight": grad}


def _select_backward(info: LayerInfo, p: Any, x: np.ndarray, go: np.ndarray, mode: Mode) -> Any:
    gx = np.zeros_like(x)
    gx[:, info.layer.index] = go  # type: ignore[attr-defined]
    return gx, {}


def _mean_backward(info: LayerInfo, p: Any, x: np.ndarray, go: np.ndarray, mode: Mode) -> Any:
    return np.broadcast_to(go[:, None, :] / x.shape[1], x.shape).copy(), {}


_RULES: dict[type, Any] = {
    ToTokens: _to_tokens_shape,
    ToMap: _to_map_shape,
    Embedding: _embedding_shape,
    PaddedPositions: _positions_shape,
    TokenTypeEmbedding: _token_type_shape,
    ClassToken: _class_token_shape,
    PositionEmbedding: _position_shape,
    SelfAttention: _attention_shape,
    SelectToken: _select_shape,
    TokenMean: _mean_shape,
}


_FORWARD: dict[type, Any] = {
    ToTokens: _to_tokens_forward,
    ToMap: _to_map_forward,
    Embedding: lambda info, p, x, mode: p["weight"][x],
    PaddedPositions: lambda info, p, x, mode: _padded_positions(x, info.layer.padding_idx),
    TokenTypeEmbedding: lambda info, p, x, mode: x + p["weight"][_types_of(info, mode)],
    ClassToken: _class_token_forward,
    PositionEmbedding: _position_forward,
    SelfAttention: _attention_forward,
    SelectToken: lambda info, p, x, mode: np.ascontiguousarray(x[:, info.layer.index]),
    TokenMean: lambda info, p, x, mode: x.mean(axis=1),
}


_BACKWARD: dict[type, Any] = {
    ToTokens: _to_tokens_backward,
    ToMap: _to_map_backward,
    Embedding: _embedding_backward,
    PaddedPositions: lambda info, p, x, go, mode: (None, {}),  # (integers: no gradient)
    TokenTypeEmbedding: _token_type_backward,
    ClassToken: _class_token_backward,
    PositionEmbedding: _position_backward,
    SelfAttention: _attention_backward,
    SelectToken: _select_backward,
    TokenMean: _mean_backward,
}


for _kind, _rule in _RULES.items():
    tokens = _kind not in (ToTokens, Embedding, PaddedPositions)
    ids = _kind in (Embedding, PaddedPositions)
    register(
        _kind, _rule, _FORWARD[_kind], _BACKWARD[_kind], tokens=tokens, ids=ids, makes_ids=_kind is PaddedPositions
    )
