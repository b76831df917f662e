"""Per-channel maps and rearrangements: Rescaling, Normalization, LayerScale, PositionEmbedding2d, Narrow,
ChannelShuffle and ZeroPad2d."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

import numpy as np

from ..._info import LayerInfo, Shape, _Ctx, elementwise
from ..._layer import Layer
from ..._normalize import (
    Padding,
    PaddingLike,
    as_float,
    as_int,
    as_pair,
)
from ...errors import SpecError
from .._numpy import per_channel
from .._registry import register
from ..pool import _unpad


@dataclass(frozen=True, repr=False)
class ZeroPad2d(Layer):
    """Zero padding of a (C, H, W) map, torch's ``nn.ZeroPad2d``: ``padding`` is an int (all four sides) or
    ``(left, right, top, bottom)``, stored as ((top, bottom), (left, right)) like Conv2d's explicit padding.

    >>> ZeroPad2d(1)
    ZeroPad2d(1)
    >>> ZeroPad2d((0, 1, 0, 1))
    ZeroPad2d((0, 1, 0, 1))
    """

    padding: Padding

    _positional = ("padding",)

    if TYPE_CHECKING:  # the spellings the constructor accepts; the field holds the normal form

        def __init__(self, padding: PaddingLike, *, name: str | None = ..., keys: Any = ...) -> None: ...

    def __repr__(self) -> str:
        (t, b), (l, r) = self.padding
        pad = t if t == b == l == r else (l, r, t, b)
        return f"ZeroPad2d({pad!r}" + ("" if self.name is None else f", name={self.name!r}") + ")"

    def _validate(self) -> None:
        me = "ZeroPad2d"
        value = self.padding
        if isinstance(value, (list, tuple)) and len(value) == 4:
            left, right, top, bottom = (as_int(me, "padding", v, minimum=0) for v in value)
            self._set("padding", ((top, bottom), (left, right)))
        elif isinstance(value, (list, tuple)) and len(value) == 2 and all(isinstance(v, (list, tuple)) for v in value):
            (top, bottom), (left, right) = (as_pair(me, "padding", v, minimum=0) for v in value)
            self._set("padding", ((top, bottom), (left, right)))
        elif isinstance(value, (list, tuple)):
            raise SpecError(
                f"{me}: `padding` must be an int or (left, right, top, bottom), as in torch. Received: padding={value!r}"
            )
        else:
            p = as_int(me, "padding", value, minimum=0)
            self._set("padding", ((p, p), (p, p)))


def _scalar_or_channels(owner: str, name: str, value: Any) -> float | tuple[float, ...]:
    if isinstance(value, (list, tuple)):
        if not value:
            raise SpecError(f"{owner}: `{name}` must be a number or one number per channel. Received: {name}=()")
        return tuple(as_float(owner, name, v) for v in value)
    return as_float(owner, name, value)


@dataclass(frozen=True, repr=False)
class Rescaling(Layer):
    """x * scale + offset (Keras' ``Rescaling``, e.g. 1/255 inside keras.applications models): ``scale`` and
    ``offset`` a number or one number per channel (features of a flat input). Constants, not weights.

    >>> Rescaling(1 / 255)
    Rescaling(0.00392156862745098)
    """

    scale: float | tuple[float, ...] = 1.0
    offset: float | tuple[float, ...] = 0.0

    _positional = ("scale",)

    def _validate(self) -> None:
        self._set("scale", _scalar_or_channels("Rescaling", "scale", self.scale))
        self._set("offset", _scalar_or_channels("Rescaling", "offset", self.offset))

    def __repr__(self) -> str:  # the values as stored: a per-channel tuple is never shortened to a number
        parts = [repr(self.scale)]
        if self.offset != 0.0 or isinstance(self.offset, tuple):
            parts.append(f"offset={self.offset!r}")
        if self.name is not None:
            parts.append(f"name={self.name!r}")
        return f"Rescaling({', '.join(parts)})"


@dataclass(frozen=True, repr=False)
class Normalization(Layer):
    """(x - mean) / max(sqrt(variance), 1e-7) per channel (Keras' ``Normalization`` over the channel axis); ``mean``
    and ``variance`` are buffers of shape (num_features,) in the canonical weights (``"{key}.mean"``), as BatchNorm's
    running statistics are.

    >>> Normalization(3)
    Normalization(3)
    """

    num_features: int

    _positional = ("num_features",)

    def _validate(self) -> None:
        self._set("num_features", as_int("Normalization", "num_features", self.num_features, minimum=1))


@dataclass(frozen=True, repr=False)
class LayerScale(Layer):
    """A learned per-channel multiplier of a (C, H, W) map: torchvision's ``layer_scale * x`` (a parameter of
    shape (C, 1, 1), key ``"{name}.layer_scale"``), Keras' ``LayerScale`` (gamma of shape (C,)). On tokens
    (L, E), one multiplier per feature, of shape (E,) (timm's ``LayerScale`` in ViTs).

    In torch a graph holds it as a parameter of the module at its key, so other layers may be named under
    that key (``features.1.0.layer_scale`` next to ``features.1.0.block.0.weight``), as in torchvision.

    >>> LayerScale(96)
    LayerScale(96)
    """

    num_features: int

    _positional = ("num_features",)

    def _validate(self) -> None:
        self._set("num_features", as_int("LayerScale", "num_features", self.num_features, minimum=1))


@dataclass(frozen=True, repr=False)
class Narrow(Layer):
    """``length`` entries from ``start`` along ``dim`` of the NCHW tensor, torch's ``x.narrow(dim, start,
    length)``: ``x.chunk``, ``torch.split`` and ``x[:, a:b]`` import as Narrow layers. dim 1 is the channels
    (the features of a flat input), 2 and 3 are H and W; negative dims count from the end.

    ``groups``: the axis is cut into that many equal consecutive groups, the slice is taken from each, and the
    slices are put side by side: ``x.unflatten(dim, (groups, -1)).narrow(dim + 1, start, length).flatten(dim,
    dim + 1)``. One head's part of features packed head by head, each head's queries, keys and values side by
    side (timm's ``qkv.view(N, L, heads, -1).split([kd, kd, vd], dim=3)``), is a Narrow with ``groups=heads``.

    >>> Narrow(1, 0, 16)
    Narrow(1, 0, 16)
    >>> Narrow(2, 4, 4, groups=2)
    Narrow(2, 4, 4, groups=2)
    """

    dim: int
    start: int
    length: int
    groups: int = 1

    _positional = ("dim", "start", "length")

    def _validate(self) -> None:
        me = "Narrow"
        self._set("dim", as_int(me, "dim", self.dim))
        if self.dim in (0, -4):
            raise SpecError(f"{me}: `dim` must not be the batch axis. Received: dim={self.dim!r}")
        self._set("start", as_int(me, "start", self.start, minimum=0))
        self._set("length", as_int(me, "length", self.length, minimum=1))
        self._set("groups", as_int(me, "groups", self.groups, minimum=1))


@dataclass(frozen=True, repr=False)
class PositionEmbedding2d(Layer):
    """A learned tensor added to a (C, H, W) map, one number per channel and pixel: ``x + embedding`` with
    ``embedding`` of shape (1, C, H, W) (timm's PiT and Visformer ``pos_embed``; in Keras (1, H, W, C)).

    >>> PositionEmbedding2d(64, 14, 14)
    PositionEmbedding2d(64, 14, 14)
    """

    channels: int
    height: int
    width: int

    _positional = ("channels", "height", "width")

    def _validate(self) -> None:
        for field in self._positional:
            self._set(field, as_int("PositionEmbedding2d", field, getattr(self, field), minimum=1))


@dataclass(frozen=True, repr=False)
class ChannelShuffle(Layer):
    """torch's ``nn.ChannelShuffle(groups)``: the channels, seen as (groups, C / groups), transposed to
    (C / groups, groups) (ShuffleNet's view -> transpose -> view). A channel gather in Keras.

    >>> ChannelShuffle(2)
    ChannelShuffle(2)
    """

    groups: int

    _positional = ("groups",)

    def _validate(self) -> None:
        self._set("groups", as_int("ChannelShuffle", "groups", self.groups, minimum=1))


def _rescaling(ctx: _Ctx, layer: Rescaling, source: Shape | None) -> LayerInfo:
    for name in ("scale", "offset"):
        value = getattr(layer, name)
        if isinstance(value, tuple) and len(value) not in (1, ctx.shape[0]):
            raise ctx.error(f"{name} has {len(value)} values but its input has {ctx.shape[0]} channels")
    if (
        len(ctx.shape) == 1
        and source is not None
        and any(isinstance(getattr(layer, n), tuple) and len(getattr(layer, n)) > 1 for n in ("scale", "offset"))
    ):
        raise ctx.error(
            "per-feature constants on features flattened from a map are not supported (their order "
            "differs between NCHW and NHWC)"
        )
    return elementwise(ctx, layer, source)


def _normalization(ctx: _Ctx, layer: Normalization, source: Shape | None) -> LayerInfo:
    if layer.num_features != ctx.shape[0]:
        raise ctx.error(f"num_features={layer.num_features} but its input has {ctx.shape[0]} channels")
    n = (layer.num_features,)
    keep = source if len(ctx.shape) == 1 else None
    return LayerInfo(
        ctx.index,
        layer,
        ctx.shape,
        ctx.shape,
        {"mean": n, "variance": n},
        input_source=keep,
        output_source=keep,
        buffers=("mean", "variance"),
    )


def _zeropad(ctx: _Ctx, layer: ZeroPad2d, source: Shape | None) -> LayerInfo:
    c, h, w = ctx.need_map()
    (t, b), (l, r) = layer.padding
    return LayerInfo(ctx.index, layer, ctx.shape, (c, h + t + b, w + l + r), {}, padding=layer.padding)


def _layer_scale(ctx: _Ctx, layer: LayerScale, source: Shape | None) -> LayerInfo:
    if len(ctx.shape) == 2:  # tokens: one multiplier per feature, (E,) (timm's LayerScale on tokens)
        if ctx.shape[1] != layer.num_features:
            raise ctx.error(f"num_features={layer.num_features} but its input has {ctx.shape[1]} features per token")
        return LayerInfo(ctx.index, layer, ctx.shape, ctx.shape, {"layer_scale": (ctx.shape[1],)})
    c, _, _ = ctx.need_map()
    if c != layer.num_features:
        raise ctx.error(f"num_features={layer.num_features} but its input has {c} channels")
    return LayerInfo(ctx.index, layer, ctx.shape, ctx.shape, {"layer_scale": (c, 1, 1)})


def _embedding_2d(ctx: _Ctx, layer: PositionEmbedding2d, source: Shape | None) -> LayerInfo:
    if ctx.need_map() != (layer.channels, layer.height, layer.width):
        raise ctx.error(
            f"its embedding is of a ({layer.channels}, {layer.height}, {layer.width}) map; its input is {ctx.shape}"
        )
    return LayerInfo(ctx.index, layer, ctx.shape, ctx.shape, {"embedding": (1, *ctx.shape)})


def _narrow(ctx: _Ctx, layer: Narrow, source: Shape | None) -> LayerInfo:
    from ...layout import flatten_permutation

    rank = len(ctx.shape) + 1
    if not -rank <= layer.dim < rank or layer.dim % rank == 0:
        raise ctx.error(f"dim={layer.dim} is not a non-batch axis of its (N, *{ctx.shape}) input")
    axis = layer.dim % rank
    size = ctx.shape[axis - 1]
    if size % layer.groups:
        raise ctx.error(f"groups={layer.groups} does not divide the size {size} of dim {axis}")
    if layer.start + layer.length > size // layer.groups:
        group = f"each of its {layer.groups} groups of {size // layer.groups}" if layer.groups > 1 else f"dim {axis}"
        raise ctx.error(f"start={layer.start} + length={layer.length} exceeds the size of {group}")
    if rank == 2 and flatten_permutation(source) is not None:
        raise ctx.error(
            "a slice of features flattened from a map is not supported (their order differs between NCHW and NHWC)"
        )
    out = list(ctx.shape)
    out[axis - 1] = layer.length * layer.groups
    return LayerInfo(ctx.index, layer, ctx.shape, tuple(out), {})


def _shuffle(ctx: _Ctx, layer: ChannelShuffle, source: Shape | None) -> LayerInfo:
    c, _, _ = ctx.need_map()
    if c % layer.groups:
        raise ctx.error(f"its input's {c} channels do not divide into groups={layer.groups}")
    return LayerInfo(ctx.index, layer, ctx.shape, ctx.shape, {})


def shuffle_order(channels: int, groups: int) -> np.ndarray:
    """ChannelShuffle as a gather: output channel j reads input channel ``order[j]``."""
    return np.arange(channels).reshape(groups, channels // groups).T.reshape(-1)


def narrow_axis(info: LayerInfo) -> int:
    """The NCHW (or (N, F)) axis, 1..3, of a Narrow layer."""
    rank = len(info.input_shape) + 1
    return info.layer.dim % rank  # type: ignore[attr-defined, no-any-return]


#: Keras' backend epsilon, the floor of Normalization's standard deviation
NORMALIZATION_FLOOR = 1e-7


def _norm_denominator(p: dict[str, np.ndarray], x: np.ndarray) -> np.ndarray:
    out: np.ndarray = np.maximum(np.sqrt(per_channel(p["variance"], x)), np.asarray(NORMALIZATION_FLOOR, dtype=x.dtype))
    return out


def narrow_entries(info: LayerInfo) -> np.ndarray:
    """The entries of its axis a Narrow layer takes, in order (a gather)."""
    layer = cast(Narrow, info.layer)
    size = info.input_shape[narrow_axis(info) - 1] // layer.groups
    starts = np.arange(layer.groups)[:, None] * size
    return (starts + np.arange(layer.start, layer.start + layer.length)[None, :]).reshape(-1)


def _narrow_index(info: LayerInfo, ndim: int) -> tuple[slice | np.ndarray, ...]:
    index: list[slice | np.ndarray] = [slice(None)] * ndim
    index[narrow_axis(info)] = narrow_entries(info)
    return tuple(index)


def _narrow_backward(info: LayerInfo, x: np.ndarray, go: np.ndarray) -> np.ndarray:
    gx = np.zeros_like(x)
    gx[_narrow_index(info, x.ndim)] = go
    return gx


def _order(info: LayerInfo) -> np.ndarray:
    return shuffle_order(info.input_shape[0], info.layer.groups)  # type: ignore[attr-defined]


_RULES: dict[type, Any] = {
    ZeroPad2d: _zeropad,
    Rescaling: _rescaling,
    Normalization: _normalization,
    LayerScale: _layer_scale,
    PositionEmbedding2d: _embedding_2d,
    Narrow: _narrow,
    ChannelShuffle: _shuffle,
}


_FORWARD: dict[type, Any] = {
    ZeroPad2d: lambda info, p, x, mode: np.pad(x, ((0, 0), (0, 0), *info.padding)),
    Rescaling: lambda info, p, x, mode: x * per_channel(info.layer.scale, x) + per_channel(info.layer.offset, x),
    Normalization: lambda info, p, x, mode: (x - per_channel(p["mean"], x)) / _norm_denominator(p, x),
}


_FORWARD_C: dict[type, Any] = {
    LayerScale: lambda info, p, x, mode: x * p["layer_scale"],
    PositionEmbedding2d: lambda info, p, x, mode: x + p["embedding"],
    Narrow: lambda info, p, x, mode: x[_narrow_index(info, x.ndim)],
    ChannelShuffle: lambda info, p, x, mode: x[:, _order(info)],
}


_BACKWARD: dict[type, Any] = {
    ZeroPad2d: lambda info, p, x, go, mode: (_unpad(info, go), {}),
    Rescaling: lambda info, p, x, go, mode: (go * per_channel(info.layer.scale, x), {}),
    Normalization: lambda info, p, x, go, mode: (go / _norm_denominator(p, x), {}),
}


_BACKWARD_C: dict[type, Any] = {
    LayerScale: lambda info, p, x, go, mode: (
        go * p["layer_scale"],
        {"layer_scale": (go * x).sum(axis=(0, 1)) if x.ndim == 3 else (go * x).sum(axis=(0, 2, 3))[:, None, None]},
    ),
    PositionEmbedding2d: lambda info, p, x, go, mode: (go, {"embedding": go.sum(axis=0, keepdims=True)}),
    Narrow: lambda info, p, x, go, mode: (_narrow_backward(info, x, go), {}),
    ChannelShuffle: lambda info, p, x, go, mode: (go[:, np.argsort(_order(info))], {}),
}


for _kind in (
    Rescaling,
    Normalization,
    ZeroPad2d,
    LayerScale,
    PositionEmbedding2d,
    Narrow,
    ChannelShuffle,
):
    tokens = _kind in (LayerScale, Narrow)
    register(_kind, _RULES[_kind], {**_FORWARD, **_FORWARD_C}[_kind], {**_BACKWARD, **_BACKWARD_C}[_kind], tokens)
