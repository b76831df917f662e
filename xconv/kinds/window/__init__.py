"""Windowed attention on maps (Swin): multi-head self-attention within non-overlapping windows of a (C, H, W) map,
optionally shifted, with a learned relative position bias (WindowAttention); and the 2x2 patch merging between
Swin's stages (PatchMerging).

Both act on a map: each pixel is a token of C features. In torch the built modules take NCHW maps, in Keras
NHWC; the windows, their order and the features are the same in both. The fixed data (the relative position
index, the shift mask) is computed from the window and the map's size: a buffer in torch, a constant in Keras,
never a weight.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ..._info import LayerInfo, Shape, _Ctx
from ..._layer import Layer
from ..._normalize import Pair, as_bool, as_float, as_int, as_pair
from ...errors import SpecError
from .._numpy import Mode
from .._registry import register

#: the score added between tokens of different regions of a shifted window (Swin's value, not -inf)
SHIFT_MASK = -100.0


@dataclass(frozen=True, repr=False)
class WindowAttention(Layer):
    """Swin's (shifted) window attention on a (C, H, W) map, as torchvision's ``shifted_window_attention``:

    1. the map is padded with zeros at the bottom and right to multiples of the window (``window_size``);
    2. rolled by minus ``shift_size`` (an axis whose window covers the padded map is not shifted);
    3. cut into windows, row-major over the windows and within each, each window of wh*ww tokens;
    4. per window, multi-head self-attention: ``qkv.weight`` (3C, C) (rows q, k, v, each head by head),
       ``qkv.bias``, the scores q k^T * head_dim ** -0.5 plus the relative position bias
       ``relative_position_bias_table[index]`` per head (the table has (2wh-1)(2ww-1) rows, one column per
       head; the index is Swin's, fixed), plus, when shifted, -100 between tokens from different regions of the
       rolled map; softmax (``dropout`` drops attention weights in training); the heads joined, then
       ``proj.weight`` (C, C), ``proj.bias``;
    5. the windows put back, rolled by ``shift_size``, and cropped to (H, W).

    ``state_index=True``: the index is in the weights too, as the buffer ``relative_position_index`` of
    (wh*ww)**2 int64 entries (torchvision keeps it in its state_dict); its one accepted value is Swin's.

    ``roll_first=True`` is timm's order: the map is rolled before it is padded (and rolled back after the
    crop); the shift mask is still that of the padded map's regions. The two orders differ only where the map
    is padded and shifted.

    ``grid=True`` is MaxViT's grid attention: the map of a whole number of windows, not padded or shifted, is
    cut into a grid of (H/wh, W/ww) cells, and window (i, j) holds the pixels (a * H/wh + i, b * W/ww + j), its
    tokens in (a, b) order: wh*ww tokens spread over the whole map. ``scale`` multiplies the scores in place of
    head_dim ** -0.5 (MaxViT's is embed_dim ** -0.5).

    ``cosine=True`` is Swin V2's attention: the scores are the cosines of q and k (each divided by
    max(norm, 1e-12)) times exp(min(``logit_scale``, log 100)) per head (``logit_scale`` (heads, 1, 1)), the
    k third of ``qkv.bias`` is not used (torchvision zeroes it), and the bias table is computed: 16 *
    sigmoid(``cpb_mlp``), an MLP of ``cpb_hidden`` features (``cpb_mlp.0`` a Linear with bias, ReLU, ``cpb_mlp.2``
    a Linear to the heads without) on the buffer ``relative_coords_table`` (1, 2wh-1, 2ww-1, 2) of the
    log-spaced offsets (a buffer of the weights, not recomputed: its float32 logarithms differ by an ulp
    between libraries).

    ``position_bias=False``: no relative position bias (and no table): Twins' locally-grouped attention.

    >>> WindowAttention(96, 3, 7)
    WindowAttention(96, 3, 7)
    >>> WindowAttention(96, 3, (7, 5), shift_size=(3, 2))
    WindowAttention(96, 3, (7, 5), shift_size=(3, 2))
    """

    embed_dim: int
    num_heads: int
    window_size: Pair
    shift_size: Pair = (0, 0)
    qkv_bias: bool = True
    proj_bias: bool = True
    dropout: float = 0.0
    state_index: bool = False
    cosine: bool = False
    cpb_hidden: int = 512
    grid: bool = False
    scale: float | None = None
    roll_first: bool = False
    position_bias: bool = True

    _positional = ("embed_dim", "num_heads", "window_size")

    def _validate(self) -> None:
        me = "WindowAttention"
        self._set("embed_dim", as_int(me, "embed_dim", self.embed_dim, minimum=1))
        self._set("num_heads", as_int(me, "num_heads", self.num_heads, minimum=1))
        if self.embed_dim % self.num_heads:
            raise SpecError(
                f"{me}: embed_dim={self.embed_dim} is not divisible by num_heads={self.num_heads}; each head takes "
                "embed_dim / num_heads features"
            )
        self._set("window_size", as_pair(me, "window_size", self.window_size, minimum=1))
        self._set("shift_size", as_pair(me, "shift_size", self.shift_size, minimum=0))
        for axis in (0, 1):
            if self.shift_size[axis] >= self.window_size[axis]:
                raise SpecError(
                    f"{me}: shift_size={self.shift_size} must be smaller than window_size={self.window_size} "
                    "on each axis"
                )
        self._set("qkv_bias", as_bool(me, "qkv_bias", self.qkv_bias))
        self._set("proj_bias", as_bool(me, "proj_bias", self.proj_bias))
        self._set("dropout", as_float(me, "dropout", self.dropout, low=0.0, high=1.0, high_open=True))
        self._set("state_index", as_bool(me, "state_index", self.state_index))
        self._set("cosine", as_bool(me, "cosine", self.cosine))
        self._set("cpb_hidden", as_int(me, "cpb_hidden", self.cpb_hidden, minimum=1))
        self._set("grid", as_bool(me, "grid", self.grid))
        self._set("roll_first", as_bool(me, "roll_first", self.roll_first))
        self._set("position_bias", as_bool(me, "position_bias", self.position_bias))
        if not self.position_bias and (self.cosine or self.state_index):
            raise SpecError(
                f"{me}: position_bias=False (no relative position bias) takes neither cosine=True nor "
                "state_index=True, which are about that bias"
            )
        if self.grid and any(self.shift_size):
            raise SpecError(
                f"{me}: grid=True takes no shift_size (its windows span the map). Received: {self.shift_size}"
            )
        if self.scale is not None:
            self._set("scale", as_float(me, "scale", self.scale, low=0.0, low_open=True))
        if self.cosine and self.scale is not None:
            raise SpecError(f"{me}: cosine=True scales its scores by its logit scale; scale must be None")

    @property
    def head_dim(self) -> int:
        return self.embed_dim // self.num_heads

    @property
    def score_scale(self) -> float:
        """What the scores q k^T are multiplied by (without ``cosine``)."""
        return self.head_dim**-0.5 if self.scale is None else self.scale

    @property
    def table_rows(self) -> int:
        wh, ww = self.window_size
        return (2 * wh - 1) * (2 * ww - 1)


@dataclass(frozen=True, repr=False)
class PatchMerging(Layer):
    """Swin's patch merging: a (C, H, W) map padded with zeros at the bottom and right to even sizes, its 2x2
    neighbourhoods read as 4C features in Swin's order (the pixels (0, 0), (1, 0), (0, 1), (1, 1) of each, as
    (row, column) offsets, each with its C channels), then a LayerNorm (``norm.weight``, ``norm.bias``, eps
    ``eps``) and a Linear without bias (``reduction.weight`` (out_dim, 4C)): a (out_dim, H/2, W/2) map
    (rounded up). ``norm_first=False``: the Linear first, then the LayerNorm over out_dim features (Swin V2).

    >>> PatchMerging(96)
    PatchMerging(96)
    """

    dim: int
    out_dim: int | None = None
    eps: float = 1e-5
    norm_first: bool = True

    _positional = ("dim",)

    def _validate(self) -> None:
        me = "PatchMerging"
        self._set("dim", as_int(me, "dim", self.dim, minimum=1))
        if self.out_dim is not None:
            self._set("out_dim", as_int(me, "out_dim", self.out_dim, minimum=1))
        self._set("eps", as_float(me, "eps", self.eps, low=0.0, low_open=True))
        self._set("norm_first", as_bool(me, "norm_first", self.norm_first))

    @property
    def features(self) -> int:
        """The output's channels (``out_dim``, else 2 * dim)."""
        return 2 * self.dim if self.out_dim is None else self.out_dim


# ---- fixed data: the relative position index, the geometry of the windows, the shift mask ----


def relative_position_index(window: tuple[int, int]) -> np.ndarray:
    """Swin's index into the bias table, (wh*ww)**2 entries: for tokens i, j of a window (row-major), the row
    of their offset (dh, dw): (dh + wh - 1) * (2ww - 1) + dw + ww - 1."""
    wh, ww = window
    rows, cols = np.meshgrid(np.arange(wh), np.arange(ww), indexing="ij")
    r, c = rows.reshape(-1), cols.reshape(-1)
    dh = r[:, None] - r[None, :] + wh - 1
    dw = c[:, None] - c[None, :] + ww - 1
    out: np.ndarray = (dh * (2 * ww - 1) + dw).reshape(-1).astype(np.int64)
    return out


def geometry(layer: WindowAttention, height: int, width: int) -> tuple[int, int, int, int]:
    """(padded H, padded W, shift on rows, shift on columns) for a map of this size: no shift on an axis whose
    window covers the padded map."""
    (wh, ww), (sh, sw) = layer.window_size, layer.shift_size
    ph, pw = -(-height // wh) * wh, -(-width // ww) * ww
    return ph, pw, 0 if wh >= ph else sh, 0 if ww >= pw else sw


def shift_mask(layer: WindowAttention, height: int, width: int) -> np.ndarray | None:
    """The additive mask of the shifted windows, (windows, N, N): 0 between tokens of one region of the rolled
    map, -100 between regions; None when nothing is shifted. The regions are Swin's: the slices
    [0, -w), [-w, -s), [-s, end) on each axis, labelled in order (a later slice overwrites an earlier one)."""
    ph, pw, sh, sw = geometry(layer, height, width)
    if sh == 0 and sw == 0:
        return None
    wh, ww = layer.window_size
    regions = np.zeros((ph, pw))
    count = 0
    for hs in (slice(0, -wh), slice(-wh, -sh), slice(-sh, None)):
        for ws in (slice(0, -ww), slice(-ww, -sw), slice(-sw, None)):
            regions[hs, ws] = count
            count += 1
    ids = partition(regions[None, :, :, None], layer.window_size)[..., 0]  # (windows, N)
    out: np.ndarray = np.where(ids[:, None, :] != ids[:, :, None], SHIFT_MASK, 0.0)
    return out


#: the pixels of a 2x2 neighbourhood as patch merging reads them, (row, column) offsets, in Swin's order
MERGE_ORDER = ((0, 0), (1, 0), (0, 1), (1, 1))

Plan = tuple[tuple[int, int, int, int], tuple[int, ...]]


def partition_plan(height: int, width: int, window: tuple[int, int], grid: bool = False) -> tuple[Plan, Plan]:
    """How an (N, H, W, C) map of whole windows becomes windows of tokens and back, for every framework: the
    map viewed as (N, *view, C) and permuted by ``perm`` is (N, windows (2 axes), tokens (2 axes), C), read as
    (N * windows, wh*ww, C); the windows viewed so and permuted by the second ``perm`` are the map again, read
    as (N, H, W, C). Windows row-major, tokens row-major within each; ``grid``: window (i, j) holds the pixels
    (a * H/wh + i, b * W/ww + j), its tokens in (a, b) order. Returns ((view, perm) in, (view, perm) back)."""
    wh, ww = window
    rows, cols = height // wh, width // ww
    if grid:
        return ((wh, rows, ww, cols), (0, 2, 4, 1, 3, 5)), ((rows, cols, wh, ww), (0, 3, 1, 4, 2, 5))
    return ((rows, wh, cols, ww), (0, 1, 3, 2, 4, 5)), ((rows, cols, wh, ww), (0, 1, 3, 2, 4, 5))


def partition(x: np.ndarray, window: tuple[int, int], grid: bool = False) -> np.ndarray:
    """(N, H, W, C) -> (N * windows, wh*ww, C), as :func:`partition_plan` says."""
    _, h, w, c = x.shape
    (view, perm), _ = partition_plan(h, w, window, grid)
    return x.reshape(-1, *view, c).transpose(perm).reshape(-1, window[0] * window[1], c)


def reverse(t: np.ndarray, b: int, h: int, w: int, window: tuple[int, int], grid: bool = False) -> np.ndarray:
    """The inverse of :func:`partition`: (N * windows, wh*ww, C) -> (N, H, W, C)."""
    _, (view, perm) = partition_plan(h, w, window, grid)
    c = t.shape[-1]
    return t.reshape(-1, *view, c).transpose(perm).reshape(b, h, w, c)


def _shape(ctx: _Ctx, layer: WindowAttention, source: Shape | None) -> LayerInfo:
    c, h, w = ctx.need_map()
    if c != layer.embed_dim:
        raise ctx.error(f"embed_dim={layer.embed_dim} but its input has {c} channels")
    if layer.grid and (h % layer.window_size[0] or w % layer.window_size[1]):
        raise ctx.error(f"grid=True needs a map of whole windows {layer.window_size}; its input is {h}x{w}")
    params: dict[str, Shape] = {"qkv.weight": (3 * c, c)}
    if layer.qkv_bias:
        params["qkv.bias"] = (3 * c,)
    params["proj.weight"] = (c, c)
    if layer.proj_bias:
        params["proj.bias"] = (c,)
    buffers: tuple[str, ...] = ()
    if layer.cosine:
        (wh, ww), hidden = layer.window_size, layer.cpb_hidden
        params["logit_scale"] = (layer.num_heads, 1, 1)
        params["cpb_mlp.0.weight"], params["cpb_mlp.0.bias"] = (hidden, 2), (hidden,)
        params["cpb_mlp.2.weight"] = (layer.num_heads, hidden)
        params["relative_coords_table"] = (1, 2 * wh - 1, 2 * ww - 1, 2)
        buffers = ("relative_coords_table",)
    elif layer.position_bias:
        params["relative_position_bias_table"] = (layer.table_rows, layer.num_heads)
    fixed: tuple[str, ...] = ()
    if layer.state_index:
        n = layer.window_size[0] * layer.window_size[1]
        params["relative_position_index"] = (n * n,)
        fixed = ("relative_position_index",)
    return LayerInfo(ctx.index, layer, ctx.shape, ctx.shape, params, buffers=(*buffers, *fixed), fixed=fixed)


def _merging_shape(ctx: _Ctx, layer: PatchMerging, source: Shape | None) -> LayerInfo:
    c, h, w = ctx.need_map()
    if c != layer.dim:
        raise ctx.error(f"dim={layer.dim} but its input has {c} channels")
    out = layer.features
    normed = 4 * c if layer.norm_first else out
    params: dict[str, Shape] = {"reduction.weight": (out, 4 * c), "norm.weight": (normed,), "norm.bias": (normed,)}
    return LayerInfo(ctx.index, layer, ctx.shape, (out, -(-h // 2), -(-w // 2)), params)


# ---- numpy reference (maps are NCHW) ----


def relative_coords(window: tuple[int, int]) -> np.ndarray:
    """Swin V2's ``relative_coords_table`` (1, 2wh-1, 2ww-1, 2): each offset (dh, dw) scaled to [-8, 8] by
    the window, then sign * log2(|x| + 1) / 3 (computed in float64)."""
    wh, ww = window
    h = np.arange(-(wh - 1), wh, dtype=np.float64) / max(wh - 1, 1)
    w = np.arange(-(ww - 1), ww, dtype=np.float64) / max(ww - 1, 1)
    t = np.stack(np.meshgrid(h, w, indexing="ij"), axis=-1)[None] * 8
    out: np.ndarray = np.sign(t) * np.log2(np.abs(t) + 1.0) / 3.0
    return out


def _cpb(p: dict[str, np.ndarray]) -> tuple[np.ndarray, ...]:
    """Swin V2's bias table (rows, heads), 16 * sigmoid(cpb_mlp(coords)), and what its gradient needs."""
    coords = p["relative_coords_table"].reshape(-1, 2)
    a = coords @ p["cpb_mlp.0.weight"].T + p["cpb_mlp.0.bias"]
    hidden = np.maximum(a, 0)
    sig = 1.0 / (1.0 + np.exp(-(hidden @ p["cpb_mlp.2.weight"].T)))
    return 16 * sig, coords, a, hidden, sig


def bias_of(layer: WindowAttention, table: np.ndarray) -> np.ndarray:
    """The relative position bias, (heads, N, N), from the table."""
    n = layer.window_size[0] * layer.window_size[1]
    out: np.ndarray = table[relative_position_index(layer.window_size)].reshape(n, n, -1).transpose(2, 0, 1)
    return out


def _windows_of(layer: WindowAttention, x: np.ndarray) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """The NCHW map as windows of tokens (B * windows, N, C), and the geometry."""
    xh = x.transpose(0, 2, 3, 1)
    _, h, w, _ = xh.shape
    ph, pw, sh, sw = geo = geometry(layer, h, w)
    pad = ((0, 0), (0, ph - h), (0, pw - w), (0, 0))
    if layer.roll_first:
        xp = np.pad(np.roll(xh, (-sh, -sw), axis=(1, 2)), pad)
    else:
        xp = np.roll(np.pad(xh, pad), (-sh, -sw), axis=(1, 2))
    return partition(xp, layer.window_size, layer.grid), geo


def _map_of(layer: WindowAttention, t: np.ndarray, shape: tuple[int, ...], geo: tuple[int, int, int, int]) -> Any:
    """Windows of tokens back to the NCHW map (the inverse of :func:`_windows_of`, cropping)."""
    b, _, h, w = shape
    ph, pw, sh, sw = geo
    xp = reverse(t, b, ph, pw, layer.window_size, layer.grid)
    if layer.roll_first:
        xp = np.roll(xp[:, :h, :w], (sh, sw), axis=(1, 2))
    else:
        xp = np.roll(xp, (sh, sw), axis=(1, 2))[:, :h, :w]
    return np.ascontiguousarray(xp.transpose(0, 3, 1, 2))


def _parts(info: LayerInfo, p: dict[str, np.ndarray], x: np.ndarray, mode: Mode) -> dict[str, Any]:
    layer: WindowAttention = info.layer  # type: ignore[assignment]
    t, geo = _windows_of(layer, x)
    c, heads = layer.embed_dim, layer.num_heads
    qkv = t @ p["qkv.weight"].T
    if "qkv.bias" in p:
        qkv = qkv + _used_bias(layer, p["qkv.bias"])
    bw, n, _ = t.shape
    q, k, v = (qkv[..., i * c : (i + 1) * c].reshape(bw, n, heads, -1).transpose(0, 2, 1, 3) for i in range(3))
    cos: dict[str, Any] = {}
    if layer.cosine:
        qn, kn = (np.maximum(np.sqrt((a**2).sum(axis=-1, keepdims=True)), 1e-12) for a in (q, k))
        cos = {"qn": qn, "kn": kn, "qh": q / qn, "kh": k / kn}
        cos["cos"] = cos["qh"] @ cos["kh"].transpose(0, 1, 3, 2)
        scale = np.exp(np.minimum(p["logit_scale"], np.log(100.0)))[None]  # (1, heads, 1, 1)
        table = _cpb(p)[0]
        scores = cos["cos"] * scale + bias_of(layer, table)
    else:
        scale = layer.score_scale
        scores = q @ k.transpose(0, 1, 3, 2) * scale
        if layer.position_bias:
            scores = scores + bias_of(layer, p["relative_position_bias_table"])
    mask = shift_mask(layer, x.shape[2], x.shape[3])
    if mask is not None:
        windows = mask.shape[0]
        scores = (scores.reshape(-1, windows, heads, n, n) + mask[None, :, None].astype(x.dtype)).reshape(scores.shape)
    ex = np.exp(scores - scores.max(axis=-1, keepdims=True))
    weights = ex / ex.sum(axis=-1, keepdims=True)
    drop = mode.mask(weights.shape, layer.dropout, x.dtype) if mode.training and layer.dropout > 0 else None
    kept = weights if drop is None else weights * drop
    o = (kept @ v).transpose(0, 2, 1, 3).reshape(bw, n, c)
    return {"t": t, "geo": geo, "q": q, "k": k, "v": v, "scale": scale, "weights": weights, "drop": drop,
            "kept": kept, "o": o, **cos}  # fmt: skip


def _used_bias(layer: WindowAttention, bias: np.ndarray) -> np.ndarray:
    """The qkv bias as used: Swin V2's without its k third."""
    if not layer.cosine:
        return bias
    c = layer.embed_dim
    return np.concatenate([bias[:c], np.zeros_like(bias[c : 2 * c]), bias[2 * c :]])


def _forward(info: LayerInfo, p: dict[str, np.ndarray], x: np.ndarray, mode: Mode) -> np.ndarray:
    a = _parts(info, p, x, mode)
    y = a["o"] @ p["proj.weight"].T
    if "proj.bias" in p:
        y = y + p["proj.bias"]
    out: np.ndarray = _map_of(info.layer, y, x.shape, a["geo"])  # type: ignore[arg-type]
    return out


def _backward(info: LayerInfo, p: dict[str, np.ndarray], x: np.ndarray, go: np.ndarray, mode: Mode) -> Any:
    layer: WindowAttention = info.layer  # type: ignore[assignment]
    a = _parts(info, p, x, mode)
    # the gradient of the crop, roll and window reverse: the same steps as the forward's way in
    gy, _ = _windows_of(layer, go)
    grads: dict[str, np.ndarray] = {}
    if "proj.bias" in p:
        grads["proj.bias"] = gy.sum(axis=(0, 1))
    grads["proj.weight"] = np.einsum("bno,bni->oi", gy, a["o"])
    g_o = gy @ p["proj.weight"]
    bw, n, c = g_o.shape
    g_heads = g_o.reshape(bw, n, layer.num_heads, -1).transpose(0, 2, 1, 3)
    g_kept = g_heads @ a["v"].transpose(0, 1, 3, 2)
    g_v = a["kept"].transpose(0, 1, 3, 2) @ g_heads
    g_w = g_kept if a["drop"] is None else g_kept * a["drop"]
    w = a["weights"]
    g_scores = w * (g_w - (g_w * w).sum(axis=-1, keepdims=True))
    g_bias = g_scores.sum(axis=0).transpose(1, 2, 0).reshape(n * n, -1)  # (N*N, heads)
    rows = (2 * layer.window_size[0] - 1) * (2 * layer.window_size[1] - 1)
    g_table = np.zeros((rows, layer.num_heads), dtype=g_bias.dtype)
    np.add.at(g_table, relative_position_index(layer.window_size), g_bias)
    if layer.cosine:
        grads.update(_cosine_grads(p, a, g_scores, g_table))
        g_qh, g_kh = g_scores @ a["kh"] * a["scale"], g_scores.transpose(0, 1, 3, 2) @ a["qh"] * a["scale"]
        g_q = _unnormalized(g_qh, a["qh"], a["qn"])
        g_k = _unnormalized(g_kh, a["kh"], a["kn"])
    else:
        if layer.position_bias:
            grads["relative_position_bias_table"] = g_table
        g_q = g_scores @ a["k"] * a["scale"]
        g_k = g_scores.transpose(0, 1, 3, 2) @ a["q"] * a["scale"]
    joined = [g.transpose(0, 2, 1, 3).reshape(bw, n, c) for g in (g_q, g_k, g_v)]
    g_qkv = np.concatenate(joined, axis=-1)
    grads["qkv.weight"] = np.einsum("bno,bni->oi", g_qkv, a["t"])
    if "qkv.bias" in p:
        g_b = g_qkv.sum(axis=(0, 1))
        grads["qkv.bias"] = np.concatenate([g_b[:c], 0 * g_b[c : 2 * c], g_b[2 * c :]]) if layer.cosine else g_b
    g_t = g_qkv @ p["qkv.weight"]
    # the gradient of the partition, roll and pad: the window reverse, the roll back and the crop
    return _map_of(layer, g_t, x.shape, a["geo"]), grads


def _unnormalized(g: np.ndarray, unit: np.ndarray, norm: np.ndarray) -> np.ndarray:
    """The gradient of x / max(|x|, 1e-12) at x, from the gradient ``g`` of that unit vector."""
    radial = unit * (g * unit).sum(axis=-1, keepdims=True)
    out: np.ndarray = np.where(norm > 1e-12, (g - radial) / norm, g / norm)
    return out


def _cosine_grads(p: dict[str, np.ndarray], a: dict[str, Any], g_scores: np.ndarray, g_table: np.ndarray) -> Any:
    """Swin V2's logit scale and position-bias MLP gradients."""
    logit = p["logit_scale"]
    g_scale = (g_scores * a["cos"]).sum(axis=(0, 2, 3)).reshape(logit.shape)
    grads = {"logit_scale": np.where(logit <= np.log(100.0), g_scale * a["scale"][0], 0.0)}
    _, coords, pre, hidden, sig = _cpb(p)
    g_z = g_table * 16 * sig * (1 - sig)
    grads["cpb_mlp.2.weight"] = g_z.T @ hidden
    g_pre = (g_z @ p["cpb_mlp.2.weight"]) * (pre > 0)
    grads["cpb_mlp.0.weight"], grads["cpb_mlp.0.bias"] = g_pre.T @ coords, g_pre.sum(axis=0)
    return grads


def _merged(x: np.ndarray) -> np.ndarray:
    """NCHW -> the 2x2 neighbourhoods as (B, H/2, W/2, 4C), padded to even sizes, in Swin's order."""
    xh = x.transpose(0, 2, 3, 1)
    _, h, w, _ = xh.shape
    xp = np.pad(xh, ((0, 0), (0, h % 2), (0, w % 2), (0, 0)))
    return np.concatenate([xp[:, r::2, c::2] for r, c in MERGE_ORDER], axis=-1)


def _unmerged(g: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """The gradient of :func:`_merged`: (B, H/2, W/2, 4C) back to the NCHW input's shape."""
    b, c, h, w = shape
    out = np.zeros((b, h + h % 2, w + w % 2, c), dtype=g.dtype)
    for k, (dr, dc) in enumerate(MERGE_ORDER):
        out[:, dr::2, dc::2] = g[..., k * c : (k + 1) * c]
    return np.ascontiguousarray(out[:, :h, :w].transpose(0, 3, 1, 2))


def _norm(z: np.ndarray, p: dict[str, np.ndarray], eps: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    mean = z.mean(axis=-1, keepdims=True)
    inv = 1.0 / np.sqrt(((z - mean) ** 2).mean(axis=-1, keepdims=True) + eps)
    zhat = (z - mean) * inv
    return zhat * p["norm.weight"] + p["norm.bias"], zhat, inv


def _norm_backward(gy: np.ndarray, zhat: np.ndarray, inv: np.ndarray, p: dict[str, np.ndarray], grads: Any) -> Any:
    axes = tuple(range(gy.ndim - 1))
    grads["norm.weight"], grads["norm.bias"] = (gy * zhat).sum(axis=axes), gy.sum(axis=axes)
    g = gy * p["norm.weight"]
    return inv * (g - g.mean(axis=-1, keepdims=True) - zhat * (g * zhat).mean(axis=-1, keepdims=True))


def _merging_forward(info: LayerInfo, p: dict[str, np.ndarray], x: np.ndarray, mode: Mode) -> np.ndarray:
    layer: PatchMerging = info.layer  # type: ignore[assignment]
    z = _merged(x)
    if layer.norm_first:
        y = _norm(z, p, layer.eps)[0] @ p["reduction.weight"].T
    else:
        y = _norm(z @ p["reduction.weight"].T, p, layer.eps)[0]
    return np.ascontiguousarray(y.transpose(0, 3, 1, 2))


def _merging_backward(info: LayerInfo, p: dict[str, np.ndarray], x: np.ndarray, go: np.ndarray, mode: Mode) -> Any:
    layer: PatchMerging = info.layer  # type: ignore[assignment]
    z, gy = _merged(x), go.transpose(0, 2, 3, 1)
    grads: dict[str, np.ndarray] = {}
    if layer.norm_first:
        normed, zhat, inv = _norm(z, p, layer.eps)
        grads["reduction.weight"] = np.einsum("bhwo,bhwi->oi", gy, normed)
        gz = _norm_backward(gy @ p["reduction.weight"], zhat, inv, p, grads)
    else:
        r = z @ p["reduction.weight"].T
        _, zhat, inv = _norm(r, p, layer.eps)
        gr = _norm_backward(gy, zhat, inv, p, grads)
        grads["reduction.weight"] = np.einsum("bhwo,bhwi->oi", gr, z)
        gz = gr @ p["reduction.weight"]
    return _unmerged(gz, x.shape), grads


def initial(info: LayerInfo, name: str) -> np.ndarray | None:
    """The initial value of a window attention's or patch merging's weight where it is not the initializer's
    Kaiming normal: biases 0, a LayerNorm's weight 1, Swin V2's logit scale log 10 (torchvision's) and
    coordinates; None for the others."""
    shape = info.params[name]
    if name.endswith("bias"):
        return np.zeros(shape)
    if name == "norm.weight":
        return np.ones(shape)
    if name == "logit_scale":
        return np.full(shape, np.log(10.0))
    if name == "relative_coords_table":
        return relative_coords(info.layer.window_size)  # type: ignore[attr-defined]
    return None


def _fixed(info: LayerInfo) -> dict[str, np.ndarray]:
    return {"relative_position_index": relative_position_index(info.layer.window_size)}  # type: ignore[attr-defined]


register(WindowAttention, _shape, _forward, _backward, fixed=_fixed)
register(PatchMerging, _merging_shape, _merging_forward, _merging_backward)

__all__ = ["MERGE_ORDER", "SHIFT_MASK", "PatchMerging", "WindowAttention", "partition_plan"]
