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


def _named(m: Any) -> tuple[str, str]:
    """A module's (class name, module of its class): other libraries' parts are checked by both."""
    return type(m).__name__, type(m).__module__


_MAXVIT = "torchvision.models.maxvit"


def _swaps(m: Any) -> bool:
    """A MaxViT partition layer's axis swaps: (-2, -3) both ways for the grid, none for windows."""
    swaps = (m.partition_swap, m.departition_swap)
    if m.partition_type == "window":
        return all(type(s) is nn.Identity for s in swaps)
    return all(_named(s) == ("SwapAxes", _MAXVIT) and (s.a, s.b) == (-2, -3) for s in swaps)


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


def _per_pixel(sub: Any, name: str, path: str, where: str, state: dict[str, Any], steps: list[Any], reads: int) -> int:
    """Appends the spec layer of a block's part ``sub`` (at ``{name}.{path}``) to ``steps``, reading step
    ``reads``, its tensors to ``state``; a Linear acts per pixel of the map: a ChannelLinear. Returns its step."""
    from ...importers.torch_layers import _layer
    from ...spec import ChannelLinear, Linear

    spec, own = _layer(sub, f"{name}.{path}", f"{where}.{path}")
    if isinstance(spec, Linear):
        spec = ChannelLinear(int(sub.in_features), spec.out_features, bias=spec.bias, name=spec.name)
    state.update(own)
    steps.append((spec, (reads,)))
    return len(steps) - 1


def _timm_block(m: Any, name: str, where: str) -> Any:
    """timm's ``SwinTransformerBlock`` on a channels-last map: x + attn(norm1(x)), then x + mlp(norm2(x)), as
    spec layers (LayerNorm, WindowAttention, the Mlp per pixel); drop paths as stochastic depth. Its window
    attention is timm's ``WindowAttention`` (fused path or not: the same function) with Swin's index, attending
    over all of its features; no dropout after the projection. timm rolls before it pads, torchvision after
    (``roll_first``). Swin V2's ``SwinTransformerV2Block``:
    x + norm1(attn(x)), then x + norm2(mlp(x)); its cosine attention with ``q_bias``, a zero ``k_bias`` and
    ``v_bias`` and the coordinates table it holds (a buffer of the weights here)."""
    from ...importers._graph import Fragment

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
            (_named(attn) != ("WindowAttention", type(m).__module__), f"attention {type(attn).__name__}"),
            (type(attn.qkv) is not nn.Linear or type(attn.proj) is not nn.Linear, "projections other than nn.Linear"),
            (type(attn.softmax) is not nn.Softmax or attn.softmax.dim not in (-1, 3), "another softmax"),
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
            (
                _named(mlp) != ("Mlp", "timm.layers.mlp") or type(mlp.norm) is not nn.Identity,
                f"an MLP {type(mlp).__name__}",
            ),
            (any(s >= w for s, w in zip(shift, window)), f"shift_size={shift} not smaller than window_size={window}"),
        ],
    )
    _standard_index(attn, window, where, what)
    qkv_bias = attn.qkv.bias is not None or v2 and attn.q_bias is not None
    layer = WindowAttention(
        dim, int(attn.num_heads), window, shift, qkv_bias, attn.proj.bias is not None, float(attn.attn_drop.p),
        cosine=v2, cpb_hidden=int(attn.cpb_mlp[0].out_features) if v2 else 512, roll_first=True, name=f"{name}.attn",
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
        return _per_pixel(sub, name, path, where, state, steps, reads)

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

    parts, mlp = list(m.attn_layer), list(m.mlp_layer)
    attn: Any = parts[1] if len(parts) == 3 else None
    what = "torchvision PartitionAttentionLayer"
    _refuse(
        where,
        what,
        [
            (_named(attn) != ("RelativePositionalMultiHeadAttention", _MAXVIT), "another attention"),
            (len(mlp) != 5 or _named(m.partition_op) != ("WindowPartition", _MAXVIT), "another structure"),
            (_named(m.departition_op) != ("WindowDepartition", _MAXVIT), "another departition"),
            (not _swaps(m), "axes swapped otherwise than its partition type's"),
            (
                type(attn.to_qkv) is not nn.Linear or type(attn.merge) is not nn.Linear,
                "projections other than nn.Linear",
            ),
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
        return _per_pixel(sub, name, path, where, state, steps, reads)

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


_HF_SWIN = "transformers.models.swin.modeling_swin"


def is_hf_swin_layer(m: Any) -> bool:
    """Hugging Face's ``SwinLayer``: a Swin block on tokens, returning (tokens, attention weights)."""
    return type(m).__name__ == "SwinLayer" and type(m).__module__ == _HF_SWIN


def _is_hf_merging(m: Any) -> bool:
    return type(m).__name__ == "SwinPatchMerging" and type(m).__module__ == _HF_SWIN


def call_arguments(m: Any, inner: list[tuple[int, ...]]) -> tuple[Any, ...]:
    """What a leaf module of these is called with besides its tensor when its graph runs again: Hugging Face's
    Swin layer and patch merging (and Twins' local attention) take the (H, W) their tokens are read as (the
    first (N, H, W, C) view of their call); the others nothing."""
    from ._torch_local import is_twins_local

    if not (is_hf_swin_layer(m) or _is_hf_merging(m) or is_twins_local(m)):
        return ()
    views = [s for s in inner if len(s) == 4]
    return ((int(views[0][1]), int(views[0][2])),) if views else ()


def hold_state(module: Any) -> Any:
    """Hugging Face's Swin layers clamp their window and shift in their forward, in the module itself, when a
    map is no larger than the window: the importer's runs of the model must leave them as they were. Returns
    the function that puts them back."""
    held = [(m, m.window_size, m.shift_size) for m in module.modules() if is_hf_swin_layer(m)]

    def restore() -> None:
        for m, window, shift in held:
            m.window_size, m.shift_size = window, shift

    return restore


def _map_size(shape: Any, inner: Any, where: str) -> tuple[int, int]:
    """The (H, W) a Hugging Face Swin module read its (N, L, C) tokens as: the first (N, H, W, C) view its call
    computed (its sizes are arguments of the call, not attributes)."""
    if shape is None or len(shape) != 3:
        raise UnsupportedLayerError(f"from_torch: {where} takes tokens (N, L, C); its input is {shape}")
    _, length, c = shape
    for s in inner or ():  # (the program's batch may be another than this run's)
        if len(s) == 4 and s[3] == c and s[1] * s[2] == length:
            return int(s[1]), int(s[2])
    raise UnsupportedLayerError(
        f"from_torch: {where}: the map size its tokens are read as is not known (it is read from the exported "
        "program's views; the torch.fx front-end does not record them)"
    )


def _hf_drop_path(m: Any, name: str, where: str) -> Any:
    """Hugging Face's ``SwinDropPath`` (each sample dropped, the rest scaled by 1 / keep: row-mode stochastic
    depth) or ``nn.Identity``."""
    from ...importers.torch_layers import _layer
    from ...spec import StochasticDepth

    if type(m).__name__ == "SwinDropPath" and type(m).__module__ == _HF_SWIN:
        return StochasticDepth(float(m.drop_prob), "row", name=name)
    return _layer(m, name, where)[0]


def _hf_activation(m: Any, name: str, where: str) -> Any:
    """Hugging Face's ``GELUActivation`` on ``F.gelu`` (its default), else the module as xconv imports it."""
    from ...importers.torch_layers import _layer
    from ...spec import GELU

    if type(m).__name__ == "GELUActivation" and type(m).__module__ == "transformers.activations":
        if m.act is not torch.nn.functional.gelu:
            raise UnsupportedLayerError(f"from_torch: {where}: GELUActivation(use_gelu_python=True) is not supported")
        return GELU(name=name)
    return _layer(m, name, where)[0]


def _hf_swin_layer(m: Any, name: str, where: str) -> Any:
    """Hugging Face's ``SwinLayer`` on (N, L, C) tokens: x + attn(LayerNorm(x)) in (shifted) windows of the
    tokens read as an (H, W) map (its pad, roll, window partition and shift mask are torchvision's), then
    x + mlp(LayerNorm(x)); its ``SwinAttention`` on the sdpa implementation, q, k and v fused as the qkv
    projection; the map's size as the exported call read it. A window clamped to a smaller map is refused."""
    from ...importers._graph import Fragment
    from ...importers.torch_layers import _layer
    from ...spec import Dropout, ToMap, ToTokens
    from ..token._torch import fused

    attn = m.attention
    q, k, v, o = attn.q_proj, attn.k_proj, attn.v_proj, attn.o_proj
    dim, heads = int(q.in_features), int(attn.num_attention_heads)
    window = int(m.window_size) if isinstance(m.window_size, int) else -1
    implementation = getattr(attn.config, "_attn_implementation", None)
    what = "Hugging Face SwinLayer"
    shift = int(m.shift_size) if isinstance(m.shift_size, int) else -1
    _refuse(
        where,
        what,
        [
            (_named(attn) != ("SwinAttention", _HF_SWIN), f"attention {type(attn).__name__}"),
            (any(type(t) is not nn.Linear for t in (q, k, v, o)), "projections other than nn.Linear"),
            (_named(attn.relative_position_bias) != ("SwinRelativePositionBias", _HF_SWIN), "another position bias"),
            (_named(m.mlp) != ("SwinMLP", _HF_SWIN), f"an MLP {type(m.mlp).__name__}"),
            (implementation != "sdpa", f"attention implementation {implementation!r} (sdpa only)"),
            (bool(getattr(attn, "is_causal", False)), "causal attention"),
            (any(t.in_features != dim or t.out_features != dim for t in (q, k, v, o)), "other projection sizes"),
            (len({t.bias is None for t in (q, k, v)}) != 1, "biases on some of q, k and v only"),
            (float(attn.scaling) != (dim // heads) ** -0.5, f"scaling={attn.scaling}"),
            (tuple(attn.relative_position_bias.window_size) != (window, window), "a window clamped to its map"),
            (type(m.dropout) is not nn.Dropout, "another dropout"),
            (not 0 <= shift < window, f"shift_size={m.shift_size} (window {m.window_size})"),
        ],
    )
    _standard_index(attn.relative_position_bias, (window, window), where, what)
    a = f"{name}.attention"
    state: dict[str, Any] = {
        f"{a}.qkv.weight": fused(q.weight, k.weight, v.weight),
        f"{a}.qkv.bias": None if q.bias is None else fused(q.bias, k.bias, v.bias),
        f"{a}.proj.weight": o.weight,
        f"{a}.proj.bias": o.bias,
        f"{a}.relative_position_bias_table": attn.relative_position_bias.relative_position_bias_table,
    }

    def make(shape: Any, inner: Any, ops: Any) -> list[tuple[Any, tuple[int, ...]]]:
        h, w = _map_size(shape, inner, where)
        s = 0 if min(h, w) <= window else shift  # (Hugging Face's rule for a map of one window)
        rolled = any("roll" in str(op) for op in ops or ())
        if rolled != bool(s):  # (called with always_partition=True: a shift its rule would have clamped)
            raise UnsupportedLayerError(
                f"from_torch: {where}: its exported call {'rolls' if rolled else 'does not roll'} its {h}x{w} map, "
                f"where a shift of {s} is Hugging Face's rule for it (called with always_partition?)"
            )
        layer = WindowAttention(
            dim, heads, (window, window), (s, s), q.bias is not None, o.bias is not None,
            float(attn.attention_dropout), name=a,
        )  # fmt: skip
        steps: list[tuple[Any, tuple[int, ...]]] = []

        def add(spec: Any, reads: int) -> int:
            steps.append((spec, (reads,)))
            return len(steps) - 1

        def sub(module: Any, path: str, reads: int) -> int:
            spec, own = _layer(module, f"{name}.{path}", f"{where}.{path}")
            state.update(own)
            return add(spec, reads)

        last = sub(m.layernorm_before, "layernorm_before", -1)
        last = add(ToMap(h, w, name=f"{name}.to_map"), last)
        last = add(layer, last)
        last = add(ToTokens(name=f"{name}.to_tokens"), last)
        last = add(Dropout(float(m.dropout.p), name=f"{name}.dropout"), last)
        last = add(_hf_drop_path(m.drop_path, f"{name}.drop_path", f"{where}.drop_path"), last)
        steps.append(("add", (-1, last)))
        first = len(steps) - 1
        last = sub(m.layernorm_after, "layernorm_after", first)
        last = sub(m.mlp.fc1, "mlp.fc1", last)
        last = add(_hf_activation(m.mlp.activation_fn, f"{name}.mlp.activation_fn", f"{where}.mlp.activation_fn"), last)
        last = sub(m.mlp.fc2, "mlp.fc2", last)
        last = add(Dropout(float(m.dropout.p), name=f"{name}.dropout_2"), last)
        steps.append(("add", (first, last)))
        return steps

    return Fragment([], state, None, channels_last=False, make=make)


def _hf_patch_merging(m: Any, name: str, where: str) -> Any:
    """Hugging Face's ``SwinPatchMerging`` on (N, L, C) tokens: read as the (H, W) map of its call, then
    Swin's patch merging (pad to even, the 2x2 pixels in Swin's order, LayerNorm, the reduction) and read as
    tokens again."""
    from ...importers._graph import Fragment
    from ...spec import ToMap, ToTokens

    norm, reduction = m.norm, m.reduction
    dim = int(reduction.in_features) // 4
    _refuse(
        where,
        "Hugging Face SwinPatchMerging",
        [
            (type(norm) is not nn.LayerNorm or norm.weight is None or norm.bias is None, "a norm other than LayerNorm"),
            (tuple(norm.normalized_shape) != (4 * dim,), f"a norm over {tuple(norm.normalized_shape)}"),
            (type(reduction) is not nn.Linear or reduction.bias is not None, "a reduction with a bias"),
        ],
    )
    merging = PatchMerging(dim, int(reduction.out_features), float(norm.eps), name=name)
    state = {f"{name}.reduction.weight": reduction.weight, f"{name}.norm.weight": norm.weight}
    state[f"{name}.norm.bias"] = norm.bias

    def make(shape: Any, inner: Any, ops: Any) -> list[tuple[Any, tuple[int, ...]]]:
        h, w = _map_size(shape, inner, where)
        return [(ToMap(h, w, name=f"{name}_map"), (-1,)), (merging, (0,)), (ToTokens(name=f"{name}_tokens"), (1,))]

    return Fragment([], state, None, channels_last=False, make=make)


OTHERS += [(is_hf_swin_layer, _hf_swin_layer), (_is_hf_merging, _hf_patch_merging)]
