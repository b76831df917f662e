"""Windowed attention and patch merging: the torch parts (built modules, and the torch modules that import as
these kinds: torchvision's Swin and timm's)."""

from __future__ import annotations

import math
from typing import Any, cast

import numpy as np

from ..._info import LayerInfo
from ...backends._torch_env import F, nn, torch
from ...errors import UnsupportedLayerError
from . import PatchMerging, WindowAttention, geometry, relative_position_index, shift_mask


class WindowAttentionModule(nn.Module):
    """Swin's (shifted) window attention on an NCHW map of a fixed size (see :class:`xconv.WindowAttention`),
    with torchvision's parameter names: ``qkv``, ``proj``, ``relative_position_bias_table``. The index and the
    shift mask are buffers that follow from the window and the map's size; the index is in the state_dict with
    ``state_index`` (as torchvision's), the mask never. ``cosine``: Swin V2's attention, with torchvision's
    ``logit_scale``, ``cpb_mlp`` and ``relative_coords_table`` (in the state_dict) in place of the table."""

    def __init__(
        self,
        embed_dim: int,
        num_heads: int,
        window_size: tuple[int, int],
        shift_size: tuple[int, int],
        size: tuple[int, int],
        qkv_bias: bool = True,
        proj_bias: bool = True,
        dropout: float = 0.0,
        state_index: bool = False,
        cosine: bool = False,
        cpb_hidden: int = 512,
        grid: bool = False,
        scale: float | None = None,
        device: Any = None,
        dtype: Any = None,
    ) -> None:
        super().__init__()
        factory = {"device": device, "dtype": dtype}
        self.num_heads, self.dropout, self.state_index = int(num_heads), float(dropout), bool(state_index)
        self.cosine, self.grid, self.scale = bool(cosine), bool(grid), scale
        self.window_size: tuple[int, int] = (int(window_size[0]), int(window_size[1]))
        self.shift_size: tuple[int, int] = (int(shift_size[0]), int(shift_size[1]))
        self.size: tuple[int, int] = (int(size[0]), int(size[1]))
        self.qkv = nn.Linear(embed_dim, 3 * embed_dim, bias=qkv_bias, **factory)
        self.proj = nn.Linear(embed_dim, embed_dim, bias=proj_bias, **factory)
        wh, ww = self.window_size
        rows = (2 * wh - 1) * (2 * ww - 1)
        if self.cosine:
            self.logit_scale = nn.Parameter(torch.zeros(num_heads, 1, 1, **factory))
            self.cpb_mlp = nn.Sequential(
                nn.Linear(2, cpb_hidden, **factory), nn.ReLU(), nn.Linear(cpb_hidden, num_heads, bias=False, **factory)
            )
            self.register_buffer("relative_coords_table", torch.zeros(1, 2 * wh - 1, 2 * ww - 1, 2, **factory))
        else:
            self.relative_position_bias_table = nn.Parameter(torch.zeros(rows, num_heads, **factory))
        layer = WindowAttention(embed_dim, num_heads, self.window_size, self.shift_size, grid=self.grid, scale=scale)
        self.score_scale = layer.score_scale
        self.geometry = geometry(layer, *self.size)
        mask = shift_mask(layer, *self.size)
        self._fixed: dict[str, np.ndarray | None] = {
            "relative_position_index": relative_position_index(self.window_size),
            "attention_mask": mask,
        }
        n = self.window_size[0] * self.window_size[1]
        index = torch.zeros(n * n, dtype=torch.int64, device=device)
        self.register_buffer("relative_position_index", index, persistent=self.state_index)
        empty = None if mask is None else torch.zeros(mask.shape, device=device, dtype=dtype)
        self.register_buffer("attention_mask", empty, persistent=False)
        if str(device) != "meta":
            self.fill_buffers()

    def fill_buffers(self) -> None:
        """Writes the fixed index and mask into their buffers (after ``to_empty``, which leaves them unset)."""
        with torch.no_grad():
            for name, value in self._fixed.items():
                buffer = getattr(self, name)
                if buffer is not None and value is not None:
                    buffer.copy_(torch.from_numpy(value))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        ph, pw, sh, sw = self.geometry
        wh, ww = self.window_size
        t = F.pad(x.permute(0, 2, 3, 1), (0, 0, 0, pw - w, 0, ph - h))
        if sh or sw:
            t = torch.roll(t, shifts=(-sh, -sw), dims=(1, 2))
        if self.grid:  # (window (i, j): the pixels (a * H/wh + i, b * W/ww + j))
            t = t.reshape(b, wh, ph // wh, ww, pw // ww, c).permute(0, 2, 4, 1, 3, 5).reshape(-1, wh * ww, c)
        else:
            t = t.reshape(b, ph // wh, wh, pw // ww, ww, c).permute(0, 1, 3, 2, 4, 5).reshape(-1, wh * ww, c)
        bw, n, _ = t.shape
        bias_used: torch.Tensor | None = self.qkv.bias
        if self.cosine and bias_used is not None:  # (Swin V2: no k bias)
            bias_used = torch.cat([bias_used[:c], torch.zeros_like(bias_used[c : 2 * c]), bias_used[2 * c :]])
        qkv = F.linear(t, self.qkv.weight, bias_used)
        q, k, v = qkv.reshape(bw, n, 3, self.num_heads, c // self.num_heads).permute(2, 0, 3, 1, 4)
        table: torch.Tensor
        if self.cosine:
            scale = torch.clamp(self.logit_scale, max=math.log(100.0)).exp()
            scores = F.normalize(q, dim=-1) @ F.normalize(k, dim=-1).transpose(-2, -1) * scale
            table = 16 * torch.sigmoid(self.cpb_mlp(self.relative_coords_table).view(-1, self.num_heads))
        else:
            scores = (q * self.score_scale) @ k.transpose(-2, -1)
            table = self.relative_position_bias_table
        index = cast(torch.Tensor, self.relative_position_index)
        scores = scores + table[index].view(n, n, -1).permute(2, 0, 1)
        mask = cast("torch.Tensor | None", self.attention_mask)
        if mask is not None:
            windows = int(mask.shape[0])
            scores = scores.view(-1, windows, self.num_heads, n, n) + mask[None, :, None]
            scores = scores.view(-1, self.num_heads, n, n)
        weights = F.dropout(scores.softmax(dim=-1), p=self.dropout, training=self.training)
        o = self.proj((weights @ v).transpose(1, 2).reshape(bw, n, c))
        o = o.reshape(b, ph // wh, pw // ww, wh, ww, c)
        o = (o.permute(0, 3, 1, 4, 2, 5) if self.grid else o.permute(0, 1, 3, 2, 4, 5)).reshape(b, ph, pw, c)
        if sh or sw:
            o = torch.roll(o, shifts=(sh, sw), dims=(1, 2))
        return cast(torch.Tensor, o[:, :h, :w].permute(0, 3, 1, 2))

    def extra_repr(self) -> str:
        return f"num_heads={self.num_heads}, window_size={self.window_size}, shift_size={self.shift_size}"


class PatchMergingModule(nn.Module):
    """Swin's patch merging on an NCHW map (see :class:`xconv.PatchMerging`), with torchvision's parameter
    names: ``norm`` (a LayerNorm), ``reduction`` (a Linear without bias)."""

    def __init__(
        self,
        dim: int,
        out_dim: int,
        eps: float = 1e-5,
        norm_first: bool = True,
        device: Any = None,
        dtype: Any = None,
    ) -> None:
        super().__init__()
        factory = {"device": device, "dtype": dtype}
        self.norm_first = bool(norm_first)
        self.norm = nn.LayerNorm(4 * dim if norm_first else out_dim, eps=eps, **factory)
        self.reduction = nn.Linear(4 * dim, out_dim, bias=False, **factory)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[2:]
        t = F.pad(x.permute(0, 2, 3, 1), (0, 0, 0, w % 2, 0, h % 2))
        t = torch.cat([t[:, 0::2, 0::2], t[:, 1::2, 0::2], t[:, 0::2, 1::2], t[:, 1::2, 1::2]], dim=-1)
        t = self.reduction(self.norm(t)) if self.norm_first else self.norm(self.reduction(t))
        return cast(torch.Tensor, t.permute(0, 3, 1, 2))


def _window_attention(info: LayerInfo, factory: dict[str, Any]) -> nn.Module:
    layer = cast(WindowAttention, info.layer)
    size = (info.input_shape[1], info.input_shape[2])
    return WindowAttentionModule(
        layer.embed_dim,
        layer.num_heads,
        layer.window_size,
        layer.shift_size,
        size,
        layer.qkv_bias,
        layer.proj_bias,
        layer.dropout,
        layer.state_index,
        layer.cosine,
        layer.cpb_hidden,
        layer.grid,
        layer.scale,
        **factory,
    )


def _patch_merging(info: LayerInfo, factory: dict[str, Any]) -> nn.Module:
    layer = cast(PatchMerging, info.layer)
    return PatchMergingModule(layer.dim, layer.features, layer.eps, layer.norm_first, **factory)


BUILDERS: dict[type, Any] = {
    WindowAttention: _window_attention,
    PatchMerging: _patch_merging,
}


# ---- imports ----


def _own_window_attention(m: WindowAttentionModule, name: str, where: str) -> WindowAttention:
    return WindowAttention(
        int(m.qkv.in_features),
        m.num_heads,
        m.window_size,
        m.shift_size,
        m.qkv.bias is not None,
        m.proj.bias is not None,
        m.dropout,
        m.state_index,
        m.cosine,
        int(m.cpb_mlp[0].out_features) if m.cosine else 512,  # type: ignore[arg-type]
        m.grid,
        m.scale,
        name=name,
    )


def _own_patch_merging(m: PatchMergingModule, name: str, where: str) -> PatchMerging:
    dim, out = m.reduction.in_features // 4, m.reduction.out_features
    return PatchMerging(dim, out, float(m.norm.eps), m.norm_first, name=name)


def _refuse(where: str, what: str, problems: list[tuple[bool, str]]) -> None:
    bad = [text for fails, text in problems if fails]
    if bad:
        raise UnsupportedLayerError(f"from_torch: {where}: {what} with {bad[0]} is not supported")


def _standard_index(m: Any, window: tuple[int, int], where: str, what: str) -> None:
    """The module's relative position index must be Swin's for its window: xconv computes that one."""
    index = getattr(m, "relative_position_index", None)
    expected = relative_position_index(window)
    same = (
        isinstance(index, torch.Tensor)
        and index.numel() == expected.size
        and np.array_equal(index.detach().cpu().numpy().reshape(-1), expected)
    )
    if not same:
        raise UnsupportedLayerError(
            f"from_torch: {where}: {what} whose relative_position_index is not Swin's for window {window} "
            "is not supported"
        )


def _is_torchvision(name: str) -> Any:
    return lambda m: type(m).__name__ == name and type(m).__module__ == "torchvision.models.swin_transformer"


def _torchvision_window_attention(m: Any, name: str, where: str) -> tuple[WindowAttention, dict[str, Any]]:
    """torchvision's ``ShiftedWindowAttention`` (Swin V1) and ``ShiftedWindowAttentionV2`` (cosine attention, its
    position bias from ``cpb_mlp``: Linear(2, hidden), ReLU, Linear(hidden, heads, bias=False)): its own
    ``shifted_window_attention`` with Swin's index; no dropout after the projection."""
    v2 = type(m).__name__ == "ShiftedWindowAttentionV2"
    what = f"torchvision {type(m).__name__}"
    window = (int(m.window_size[0]), int(m.window_size[1]))
    shift = (int(m.shift_size[0]), int(m.shift_size[1]))
    dim = int(m.qkv.in_features)
    _refuse(
        where,
        what,
        [
            (m.qkv.out_features != 3 * dim or m.proj.in_features != dim or m.proj.out_features != dim, "other sizes"),
            (dim % int(m.num_heads) != 0, f"{m.num_heads} heads for {dim} features"),
            (float(m.dropout) > 0, f"dropout={m.dropout} (dropout after the projection)"),
            (any(s >= w for s, w in zip(shift, window)), f"shift_size={shift} not smaller than window_size={window}"),
            (v2 and not _is_cpb(m.cpb_mlp, int(m.num_heads)), "a position-bias MLP other than Swin V2's"),
            (v2 and tuple(m.logit_scale.shape) != (int(m.num_heads), 1, 1), "a logit scale of another shape"),
        ],
    )
    _standard_index(m, window, where, what)
    layer = WindowAttention(
        dim,
        int(m.num_heads),
        window,
        shift,
        m.qkv.bias is not None,
        m.proj.bias is not None,
        float(m.attention_dropout),
        state_index=True,
        cosine=v2,
        cpb_hidden=int(m.cpb_mlp[0].out_features) if v2 else 512,
        name=name,
    )
    state = {"qkv.weight": m.qkv.weight, "qkv.bias": m.qkv.bias, "proj.weight": m.proj.weight, "proj.bias": m.proj.bias}
    if v2:
        state["logit_scale"] = m.logit_scale
        state["cpb_mlp.0.weight"], state["cpb_mlp.0.bias"] = m.cpb_mlp[0].weight, m.cpb_mlp[0].bias
        state["cpb_mlp.2.weight"] = m.cpb_mlp[2].weight
        state["relative_coords_table"] = m.relative_coords_table
    else:
        state["relative_position_bias_table"] = m.relative_position_bias_table
    state["relative_position_index"] = m.relative_position_index  # (in torchvision's state_dict: in the weights)
    return layer, state


def _is_cpb(mlp: Any, heads: int) -> bool:
    """Swin V2's continuous position-bias MLP: Linear(2, hidden) with bias, ReLU, Linear(hidden, heads) without."""
    parts = list(mlp) if isinstance(mlp, nn.Sequential) else []
    return (
        len(parts) == 3
        and type(parts[0]) is nn.Linear
        and parts[0].in_features == 2
        and parts[0].bias is not None
        and type(parts[1]) is nn.ReLU
        and type(parts[2]) is nn.Linear
        and parts[2].in_features == parts[0].out_features
        and parts[2].out_features == heads
        and parts[2].bias is None
    )


def _torchvision_patch_merging(m: Any, name: str, where: str) -> tuple[PatchMerging, dict[str, Any]]:
    """torchvision's ``PatchMerging`` (the LayerNorm, then the reduction) and ``PatchMergingV2`` (the reduction,
    then the LayerNorm), with an ``nn.LayerNorm`` that has a weight and a bias."""
    v2 = type(m).__name__ == "PatchMergingV2"
    norm, reduction = m.norm, m.reduction
    dim = int(m.dim)
    _refuse(
        where,
        f"torchvision {type(m).__name__}",
        [
            (type(norm) is not nn.LayerNorm, f"a {type(norm).__name__} as its norm (nn.LayerNorm only)"),
            (
                type(reduction) is not nn.Linear or reduction.bias is not None,
                "a reduction other than Linear(bias=False)",
            ),
            (reduction.in_features != 4 * dim, f"a reduction of {reduction.in_features} features (not 4 * {dim})"),
            (getattr(norm, "weight", None) is None or getattr(norm, "bias", None) is None, "a norm without affine"),
        ],
    )
    out = int(reduction.out_features)
    if tuple(norm.normalized_shape) != ((out,) if v2 else (4 * dim,)):
        raise UnsupportedLayerError(f"from_torch: {where}: a norm over {tuple(norm.normalized_shape)} features")
    layer = PatchMerging(dim, out, float(norm.eps), not v2, name=name)
    state = {"reduction.weight": reduction.weight, "norm.weight": norm.weight, "norm.bias": norm.bias}
    return layer, state


#: torch module class (exactly) -> (module, name, where) -> its spec layer
IMPORTS: dict[type, Any] = {
    WindowAttentionModule: _own_window_attention,
    PatchMergingModule: _own_patch_merging,
}

#: (predicate on a module, its importer), for classes of other libraries matched by module and name; these
#: take channels-last (N, H, W, C) maps
MATCHERS: list[Any] = [
    (_is_torchvision("ShiftedWindowAttention"), _torchvision_window_attention),
    (_is_torchvision("ShiftedWindowAttentionV2"), _torchvision_window_attention),
    (_is_torchvision("PatchMerging"), _torchvision_patch_merging),
    (_is_torchvision("PatchMergingV2"), _torchvision_patch_merging),
]


def channels_last_module(m: nn.Module) -> bool:
    """Whether ``m`` is a matched module of another library that takes a channels-last (N, H, W, C) map."""
    return any(match(m) for match, _ in MATCHERS)


def _is_timm(name: str) -> Any:
    return lambda m: type(m).__name__ == name and type(m).__module__ == "timm.models.swin_transformer"


def _timm_block(m: Any, name: str, where: str) -> Any:
    """timm's ``SwinTransformerBlock`` on a channels-last map: x + attn(norm1(x)), then x + mlp(norm2(x)), as
    spec layers (LayerNorm, WindowAttention, the Mlp per pixel); drop paths as stochastic depth. Its window
    attention is timm's ``WindowAttention`` (fused path or not: the same function) with Swin's index, attending
    over all of its features; no dropout after the projection. timm rolls before it pads, torchvision after:
    the two agree on maps that need no padding, the only ones imported."""
    from ...importers._graph import Fragment
    from ...importers.torch_layers import _layer
    from ...spec import ChannelLinear, Linear

    attn, mlp = m.attn, m.mlp
    what = "timm SwinTransformerBlock"
    dim = int(m.dim)
    window = (int(m.window_size[0]), int(m.window_size[1]))
    shift = (int(m.shift_size[0]), int(m.shift_size[1]))
    _refuse(
        where,
        what,
        [
            (type(attn).__name__ != "WindowAttention", f"attention {type(attn).__name__}"),
            (tuple(attn.window_size) != window, f"attention window {attn.window_size} (the block's is {window})"),
            (attn.qkv.out_features != 3 * dim or attn.proj.in_features != dim, "an attention dimension not its own"),
            (float(attn.scale) != (dim // int(attn.num_heads)) ** -0.5, f"scale={attn.scale}"),
            (type(attn.proj_drop) is not nn.Dropout or attn.proj_drop.p > 0, "dropout after the projection"),
            (type(attn.attn_drop) is not nn.Dropout, "another attention dropout"),
            (type(mlp).__name__ != "Mlp" or type(mlp.norm) is not nn.Identity, f"an MLP {type(mlp).__name__}"),
            (any(s >= w for s, w in zip(shift, window)), f"shift_size={shift} not smaller than window_size={window}"),
        ],
    )
    _standard_index(attn, window, where, what)
    layer = WindowAttention(
        dim, int(attn.num_heads), window, shift, attn.qkv.bias is not None, attn.proj.bias is not None,
        float(attn.attn_drop.p), name=f"{name}.attn",
    )  # fmt: skip
    state: dict[str, Any] = {
        f"{name}.attn.{k}": getattr(attn, a).weight if k.endswith("weight") else getattr(attn, a).bias
        for k, a in (("qkv.weight", "qkv"), ("qkv.bias", "qkv"), ("proj.weight", "proj"), ("proj.bias", "proj"))
    }
    state[f"{name}.attn.relative_position_bias_table"] = attn.relative_position_bias_table
    steps: list[tuple[Any, tuple[int, ...]]] = []

    def add(sub: Any, path: str, reads: int) -> int:
        spec, own = _layer(sub, f"{name}.{path}", f"{where}.{path}")
        if isinstance(spec, Linear):  # (per pixel of the map)
            spec = ChannelLinear(int(sub.in_features), spec.out_features, bias=spec.bias, name=spec.name)
        state.update(own)
        steps.append((spec, (reads,)))
        return len(steps) - 1

    last = add(m.norm1, "norm1", -1)
    steps.append((layer, (last,)))
    last = add(m.drop_path1, "drop_path1", len(steps) - 1)
    steps.append(("add", (-1, last)))
    first = len(steps) - 1
    last = add(m.norm2, "norm2", first)
    for part in ("fc1", "act", "drop1", "fc2", "drop2"):
        last = add(getattr(mlp, part), f"mlp.{part}", last)
    last = add(m.drop_path2, "drop_path2", last)
    steps.append(("add", (first, last)))
    mask = getattr(m, "attn_mask", None)
    dynamic = bool(getattr(m, "dynamic_mask", False))

    def check(shape: Any) -> None:
        _, h, w, _ = shape
        if h % window[0] or w % window[1]:
            raise UnsupportedLayerError(
                f"from_torch: {where}: a {h}x{w} map is not a whole number of {window} windows; timm pads after "
                "its roll (torchvision before), which xconv does not express"
            )
        if (shift[0] and h <= window[0]) or (shift[1] and w <= window[1]):
            raise UnsupportedLayerError(f"from_torch: {where}: a shift of {shift} on a {h}x{w} map of one window")
        expected = shift_mask(layer, h, w)
        given = None if dynamic or mask is None else mask.detach().cpu().numpy()
        if not dynamic and (expected is None) != (given is None):
            raise UnsupportedLayerError(f"from_torch: {where}: its attn_mask does not fit its shift {shift}")
        if given is not None and (expected is None or not np.array_equal(given, expected)):
            raise UnsupportedLayerError(
                f"from_torch: {where}: its attn_mask is not Swin's shift mask for a {h}x{w} map and shift {shift}"
            )

    return Fragment(steps, state, check)


def _timm_patch_merging(m: Any, name: str, where: str) -> tuple[PatchMerging, dict[str, Any]]:
    """timm's ``PatchMerging`` on a channels-last map: 2x2 neighbourhoods as (row offset, column offset, C)
    flattened column offset first, which is Swin's order; an ``nn.LayerNorm`` over them, then the reduction."""
    norm, reduction = m.norm, m.reduction
    dim = int(m.dim)
    _refuse(
        where,
        "timm PatchMerging",
        [
            (type(norm) is not nn.LayerNorm or norm.weight is None or norm.bias is None, "a norm other than LayerNorm"),
            (tuple(norm.normalized_shape) != (4 * dim,), f"a norm over {tuple(norm.normalized_shape)}"),
            (
                type(reduction) is not nn.Linear or reduction.bias is not None,
                "a reduction other than Linear(bias=False)",
            ),
            (reduction.in_features != 4 * dim, f"a reduction of {reduction.in_features} features"),
        ],
    )
    layer = PatchMerging(dim, int(reduction.out_features), float(norm.eps), name=name)
    return layer, {"reduction.weight": reduction.weight, "norm.weight": norm.weight, "norm.bias": norm.bias}


MATCHERS += [
    (_is_timm("SwinTransformerBlock"), _timm_block),
    (_is_timm("PatchMerging"), _timm_patch_merging),
]


def _is_maxvit(m: nn.Module) -> bool:
    return type(m).__name__ == "PartitionAttentionLayer" and type(m).__module__ == "torchvision.models.maxvit"


def _maxvit_layer(m: Any, name: str, where: str) -> Any:
    """torchvision's MaxViT ``PartitionAttentionLayer`` on an NCHW map: x + attn(LayerNorm(x)) in windows of
    partition_size (block attention) or over the grid of them (grid attention), then x + mlp(LayerNorm(x)), as
    spec layers; its ``RelativePositionalMultiHeadAttention`` (scale embed_dim ** -0.5, Swin's index) a
    WindowAttention. The partitions are exact on maps of its ``grid_size``, the only ones imported."""
    from ...importers._graph import Fragment
    from ...importers.torch_layers import _layer
    from ...spec import ChannelLinear, Linear

    parts, mlp = list(m.attn_layer), list(m.mlp_layer)
    attn: Any = parts[1] if len(parts) == 3 else None
    what = "torchvision PartitionAttentionLayer"
    _refuse(
        where,
        what,
        [
            (attn is None or type(attn).__name__ != "RelativePositionalMultiHeadAttention", "another attention"),
            (len(mlp) != 5 or type(m.partition_op).__name__ != "WindowPartition", "another structure"),
        ],
    )
    dim, heads, size = int(attn.to_qkv.in_features), int(attn.n_heads), int(attn.size)
    window = (size, size)
    _refuse(
        where,
        what,
        [
            (
                attn.to_qkv.out_features != 3 * dim or attn.merge.in_features != dim,
                "an attention dimension not its own",
            ),
            (attn.to_qkv.bias is None or attn.merge.bias is None, "projections without biases"),
            (size * size != int(attn.max_seq_len), f"a sequence of {attn.max_seq_len} (not a square)"),
            (m.partition_type not in ("window", "grid"), f"partition type {m.partition_type!r}"),
            (int(m.p if m.partition_type == "window" else m.g) != size, "a partition other than its attention's"),
        ],
    )
    _standard_index(attn, window, where, what)
    grid = m.partition_type == "grid"
    attention = WindowAttention(
        dim, heads, window, grid=grid, scale=float(attn.scale_factor), state_index=True, name=f"{name}.attn_layer.1"
    )
    prefix = f"{name}.attn_layer.1"
    state: dict[str, Any] = {
        f"{prefix}.qkv.weight": attn.to_qkv.weight,
        f"{prefix}.qkv.bias": attn.to_qkv.bias,
        f"{prefix}.proj.weight": attn.merge.weight,
        f"{prefix}.proj.bias": attn.merge.bias,
        f"{prefix}.relative_position_bias_table": attn.relative_position_bias_table,
        f"{prefix}.relative_position_index": attn.relative_position_index,
    }
    steps: list[tuple[Any, tuple[int, ...]]] = []

    def add(sub: Any, path: str, reads: int) -> int:
        spec, own = _layer(sub, f"{name}.{path}", f"{where}.{path}")
        if isinstance(spec, Linear):  # (per pixel of the map)
            spec = ChannelLinear(int(sub.in_features), spec.out_features, bias=spec.bias, name=spec.name)
        state.update(own)
        steps.append((spec, (reads,)))
        return len(steps) - 1

    last = add(parts[0], "attn_layer.0", -1)
    steps.append((attention, (last,)))
    last = add(parts[2], "attn_layer.2", len(steps) - 1)
    last = add(m.stochastic_dropout, "stochastic_dropout", last)
    steps.append(("add", (-1, last)))
    first = last = len(steps) - 1
    for k in range(5):
        last = add(mlp[k], f"mlp_layer.{k}", last)
    spec_depth, _ = _layer(m.stochastic_dropout, f"{name}.stochastic_dropout_2", f"{where}.stochastic_dropout")
    steps.append((spec_depth, (last,)))
    steps.append(("add", (first, len(steps) - 1)))
    grid_size = (int(m.grid_size[0]), int(m.grid_size[1]))

    def check(shape: Any) -> None:
        _, _, h, w = shape
        if (h, w) != grid_size or h % int(m.p) or w % int(m.p):
            raise UnsupportedLayerError(
                f"from_torch: {where}: a {h}x{w} map, where it was made for {grid_size[0]}x{grid_size[1]} maps of "
                "whole partitions"
            )

    return Fragment(steps, state, check, channels_last=False)


MATCHERS.append((_is_maxvit, _maxvit_layer))
