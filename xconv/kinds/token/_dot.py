"""The numpy reference of DotProductAttention, the attention of three token tensors (queries, keys, values),
forward and backward: a batch (N, L, E) of queries, (N, S, E) of keys and (N, S, Ev) of values, each cut
into heads of consecutive features."""

from __future__ import annotations

from typing import Any

import numpy as np


def weights_shape(q: np.ndarray, k: np.ndarray, heads: int) -> tuple[int, int, int, int]:
    """The shape of the attention weights, (N, heads, L, S)."""
    return (int(q.shape[0]), heads, int(q.shape[1]), int(k.shape[1]))


def head_scale(layer: object, q_features: int) -> float:
    """The scale of the scores: the layer's own, else d ** -0.5 (d: the queries' features per head)."""
    scale = getattr(layer, "scale", None)
    heads = int(getattr(layer, "num_heads", 1))
    return float(scale) if scale is not None else float((q_features // heads) ** -0.5)


def _heads(t: np.ndarray, heads: int) -> np.ndarray:
    n, length, e = t.shape
    return t.reshape(n, length, heads, e // heads).transpose(0, 2, 1, 3)  # (N, heads, L, d)


def _merge(t: np.ndarray) -> np.ndarray:
    n, heads, length, d = t.shape
    return t.transpose(0, 2, 1, 3).reshape(n, length, heads * d)


def bias_index(grid: tuple[int, int], stride: int = 1) -> np.ndarray:
    """The (L, S) int64 index of a learned bias per relative offset (see ``DotProductAttention.bias_grid``):
    keys at the H*W points of the map, queries at every ``stride``-th row and column; entry |dy| * W + |dx|."""
    h, w = grid
    ky, kx = np.divmod(np.arange(h * w), w)
    qy, qx = (a.reshape(-1) for a in np.meshgrid(np.arange(0, h, stride), np.arange(0, w, stride), indexing="ij"))
    index: np.ndarray = np.abs(qy[:, None] - ky[None, :]) * w + np.abs(qx[:, None] - kx[None, :])
    return index.astype(np.int64)


def bias_of(layer: object, params: dict[str, np.ndarray]) -> np.ndarray | None:
    """The (heads, L, S) bias a DotProductAttention adds to its scores (None: it has none)."""
    grid = getattr(layer, "bias_grid", None)
    if grid is None:
        return None
    out: np.ndarray = params["attention_biases"][:, bias_index(grid, int(getattr(layer, "bias_stride", 1)))]
    return out


def bias_table_grad(layer: Any, g_bias: np.ndarray) -> np.ndarray:
    """The gradient of the table ``attention_biases`` from that of the bias it adds, (heads, L, S)."""
    grid = layer.bias_grid
    index = bias_index(grid, int(layer.bias_stride))
    out = np.zeros((g_bias.shape[0], grid[0] * grid[1]), dtype=g_bias.dtype)
    for head in range(g_bias.shape[0]):
        np.add.at(out[head], index, g_bias[head])
    return out


def _weights(q: np.ndarray, k: np.ndarray, scale: float, bias: np.ndarray | None = None) -> np.ndarray:
    scores = np.einsum("nhld,nhsd->nhls", q, k) * scale
    if bias is not None:
        scores = scores + bias[None]
    scores = scores - scores.max(axis=-1, keepdims=True)
    e = np.exp(scores)
    out: np.ndarray = e / e.sum(axis=-1, keepdims=True)
    return out


def forward(
    q: np.ndarray,
    k: np.ndarray,
    v: np.ndarray,
    heads: int,
    scale: float,
    drop: np.ndarray | None = None,
    bias: np.ndarray | None = None,
) -> np.ndarray:
    """``drop``: a keep-mask scaled by 1 / (1 - p) on the weights (training with dropout), or None; ``bias``:
    (heads, L, S) added to the scaled scores, or None."""
    qh, kh, vh = _heads(q, heads), _heads(k, heads), _heads(v, heads)
    a = _weights(qh, kh, scale, bias)
    return _merge(np.einsum("nhls,nhsd->nhld", a if drop is None else a * drop, vh))


def backward(
    q: np.ndarray,
    k: np.ndarray,
    v: np.ndarray,
    heads: int,
    scale: float,
    g: np.ndarray,
    drop: np.ndarray | None = None,
    bias: np.ndarray | None = None,
) -> tuple[list[np.ndarray], np.ndarray]:
    """The gradients of the queries, keys and values for the output's gradient ``g`` (N, L, Ev), with the
    forward's ``drop`` mask and ``bias``; and that of the bias, (heads, L, S)."""
    qh, kh, vh, gh = _heads(q, heads), _heads(k, heads), _heads(v, heads), _heads(g, heads)
    a = _weights(qh, kh, scale, bias)
    gv = np.einsum("nhls,nhld->nhsd", a if drop is None else a * drop, gh)
    ga = np.einsum("nhld,nhsd->nhls", gh, vh)
    ga = ga if drop is None else ga * drop
    g_scores = a * (ga - (ga * a).sum(axis=-1, keepdims=True))  # softmax's Jacobian: the biased scores'
    gs = g_scores * scale
    gq = np.einsum("nhls,nhsd->nhld", gs, kh)
    gk = np.einsum("nhls,nhld->nhsd", gs, qh)
    return [_merge(gq), _merge(gk), _merge(gv)], g_scores.sum(axis=0)


def carried(
    q: np.ndarray,
    k: np.ndarray,
    v: np.ndarray,
    heads: int,
    scale: float,
    sizes: tuple[float, float, float],
    bias: np.ndarray | None = None,
) -> float:
    """The magnitude the output's rounding errors scale with, to first order, from the reference run's
    tensors (``sizes``: the magnitudes the inputs' own errors scale with, cq, ck and cv). A score
    s * sum_d q k is known to s * sum_d (|q| |k| + cq |k| + |q| ck): its terms' size, and the inputs' errors
    carried through the other factor, plus the size of the ``bias`` added to it; a weight a_j whose score moves
    by dT_j moves the output by a_j dT_j (v_j - out); the values' errors pass through as they are."""
    cq, ck, cv = sizes
    qh, kh, vh = (_heads(np.asarray(t, dtype=np.float64), heads) for t in (q, k, v))
    aq, ak = np.abs(qh), np.abs(kh)
    terms = np.einsum("nhld,nhsd->nhls", aq, ak) + cq * ak.sum(-1)[:, :, None, :] + ck * aq.sum(-1)[:, :, :, None]
    terms = terms * scale
    if bias is not None:
        terms = terms + np.abs(np.asarray(bias, dtype=np.float64))[None]
    a = _weights(qh, kh, scale, None if bias is None else np.asarray(bias, dtype=np.float64))
    out = np.einsum("nhls,nhsd->nhld", a, vh)
    spread = np.abs(vh[:, :, None, :, :] - out[:, :, :, None, :]).max(axis=-1)  # |v_j - out_i|, (N, h, L, S)
    moved = (a * terms * spread).sum(axis=-1)
    return float(moved.max(initial=0.0)) + max(float(np.abs(vh).max(initial=0.0)), cv)
