"""Windowed attention and patch merging: the torch parts (built modules, and the torch modules that import as
these kinds: torchvision's Swin and timm's)."""

from __future__ import annotations

import math
from typing import Any, cast

import numpy as np

from ..._info import LayerInfo
from ...backends._torch_env import F, nn, torch
from . import MERGE_ORDER, PatchMerging, WindowAttention, geometry, partition_plan, relative_position_index, shift_mask
from ._torch_local import LOCAL
from ._torch_sources import CHANNELS_LAST, OTHERS


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
        roll_first: bool = False,
        position_bias: bool = True,
        device: Any = None,
        dtype: Any = None,
    ) -> None:
        super().__init__()
        factory = {"device": device, "dtype": dtype}
        self.num_heads, self.dropout, self.state_index = int(num_heads), float(dropout), bool(state_index)
        self.cosine, self.grid, self.scale, self.roll_first = bool(cosine), bool(grid), scale, bool(roll_first)
        self.position_bias = bool(position_bias)
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
        elif self.position_bias:
            self.relative_position_bias_table = nn.Parameter(torch.zeros(rows, num_heads, **factory))
        layer = WindowAttention(embed_dim, num_heads, self.window_size, self.shift_size, grid=self.grid, scale=scale)
        self.score_scale = layer.score_scale
        self.geometry = geometry(layer, *self.size)
        self.plan = partition_plan(self.geometry[0], self.geometry[1], self.window_size, self.grid)
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
        if (h, w) != self.size:  # (its shift mask and padding are this size's)
            raise ValueError(f"WindowAttentionModule: built for {self.size[0]}x{self.size[1]} maps, given {h}x{w}")
        ph, pw, sh, sw = self.geometry
        wh, ww = self.window_size
        t = x.permute(0, 2, 3, 1)
        if (sh or sw) and self.roll_first:  # (timm's order: roll, then pad)
            t = torch.roll(t, shifts=(-sh, -sw), dims=(1, 2))
        t = F.pad(t, (0, 0, 0, pw - w, 0, ph - h))
        if (sh or sw) and not self.roll_first:
            t = torch.roll(t, shifts=(-sh, -sw), dims=(1, 2))
        (view, perm), (back_view, back) = self.plan
        t = t.reshape(b, *view, c).permute(*perm).reshape(-1, wh * ww, c)
        bw, n, _ = t.shape
        bias_used: torch.Tensor | None = self.qkv.bias
        if self.cosine and bias_used is not None:  # (Swin V2: no k bias)
            bias_used = torch.cat([bias_used[:c], torch.zeros_like(bias_used[c : 2 * c]), bias_used[2 * c :]])
        qkv = F.linear(t, self.qkv.weight, bias_used)
        q, k, v = qkv.reshape(bw, n, 3, self.num_heads, c // self.num_heads).permute(2, 0, 3, 1, 4)
        table: torch.Tensor | None = None
        if self.cosine:
            scale = torch.clamp(self.logit_scale, max=math.log(100.0)).exp()
            scores = F.normalize(q, dim=-1) @ F.normalize(k, dim=-1).transpose(-2, -1) * scale
            table = 16 * torch.sigmoid(self.cpb_mlp(self.relative_coords_table).view(-1, self.num_heads))
        else:
            scores = (q * self.score_scale) @ k.transpose(-2, -1)
            table = self.relative_position_bias_table if self.position_bias else None
        if table is not None:
            index = cast(torch.Tensor, self.relative_position_index)
            scores = scores + table[index].view(n, n, -1).permute(2, 0, 1)
        mask = cast("torch.Tensor | None", self.attention_mask)
        if mask is not None:
            windows = int(mask.shape[0])
            scores = scores.view(-1, windows, self.num_heads, n, n) + mask[None, :, None]
            scores = scores.view(-1, self.num_heads, n, n)
        weights = F.dropout(scores.softmax(dim=-1), p=self.dropout, training=self.training)
        o = self.proj((weights @ v).transpose(1, 2).reshape(bw, n, c))
        o = o.reshape(b, *back_view, c).permute(*back).reshape(b, ph, pw, c)
        if (sh or sw) and not self.roll_first:
            o = torch.roll(o, shifts=(sh, sw), dims=(1, 2))
        o = o[:, :h, :w]
        if (sh or sw) and self.roll_first:
            o = torch.roll(o, shifts=(sh, sw), dims=(1, 2))
        return cast(torch.Tensor, o.permute(0, 3, 1, 2))

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
        t = torch.cat([t[:, r::2, c::2] for r, c in MERGE_ORDER], dim=-1)
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
        layer.roll_first,
        layer.position_bias,
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
        m.roll_first,
        m.position_bias,
        name=name,
    )


def _own_patch_merging(m: PatchMergingModule, name: str, where: str) -> PatchMerging:
    dim, out = m.reduction.in_features // 4, m.reduction.out_features
    return PatchMerging(dim, out, float(m.norm.eps), m.norm_first, name=name)


#: torch module class (exactly) -> (module, name, where) -> its spec layer
IMPORTS: dict[type, Any] = {
    WindowAttentionModule: _own_window_attention,
    PatchMergingModule: _own_patch_merging,
}

#: (predicate on a module, its importer), for classes of other libraries matched by module and name
MATCHERS: list[Any] = [*CHANNELS_LAST, *OTHERS, *LOCAL]


def channels_last_module(m: nn.Module) -> bool:
    """Whether ``m`` is a matched module of another library imported as one layer that takes a channels-last
    (N, H, W, C) map."""
    return any(match(m) for match, _ in CHANNELS_LAST)
