"""Windowed attention without a position bias from other libraries: timm's Twins ``LocallyGroupedAttn``, read
as the tokens' map, a :class:`~xconv.WindowAttention` with ``position_bias=False``, and tokens again."""

from __future__ import annotations

from typing import Any

from ...backends._torch_env import nn
from ...errors import UnsupportedLayerError
from ...spec import Dropout, ToMap, ToTokens
from . import WindowAttention

_TWINS = "timm.models.twins"


def is_twins_local(m: Any) -> bool:
    """timm's Twins ``LocallyGroupedAttn`` (called with its tokens and the (H, W) they are read as)."""
    return type(m).__name__ == "LocallyGroupedAttn" and type(m).__module__ == _TWINS


def _twins_local(m: Any, name: str, where: str) -> Any:
    """timm's ``LocallyGroupedAttn`` on (N, L, C) tokens: read as the (H, W) map of its call, padded with zeros
    at the bottom and right to whole windows of ``ws``, cut into windows row-major, multi-head attention in each
    (a fused ``qkv`` Linear, rows q, k, v head by head; the scale head_dim ** -0.5; no position bias), the
    windows put back and cropped, read as tokens, then ``proj`` (inside the window attention) and its dropout."""
    from ...importers._graph import Fragment
    from ._torch_sources import _map_size

    dim, heads, ws = int(m.qkv.in_features), int(m.num_heads), int(m.ws)
    problems = [
        (type(m.qkv) is not nn.Linear or m.qkv.out_features != 3 * dim, "a qkv other than one Linear of 3 * dim"),
        (type(m.proj) is not nn.Linear or m.proj.in_features != dim or m.proj.out_features != dim, "another proj"),
        (float(m.scale) != (dim // heads) ** -0.5, f"scale={m.scale}"),
        (type(m.attn_drop) is not nn.Dropout or type(m.proj_drop) is not nn.Dropout, "other dropout modules"),
    ]
    bad = [what for fails, what in problems if fails]
    if bad:
        raise UnsupportedLayerError(f"from_torch: {where}: timm LocallyGroupedAttn with {bad[0]} is not supported")
    attention = WindowAttention(
        dim, heads, (ws, ws), qkv_bias=m.qkv.bias is not None, proj_bias=m.proj.bias is not None,
        dropout=float(m.attn_drop.p), position_bias=False, name=name,
    )  # fmt: skip
    state = {f"{name}.qkv.weight": m.qkv.weight, f"{name}.qkv.bias": m.qkv.bias}
    state.update({f"{name}.proj.weight": m.proj.weight, f"{name}.proj.bias": m.proj.bias})

    def make(shape: Any, inner: Any, ops: Any) -> list[tuple[Any, tuple[int, ...]]]:
        h, w = _map_size(shape, inner, where)
        steps: list[tuple[Any, tuple[int, ...]]] = [(ToMap(h, w, name=f"{name}_map"), (-1,)), (attention, (0,))]
        steps.append((ToTokens(name=f"{name}_tokens"), (1,)))
        if m.proj_drop.p > 0:
            steps.append((Dropout(float(m.proj_drop.p), name=f"{name}.proj_drop"), (2,)))
        return steps

    return Fragment([], state, None, channels_last=False, make=make)


LOCAL: list[Any] = [(is_twins_local, _twins_local)]
