"""The torch modules of other libraries that import as windowed attention and patch merging: torchvision's
Swin, Swin V2 and MaxViT, timm's Swin, each matched by module and class name and checked option by option."""

from __future__ import annotations

from typing import Any

import numpy as np

from ...backends._torch_env import nn, torch
from ...errors import UnsupportedLayerError
from . import PatchMerging, WindowAttention, relative_position_index, shift_mask


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


def _is_timm(name: str, module: str = "timm.models.swin_transformer") -> Any:
    return lambda m: type(m).__name__ == name and type(m).__module__ == module


_TIMM_V2 = "timm.models.swin_transformer_v2"


def _timm_block(m: Any, name: str, where: str) -> Any:
    """timm's ``SwinTransformerBlock`` on a channels-last map: x + attn(norm1(x)), then x + mlp(norm2(x)), as
    spec layers (LayerNorm, WindowAttention, the Mlp per pixel); drop paths as stochastic depth. Its window
    attention is timm's ``WindowAttention`` (fused path or not: the same function) with Swin's index, attending
    over all of its features; no dropout after the projection. timm rolls before it pads, torchvision after:
    the two agree on maps that need no padding, the only ones imported. Swin V2's ``SwinTransformerV2Block``:
    x + norm1(attn(x)), then x + norm2(mlp(x)); its cosine attention with ``q_bias``, a zero ``k_bias`` and
    ``v_bias`` and the coordinates table it holds (a buffer of the weights here)."""
    from ...importers._graph import Fragment
    from ...importers.torch_layers import _layer
    from ...spec import ChannelLinear, Linear

    attn, mlp = m.attn, m.mlp
    v2 = type(m).__module__ == _TIMM_V2
    what = f"timm {type(m).__name__}"
    dim = int(m.dim)
    window = (int(m.window_size[0]), int(m.window_size[1]))
    shift = (int(m.shift_size[0]), int(m.shift_size[1]))
    _refuse(
        where,
        what,
        [
            (type(attn).__name__ != "WindowAttention", f"attention {type(attn).__name__}"),
            (tuple(attn.window_size) != window, f"attention window {attn.window_size} (the block's is {window})"),
            (
                attn.qkv.out_features != 3 * dim or attn.proj.in_features != dim or attn.proj.out_features != dim,
                "an attention dimension not its own",
            ),
            (
                not v2 and float(attn.scale) != (dim // int(attn.num_heads)) ** -0.5,
                f"scale={getattr(attn, 'scale', 0)}",
            ),
            (v2 and attn.qkv.bias is not None, "a bias in its qkv Linear"),
            (v2 and not _is_cpb(getattr(attn, "cpb_mlp", None), int(attn.num_heads)), "another position-bias MLP"),
            (v2 and getattr(attn, "k_bias", None) is not None and bool(attn.k_bias.any()), "a k bias that is not 0"),
            (type(attn.proj_drop) is not nn.Dropout or attn.proj_drop.p > 0, "dropout after the projection"),
            (type(attn.attn_drop) is not nn.Dropout, "another attention dropout"),
            (type(mlp).__name__ != "Mlp" or type(mlp.norm) is not nn.Identity, f"an MLP {type(mlp).__name__}"),
            (any(s >= w for s, w in zip(shift, window)), f"shift_size={shift} not smaller than window_size={window}"),
        ],
    )
    _standard_index(attn, window, where, what)
    qkv_bias = attn.qkv.bias is not None or v2 and attn.q_bias is not None
    layer = WindowAttention(
        dim, int(attn.num_heads), window, shift, qkv_bias, attn.proj.bias is not None, float(attn.attn_drop.p),
        cosine=v2, cpb_hidden=int(attn.cpb_mlp[0].out_features) if v2 else 512, name=f"{name}.attn",
    )  # fmt: skip
    a = f"{name}.attn"
    state: dict[str, Any] = {f"{a}.qkv.weight": attn.qkv.weight, f"{a}.proj.weight": attn.proj.weight}
    state[f"{a}.proj.bias"] = attn.proj.bias
    if v2:
        from ..token._torch import fused

        state[f"{a}.qkv.bias"] = None if attn.q_bias is None else fused(attn.q_bias, attn.k_bias, attn.v_bias)
        state[f"{a}.logit_scale"] = attn.logit_scale
        state[f"{a}.cpb_mlp.0.weight"], state[f"{a}.cpb_mlp.0.bias"] = attn.cpb_mlp[0].weight, attn.cpb_mlp[0].bias
        state[f"{a}.cpb_mlp.2.weight"] = attn.cpb_mlp[2].weight
        state[f"{a}.relative_coords_table"] = attn.relative_coords_table
    else:
        state[f"{a}.qkv.bias"] = attn.qkv.bias
        state[f"{a}.relative_position_bias_table"] = attn.relative_position_bias_table
    steps: list[tuple[Any, tuple[int, ...]]] = []

    def add(sub: Any, path: str, reads: int) -> int:
        spec, own = _layer(sub, f"{name}.{path}", f"{where}.{path}")
        if isinstance(spec, Linear):  # (per pixel of the map)
            spec = ChannelLinear(int(sub.in_features), spec.out_features, bias=spec.bias, name=spec.name)
        state.update(own)
        steps.append((spec, (reads,)))
        return len(steps) - 1

    if v2:  # (post-norm)
        steps.append((layer, (-1,)))
        last = add(m.norm1, "norm1", 0)
    else:
        last = add(m.norm1, "norm1", -1)
        steps.append((layer, (last,)))
        last = len(steps) - 1
    last = add(m.drop_path1, "drop_path1", last)
    steps.append(("add", (-1, last)))
    first = last = len(steps) - 1
    if not v2:
        last = add(m.norm2, "norm2", first)
    for part in ("fc1", "act", "drop1", "fc2", "drop2"):
        last = add(getattr(mlp, part), f"mlp.{part}", last)
    if v2:
        last = add(m.norm2, "norm2", last)
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
    flattened column offset first, which is Swin's order; an ``nn.LayerNorm`` over them, then the reduction
    (Swin V2's: the reduction, then the LayerNorm)."""
    norm, reduction = m.norm, m.reduction
    v2 = type(m).__module__ == _TIMM_V2
    dim = int(m.dim)
    _refuse(
        where,
        "timm PatchMerging",
        [
            (type(norm) is not nn.LayerNorm or norm.weight is None or norm.bias is None, "a norm other than LayerNorm"),
            (
                tuple(norm.normalized_shape) != ((reduction.out_features,) if v2 else (4 * dim,)),
                f"a norm over {tuple(norm.normalized_shape)}",
            ),
            (
                type(reduction) is not nn.Linear or reduction.bias is not None,
                "a reduction other than Linear(bias=False)",
            ),
            (reduction.in_features != 4 * dim, f"a reduction of {reduction.in_features} features"),
        ],
    )
    layer = PatchMerging(dim, int(reduction.out_features), float(norm.eps), norm_first=not v2, name=name)
    return layer, {"reduction.weight": reduction.weight, "norm.weight": norm.weight, "norm.bias": norm.bias}


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


#: (predicate, importer) of the modules imported as one layer on a channels-last (N, H, W, C) map
CHANNELS_LAST: list[Any] = [
    (_is_torchvision("ShiftedWindowAttention"), _torchvision_window_attention),
    (_is_torchvision("ShiftedWindowAttentionV2"), _torchvision_window_attention),
    (_is_torchvision("PatchMerging"), _torchvision_patch_merging),
    (_is_torchvision("PatchMergingV2"), _torchvision_patch_merging),
    (_is_timm("PatchMerging"), _timm_patch_merging),
    (_is_timm("PatchMerging", _TIMM_V2), _timm_patch_merging),
]
#: and of the modules imported as several nodes (a Fragment, which knows its layout)
OTHERS: list[Any] = [
    (_is_timm("SwinTransformerBlock"), _timm_block),
    (_is_timm("SwinTransformerV2Block", _TIMM_V2), _timm_block),
    (_is_maxvit, _maxvit_layer),
]
